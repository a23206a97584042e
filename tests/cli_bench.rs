//! `anchorage bench` as a user runs it: the built binary with a tiny configuration, its JSON on
//! stdout and its exit code. The numbers themselves are noise on a shared machine; what is
//! checked is the shape, the baselines, the arithmetic of the ratios and, through the
//! connection-counting server, that each variant really opened the connections it claims.
#![cfg(feature = "cli")]

use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn anchorage_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the anchorage binary must start")
}

/// The variants, their baselines and the connections the server must see for each.
const EXPECTED: [(&str, &str, u64); 6] = [
    ("tonic-1", "tonic-1", 1),
    ("anchorage-pf-1", "tonic-1", 1),
    ("tonic-p2c-4", "tonic-p2c-4", 4),
    ("tonic-pool-4", "tonic-p2c-4", 4),
    ("anchorage-rr-4", "tonic-p2c-4", 4),
    ("anchorage-rr-64", "tonic-p2c-4", 64),
];

/// What one tiny run printed: its JSON report, whether it exited 0, and its stderr.
struct TinyRun {
    report: Value,
    success: bool,
    stderr: String,
}

/// One tiny run, shared by the tests that read its report (a run takes a few seconds).
fn tiny_run() -> &'static TinyRun {
    static RUN: OnceLock<TinyRun> = OnceLock::new();
    RUN.get_or_init(run_tiny)
}

fn run_tiny() -> TinyRun {
    let out = anchorage_bench(&[
        "--callers",
        "2",
        "--duration",
        "200ms",
        "--rounds",
        "1",
        "--memory-connections",
        "8",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The report is printed even when a run failed, so the assertions below can say what broke.
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("--json must print exactly one JSON object ({e}); stderr: {stderr}")
    });
    TinyRun { report, success: out.status.success(), stderr }
}

#[test]
fn a_tiny_bench_reports_every_variant_against_its_baseline_with_the_connections_it_opened() {
    let run = tiny_run();
    let report = &run.report;

    let loadavg = report["loadavg"].as_array().expect("loadavg must be a list");
    assert_eq!(loadavg.len(), 2, "loadavg must hold the start and the end");
    assert!(loadavg.iter().all(Value::is_number), "each load average must be a number");
    assert_eq!(report["server"], "separate process", "the output must say where the server runs");
    let allocator = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" };
    assert_eq!(report["allocator"], allocator, "the output must name the allocator it ran with");
    assert_eq!(report["callers"], serde_json::json!([2]), "callers must echo --callers");
    let variants = report["variants"].as_array().expect("variants must be a list");
    assert_eq!(variants.len(), EXPECTED.len(), "one entry per variant per caller count");
    let qps = |name: &str| {
        variants.iter().find(|v| v["name"] == name).and_then(|v| v["qps_median"].as_f64())
    };
    for (name, baseline, connections) in EXPECTED {
        let entry = variants
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variant {name} must be reported"));
        assert_eq!(entry["callers"], 2, "{name}: each entry must name its caller count");
        assert_eq!(entry["baseline"], baseline, "{name} must be compared with {baseline}");
        assert_eq!(
            entry["server_connections"], connections,
            "{name}: the server must see exactly {connections} connection(s) for it"
        );
        assert_eq!(entry["errors"], 0, "{name}: no RPC may fail against a local server");
        let own = qps(name).unwrap_or_else(|| panic!("{name}: qps_median must be a number"));
        let base = qps(baseline).expect("the baseline's qps_median must be a number");
        assert!(own > 0.0, "{name}: some RPCs must complete in 200ms");
        let ratio = entry["ratio"].as_f64().expect("ratio must be a number");
        assert!(
            (ratio - own / base).abs() < 1e-9,
            "{name}: ratio must be its median QPS over {baseline}'s ({own} / {base}), got {ratio}"
        );
        let (p50, p99) = (entry["p50_us"].as_f64(), entry["p99_us"].as_f64());
        let (p50, p99) = (p50.expect("p50_us"), p99.expect("p99_us"));
        assert!(0.0 < p50 && p50 <= p99, "{name}: latencies must satisfy 0 < p50 <= p99");
    }
    assert!(run.success, "a bench without errors must exit 0; stderr: {}", run.stderr);
}

#[test]
fn a_tiny_bench_measures_memory_per_connection_for_both_stacks() {
    let report = &tiny_run().report;

    let memory = &report["memory"];
    assert_eq!(memory["connections"], 8, "memory must use --memory-connections");
    for stack in ["anchorage", "tonic"] {
        let entry = &memory[stack];
        assert_eq!(
            entry["server_connections"], 8,
            "{stack}: every connection must be up before memory is read"
        );
        let per = entry["kib_per_connection"].as_f64();
        assert!(per.is_some_and(|k| k > 0.0), "{stack}: KiB per connection must be positive");
        assert!(
            entry["anon_kib_per_connection"].is_number(),
            "{stack}: the anonymous part of the RSS per connection must be reported"
        );
    }
    let list = &memory["tonic_balance_list_same_uri"];
    assert_eq!(list["endpoints"], 8, "balance_list must be given the URI 8 times");
    assert_eq!(
        list["server_connections"], 1,
        "tonic's balance_list must be shown collapsing one URI listed 8 times into 1 connection"
    );
}

#[test]
fn bad_callers_and_durations_fail_with_a_message_naming_the_flag() {
    for (flag, value) in [
        ("--callers", "0"),
        ("--callers", "8,x"),
        ("--callers", ""),
        ("--duration", "forever"),
        ("--duration", "0s"),
        ("--rounds", "0"),
    ] {
        let out = anchorage_bench(&[flag, value, "--no-memory"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value:?} must be rejected");
        assert!(stderr.contains(flag), "the error for {flag} {value:?} must name {flag}: {stderr}");
        assert!(!stderr.contains("panicked"), "bad input must never panic: {stderr}");
        assert!(out.stdout.is_empty(), "a rejected run must print nothing on stdout");
    }
}
