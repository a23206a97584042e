//! TLS under a server: [`TlsListener`] wraps any [`Listener`] so each accepted connection is
//! handed on at once and does its TLS handshake on its own connection task, bounded by a
//! handshake timeout. A client that connects and never finishes its handshake therefore holds
//! neither the accept loop nor other clients' handshakes, and is closed when its time is up.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::{FallibleAccept, TlsStream};

use super::{DEFAULT_HANDSHAKE_TIMEOUT, Listener};
use crate::tls::{ALPN_H2, ServerTlsConfig, TlsError};

/// Counts of a [`TlsListener`]'s handshakes, readable while it serves. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct TlsHandshakes(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU64,
    failed: AtomicU64,
}

impl TlsHandshakes {
    /// Handshakes that completed: one per connection that got as far as HTTP/2.
    pub fn completed(&self) -> u64 {
        self.0.completed.load(Ordering::SeqCst)
    }

    /// Handshakes that failed: a client that did not trust the server, presented no acceptable
    /// certificate when one was required, did not negotiate ALPN `h2`, did not speak TLS, or
    /// ran out of time.
    pub fn failed(&self) -> u64 {
        self.0.failed.load(Ordering::SeqCst)
    }
}

/// A [`Listener`] whose connections speak TLS: [`accept`](Listener::accept) returns each TCP
/// (or simulated) connection at once, wrapped in a [`TlsServerIo`] that performs the server's
/// side of the handshake when the connection is first read or written.
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
    handshake_timeout: Option<Duration>,
    handshakes: TlsHandshakes,
}

impl<L: std::fmt::Debug> std::fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("inner", &self.inner)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl<L: Listener> TlsListener<L> {
    /// TLS with `config` over the connections `inner` accepts.
    ///
    /// # Errors
    /// [`TlsError::Rejected`] when rustls refuses the settings.
    pub fn new(inner: L, config: &ServerTlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            inner,
            acceptor: TlsAcceptor::from(config.server_config()?),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            handshakes: TlsHandshakes::default(),
        })
    }

    /// Closes a connection whose TLS handshake has not completed within `timeout` of its
    /// accept; `None` waits as long as it takes. Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s),
    /// the server's HTTP/2 handshake timeout, which also counts from the accept.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake counts, shared with this listener.
    pub fn handshakes(&self) -> TlsHandshakes {
        self.handshakes.clone()
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Io = TlsServerIo<L::Io>;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send {
        let (acceptor, timeout) = (self.acceptor.clone(), self.handshake_timeout);
        let handshakes = self.handshakes.clone();
        let accepting = self.inner.accept();
        async move {
            let (io, peer) = accepting.await?;
            // The deadline counts from the accept, like the HTTP/2 handshake timeout.
            let deadline = timeout.map(|t| (t, Box::pin(tokio::time::sleep(t))));
            let accept = Box::new(acceptor.accept(io).into_fallible());
            let state = State::Handshaking { accept, deadline };
            Ok((TlsServerIo { state, peer, handshakes }, peer))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that does the server's TLS handshake on first use, then carries the
/// decrypted bytes. Reads and writes fail if the handshake fails or times out.
pub struct TlsServerIo<Io> {
    state: State<Io>,
    peer: SocketAddr,
    handshakes: TlsHandshakes,
}

enum State<Io> {
    Handshaking { accept: Box<FallibleAccept<Io>>, deadline: Option<(Duration, Pin<Box<Sleep>>)> },
    Ready(Box<TlsStream<Io>>),
    Failed,
}

impl<Io> std::fmt::Debug for TlsServerIo<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshaking { .. } => "handshaking",
            State::Ready(_) => "ready",
            State::Failed => "failed",
        };
        f.debug_struct("TlsServerIo").field("peer", &self.peer).field("state", &state).finish()
    }
}

impl<Io: AsyncRead + AsyncWrite + Send + Unpin + 'static> TlsServerIo<Io> {
    /// Drives the handshake; `Ready(Ok)` once the stream is ready.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<Io>>> {
        if let State::Handshaking { accept, deadline } = &mut self.state {
            let failed = match Pin::new(accept.as_mut()).poll(cx) {
                // RFC 9113 §3.2: HTTP/2 over TLS is negotiated with ALPN "h2". rustls refuses
                // a client whose protocols do not include it, but not one that offers none;
                // grpc-go's servers refuse those too (since 1.67).
                Poll::Ready(Ok(stream)) if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) => {
                    Some(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the TLS client did not negotiate ALPN \"h2\" (HTTP/2)",
                    ))
                }
                Poll::Ready(Ok(stream)) => {
                    self.handshakes.0.completed.fetch_add(1, Ordering::SeqCst);
                    self.state = State::Ready(Box::new(stream));
                    None
                }
                Poll::Ready(Err((e, io))) => {
                    // rustls has written its alert (a TLS 1.3 server refuses a missing client
                    // certificate after the client's side of the handshake, so the client's
                    // first HTTP/2 bytes are on their way). Closing at once would answer them
                    // with a TCP reset, which makes the client drop the unread alert and see
                    // only "connection reset"; linger so it reads why.
                    tokio::spawn(crate::serve::http2::linger(io));
                    Some(e)
                }
                Poll::Pending => {
                    let Some((timeout, sleep)) = deadline else { return Poll::Pending };
                    ready!(sleep.as_mut().poll(cx));
                    Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake not completed within {timeout:?}"),
                    ))
                }
            };
            if let Some(error) = failed {
                self.handshakes.0.failed.fetch_add(1, Ordering::SeqCst);
                tracing::info!(peer = %self.peer, %error, "TLS handshake failed");
                // Dropping the handshake closes the connection.
                self.state = State::Failed;
                return Poll::Ready(Err(error));
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection's TLS handshake failed",
            ))),
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncRead for TlsServerIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<Io: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncWrite for TlsServerIo<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Ready(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing to close politely: dropping the handshake closes the socket.
            State::Handshaking { .. } | State::Failed => {
                this.state = State::Failed;
                Poll::Ready(Ok(()))
            }
        }
    }
}
