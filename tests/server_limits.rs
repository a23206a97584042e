//! The instrumented server's limits: failed accepts are retried with backoff, silent
//! connections are closed, and `anchorage serve` bounds its duration flags.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::server::{InstrumentedServer, ServerRecorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_stream::StreamExt;

/// Bound for one step; every close under test is due well before it.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Regression: at `ulimit -n 1024` every accept failed at once with EMFILE and the server
/// retried immediately, burning a core and logging 1.1 GB in 30 s.
#[tokio::test(start_paused = true)]
async fn failing_accepts_are_retried_with_backoff_not_in_a_busy_loop() {
    let start = Instant::now();
    let attempts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let seen = attempts.clone();
    // Every accept fails at once, as with EMFILE; the stream ends after 100,000 attempts so
    // that a busy loop ends the test instead of hanging it.
    let failing = tokio_stream::iter(0..100_000).map(move |_| {
        seen.lock().unwrap().push(start.elapsed());
        Err::<(DuplexStream, SocketAddr), _>(io::Error::from_raw_os_error(24))
    });
    let server = InstrumentedServer::new(ServerRecorder::new("a"));
    let _ = server.serve_incoming(failing, tokio::time::sleep(Duration::from_secs(30))).await;

    let attempts = attempts.lock().unwrap();
    let in_first_second = attempts.iter().filter(|t| **t < Duration::from_secs(1)).count();
    assert!(
        in_first_second <= 12,
        "backoff from 1 ms doubling must allow about 10 accepts in the first second, got {}",
        in_first_second
    );
    let in_last_second =
        attempts.iter().filter(|t| (Duration::from_secs(29)..Duration::from_secs(30)).contains(t));
    assert!(
        in_last_second.count() <= 2,
        "after backing off to 1 s, accepts must be retried about once per second"
    );
    assert!(attempts.len() >= 20, "accepting must go on after errors, got {}", attempts.len());
}

async fn start(server: InstrumentedServer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// Reads until the server closes the connection; returns how long that took, or `None` when it
/// stayed open for [`STEP_LIMIT`].
async fn closed_after(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closing = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    timeout(STEP_LIMIT, closing).await.ok()
}

/// Regression: a client that connected and sent nothing held its socket forever.
#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected_after_the_handshake_timeout() {
    let recorder = ServerRecorder::new("a");
    let server = InstrumentedServer::new(recorder.clone())
        .handshake_timeout(Some(Duration::from_millis(300)))
        .idle_timeout(None);
    let mut silent = TcpStream::connect(start(server).await).await.unwrap();
    let closed = closed_after(&mut silent).await;
    let closed = closed.expect("a connection without the HTTP/2 preface must be closed");
    assert!(closed >= Duration::from_millis(250), "not before the timeout: {closed:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(recorder.stats().connections_closed, 1, "the close must be recorded");
}

/// Regression: a client that completed the preface and then never sent a request held its
/// socket forever.
#[tokio::test]
async fn a_client_that_never_sends_a_request_is_disconnected_after_the_idle_timeout() {
    let server = InstrumentedServer::new(ServerRecorder::new("a"))
        .handshake_timeout(Some(Duration::from_secs(5)))
        .idle_timeout(Some(Duration::from_millis(400)));
    let mut idle = TcpStream::connect(start(server).await).await.unwrap();
    // The preface and an empty SETTINGS frame: a complete handshake, but no request.
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let closed = closed_after(&mut idle).await;
    let closed = closed.expect("a connection that sends no request must be closed");
    assert!(closed >= Duration::from_millis(350), "not before the idle timeout: {closed:?}");
}

#[tokio::test]
async fn a_connection_that_sent_a_request_outlives_the_idle_timeout() {
    let server = InstrumentedServer::new(ServerRecorder::new("a"))
        .handshake_timeout(Some(Duration::from_millis(200)))
        .idle_timeout(Some(Duration::from_millis(200)));
    let addr = start(server).await;
    let mut client = EchoClient::connect(format!("http://{addr}")).await.unwrap();
    let first = client.echo(EchoRequest::default()).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = client.echo(EchoRequest::default()).await;
    let second = second.expect("a connection in use must not be closed as idle").into_inner();
    assert_eq!(first.connection, second.connection, "both RPCs must share one connection");
}

/// Tests of the `anchorage serve` binary, which exists with the `cli` feature.
#[cfg(feature = "cli")]
mod serve_command {
    use std::process::Command;

    fn serve(args: &[&str]) -> (Option<i32>, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .arg("serve")
            .args(args)
            .output()
            .expect("run anchorage serve");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Regression: `serve --for 1e300` was taken as is; duration flags had no bound.
    #[test]
    fn serve_rejects_duration_flags_outside_one_millisecond_to_one_day_naming_the_flag() {
        for flag in ["--for", "--handshake-timeout", "--idle-timeout"] {
            for bad in ["0", "1e300", "86401", "2000m"] {
                let (code, stderr) = serve(&[flag, bad]);
                assert_eq!(code, Some(2), "{flag} {bad} must be a usage error: {stderr}");
                assert!(
                    stderr.contains(flag) && stderr.contains("86400s"),
                    "the error must name {flag} and its range: {stderr}"
                );
            }
        }
        let (code, stderr) = serve(&["--ttl", "86401"]);
        assert_eq!(code, Some(2), "--ttl over a day must be a usage error: {stderr}");
        assert!(stderr.contains("--ttl") && stderr.contains("1..=86400"), "{stderr}");
    }
}
