//! Simulated-scenario properties of a subject: scenarios from `sims/` run on turmoil with the
//! subject's resolver in place of anchorage's, each judged by the scenario's own expectations.
//!
//! | property | scenario | what it shows |
//! |---|---|---|
//! | `sim-connections-per-n` | `weighted_round_robin` | `a#2,b#1` gives 2 and 1 connections and a 2:1 split |
//! | `sim-own-count` | `notes_example_without_count` | `a#2,b` gives b one connection, not two |
//! | `sim-pick-first-default` | `pick_first_default` | no service config means one connection |
//! | `sim-failover` | `crash_restart_weighted` | survivors take the traffic after a crash, weights return after the restart |
//! | `sim-liveness` | `partition_heal_keepalive` | a partition is survived and the split recovers after it heals |
//! | `sim-notes-client` | `original_notes_client` | the notes' own `pass:///:9080#2,:9090#1` client |
//!
//! A property passes when every seed's run passes; otherwise it carries the first failing
//! run's failed checks and the one command that replays it.

use std::ops::Range;
use std::path::Path;

use super::subjects::Subject;
use super::syntax::PropertyResult;
use crate::sim::scenario::Scenario;
use crate::sim::{RunOptions, run_with};

/// (property, scenario file stem), in matrix order.
pub const SIM_PROPERTIES: [(&str, &str); 6] = [
    ("sim-connections-per-n", "weighted_round_robin"),
    ("sim-own-count", "notes_example_without_count"),
    ("sim-pick-first-default", "pick_first_default"),
    ("sim-failover", "crash_restart_weighted"),
    ("sim-liveness", "partition_heal_keepalive"),
    ("sim-notes-client", "original_notes_client"),
];

/// The scenarios the simulated properties use, loaded from `dir`, in [`SIM_PROPERTIES`] order.
///
/// # Errors
/// A message naming the file that is missing or invalid.
pub fn load(dir: &Path) -> Result<Vec<Scenario>, String> {
    SIM_PROPERTIES
        .iter()
        .map(|(_, stem)| {
            let path = dir.join(format!("{stem}.toml"));
            Scenario::load(&path).map_err(|e| format!("audit: {e}"))
        })
        .collect()
}

/// Runs every scenario in `scenarios` (as [`load`] returns them) for each seed in `seeds`
/// with `subject`'s resolver.
pub fn check(subject: &Subject, scenarios: &[Scenario], seeds: Range<u64>) -> Vec<PropertyResult> {
    let options = RunOptions {
        resolver: Some(subject.builder.clone()),
        subject: Some(subject.name.clone()),
        mutant: None,
        client: crate::sim::ClientKind::Anchorage,
    };
    SIM_PROPERTIES
        .iter()
        .zip(scenarios)
        .map(|((property, _), scenario)| {
            let failed = seeds
                .clone()
                .map(|seed| run_with(scenario, seed, &options))
                .find(|report| !report.passed);
            let (pass, detail) = match failed {
                None => (true, format!("{} seeds", seeds.end - seeds.start)),
                Some(report) => (false, report.failure_line()),
            };
            PropertyResult { property: (*property).to_owned(), pass, detail }
        })
        .collect()
}
