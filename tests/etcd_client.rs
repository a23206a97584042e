//! The etcd client against a real etcd (ignored unless etcd is installed) and against the
//! in-memory etcd: the same case bodies run on both, so what the in-memory etcd answers —
//! revisions, watches, compaction, leases, transactions, error codes — is what etcd answers.

#[macro_use]
mod etcd_cases;

use std::time::Duration;

use anchorage::etcd::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, request_op,
};
use anchorage::etcd::pb::mvccpb::event::EventType;
use anchorage::etcd::{EtcdClient, EtcdError, WatchOptions};
use etcd_cases::*;
use tonic::Code;

fn keys(kvs: &[anchorage::etcd::pb::mvccpb::KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

fn status_code(result: Result<impl std::fmt::Debug, EtcdError>) -> Code {
    match result {
        Err(EtcdError::Rpc { status, .. }) => status.code(),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

// ---- cases shared by the real and the in-memory etcd ----

async fn revisions_grow_by_one_per_write_and_prefix_reads_see_only_the_prefix(etcd: Etcd) {
    let client = etcd.client();
    let start = client.range_prefix("p/").await.unwrap();
    assert!(start.kvs.is_empty());
    let first = client.put("p/a", "1", None).await.unwrap();
    assert_eq!(first, start.revision + 1, "each write must make exactly one revision");
    assert_eq!(client.put("p/b", "2", None).await.unwrap(), first + 1);
    assert_eq!(client.put("pq", "x", None).await.unwrap(), first + 2);
    let read = client.range_prefix("p/").await.unwrap();
    assert_eq!(keys(&read.kvs), ["p/a", "p/b"], "a prefix read must not see pq");
    assert_eq!(read.revision, first + 2, "a read reports the store's revision");
    let kv = client.get("p/a").await.unwrap().expect("p/a exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (first, first, 1));
    assert_eq!(client.delete("p/a").await.unwrap(), 1);
    assert_eq!(client.delete("p/a").await.unwrap(), 0, "deleting a missing key deletes nothing");
    let after = client.range_prefix("p/").await.unwrap();
    assert_eq!(after.revision, first + 3, "deleting nothing must not make a revision");
    assert_eq!(client.delete_prefix("p/").await.unwrap(), 1);
}

async fn a_watch_replays_history_from_its_start_revision_and_then_follows(etcd: Etcd) {
    let client = etcd.client();
    let first = client.put("w/a", "1", None).await.unwrap();
    client.put("w/a", "2", None).await.unwrap();
    client.delete("w/a").await.unwrap();
    client.put("wx", "other", None).await.unwrap();
    let mut watcher = client.watch(WatchOptions::prefix("w/").start_revision(first)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(WAIT, watcher.next()).await.unwrap().unwrap();
        seen.extend(batch.events);
    }
    let kinds: Vec<(i32, i64)> =
        seen.iter().map(|e| (e.r#type, e.kv.as_ref().unwrap().mod_revision)).collect();
    let (put, delete) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(kinds, [(put, first), (put, first + 1), (delete, first + 2)]);
    assert!(seen.iter().all(|e| e.prev_kv.is_none()), "prev_kv only when asked for");

    let next = client.put("w/b", "3", None).await.unwrap();
    let batch = tokio::time::timeout(WAIT, watcher.next()).await.unwrap().unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kv.as_ref().unwrap().mod_revision, next);
    assert_eq!(batch.revision, next, "the header carries the revision of the events");
}

async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compaction_revision(etcd: Etcd) {
    let client = etcd.client();
    let first = client.put("c/a", "1", None).await.unwrap();
    client.put("c/a", "2", None).await.unwrap();
    let last = client.put("c/a", "3", None).await.unwrap();
    client.compact(last).await.unwrap();
    // etcd confirms the watch first and cancels it in its next message.
    let err = match client.watch(WatchOptions::prefix("c/").start_revision(first)).await {
        Err(err) => err,
        Ok(mut watcher) => tokio::time::timeout(WAIT, watcher.next()).await.unwrap().unwrap_err(),
    };
    assert!(
        matches!(err, EtcdError::Compacted { compact_revision } if compact_revision == last),
        "a watch from before the compaction must fail as compacted at {last}, got {err:?}"
    );
    let mut watcher = client.watch(WatchOptions::prefix("c/").start_revision(last)).await.unwrap();
    let batch = tokio::time::timeout(WAIT, watcher.next()).await.unwrap().unwrap();
    assert_eq!(batch.events[0].kv.as_ref().unwrap().mod_revision, last);

    let request = RangeRequest { key: b"c/a".to_vec(), revision: first, ..Default::default() };
    assert_eq!(status_code(client.range(request).await), Code::OutOfRange);
    assert_eq!(status_code(client.compact(last).await), Code::OutOfRange, "compacted already");
    assert_eq!(status_code(client.compact(last + 100).await), Code::OutOfRange, "future");
}

async fn leases_have_a_minimum_ttl_renew_and_take_their_keys_with_them(etcd: Etcd) {
    let client = etcd.client();
    let lease = client.grant(1).await.unwrap();
    assert_eq!(lease.ttl, 2, "etcd with default settings raises a 1 s lease to 2 s");
    client.put("l/a", "x", Some(lease.id)).await.unwrap();
    client.put("l/b", "y", Some(lease.id)).await.unwrap();
    let kv = client.get("l/a").await.unwrap().unwrap();
    assert_eq!(kv.lease, lease.id);
    let mut stream = client.keep_alive(lease.id).await.unwrap();
    assert_eq!(stream.ttl(), 2);
    assert_eq!(stream.keep_alive().await.unwrap(), 2, "a renewal returns the granted TTL");
    assert!(client.time_to_live(lease.id).await.unwrap().is_some());

    let before = client.range_prefix("l/").await.unwrap().revision;
    client.revoke(lease.id).await.unwrap();
    let after = client.range_prefix("l/").await.unwrap();
    assert!(after.kvs.is_empty(), "revoking a lease deletes its keys");
    assert_eq!(after.revision, before + 1, "one revision for all of a lease's keys");
    assert_eq!(client.time_to_live(lease.id).await.unwrap(), None);
    let renewed = stream.keep_alive().await;
    assert!(
        matches!(renewed, Err(EtcdError::LeaseExpired { id }) if id == lease.id),
        "renewing a revoked lease must say it is gone, got {renewed:?}"
    );
    assert_eq!(status_code(client.revoke(lease.id).await), Code::NotFound);
    assert_eq!(status_code(client.put("l/c", "z", Some(lease.id)).await), Code::NotFound);
}

async fn an_unrenewed_lease_expires_and_deletes_its_key(etcd: Etcd) {
    let client = etcd.client();
    let lease = client.grant(2).await.unwrap();
    let written = client.put("e/a", "x", Some(lease.id)).await.unwrap();
    let mut watcher =
        client.watch(WatchOptions::key("e/a").start_revision(written + 1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let batch = tokio::time::timeout(WAIT, watcher.next()).await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(batch.events[0].r#type, EventType::Delete as i32);
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(4),
        "a 2 s lease must expire about 2 s after it was granted, took {took:?}"
    );
}

async fn a_txn_writes_a_key_only_if_it_is_absent(etcd: Etcd) {
    let client = etcd.client();
    let create = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: b"t/k".to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"t/k".to_vec(),
                value: b"first".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"t/k".to_vec(),
                ..Default::default()
            })),
        }],
    };
    let first = client.txn(create.clone()).await.unwrap();
    assert!(first.succeeded, "the key is absent: the success branch runs");
    let second = client.txn(create).await.unwrap();
    assert!(!second.succeeded, "the key exists: the failure branch runs");
    assert_eq!(second.header.unwrap().revision, first.header.unwrap().revision, "a read-only txn");
    assert_eq!(client.get("t/k").await.unwrap().unwrap().value, b"first");
}

async fn the_client_fails_over_to_the_next_endpoint(etcd: Etcd) {
    let dead = format!("127.0.0.1:{}", free_loopback_port());
    let endpoints = format!("{dead},{}", etcd.endpoint());
    let client = client_builder(&endpoints).build().unwrap();
    assert_eq!(client.endpoints().addrs().len(), 2);
    client.put("f/a", "1", None).await.expect("the second endpoint must serve the put");
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

both!(
    revisions_grow_by_one_per_write_and_prefix_reads_see_only_the_prefix,
    a_watch_replays_history_from_its_start_revision_and_then_follows,
    a_watch_from_a_compacted_revision_is_cancelled_with_the_compaction_revision,
    leases_have_a_minimum_ttl_renew_and_take_their_keys_with_them,
    an_unrenewed_lease_expires_and_deletes_its_key,
    a_txn_writes_a_key_only_if_it_is_absent,
    the_client_fails_over_to_the_next_endpoint,
);

#[test]
fn a_client_needs_a_runtime_and_valid_endpoints() {
    assert!(matches!(EtcdClient::connect("127.0.0.1:2379"), Err(EtcdError::Channel(_))));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    assert!(matches!(EtcdClient::connect("https://a:1,http://a:2"), Err(EtcdError::Endpoints(_))));
}
