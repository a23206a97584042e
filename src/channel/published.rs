//! The latest picker, published by the control task, read by every RPC and awaited by queued
//! ones.
//!
//! - Reading takes no lock: the picker sits behind an atomic pointer swap (`arc-swap`), so RPCs
//!   on every thread pick at once without meeting on a shared lock or reference count (a
//!   channel-wide mutex here cost 46 ns per pick on one thread and several times that with two
//!   threads contending).
//! - Waiting: tokio's `watch` channel would do, except that each of its waiters joins one of
//!   eight queues chosen with tokio's own thread RNG, which is seeded from the OS. When a picker
//!   arrives, the queued RPCs then wake in an order that changes from run to run, and so does
//!   which subchannel each one picks. Here every waiter joins one queue and they wake in the
//!   order they began to wait, so the same events give the same picks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::Notify;

use crate::balancer::{ConnectivityState, PickerUpdate};

/// The current picker with a version that grows with every publication.
#[derive(Debug)]
pub(crate) struct Published {
    current: ArcSwap<Snapshot>,
    closed: AtomicBool,
    changed: Notify,
}

/// One publication: the picker and its version.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// 0 for the first picker, then one more with each publication.
    pub(crate) version: u64,
    pub(crate) update: PickerUpdate,
}

impl Published {
    pub(crate) fn new(update: PickerUpdate) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot { version: 0, update }),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Replaces the picker and wakes every waiter.
    pub(crate) fn publish(&self, update: PickerUpdate) {
        // `rcu` retries if another publication raced in, so versions never repeat.
        self.current.rcu(|old| Snapshot { version: old.version + 1, update: update.clone() });
        self.changed.notify_waiters();
    }

    /// Marks the channel closed and wakes every waiter.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// The current picker and its version. Hold it only while picking: it is a cheap,
    /// thread-local borrow of the publication, not meant to live across an `.await`.
    pub(crate) fn current(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The state the current picker was published with.
    pub(crate) fn state(&self) -> ConnectivityState {
        self.current.load().update.state
    }

    /// Waits until a picker newer than version `seen` is published; false once the channel is
    /// closed instead.
    pub(crate) async fn changed(&self, seen: u64) -> bool {
        // Each pass either returns or waits for a publication or the close.
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before looking, so a publication in between is not missed.
            notified.as_mut().enable();
            if self.current.load().version != seen {
                return true;
            }
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::sync::lock;

    #[tokio::test(flavor = "current_thread")]
    async fn queued_waiters_wake_in_the_order_they_began_to_wait() {
        let published = Arc::new(Published::new(PickerUpdate::connecting()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        for i in 0..16 {
            let (published, order) = (published.clone(), order.clone());
            local.spawn_local(async move {
                assert!(published.changed(0).await, "a publication must wake the waiter");
                lock(&order).push(i);
            });
        }
        local
            .run_until(async {
                tokio::task::yield_now().await;
                published.publish(PickerUpdate::failing("x"));
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            })
            .await;
        assert_eq!(
            *lock(&order),
            (0..16).collect::<Vec<_>>(),
            "queued RPCs must wake in the order they queued, whatever tokio's RNG says"
        );
    }

    #[tokio::test]
    async fn closing_wakes_waiters_with_false() {
        let published = Published::new(PickerUpdate::connecting());
        published.close();
        assert!(!published.changed(0).await);
    }
}
