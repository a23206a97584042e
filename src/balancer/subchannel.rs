//! Subchannels: one HTTP/2 connection to one address, with gRPC connectivity states (DESIGN §2.5).
//!
//! A [`Subchannel`] is a cheap handle. Behind it runs one task that owns the connection: it
//! waits in IDLE until asked to connect, dials through the channel's
//! [`Connector`], performs the HTTP/2 handshake with hyper, and
//! reports every state change to the channel's control task. Owning the connection is what lets
//! us see these states; tonic's own `Channel` hides them.
//!
//! Transitions (gRPC's connection-backoff doc and gRFC A62):
//! - IDLE → CONNECTING when [`Subchannel::connect`] is called.
//! - CONNECTING → READY when the handshake completes; the reconnect backoff resets.
//! - CONNECTING → TRANSIENT_FAILURE when the connect fails or its timeout fires; after the backoff
//!   (initial 1 s, ×1.6, ±20 % jitter, at most 120 s) → IDLE, so the policy decides whether to retry.
//! - READY → IDLE when the connection is lost (closed by the peer, or killed by keep-alive).
//! - Any state → SHUTDOWN when the last handle is dropped. RPCs already in flight on the
//!   connection finish; the connection closes once they have.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};

use super::{ConnectivityState, SubchannelState};
use crate::address::Address;
use crate::connector::Connector;

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
}

/// Reconnect backoff (gRPC's connection-backoff doc).
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// Delay after the first failure. Default 1 s.
    pub initial: Duration,
    /// Factor applied after each further failure. Default 1.6.
    pub multiplier: f64,
    /// Relative jitter, drawn uniformly from `[-jitter, +jitter]`. Default 0.2.
    pub jitter: f64,
    /// Upper bound on the delay before jitter. Default 120 s.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

/// HTTP/2 keep-alive: PING every `interval`, close the connection when a PING is not answered
/// within `timeout`. Without it a connection wedged by a partition never dies.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepAlive {
    /// Time between PINGs. gRPC's clients commonly use 10 s or more against real servers.
    pub interval: Duration,
    /// How long to wait for the PING's acknowledgement.
    pub timeout: Duration,
    /// Whether to PING while no RPC is in flight.
    pub while_idle: bool,
}

/// How subchannels connect; shared by all subchannels of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SubchannelConfig {
    /// Reconnect backoff. Default: [`BackoffConfig::default`].
    pub backoff: BackoffConfig,
    /// The least time a connect attempt (dial and handshake) is given; the attempt's timeout is
    /// the larger of this and the current backoff. Default 20 s (gRPC's `MIN_CONNECT_TIMEOUT`).
    pub min_connect_timeout: Duration,
    /// HTTP/2 keep-alive. Default: off, as in gRPC.
    pub keepalive: Option<KeepAlive>,
}

impl Default for SubchannelConfig {
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            min_connect_timeout: Duration::from_secs(20),
            keepalive: None,
        }
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
    address: Address,
    connect: ConnectSink,
    conn: Mutex<Option<SendRequest<tonic::body::Body>>>,
}

/// Where [`Subchannel::connect`] requests go.
enum ConnectSink {
    /// To the subchannel's task; the channel closes when the last handle drops.
    Task(mpsc::UnboundedSender<()>),
    /// Into a policy test's log of what the policy asked for.
    #[cfg(test)]
    Log(Arc<Mutex<Vec<String>>>),
}

impl Subchannel {
    /// The subchannel's id.
    pub fn id(&self) -> SubchannelId {
        self.shared.id
    }

    /// The address it connects to.
    pub fn address(&self) -> &Address {
        &self.shared.address
    }

    /// Asks an IDLE subchannel to connect. Ignored in any other state.
    pub fn connect(&self) {
        match &self.shared.connect {
            // The task is gone only after SHUTDOWN, when connecting means nothing.
            ConnectSink::Task(task) => {
                let _ = task.send(());
            }
            #[cfg(test)]
            ConnectSink::Log(log) => lock(log).push(format!("connect {}", self.id())),
        }
    }

    /// The HTTP/2 sender of the READY connection, if there is one.
    pub(crate) fn sender(&self) -> Option<SendRequest<tonic::body::Body>> {
        lock(&self.shared.conn).clone()
    }

    pub(crate) fn downgrade(&self) -> WeakSubchannel {
        WeakSubchannel(Arc::downgrade(&self.shared))
    }

    /// A subchannel with no task behind it whose `connect` calls are appended to `log`.
    /// Policy tests use it to record what a policy asks of its subchannels.
    #[cfg(test)]
    pub(crate) fn recording(id: u64, address: Address, log: Arc<Mutex<Vec<String>>>) -> Self {
        let connect = ConnectSink::Log(log);
        let shared = Shared::new(SubchannelId(id), address, connect);
        Self { shared: Arc::new(shared) }
    }
}

impl Shared {
    fn new(id: SubchannelId, address: Address, connect: ConnectSink) -> Self {
        Self { id, address, connect, conn: Mutex::new(None) }
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

/// Starts the task behind a new IDLE subchannel and returns its handle.
pub(crate) fn spawn(
    id: SubchannelId,
    address: Address,
    config: Arc<SubchannelConfig>,
    connector: Arc<dyn Connector>,
    events: mpsc::UnboundedSender<StateEvent>,
    rng_seed: u64,
) -> Subchannel {
    let (connect, commands) = mpsc::unbounded_channel();
    let connect = ConnectSink::Task(connect);
    let shared = Arc::new(Shared::new(id, address, connect));
    let worker = Worker {
        id,
        addr: shared.address.addr.clone(),
        conn: Arc::downgrade(&shared),
        backoff: Backoff::new(config.backoff.clone(), ChaCha8Rng::seed_from_u64(rng_seed)),
        config,
        connector,
        commands,
        events,
    };
    tokio::spawn(worker.run());
    Subchannel { shared }
}

struct Worker {
    id: SubchannelId,
    addr: String,
    conn: Weak<Shared>,
    config: Arc<SubchannelConfig>,
    connector: Arc<dyn Connector>,
    backoff: Backoff,
    commands: mpsc::UnboundedReceiver<()>,
    events: mpsc::UnboundedSender<StateEvent>,
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
            self.report(ConnectivityState::Connecting, None);
            let timeout = self.config.min_connect_timeout.max(self.backoff.current());
            let dial = dial(self.connector.clone(), self.addr.clone(), self.config.clone());
            let attempt = tokio::time::timeout(timeout, dial);
            let outcome = match self.until_shutdown(attempt).await {
                Wake::Shutdown => break,
                Wake::Done(Ok(result)) => result,
                Wake::Done(Err(_)) => {
                    Err(ConnectionError::Timeout { addr: self.addr.clone(), timeout })
                }
            };
            match outcome {
                Ok((sender, closed)) => {
                    if !self.serve(sender, closed).await {
                        break;
                    }
                }
                Err(error) => {
                    self.report(ConnectivityState::TransientFailure, Some(error));
                    let delay = self.backoff.next_delay();
                    if let Wake::Shutdown = self.until_shutdown(tokio::time::sleep(delay)).await {
                        break;
                    }
                    self.report(ConnectivityState::Idle, None);
                }
            }
        }
        self.report(ConnectivityState::Shutdown, None);
    }

    /// READY: publishes the sender and waits until the connection ends (→ IDLE, returns true)
    /// or the subchannel shuts down (returns false).
    async fn serve(
        &mut self,
        sender: SendRequest<tonic::body::Body>,
        closed: oneshot::Receiver<String>,
    ) -> bool {
        let Some(shared) = self.conn.upgrade() else { return false };
        *lock(&shared.conn) = Some(sender);
        drop(shared);
        self.backoff.reset();
        self.report(ConnectivityState::Ready, None);
        let wake = self.until_shutdown(closed).await;
        if let Some(shared) = self.conn.upgrade() {
            *lock(&shared.conn) = None;
        }
        match wake {
            Wake::Shutdown => false,
            Wake::Done(reason) => {
                let reason = reason.unwrap_or_else(|_| "connection task ended".to_owned());
                let error = ConnectionError::Lost { addr: self.addr.clone(), reason };
                self.report(ConnectivityState::Idle, Some(error));
                true
            }
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

    fn report(&self, state: ConnectivityState, error: Option<ConnectionError>) {
        tracing::debug!(subchannel = %self.id, addr = %self.addr, %state, error = ?error, "subchannel state");
        let _ =
            self.events.send(StateEvent { id: self.id, state: SubchannelState { state, error } });
    }
}

/// Dials and performs the HTTP/2 handshake; on success the connection is driven by its own
/// task, which sends the reason it ended on the returned receiver.
async fn dial(
    connector: Arc<dyn Connector>,
    addr: String,
    config: Arc<SubchannelConfig>,
) -> Result<(SendRequest<tonic::body::Body>, oneshot::Receiver<String>), ConnectionError> {
    let io = connector
        .connect(&addr)
        .await
        .map_err(|e| ConnectionError::Connect { addr: addr.clone(), reason: e.to_string() })?;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    if let Some(keepalive) = &config.keepalive {
        builder
            .keep_alive_interval(keepalive.interval)
            .keep_alive_timeout(keepalive.timeout)
            .keep_alive_while_idle(keepalive.while_idle);
    }
    let (sender, connection) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectionError::Handshake { addr: addr.clone(), reason: e.to_string() })?;
    let (done, closed) = oneshot::channel();
    tokio::spawn(async move {
        let reason = match connection.await {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        let _ = done.send(reason);
    });
    Ok((sender, closed))
}

/// Exponential backoff with seeded jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    current: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig, rng: ChaCha8Rng) -> Self {
        Self { current: config.initial, config, rng }
    }

    fn current(&self) -> Duration {
        self.current
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }

    /// The delay before the next attempt, with jitter; grows the base for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = base.mul_f64(self.config.multiplier).min(self.config.max);
        let jitter = self.config.jitter;
        let factor = if jitter > 0.0 { 1.0 + self.rng.random_range(-jitter..=jitter) } else { 1.0 };
        base.mul_f64(factor.max(0.0))
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (it only holds an
/// `Option` that is replaced whole).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap_and_resets() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            max: Duration::from_secs(5),
        };
        let mut backoff = Backoff::new(config, ChaCha8Rng::seed_from_u64(1));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5], "backoff must multiply and stop at max");
        backoff.reset();
        assert_eq!(backoff.next_delay().as_secs(), 1, "READY must reset the backoff");
    }

    #[test]
    fn backoff_jitter_stays_within_bounds_and_is_seeded() {
        let draw = |seed| {
            let mut backoff =
                Backoff::new(BackoffConfig::default(), ChaCha8Rng::seed_from_u64(seed));
            (0..20).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        let delays = draw(7);
        assert_eq!(delays, draw(7), "the same seed must give the same jitter");
        let mut base = Duration::from_secs(1);
        for delay in delays {
            assert!(
                delay >= base.mul_f64(0.8) && delay <= base.mul_f64(1.2),
                "{delay:?} vs {base:?}"
            );
            base = base.mul_f64(1.6).min(Duration::from_secs(120));
        }
    }
}
