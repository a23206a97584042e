//! Shrinking a failing run: a real scenario from `sims/` with one injected failure shrinks to a
//! smaller scenario that fails the same property with the same seed, writes to a file that
//! loads back, and drops the faults and servers the failure does not need.
#![cfg(feature = "cli")]

use std::time::Instant;

use anchorage::sim::shrink::{self, ShrinkError, ShrinkStep, Shrunk};
use anchorage::sim::{self, RunReport, scenario::Scenario};

const SEED: u64 = 0;

/// `crash_restart_weighted.toml` with `max_failed = 0`: the crash of a at 1.5 s loses the RPCs
/// in flight on a's connections, so the run fails `max_failed`. So would a's restart alone (a
/// restart of a running host is a bounce, which loses them too); one of the two is enough, and
/// server b has nothing to do with it.
fn crash_loses_rpcs() -> Scenario {
    let mut scenario = Scenario::load("sims/crash_restart_weighted.toml").unwrap();
    scenario.expect.max_failed = Some(0);
    scenario
}

fn failed(report: &RunReport, property: &str) -> bool {
    report.properties.iter().any(|p| p.name == property && p.failed())
}

fn shrink_counting(scenario: &Scenario, property: &str) -> (Result<Shrunk, ShrinkError>, usize) {
    let mut runs = 0;
    let mut run = |s: &Scenario, seed: u64| {
        runs += 1;
        sim::run(s, seed)
    };
    let mut progress = |step: &ShrinkStep| eprintln!("{step}");
    let result = shrink::shrink(scenario, SEED, property, &mut run, &mut progress);
    (result, runs)
}

#[test]
fn a_failure_caused_by_one_crash_shrinks_to_that_crash_on_one_server() {
    let original = crash_loses_rpcs();
    let started = Instant::now();
    let (result, runs) = shrink_counting(&original, "max_failed");
    let shrunk = result.expect("the original run fails max_failed, so it shrinks");
    eprintln!(
        "shrink took {:.1} s of wall time, {} runs ({} kept): {} -> {}",
        started.elapsed().as_secs_f64(),
        shrunk.runs,
        shrunk.kept,
        shrunk.before,
        shrunk.after
    );
    assert_eq!(shrunk.runs, runs, "Shrunk.runs must count every simulation run");
    assert!(shrunk.runs <= shrink::MAX_RUNS, "a shrink must stay within its run budget");

    let (before, after) = (shrunk.before, shrunk.after);
    assert!(
        after.faults < before.faults
            && after.servers < before.servers
            && after.rpcs < before.rpcs
            && after.sim_ms < before.sim_ms,
        "the shrunk scenario must be strictly smaller: {before} -> {after}"
    );
    let faults: Vec<String> = shrunk.scenario.faults.iter().map(|f| f.describe()).collect();
    assert!(
        faults == ["crash a"] || faults == ["restart a"],
        "one fault that takes a down is all the failure needs, got {faults:?}"
    );
    let servers: Vec<String> = shrunk.scenario.server_list().into_iter().map(|s| s.name).collect();
    assert_eq!(servers, ["a"], "server b plays no part in the failure");
    assert!(
        !shrunk.scenario.client.target.contains("b:9090"),
        "a removed server's address must leave the target: {}",
        shrunk.scenario.client.target
    );
    let weights = shrunk.scenario.expect.weights.as_ref().expect("weights stay, trimmed");
    assert!(
        weights.keys().eq(["a"]),
        "[expect] must keep its keys, without the removed server: {weights:?}"
    );

    let text = shrunk.scenario.to_toml(&shrunk.comment("sims/crash_restart_weighted.toml"));
    eprintln!("{text}");
    let loaded = Scenario::parse("shrunk.toml", &text)
        .unwrap_or_else(|e| panic!("the shrunk file must load and validate: {e}\n{text}"));
    let replay = sim::run(&loaded, SEED);
    assert!(
        failed(&replay, "max_failed"),
        "the shrunk file must fail the same property with the same seed:\n{text}\n{}",
        replay.table()
    );
    assert!(text.starts_with("# Fails `max_failed` with seed 0"), "{text}");
}

#[test]
fn a_shrink_of_a_run_that_does_not_fail_the_property_is_refused_after_one_run() {
    let passing = Scenario::load("sims/crash_restart_weighted.toml").unwrap();
    let (result, runs) = shrink_counting(&passing, "lost_per_fault");
    let error = result.expect_err("a run that holds lost_per_fault has nothing to shrink");
    assert!(matches!(error, ShrinkError::NotFailing { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("shrink: scenario crash_restart_weighted seed 0")
            && message.contains("\"lost_per_fault\" does not fail"),
        "the error must name the scenario, the seed and the property: {message}"
    );
    assert_eq!(runs, 1, "refusing must cost one run, not a loop");
}

/// `anchorage sim --save DIR` shrinks each failing run and writes a scenario file that fails
/// the same property with the same seed, and says so on stderr.
#[test]
fn sim_save_writes_a_smaller_scenario_that_fails_the_same_way() {
    let text = std::fs::read_to_string("sims/weighted_round_robin.toml").unwrap();
    let broken = text.replace("connections = { a = 2, b = 1 }", "connections = { a = 3, b = 1 }");
    assert_ne!(text, broken, "the scenario must state its connection counts");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("save_test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("broken.toml");
    std::fs::write(&input, broken).unwrap();
    let saved = dir.join("saved");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["sim", input.to_str().unwrap(), "--seed", "2", "--save", saved.to_str().unwrap()])
        .output()
        .expect("the anchorage binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a failing run must still fail the command");
    assert!(stderr.contains("shrink step 1"), "the shrink must print its progress: {stderr}");
    let file = saved.join("broken-seed2.toml");
    let written =
        std::fs::read_to_string(&file).expect("--save must write <scenario>-seed<S>.toml");
    assert!(written.starts_with("# Fails `connections` with seed 2"), "{written}");
    let shrunk = Scenario::load(&file).expect("the written file must load");
    let original = Scenario::load(&input).unwrap();
    assert!(shrunk.workload.rpcs < original.workload.rpcs, "the shrink must make it smaller");
    assert!(failed(&sim::run(&shrunk, 2), "connections"), "the file must fail the same way");
}

/// Regression: a shrink of a pick_first that never fails over dropped the crash, because
/// `failover` with no crash to judge fails too ("no crash ... cuts a server off"), and handed
/// over a file with no fault that showed nothing. A candidate that fails only for want of the
/// property's premise is no smaller example of the failure, and is not kept.
#[test]
fn a_shrink_keeps_the_fault_the_failing_property_judges() {
    let scenario = Scenario::load("sims/pick_first_failover.toml").unwrap();
    let options = sim::RunOptions {
        mutant: Some(sim::Mutant::PickFirstNeverFailsOver),
        ..Default::default()
    };
    let mut run = |s: &Scenario, seed: u64| sim::run_with(s, seed, &options);
    let mut progress = |step: &ShrinkStep| eprintln!("{step}");
    let shrunk = shrink::shrink(&scenario, SEED, "failover", &mut run, &mut progress)
        .expect("the mutant fails failover");
    let failover = shrunk.report.properties.iter().find(|p| p.name == "failover").unwrap();
    assert!(failover.failed() && !failover.premise_missing, "{}", failover.measured);
    assert!(
        shrunk.scenario.faults.iter().any(|f| f.is_disruption()),
        "the shrunk scenario must keep a fault that cuts a server off: {:?}",
        shrunk.scenario.faults
    );
}

/// Regression: `sim --save` with a mutant shrank pick_first_failover down to one RPC and no
/// fault, a file that fails `connections` on the channel without the mutant too, so it showed
/// no defect at all. With a mutant, the saved scenario must still pass without it and fail
/// with it.
#[test]
fn sim_save_with_a_mutant_writes_a_scenario_the_unmutated_channel_passes() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("save_mutant_test");
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["sim", "sims/pick_first_failover.toml", "--seed", "0"])
        .args(["--mutant", "pick_first_never_fails_over", "--save", dir.to_str().unwrap()])
        .output()
        .expect("the anchorage binary runs");
    assert!(!output.status.success(), "the mutant must fail the run");
    let file = dir.join("pick_first_failover-seed0.toml");
    let shrunk = Scenario::load(&file).expect("--save must write a scenario that loads");
    let plain = sim::run(&shrunk, 0);
    assert!(plain.passed, "the unmutated channel must pass the saved file:\n{}", plain.table());
    let options = sim::RunOptions {
        mutant: Some(sim::Mutant::PickFirstNeverFailsOver),
        ..Default::default()
    };
    assert!(!sim::run_with(&shrunk, 0, &options).passed, "the mutant must still fail it");
}
