//! The tonic services of the in-memory etcd: KV, Watch and Lease over the shared [`Store`].
//!
//! [`Store`]: super::store::Store

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::store::key_in;
use crate::etcd::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse, kv_server::Kv, lease_server::Lease,
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
};
use crate::etcd::pb::mvccpb::{Event, event::EventType};
use crate::serve::ConnectionInfo;

/// Responses buffered per stream before the session waits for the client to read.
const STREAM_BUFFER: usize = 64;

/// The three services, sharing one store. `stop` turns true when serving shuts down, which ends
/// every watch and keep-alive stream.
#[derive(Debug, Clone)]
pub(super) struct Service {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

impl Service {
    pub(super) fn new(shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Self {
        Self { shared, stop }
    }

    /// Counts the RPC against the connection that carried it.
    fn record<T>(&self, request: &Request<T>, method: &str) {
        if let Some(info) = ConnectionInfo::of(request) {
            self.shared.recorder().record_rpc(info.id, method);
        }
    }
}

#[tonic::async_trait]
impl Kv for Service {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.record(&request, "/etcdserverpb.KV/Range");
        let response = self.shared.with_store(|store| store.range(request.get_ref()))?;
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.record(&request, "/etcdserverpb.KV/Put");
        let response = self.shared.with_store(|store| store.put(request.get_ref()))?;
        Ok(Response::new(response))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.record(&request, "/etcdserverpb.KV/DeleteRange");
        let r = request.get_ref();
        let response =
            self.shared.with_store(|store| store.delete_range(&r.key, &r.range_end, r.prev_kv))?;
        Ok(Response::new(response))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.record(&request, "/etcdserverpb.KV/Txn");
        let response = self.shared.with_store(|store| store.txn(request.get_ref()))?;
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.record(&request, "/etcdserverpb.KV/Compact");
        let header = self.shared.with_store(|store| {
            store.compact(request.get_ref().revision).map(|()| store.header())
        })?;
        // Wake the watch sessions so lagging watchers learn of the compaction.
        self.shared.revision.send_modify(|_| {});
        Ok(Response::new(CompactionResponse { header: Some(header) }))
    }
}

#[tonic::async_trait]
impl Lease for Service {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.record(&request, "/etcdserverpb.Lease/LeaseGrant");
        let r = request.get_ref();
        let (header, (id, ttl)) = self.shared.with_store(|store| {
            store.grant(r.ttl, r.id, Instant::now()).map(|granted| (store.header(), granted))
        })?;
        self.shared.lease_granted();
        Ok(Response::new(LeaseGrantResponse {
            header: Some(header),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.record(&request, "/etcdserverpb.Lease/LeaseRevoke");
        let id = request.get_ref().id;
        let header = self.shared.with_store(|store| store.revoke(id).map(|()| store.header()))?;
        Ok(Response::new(LeaseRevokeResponse { header: Some(header) }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.record(&request, "/etcdserverpb.Lease/LeaseKeepAlive");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (shared, mut stop) = (self.shared.clone(), self.stop.clone());
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    message = requests.message() => message,
                    () = stopped(&mut stop) => return,
                };
                let Ok(Some(LeaseKeepAliveRequest { id })) = message else { return };
                let (header, ttl) = shared.with_store(|store| {
                    // etcd answers an unknown or expired lease with TTL 0.
                    (store.header(), store.keep_alive(id, Instant::now()).unwrap_or(0))
                });
                let response = LeaseKeepAliveResponse { header: Some(header), id, ttl };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.record(&request, "/etcdserverpb.Lease/LeaseTimeToLive");
        let r = request.get_ref();
        let (header, found) = self
            .shared
            .with_store(|store| (store.header(), store.time_to_live(r.id, Instant::now())));
        let (ttl, granted_ttl, keys) = found.unwrap_or((-1, 0, Vec::new()));
        let keys = if r.keys { keys } else { Vec::new() };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(header),
            id: r.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }
}

#[tonic::async_trait]
impl Watch for Service {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.record(&request, "/etcdserverpb.Watch/Watch");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let session = WatchSession { shared: self.shared.clone(), watchers: BTreeMap::new(), tx };
        tokio::spawn(session.run(request.into_inner(), self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Completes when serving shuts down (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, inside this future.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One watcher of a watch stream.
#[derive(Debug, Clone)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet sent.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

/// The watchers of one Watch stream and where their responses go.
struct WatchSession {
    shared: Arc<Shared>,
    watchers: BTreeMap<i64, Watcher>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl WatchSession {
    async fn run(mut self, mut requests: Streaming<WatchRequest>, mut stop: watch::Receiver<bool>) {
        let mut revisions = self.shared.subscribe();
        loop {
            let alive = tokio::select! {
                biased;
                message = requests.message() => match message {
                    Ok(Some(request)) => self.handle(request).await,
                    // The client closed its side or the connection failed.
                    _ => false,
                },
                changed = revisions.changed() => changed.is_ok() && self.deliver_all().await,
                () = stopped(&mut stop) => false,
            };
            if !alive {
                return;
            }
        }
    }

    /// Handles one request; false when the client is gone.
    async fn handle(&mut self, request: WatchRequest) -> bool {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_none() {
                    return true;
                }
                let response =
                    WatchResponse { watch_id: cancel.watch_id, canceled: true, ..self.response() };
                self.send(response).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Not tied to one watcher: etcd addresses it to all with id -1.
                let response = WatchResponse { watch_id: -1, ..self.response() };
                self.send(response).await
            }
            None => true,
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        let (current, compacted) =
            self.shared.with_store(|store| (store.revision(), store.compacted()));
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            (0..).find(|id| !self.watchers.contains_key(id)).unwrap_or_default()
        };
        if self.watchers.contains_key(&id) {
            let reason = "etcdserver: mvcc: watcher already exists".to_owned();
            let response = WatchResponse {
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..self.response()
            };
            return self.send(response).await;
        }
        let created = WatchResponse { watch_id: id, created: true, ..self.response() };
        if !self.send(created).await {
            return false;
        }
        let next = if create.start_revision > 0 { create.start_revision } else { current + 1 };
        if next < compacted {
            return self.send_compacted(id, compacted).await;
        }
        let filters = |f: FilterType| create.filters.contains(&(f as i32));
        let watcher = Watcher {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            next,
            prev_kv: create.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
        };
        self.watchers.insert(id, watcher);
        self.deliver(id).await
    }

    async fn deliver_all(&mut self) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if !self.deliver(id).await {
                return false;
            }
        }
        true
    }

    /// Sends watcher `id` every event it has not seen; cancels it when compaction got there
    /// first.
    async fn deliver(&mut self, id: i64) -> bool {
        let Some(watcher) = self.watchers.get(&id).cloned() else { return true };
        let (found, current) = self.shared.with_store(|store| {
            (store.events_since(watcher.next, &watcher.key, &watcher.range_end), store.revision())
        });
        let events = match found {
            Ok(events) => events,
            Err(compacted) => {
                self.watchers.remove(&id);
                return self.send_compacted(id, compacted).await;
            }
        };
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && watcher.no_put || !put && watcher.no_delete)
            })
            .filter(|e| {
                e.kv.as_ref().is_some_and(|kv| key_in(&kv.key, &watcher.key, &watcher.range_end))
            })
            .map(|e| if watcher.prev_kv { e } else { Event { prev_kv: None, ..e } })
            .collect();
        if let Some(watcher) = self.watchers.get_mut(&id) {
            watcher.next = current + 1;
        }
        if events.is_empty() {
            return true;
        }
        let mut response = WatchResponse { watch_id: id, events, ..self.response() };
        if let Some(header) = response.header.as_mut() {
            header.revision = current;
        }
        self.send(response).await
    }

    /// etcd's answer to a watcher whose history is gone: cancelled, with the compaction revision.
    async fn send_compacted(&mut self, id: i64, compacted: i64) -> bool {
        let response = WatchResponse {
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..self.response()
        };
        self.send(response).await
    }

    /// An empty response carrying the current header.
    fn response(&self) -> WatchResponse {
        let header = self.shared.with_store(|store| store.header());
        WatchResponse { header: Some(header), ..Default::default() }
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.tx.send(Ok(response)).await.is_ok()
    }
}
