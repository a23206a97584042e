//! Where a server's connections come from: any listener that accepts `(stream, peer)` pairs.
//!
//! Serving needs only a stream of accepted connections; [`Listener`] is the small trait a socket
//! type implements to become one (through [`Incoming`]). Tokio's [`TcpListener`] implements it
//! here; a simulated network's listener needs only the same two methods.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

/// A bound socket that accepts connections.
///
/// # Contract
/// `accept` is called by [`Incoming`] from the serving task, one call at a time (never
/// overlapping), and waits until a connection arrives. After an error the server pauses (with
/// exponential backoff, see `InstrumentedServer::serve_incoming` in `anchorage::server`) and
/// accepts again.
pub trait Listener: Send + Sized + 'static {
    /// The stream of one accepted connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection and returns its stream and the peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// Whatever the socket reports.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    /// Accepts a connection and turns Nagle's algorithm off on it, as gRPC servers do, so small
    /// RPCs are not delayed.
    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

type Accepting<L> =
    Pin<Box<dyn Future<Output = (L, io::Result<(<L as Listener>::Io, SocketAddr)>)> + Send>>;

/// A [`Listener`] as a never-ending [`Stream`] of accepted `(stream, peer)` pairs.
pub struct Incoming<L: Listener> {
    // Exactly one of the two is set: the listener moves into the pending accept and comes back
    // with its result.
    idle: Option<L>,
    accepting: Option<Accepting<L>>,
}

impl<L: Listener> Incoming<L> {
    /// Accepts from `listener` as the stream is polled.
    pub fn new(listener: L) -> Self {
        Self { idle: Some(listener), accepting: None }
    }
}

// The listener is only ever moved, never pinned in place, so the stream is `Unpin` whatever `L` is.
impl<L: Listener> Unpin for Incoming<L> {}

impl<L: Listener> Stream for Incoming<L> {
    type Item = io::Result<(L::Io, SocketAddr)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(listener) = this.idle.take() {
            this.accepting = Some(Box::pin(async move {
                let accepted = listener.accept().await;
                (listener, accepted)
            }));
        }
        let Some(pending) = this.accepting.as_mut() else {
            unreachable!("Incoming holds its listener either idle or in a pending accept");
        };
        let (listener, accepted) = ready!(pending.as_mut().poll(cx));
        this.accepting = None;
        this.idle = Some(listener);
        Poll::Ready(Some(accepted))
    }
}

impl<L: Listener> fmt::Debug for Incoming<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.accepting.is_some() { "accepting" } else { "idle" };
        f.debug_struct("Incoming").field("state", &state).finish()
    }
}
