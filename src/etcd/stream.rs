//! etcd's two bidirectional streams: watches and lease keep-alives.
//!
//! Both queue their first request before the RPC starts: etcd (a grpc-go server) sends the
//! response headers only with its first message, and the channel waits for the headers, so a
//! stream opened empty would never start.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::MetadataValue;

use super::EtcdError;
use super::client::rpc;
use super::naming::prefix_range_end;
use super::pb::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, WatchCreateRequest, WatchRequest, WatchResponse,
    lease_client::LeaseClient, watch_client::WatchClient, watch_request,
};
use super::pb::mvccpb::Event;
use crate::channel::Channel;

/// What to watch and from which revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    prev_kv: bool,
}

impl WatchOptions {
    /// Watches one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), range_end: Vec::new(), start_revision: 0, prev_kv: false }
    }

    /// Watches every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_range_end(&key);
        Self { key, range_end, start_revision: 0, prev_kv: false }
    }

    /// Sends events from `revision` on (inclusive), replaying history. Default: 0, meaning
    /// only changes after the watch is created.
    pub fn start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// Asks for each event's previous key-value. Default: off.
    pub fn prev_kv(mut self, prev_kv: bool) -> Self {
        self.prev_kv = prev_kv;
        self
    }
}

/// Events of one watch response.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchBatch {
    /// The store's revision when the response was sent (the header revision).
    pub revision: i64,
    /// The events, in revision order; empty for a progress notification.
    pub events: Vec<Event>,
}

/// One watch on its own stream. Dropping it ends the stream, which cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    watch_id: i64,
    created_revision: i64,
}

impl Watcher {
    pub(super) async fn open(
        mut client: WatchClient<Channel>,
        options: WatchOptions,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let (requests, rx) = mpsc::channel(4);
        let create = WatchCreateRequest {
            key: options.key,
            range_end: options.range_end,
            start_revision: options.start_revision,
            prev_kv: options.prev_kv,
            ..Default::default()
        };
        let first = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        };
        // The receiver is alive and the buffer empty: this cannot fail.
        let _ = requests.try_send(first);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        // Ask etcd to cancel the watch when its member loses the leader, rather than leave it
        // silently stale (etcd's Go client does the same).
        request.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
        let op = "watch";
        let started = tokio::time::timeout(timeout, client.watch(request))
            .await
            .map_err(|_| EtcdError::Timeout { op, timeout })?
            .map_err(rpc(op))?;
        let mut responses = started.into_inner();
        loop {
            let response = tokio::time::timeout(timeout, responses.message())
                .await
                .map_err(|_| EtcdError::Timeout { op, timeout })?
                .map_err(rpc(op))?
                .ok_or(EtcdError::StreamEnded { op })?;
            if response.canceled || response.compact_revision > 0 {
                return Err(canceled(response));
            }
            if response.created {
                return Ok(Self {
                    _requests: requests,
                    responses,
                    watch_id: response.watch_id,
                    created_revision: response.header.map_or(0, |h| h.revision),
                });
            }
        }
    }

    /// The id etcd gave the watch.
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The store's revision when the watch was created.
    pub fn created_revision(&self) -> i64 {
        self.created_revision
    }

    /// Waits for the next batch of events (or progress notification).
    ///
    /// # Errors
    /// [`EtcdError::Compacted`] when the watch fell behind a compaction: read the state again.
    /// [`EtcdError::WatchCanceled`], [`EtcdError::Rpc`] (the connection failed) or
    /// [`EtcdError::StreamEnded`] when the watch is gone: watch again from the revision after the
    /// last event seen.
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            let response = self
                .responses
                .message()
                .await
                .map_err(rpc("watch"))?
                .ok_or(EtcdError::StreamEnded { op: "watch" })?;
            if response.canceled || response.compact_revision > 0 {
                return Err(canceled(response));
            }
            // -1 addresses every watch on the stream (a progress notification).
            if response.created || (response.watch_id != self.watch_id && response.watch_id != -1) {
                continue;
            }
            let revision = response.header.map_or(0, |h| h.revision);
            return Ok(WatchBatch { revision, events: response.events });
        }
    }
}

fn canceled(response: WatchResponse) -> EtcdError {
    if response.compact_revision > 0 {
        EtcdError::Compacted { compact_revision: response.compact_revision }
    } else {
        EtcdError::WatchCanceled { reason: response.cancel_reason }
    }
}

/// A keep-alive stream for one lease. Dropping it ends the stream; the lease then lives out its
/// time-to-live.
#[derive(Debug)]
pub struct KeepAliveStream {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    id: i64,
    ttl: i64,
    timeout: Duration,
}

impl KeepAliveStream {
    /// Opens the stream and renews the lease once.
    pub(super) async fn open(
        mut client: LeaseClient<Channel>,
        id: i64,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let (requests, rx) = mpsc::channel(4);
        // The receiver is alive and the buffer empty: this cannot fail.
        let _ = requests.try_send(LeaseKeepAliveRequest { id });
        let op = "keep-alive";
        let started =
            tokio::time::timeout(timeout, client.lease_keep_alive(ReceiverStream::new(rx)))
                .await
                .map_err(|_| EtcdError::Timeout { op, timeout })?
                .map_err(rpc(op))?;
        let mut stream = Self { requests, responses: started.into_inner(), id, ttl: 0, timeout };
        stream.ttl = stream.response().await?;
        Ok(stream)
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The time-to-live, in seconds, granted by the last renewal.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Renews the lease; returns its new time-to-live in seconds.
    ///
    /// # Errors
    /// [`EtcdError::LeaseExpired`] when the lease no longer exists; [`EtcdError::Rpc`],
    /// [`EtcdError::Timeout`] or [`EtcdError::StreamEnded`] when the stream failed (open a new
    /// one).
    pub async fn keep_alive(&mut self) -> Result<i64, EtcdError> {
        let op = "keep-alive";
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| EtcdError::StreamEnded { op })?;
        self.ttl = self.response().await?;
        Ok(self.ttl)
    }

    async fn response(&mut self) -> Result<i64, EtcdError> {
        let (op, timeout) = ("keep-alive", self.timeout);
        let response = tokio::time::timeout(timeout, self.responses.message())
            .await
            .map_err(|_| EtcdError::Timeout { op, timeout })?
            .map_err(rpc(op))?
            .ok_or(EtcdError::StreamEnded { op })?;
        if response.ttl <= 0 {
            return Err(EtcdError::LeaseExpired { id: self.id });
        }
        Ok(response.ttl)
    }
}
