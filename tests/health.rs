//! Client-side health checking over real loopback TCP (gRFC A17, DESIGN §2.5): round_robin
//! stops sending to a server that says NOT_SERVING and comes back to it when SERVING, without
//! reconnecting; pick_first does not care; a server without `Watch` stays in rotation.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anchorage::channel::Channel;
use anchorage::health_pb::health_check_response::ServingStatus;
use anchorage::pb::admin_client::AdminClient;
use anchorage::pb::echo_client::EchoClient;
use anchorage::pb::{EchoRequest, EchoResponse, SetHealthRequest};
use anchorage::server::{HealthStatus, InstrumentedServer, ServerRecorder};
use support::*;

const ROUND_ROBIN_HEALTH: &str = r#"{
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""}
}"#;

const PICK_FIRST_HEALTH: &str = r#"{
    "loadBalancingConfig": [{"pick_first": {}}],
    "healthCheckConfig": {"serviceName": ""}
}"#;

/// How long a status change may take to reach the channel's picker over loopback.
const WITHIN: Duration = Duration::from_secs(5);

fn target(servers: &[SocketAddr]) -> String {
    let list: Vec<_> = servers.iter().map(ToString::to_string).collect();
    format!("pass:///{}", list.join(","))
}

/// Sets `server`'s overall health through its `SetHealth` admin RPC.
async fn set_health(server: SocketAddr, status: ServingStatus) {
    let mut admin = AdminClient::connect(format!("http://{server}")).await.expect("admin connect");
    let request = SetHealthRequest { service: String::new(), status: status.into() };
    admin.set_health(request).await.expect("SetHealth must succeed");
}

async fn echo(client: &mut EchoClient<Channel>) -> EchoResponse {
    let request = EchoRequest { message: "m".into(), ..Default::default() };
    client.echo(request).await.expect("no RPC may fail while a healthy server is up").into_inner()
}

/// Sends RPCs until `done` holds for the last `window` replies, for at most [`WITHIN`]; returns
/// how many it sent.
async fn until_window(
    client: &mut EchoClient<Channel>,
    window: usize,
    done: impl Fn(&[EchoResponse]) -> bool,
) -> usize {
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while tokio::time::Instant::now() < deadline {
        replies.push(echo(client).await);
        if replies.len() >= window && done(&replies[replies.len() - window..]) {
            return replies.len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the traffic did not settle within {WITHIN:?}: last servers {:?}", servers(&replies));
}

fn servers(replies: &[EchoResponse]) -> BTreeSet<String> {
    replies.iter().map(|r| r.server.clone()).collect()
}

#[tokio::test]
async fn round_robin_stops_sending_to_a_server_set_not_serving_and_resumes_when_serving() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let builder = Channel::builder(target(&[a.addr, b.addr]))
        .default_service_config(ROUND_ROBIN_HEALTH)
        .unwrap()
        .seed(1);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(2).await;
    let mut client = EchoClient::new(channel);
    let both = |w: &[EchoResponse]| servers(w).len() == 2;
    until_window(&mut client, 4, both).await;
    let b_connection = b.stats().connections[0].id;

    set_health(b.addr, ServingStatus::NotServing).await;
    until_window(&mut client, 10, |w| servers(w) == BTreeSet::from(["a".to_owned()])).await;
    let before = b.stats().rpcs;
    for _ in 0..50 {
        assert_eq!(echo(&mut client).await.server, "a", "a NOT_SERVING server must get no RPCs");
    }
    assert_eq!(b.stats().rpcs, before, "b must have served nothing while NOT_SERVING");

    set_health(b.addr, ServingStatus::Serving).await;
    until_window(&mut client, 4, both).await;
    let served_by_b: BTreeSet<u64> = {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            let reply = echo(&mut client).await;
            if reply.server == "b" {
                seen.insert(reply.connection);
            }
        }
        seen
    };
    assert_eq!(
        served_by_b,
        BTreeSet::from([b_connection]),
        "b must serve again over the connection it had: NOT_SERVING must not close it"
    );
}

#[tokio::test]
async fn pick_first_ignores_health_checking_as_grpc_go_does() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    set_health(a.addr, ServingStatus::NotServing).await;
    let channel = Channel::builder(target(&[a.addr, b.addr]))
        .default_service_config(PICK_FIRST_HEALTH)
        .unwrap()
        .seed(1)
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    for _ in 0..20 {
        assert_eq!(
            echo(&mut client).await.server,
            "a",
            "pick_first must keep using the first address whatever its health"
        );
    }
}

/// A server whose `Watch` answers UNIMPLEMENTED, on a free loopback port.
async fn server_without_watch(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = InstrumentedServer::new(ServerRecorder::new(name))
        .health(HealthStatus::new(ServingStatus::NotServing).watch_unimplemented(true));
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

#[tokio::test]
async fn a_server_whose_watch_is_unimplemented_stays_in_rotation() {
    let a = TestServer::start("a").await;
    let b = server_without_watch("b").await;
    let builder = Channel::builder(target(&[a.addr, b]))
        .default_service_config(ROUND_ROBIN_HEALTH)
        .unwrap()
        .seed(1);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(2).await;
    let mut client = EchoClient::new(channel);
    let mut replies = Vec::new();
    for _ in 0..20 {
        replies.push(echo(&mut client).await);
    }
    assert_eq!(
        servers(&replies),
        BTreeSet::from(["a".to_owned(), "b".to_owned()]),
        "gRFC A17: UNIMPLEMENTED disables checking, so b must keep its share"
    );
}

/// Regression: a server woke its Watch streams on a status change in an order drawn from
/// tokio's unseeded thread RNG (`tokio::sync::watch` spreads waiters over shards at random), so
/// with several connections to one server the order in which its subchannels left READY changed
/// from run to run with the same seed.
#[cfg(feature = "sim")]
#[test]
fn a_health_status_change_replays_byte_identically_with_the_same_seed() {
    let text = r#"
[[server]]
name = "a"
port = 9080
[[server]]
name = "b"
port = 9080
[client]
target = "pass:///a:9080#4,b:9080#4"
service_config = '{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{}}'
[workload]
rpcs = 200
concurrency = 2
pacing_ms = 5
[[fault]]
at_ms = 300
action = "unhealthy"
server = "b"
[[fault]]
at_ms = 600
action = "healthy"
server = "b"
"#;
    let scenario = anchorage::sim::scenario::Scenario::parse("health_replay.toml", text)
        .unwrap_or_else(|e| panic!("{e}"));
    for seed in 0..2 {
        let first = anchorage::sim::run(&scenario, seed);
        assert!(first.trace.contains("NOT_SERVING"), "the run must see b go NOT_SERVING");
        for _ in 0..3 {
            let again = anchorage::sim::run(&scenario, seed);
            assert_eq!(
                first.trace, again.trace,
                "seed {seed}: the same seed must give a byte-identical trace"
            );
        }
    }
}
