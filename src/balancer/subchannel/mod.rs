//! Subchannels: one HTTP/2 connection to one address, with gRPC connectivity states (DESIGN §2.5).
//!
//! A [`Subchannel`] is a cheap handle. Behind it runs one task that owns the connection: it
//! waits in IDLE until asked to connect, dials through the channel's [`Connector`], performs the
//! HTTP/2 handshake with hyper, waits for the server's preface, and reports every state change
//! to the channel's control task. Owning the connection is what lets us see these states;
//! tonic's own `Channel` hides them.
//!
//! # States (gRPC's connectivity-semantics and connection-backoff docs, gRFC A62)
//! - IDLE → CONNECTING when [`Subchannel::connect`] is called.
//! - CONNECTING → READY when the server's first frame, a SETTINGS frame (RFC 9113 §3.4), has
//!   been read; the reconnect backoff resets.
//! - CONNECTING → TRANSIENT_FAILURE when the dial fails, the handshake fails, the server's first
//!   frame is not SETTINGS, or the connect timeout fires before the server has spoken; after the
//!   backoff (initial 1 s, ×1.6, ±20 %, at most 120 s) → IDLE, so the policy decides whether to
//!   retry.
//! - READY → IDLE as soon as the server's GOAWAY is *received* (MAX_CONNECTION_AGE, a server
//!   shutting down): the end of that connection, not a failure, so no error and no backoff.
//!   The connection stops taking new RPCs at once; streams at or below its last-stream-id
//!   finish on it (it closes when they are done, or when the server's grace ends), streams
//!   above it fail as unprocessed and the channel retries them transparently. The policy sees
//!   IDLE, requests re-resolution and reconnects (at once, or on the next RPC for pick_first).
//!   A GOAWAY with ENHANCE_YOUR_CALM and `too_many_pings` doubles the keep-alive interval of
//!   this subchannel's later connections (gRFC A8).
//! - READY → IDLE, with the error, when the connection is lost without a GOAWAY (closed by the
//!   peer, reset, or killed by keep-alive).
//! - Any state → SHUTDOWN when the last handle is dropped. RPCs already in flight on a READY
//!   connection finish; the connection closes once they have.
//!
//! # Connection state and health-filtered state (gRFC A17)
//! The states above are the *connection's*. The policy sees them unchanged unless it created
//! the subchannel with [`SubchannelOptions::health_check`] and the service config has a
//! `healthCheckConfig` when the connection becomes READY. Then, while the connection is READY,
//! the policy sees its *health-filtered* state instead (see `health.rs`): CONNECTING while a
//! `Health/Watch` stream opens, READY only while the last status is SERVING, and
//! TRANSIENT_FAILURE for any other status or a failed stream (retried after a backoff of its
//! own) — without closing the connection. UNIMPLEMENTED disables checking for that connection
//! (READY). When the connection ends, the checker ends with it and the policy sees IDLE as
//! above (a GOAWAY ends the checker at once, with the connection's use); the next connection
//! starts checking afresh.
//!
//! # Invariants
//! - READY means the server has spoken HTTP/2; a TCP peer that never does stays CONNECTING
//!   until the connect timeout (the one timeout that bounds dial, handshake and preface).
//! - A sender is published (`Subchannel::sender`) only while the connection is READY (with
//!   health checking, also while the policy sees CONNECTING or TRANSIENT_FAILURE for it: the
//!   connection is up and the policy's picker decides whether it gets RPCs); never after a
//!   GOAWAY.
//! - A health checker runs only while its connection is READY and no GOAWAY has been received,
//!   and reports nothing after the connection's end has been reported.
//! - Every attempt ends within its timeout, and a failed or abandoned attempt closes its socket.
//! - Every state change is delivered to the control task, in order, none lost: the event
//!   channel is bounded (`STATE_EVENT_CAPACITY`) and the task waits for room.
//! - Connect requests coalesce: at most one is pending, and extra ones are dropped, since one
//!   is enough to leave IDLE.
//! - The task never panics on its configuration: its arithmetic saturates.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, mpsc};

use super::{ConnectivityState, SubchannelState};
use crate::address::Address;
use crate::backoff::Backoff;
use crate::connector::Connector;

mod config;
mod connect;
mod health;

pub use config::{
    BackoffConfig, ConfigError, KeepAlive, MAX_SETTING_DURATION, MIN_KEEPALIVE_INTERVAL,
    SubchannelConfig,
};
use connect::{Connected, Ended};
pub(crate) use health::HealthSource;

/// How many state events the subchannels of one channel may have queued for its control task
/// before their tasks wait. Each connect attempt produces at most three events, and the control
/// task handles them at once, so the queue stays short; the bound only keeps a stalled control
/// task from growing it without limit.
pub(crate) const STATE_EVENT_CAPACITY: usize = 64;

/// A subchannel's id, unique within its channel and assigned in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SubchannelId(pub u64);

impl fmt::Display for SubchannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sc{}", self.0)
    }
}

/// Why a subchannel left CONNECTING or READY. Cheap to clone; compares by message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connector failed.
    #[error("subchannel: connect to {addr} failed: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The connector's error.
        reason: String,
    },
    /// The connect attempt did not finish within the connect timeout.
    #[error("subchannel: connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The address dialled.
        addr: String,
        /// The timeout that fired.
        timeout: Duration,
    },
    /// The TCP connection opened but the HTTP/2 handshake failed.
    #[error("subchannel: HTTP/2 handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address dialled.
        addr: String,
        /// hyper's error.
        reason: String,
    },
    /// A READY connection ended.
    #[error("subchannel: connection to {addr} lost: {reason}")]
    Lost {
        /// The address of the lost connection.
        addr: String,
        /// How it ended.
        reason: String,
    },
    /// The connection is up but its health check reports a status other than SERVING
    /// (gRFC A17).
    #[error("subchannel: connection to {addr} is up but service {service:?} is {status}")]
    Unhealthy {
        /// The address of the connection.
        addr: String,
        /// The service name watched (empty: the whole server).
        service: String,
        /// The status reported, such as `NOT_SERVING`.
        status: String,
    },
    /// The connection is up but its `Health/Watch` stream failed; it is opened again after a
    /// backoff.
    #[error("subchannel: connection to {addr} is up but its health check failed: {reason}")]
    HealthStream {
        /// The address of the connection.
        addr: String,
        /// The stream's status.
        reason: String,
    },
}

/// What a policy asks of a new subchannel (grpc-go's `NewSubConnOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubchannelOptions {
    /// Watch the health of each READY connection when the service config has a
    /// `healthCheckConfig` (gRFC A17), and report READY only while it is SERVING.
    /// `round_robin` asks for it; `pick_first` does not, as in grpc-go.
    ///
    /// Default: `false`.
    pub health_check: bool,
}

impl SubchannelOptions {
    /// Options with health checking asked for (it happens only if the service config has a
    /// `healthCheckConfig`).
    pub fn with_health_check() -> Self {
        Self { health_check: true }
    }
}

/// A handle to one subchannel. Clones share the subchannel; it shuts down when the last handle
/// is dropped. Equality is by [`SubchannelId`].
#[derive(Clone)]
pub struct Subchannel {
    shared: Arc<Shared>,
}

struct Shared {
    id: SubchannelId,
    address: Arc<Address>,
    connect: ConnectHook,
    /// The READY connection's sender, swapped atomically so that RPCs read it without a lock.
    conn: ArcSwapOption<SendRequest<tonic::body::Body>>,
}

/// What [`Subchannel::connect`] does: hand the request to the subchannel's task (see [`spawn`]),
/// or, in a policy test's fake controller, record it.
///
/// # Contract
/// Called on the policy's task, once per `connect` call; must not block.
pub(crate) type ConnectHook = Box<dyn Fn() + Send + Sync>;

impl Subchannel {
    /// The subchannel's id.
    pub fn id(&self) -> SubchannelId {
        self.shared.id
    }

    /// The address it connects to.
    pub fn address(&self) -> &Address {
        &self.shared.address
    }

    /// The address it connects to, shared rather than copied (for every response's
    /// [`ServedBy`](crate::channel::ServedBy)).
    pub(crate) fn shared_address(&self) -> Arc<Address> {
        self.shared.address.clone()
    }

    /// Asks an IDLE subchannel to connect. Ignored in any other state. Never blocks.
    pub fn connect(&self) {
        (self.shared.connect)();
    }

    /// The HTTP/2 sender of the READY connection, if there is one.
    pub(crate) fn sender(&self) -> Option<SendRequest<tonic::body::Body>> {
        self.shared.conn.load().as_deref().cloned()
    }

    pub(crate) fn downgrade(&self) -> WeakSubchannel {
        WeakSubchannel(Arc::downgrade(&self.shared))
    }

    /// A handle, with no connection yet, whose `connect` calls run `connect`. [`spawn`] gives
    /// it a hook that wakes the subchannel's task; policy tests give one that records the call.
    pub(crate) fn with_connect_hook(
        id: SubchannelId,
        address: Address,
        connect: ConnectHook,
    ) -> Self {
        let shared =
            Shared { id, address: Arc::new(address), connect, conn: ArcSwapOption::empty() };
        Self { shared: Arc::new(shared) }
    }
}

impl PartialEq for Subchannel {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Subchannel {}

impl fmt::Debug for Subchannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.id(), self.address())
    }
}

/// A handle that does not keep the subchannel alive; the control task holds these.
#[derive(Debug, Clone)]
pub(crate) struct WeakSubchannel(Weak<Shared>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.id, self.address)
    }
}

impl WeakSubchannel {
    pub(crate) fn upgrade(&self) -> Option<Subchannel> {
        self.0.upgrade().map(|shared| Subchannel { shared })
    }
}

/// A state change reported by a subchannel's task to the control task.
#[derive(Debug)]
pub(crate) struct StateEvent {
    pub(crate) id: SubchannelId,
    pub(crate) state: SubchannelState,
}

/// Starts the task behind a new IDLE subchannel and returns its handle. `health` is the
/// channel's service config when the policy asked for health checks, `None` otherwise.
pub(crate) fn spawn(
    id: SubchannelId,
    address: Address,
    config: Arc<SubchannelConfig>,
    connector: Arc<dyn Connector>,
    events: mpsc::Sender<StateEvent>,
    rng_seed: u64,
    health: Option<HealthSource>,
) -> Subchannel {
    let (requester, commands) = connect_requests();
    let subchannel = Subchannel::with_connect_hook(id, address, task_hook(requester));
    let shared = &subchannel.shared;
    let worker = Worker {
        id,
        addr: shared.address.addr.clone(),
        conn: Arc::downgrade(shared),
        backoff: Backoff::new(config.backoff.clone(), ChaCha8Rng::seed_from_u64(rng_seed)),
        keepalive: config.keepalive.clone(),
        config,
        connector,
        commands,
        events,
        health,
        rng_seed,
        health_checkers: 0,
    };
    tokio::spawn(worker.run());
    subchannel
}

/// A hook that hands connect requests to the subchannel's task through `requester`. The hook
/// lives in the handles' shared part, so dropping the last handle drops the requester, which
/// tells the task to shut down.
fn task_hook(requester: Requester) -> ConnectHook {
    Box::new(move || requester.request())
}

/// A connect request is pending.
const REQUESTED: u8 = 1;
/// Every handle is gone.
const CLOSED: u8 = 2;

/// Connect requests from the handles to the subchannel's task, and the news that the last handle
/// is gone: two flags and a wake-up. A tokio `mpsc` with one slot did the same at about 540
/// bytes of heap per subchannel, for every idle connection; this is under 100.
#[derive(Debug, Default)]
struct Signal {
    flags: AtomicU8,
    wake: Notify,
}

/// The handles' end of the [`Signal`]; dropping it closes the signal.
struct Requester(Arc<Signal>);

/// The task's end of the [`Signal`].
struct Requests(Arc<Signal>);

fn connect_requests() -> (Requester, Requests) {
    let signal = Arc::new(Signal::default());
    (Requester(signal.clone()), Requests(signal))
}

impl Requester {
    /// Leaves a connect request pending. Requests coalesce: one pending request is all IDLE
    /// needs. Never blocks.
    fn request(&self) {
        self.0.flags.fetch_or(REQUESTED, Ordering::AcqRel);
        self.0.wake.notify_one();
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.0.flags.fetch_or(CLOSED, Ordering::AcqRel);
        self.0.wake.notify_one();
    }
}

impl Requests {
    /// Waits for a connect request and takes it: `Some` for a request, `None` once every handle
    /// is gone and no request is pending (as a closed queue would give). Cancel-safe: a request
    /// is taken only when it is returned, and a wake-up that finds nothing just waits again.
    async fn recv(&mut self) -> Option<()> {
        loop {
            let flags = self.0.flags.fetch_and(!REQUESTED, Ordering::AcqRel);
            if flags & REQUESTED != 0 {
                return Some(());
            }
            if flags & CLOSED != 0 {
                return None;
            }
            // A request made since the flags were read left a permit: this returns at once.
            self.0.wake.notified().await;
        }
    }
}

struct Worker {
    id: SubchannelId,
    addr: String,
    conn: Weak<Shared>,
    config: Arc<SubchannelConfig>,
    connector: Arc<dyn Connector>,
    backoff: Backoff,
    /// The keep-alive of the next connection: the configured one, doubled after each
    /// `too_many_pings` GOAWAY.
    keepalive: Option<KeepAlive>,
    commands: Requests,
    events: mpsc::Sender<StateEvent>,
    /// The service config, when the policy asked for health checks.
    health: Option<HealthSource>,
    /// The subchannel's seed; with [`health_seed`], it seeds each health checker's backoff.
    rng_seed: u64,
    /// Health checkers started so far.
    health_checkers: u64,
}

/// The seed of the `n`th (from 0) health checker's backoff: the `n`th draw from the
/// subchannel's seed on a stream of its own, so the reconnect backoff draws the same jitter
/// whether or not health checks run. Each draw is computed by seeking rather than kept in a
/// generator: a generator is 320 bytes that every subchannel's task would carry for good.
fn health_seed(seed: u64, n: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    // Each draw is one u64: two 32-bit words.
    rng.set_word_pos(u128::from(n) * 2);
    rng.next_u64()
}

/// The next report from a running health checker; pending for ever when none runs.
async fn next_report<T>(reports: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match reports {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}

/// How waiting inside a state ended.
enum Wake<T> {
    /// Every handle is gone: shut down.
    Shutdown,
    /// What was waited for happened.
    Done(T),
}

impl Worker {
    async fn run(mut self) {
        // IDLE: wait for a connect request.
        while self.commands.recv().await.is_some() {
            self.report(ConnectivityState::Connecting, None).await;
            let timeout = self.config.min_connect_timeout.max(self.backoff.current());
            // Boxed: the attempt is short-lived, and inline it would size the task's future for
            // good, so every idle READY connection would carry its space.
            let attempt = Box::pin(connect::connect(
                self.connector.clone(),
                self.addr.clone(),
                self.keepalive.clone(),
                timeout,
            ));
            let outcome = match self.until_shutdown(attempt).await {
                Wake::Shutdown => break,
                Wake::Done(outcome) => outcome,
            };
            match outcome {
                Ok(connected) => {
                    if !self.serve(connected).await {
                        break;
                    }
                }
                Err(error) => {
                    self.report(ConnectivityState::TransientFailure, Some(error)).await;
                    let delay = self.backoff.next_delay().min(MAX_SETTING_DURATION);
                    if let Wake::Shutdown = self.until_shutdown(tokio::time::sleep(delay)).await {
                        break;
                    }
                    self.report(ConnectivityState::Idle, None).await;
                }
            }
        }
        self.report(ConnectivityState::Shutdown, None).await;
    }

    /// READY: publishes the sender and waits until the connection ends or the server sends
    /// GOAWAY (→ IDLE, returns true) or the subchannel shuts down (returns false).
    ///
    /// A GOAWAY ends the connection's use at once, not when it closes: the sender is withdrawn
    /// so no new RPC starts on it, and the subchannel reports IDLE (no error, no backoff) while
    /// the streams in flight finish on the old connection, whose task runs on until it closes.
    async fn serve(&mut self, connected: Connected) -> bool {
        let Connected { sender, mut driver, mut goaway } = connected;
        let Some(shared) = self.conn.upgrade() else { return false };
        shared.conn.store(Some(Arc::new(sender)));
        drop(shared);
        self.backoff.reset();
        let end = async {
            tokio::select! {
                biased;
                Ok(goaway) = &mut goaway => Err(goaway),
                ended = &mut driver => Ok(ended),
            }
        };
        let wake = self.while_ready(end).await;
        if let Some(shared) = self.conn.upgrade() {
            shared.conn.store(None);
        }
        let ended = match wake {
            Wake::Shutdown => return false,
            Wake::Done(Err(goaway)) => {
                tracing::debug!(
                    subchannel = %self.id,
                    addr = %self.addr,
                    last_stream_id = goaway.last_stream_id,
                    error_code = goaway.error_code,
                    "server sent GOAWAY; streams in flight finish on the old connection"
                );
                if goaway.too_many_pings {
                    self.slow_down_keepalive();
                }
                // Dropping the handle detaches the task: it drives the old connection until
                // its last stream is done and it closes.
                drop(driver);
                self.report(ConnectivityState::Idle, None).await;
                return true;
            }
            Wake::Done(Ok(ended)) => ended,
        };
        let ended = ended.unwrap_or_else(|_| Ended {
            reason: "connection task ended".to_owned(),
            too_many_pings: false,
        });
        if ended.too_many_pings {
            self.slow_down_keepalive();
        }
        let error = ConnectionError::Lost { addr: self.addr.clone(), reason: ended.reason };
        self.report(ConnectivityState::Idle, Some(error)).await;
        true
    }

    /// While the connection is READY: reports READY, or the health-filtered state when health
    /// checking is on, until `driver` ends or the subchannel shuts down. The checker is dropped
    /// before this returns, so nothing it reports can follow the connection's end.
    async fn while_ready<F: Future>(&mut self, driver: F) -> Wake<F::Output> {
        let checker = self.health_checker();
        if checker.is_none() {
            self.report(ConnectivityState::Ready, None).await;
        }
        // The checker's future and its report queue exist only while a checker runs: inline
        // or always allocated, they would cost every idle connection about 4 KB whether or not
        // health checks ran. Without a checker, the reports branch stays pending, as an open
        // empty queue would.
        let (mut reports, checking) = match checker {
            Some(checker) => {
                let (reports_tx, reports) = mpsc::channel(1);
                (Some(reports), Some(Box::pin(checker.run(reports_tx))))
            }
            None => (None, None),
        };
        let checking = async move {
            if let Some(checking) = checking {
                checking.await;
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(driver, checking);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    if command.is_none() {
                        return Wake::Shutdown;
                    }
                }
                output = &mut driver => return Wake::Done(output),
                Some((state, error)) = next_report(&mut reports) => self.report(state, error).await,
                () = &mut checking => {}
            }
        }
    }

    /// The health checker for the connection that just became READY, if the policy asked for
    /// one and the service config has a `healthCheckConfig` now.
    fn health_checker(&mut self) -> Option<health::Checker> {
        let source = self.health.as_ref()?;
        let service = source.config.borrow().health_check()?.service_name.clone();
        let (scheme, authority) = (source.scheme.clone(), source.authority.clone());
        let sender =
            self.conn.upgrade().and_then(|shared| shared.conn.load().as_deref().cloned())?;
        let rng = ChaCha8Rng::seed_from_u64(health_seed(self.rng_seed, self.health_checkers));
        self.health_checkers += 1;
        Some(health::Checker {
            addr: self.addr.clone(),
            scheme,
            authority,
            service,
            sender,
            backoff: Backoff::new(self.config.backoff.clone(), rng),
        })
    }

    /// gRFC A8: the server found our PINGs too frequent, so later connections PING half as
    /// often (saturating at [`MAX_SETTING_DURATION`]).
    fn slow_down_keepalive(&mut self) {
        if let Some(keepalive) = &mut self.keepalive {
            let doubled = keepalive.interval.saturating_mul(2).min(MAX_SETTING_DURATION);
            tracing::warn!(
                subchannel = %self.id,
                addr = %self.addr,
                interval = ?doubled,
                "server sent GOAWAY too_many_pings; doubling the keep-alive interval"
            );
            keepalive.interval = doubled;
        }
    }

    /// Runs `fut` until it completes or every handle is dropped. Connect requests that arrive
    /// meanwhile are ignored: they mean something only in IDLE.
    async fn until_shutdown<F: Future>(&mut self, fut: F) -> Wake<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    if command.is_none() {
                        return Wake::Shutdown;
                    }
                }
                output = &mut fut => return Wake::Done(output),
            }
        }
    }

    /// Delivers a state change to the control task, waiting for room in the event queue; a
    /// closed queue means the channel is gone and nobody listens.
    async fn report(&self, state: ConnectivityState, error: Option<ConnectionError>) {
        tracing::debug!(subchannel = %self.id, addr = %self.addr, %state, error = ?error, "subchannel state");
        let event = StateEvent { id: self.id, state: SubchannelState { state, error } };
        let _ = self.events.send(event).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::connector::ConnectFuture;

    /// Fails every dial at once.
    #[derive(Debug)]
    struct Refusing;

    impl Connector for Refusing {
        fn connect(&self, addr: &str) -> ConnectFuture {
            let error = io::Error::new(io::ErrorKind::ConnectionRefused, format!("{addr} refused"));
            Box::pin(async move { Err(error) })
        }
    }

    fn refusing_config() -> Arc<SubchannelConfig> {
        let backoff = BackoffConfig {
            initial: Duration::from_millis(1),
            multiplier: 1.0,
            jitter: 0.0,
            max: Duration::from_millis(1),
        };
        Arc::new(SubchannelConfig { backoff, ..Default::default() })
    }

    /// The seeds once came from a generator kept in the task; computing them by seeking must
    /// give the same sequence, or seeded runs would change.
    #[test]
    fn health_seeds_are_the_draws_of_the_subchannels_own_stream_in_order() {
        let mut stream = ChaCha8Rng::seed_from_u64(42);
        stream.set_stream(1);
        for n in 0..100 {
            assert_eq!(health_seed(42, n), stream.next_u64(), "draw {n}");
        }
    }

    /// Every subchannel's task lives as long as the subchannel, so its future's size is memory
    /// each idle connection carries. Regressions: with the health checker (and its 320-byte
    /// generator) inline, it was 6,224 bytes whether or not health checks ran; with the reconnect
    /// backoff's generator inline, 2,688.
    #[test]
    fn a_subchannel_task_carries_no_space_for_health_checks_it_does_not_run() {
        let (requester, commands) = connect_requests();
        let (events, _reports) = mpsc::channel(1);
        let config = refusing_config();
        let subchannel = Subchannel::with_connect_hook(
            SubchannelId(0),
            Address::new("a:1"),
            task_hook(requester),
        );
        let worker = Worker {
            id: SubchannelId(0),
            addr: "a:1".into(),
            conn: Arc::downgrade(&subchannel.shared),
            backoff: Backoff::new(config.backoff.clone(), ChaCha8Rng::seed_from_u64(1)),
            keepalive: None,
            config,
            connector: Arc::new(Refusing),
            commands,
            events,
            health: None,
            rng_seed: 1,
            health_checkers: 0,
        };
        let size = std::mem::size_of_val(&worker.run());
        eprintln!("task future: {size} bytes");
        assert!(size <= 2_200, "a subchannel's task future must stay small, got {size} bytes");
    }

    /// Whether `requests` would hand over a request at once, without waiting.
    fn ready(requests: &mut Requests) -> Option<Option<()>> {
        let mut recv = std::pin::pin!(requests.recv());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match recv.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(taken) => Some(taken),
            std::task::Poll::Pending => None,
        }
    }

    /// Regression: connect requests went into an unbounded queue, so a policy calling
    /// `connect` in a loop grew it without limit.
    #[test]
    fn invariant_connect_requests_coalesce_into_one_pending_request() {
        let (requester, mut requests) = connect_requests();
        let subchannel = Subchannel::with_connect_hook(
            SubchannelId(0),
            Address::new("a:1"),
            task_hook(requester),
        );
        for _ in 0..1000 {
            subchannel.connect();
        }
        assert_eq!(ready(&mut requests), Some(Some(())), "a request must be pending");
        assert_eq!(ready(&mut requests), None, "a thousand connect calls must leave one request");
        subchannel.connect();
        assert_eq!(ready(&mut requests), Some(Some(())), "a taken request makes room for the next");
    }

    /// Invariant: any state → SHUTDOWN when the last handle is dropped. The task learns it
    /// through its connect requests, which end once the handles are gone; a request made just
    /// before is still handed over first, as a queue would.
    #[tokio::test]
    async fn invariant_the_last_handle_dropped_ends_the_requests_even_while_the_task_waits() {
        let (requester, mut requests) = connect_requests();
        let subchannel = Subchannel::with_connect_hook(
            SubchannelId(0),
            Address::new("a:1"),
            task_hook(requester),
        );
        let other = subchannel.clone();
        let waiting = tokio::spawn(async move {
            let first = requests.recv().await;
            (first, requests.recv().await, requests.recv().await)
        });
        tokio::task::yield_now().await;
        subchannel.connect();
        drop(subchannel);
        tokio::task::yield_now().await;
        other.connect();
        drop(other);
        let taken = waiting.await.expect("the waiting task must not panic");
        assert_eq!(
            taken,
            (Some(()), Some(()), None),
            "each request is handed over, then the end of the handles"
        );
    }

    /// Regression: state events went into an unbounded queue, so a stalled control task let a
    /// failing subchannel queue reports without limit.
    #[tokio::test]
    async fn invariant_state_reports_wait_for_room_and_none_is_lost() {
        let (events, mut reports) = mpsc::channel(2);
        let subchannel = spawn(
            SubchannelId(0),
            Address::new("a:1"),
            refusing_config(),
            Arc::new(Refusing),
            events,
            1,
            None,
        );
        subchannel.connect();
        // The subchannel fails and backs off every millisecond; nobody reads its reports.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(reports.len(), 2, "a stalled control task must hold the queue at its bound");
        let mut states = Vec::new();
        for _ in 0..3 {
            states.push(reports.recv().await.expect("a report").state.state);
        }
        use ConnectivityState::*;
        assert_eq!(
            states,
            [Connecting, TransientFailure, Idle],
            "reports must arrive in order and none may be lost while the queue is full"
        );
        drop(subchannel);
    }
}
