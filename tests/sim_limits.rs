//! The simulation at its limits: the most connections a target may ask for all open, and a
//! panic anywhere in a run is a failed run that carries the panic's message, never a pass.

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
