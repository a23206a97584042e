//! The HTTP/2 connection loop under every server this crate runs: the instrumented `Echo`
//! server and the in-memory etcd.
//!
//! It does what tonic's `Server::serve_with_incoming_shutdown` does, with hyper's HTTP/2 server
//! directly, for two reasons tonic leaves no way around:
//! - hyper adds a `date` header to every response, read from the wall clock, unless told not
//!   to, and tonic does not expose the switch. HPACK sends a changed value in full, so the size
//!   of the response bytes — and in a simulation, how they split into segments and the order in
//!   which 1,000 waiting RPCs wake — depended on when a wall-clock second ticked over. Here no
//!   `date` is sent (gRPC does not use it; grpc-go sends none).
//! - tonic polls each connection in a `select!` that draws from tokio's unseeded RNG.
//!
//! # Contract
//! - Each accepted connection is served on its own task; every request read from it carries the
//!   connection's [`Connected::connect_info`] in its extensions, as with tonic.
//! - When `shutdown` completes, or `incoming` ends, accepting stops, every open connection is
//!   asked to shut down gracefully (GOAWAY; streams in flight finish), and serving returns once
//!   all of them have closed. A caller bounds that wait by dropping the future; connections
//!   still open are then left to their tasks.
//! - With a [`MaxAge`], each connection is asked to go away (GOAWAY) once its age, ±10 %
//!   jitter, has passed, as grpc-go's `MaxConnectionAge` does; so is every open connection when
//!   its [`GoAwayHandle`] fires. Going away is hyper's (h2's) graceful shutdown, the two-phase
//!   dance RFC 9113 §6.8 recommends and grpc-go performs: a GOAWAY with last-stream-id 2^31-1,
//!   a PING, and on its ack the GOAWAY with the real last-stream-id. Streams in flight then
//!   have the grace (`MaxConnectionAgeGrace`) to finish; after it the connection is closed.
//! - A failed accept (`Err` from `incoming`) is skipped: backing off is the stream's job
//!   (the `Echo` server wraps its listener in an accept backoff).
//! - Unlike tonic's server, nothing cuts a handler off at the request's `grpc-timeout`: the
//!   client resets the stream at its deadline (this crate's channel does), which drops the
//!   handler's future. The handlers served here answer at once or stream until cancelled.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Sleep;
use tonic::body::Body;

use super::{BodyDelay, GoAwayHandle};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_stream::{Stream, StreamExt};
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone, Default)]
pub(crate) struct Http2Config {
    /// HTTP/2 keep-alive: PING after `.0` without traffic, close when no answer within `.1`.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// Hold back each response's body (message and trailers) after its headers for as long
    /// as this says when the response is made.
    pub(crate) body_delay: Option<BodyDelay>,
    /// Send each connection GOAWAY at its age (MAX_CONNECTION_AGE).
    pub(crate) max_age: Option<MaxAge>,
    /// Send every open connection GOAWAY when this fires.
    pub(crate) goaway: Option<GoAwayHandle>,
}

/// grpc-go's `MaxConnectionAge` and `MaxConnectionAgeGrace`, with the seed of the jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxAge {
    /// The age at which a connection is sent GOAWAY, before jitter.
    pub(crate) age: Duration,
    /// How long streams in flight may run after the GOAWAY; `None`: as long as they take.
    pub(crate) grace: Option<Duration>,
    /// Seeds the jitter: connection `n` draws from stream `n` of a ChaCha8 RNG with this seed.
    pub(crate) seed: u64,
}

impl MaxAge {
    /// The age of connection number `n` (0 for the first accepted): `age` ±10 % (grpc-go's
    /// `getJitter`), drawn deterministically from the seed and `n`.
    pub(crate) fn age_of(&self, n: u64) -> Duration {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(n);
        let factor: f64 = rng.random_range(0.9..=1.1);
        // Saturates: an age of `Duration::MAX` (never, in effect) must not overflow.
        Duration::try_from_secs_f64(self.age.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

/// Serves `routes` on each connection `incoming` yields until `shutdown` completes or
/// `incoming` ends, then waits for open connections to close (see the module's contract).
pub(crate) async fn serve<S, Io>(
    incoming: S,
    routes: Routes,
    config: Http2Config,
    shutdown: impl Future<Output = ()>,
) where
    S: Stream<Item = io::Result<Io>>,
    Io: AsyncRead + AsyncWrite + Connected + Send + Unpin + 'static,
{
    let open = Arc::new(Open::default());
    let mut accepted_count = 0u64;
    let mut incoming = pin!(incoming);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = incoming.next() => accepted,
        };
        match accepted {
            None => break,
            Some(Err(_)) => {}
            Some(Ok(io)) => {
                let guard = open.enter();
                let age = config.max_age.map(|max_age| max_age.age_of(accepted_count));
                accepted_count += 1;
                tokio::spawn(connection(io, routes.clone(), config.clone(), age, guard));
            }
        }
    }
    open.stop_and_wait().await;
}

/// Serves one connection until it closes, shutting it down gracefully when asked to, when it
/// reaches `age`, or when the server's GOAWAY handle fires; after a GOAWAY for age or by the
/// handle, closes it once the grace (if any) has passed.
async fn connection<Io>(
    io: Io,
    routes: Routes,
    config: Http2Config,
    age: Option<Duration>,
    guard: OpenGuard,
) where
    Io: AsyncRead + AsyncWrite + Connected + Send + Unpin + 'static,
{
    let info = io.connect_info();
    let body_delay = config.body_delay;
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(info.clone());
        let call = routes.clone().oneshot(request);
        let body_delay = body_delay.clone();
        async move {
            let response = call.await?;
            // Read once the response is made, so a change applies to responses from then on.
            let delay = body_delay.as_ref().and_then(BodyDelay::get);
            Ok::<_, Infallible>(match delay {
                Some(delay) => response.map(|body| Body::new(DelayedBody::new(body, delay))),
                None => response,
            })
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).auto_date_header(false);
    if let Some((interval, timeout)) = config.keepalive {
        builder.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    let slot = Arc::new(std::sync::Mutex::new(None));
    let io = HandedBack { io: Some(io), slot: slot.clone() };
    // Boxed, so that dropping it below drops hyper's connection, and with it the stream.
    let mut served = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    let stop = guard.open.stop.notified();
    let mut stop = pin!(stop);
    // Registered before the flag is read, so a shutdown between the two is not missed.
    stop.as_mut().enable();
    let mut stopping = guard.open.stopping.load(Ordering::SeqCst);
    // Once set, hyper has been asked to go away; asking again would do nothing.
    let mut going_away = stopping;
    if stopping {
        served.as_mut().graceful_shutdown();
    }
    let mut age = age.map(|age| Box::pin(tokio::time::sleep(age)));
    // Without a handle, one of its own that nothing fires.
    let goaway = config.goaway.clone().unwrap_or_default();
    let goaway = goaway.notified();
    let mut goaway = pin!(goaway);
    goaway.as_mut().enable();
    let grace = config.max_age.and_then(|max_age| max_age.grace);
    let mut grace_over: Option<Pin<Box<Sleep>>> = None;
    // Set when hyper finished a graceful shutdown: the final GOAWAY is written.
    let mut lingering = false;
    loop {
        let why = tokio::select! {
            biased;
            result = &mut served => {
                match result {
                    Err(error) => tracing::debug!(%error, "connection ended with an error"),
                    Ok(()) if going_away => lingering = true,
                    Ok(()) => {}
                }
                break;
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                "the server is stopping"
            }
            () = fire(&mut grace_over) => {
                tracing::debug!("GOAWAY grace over: closing the connection");
                break;
            }
            () = fire(&mut age) => "max connection age",
            () = &mut goaway, if !going_away => "GOAWAY requested",
        };
        if going_away {
            continue;
        }
        going_away = true;
        tracing::debug!(reason = why, "sending GOAWAY");
        served.as_mut().graceful_shutdown();
        if !stopping {
            grace_over = grace.map(|grace| Box::pin(tokio::time::sleep(grace)));
        }
    }
    // hyper drops the stream with the connection; `HandedBack` puts it in the slot.
    drop(served);
    let io = crate::sync::lock(&slot).take();
    if let (true, Some(io)) = (lingering, io) {
        linger(io).await;
    }
}

/// How long a connection that ended with a GOAWAY stays readable for the client's last frames.
const LINGER: Duration = Duration::from_secs(1);

/// Closes the write side of a connection whose final GOAWAY has been written, then reads and
/// discards until the client closes its side, at most [`LINGER`]. A client may open a stream
/// while the GOAWAY is in flight; closing the socket at once would answer that stream's frames
/// with a TCP reset, and a reset makes the client's TCP drop what it has not read yet, the
/// GOAWAY included, so the client never learns that the stream was not processed and may be
/// retried. Go's `net/http` server lingers the same way before closing (`closeWriteAndWait`).
/// A TLS connection whose handshake failed lingers too, so the client reads the alert
/// (`server::tls`).
pub(crate) async fn linger<Io: AsyncRead + AsyncWrite + Unpin>(mut io: Io) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        // hyper has usually shut the write side already; then this fails, harmlessly.
        let _ = io.shutdown().await;
        let mut discard = [0u8; 4096];
        while let Ok(1..) = io.read(&mut discard).await {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A connection's stream, which it puts back into `slot` when hyper drops it, so the
/// connection's task can linger on it (hyper's HTTP/2 server gives no way to take the stream
/// back).
struct HandedBack<Io> {
    /// `Some` until dropped.
    io: Option<Io>,
    slot: Arc<std::sync::Mutex<Option<Io>>>,
}

impl<Io> HandedBack<Io> {
    fn io(&mut self) -> io::Result<Pin<&mut Io>>
    where
        Io: Unpin,
    {
        match &mut self.io {
            Some(io) => Ok(Pin::new(io)),
            None => Err(io::Error::other("the stream was handed back")),
        }
    }
}

impl<Io> Drop for HandedBack<Io> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            *crate::sync::lock(&self.slot) = Some(io);
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for HandedBack<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for HandedBack<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }
}

/// Completes once `sleep` fires, and clears it; never while it is `None`.
async fn fire(sleep: &mut Option<Pin<Box<Sleep>>>) {
    match sleep {
        Some(timer) => {
            timer.await;
            *sleep = None;
        }
        None => std::future::pending().await,
    }
}

/// The connections still open, and the shutdown signal they watch.
#[derive(Debug, Default)]
struct Open {
    count: AtomicUsize,
    /// Set once, when serving stops; `stop` wakes the connections then.
    stopping: AtomicBool,
    stop: Notify,
    /// Woken when the last connection closes.
    closed: Notify,
}

impl Open {
    fn enter(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        OpenGuard { open: self.clone() }
    }

    /// Asks every connection to shut down and waits until none is open.
    async fn stop_and_wait(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        loop {
            let closed = self.closed.notified();
            let mut closed = pin!(closed);
            closed.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Counts one open connection; dropping it (the connection's task ended, or was dropped with
/// its runtime) uncounts it.
#[derive(Debug)]
struct OpenGuard {
    open: Arc<Open>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.open.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.open.closed.notify_waiters();
        }
    }
}

/// A response body held back for a while after its headers went out.
#[derive(Debug)]
struct DelayedBody {
    /// Until this fires, nothing of the body is sent; `None` once it has.
    delay: Option<Pin<Box<Sleep>>>,
    inner: Body,
}

impl DelayedBody {
    fn new(inner: Body, delay: Duration) -> Self {
        Self { delay: Some(Box::pin(tokio::time::sleep(delay))), inner }
    }
}

impl http_body::Body for DelayedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(delay) = &mut self.delay {
            ready!(delay.as_mut().poll(cx));
            self.delay = None;
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.delay.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_jitter_stays_within_ten_percent_and_is_the_same_in_every_run() {
        let max_age = MaxAge { age: Duration::from_secs(10), grace: None, seed: 7 };
        let ages: Vec<Duration> = (0..200).map(|n| max_age.age_of(n)).collect();
        for age in &ages {
            assert!(
                (Duration::from_secs(9)..=Duration::from_secs(11)).contains(age),
                "a connection's age must be the max age ±10 %, got {age:?}"
            );
        }
        assert_eq!(max_age.age_of(3), ages[3], "the jitter must depend only on seed and number");
        let distinct: std::collections::BTreeSet<_> = ages.iter().collect();
        assert!(distinct.len() > 150, "connections must not all age alike (jitter spreads them)");
    }

    /// Regression: `Duration::mul_f64` panicked when the jittered age overflowed, so a library
    /// user passing `Duration::MAX` for "never" killed the accept loop at the first connection.
    #[test]
    fn a_max_age_too_long_to_jitter_saturates_instead_of_panicking() {
        let max_age = MaxAge { age: Duration::MAX, grace: None, seed: 7 };
        for n in 0..50 {
            assert!(max_age.age_of(n) >= Duration::from_secs(u64::MAX / 2), "connection {n}");
        }
    }
}
