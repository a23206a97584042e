//! `anchorage serve` and `anchorage probe` over TLS as processes, with certificates made at run
//! time and written to a temporary directory: server-only TLS, mTLS, a server-name override, and
//! flag errors that name the file or flag.
#![cfg(feature = "cli")]

mod pki;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use pki::{Ca, TempDir};
use serde_json::Value;

const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A running `anchorage serve`; killed on drop.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    /// Starts `anchorage serve ARGS` on a free loopback port and reads its `listening on` line.
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(["serve", "--for", "60s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn anchorage serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
            panic!("serve must print its address first, got {line:?}");
        });
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Self { child, port }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `anchorage probe ARGS`; returns (exit code, stdout, stderr).
fn probe(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run anchorage probe");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// PEM files for a CA, a server certificate for `names` and a client certificate.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(names: &[&str]) -> Self {
        let ca = Ca::new("test CA");
        let dir = TempDir::new("cli-tls");
        dir.write("ca.pem", &ca.cert_pem());
        let server = ca.server(names);
        dir.write("server.pem", &server.cert_pem);
        dir.write("server.key", &server.key_pem);
        let client = ca.client("probe");
        dir.write("client.pem", &client.cert_pem);
        dir.write("client.key", &client.key_pem);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn probe_over_tls_reaches_serve_with_two_connections_for_hash_two() {
    let files = Files::new(&["localhost"]);
    let server = Serve::start(&[
        "--tls-cert",
        &files.path("server.pem"),
        "--tls-key",
        &files.path("server.key"),
    ]);
    let target = format!("pass:///localhost:{}#2", server.port);
    let (code, stdout, stderr) = probe(&[
        &target,
        "--service-config",
        ROUND_ROBIN,
        "--rpcs",
        "20",
        "--ca",
        &files.path("ca.pem"),
        "--json",
    ]);
    assert_eq!(code, 0, "probe over TLS must succeed: {stdout} {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["ok"], 20);
    assert_eq!(report["servers"][0]["connections_accepted"], 2, "#2 must open two TLS connections");
}

#[test]
fn probe_without_the_ca_fails_saying_unknown_ca() {
    let files = Files::new(&["localhost"]);
    let server = Serve::start(&[
        "--tls-cert",
        &files.path("server.pem"),
        "--tls-key",
        &files.path("server.key"),
    ]);
    let target = format!("pass:///localhost:{}", server.port);
    // Without --ca, --tls trusts the webpki roots, which do not hold the test CA.
    let (code, stdout, _) = probe(&[&target, "--rpcs", "3", "--tls"]);
    assert_eq!(code, 1, "every RPC must fail: {stdout}");
    assert!(stdout.contains("UNAVAILABLE: 3"), "all 3 RPCs must be UNAVAILABLE: {stdout}");
    assert!(stdout.contains("unknown CA"), "the report must say why: {stdout}");
}

#[test]
fn mtls_serve_refuses_a_probe_without_a_certificate_and_accepts_one_with_it() {
    let files = Files::new(&["localhost"]);
    let server = Serve::start(&[
        "--tls-cert",
        &files.path("server.pem"),
        "--tls-key",
        &files.path("server.key"),
        "--client-ca",
        &files.path("ca.pem"),
    ]);
    let target = format!("pass:///localhost:{}", server.port);
    let ca = files.path("ca.pem");
    let (code, stdout, _) = probe(&[&target, "--rpcs", "2", "--ca", &ca]);
    assert_eq!(code, 1, "a probe without a client certificate must fail: {stdout}");
    assert!(stdout.contains("certificate required"), "the report must say why: {stdout}");

    let (cert, key) = (files.path("client.pem"), files.path("client.key"));
    let (code, stdout, stderr) =
        probe(&[&target, "--rpcs", "2", "--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(code, 0, "a probe with a client certificate must succeed: {stdout} {stderr}");
}

#[test]
fn probe_verifies_the_server_name_given() {
    let files = Files::new(&["echo.example.test"]);
    let server = Serve::start(&[
        "--tls-cert",
        &files.path("server.pem"),
        "--tls-key",
        &files.path("server.key"),
    ]);
    let target = format!("pass:///127.0.0.1:{}", server.port);
    let ca = files.path("ca.pem");
    let (code, stdout, _) = probe(&[&target, "--rpcs", "1", "--ca", &ca]);
    assert_eq!(code, 1);
    assert!(stdout.contains("name mismatch"), "the report must say why: {stdout}");
    let (code, stdout, stderr) =
        probe(&[&target, "--rpcs", "1", "--ca", &ca, "--server-name", "echo.example.test"]);
    assert_eq!(code, 0, "--server-name must be the name verified: {stdout} {stderr}");
}

#[test]
fn tls_flags_with_missing_files_or_halves_are_errors_naming_them() {
    let dir = TempDir::new("cli-tls-errors");
    let missing = dir.path().join("missing-ca.pem");
    let (code, _, stderr) = probe(&["pass:///localhost:1", "--ca", path_str(&missing)]);
    assert_eq!(code, 2, "a missing --ca file is a usage error: {stderr}");
    assert!(stderr.contains("--ca") && stderr.contains("missing-ca.pem"), "{stderr}");

    let (code, _, stderr) = probe(&["pass:///localhost:1", "--cert", "c.pem"]);
    assert_eq!(code, 2, "--cert without --key must be refused: {stderr}");
    assert!(stderr.contains("--key"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["serve", "--tls-cert", path_str(&missing)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--tls-cert without --tls-key must be refused");
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["serve", "--tls-cert", path_str(&missing), "--tls-key", path_str(&missing)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "an unreadable certificate is a usage error: {stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(out.stdout.is_empty(), "serve must not say it listens when its TLS files are bad");
}

#[test]
fn audit_serve_over_tls_judges_a_tls_client_and_logs_its_handshakes() {
    let files = Files::new(&["localhost"]);
    let mut audit = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["audit-serve", "--servers", "a=127.0.0.1:0", "--expect", "a=2", "--for", "3s"])
        .args(["--tls-cert", &files.path("server.pem"), "--tls-key", &files.path("server.key")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn anchorage audit-serve");
    let mut stdout = BufReader::new(audit.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening a=").expect("the listening line comes first");
    let port = addr.rsplit(':').next().unwrap();
    let target = format!("pass:///localhost:{port}#2");
    let ca = files.path("ca.pem");
    let (code, out, err) =
        probe(&[&target, "--service-config", ROUND_ROBIN, "--rpcs", "10", "--ca", &ca]);
    assert_eq!(code, 0, "the TLS client must be served: {out} {err}");
    let status = audit.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "a client that opened the 2 expected connections passes: {rest}");
    assert!(
        rest.contains("server a: 2 connection(s), 2 TLS handshake(s) completed, 0 failed"),
        "the handshake log must count TLS handshakes: {rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_registers_in_an_https_etcd_trusting_the_etcd_ca() {
    use anchorage::etcd::memory::MemoryEtcd;
    use anchorage::server::TlsListener;
    use anchorage::tls::ServerTlsConfig;

    let files = Files::new(&["localhost"]);
    let cert = std::fs::read(files.path("server.pem")).unwrap();
    let key = std::fs::read(files.path("server.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = TlsListener::new(listener, &ServerTlsConfig::from_pem(&cert, &key).unwrap());
    let etcd = MemoryEtcd::new();
    tokio::spawn(etcd.clone().serve(listener.unwrap(), std::future::pending()));

    let endpoints = format!("https://localhost:{port}");
    let ca = files.path("ca.pem");
    let args = ["--register", "--service", "svc", "--etcd", &endpoints, "--etcd-ca", &ca];
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let server = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Serve::start(&args)
    })
    .await
    .unwrap();
    let key = format!("svc/127.0.0.1:{}", server.port);
    let keys: Vec<String> = etcd.get_prefix("svc/").into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [key], "serve must register its address in etcd over TLS");
}

#[test]
fn register_with_an_unreadable_etcd_ca_is_a_usage_error_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["register", "--service", "s", "--addr", "a:1", "--etcd-ca", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--etcd-ca") && stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}
