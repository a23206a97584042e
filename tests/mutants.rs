//! The simulation's checks can fail: each deliberately broken channel ([`Mutant`]) is caught by
//! the checks named here, the unmutated channel passes the same runs, and the matrix of
//! mutants × checks is snapshotted. `anchorage mutants` runs every scenario; this suite runs the
//! scenarios that matter and stops each mutant at its first failing run, to stay fast.
#![cfg(feature = "cli")]

use std::process::Command;
use std::time::Instant;

use anchorage::sim::mutants::{self, Matrix, Mutant, Options};
use anchorage::sim::scenario::Scenario;

/// The scenarios run, in order (a mutant stops at the first run that catches it).
const SCENARIOS: &[&str] = &[
    "notes_example_without_count",
    "weighted_round_robin",
    "pick_first_failover",
    "pick_first_update_during_backoff",
    "pick_first_reorder_one_returns",
    "restart_storm",
    "hold_and_oneway_partition",
    "deadline_covers_slow_body",
];

/// Seeds run per scenario, after its regression seeds.
const SEEDS: std::ops::Range<u64> = 0..2;

/// Per mutant, the checks that must catch it (measured with `anchorage mutants`).
const KILLED_BY: &[(Mutant, &[&str])] = &[
    (Mutant::RoundRobinIgnoresCount, &["connections", "total_connections", "split"]),
    (Mutant::RoundRobinAlwaysFirst, &["split"]),
    (Mutant::PickFirstNeverFailsOver, &["failover", "liveness", "max_failed"]),
    (Mutant::PickFirstStallsAfterUpdateInBackoff, &["liveness", "final_state"]),
    (Mutant::CountCarriesOver, &["connections", "total_connections", "split"]),
    (Mutant::DedupByHostPortOnly, &["connections", "total_connections", "split"]),
    (Mutant::DropOneRpcPerCrash, &["lost_per_fault", "max_failed"]),
    (Mutant::DeadlineIgnoredAfterHeaders, &["deadlines", "all_fail_with"]),
];

fn runs() -> Vec<(Scenario, Vec<u64>)> {
    SCENARIOS
        .iter()
        .map(|name| {
            let scenario =
                Scenario::load(format!("sims/{name}.toml")).unwrap_or_else(|e| panic!("{e}"));
            let seeds = mutants::seeds_for(&scenario, SEEDS);
            (scenario, seeds)
        })
        .collect()
}

fn measured_matrix() -> Matrix {
    let started = Instant::now();
    let options = Options { jobs: 2, stop_when_killed: true };
    let matrix = mutants::matrix(&Mutant::ALL, &runs(), &options);
    let runs: u32 = std::iter::once(&matrix.baseline).chain(&matrix.rows).map(|r| r.runs).sum();
    eprintln!("mutant matrix: {runs} runs in {:.1} s", started.elapsed().as_secs_f64());
    matrix
}

#[test]
fn every_mutant_is_caught_by_its_checks_and_the_unmutated_channel_passes_the_same_runs() {
    let matrix = measured_matrix();
    assert_eq!(matrix.baseline_error(), None, "the unmutated channel must pass every run");
    for (mutant, checks) in KILLED_BY {
        let row = matrix.rows.iter().find(|r| r.mutant == Some(*mutant)).expect("a row per mutant");
        for check in *checks {
            assert!(
                row.failed.contains_key(*check),
                "{mutant} must be caught by {check}; caught by {:?}",
                row.killed_by()
            );
        }
        let replay = row.first_failure.as_deref().unwrap_or_default();
        assert!(
            replay.ends_with(&format!("--mutant {mutant}")),
            "a mutant's failure must print a replay command that sets the mutant: {replay}"
        );
    }
    assert_eq!(matrix.survivors(), [], "every mutant must be caught");
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("mutants_matrix", matrix.table());
    });
}

#[test]
fn anchorage_sim_replays_a_mutant_run_and_its_failure_line_names_the_mutant() {
    let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["sim", "sims/notes_example_without_count.toml", "--seed", "0"])
        .args(["--mutant", "count_carries_over"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a run that a mutant breaks must fail:\n{stdout}");
    assert!(
        stdout.contains("a=2 (want 2), b=2 (want 1)"),
        "the mutant must give b a's count:\n{stdout}"
    );
    assert!(
        stdout.contains("--seed 0 --mutant count_carries_over"),
        "the replay line must set the mutant:\n{stdout}"
    );
}

#[test]
fn an_unknown_mutant_name_is_refused_naming_the_known_ones() {
    let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["mutants", "--mutant", "nope"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("mutant \"nope\": unknown; known: round_robin_ignores_count"),
        "{stderr}"
    );
}
