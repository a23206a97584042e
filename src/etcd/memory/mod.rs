//! An in-memory etcd: a tonic server for the subset of etcd's v3 API that anchorage uses, for
//! tests over loopback TCP and for the simulation, where it runs as a host.
//!
//! It keeps etcd's observable rules: a store revision that starts at 1 and grows by one per
//! write (a transaction or a lease revocation is one revision however many keys it touches);
//! prefix ranges; watches that replay history from a start revision and are cancelled with the
//! compaction revision when that history is gone; leases with a minimum time-to-live (2 s by
//! default, as an etcd with default settings) that expire in [`tokio::time`], deleting their keys;
//! compaction; and etcd's error codes and messages. It is one member with no persistence beyond
//! the [`MemoryEtcd`] value itself; reads at past revisions are refused.
//!
//! # Serving
//! [`MemoryEtcd::serve`] takes any [`Listener`] (tokio's `TcpListener`, or a simulated one) and
//! [`MemoryEtcd::serve_incoming`] any stream of accepted connections; both run until the
//! shutdown future completes. Clones share the store, so the same store can be served again
//! after a (simulated) crash — its data survives, as etcd's does on disk — or by several
//! listeners at once, which behaves like a cluster whose members always agree. Each time
//! serving starts, every lease gets its full time-to-live again, as when an etcd member becomes
//! leader, so a restart does not expire leases whose owners could not reach it while it was down.
//!
//! ```
//! use anchorage::etcd::{EtcdClient, memory::MemoryEtcd};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let etcd = MemoryEtcd::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(etcd.clone().serve(listener, async { let _ = stopped.await; }));
//!
//! let client = EtcdClient::connect(&addr.to_string())?;
//! client.put("svc/a:1", "v", None).await?;
//! assert_eq!(client.range_prefix("svc/").await?.kvs.len(), 1);
//! assert_eq!(etcd.revision(), 2);
//!
//! drop(client);
//! let _ = stop.send(());
//! server.await?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};

use super::pb::etcdserverpb::{
    PutRequest, kv_server::KvServer, lease_server::LeaseServer, watch_server::WatchServer,
};
use crate::serve::http2::{self, Http2Config};
use crate::serve::{Incoming, Listener, ServerRecorder};
use crate::sync::lock;
use tonic::service::Routes;

mod service;
mod store;

use store::Store;
pub use store::StoreError;

/// How long serving goes on after shutdown starts, waiting for connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on one in-memory etcd store. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct MemoryEtcd {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    /// The store's revision after the last write; watch sessions wait on it.
    revision: watch::Sender<i64>,
    /// Woken when a lease is granted, so the expiry loop can sleep until the earliest expiry.
    leases_changed: Notify,
    recorder: ServerRecorder,
}

impl Shared {
    /// Runs `f` on the store under its lock, then wakes the watchers if it wrote.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (result, revision) = {
            let mut store = lock(&self.store);
            let result = f(&mut store);
            (result, store.revision())
        };
        self.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
        result
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    fn lease_granted(&self) {
        self.leases_changed.notify_one();
    }

    fn recorder(&self) -> &ServerRecorder {
        &self.recorder
    }
}

impl Default for MemoryEtcd {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEtcd {
    /// An empty store at revision 1, with etcd's default minimum lease time-to-live of 2 s.
    ///
    /// Its connection recorder (named `etcd`) measures time from now: create it on the runtime
    /// that serves it for simulated timestamps.
    pub fn new() -> Self {
        Self::with_min_lease_ttl(2)
    }

    /// An empty store whose leases live at least `seconds` (etcd derives its minimum from the
    /// election timeout: 2 s with default settings).
    pub fn with_min_lease_ttl(seconds: i64) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new(seconds.max(1))),
                revision: watch::channel(1).0,
                leases_changed: Notify::new(),
                recorder: ServerRecorder::new("etcd"),
            }),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        lock(&self.shared.store).revision()
    }

    /// The revision up to which history has been compacted (0 before any compaction).
    pub fn compact_revision(&self) -> i64 {
        lock(&self.shared.store).compacted()
    }

    /// The record of accepted connections and of the etcd RPCs each carried.
    pub fn recorder(&self) -> &ServerRecorder {
        &self.shared.recorder
    }

    /// Writes `key = value` with no lease, as a client's put would; returns the new revision.
    pub fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
        let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        self.shared.with_store(|store| {
            // A put without a lease or ignore flags fails only on an empty key.
            let _ = store.put(&request);
            store.revision()
        })
    }

    /// Deletes every key starting with `prefix`; returns how many were deleted.
    pub fn delete_prefix(&self, prefix: impl Into<Vec<u8>>) -> i64 {
        let key = prefix.into();
        let range_end = super::naming::prefix_range_end(&key);
        self.shared.with_store(|store| {
            store.delete_range(&key, &range_end, false).map_or(0, |deleted| deleted.deleted)
        })
    }

    /// The keys starting with `prefix` and their values, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let request = super::pb::etcdserverpb::RangeRequest {
            key: prefix.into(),
            range_end: super::naming::prefix_range_end(prefix.as_bytes()),
            ..Default::default()
        };
        let kvs = lock(&self.shared.store).range(&request).map(|r| r.kvs).unwrap_or_default();
        kvs.into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
            .collect()
    }

    /// Discards history before `revision`, as a client's compact would. Watchers that still
    /// need that history are cancelled as compacted.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when `revision` is not above the last compaction,
    /// [`StoreError::FutureRevision`] when it is above the current revision.
    pub fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let result = self.shared.with_store(|store| store.compact(revision));
        // Wake the watch sessions so lagging watchers learn of the compaction.
        self.shared.revision.send_modify(|_| {});
        result
    }

    /// The ids of the live leases, in id order.
    pub fn leases(&self) -> Vec<i64> {
        lock(&self.shared.store).lease_ids()
    }

    /// Expires lease `id` now, deleting its keys, as if its time-to-live ran out. Returns false
    /// when there is no such lease.
    pub fn expire_lease(&self, id: i64) -> bool {
        self.shared.with_store(|store| store.revoke(id).is_ok())
    }

    /// Serves the etcd API on connections accepted from `listener` until `shutdown` completes.
    pub async fn serve<L: Listener>(self, listener: L, shutdown: impl Future<Output = ()>) {
        self.serve_incoming(Incoming::new(listener), shutdown).await
    }

    /// Serves the etcd API on each accepted `(stream, peer)` pair `incoming` yields until
    /// `shutdown` completes. Lease expiry runs while it serves.
    ///
    /// On shutdown, watch and keep-alive streams end, and serving returns once connections have
    /// closed (or after 5 s). Serving also ends, the same way, when `incoming` ends. Responses
    /// carry no `date` header, so nothing sent depends on the wall clock.
    pub async fn serve_incoming<S, Io>(self, incoming: S, shutdown: impl Future<Output = ()>)
    where
        S: Stream<Item = io::Result<(Io, SocketAddr)>>,
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = self.shared;
        shared.with_store(|store| store.refresh_leases(Instant::now()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let service = service::Service::new(shared.clone(), stop_rx);
        let recorder = shared.recorder.clone();
        let incoming = incoming.map(move |accepted| match accepted {
            Ok((io, peer)) => Ok(recorder.accept(io, peer)),
            Err(err) => {
                tracing::warn!(%err, "in-memory etcd: accept failed");
                Err(err)
            }
        });
        let routes = Routes::new(KvServer::new(service.clone()))
            .add_service(WatchServer::new(service.clone()))
            .add_service(LeaseServer::new(service));
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            let _ = draining_tx.send(());
        };
        let drain_deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            () = http2::serve(incoming, routes, Http2Config::default(), signal) => {}
            () = drain_deadline => {}
            () = expire_leases(&shared) => {}
        }
    }
}

/// Revokes leases as they expire, forever.
async fn expire_leases(shared: &Shared) {
    loop {
        let granted = shared.leases_changed.notified();
        tokio::pin!(granted);
        granted.as_mut().enable();
        match shared.with_store(|store| store.expire(Instant::now())) {
            Some(next) => {
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(next) => {}
                    () = granted => {}
                }
            }
            None => granted.await,
        }
    }
}
