//! Instrumented `Echo` servers that record every accepted connection and which connection
//! served each RPC.
//!
//! A server has a name and a [`ServerRecorder`]. Each accepted connection gets an id (0, 1, 2, …
//! in accept order), its peer address and its accept time; each `Echo` RPC is counted against the
//! connection that carried it, and the response names that connection. The record is read
//! through the cloneable recorder while the server runs, through the `Stats` RPC, or as JSON
//! ([`ServerStats::to_json`]) after it stopped.
//!
//! Serving is generic over where connections come from: [`InstrumentedServer::serve_incoming`]
//! takes any stream of accepted `(stream, peer)` pairs, [`InstrumentedServer::serve`] any
//! [`Listener`]; [`serve_tcp`] is the shortcut for a tokio [`TcpListener`].
//!
//! ```
//! use anchorage::pb::{EchoRequest, echo_client::EchoClient};
//! use anchorage::server::{InstrumentedServer, ServerRecorder};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let recorder = ServerRecorder::new("a");
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(InstrumentedServer::new(recorder.clone()).serve(listener, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut client = EchoClient::connect(format!("http://{addr}")).await?;
//! let reply = client.echo(EchoRequest { message: "hi".into(), ..Default::default() }).await?.into_inner();
//! assert_eq!((reply.message.as_str(), reply.server.as_str(), reply.connection), ("hi", "a", 0));
//! assert_eq!(recorder.stats().connections[0].rpcs, 1);
//!
//! drop(client);
//! let _ = stop.send(());
//! let stats = server.await?;
//! assert_eq!((stats.connections_accepted, stats.connections_closed, stats.rpcs), (1, 1, 1));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};

mod accept;
mod deadline;
mod echo;
mod fallback;
mod health;
mod tls;

use crate::serve::http2::{self, Http2Config, MaxAge};
pub use crate::serve::{
    BodyDelay, ConnectionInfo, ConnectionStats, GoAwayHandle, Incoming, Listener,
    MAX_CONNECTION_DETAIL, MAX_METHOD_PATH_LEN, MAX_METHOD_PATHS, OTHER_METHODS, RecordedIo,
    ServerRecorder, ServerStats,
};
use accept::BackoffIncoming;
pub use accept::{ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX, ACCEPT_WARNING_INTERVAL};
use deadline::DeadlineIo;
pub use echo::{ECHO_METHOD, EchoService};
use fallback::Fallback;
pub use fallback::HEALTH_CHECK_METHOD;
pub use health::{
    HEALTH_WATCH_METHOD, HealthStatus, MAX_HEALTH_SERVICE_NAME, MAX_HEALTH_SERVICES,
    UnknownServingStatus, parse_serving_status,
};
pub use tls::{TlsHandshakes, TlsListener, TlsServerIo};

/// How long a graceful shutdown waits for open connections to finish, unless configured.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accepted connection may take to send the HTTP/2 client preface, unless
/// configured.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accepted connection may go without sending its first request, unless configured.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A seed for the max-age jitter that depends only on `name` (FNV-1a), so a server's
/// connections age the same way in every run.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An instrumented `Echo` server, configured and ready to serve.
#[derive(Debug, Clone)]
pub struct InstrumentedServer {
    recorder: ServerRecorder,
    keepalive: Option<(Duration, Duration)>,
    drain_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    body_delay: BodyDelay,
    max_age: Option<(Duration, Option<Duration>)>,
    goaway: GoAwayHandle,
    health: HealthStatus,
}

impl InstrumentedServer {
    /// A server that records into `recorder` and takes its name from it.
    pub fn new(recorder: ServerRecorder) -> Self {
        Self {
            recorder,
            keepalive: None,
            drain_timeout: Some(DEFAULT_DRAIN_TIMEOUT),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            body_delay: BodyDelay::default(),
            max_age: None,
            goaway: GoAwayHandle::default(),
            health: HealthStatus::default(),
        }
    }

    /// Sends each connection GOAWAY once it is `age` old, give or take 10 % (grpc-go's
    /// `MaxConnectionAge`, so that clients reconnect, re-resolve and spread over new servers),
    /// and closes it `grace` after that GOAWAY if streams are still open
    /// (`MaxConnectionAgeGrace`; `None` lets them run as long as they take). The jitter is
    /// drawn from a seed derived from the server's name and the connection's number, so it is
    /// the same in every run. `None` turns it off.
    ///
    /// Default: off.
    #[must_use]
    pub fn max_connection_age(mut self, age: Option<Duration>, grace: Option<Duration>) -> Self {
        self.max_age = age.map(|age| (age, grace));
        self
    }

    /// Sends GOAWAY on the server's open connections whenever `handle` fires (see
    /// [`GoAwayHandle`]). A restarted server handed the same handle keeps obeying it.
    ///
    /// Default: a handle of the server's own, returned by [`goaway`](Self::goaway).
    #[must_use]
    pub fn shared_goaway(mut self, handle: GoAwayHandle) -> Self {
        self.goaway = handle;
        self
    }

    /// The handle that sends GOAWAY on this server's open connections.
    pub fn goaway(&self) -> &GoAwayHandle {
        &self.goaway
    }

    /// Serves `grpc.health.v1.Health` from `health`: whoever holds a clone (the `Admin`
    /// service's `SetHealth` RPC does too) changes what `Check` and `Watch` report while the server runs, and
    /// a server restarted with the same handle keeps the statuses.
    ///
    /// Default: a table of its own with everything SERVING.
    #[must_use]
    pub fn health(mut self, health: HealthStatus) -> Self {
        self.health = health;
        self
    }

    /// The handle to this server's health statuses.
    pub fn health_status(&self) -> &HealthStatus {
        &self.health
    }

    /// Closes a connection that has not sent the whole HTTP/2 client preface within `timeout`
    /// of being accepted (a client that connects and says nothing, or a slowloris). `None`
    /// waits as long as it takes.
    ///
    /// Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Closes a connection that has not sent a request (an HTTP/2 HEADERS frame) within
    /// `timeout` of being accepted. A connection that has sent one is never closed for being
    /// idle (keep-alive, if on, still closes it when its peer vanishes). `None` waits as long as
    /// it takes.
    ///
    /// Default: [`DEFAULT_IDLE_TIMEOUT`] (120 s).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Pings each connection after `interval` without traffic and closes it when no answer
    /// comes within `timeout`, so a connection to a vanished peer is recorded closed.
    ///
    /// Default: off.
    #[must_use]
    pub fn http2_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some((interval, timeout));
        self
    }

    /// How long serving goes on after the shutdown future completes, waiting for open
    /// connections to finish; when it runs out, serving returns and connections still open are
    /// left to their tasks (they show as not closed). `None` waits as long as it takes.
    ///
    /// Default: [`DEFAULT_DRAIN_TIMEOUT`] (10 s).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sends each response's headers at once and holds back its body (the message and the
    /// trailers) for `delay`: a server that commits to an answer, then stalls. For testing that
    /// a client's deadline covers the response body, not only the wait for headers. `None`
    /// sends the body as soon as it is ready. This starts a new [`BodyDelay`] of the server's
    /// own, which [`body_delay`](Self::body_delay) returns for changing it while serving.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn response_body_delay(mut self, delay: Option<Duration>) -> Self {
        self.body_delay = BodyDelay::new(delay);
        self
    }

    /// Holds back each response's body by whatever `delay` says when the response is made (see
    /// [`response_body_delay`](Self::response_body_delay)): whoever holds a clone of `delay`
    /// can slow the server down or speed it up while it serves, and a server that is
    /// restarted with the same handle starts with the current value.
    #[must_use]
    pub fn shared_body_delay(mut self, delay: BodyDelay) -> Self {
        self.body_delay = delay;
        self
    }

    /// The handle to this server's body delay; changing it affects the responses made from
    /// then on.
    pub fn body_delay(&self) -> &BodyDelay {
        &self.body_delay
    }

    /// The recorder this server writes to.
    pub fn recorder(&self) -> &ServerRecorder {
        &self.recorder
    }

    /// Serves connections accepted from `listener` until `shutdown` completes, then drains
    /// (see [`drain_timeout`](Self::drain_timeout)) and returns the final stats.
    pub async fn serve<L: Listener>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()>,
    ) -> ServerStats {
        self.serve_incoming(Incoming::new(listener), shutdown).await
    }

    /// Serves each accepted `(stream, peer)` pair `incoming` yields until `shutdown` completes,
    /// then drains (see [`drain_timeout`](Self::drain_timeout)) and returns the final stats.
    ///
    /// An `Err` item (a failed accept) is skipped after a pause that doubles from
    /// [`ACCEPT_BACKOFF_INITIAL`] to [`ACCEPT_BACKOFF_MAX`] while accepts keep failing (one
    /// success resets it); failures are logged at most once per [`ACCEPT_WARNING_INTERVAL`], with
    /// the number not logged. Connection ids are assigned in the order the stream yields
    /// connections. Serving also ends, draining the same way, when `incoming` ends.
    ///
    /// Responses carry no `date` header: nothing the server sends depends on the wall clock,
    /// which keeps simulated runs a function of their seed.
    pub async fn serve_incoming<S, Io>(
        self,
        incoming: S,
        shutdown: impl Future<Output = ()>,
    ) -> ServerStats
    where
        S: Stream<Item = io::Result<(Io, SocketAddr)>>,
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Self {
            recorder,
            keepalive,
            drain_timeout,
            handshake_timeout,
            idle_timeout,
            body_delay,
            max_age,
            goaway,
            health,
        } = self;
        let name = recorder.name().to_owned();
        let max_age = max_age.map(|(age, grace)| MaxAge { age, grace, seed: name_seed(&name) });
        let accepting = recorder.clone();
        let incoming = BackoffIncoming::new(incoming, name.clone()).map(move |accepted| {
            accepted.map(|(io, peer)| {
                accepting.accept(DeadlineIo::new(io, handshake_timeout, idle_timeout), peer)
            })
        });

        let routes = tonic::service::Routes::new(EchoService::new(recorder.clone()).into_server())
            .add_service(health.clone().into_admin_server(name.clone()))
            .add_service(health.into_server());
        let routes = tonic::service::Routes::from(
            routes.prepare().into_axum_router().fallback_service(Fallback::new(recorder.clone())),
        );

        // Learn when shutdown starts, so draining can be bounded.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = started_tx.send(());
        };
        let draining = name.clone();
        let drain_deadline = async move {
            // An error means the server stopped on its own before any shutdown.
            if started_rx.await.is_ok() {
                tracing::info!(server = %draining, "shutting down: draining connections");
                if let Some(limit) = drain_timeout {
                    tokio::time::sleep(limit).await;
                    return;
                }
            }
            std::future::pending().await
        };

        let config =
            Http2Config { keepalive, body_delay: Some(body_delay), max_age, goaway: Some(goaway) };
        tracing::info!(server = %name, "serving");
        tokio::select! {
            biased;
            () = http2::serve(incoming, routes, config, signal) => {}
            () = drain_deadline => {
                tracing::warn!(server = %name, "drain timeout: leaving connections still open");
            }
        }
        recorder.stats()
    }
}

/// Serves the instrumented `Echo` service as `name` on `listener` until `shutdown` completes;
/// returns the final stats. Use [`InstrumentedServer`] to read the stats while serving.
pub async fn serve_tcp(
    listener: TcpListener,
    name: impl Into<String>,
    shutdown: impl Future<Output = ()>,
) -> ServerStats {
    InstrumentedServer::new(ServerRecorder::new(name)).serve(listener, shutdown).await
}
