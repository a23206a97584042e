//! Simulated TCP under the real channel and the real servers: a turmoil [`Connector`], turmoil's
//! listener as a [`Listener`], and the socket registry that makes a crash close sockets in a
//! fixed order.
//!
//! Only the byte stream differs from real TCP; HTTP/2, keep-alive, subchannels, policies and the
//! instrumented server are the same code.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

use super::trace::Trace;
use crate::connector::{BoxedIo, ConnectFuture, Connector};
use crate::server::Listener;
use crate::sync::lock;

/// Dials turmoil's simulated TCP: `host:port` where `host` is a turmoil host name.
///
/// turmoil drops a connection attempt to a crashed host without an answer, so the attempt
/// hangs until the subchannel's connect timeout fires; a partitioned host refuses at once.
#[derive(Debug, Clone, Default)]
pub struct TurmoilConnector;

/// Opens a simulated TCP connection to `addr`; the error names the address.
async fn dial(addr: String) -> io::Result<TcpStream> {
    TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))
}

impl Connector for TurmoilConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let dialing = dial(addr.to_owned());
        Box::pin(async move { Ok(Box::new(dialing.await?) as BoxedIo) })
    }

    /// None: simulated servers accept any PING rate, and scenarios need keep-alive far below
    /// gRFC A8's 10 s to end wedged connections quickly.
    fn min_keepalive_interval(&self) -> Duration {
        Duration::ZERO
    }
}

/// Dials like [`TurmoilConnector`] from a server host, and hands each socket to the host's
/// [`SocketRegistry`], so that a crash closes the host's outgoing connections (its servers'
/// etcd registrations) in dial order too, not in tokio's task-id order.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredConnector {
    pub(crate) registry: SocketRegistry,
}

impl Connector for RegisteredConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let (dialing, registry) = (dial(addr.to_owned()), self.registry.clone());
        Box::pin(async move { Ok(Box::new(registry.register(dialing.await?)) as BoxedIo) })
    }

    fn min_keepalive_interval(&self) -> Duration {
        TurmoilConnector.min_keepalive_interval()
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

type Shared = Arc<Mutex<TcpStream>>;

/// Co-owns every socket a host accepted or dialled ([`RegisteredConnector`]), keyed by a
/// per-host counter, so that a crash closes them in the order they were opened.
///
/// # Determinism
/// When turmoil crashes a host it drops the host's runtime, and tokio drops the tasks in task-id
/// order; task ids are process-global, so with several simulations in one process (parallel
/// tests, a parallel CLI) that order — and so the order of the FIN/RST segments, the latencies
/// turmoil draws for them, and everything after — would depend on what else ran. Here a
/// connection task holds only a second handle on its socket. When it ends normally it tells the
/// registry's task (a `spawn_local` task on the host), which drops the registry's handle and so
/// closes the socket. When the host crashes, the tasks' handles go first in whatever order;
/// the registry's task is dropped with the host's `LocalSet` afterwards, and its `BTreeMap`
/// closes the sockets in key order.
#[derive(Debug, Clone)]
pub(crate) struct SocketRegistry {
    sockets: Arc<Mutex<BTreeMap<u64, Shared>>>,
    next: Arc<Mutex<u64>>,
    release: mpsc::UnboundedSender<u64>,
}

impl SocketRegistry {
    /// Starts the registry's task on the current host. Call inside the host's software.
    pub(crate) fn start(host: &str, trace: Trace) -> Self {
        let sockets: Arc<Mutex<BTreeMap<u64, Shared>>> = Arc::default();
        let (release, mut released) = mpsc::unbounded_channel::<u64>();
        let owned = sockets.clone();
        let host = host.to_owned();
        tokio::task::spawn_local(async move {
            while let Some(id) = released.recv().await {
                let socket = lock(&owned).remove(&id);
                if socket.is_some() {
                    trace.record(&host, format!("socket s{id} closed"));
                }
                drop(socket);
            }
        });
        Self { sockets, next: Arc::default(), release }
    }

    /// Takes co-ownership of `stream`; the returned handle closes it when dropped.
    pub(crate) fn register(&self, stream: TcpStream) -> RegisteredStream {
        let id = {
            let mut next = lock(&self.next);
            *next += 1;
            *next - 1
        };
        let shared = Arc::new(Mutex::new(stream));
        lock(&self.sockets).insert(id, shared.clone());
        RegisteredStream { id, stream: shared, release: self.release.clone() }
    }
}

/// A turmoil listener whose accepted sockets are co-owned by a [`SocketRegistry`] and whose
/// accepts are traced.
pub(crate) struct RegisteredListener {
    pub(crate) listener: TcpListener,
    pub(crate) registry: SocketRegistry,
    pub(crate) server: String,
    pub(crate) trace: Trace,
    pub(crate) accepted: Mutex<u64>,
}

impl std::fmt::Debug for RegisteredListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredListener").field("server", &self.server).finish()
    }
}

impl Listener for RegisteredListener {
    type Io = RegisteredStream;

    async fn accept(&self) -> io::Result<(RegisteredStream, SocketAddr)> {
        let (stream, peer) = Listener::accept(&self.listener).await?;
        let registered = self.registry.register(stream);
        let conn = {
            let mut accepted = lock(&self.accepted);
            *accepted += 1;
            *accepted - 1
        };
        let text = format!("accepted c{conn} from {peer} (socket s{})", registered.id);
        self.trace.record(&self.server, text);
        Ok((registered, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(&self.listener)
    }
}

/// The connection task's handle on a registered socket. Dropping it asks the registry to close
/// the socket.
#[derive(Debug)]
pub(crate) struct RegisteredStream {
    id: u64,
    stream: Shared,
    release: mpsc::UnboundedSender<u64>,
}

impl RegisteredStream {
    /// The socket's key in its registry.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for RegisteredStream {
    fn drop(&mut self) {
        // The registry's task is gone only when the host is going down, and then the registry
        // closes the socket itself.
        let _ = self.release.send(self.id);
    }
}

impl AsyncRead for RegisteredStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.stream)).poll_read(cx, buf)
    }
}

impl AsyncWrite for RegisteredStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.stream)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.stream)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.stream)).poll_shutdown(cx)
    }
}
