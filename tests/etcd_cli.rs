//! `anchorage register` and `anchorage serve --register` as processes, against the in-memory
//! etcd (and a real etcd in the ignored live tests): the key is written while they run and
//! revoked when they get SIGTERM.
#![cfg(feature = "cli")]

mod etcd_cases;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anchorage::channel::Channel;
use anchorage::etcd::naming::encode_endpoint;
use anchorage::pb::echo_client::EchoClient;
use etcd_cases::*;
use serde_json::Value;
use support::{ROUND_ROBIN, echo};
use tokio::sync::mpsc;

/// A running `anchorage` process whose stdout lines arrive on a channel; killed on drop.
struct Process {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn anchorage");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    async fn next_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("anchorage must print its next line in time")
            .expect("anchorage must not close stdout before its next line")
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM must reach the process");
    }

    async fn exits_successfully(&mut self) {
        let exited = async {
            loop {
                if let Some(status) = self.child.try_wait().expect("wait for anchorage") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let status = tokio::time::timeout(WAIT, exited).await.expect("anchorage must exit in time");
        assert!(status.success(), "anchorage must exit 0 after SIGTERM: {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn register_holds_the_key_until_sigterm_then_revokes_it(etcd: Etcd) {
    let endpoint = format!("http://{}", etcd.endpoint());
    let args = ["register", "--etcd", &endpoint, "--service", "cli", "--addr", "127.0.0.1:7"];
    let mut process =
        Process::spawn(&[&args[..], &["--ttl", "5", "--metadata", r#"{"v":1}"#]].concat());
    let line = process.next_line().await;
    assert!(
        line.starts_with("registered cli/127.0.0.1:7 lease 0x") && line.ends_with(" ttl 5s"),
        "unexpected first line {line:?}"
    );
    let client = etcd.client();
    let kv = client.get("cli/127.0.0.1:7").await.unwrap().expect("the key is written");
    let metadata: Value = serde_json::json!({"v": 1});
    assert_eq!(kv.value, encode_endpoint("127.0.0.1:7", &metadata));

    process.terminate();
    assert_eq!(process.next_line().await, "deregistered cli/127.0.0.1:7");
    process.exits_successfully().await;
    assert_eq!(client.get("cli/127.0.0.1:7").await.unwrap(), None, "SIGTERM must revoke the key");
}

async fn a_registered_serve_is_discovered_and_leaves_etcd_on_sigterm(etcd: Etcd) {
    let endpoint = etcd.endpoint();
    let mut process = Process::spawn(&[
        "serve",
        "--name",
        "reg",
        "--for",
        "60",
        "--register",
        "--etcd",
        &endpoint,
        "--service",
        "cli-echo",
        "--ttl",
        "5",
    ]);
    let line = process.next_line().await;
    let addr =
        line.strip_prefix("listening on ").expect("the first line is the address").to_owned();
    let line = process.next_line().await;
    assert!(line.starts_with(&format!("registered cli-echo/{addr} lease ")), "got {line:?}");

    let target = format!("etcd://{endpoint}/cli-echo#2");
    let builder = Channel::builder(&target)
        .resolver(resolver_builder(&etcd))
        .default_service_config(ROUND_ROBIN)
        .unwrap();
    let (channel, mut discovered) = discovering(&target, builder);
    discovered.wait_for(&expanded(&[&addr], 2), WAIT, "the registered serve is discovered").await;
    let mut client = EchoClient::new(channel);
    assert_eq!(echo(&mut client).await.unwrap(), "reg");

    process.terminate();
    discovered.wait_for(&[], WAIT, "a stopping server must leave etcd first").await;
    let stats: Value = serde_json::from_str(&process.next_line().await).expect("stats JSON");
    assert_eq!(stats["server"], "reg");
    process.exits_successfully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_etcd_register_holds_the_key_until_sigterm_then_revokes_it() {
    register_holds_the_key_until_sigterm_then_revokes_it(Etcd::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_etcd_a_registered_serve_is_discovered_and_leaves_etcd_on_sigterm() {
    a_registered_serve_is_discovered_and_leaves_etcd_on_sigterm(Etcd::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: apt-get install etcd-server"]
async fn live_etcd_register_holds_the_key_until_sigterm_then_revokes_it() {
    register_holds_the_key_until_sigterm_then_revokes_it(Etcd::live().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: apt-get install etcd-server"]
async fn live_etcd_a_registered_serve_is_discovered_and_leaves_etcd_on_sigterm() {
    a_registered_serve_is_discovered_and_leaves_etcd_on_sigterm(Etcd::live().await).await;
}

#[test]
fn register_refuses_bad_arguments_with_status_2() {
    for (args, expected) in [
        (&["--etcd", "https://h:1,http://h:2", "--service", "s", "--addr", "a:1"][..], "https"),
        (&["--service", "s#2", "--addr", "a:1"][..], "\"#\" is not allowed"),
        (&["--service", "s", "--addr", "a:1", "--metadata", "{"][..], "--metadata is not JSON"),
        (&["--service", "s", "--addr", "a:1", "--ttl", "0"][..], "--ttl"),
        (&["--service", "s", "--addr", "a:1", "--ttl", "9999999999"][..], "1..=86400"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .arg("register")
            .args(args)
            .output()
            .expect("run anchorage register");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr:?}");
    }
}

/// Regression: `serve --register` printed `listening on ...` and only then failed to reach etcd,
/// so a supervisor reading stdout took a server that never registered for a ready one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_register_with_unreachable_etcd_fails_before_announcing_and_says_why() {
    let etcd = support::unused_addr().await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(["serve", "--for", "30", "--register", "--service", "s"])
            .args(["--etcd", &etcd.to_string()])
            .output()
            .expect("run anchorage serve")
    });
    let output = tokio::time::timeout(WAIT, output)
        .await
        .expect("serve must give up on an unreachable etcd in time")
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "registration failure must exit 1: {stderr}");
    assert!(
        !stdout.contains("listening on"),
        "a server that could not register must not announce it listens: {stdout:?}"
    );
    assert!(stderr.contains("--register"), "stderr must say registration failed: {stderr:?}");
}
