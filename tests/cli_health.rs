//! `anchorage serve --health` and `anchorage health` against a real server process: the
//! initial status, a change through the admin RPC, and usage errors.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_anchorage");

/// A `serve` child that is killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `anchorage serve ARGS` and returns it with its bound address.
fn serve(args: &[&str]) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--for", "60s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start anchorage serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
    let addr = line.trim().strip_prefix("listening on ").expect("a listening line").to_owned();
    (server, addr)
}

fn health(args: &[&str]) -> Output {
    Command::new(BIN).arg("health").args(args).output().expect("run anchorage health")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn health_reads_the_initial_status_and_set_changes_it_on_the_running_server() {
    let (_server, addr) = serve(&["--health", "NOT_SERVING"]);
    let read = health(&[&addr]);
    assert!(read.status.success(), "health must succeed: {read:?}");
    assert_eq!(
        stdout(&read),
        format!("{addr} service \"\": NOT_SERVING"),
        "serve --health must set the initial status"
    );

    let set = health(&[&addr, "--set", "serving"]);
    assert!(set.status.success(), "health --set must succeed: {set:?}");
    assert_eq!(stdout(&set), format!("{addr} service \"\": SERVING (was NOT_SERVING)"));
    assert_eq!(
        stdout(&health(&[&addr])),
        format!("{addr} service \"\": SERVING"),
        "the change must be what the server now reports"
    );

    let named = health(&[&addr, "--set", "NOT_SERVING", "--service", "billing"]);
    assert_eq!(
        stdout(&named),
        format!("{addr} service \"billing\": NOT_SERVING (was SERVICE_UNKNOWN)")
    );
    assert_eq!(
        stdout(&health(&[&addr])),
        format!("{addr} service \"\": SERVING"),
        "--service must change only the named service"
    );
}

#[test]
fn health_rejects_an_unknown_status_naming_it_and_reports_an_unreachable_server() {
    let bad = health(&["127.0.0.1:1", "--set", "UP"]);
    assert_eq!(bad.status.code(), Some(2), "a bad status is a usage error");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("health status: \"UP\""), "the error must name the input: {stderr}");

    let unreachable = health(&["127.0.0.1:1"]);
    assert_eq!(unreachable.status.code(), Some(1), "an unreachable server is a failure");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.starts_with("health: cannot connect"), "the reason must be said: {stderr}");
}
