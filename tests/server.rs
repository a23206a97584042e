//! The instrumented server, specified over real loopback TCP: what it records about connections
//! and RPCs, how the `Stats` RPC and the JSON dump report it, and the `anchorage serve` command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage::pb::echo_client::EchoClient;
use anchorage::pb::{EchoRequest, EchoResponse, StatsRequest, StatsResponse};
use anchorage::server::{InstrumentedServer, ServerRecorder, ServerStats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::{Channel, Endpoint};

/// Bound for one whole test body; nothing here should come near it.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// Bound for one step (a connect, an RPC, a line of output).
const STEP_LIMIT: Duration = Duration::from_secs(10);

// ---- helpers: an in-process server ----

struct RunningServer {
    addr: SocketAddr,
    recorder: ServerRecorder,
    stop: oneshot::Sender<()>,
    task: JoinHandle<ServerStats>,
}

async fn start_server(name: &str) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let recorder = ServerRecorder::new(name);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = InstrumentedServer::new(recorder.clone());
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    RunningServer { addr, recorder, stop, task }
}

impl RunningServer {
    async fn shut_down(self) -> ServerStats {
        let _ = self.stop.send(());
        timeout(STEP_LIMIT, self.task)
            .await
            .expect("the server must stop within the step limit after shutdown")
            .expect("server task must not panic")
    }
}

/// A plain tonic channel: exactly one HTTP/2 connection.
async fn connect(addr: SocketAddr) -> EchoClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(STEP_LIMIT);
    let channel = timeout(STEP_LIMIT, endpoint.connect())
        .await
        .expect("connect within the step limit")
        .expect("connect to the loopback server");
    EchoClient::new(channel)
}

async fn echo_times(client: &mut EchoClient<Channel>, n: usize) -> Vec<EchoResponse> {
    let mut responses = Vec::with_capacity(n);
    for i in 0..n {
        let request = EchoRequest { message: format!("m{i}"), ..Default::default() };
        let response = timeout(STEP_LIMIT, client.echo(request))
            .await
            .expect("echo within the step limit")
            .expect("echo succeeds");
        responses.push(response.into_inner());
    }
    responses
}

async fn stats_rpc(client: &mut EchoClient<Channel>) -> StatsResponse {
    timeout(STEP_LIMIT, client.stats(StatsRequest {}))
        .await
        .expect("stats within the step limit")
        .expect("stats succeeds")
        .into_inner()
}

/// The one connection id all `responses` name.
fn the_connection_of(responses: &[EchoResponse]) -> u64 {
    let ids: Vec<u64> = responses.iter().map(|r| r.connection).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "every RPC on one tonic channel must be served by one connection, got {ids:?}"
    );
    ids[0]
}

fn rpcs_by_connection(stats: &StatsResponse) -> BTreeMap<u64, u64> {
    stats.connections.iter().map(|c| (c.id, c.rpcs)).collect()
}

// ---- the server library ----

#[tokio::test]
async fn two_channels_make_two_connections_and_each_echo_names_the_connection_that_served_it() {
    timeout(TEST_LIMIT, async {
        // Given a server and two separate tonic channels to it.
        let server = start_server("a").await;
        let mut first = connect(server.addr).await;
        let mut second = connect(server.addr).await;

        // When 10 RPCs go over the first and 5 over the second.
        let first_responses = echo_times(&mut first, 10).await;
        let second_responses = echo_times(&mut second, 5).await;

        // Then each response echoes its message and names this server.
        for (i, r) in first_responses.iter().enumerate() {
            assert_eq!((r.message.as_str(), r.server.as_str()), (format!("m{i}").as_str(), "a"));
        }
        // And the two channels were served by two different connections.
        let first_id = the_connection_of(&first_responses);
        let second_id = the_connection_of(&second_responses);
        assert_ne!(first_id, second_id, "two channels must be served by two connections");

        // And the server recorded exactly those two connections, with 10 and 5 RPCs.
        let stats = stats_rpc(&mut first).await;
        assert_eq!(stats.server, "a");
        assert_eq!(
            rpcs_by_connection(&stats),
            BTreeMap::from([(first_id, 10), (second_id, 5)]),
            "Stats must count each RPC against the connection its response named"
        );
        let recorded = server.recorder.stats();
        assert_eq!(
            recorded.connections_accepted, 2,
            "two channels must make exactly 2 connections"
        );
        assert_eq!(recorded.rpcs, 15, "Stats calls must not be counted as RPCs");
        assert_eq!(
            recorded.connections.iter().map(|c| c.id).collect::<Vec<_>>(),
            [0, 1],
            "connection ids must count from 0 in accept order"
        );
        for c in &recorded.connections {
            assert_eq!(c.peer.ip(), server.addr.ip(), "the peer of a loopback client is loopback");
            assert_eq!(c.methods.keys().collect::<Vec<_>>(), ["/anchorage.echo.v1.Echo/Echo"]);
        }

        drop((first, second));
        server.shut_down().await;
    })
    .await
    .expect("test must finish within its time limit");
}

/// Regression: hyper stamped every response with a `date` header read from the wall clock
/// (tonic offers no way to turn it off), so the bytes a server sent depended on when it ran and
/// simulated runs with the same seed diverged under load.
#[tokio::test]
async fn responses_carry_nothing_read_from_the_wall_clock() {
    let server = start_server("a").await;
    let mut client = connect(server.addr).await;
    let request = EchoRequest { message: "hi".into(), ..Default::default() };
    let response = timeout(STEP_LIMIT, client.echo(request)).await.unwrap().unwrap();
    assert_eq!(response.get_ref().message, "hi");
    assert!(
        response.metadata().get("date").is_none(),
        "a response must carry no date header: {:?}",
        response.metadata()
    );
    drop(client);
    server.shut_down().await;
}

#[tokio::test]
async fn the_stats_rpc_and_the_json_dump_agree() {
    timeout(TEST_LIMIT, async {
        // Given a server that served 3 RPCs on one connection and 2 on another.
        let server = start_server("b").await;
        let mut first = connect(server.addr).await;
        let mut second = connect(server.addr).await;
        echo_times(&mut first, 3).await;
        echo_times(&mut second, 2).await;

        // When the stats are read both ways.
        let over_rpc = stats_rpc(&mut second).await;
        let dump = server.recorder.stats().to_json();

        // Then the JSON dump, read back, says what the RPC said.
        let from_dump: ServerStats = serde_json::from_str(&dump).expect("the dump is ServerStats");
        assert_eq!(StatsResponse::from(&from_dump), over_rpc, "Stats RPC and JSON dump disagree");
        let json: serde_json::Value = serde_json::from_str(&dump).unwrap();
        assert_eq!(json["server"], "b");
        assert_eq!(json["connections_accepted"], 2);
        assert_eq!(json["rpcs"], 5);
        assert_eq!(json["connections"][0]["rpcs"], 3);
        assert!(json["connections"][0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

        drop((first, second));
        server.shut_down().await;
    })
    .await
    .expect("test must finish within its time limit");
}

#[tokio::test]
async fn a_connection_is_recorded_closed_when_its_client_goes_away() {
    timeout(TEST_LIMIT, async {
        // Given a server with one client connection that served an RPC.
        let server = start_server("c").await;
        let mut client = connect(server.addr).await;
        echo_times(&mut client, 1).await;
        assert_eq!(server.recorder.stats().connections_closed, 0);

        // When the client drops its channel.
        drop(client);

        // Then the server soon records the connection closed.
        let deadline = Instant::now() + STEP_LIMIT;
        while server.recorder.stats().connections_closed == 0 {
            assert!(
                Instant::now() < deadline,
                "a dropped client connection must be recorded closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = server.shut_down().await;
        assert!(stats.connections[0].closed_at_ms.is_some());
    })
    .await
    .expect("test must finish within its time limit");
}

#[tokio::test]
async fn graceful_shutdown_closes_open_connections_and_returns_the_final_stats() {
    timeout(TEST_LIMIT, async {
        // Given a server with a client that is still connected.
        let server = start_server("d").await;
        let mut client = connect(server.addr).await;
        echo_times(&mut client, 4).await;

        // When the server shuts down while the client keeps its channel.
        let stats = server.shut_down().await;

        // Then the final stats count the RPCs and show the connection closed.
        assert_eq!((stats.connections_accepted, stats.rpcs), (1, 4));
        assert_eq!(stats.connections_closed, 1, "graceful shutdown must close open connections");
        drop(client);
    })
    .await
    .expect("test must finish within its time limit");
}

#[tokio::test]
async fn drain_timeout_bounds_a_shutdown_that_a_silent_peer_would_block() {
    timeout(TEST_LIMIT, async {
        // Given a server with a drain timeout, and a raw TCP peer that never speaks HTTP/2.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = ServerRecorder::new("e");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = InstrumentedServer::new(recorder.clone())
            .drain_timeout(Some(Duration::from_millis(300)));
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let deadline = Instant::now() + STEP_LIMIT;
        while recorder.stats().connections_accepted == 0 {
            assert!(Instant::now() < deadline, "the silent peer must be accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // When the server shuts down.
        let started = Instant::now();
        let _ = stop.send(());
        let stats = timeout(STEP_LIMIT, task)
            .await
            .expect("a drain timeout must end a shutdown that waits on a silent peer")
            .unwrap();

        // Then serving waited for the drain timeout, then returned with that connection open.
        assert!(started.elapsed() >= Duration::from_millis(300), "draining must wait its timeout");
        assert_eq!((stats.connections_accepted, stats.connections_closed), (1, 0));
        drop(silent);
    })
    .await
    .expect("test must finish within its time limit");
}

// ---- the `anchorage serve` command ----

/// Tests of the `anchorage serve` binary, which exists with the `cli` feature.
#[cfg(feature = "cli")]
mod serve_command {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;

    use super::*;

    /// A running `anchorage serve` process; killed on drop if it is still running.
    struct ServeProcess {
        child: Child,
        lines: mpsc::Receiver<String>,
    }

    impl ServeProcess {
        fn spawn(args: &[&str]) -> Self {
            let mut child = Command::new(env!("CARGO_BIN_EXE_anchorage"))
                .arg("serve")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn anchorage serve");
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Self { child, lines }
        }

        fn next_line(&self) -> String {
            self.lines
                .recv_timeout(STEP_LIMIT)
                .expect("anchorage serve must print the next line in time")
        }

        /// Reads the `listening on ADDR` line and returns ADDR.
        fn listening_addr(&self) -> SocketAddr {
            let line = self.next_line();
            let addr = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("first line must be `listening on ADDR`, got {line:?}"));
            addr.parse().unwrap_or_else(|err| panic!("bad address in {line:?}: {err}"))
        }

        fn terminate(&self) {
            let status = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM must reach the server process");
        }

        /// Reads the final JSON line and waits for a successful exit.
        fn final_stats(mut self) -> ServerStats {
            let line = self.next_line();
            let stats = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("last line must be the stats JSON ({err}): {line:?}"));
            let deadline = Instant::now() + STEP_LIMIT;
            loop {
                if let Some(status) = self.child.try_wait().expect("wait for anchorage serve") {
                    assert!(
                        status.success(),
                        "anchorage serve must exit 0 after a clean stop: {status}"
                    );
                    return stats;
                }
                assert!(
                    Instant::now() < deadline,
                    "anchorage serve must exit after printing its stats"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for ServeProcess {
        fn drop(&mut self) {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    fn client_runtime() -> tokio::runtime::Runtime {
        // A worker thread keeps the client's connection answering while the server shuts down.
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn serve_prints_its_address_serves_rpcs_and_prints_stats_as_json_on_sigterm() {
        // Given `anchorage serve` on an OS-chosen loopback port (`--for` only as a safety net).
        let process =
            ServeProcess::spawn(&["--listen", "127.0.0.1:0", "--name", "t", "--for", "60"]);
        let addr = process.listening_addr();
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "must print the bound address: {addr}"
        );

        // When a client makes 3 RPCs and the server gets SIGTERM.
        let runtime = client_runtime();
        let (client, responses) = runtime.block_on(async {
            let mut client = connect(addr).await;
            let responses = echo_times(&mut client, 3).await;
            (client, responses)
        });
        assert!(responses.iter().all(|r| r.server == "t" && r.connection == 0));
        process.terminate();

        // Then it stops gracefully and prints one connection with 3 RPCs.
        let stats = process.final_stats();
        assert_eq!(stats.server, "t");
        assert_eq!(stats.connections_accepted, 1, "one client channel must be one connection");
        assert_eq!(stats.rpcs, 3);
        assert_eq!(stats.connections[0].rpcs, 3);
        assert_eq!(stats.connections_closed, 1, "a graceful stop must close the open connection");
        drop(client);
    }

    #[test]
    fn serve_stops_by_itself_when_for_elapses() {
        let process = ServeProcess::spawn(&["--for", "0.3"]);
        let addr = process.listening_addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "serve must bind loopback by default");

        let stats = process.final_stats();
        assert_eq!((stats.server.as_str(), stats.connections_accepted), ("server", 0));
    }

    #[test]
    fn serve_refuses_a_non_loopback_address_without_allow_remote() {
        let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(["serve", "--listen", "0.0.0.0:0", "--for", "5"])
            .output()
            .expect("run anchorage serve");

        assert!(
            !output.status.success(),
            "a non-loopback --listen must fail without --allow-remote"
        );
        assert!(output.stdout.is_empty(), "a refused server must not print a listening line");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("0.0.0.0:0") && stderr.contains("--allow-remote"),
            "the error must name the address and the way out, got {stderr:?}"
        );
    }
}
