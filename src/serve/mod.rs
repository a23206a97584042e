//! What every server in this crate shares, whatever it serves: where connections come from
//! ([`Listener`], [`Incoming`]), the record of accepted connections and the RPCs each carried
//! ([`ServerRecorder`], [`ConnectionInfo`]), and the HTTP/2 connection loop (`http2`) with its
//! runtime handles ([`BodyDelay`], [`GoAwayHandle`]).
//!
//! The instrumented `Echo` servers (`crate::server`) and the in-memory etcd
//! (`crate::etcd::memory`) both serve through it; it depends on neither. Its public items are
//! public API at their `anchorage::server` paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) mod http2;
mod listener;
mod recorder;

pub use listener::{Incoming, Listener};
pub use recorder::{
    ConnectionInfo, ConnectionStats, MAX_CONNECTION_DETAIL, MAX_METHOD_PATH_LEN, MAX_METHOD_PATHS,
    OTHER_METHODS, RecordedIo, ServerRecorder, ServerStats,
};

/// How long a server holds back each response's body after its headers: a cloneable handle
/// to one shared value, read when each response is made, so changing it while the server runs
/// affects the responses made from then on (a response already waiting keeps its delay).
///
/// The value is kept in whole milliseconds (shorter parts are dropped); zero means no delay.
/// Clones share the value; [`BodyDelay::new`] makes a separate one.
///
/// ```
/// use std::time::Duration;
/// use anchorage::server::BodyDelay;
///
/// let delay = BodyDelay::new(Some(Duration::from_millis(250)));
/// let shared = delay.clone();
/// shared.set(None);
/// assert_eq!(delay.get(), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct BodyDelay(Arc<AtomicU64>);

impl BodyDelay {
    /// A new value, not shared with any other handle: `delay`, or none.
    pub fn new(delay: Option<Duration>) -> Self {
        let handle = Self::default();
        handle.set(delay);
        handle
    }

    /// Sets the delay for responses made from now on; `None` (or zero) sends bodies at once.
    pub fn set(&self, delay: Option<Duration>) {
        let ms = delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.0.store(ms, Ordering::SeqCst);
    }

    /// The current delay; `None` when bodies go out at once.
    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Sends GOAWAY on every open connection of the servers it is given to: a cloneable handle,
/// like [`BodyDelay`]. Connections accepted after [`send`](Self::send) are not affected.
/// For making clients move off a server without stopping it (a scenario's `goaway` fault).
///
/// Each connection goes away as with MAX_CONNECTION_AGE: two-phase GOAWAY, then streams in
/// flight finish within the server's grace, if it has one (a server's
/// `max_connection_age`), or as long as they take.
#[derive(Debug, Clone, Default)]
pub struct GoAwayHandle(Arc<tokio::sync::Notify>);

impl GoAwayHandle {
    /// A new handle, not shared with any other.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every connection open now to go away. Never blocks.
    pub fn send(&self) {
        // `Notify` wakes its waiters in a fixed order (a `watch` channel spreads them over
        // shards chosen at random), which keeps simulated runs a function of their seed.
        self.0.notify_waiters();
    }

    /// Completes at the next [`send`](Self::send) after it is enabled or first polled.
    fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notified()
    }
}
