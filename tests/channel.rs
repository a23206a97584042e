//! The channel over real loopback TCP: connection counts per `#N`, the default policy, dedup,
//! failover with and without retries, fail-fast and wait-for-ready, and config errors.

mod support;

use std::time::Duration;

use anchorage::address::Address;
use anchorage::channel::{Channel, ChannelError, WaitForReady};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::resolver::manual::ManualResolver;
use support::*;
use tonic::Code;

#[tokio::test]
async fn round_robin_over_pass_opens_n_connections_per_address_and_splits_rpcs_by_weight() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let builder = Channel::builder(pass_target(&[(&a, 2), (&b, 1)]))
        .default_service_config(ROUND_ROBIN)
        .unwrap()
        .seed(1);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(3).await;
    let mut client = EchoClient::new(channel);
    for _ in 0..300 {
        echo(&mut client).await.expect("every RPC must succeed");
    }
    assert_eq!(a.stats().connections_accepted, 2, "a:#2 must get exactly 2 connections");
    assert_eq!(b.stats().connections_accepted, 1, "b:#1 must get exactly 1 connection");
    assert_eq!((a.stats().rpcs, b.stats().rpcs), (200, 100), "RPCs must split 2:1");
    assert_eq!(a.rpcs_per_connection(), [100, 100], "each connection must carry an equal share");
    assert_eq!(b.rpcs_per_connection(), [100]);
}

/// `addr` and `extd` are other names for `pass` (the original notes use them): the same `#N`.
#[tokio::test]
async fn addr_and_extd_targets_open_n_connections_per_address_as_pass_does() {
    for scheme in ["addr", "extd"] {
        let a = TestServer::start("a").await;
        let target = pass_target(&[(&a, 2)]).replacen("pass:", &format!("{scheme}:"), 1);
        let builder = Channel::builder(target).default_service_config(ROUND_ROBIN).unwrap();
        let (channel, ready) = build_counting_ready(builder);
        ready.wait_for(2).await;
        let mut client = EchoClient::new(channel);
        for _ in 0..10 {
            echo(&mut client).await.expect("every RPC must succeed");
        }
        assert_eq!(a.stats().connections_accepted, 2, "{scheme}:///a#2 must open 2 connections");
    }
}

#[tokio::test]
async fn pick_first_is_the_default_and_uses_one_connection_to_the_first_address() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let channel = Channel::builder(pass_target(&[(&a, 2), (&b, 1)])).seed(1).build().unwrap();
    let mut client = EchoClient::new(channel);
    for _ in 0..50 {
        assert_eq!(echo(&mut client).await.unwrap(), "a", "pick_first must use the first address");
    }
    assert_eq!(a.stats().connections_accepted, 1, "pick_first must open exactly one connection");
    assert_eq!(b.stats().connections_accepted, 0, "pick_first must not connect to later addresses");
    assert_eq!(a.stats().rpcs, 50);
}

async fn connections_for(addresses: Vec<Address>) -> u64 {
    let a = TestServer::start("a").await;
    let manual = ManualResolver::new("manual");
    manual.update_addresses(
        addresses.into_iter().map(|x| Address { addr: a.addr.to_string(), ..x }).collect(),
    );
    let builder = Channel::builder("manual:///test")
        .resolver(manual)
        .default_service_config(ROUND_ROBIN)
        .unwrap();
    let (channel, ready) = build_counting_ready(builder);
    let mut client = EchoClient::new(channel);
    echo(&mut client).await.unwrap();
    ready.wait_for(1).await;
    // Give any second connection time to show up before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stats().connections_accepted
}

#[tokio::test]
async fn equal_addresses_collapse_into_one_connection() {
    let same = Address::new("x").with_connection_index(0);
    assert_eq!(
        connections_for(vec![same.clone(), same]).await,
        1,
        "equal addresses must share one subchannel"
    );
}

#[tokio::test]
async fn addresses_with_distinct_attributes_get_separate_connections() {
    let list = vec![
        Address::new("x").with_connection_index(0),
        Address::new("x").with_connection_index(1),
    ];
    assert_eq!(
        connections_for(list).await,
        2,
        "distinct attributes must make distinct subchannels"
    );
}

/// What a load run with a kill in the middle observed.
struct KillRun {
    /// Statuses of the RPCs that failed.
    failures: Vec<tonic::Status>,
    /// The servers that answered RPCs started after the kill.
    answered_after_kill: Vec<String>,
    /// RPCs the victim had recorded just after the kill, once it settled.
    victim_rpcs_at_kill: u64,
}

impl KillRun {
    /// Asserts that the kill took effect: the victim refuses new connections, every connection
    /// it accepted is closed, it recorded no RPC after the kill, and RPCs went on after it (so
    /// the kill landed in the middle of the load, not after it).
    async fn assert_the_kill_took_effect(&self, victim: &TestServer, name: &str) {
        let refused = tokio::time::timeout(Duration::from_secs(2), async {
            while tokio::net::TcpStream::connect(victim.addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        refused.await.expect("a killed server must refuse new connections");
        let stats = victim.stats();
        assert!(stats.connections_accepted > 0, "{name} must have been connected before the kill");
        assert_eq!(
            stats.connections_closed, stats.connections_accepted,
            "every connection of a killed server must be closed"
        );
        assert_eq!(
            stats.rpcs, self.victim_rpcs_at_kill,
            "no RPC may reach a killed server after the kill"
        );
        assert!(
            !self.answered_after_kill.is_empty(),
            "RPCs must go on after the kill, or the kill tested nothing"
        );
        assert!(
            self.answered_after_kill.iter().all(|server| server != name),
            "no RPC started after the kill may be served by the killed server"
        );
    }
}

/// Runs `workers` concurrent RPC loops of `per_worker` RPCs each and kills `victim` once
/// `kill_after` RPCs have completed.
async fn load_with_kill(
    channel: Channel,
    victim: &TestServer,
    workers: usize,
    per_worker: usize,
    kill_after: usize,
) -> KillRun {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let killed = std::sync::Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (mut client, done, killed) =
            (EchoClient::new(channel.clone()), done.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let (mut failures, mut after) = (Vec::new(), Vec::new());
            for _ in 0..per_worker {
                let started_after_kill = killed.load(SeqCst);
                match echo(&mut client).await {
                    Ok(server) if started_after_kill => after.push(server),
                    Ok(_) => {}
                    Err(status) => failures.push(status),
                }
                done.fetch_add(1, SeqCst);
            }
            (failures, after)
        }));
    }
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while done.load(SeqCst) < kill_after {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.expect("the load must reach the kill point within 10 s");
    victim.kill();
    killed.store(true, SeqCst);
    // Handlers already running when the serving task was aborted may still count their RPC.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let victim_rpcs_at_kill = victim.stats().rpcs;
    let mut run =
        KillRun { failures: Vec::new(), answered_after_kill: Vec::new(), victim_rpcs_at_kill };
    for task in tasks {
        let (failures, after) = task.await.unwrap();
        run.failures.extend(failures);
        run.answered_after_kill.extend(after);
    }
    run
}

/// Regression: this test passed even when the kill never happened; it now checks that the
/// kill took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_rpc_with_a_retry_policy_and_survivors_take_the_rest() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":5,"initialBackoff":"0.01s",
        "maxBackoff":"0.1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    let builder = Channel::builder(pass_target(&[(&a, 2), (&b, 1)]))
        .default_service_config(config)
        .unwrap()
        .backoff(fast_backoff())
        .seed(7);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(3).await;
    let run = load_with_kill(channel, &b, 4, 100, 120).await;
    run.assert_the_kill_took_effect(&b, "b").await;
    assert!(run.failures.is_empty(), "with a retry policy no RPC may fail: {:?}", run.failures);
    assert!(run.answered_after_kill.len() >= 200, "most of the load must run after the kill");
    assert!(
        run.answered_after_kill.iter().all(|server| server == "a"),
        "every RPC started after the kill must be served by the survivor"
    );
    assert!(b.stats().rpcs > 0, "b must have served RPCs before it was killed");
}

/// Regression: this test passed even when the kill never happened; it now checks that the
/// kill took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_policy_only_in_flight_rpcs_fail_each_with_a_status() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let builder = Channel::builder(pass_target(&[(&a, 1), (&b, 1)]))
        .default_service_config(ROUND_ROBIN)
        .unwrap()
        .backoff(fast_backoff())
        .seed(7);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(2).await;
    let workers = 4;
    let run = load_with_kill(channel, &b, workers, 100, 120).await;
    run.assert_the_kill_took_effect(&b, "b").await;
    let failures = run.failures;
    assert!(
        failures.len() <= workers,
        "at most the {workers} in-flight RPCs may fail, got {}: {failures:?}",
        failures.len()
    );
    for status in &failures {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a failed RPC must carry a status: {status:?}"
        );
    }
}

#[tokio::test]
async fn with_every_server_down_fail_fast_rpcs_get_unavailable_naming_the_connection_error() {
    let (x, y) = (unused_addr().await, unused_addr().await);
    let channel = Channel::builder(format!("pass:///{x},{y}"))
        .default_service_config(ROUND_ROBIN)
        .unwrap()
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    let status = echo(&mut client).await.expect_err("no server is up");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("connect to 127.0.0.1:"),
        "the status must name the last connection error, got {:?}",
        status.message()
    );
}

#[tokio::test]
async fn a_wait_for_ready_rpc_succeeds_once_a_server_comes_up_before_its_deadline() {
    let addr = unused_addr().await;
    let channel =
        Channel::builder(format!("pass:///{addr}")).backoff(fast_backoff()).build().unwrap();
    let mut client = EchoClient::new(channel.clone());
    assert_eq!(
        echo(&mut client).await.expect_err("nothing listens yet").code(),
        Code::Unavailable,
        "a fail-fast RPC must fail while the only address is down"
    );
    let rpc = tokio::spawn(async move {
        let mut request =
            tonic::Request::new(EchoRequest { message: "wait".into(), ..Default::default() });
        request.set_timeout(Duration::from_secs(10));
        request.extensions_mut().insert(WaitForReady(true));
        client.echo(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rpc.is_finished(), "a wait-for-ready RPC must wait while the server is down");
    let server = TestServer::start_at("late", addr).await;
    let reply =
        rpc.await.unwrap().expect("the wait-for-ready RPC must succeed once a server is up");
    assert_eq!(reply.into_inner().server, "late");
    assert_eq!(server.stats().rpcs, 1);
}

#[tokio::test]
async fn wait_for_ready_from_the_method_config_applies_too() {
    let addr = unused_addr().await;
    let config = r#"{"methodConfig":[{"name":[{"service":"anchorage.echo.v1.Echo"}],"waitForReady":true,"timeout":"0.3s"}]}"#;
    let channel = Channel::builder(format!("pass:///{addr}"))
        .default_service_config(config)
        .unwrap()
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    let status = client
        .echo(EchoRequest { message: "wait".into(), ..Default::default() })
        .await
        .expect_err("nothing ever listens");
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "a wait-for-ready RPC must wait until the method timeout instead of failing fast"
    );
}

#[tokio::test]
async fn invalid_default_service_configs_fail_the_build_naming_the_field() {
    let cases = [
        ("not json", ""),
        ("[]", ""),
        (r#"{"loadBalancingConfig":{}}"#, "loadBalancingConfig"),
        (r#"{"loadBalancingConfig":[]}"#, "loadBalancingConfig"),
        (r#"{"loadBalancingConfig":[{"weird":{}}]}"#, "loadBalancingConfig"),
        (
            r#"{"loadBalancingConfig":[{"round_robin":{},"pick_first":{}}]}"#,
            "loadBalancingConfig[0]",
        ),
        (r#"{"loadBalancingPolicy":"fastest"}"#, "loadBalancingPolicy"),
        (r#"{"methodConfig":[{"name":[{}],"timeout":5}]}"#, "methodConfig[0].timeout"),
        (r#"{"methodConfig":[{"name":[{}],"timeout":"5"}]}"#, "methodConfig[0].timeout"),
        (r#"{"methodConfig":[{"name":[{"method":"M"}]}]}"#, "methodConfig[0].name[0]"),
        (
            r#"{"methodConfig":[{"name":[{}],"waitForReady":"yes"}]}"#,
            "methodConfig[0].waitForReady",
        ),
        (
            r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":1,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#,
            "methodConfig[0].retryPolicy.maxAttempts",
        ),
        (
            r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[]}}]}"#,
            "methodConfig[0].retryPolicy.retryableStatusCodes",
        ),
        (
            r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":0,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#,
            "methodConfig[0].retryPolicy.backoffMultiplier",
        ),
    ];
    for (json, path) in cases {
        let err = Channel::builder("pass:///127.0.0.1:1")
            .default_service_config(json)
            .expect_err(&format!("{json} must be rejected"));
        let ChannelError::ServiceConfig(err) = &err else { panic!("{json}: wrong error {err}") };
        assert!(err.path().starts_with(path), "{json}: the error must name {path:?}, got {err}");
    }
}

#[tokio::test]
async fn a_malformed_pass_target_fails_the_build_naming_the_item() {
    let err =
        Channel::builder("pass:///127.0.0.1:1#2,127.0.0.1:2#0").build().expect_err("#0 is invalid");
    assert!(matches!(err, ChannelError::Resolver(_)), "got {err:?}");
    assert!(err.to_string().contains(r#"item 2 ("127.0.0.1:2#0")"#), "got {err}");
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Channel::builder("pass:///127.0.0.1:1").build().expect_err("no runtime");
    assert!(matches!(err, ChannelError::NoRuntime));
}

/// Sends one Echo RPC that the server answers with `code`.
async fn failing_echo(client: &mut EchoClient<Channel>, code: Code) -> tonic::Status {
    let request = EchoRequest { message: "fail".into(), fail_with_code: code as i32 };
    client.echo(request).await.expect_err("the server fails this RPC on purpose")
}

fn retrying_channel(server: &TestServer) -> Channel {
    let config = r#"{"methodConfig":[{"name":[{"service":"anchorage.echo.v1.Echo"}],
        "retryPolicy":{"maxAttempts":3,"initialBackoff":"0.01s","maxBackoff":"0.05s",
        "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE","RESOURCE_EXHAUSTED"]}}]}"#;
    Channel::builder(pass_target(&[(server, 1)]))
        .default_service_config(config)
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_retryable_status_is_retried_up_to_max_attempts() {
    let server = TestServer::start("a").await;
    let mut client = EchoClient::new(retrying_channel(&server));
    let status = failing_echo(&mut client, Code::Unavailable).await;
    assert_eq!(status.code(), Code::Unavailable, "the last attempt's status must be returned");
    assert_eq!(server.stats().rpcs, 3, "maxAttempts 3 must mean exactly 3 attempts");
}

#[tokio::test]
async fn a_status_not_listed_as_retryable_is_returned_after_one_attempt() {
    let server = TestServer::start("a").await;
    let mut client = EchoClient::new(retrying_channel(&server));
    let status = failing_echo(&mut client, Code::Internal).await;
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("failing as asked"), "the server's message must survive");
    assert_eq!(server.stats().rpcs, 1, "a non-retryable status must not be retried");
}

#[tokio::test]
async fn without_a_retry_policy_a_failed_rpc_is_sent_once() {
    let server = TestServer::start("a").await;
    let channel = Channel::builder(pass_target(&[(&server, 1)])).build().unwrap();
    let mut client = EchoClient::new(channel);
    assert_eq!(failing_echo(&mut client, Code::Unavailable).await.code(), Code::Unavailable);
    assert_eq!(server.stats().rpcs, 1);
}
