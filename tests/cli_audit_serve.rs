//! `anchorage audit-serve` judged by our own `probe` over loopback: a client that opens the
//! expected connections passes, one that does not fails with the numbers.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_anchorage");
const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// Runs audit-serve with `expect`, probes it with `service_config`, stops it with SIGTERM, and
/// returns (exit code, output after the listening lines).
fn audit_with_probe(expect: &str, service_config: Option<&str>) -> (i32, String) {
    let mut audit = Command::new(BIN)
        .args(["audit-serve", "--servers", "a=127.0.0.1:0,b=127.0.0.1:0", "--expect", expect])
        .args(["--for", "60s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start audit-serve");
    let mut stdout = BufReader::new(audit.stdout.take().unwrap());
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let (_, addr) = line.trim().strip_prefix("listening ").unwrap().split_once('=').unwrap();
        addrs.push(addr.to_owned());
    }
    let target = format!("pass:///{}#2,{}#1", addrs[0], addrs[1]);
    let mut probe = Command::new(BIN);
    probe.args(["probe", &target, "--rpcs", "90"]);
    if let Some(config) = service_config {
        probe.args(["--service-config", config]);
    }
    let probed = probe.output().expect("run probe");
    assert!(probed.status.success(), "probe: {}", String::from_utf8_lossy(&probed.stderr));
    let killed = Command::new("kill").args(["-TERM", &audit.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let code = audit.wait().unwrap().code().unwrap_or(-1);
    (code, rest)
}

#[test]
fn a_client_that_opens_the_expected_connections_passes() {
    let (code, output) = audit_with_probe("a=2,b=1", Some(ROUND_ROBIN));
    assert_eq!(code, 0, "a matching client must pass:\n{output}");
    assert!(
        output.contains("server a: 2 connection(s)"),
        "the handshake log must list a's connections:\n{output}"
    );
    assert!(
        output.contains("/anchorage.echo.v1.Echo/Echo ×30"),
        "per-connection RPC counts:\n{output}"
    );
    assert!(output.trim_end().ends_with("verdict: PASS"), "{output}");
}

#[test]
fn a_client_that_does_not_open_the_expected_connections_fails_with_the_numbers() {
    // Without a service config the probe uses pick_first: one connection, to a.
    let (code, output) = audit_with_probe("a=2,b=1", None);
    assert_eq!(code, 1, "a mismatching client must fail:\n{output}");
    assert!(output.contains("accepted 1 connection(s), expected 2"), "{output}");
    assert!(output.contains("accepted 0 connection(s), expected 1"), "{output}");
    assert!(output.trim_end().ends_with("verdict: FAIL"), "{output}");
}

#[test]
fn an_expectation_for_an_unknown_server_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["audit-serve", "--servers", "a=127.0.0.1:0", "--expect", "z=1", "--for", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"--expect names "z""#));
}
