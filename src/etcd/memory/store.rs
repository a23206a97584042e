//! The in-memory store: keys, revisions, event history, compaction and leases.
//!
//! Everything here is synchronous and runs under one lock; time is passed in (a
//! [`tokio::time::Instant`]), so the store behaves the same under a simulated clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::etcd::pb::etcdserverpb::{
    Compare, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse, compare, range_request, request_op,
    response_op,
};
use crate::etcd::pb::mvccpb::{Event, KeyValue, event::EventType};

/// The cluster id every response header carries.
const CLUSTER_ID: u64 = 0x616e_6368_6f72_6167;
/// The member id every response header carries.
const MEMBER_ID: u64 = 0x6d65_6d6f_7279_0001;
/// The first lease id handed out when the client lets the server choose.
const FIRST_LEASE_ID: i64 = 0x694d_0000_0000_0001;
/// etcd's largest lease time-to-live, in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Why a request failed. Each maps to the status code and message a real etcd returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The requested revision was discarded by compaction.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease with the requested id exists already.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The requested time-to-live is larger than etcd allows.
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    /// A read at a past revision that is not compacted: the in-memory store keeps no old
    /// versions of keys, only the event history.
    #[error("in-memory etcd: reads at past revisions are not supported")]
    PastRevision,
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::Compacted | StoreError::FutureRevision | StoreError::TtlTooLarge => {
                tonic::Status::out_of_range(message)
            }
            StoreError::EmptyKey | StoreError::KeyNotFound => {
                tonic::Status::invalid_argument(message)
            }
            StoreError::LeaseNotFound => tonic::Status::not_found(message),
            StoreError::LeaseExists => tonic::Status::failed_precondition(message),
            StoreError::PastRevision => tonic::Status::unimplemented(message),
        }
    }
}

#[derive(Debug, Clone)]
struct LeaseEntry {
    granted: i64,
    expires: Instant,
    keys: BTreeSet<Vec<u8>>,
}

/// The whole state of the in-memory etcd.
#[derive(Debug, Clone)]
pub(super) struct Store {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<Vec<u8>, KeyValue>,
    /// Every event since the compaction revision, in revision order.
    history: Vec<Event>,
    leases: BTreeMap<i64, LeaseEntry>,
    next_lease_id: i64,
    min_ttl: i64,
}

impl Store {
    /// An empty store at revision 1 (etcd's revision before the first write).
    pub(super) fn new(min_ttl: i64) -> Self {
        Self {
            revision: 1,
            compacted: 0,
            keys: BTreeMap::new(),
            history: Vec::new(),
            leases: BTreeMap::new(),
            next_lease_id: FIRST_LEASE_ID,
            min_ttl,
        }
    }

    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    pub(super) fn compacted(&self) -> i64 {
        self.compacted
    }

    pub(super) fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            revision: self.revision,
            raft_term: 1,
        }
    }

    /// The current key-values in `[key, range_end)` (etcd's range conventions), in key order.
    fn in_range<'a>(&'a self, key: &[u8], range_end: &[u8]) -> Vec<&'a KeyValue> {
        if range_end.is_empty() {
            return self.keys.get(key).into_iter().collect();
        }
        if range_end == [0] {
            return self.keys.range(key.to_vec()..).map(|(_, kv)| kv).collect();
        }
        if range_end <= key {
            return Vec::new();
        }
        self.keys.range(key.to_vec()..range_end.to_vec()).map(|(_, kv)| kv).collect()
    }

    pub(super) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, StoreError> {
        if request.revision > 0 && request.revision != self.revision {
            return Err(if request.revision > self.revision {
                StoreError::FutureRevision
            } else if request.revision < self.compacted {
                StoreError::Compacted
            } else {
                StoreError::PastRevision
            });
        }
        let all = self.in_range(&request.key, &request.range_end);
        let count = all.len() as i64;
        let within = |value: i64, min: i64, max: i64| {
            (min == 0 || value >= min) && (max == 0 || value <= max)
        };
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| {
                within(kv.mod_revision, request.min_mod_revision, request.max_mod_revision)
            })
            .filter(|kv| {
                within(kv.create_revision, request.min_create_revision, request.max_create_revision)
            })
            .cloned()
            .collect();
        sort(&mut kvs, request);
        let more = request.limit > 0 && kvs.len() as i64 > request.limit;
        if more {
            kvs.truncate(request.limit as usize);
        }
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        if request.count_only {
            kvs.clear();
        }
        Ok(RangeResponse { header: Some(self.header()), kvs, more, count })
    }

    pub(super) fn put(&mut self, request: &PutRequest) -> Result<PutResponse, StoreError> {
        let revision = self.revision + 1;
        let prev_kv = self.put_at(revision, request)?;
        self.revision = revision;
        let prev_kv = if request.prev_kv { prev_kv } else { None };
        Ok(PutResponse { header: Some(self.header()), prev_kv })
    }

    fn put_at(&mut self, revision: i64, req: &PutRequest) -> Result<Option<KeyValue>, StoreError> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let prev = self.keys.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        let old = prev.as_ref();
        let value = if req.ignore_value { old.map(|kv| kv.value.clone()) } else { None };
        let lease = if req.ignore_lease { old.map_or(0, |kv| kv.lease) } else { req.lease };
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound);
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: old.map_or(revision, |kv| kv.create_revision),
            mod_revision: revision,
            version: old.map_or(0, |kv| kv.version) + 1,
            value: value.unwrap_or_else(|| req.value.clone()),
            lease,
        };
        self.detach(old);
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.keys.insert(req.key.clone());
        }
        self.keys.insert(req.key.clone(), kv.clone());
        let event = Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev.clone() };
        self.history.push(event);
        Ok(prev)
    }

    fn detach(&mut self, kv: Option<&KeyValue>) {
        if let Some(kv) = kv
            && let Some(entry) = self.leases.get_mut(&kv.lease)
        {
            entry.keys.remove(&kv.key);
        }
    }

    pub(super) fn delete_range(
        &mut self,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<DeleteRangeResponse, StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let revision = self.revision + 1;
        let deleted = self.delete_at(revision, key, range_end);
        if !deleted.is_empty() {
            self.revision = revision;
        }
        Ok(DeleteRangeResponse {
            header: Some(self.header()),
            deleted: deleted.len() as i64,
            prev_kvs: if prev_kv { deleted } else { Vec::new() },
        })
    }

    /// Deletes the keys in the range at `revision`; returns the deleted key-values.
    fn delete_at(&mut self, revision: i64, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let doomed: Vec<KeyValue> = self.in_range(key, range_end).into_iter().cloned().collect();
        for kv in &doomed {
            self.keys.remove(&kv.key);
            self.detach(Some(kv));
            let tombstone =
                KeyValue { key: kv.key.clone(), mod_revision: revision, ..Default::default() };
            self.history.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tombstone),
                prev_kv: Some(kv.clone()),
            });
        }
        doomed
    }

    /// Runs a transaction atomically: on an error nothing it did remains.
    pub(super) fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let saved = self.clone();
        let revision = self.revision + 1;
        let events_before = self.history.len();
        match self.txn_at(revision, request) {
            Ok(mut response) => {
                if self.history.len() > events_before {
                    self.revision = revision;
                }
                response.header = Some(self.header());
                Ok(response)
            }
            Err(error) => {
                *self = saved;
                Err(error)
            }
        }
    }

    fn txn_at(&mut self, revision: i64, request: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let succeeded = request.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &request.success } else { &request.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.apply_op(revision, op)?);
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }

    fn apply_op(&mut self, revision: i64, op: &RequestOp) -> Result<ResponseOp, StoreError> {
        use request_op::Request;
        use response_op::Response;
        let response = match &op.request {
            None => return Ok(ResponseOp { response: None }),
            Some(Request::RequestRange(range)) => {
                let mut read = self.range(&RangeRequest { revision: 0, ..range.clone() })?;
                read.header = Some(ResponseHeader { revision, ..self.header() });
                Response::ResponseRange(read)
            }
            Some(Request::RequestPut(put)) => {
                let prev_kv = self.put_at(revision, put)?;
                let prev_kv = if put.prev_kv { prev_kv } else { None };
                Response::ResponsePut(PutResponse { header: None, prev_kv })
            }
            Some(Request::RequestDeleteRange(delete)) => {
                if delete.key.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
                let deleted = self.delete_at(revision, &delete.key, &delete.range_end);
                Response::ResponseDeleteRange(DeleteRangeResponse {
                    header: None,
                    deleted: deleted.len() as i64,
                    prev_kvs: if delete.prev_kv { deleted } else { Vec::new() },
                })
            }
            Some(Request::RequestTxn(txn)) => Response::ResponseTxn(self.txn_at(revision, txn)?),
        };
        Ok(ResponseOp { response: Some(response) })
    }

    /// etcd's compare: every key in the range must satisfy it; a missing key compares as an
    /// empty key-value, except that a value comparison on a missing key always fails.
    fn compare(&self, cmp: &Compare) -> bool {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let kvs = self.in_range(&cmp.key, &cmp.range_end);
        let target = CompareTarget::try_from(cmp.target).unwrap_or(CompareTarget::Version);
        if kvs.is_empty() && target == CompareTarget::Value {
            return false;
        }
        let empty = KeyValue::default();
        let kvs = if kvs.is_empty() { vec![&empty] } else { kvs };
        let result = CompareResult::try_from(cmp.result).unwrap_or(CompareResult::Equal);
        kvs.into_iter().all(|kv| {
            let ordering = match (&cmp.target_union, target) {
                (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
                (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => {
                    kv.create_revision.cmp(v)
                }
                (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
                (Some(TargetUnion::Value(v)), CompareTarget::Value) => kv.value.cmp(v),
                (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
                // A target without its matching operand compares against the zero value.
                (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[]),
                (_, CompareTarget::Version) => kv.version.cmp(&0),
                (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
                (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
                (_, CompareTarget::Lease) => kv.lease.cmp(&0),
            };
            match result {
                CompareResult::Equal => ordering.is_eq(),
                CompareResult::Greater => ordering.is_gt(),
                CompareResult::Less => ordering.is_lt(),
                CompareResult::NotEqual => ordering.is_ne(),
            }
        })
    }

    /// Discards the history before `revision`.
    pub(super) fn compact(&mut self, revision: i64) -> Result<(), StoreError> {
        if revision <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision);
        }
        self.compacted = revision;
        let first_kept = self.history.partition_point(|e| event_revision(e) < revision);
        self.history.drain(..first_kept);
        Ok(())
    }

    /// The events from revision `from` on whose key is in `[key, range_end)`.
    ///
    /// # Errors
    /// The compaction revision, when `from` is below it.
    pub(super) fn events_since(
        &self,
        from: i64,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<Event>, i64> {
        if from < self.compacted {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|e| event_revision(e) < from);
        Ok(self.history[start..]
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| key_in(&kv.key, key, range_end)))
            .cloned()
            .collect())
    }

    pub(super) fn grant(
        &mut self,
        ttl: i64,
        id: i64,
        now: Instant,
    ) -> Result<(i64, i64), StoreError> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::TtlTooLarge);
        }
        let ttl = ttl.max(self.min_ttl);
        let id = if id == 0 {
            while self.leases.contains_key(&self.next_lease_id) {
                self.next_lease_id += 1;
            }
            self.next_lease_id
        } else if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        } else {
            id
        };
        self.next_lease_id = self.next_lease_id.max(id) + 1;
        let expires = now + seconds(ttl);
        self.leases.insert(id, LeaseEntry { granted: ttl, expires, keys: BTreeSet::new() });
        Ok((id, ttl))
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub(super) fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
        let entry = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound)?;
        let revision = self.revision + 1;
        let mut deleted = false;
        for key in &entry.keys {
            deleted |= !self.delete_at(revision, key, &[]).is_empty();
        }
        if deleted {
            self.revision = revision;
        }
        Ok(())
    }

    /// Renews a lease; its granted time-to-live, or `None` when it does not exist (or has
    /// expired and waits to be revoked).
    pub(super) fn keep_alive(&mut self, id: i64, now: Instant) -> Option<i64> {
        let entry = self.leases.get_mut(&id).filter(|entry| entry.expires > now)?;
        entry.expires = now + seconds(entry.granted);
        Some(entry.granted)
    }

    /// A lease's remaining whole seconds, granted time-to-live and keys.
    pub(super) fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let entry = self.leases.get(&id).filter(|entry| entry.expires > now)?;
        let remaining = entry.expires.saturating_duration_since(now).as_secs() as i64;
        Some((remaining, entry.granted, entry.keys.iter().cloned().collect()))
    }

    /// Revokes every lease whose time is up, earliest first; returns the next expiry.
    pub(super) fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut due: Vec<(Instant, i64)> = self
            .leases
            .iter()
            .filter(|(_, entry)| entry.expires <= now)
            .map(|(id, entry)| (entry.expires, *id))
            .collect();
        due.sort();
        for (_, id) in due {
            tracing::debug!(lease = id, "in-memory etcd: lease expired");
            let _ = self.revoke(id);
        }
        self.leases.values().map(|entry| entry.expires).min()
    }

    /// Gives every lease its full time-to-live again from `now`, as etcd does when a member
    /// becomes leader.
    pub(super) fn refresh_leases(&mut self, now: Instant) {
        for entry in self.leases.values_mut() {
            entry.expires = now + seconds(entry.granted);
        }
    }

    /// The ids of the live leases, in id order.
    pub(super) fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

fn event_revision(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Whether `candidate` is in `[key, range_end)` with etcd's conventions.
pub(super) fn key_in(candidate: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => candidate == key,
        [0] => candidate >= key,
        end => candidate >= key && candidate < end,
    }
}

fn sort(kvs: &mut [KeyValue], request: &RangeRequest) {
    use range_request::{SortOrder, SortTarget};
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend; // etcd sorts ascending when only a target is given
    }
    if order == SortOrder::None {
        return;
    }
    kvs.sort_by(|a, b| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    });
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::naming::prefix_range_end;

    fn put(store: &mut Store, key: &str, value: &str, lease: i64) -> i64 {
        let request =
            PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
        store.put(&request).unwrap().header.unwrap().revision
    }

    fn prefix(store: &Store, prefix: &str) -> Vec<String> {
        let request = RangeRequest {
            key: prefix.into(),
            range_end: prefix_range_end(prefix.as_bytes()),
            ..Default::default()
        };
        let kvs = store.range(&request).unwrap().kvs;
        kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
    }

    #[test]
    fn each_write_makes_one_revision_starting_after_1() {
        let mut store = Store::new(1);
        assert_eq!(store.revision(), 1, "an empty etcd is at revision 1");
        assert_eq!(put(&mut store, "a", "1", 0), 2);
        assert_eq!(put(&mut store, "a", "2", 0), 3);
        let kv = store.keys.get(b"a".as_slice()).unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        let none = store.delete_range(b"zzz", &[], false).unwrap();
        assert_eq!((none.deleted, store.revision()), (0, 3), "deleting nothing is no revision");
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        let mut store = Store::new(1);
        for key in ["foo/a", "foo/b", "foobar/a", "fo", "foo"] {
            put(&mut store, key, "v", 0);
        }
        assert_eq!(prefix(&store, "foo/"), ["foo/a", "foo/b"]);
    }

    #[test]
    fn history_from_a_compacted_revision_is_refused() {
        let mut store = Store::new(1);
        for value in ["1", "2", "3"] {
            put(&mut store, "k", value, 0);
        }
        store.compact(3).unwrap();
        assert_eq!(store.events_since(2, b"k", &[]), Err(3), "revision 2 is gone after compact(3)");
        assert_eq!(store.events_since(3, b"k", &[]).unwrap().len(), 2, "3 and 4 remain");
        assert_eq!(store.compact(3), Err(StoreError::Compacted));
        assert_eq!(store.compact(9), Err(StoreError::FutureRevision));
    }

    #[test]
    fn an_expired_lease_deletes_its_keys_in_one_revision() {
        let mut store = Store::new(2);
        let now = Instant::now();
        let (id, ttl) = store.grant(1, 0, now).unwrap();
        assert_eq!(ttl, 2, "a time-to-live below the minimum is raised to it");
        put(&mut store, "svc/a", "x", id);
        put(&mut store, "svc/b", "y", id);
        assert_eq!(store.expire(now + Duration::from_secs(1)), Some(now + Duration::from_secs(2)));
        store.expire(now + Duration::from_secs(2));
        assert!(prefix(&store, "svc/").is_empty());
        assert_eq!(store.revision(), 4, "both deletions share one revision");
        assert_eq!(store.keep_alive(id, now), None, "an expired lease cannot be renewed");
    }

    #[test]
    fn a_put_with_an_unknown_lease_is_refused_and_a_failed_txn_leaves_nothing() {
        let mut store = Store::new(1);
        let bad = PutRequest { key: b"k".to_vec(), lease: 99, ..Default::default() };
        assert_eq!(store.put(&bad), Err(StoreError::LeaseNotFound));
        let good = PutRequest { key: b"a".to_vec(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp { request: Some(request_op::Request::RequestPut(good)) },
                RequestOp { request: Some(request_op::Request::RequestPut(bad)) },
            ],
            failure: vec![],
        };
        assert_eq!(store.txn(&txn), Err(StoreError::LeaseNotFound));
        assert!(store.keys.is_empty() && store.revision() == 1, "a failed txn must change nothing");
    }

    #[test]
    fn txn_compares_a_missing_key_as_version_zero() {
        let mut store = Store::new(1);
        let create_if_absent = TxnRequest {
            compare: vec![Compare {
                target: compare::CompareTarget::Version as i32,
                result: compare::CompareResult::Equal as i32,
                key: b"k".to_vec(),
                target_union: Some(compare::TargetUnion::Version(0)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        assert!(store.txn(&create_if_absent).unwrap().succeeded);
        assert!(!store.txn(&create_if_absent).unwrap().succeeded, "the key exists now");
        assert_eq!(store.revision(), 2);
    }
}
