//! The latest picker, published by the control task and awaited by queued RPCs.
//!
//! tokio's `watch` channel would do, except that each of its waiters joins one of eight queues
//! chosen with tokio's own thread RNG, which is seeded from the OS. When a picker arrives, the
//! queued RPCs then wake in an order that changes from run to run, and so does which subchannel
//! each one picks. Here every waiter joins one queue and they wake in the order they began to
//! wait, so the same events give the same picks.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::balancer::{ConnectivityState, PickerUpdate};
use crate::sync::lock;

/// The current picker with a version that grows with every publication.
#[derive(Debug)]
pub(crate) struct Published {
    current: Mutex<Current>,
    changed: Notify,
}

#[derive(Debug)]
struct Current {
    version: u64,
    update: PickerUpdate,
    closed: bool,
}

impl Published {
    pub(crate) fn new(update: PickerUpdate) -> Self {
        let current = Current { version: 0, update, closed: false };
        Self { current: Mutex::new(current), changed: Notify::new() }
    }

    /// Replaces the picker and wakes every waiter.
    pub(crate) fn publish(&self, update: PickerUpdate) {
        {
            let mut current = lock(&self.current);
            current.version += 1;
            current.update = update;
        }
        self.changed.notify_waiters();
    }

    /// Marks the channel closed and wakes every waiter.
    pub(crate) fn close(&self) {
        lock(&self.current).closed = true;
        self.changed.notify_waiters();
    }

    /// The current picker and its version.
    pub(crate) fn current(&self) -> (u64, PickerUpdate) {
        let current = lock(&self.current);
        (current.version, current.update.clone())
    }

    /// The state the current picker was published with.
    pub(crate) fn state(&self) -> ConnectivityState {
        lock(&self.current).update.state
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
            {
                let current = lock(&self.current);
                if current.version != seen {
                    return true;
                }
                if current.closed {
                    return false;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
