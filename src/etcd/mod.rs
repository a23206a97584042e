//! etcd v3: a thin client over our own [`Channel`](crate::channel::Channel), the naming format of
//! etcd's Go `naming/endpoints` package, and an in-memory etcd for tests and simulations
//! (DESIGN §2.7).
//!
//! - [`pb`]: code generated with `protox` from `proto/etcd/` — the subset of etcd's v3 API we
//!   use (KV, Watch, Lease), client and server stubs, wire-compatible with etcd 3.4 and 3.5.
//! - [`EtcdClient`]: range, put, delete, txn, compact, lease grant / keep-alive / revoke, and
//!   watches, over one channel to several etcd endpoints with `pick_first` failover between them.
//!   It dials through any [`Connector`](crate::connector::Connector): real TCP, or simulated TCP.
//! - [`naming`]: keys `<service>/<addr>` and values `{"Op":0,"Addr":"…","Metadata":…}`.
//! - [`memory`]: [`MemoryEtcd`](memory::MemoryEtcd), a tonic server implementing the same subset
//!   (revisions, prefix ranges, watches from a start revision, leases that expire in
//!   `tokio::time`, compaction) that serves on any listener.
//!
//! The `etcd` resolver is in [`crate::resolver::etcd`]; registration of servers is in
//! [`crate::registry`].

mod client;
mod endpoints;
pub mod memory;
pub mod naming;
mod stream;

pub use client::{EtcdClient, EtcdClientBuilder, Lease, RangeResult};
pub use endpoints::{DEFAULT_ENDPOINT, EndpointErrorKind, Endpoints, EndpointsError};
pub use stream::{KeepAliveStream, WatchBatch, WatchOptions, Watcher};

/// Code generated from `proto/etcd/`: etcd's `etcdserverpb` and `mvccpb` packages (subset).
pub mod pb {
    /// etcd's RPC messages and the KV, Watch and Lease services (client and server).
    #[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #[allow(clippy::all, clippy::pedantic)]
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }

    /// etcd's storage messages: `KeyValue` and `Event`.
    #[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #[allow(clippy::all, clippy::pedantic)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
}

/// Errors of the etcd client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The endpoint list is not valid.
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
    /// The client's channel could not be built (outside a tokio runtime, say).
    #[error("etcd client: {0}")]
    Channel(#[from] crate::channel::ChannelError),
    /// An RPC failed: etcd answered with an error, or could not be reached in time.
    #[error("etcd {op}: {status}")]
    Rpc {
        /// The operation (`range`, `put`, `watch`, …).
        op: &'static str,
        /// What the server or the channel reported.
        status: tonic::Status,
    },
    /// A watch asked for history that compaction has discarded: the watcher is cancelled and
    /// its caller must read the current state again.
    #[error("etcd watch: revision compacted (the store is compacted up to {compact_revision})")]
    Compacted {
        /// The store's compaction revision.
        compact_revision: i64,
    },
    /// The server cancelled a watch for another reason.
    #[error("etcd watch: cancelled by the server: {reason}")]
    WatchCanceled {
        /// The server's reason, possibly empty.
        reason: String,
    },
    /// A watch or keep-alive stream ended without an error status.
    #[error("etcd {op}: the stream ended")]
    StreamEnded {
        /// The stream (`watch`, `keep-alive`).
        op: &'static str,
    },
    /// No answer in time on a stream (the watch's `created` response, a keep-alive response).
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout {
        /// The stream (`watch`, `keep-alive`).
        op: &'static str,
        /// The time waited.
        timeout: std::time::Duration,
    },
    /// A lease no longer exists: it expired or was revoked.
    #[error("etcd lease {id:#x}: expired or revoked")]
    LeaseExpired {
        /// The lease id.
        id: i64,
    },
}

impl EtcdError {
    /// Whether this is [`EtcdError::Compacted`] — the caller must read the state again.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Self::Compacted { .. })
    }
}
