//! `anchorage sim --plot` draws what a run recorded: the same run gives a byte-identical SVG,
//! and the SVG names every server and every fault of the scenario.
#![cfg(feature = "sim")]

use anchorage::sim::{self, plot, scenario::Scenario};

fn load(name: &str) -> Scenario {
    Scenario::load(format!("sims/{name}.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_same_seed_gives_a_byte_identical_svg() {
    let scenario = load("crash_restart_weighted");
    let first = sim::run(&scenario, 0);
    let second = sim::run(&scenario, 0);
    assert!(first.passed, "{}", first.failure_line());
    assert_eq!(first.timeline, second.timeline, "a run's timeline must be a function of its seed");
    let svg = |r: &sim::RunReport| plot::svg(&r.timeline, "crash_restart_weighted seed 0");
    assert_eq!(svg(&first), svg(&second), "the same seed must give a byte-identical SVG");
}

#[test]
fn the_svg_names_every_server_and_fault_of_the_scenario() {
    let scenario = load("crash_restart_weighted");
    let report = sim::run(&scenario, 0);
    let svg = plot::svg(&report.timeline, "crash_restart_weighted seed 0").expect("it draws");
    for server in scenario.server_list() {
        let label = format!("server {}", server.name);
        assert!(svg.contains(&label), "the legend must name {label:?}");
    }
    assert!(!scenario.faults.is_empty(), "premise: the scenario has faults");
    for fault in &scenario.faults {
        let label = fault.describe();
        assert!(svg.contains(&label), "the plot must label the fault {label:?}");
    }
    for window in ["split window", "failover window", "recovery window", "liveness window"] {
        assert!(svg.contains(window), "the legend must name the {window} the checks judged");
    }
}

#[test]
fn the_timeline_holds_what_the_run_recorded() {
    let scenario = load("crash_restart_weighted");
    let report = sim::run(&scenario, 0);
    let timeline = &report.timeline;
    assert_eq!(timeline.end_ms, report.sim_time_ms, "the timeline ends with the run");
    assert_eq!(timeline.rpcs.len(), report.rpcs.sent as usize, "every RPC is on the timeline");
    let ok = timeline.rpcs.iter().filter(|r| r.server.is_some()).count();
    assert_eq!(ok, report.rpcs.ok as usize, "the timeline's successes are the report's");
    for (line, server) in timeline.servers.iter().zip(&report.servers) {
        assert_eq!(line.name, server.name, "servers in the report's order");
        assert_eq!(line.connections.len() as u64, server.accepted, "every accepted connection");
    }
    let faults: Vec<&str> = timeline.faults.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(faults, ["crash a", "restart a"], "every applied fault, in time order");
    assert_eq!(timeline.faults[0].at_ms, 1500, "a fault is marked when it took effect");
}
