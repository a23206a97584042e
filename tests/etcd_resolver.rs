//! The `etcd` resolver against a real etcd (ignored unless etcd is installed) and against the
//! in-memory etcd: the same case bodies run on both, so the in-memory etcd is held to the real
//! one's behaviour. Cases that need an etcd crash or a compaction during an outage use the
//! in-memory etcd only.

#[macro_use]
mod etcd_cases;
mod support;

use std::time::Duration;

use anchorage::channel::Channel;
use anchorage::etcd::memory::MemoryEtcd;
use anchorage::etcd::naming::encode_endpoint;
use anchorage::pb::echo_client::EchoClient;
use anchorage::registry::EtcdRegistrar;
use anchorage::resolver::etcd::{EtcdBuilder, EtcdResolverStats};
use etcd_cases::*;
use support::{ROUND_ROBIN, TestServer, echo, unused_addr};

/// A Go-format value announcing `addr`, as text.
fn go_value(addr: &str) -> String {
    String::from_utf8(encode_endpoint(addr, &serde_json::Value::Null)).unwrap()
}

fn target(etcd: &Etcd, service: &str) -> String {
    format!("etcd://{}/{service}", etcd.endpoint())
}

/// Distinct loopback addresses with nothing listening, so discovered addresses refuse at once.
async fn idle_addrs<const N: usize>() -> [String; N] {
    let mut addrs = Vec::new();
    for _ in 0..N {
        addrs.push(unused_addr().await.to_string());
    }
    addrs.try_into().unwrap()
}

// ---- cases shared by the real and the in-memory etcd ----

async fn registered_server_is_discovered_and_removed_after_its_lease_expires(etcd: Etcd) {
    let server = TestServer::start("a").await;
    let addr = server.addr.to_string();
    let registration = EtcdRegistrar::new(etcd.client(), "echo", &addr)
        .unwrap()
        .ttl(2)
        .register()
        .await
        .expect("registration must succeed while etcd is up");
    let target = format!("{}#2", target(&etcd, "echo"));
    let builder = Channel::builder(&target)
        .resolver(resolver_builder(&etcd))
        .default_service_config(ROUND_ROBIN)
        .unwrap();
    let (channel, mut discovered) = discovering(&target, builder);
    discovered
        .wait_for(
            &expanded(&[&addr], 2),
            WAIT,
            "the registered server must be discovered, #2 times",
        )
        .await;
    let mut client = EchoClient::new(channel);
    for _ in 0..10 {
        echo(&mut client).await.expect("RPCs to the discovered server must succeed");
    }
    assert_eq!(
        server.stats().connections_accepted,
        2,
        "#2 must open two connections to the one discovered address"
    );

    // The server dies without deregistering: nobody renews its lease any more.
    drop(registration);
    let took = discovered
        .wait_for(&[], Duration::from_secs(2 + 4), "the key must vanish when its lease expires")
        .await;
    assert!(took >= Duration::from_millis(500), "the key must outlive the last renewal a while");
}

/// The live variant writes with `etcdctl put`; the in-memory one straight into the store.
async fn a_key_written_by_another_client_in_go_json_is_discovered(etcd: Etcd) {
    let [a, b] = idle_addrs().await;
    etcd.external_put(&format!("go-svc/{a}"), &go_value(&a)).await;
    let target = target(&etcd, "go-svc");
    let builder = Channel::builder(&target).resolver(resolver_builder(&etcd));
    let (_channel, mut discovered) = discovering(&target, builder);
    discovered.wait_for(&expanded(&[&a], 1), WAIT, "a key present before the read").await;

    let with_metadata = format!(r#"{{"Op":0,"Addr":"{b}","Metadata":{{"zone":"b","weight":2}}}}"#);
    etcd.external_put(&format!("go-svc/{b}"), &with_metadata).await;
    discovered.wait_for(&expanded(&[&a, &b], 1), WAIT, "a key written while watching").await;
}

async fn foo_never_sees_keys_of_foobar(etcd: Etcd) {
    let [bar1, bare, near, foo1, bar2, foo2] = idle_addrs().await;
    etcd.external_put(&format!("foobar/{bar1}"), &go_value(&bar1)).await;
    etcd.external_put("foo", &go_value(&bare)).await;
    etcd.external_put(&format!("fo/{near}"), &go_value(&near)).await;
    etcd.external_put(&format!("foo/{foo1}"), &go_value(&foo1)).await;
    let target = target(&etcd, "foo");
    let builder = Channel::builder(&target).resolver(resolver_builder(&etcd));
    let (_channel, mut discovered) = discovering(&target, builder);
    discovered.wait_for(&expanded(&[&foo1], 1), WAIT, "only foo/ keys are foo's").await;

    etcd.external_put(&format!("foobar/{bar2}"), &go_value(&bar2)).await;
    etcd.external_put("foo0", &go_value(&bar2)).await;
    etcd.external_put(&format!("foo/{foo2}"), &go_value(&foo2)).await;
    let expected = expanded(&[&foo1, &foo2], 1);
    discovered.wait_for(&expected, WAIT, "a new foo/ key is discovered by the watch").await;
    for other in [&bar1, &bare, &near, &bar2] {
        assert!(
            !discovered.ever_listed(other),
            "foo must never list {other}: {:?}",
            discovered.history
        );
    }
}

async fn a_malformed_value_is_skipped_and_counted(etcd: Etcd) {
    let [bad1, good1, bad2, good2] = idle_addrs().await;
    etcd.external_put(&format!("mal/{bad1}"), "not json").await;
    etcd.external_put(&format!("mal/{good1}"), &go_value(&good1)).await;
    let resolver = resolver_builder(&etcd);
    let stats = resolver.stats();
    let target = target(&etcd, "mal");
    let (_channel, mut discovered) =
        discovering(&target, Channel::builder(&target).resolver(resolver));
    discovered.wait_for(&expanded(&[&good1], 1), WAIT, "the good value next to a bad one").await;
    assert_eq!(stats.snapshot().malformed_values, 1, "the malformed value must be counted");

    etcd.external_put(&format!("mal/{bad2}"), &format!(r#"{{"Op":0,"Addr":7,"x":"{bad2}"}}"#))
        .await;
    etcd.external_put(&format!("mal/{good2}"), &go_value(&good2)).await;
    discovered.wait_for(&expanded(&[&good1, &good2], 1), WAIT, "a watched good value").await;
    assert_eq!(stats.snapshot().malformed_values, 2, "a malformed watched value is counted too");

    etcd.external_put(&format!("mal/{good1}"), &format!(r#"{{"Op":1,"Addr":"{good1}"}}"#)).await;
    discovered.wait_for(&expanded(&[&good2], 1), WAIT, "Op 1 removes the address").await;
    assert!(!discovered.ever_listed(&bad1) && !discovered.ever_listed(&bad2));
}

both!(
    registered_server_is_discovered_and_removed_after_its_lease_expires,
    a_key_written_by_another_client_in_go_json_is_discovered,
    foo_never_sees_keys_of_foobar,
    a_malformed_value_is_skipped_and_counted,
);

// ---- outages and compaction (in-memory etcd only: they crash etcd and compact meanwhile) ----

async fn memory_server() -> MemoryServer {
    MemoryServer::start(MemoryEtcd::new(), "127.0.0.1:0".parse().unwrap()).await
}

fn discover(server: &MemoryServer, service: &str) -> (Channel, Discovered, EtcdResolverStats) {
    let resolver = resolver_for(&server.addr.to_string());
    let stats = resolver.stats();
    let target = format!("etcd://{}/{service}", server.addr);
    let (channel, discovered) = discovering(&target, Channel::builder(&target).resolver(resolver));
    (channel, discovered, stats)
}

/// Waits until the resolver has created `n` watches.
async fn watching(stats: &EtcdResolverStats, n: u64) {
    let created = async {
        while stats.snapshot().watches < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, created).await.expect("the resolver must start watching");
}

#[tokio::test]
async fn an_etcd_outage_keeps_the_last_addresses_and_the_watch_resumes_without_missing_events() {
    let mut server = memory_server().await;
    let [a, b, c] = idle_addrs().await;
    server.etcd.put(format!("svc/{a}"), go_value(&a));
    let (_channel, mut discovered, stats) = discover(&server, "svc");
    discovered.wait_for(&expanded(&[&a], 1), WAIT, "discovery before the outage").await;
    watching(&stats, 1).await;

    server.crash().await;
    server.etcd.put(format!("svc/{b}"), go_value(&b));
    let during = discovered.during(Duration::from_secs(1)).await;
    assert!(during.is_empty(), "while etcd is down the last addresses must stay: {during:?}");

    server.restart().await;
    server.etcd.put(format!("svc/{c}"), go_value(&c));
    discovered
        .wait_for(&expanded(&[&a, &b, &c], 1), WAIT, "events during and after the outage")
        .await;
    let counts = stats.snapshot();
    assert_eq!(counts.reads, 1, "a lost watch must be resumed, not replaced by a full read");
    assert!(counts.watches >= 2 && counts.failures >= 1, "{counts:?}");
}

#[tokio::test]
async fn compaction_while_the_watch_is_down_leads_to_a_full_read_that_sees_deletions() {
    let mut server = memory_server().await;
    let [a, b, c] = idle_addrs().await;
    server.etcd.put(format!("svc/{a}"), go_value(&a));
    server.etcd.put(format!("svc/{b}"), go_value(&b));
    let (_channel, mut discovered, stats) = discover(&server, "svc");
    discovered.wait_for(&expanded(&[&a, &b], 1), WAIT, "discovery before the outage").await;
    watching(&stats, 1).await;

    server.crash().await;
    server.etcd.delete_prefix(format!("svc/{a}"));
    server.etcd.put(format!("svc/{c}"), go_value(&c));
    server.etcd.put("other", "x");
    server.etcd.compact(server.etcd.revision()).unwrap();
    server.restart().await;

    discovered.wait_for(&expanded(&[&b, &c], 1), WAIT, "the full read after compaction").await;
    let counts = stats.snapshot();
    assert_eq!(counts.compactions, 1, "the re-watch must meet the compaction: {counts:?}");
    assert_eq!(counts.reads, 2, "compaction must cause exactly one more full read: {counts:?}");
}

#[tokio::test]
async fn dropping_the_channel_stops_the_resolver_and_closes_its_etcd_connection() {
    let server = memory_server().await;
    let (channel, mut discovered, _) = discover(&server, "svc");
    discovered.wait_for(&[], WAIT, "an empty service resolves to no addresses").await;
    assert_eq!(server.etcd.recorder().stats().connections_accepted, 1);
    drop(channel);
    let closed = async {
        while server.etcd.recorder().stats().connections_closed < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the resolver's etcd connection must close when the channel is dropped");
}

#[tokio::test]
async fn etcd_unreachable_from_the_start_is_reported_and_discovery_begins_when_it_comes_up() {
    let addr = unused_addr().await;
    let [a] = idle_addrs().await;
    let etcd = MemoryEtcd::new();
    etcd.put(format!("svc/{a}"), go_value(&a));
    let resolver: EtcdBuilder = resolver_for(&addr.to_string());
    let target = format!("etcd://{addr}/svc");
    let (channel, mut discovered) =
        discovering(&target, Channel::builder(&target).resolver(resolver));
    let mut client = EchoClient::new(channel);
    let err = echo(&mut client).await.expect_err("no addresses yet");
    assert!(
        err.message().contains("etcd resolver: cannot read service \"svc\""),
        "RPCs must fail with the resolver's error, got {err:?}"
    );
    let _server = MemoryServer::start(etcd, addr).await;
    discovered.wait_for(&expanded(&[&a], 1), WAIT, "discovery once etcd is up").await;
}

#[tokio::test]
async fn graceful_shutdown_of_the_memory_etcd_ends_open_watches() {
    let mut server = memory_server().await;
    let (_channel, mut discovered, _) = discover(&server, "svc");
    discovered.wait_for(&[], WAIT, "the watch is open").await;
    server.stop_gracefully(Duration::from_secs(3)).await;
}
