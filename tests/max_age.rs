//! MAX_CONNECTION_AGE and GOAWAY over loopback TCP: the server sends GOAWAY at each
//! connection's age (or on request) and closes it after the grace; the channel treats the
//! GOAWAY as the end of that connection, not a failure: the subchannel goes IDLE at once,
//! reconnects, and nothing in flight is lost.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::balancer::ConnectivityState;
use anchorage::channel::{Channel, ChannelEvent};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::server::{GoAwayHandle, InstrumentedServer, ServerRecorder, ServerStats};
use support::{ROUND_ROBIN, echo, fast_backoff};
use tokio::net::TcpListener;

/// A loopback server configured by `configure`, running until the test ends.
struct Server {
    addr: std::net::SocketAddr,
    recorder: ServerRecorder,
    goaway: GoAwayHandle,
}

async fn start(
    name: &str,
    configure: impl FnOnce(InstrumentedServer) -> InstrumentedServer,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = ServerRecorder::new(name);
    let server = configure(InstrumentedServer::new(recorder.clone()));
    let goaway = server.goaway().clone();
    tokio::spawn(server.serve(listener, std::future::pending()));
    Server { addr, recorder, goaway }
}

impl Server {
    fn stats(&self) -> ServerStats {
        self.recorder.stats()
    }
}

/// The subchannel states the channel reported, in order.
type States = Arc<Mutex<Vec<ConnectivityState>>>;

fn channel(target: String, config: Option<&str>) -> (Channel, States) {
    let states = States::default();
    let seen = states.clone();
    let mut builder = Channel::builder(target).backoff(fast_backoff()).on_event(move |event| {
        if let ChannelEvent::SubchannelState { state, .. } = event {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(*state);
        }
    });
    if let Some(config) = config {
        builder = builder.default_service_config(config).unwrap();
    }
    (builder.build().unwrap(), states)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_max_connection_age_sends_goaway_and_closes_each_connection_after_the_grace()
{
    let (age, grace) = (Duration::from_millis(300), Duration::from_millis(200));
    let server = start("a", |s| s.max_connection_age(Some(age), Some(grace))).await;
    let (channel, _) = channel(format!("pass:///{}", server.addr), None);
    let mut client = EchoClient::new(channel);
    let mut failed = Vec::new();
    for _ in 0..40 {
        if let Err(status) = echo(&mut client).await {
            failed.push(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed.is_empty(), "GOAWAY at max age must fail no RPC: {failed:?}");
    let stats = server.stats();
    assert!(
        stats.connections_accepted >= 4,
        "2 s of traffic over connections aged 300 ms ±10 % must open at least 4, got {}",
        stats.connections_accepted
    );
    // The age ±10 %, plus the grace, plus scheduling slack on a loaded machine.
    let limit = (age.mul_f64(1.1) + grace + Duration::from_millis(300)).as_millis() as u64;
    for connection in stats.connections.iter().filter(|c| c.closed_at_ms.is_some()) {
        let lived = connection.closed_at_ms.unwrap() - connection.accepted_at_ms;
        assert!(lived <= limit, "a connection must close by age + grace: lived {lived} ms");
    }
}

/// A stream still open when the grace after a max-age GOAWAY runs out is cut off with the
/// connection (grpc-go's `MaxConnectionAgeGrace`): the grace bounds how long an old connection
/// can linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_after_a_max_age_goaway_closes_the_connection_under_a_stream_still_open() {
    let (age, grace) = (Duration::from_millis(300), Duration::from_millis(200));
    let server = start("a", |s| {
        s.max_connection_age(Some(age), Some(grace))
            .response_body_delay(Some(Duration::from_secs(3)))
    })
    .await;
    let (channel, _) = channel(format!("pass:///{}", server.addr), None);
    let mut client = EchoClient::new(channel);
    let started = tokio::time::Instant::now();
    let outcome = echo(&mut client).await;
    assert!(outcome.is_err(), "a response held past the grace must not arrive: {outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the stream must end when the grace does, not when the response would have come"
    );
    let first = &server.stats().connections[0];
    let lived =
        first.closed_at_ms.expect("the first connection must be closed") - first.accepted_at_ms;
    let limit = (age.mul_f64(1.1) + grace + Duration::from_millis(300)).as_millis() as u64;
    assert!(lived <= limit, "the connection must close by age + grace: lived {lived} ms");
}

/// An RPC whose response is held back, sent before a GOAWAY, still completes on the old
/// connection; the subchannel goes IDLE as soon as the GOAWAY arrives, while that RPC is
/// still in flight, and the next RPC opens a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_in_flight_across_a_goaway_completes_and_new_rpcs_use_a_new_connection() {
    let server = start("a", |s| s.response_body_delay(Some(Duration::from_millis(800)))).await;
    let (channel, states) = channel(format!("pass:///{}", server.addr), None);
    let mut client = EchoClient::new(channel);
    let mut in_flight_client = client.clone();
    let in_flight = tokio::spawn(async move {
        let request = EchoRequest { message: "slow".into(), ..Default::default() };
        in_flight_client.echo(request).await.map(|r| r.into_inner().connection)
    });
    // Let the RPC reach the server, then send GOAWAY while its body is held back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.goaway.send();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!in_flight.is_finished(), "the slow RPC must still be in flight");
    assert_eq!(
        states.lock().unwrap().last(),
        Some(&ConnectivityState::Idle),
        "GOAWAY received must take the subchannel out of READY before the connection closes"
    );
    let served = in_flight.await.unwrap();
    assert_eq!(served.ok(), Some(0), "the RPC in flight must complete on the old connection");
    let next = client
        .echo(EchoRequest { message: "next".into(), ..Default::default() })
        .await
        .expect("an RPC after the GOAWAY must succeed");
    assert_eq!(next.into_inner().connection, 1, "an RPC after GOAWAY must use a new connection");
    assert_eq!(server.stats().connections_accepted, 2);
}

/// GOAWAY under round_robin over two connections: every RPC sent while the server keeps
/// sending GOAWAY succeeds (streams it did not process are retried transparently).
///
/// Regression: an RPC whose stream was unprocessed skipped that subchannel until the next
/// picker, but looked up the current picker first: when the subchannel had already
/// reconnected and the picker listing it was current, the RPC skipped it and then waited for a
/// newer picker that never came, until its deadline (1 run in 8 failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_goaways_under_load_fail_no_rpc() {
    let server = start("a", |s| s).await;
    let (channel, _) = channel(format!("pass:///{}#2", server.addr), Some(ROUND_ROBIN));
    let client = EchoClient::new(channel);
    let mut calls = Vec::new();
    for worker in 0..4 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..60 {
                if let Err(status) = echo(&mut client).await {
                    failed.push((worker, status));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failed
        }));
    }
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.goaway.send();
    }
    for call in calls {
        let failed = call.await.unwrap();
        assert!(failed.is_empty(), "GOAWAY must fail no RPC: {failed:?}");
    }
    assert!(server.stats().connections_accepted >= 4, "GOAWAYs must make the client reconnect");
}

/// Tests of the `anchorage` binary, which exists with the `cli` feature.
#[cfg(feature = "cli")]
mod command_line {
    use std::process::{Command, Stdio};

    use serde_json::Value;
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    /// `anchorage serve --max-connection-age 1s` with `anchorage probe --duration 6s`: the probe
    /// reconnects at every GOAWAY without failing an RPC.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_over_a_server_with_max_connection_age_loses_no_rpc_and_reconnects() {
        let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(["serve", "--max-connection-age", "1s", "--max-connection-age-grace", "1s"])
            .args(["--for", "20s"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run anchorage serve");
        let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("the listening line");
        let addr = first.strip_prefix("listening on ").expect("listening on ADDR").to_owned();
        let probe = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_anchorage"))
                .args(["probe", &format!("pass:///{addr}#2"), "--service-config", ROUND_ROBIN])
                .args(["--duration", "6s", "--rpcs", "300", "--json"])
                .output()
                .expect("run anchorage probe")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8(probe.stdout).unwrap();
        let stderr = String::from_utf8(probe.stderr).unwrap();
        assert_eq!(probe.status.code(), Some(0), "probe must succeed: {stderr}");
        let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(report["ok"], 300, "every RPC must succeed across GOAWAYs: {report}");
        let accepted = report["servers"][0]["connections_accepted"].as_u64().unwrap();
        assert!(
            accepted >= 8,
            "6 s over 2 connections aged 1 s must open at least 8, got {accepted}"
        );
    }

    #[test]
    fn serve_rejects_a_max_connection_age_out_of_bounds_naming_the_flag() {
        for value in ["0s", "2d", "soon"] {
            let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
                .args(["serve", "--max-connection-age", value])
                .output()
                .unwrap();
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(out.status.code(), Some(2), "{value} must be refused");
            assert!(
                stderr.contains("--max-connection-age"),
                "the error must name the flag: {stderr}"
            );
        }
    }
}

/// The scenario `sims/max_age_follows_resolver.toml` with and without its max age: the
/// resolver's new answer is only learnt by re-resolving, and only the max age's GOAWAYs make
/// the channel re-resolve. With it, a1 and a2 serve nothing after the change plus one age;
/// without it, they serve every RPC of the run and b1, b2 none.
#[cfg(feature = "sim")]
#[test]
fn only_max_connection_age_moves_traffic_to_addresses_the_resolver_returns_on_re_resolution() {
    let with_age = anchorage::sim::scenario::Scenario::load("sims/max_age_follows_resolver.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut without_age = with_age.clone();
    for server in &mut without_age.servers {
        server.max_connection_age_ms = None;
        server.max_connection_age_grace_ms = None;
    }
    let rpcs = |report: &anchorage::sim::RunReport, prefix: &str| -> u64 {
        report.servers.iter().filter(|s| s.name.starts_with(prefix)).map(|s| s.rpcs).sum()
    };
    let report = anchorage::sim::run(&with_age, 0);
    assert!(report.passed, "with a max age, traffic must move:\n{}", report.table());
    assert!(rpcs(&report, "b") > rpcs(&report, "a"), "with a max age, b1, b2 must serve most");

    let report = anchorage::sim::run(&without_age, 0);
    assert_eq!(rpcs(&report, "b"), 0, "without a max age nothing re-resolves: b1, b2 get nothing");
    assert_eq!(
        rpcs(&report, "a"),
        u64::from(report.rpcs.ok),
        "without a max age a1, a2 serve every RPC"
    );
    let moved = report.properties.iter().find(|p| p.name == "no_rpcs_after").unwrap();
    assert_eq!(
        moved.verdict,
        anchorage::sim::checks::Verdict::Fail,
        "without a max age the traffic must never move: {}",
        moved.measured
    );
}
