//! `anchorage probe` against in-process loopback servers: the JSON report holds the client's
//! outcome and each server's own count of connections and RPCs.
#![cfg(feature = "cli")]

mod support;

use std::process::Command;

use serde_json::Value;
use support::{ROUND_ROBIN, TestServer, pass_target};

/// Runs `anchorage probe ARGS` off the runtime's threads; returns (exit code, stdout, stderr).
async fn probe(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .arg("probe")
            .args(&args)
            .output()
            .expect("run anchorage probe");
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
    })
    .await
    .unwrap()
}

fn server<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("the report must list server {name}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_json_reports_the_weighted_split_from_the_servers_own_stats() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let args = vec![
        pass_target(&[(&a, 2), (&b, 1)]),
        "--service-config".into(),
        ROUND_ROBIN.into(),
        "--rpcs".into(),
        "300".into(),
        "--json".into(),
    ];
    let (code, stdout, stderr) = probe(args).await;
    assert_eq!(code, 0, "probe must succeed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["ok"], 300);
    assert_eq!(report["errors"]["UNAVAILABLE"], 0);
    let (ra, rb) = (server(&report, "a"), server(&report, "b"));
    assert_eq!(ra["addr"], a.addr.to_string());
    assert_eq!(ra["connections_accepted"], 2, "a:#2 must show two connections");
    assert_eq!(ra["rpcs"], 200);
    assert_eq!(ra["rpcs_per_connection"], serde_json::json!([100, 100]));
    assert_eq!(rb["connections_accepted"], 1);
    assert_eq!(rb["rpcs"], 100);
    let expected = ra["expected_share"].as_f64().unwrap();
    assert!((expected - 2.0 / 3.0).abs() < 1e-9, "expected share must come from #2 of #3");
    assert_eq!(a.stats().rpcs, 200, "the report must match the server's own count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_without_a_service_config_shows_pick_first_on_one_connection() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let args =
        vec![pass_target(&[(&a, 2), (&b, 1)]), "--rpcs".into(), "20".into(), "--json".into()];
    let (code, stdout, stderr) = probe(args).await;
    assert_eq!(code, 0, "probe must succeed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["servers"].as_array().unwrap().len(), 1, "pick_first reaches one server");
    assert_eq!(server(&report, "a")["connections_accepted"], 1);
    assert_eq!(server(&report, "a")["rpcs"], 20);
}

#[tokio::test]
async fn probe_rejects_a_malformed_target_naming_the_item() {
    let (code, _, stderr) = probe(vec!["pass:///127.0.0.1:1#0".into()]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains(r#"item 1 ("127.0.0.1:1#0")"#), "got {stderr}");
}

/// Regression: `--timeout 1e300` panicked converting to a duration (exit 101).
#[tokio::test]
async fn probe_rejects_a_timeout_outside_zero_to_one_day_with_exit_2() {
    for bad in ["1e300", "0", "-1", "nan", "inf", "86401"] {
        let args = vec!["pass:///127.0.0.1:1".into(), format!("--timeout={bad}")];
        let (code, _, stderr) = probe(args).await;
        assert_eq!(code, 2, "--timeout {bad} must be a usage error: {stderr}");
        assert!(
            stderr.contains("--timeout") && stderr.contains("86400"),
            "the error must name the flag and its range: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_with_wait_for_ready_succeeds_once_a_server_comes_up() {
    let addr = support::unused_addr().await;
    let args = vec![
        format!("pass:///{addr}"),
        "--wait-for-ready".into(),
        "--timeout".into(),
        "30".into(),
        "--rpcs".into(),
        "5".into(),
        "--json".into(),
    ];
    let probing = tokio::spawn(probe(args));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!probing.is_finished(), "probe must wait while nothing listens");
    let server = TestServer::start_at("late", addr).await;
    let (code, stdout, stderr) = probing.await.unwrap();
    assert_eq!(code, 0, "wait-for-ready RPCs must succeed once the server is up: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["ok"], 5, "every RPC must succeed: {report}");
    assert_eq!(server.stats().rpcs, 5, "the late server must have served them");
}

#[tokio::test]
async fn probe_without_wait_for_ready_fails_fast_and_prints_the_connection_error() {
    let addr = support::unused_addr().await;
    let args = vec![format!("pass:///{addr}"), "--timeout".into(), "20".into()];
    let started = std::time::Instant::now();
    let (code, stdout, _) = probe(args.clone()).await;
    assert_eq!(code, 1, "RPCs to a channel in TRANSIENT_FAILURE must fail: {stdout}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fail-fast RPCs must not wait for the 20 s timeout"
    );
    assert!(
        stdout.contains(&format!("connect to {addr}")),
        "the report must print the connection error: {stdout}"
    );
}

/// An `Echo` server whose `Stats` reply is larger than a client may decode (4 MiB), as an
/// unbounded recorder's was after ~150,000 connections.
#[derive(Debug, Clone)]
struct OversizedStats;

#[tonic::async_trait]
impl anchorage::pb::echo_server::Echo for OversizedStats {
    async fn echo(
        &self,
        request: tonic::Request<anchorage::pb::EchoRequest>,
    ) -> Result<tonic::Response<anchorage::pb::EchoResponse>, tonic::Status> {
        let message = request.into_inner().message;
        let server = "huge".to_owned();
        Ok(tonic::Response::new(anchorage::pb::EchoResponse { message, server, connection: 0 }))
    }

    async fn stats(
        &self,
        _: tonic::Request<anchorage::pb::StatsRequest>,
    ) -> Result<tonic::Response<anchorage::pb::StatsResponse>, tonic::Status> {
        let connection = |id| anchorage::pb::ConnectionStats {
            id,
            peer: "127.0.0.1:65535".into(),
            ..Default::default()
        };
        let connections = (0..200_000).map(connection).collect();
        let server = "huge".to_owned();
        Ok(tonic::Response::new(anchorage::pb::StatsResponse {
            server,
            connections,
            ..Default::default()
        }))
    }
}

/// Regression: when a server's `Stats` reply could not be read, probe printed "10 ok, 0 failed"
/// with no server line and exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_loudly_when_a_server_s_stats_cannot_be_read() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let service = anchorage::pb::echo_server::EchoServer::new(OversizedStats);
    let router = tonic::transport::Server::builder().add_service(service);
    tokio::spawn(router.serve_with_incoming(incoming));

    let (code, stdout, stderr) =
        probe(vec![format!("pass:///{addr}"), "--rpcs".into(), "10".into()]).await;
    assert_eq!(code, 1, "unreadable server stats must fail the probe: {stdout} {stderr}");
    assert!(stdout.contains("10 ok"), "the RPCs themselves succeeded: {stdout}");
    assert!(stderr.contains("cannot read server stats"), "the reason must be on stderr: {stderr}");
}
