//! Connectors: how a subchannel opens the byte stream under its HTTP/2 connection.
//!
//! The channel never dials by itself; it asks a [`Connector`]. [`TcpConnector`] dials real TCP
//! with tokio; the simulation supplies one that dials turmoil's simulated TCP. Everything above
//! the connector (HTTP/2, keep-alive, subchannel states, policies) is the same code in both.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream: what a [`Connector`] returns.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed connected stream.
pub type BoxedIo = Box<dyn Io>;

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxedIo>> + Send>>;

/// gRFC A8's least HTTP/2 keep-alive interval a client may use against real servers (10 s):
/// servers punish more frequent PINGs with GOAWAY `too_many_pings`.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Opens connections to addresses.
///
/// # Contract
/// - Called by a subchannel's task each time it leaves IDLE, with the subchannel's
///   [`Address::addr`](crate::address::Address::addr) (`host:port`, IPv6 bracketed). Calls for
///   different subchannels may overlap.
/// - The returned future may take as long as it likes: the subchannel bounds it with its connect
///   timeout and drops it when the timeout fires or the subchannel shuts down.
/// - An error moves the subchannel to TRANSIENT_FAILURE with that error as the reason, so make the
///   message name what failed.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Starts connecting to `addr`.
    fn connect(&self, addr: &str) -> ConnectFuture;

    /// The least keep-alive interval a channel over this connector uses: a smaller interval
    /// given to [`ChannelBuilder::keepalive`](crate::channel::ChannelBuilder::keepalive) is
    /// raised to it, with a warning. Default [`MIN_KEEPALIVE_INTERVAL`] (gRFC A8).
    ///
    /// Override it only for a simulated network whose servers accept any PING rate: simulations
    /// need sub-second keep-alive, because a simulated partition wedges a connection until
    /// keep-alive kills it. Never override it for a connector that reaches real servers.
    fn min_keepalive_interval(&self) -> Duration {
        MIN_KEEPALIVE_INTERVAL
    }
}

/// Dials real TCP with tokio, with `TCP_NODELAY` set.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}
