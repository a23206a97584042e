//! The simulation at its limits: the most connections a target may ask for all open, and a
//! panic anywhere in a run is a failed run that carries the panic's message, never a pass.
#![cfg(feature = "sim")]

use std::sync::Arc;

use anchorage::resolver::pass::PassBuilder;
use anchorage::resolver::{Resolver, ResolverBuilder, ResolverError, UpdateSink};
use anchorage::sim::{self, RunOptions, scenario::Scenario};
use anchorage::target::Target;

/// Regression: 86 or more connections to one simulated server panicked inside turmoil ("server
/// socket buffer full": its accept queue held 64 attempts) although `#N` allows 1024.
#[test]
fn a_target_asking_for_1024_connections_gets_exactly_1024() {
    let text = r#"
        [[server]]
        name = "a"
        port = 9080
        [client]
        target = "pass:///a:9080#1024"
        service_config = '{"loadBalancingConfig":[{"round_robin":{}}]}'
        [workload]
        rpcs = 4
        concurrency = 2
        deadline_ms = 5000
        [expect]
        connections = { a = 1024 }
        subchannels = 1024
    "#;
    let scenario = Scenario::parse("sims/many.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let report = sim::run(&scenario, 1);
    assert!(
        report.passed,
        "#1024 must open exactly 1024 connections and the run must pass:\n{}",
        report.table()
    );
    let accepted: u64 = report.servers.iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 1024, "the server must accept exactly 1024 connections");
}

/// A `pass` resolver that panics: in a task it spawns (which tokio catches and drops), or in
/// `build` itself (inside the client host's software).
#[derive(Debug)]
struct PanickingPass {
    in_spawned_task: bool,
}

impl ResolverBuilder for PanickingPass {
    fn scheme(&self) -> &str {
        "pass"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        if !self.in_spawned_task {
            panic!("resolver build exploded");
        }
        tokio::spawn(async { panic!("resolver task exploded") });
        PassBuilder.build(target, updates)
    }
}

fn run_with_panicking_resolver(in_spawned_task: bool) -> sim::RunReport {
    let text = r#"
        [[server]]
        name = "a"
        port = 9080
        [client]
        target = "pass:///a:9080"
        [workload]
        rpcs = 3
    "#;
    let scenario = Scenario::parse("sims/panic.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        resolver: Some(Arc::new(PanickingPass { in_spawned_task })),
        subject: Some("panicking".to_owned()),
        mutant: None,
        ..RunOptions::default()
    };
    sim::run_with(&scenario, 3, &options)
}

/// Regression: a task that panicked inside a simulation was dropped by tokio without a word,
/// and the run passed.
#[test]
fn a_panic_in_a_spawned_task_fails_the_run_with_the_panic_message() {
    let report = run_with_panicking_resolver(true);
    assert!(!report.passed, "a run in which a task panicked must fail");
    let line = report.failure_line();
    assert!(
        line.contains("no_panic") && line.contains("resolver task exploded"),
        "the failure must name the panic and its message: {line}"
    );
}

#[test]
fn a_panic_in_a_hosts_software_fails_the_run_with_the_panic_message() {
    let report = run_with_panicking_resolver(false);
    assert!(!report.passed, "a run whose client panicked must fail");
    let line = report.failure_line();
    assert!(
        line.contains("no_panic") && line.contains("resolver build exploded"),
        "the failure must name the panic and its message: {line}"
    );
}

/// One RPC as its trace line tells it: when it started and ended (ms), and its outcome (`OK`
/// or a status code).
#[derive(Debug)]
struct TracedRpc {
    start_ms: f64,
    end_ms: f64,
    outcome: String,
}

/// The RPCs in a rendered trace: `[   1.234567s] client   rpc 3 OK via … in 0.012s`.
fn traced_rpcs(trace: &str) -> Vec<TracedRpc> {
    let seconds = |text: &str| text.trim().trim_end_matches('s').parse::<f64>().ok();
    trace
        .lines()
        .filter_map(|line| {
            let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
            let rest = rest.trim_start().strip_prefix("client")?.trim_start();
            let words: Vec<&str> = rest.strip_prefix("rpc ")?.split_whitespace().collect();
            let took = words.iter().position(|w| *w == "in").and_then(|i| words.get(i + 1))?;
            let end_ms = seconds(stamp)? * 1000.0;
            let took_ms = seconds(took.trim_end_matches(':'))? * 1000.0;
            let outcome = (*words.get(1)?).to_owned();
            Some(TracedRpc { start_ms: end_ms - took_ms, end_ms, outcome })
        })
        .collect()
}

fn slow_body_scenario(faults: &str) -> Result<Scenario, String> {
    let text = format!(
        r#"
        [[server]]
        name = "a"
        port = 9080
        [client]
        target = "pass:///a:9080"
        [client.backoff]
        initial_ms = 50
        max_ms = 100
        [workload]
        rpcs = 200
        concurrency = 2
        deadline_ms = 150
        pacing_ms = 20
        {faults}
    "#
    );
    Scenario::parse("sims/slow_body.toml", &text).map_err(|e| e.to_string())
}

/// `slow_body` from its `at_ms` on makes the server stall after the headers; the deadline
/// covers the body, so RPCs fail with DEADLINE_EXCEEDED, also on the server's next boot (the
/// delay outlives a restart); `delay_ms = 0` makes them succeed again.
#[test]
fn a_slow_body_fault_makes_rpcs_miss_their_deadline_until_a_zero_delay_heals_it() {
    let scenario = slow_body_scenario(
        r#"
        [[fault]]
        at_ms = 400
        action = "slow_body"
        server = "a"
        delay_ms = 400
        [[fault]]
        at_ms = 800
        action = "bounce"
        host = "a"
        [[fault]]
        at_ms = 1600
        action = "slow_body"
        server = "a"
        delay_ms = 0
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = sim::run(&scenario, 1);
    assert!(report.passed, "the run must pass its checks:\n{}", report.table());
    let rpcs = traced_rpcs(&report.trace);
    assert_eq!(rpcs.len(), 200, "every RPC must leave a trace line:\n{}", report.trace);
    let outcomes = |from: f64, to: f64| -> Vec<&str> {
        rpcs.iter()
            .filter(|r| r.start_ms >= from && r.start_ms < to)
            .map(|r| r.outcome.as_str())
            .collect()
    };
    let before: Vec<&str> =
        rpcs.iter().filter(|r| r.end_ms < 400.0).map(|r| r.outcome.as_str()).collect();
    assert!(
        !before.is_empty() && before.iter().all(|o| *o == "OK"),
        "RPCs that end before the slow_body fault must succeed: {before:?}"
    );
    let slow = outcomes(400.0, 700.0);
    assert!(
        !slow.is_empty() && slow.iter().all(|o| *o == "DEADLINE_EXCEEDED"),
        "RPCs that start once the body is 400 ms late must fail with DEADLINE_EXCEEDED: {slow:?}"
    );
    let rebooted = outcomes(1200.0, 1600.0);
    assert!(
        !rebooted.is_empty() && rebooted.iter().all(|o| *o == "DEADLINE_EXCEEDED"),
        "the restarted server must keep the delay the fault set: {rebooted:?}"
    );
    let healed = outcomes(1600.0, f64::MAX);
    assert!(
        !healed.is_empty() && healed.iter().all(|o| *o == "OK"),
        "RPCs that start after `delay_ms = 0` must succeed: {healed:?}"
    );
}

#[test]
fn slow_body_faults_are_validated_by_key() {
    let cases = [
        (
            r#"[[fault]]
            at_ms = 10
            action = "slow_body"
            server = "nobody"
            delay_ms = 100"#,
            "server",
            "nobody",
        ),
        (
            r#"[[fault]]
            at_ms = 10
            action = "slow_body"
            server = "a"
            delay_ms = 99999999"#,
            "delay_ms",
            "time_limit_ms",
        ),
        (
            r#"[[fault]]
            at_ms = 10
            action = "slow_body"
            server = "a""#,
            "delay_ms",
            "needs",
        ),
        (
            r#"[[fault]]
            at_ms = 10
            action = "crash"
            host = "a"
            delay_ms = 100"#,
            "delay_ms",
            "slow_body",
        ),
        (
            r#"[[fault]]
            at_ms = 10
            action = "slow_body"
            delay_ms = 100"#,
            "server",
            "needs",
        ),
    ];
    for (faults, key, detail) in cases {
        let error = slow_body_scenario(faults).expect_err(faults);
        assert!(
            error.contains(key) && error.contains(detail),
            "the error for {faults:?} must name `{key}` and say {detail:?}: {error}"
        );
    }
}
