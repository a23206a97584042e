//! Swarm runs: generated scenarios are valid, a function of their seed, switch fault kinds on
//! and off across seeds, and pass on the real channel; the CLI's `--shard` splits a seed range.
#![cfg(feature = "cli")]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use anchorage::sim::scenario::Action;
use anchorage::sim::swarm;

/// Seeds run through the simulation by `cargo test`.
const RUN_SEEDS: std::ops::Range<u64> = 0..64;

/// Seeds only generated (and validated).
const GENERATED_SEEDS: std::ops::Range<u64> = 0..1000;

#[test]
fn a_swarm_of_64_seeds_passes_on_the_real_channel() {
    let started = Instant::now();
    let failures: Vec<String> = RUN_SEEDS
        .map(swarm::run)
        .filter(|r| !r.passed)
        .map(|r| format!("{}\n{}", r.failure_line(), r.table()))
        .collect();
    eprintln!(
        "swarm: {} seeds in {:.1} s of wall time",
        RUN_SEEDS.end - RUN_SEEDS.start,
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "every swarm seed must pass:\n{}", failures.join("\n"));
}

#[test]
fn generated_scenarios_pass_validation_over_a_thousand_seeds() {
    for seed in GENERATED_SEEDS {
        let scenario = swarm::generate(seed);
        if let Err(error) = scenario.check() {
            panic!("swarm seed {seed} must generate a valid scenario: {error}\n{scenario:#?}");
        }
    }
}

#[test]
fn generation_is_a_function_of_the_seed_and_different_seeds_differ() {
    let text = |seed| format!("{:?}", swarm::generate(seed));
    for seed in 0..32 {
        assert_eq!(text(seed), text(seed), "seed {seed} must generate the same scenario twice");
    }
    let distinct: BTreeSet<String> =
        (0..32).map(|seed| text(seed).replace(&format!("swarm-{seed}"), "")).collect();
    assert_eq!(distinct.len(), 32, "32 seeds must generate 32 different scenarios");
    assert_eq!(swarm::generate(42).name(), "swarm-42", "a swarm scenario is named by its seed");
}

#[test]
fn every_fault_kind_appears_in_some_seeds_and_is_switched_off_in_others() {
    let all = [
        Action::Crash,
        Action::Restart,
        Action::Bounce,
        Action::Partition,
        Action::Repair,
        Action::Hold,
        Action::Release,
        Action::Latency,
        Action::Resolve,
        Action::Register,
        Action::Deregister,
        Action::ExpireLease,
        Action::Compact,
        Action::SlowBody,
        Action::GoAway,
        Action::Unhealthy,
        Action::Healthy,
    ];
    // A new fault kind makes this match fail to compile: a reminder to add it to the list.
    for action in all {
        match action {
            Action::Crash
            | Action::Restart
            | Action::Bounce
            | Action::Partition
            | Action::Repair
            | Action::Hold
            | Action::Release
            | Action::Latency
            | Action::Resolve
            | Action::Register
            | Action::Deregister
            | Action::ExpireLease
            | Action::Compact
            | Action::SlowBody
            | Action::GoAway
            | Action::Unhealthy
            | Action::Healthy => {}
        }
    }
    let mut present = BTreeSet::new();
    let mut absent = BTreeSet::new();
    for seed in 0..400 {
        let generated = swarm::generate_with_plan(seed);
        let random: Vec<Action> = generated
            .scenario
            .faults
            .iter()
            .filter(|f| f.at_ms < generated.heal_ms)
            .map(|f| f.action)
            .collect();
        for action in all {
            let name = format!("{action:?}");
            if random.contains(&action) {
                assert!(
                    generated.kinds.contains(&action),
                    "seed {seed}: {name} must only be drawn when switched on"
                );
                present.insert(name);
            } else if !generated.kinds.contains(&action) {
                absent.insert(name);
            }
        }
    }
    for action in all {
        let name = format!("{action:?}");
        assert!(present.contains(&name), "{name} must appear in some seed's random faults");
        assert!(absent.contains(&name), "{name} must be switched off in some seed");
    }
}

/// The seeds one `--shard K/N` run of `--seeds 0..8` reports, from its JSON lines.
fn shard_seeds(shard: &str) -> BTreeSet<u64> {
    let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["sim", "--swarm", "--seeds", "0..8", "--shard", shard, "--json", "--jobs", "1"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "shard {shard} must run: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| value.get("seed").and_then(serde_json::Value::as_u64))
        .collect()
}

#[test]
fn shards_split_a_seed_range_into_disjoint_sets_that_cover_it() {
    let shards: Vec<BTreeSet<u64>> = (0..3).map(|k| shard_seeds(&format!("{k}/3"))).collect();
    let mut union = BTreeSet::new();
    for (k, seeds) in shards.iter().enumerate() {
        let want: BTreeSet<u64> = (0..8).filter(|s| s % 3 == k as u64).collect();
        assert_eq!(*seeds, want, "shard {k}/3 must run every third seed from {k}");
        union.extend(seeds.iter().copied());
    }
    assert_eq!(union, (0..8).collect(), "the shards together must cover 0..8");
}

#[test]
fn a_shard_index_not_below_the_shard_count_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["sim", "--swarm", "--seeds", "0..8", "--shard", "3/2"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "--shard 3/2 must be refused");
    assert!(stderr.contains("--shard") && stderr.contains("3/2"), "the error names it: {stderr}");
}
