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
//!
//! Client subjects (anchorage's channel, tonic's clients: [`crate::sim::ClientKind`]) run with
//! the scenario's own resolver and are judged on [`CLIENT_PROPERTIES`], each a scenario and the
//! checks of it that the cell reads:
//!
//! | property | scenario | checks read |
//! |---|---|---|
//! | `connections-per-n` | `weighted_round_robin` | `a#2,b#1` gives 2 and 1 connections |
//! | `weighted-split` | `weighted_round_robin` | the RPCs split 2:1 |
//! | `crash-restart` | `crash_restart_weighted` | every check: failover, recovery, lost RPCs, liveness, deadlines |
//! | `partition-heal` | `partition_heal_keepalive` | every check |
//! | `all-down-back` | `all_down_then_back` | every check |
//! | `address-updates` | `resolver_updates` | every check (an address added, one removed) |
//! | `address-reorder` | `resolver_reorder` | every check (the same addresses reordered) |
//! | `endpoint-dies` | `endpoint_dies` | every check (a server gone for good) |
//! | `pick-first-default` | `pick_first_default` | the policy's shape: n/a for tonic's clients |
//!
//! A check that judges anchorage's internals is n/a for a tonic client; a cell whose checks
//! are all n/a is n/a, never a pass.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use super::subjects::Subject;
use super::syntax::PropertyResult;
use crate::sim::checks::Verdict;
use crate::sim::scenario::Scenario;
use crate::sim::{ClientKind, RunOptions, RunReport, run_with};

/// (property, scenario file stem), in matrix order.
pub const SIM_PROPERTIES: [(&str, &str); 6] = [
    ("sim-connections-per-n", "weighted_round_robin"),
    ("sim-own-count", "notes_example_without_count"),
    ("sim-pick-first-default", "pick_first_default"),
    ("sim-failover", "crash_restart_weighted"),
    ("sim-liveness", "partition_heal_keepalive"),
    ("sim-notes-client", "original_notes_client"),
];

/// (property, scenario file stem, the scenario's checks it reads; empty: all), in matrix
/// order: the simulated properties of client subjects.
pub const CLIENT_PROPERTIES: [(&str, &str, &[&str]); 9] = [
    ("connections-per-n", "weighted_round_robin", &["connections", "total_connections"]),
    ("weighted-split", "weighted_round_robin", &["split"]),
    ("crash-restart", "crash_restart_weighted", &[]),
    ("partition-heal", "partition_heal_keepalive", &[]),
    ("all-down-back", "all_down_then_back", &[]),
    ("address-updates", "resolver_updates", &[]),
    ("address-reorder", "resolver_reorder", &[]),
    ("endpoint-dies", "endpoint_dies", &[]),
    ("pick-first-default", "pick_first_default", &["policy"]),
];

/// The scenarios the simulated properties use ([`SIM_PROPERTIES`], then those only
/// [`CLIENT_PROPERTIES`] use), loaded from `dir`, each once.
///
/// # Errors
/// A message naming the file that is missing or invalid.
pub fn load(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut stems: Vec<&str> = SIM_PROPERTIES.iter().map(|(_, stem)| *stem).collect();
    for (_, stem, _) in CLIENT_PROPERTIES {
        if !stems.contains(&stem) {
            stems.push(stem);
        }
    }
    stems
        .into_iter()
        .map(|stem| {
            let path = dir.join(format!("{stem}.toml"));
            Scenario::load(&path).map_err(|e| format!("audit: {e}"))
        })
        .collect()
}

fn find<'a>(scenarios: &'a [Scenario], stem: &str) -> Option<&'a Scenario> {
    scenarios.iter().find(|s| s.name() == stem)
}

/// Runs every scenario in `scenarios` (as [`load`] returns them) for each seed in `seeds`
/// with `subject`'s resolver.
pub fn check(subject: &Subject, scenarios: &[Scenario], seeds: Range<u64>) -> Vec<PropertyResult> {
    let options = RunOptions {
        resolver: Some(subject.builder.clone()),
        subject: Some(subject.name.clone()),
        ..RunOptions::default()
    };
    SIM_PROPERTIES
        .iter()
        .map(|(property, stem)| {
            let Some(scenario) = find(scenarios, stem) else {
                return missing(property, stem);
            };
            let failed = seeds
                .clone()
                .map(|seed| run_with(scenario, seed, &options))
                .find(|report| !report.passed);
            let (pass, detail) = match failed {
                None => (true, format!("{} seeds", seeds.end - seeds.start)),
                Some(report) => (false, report.failure_line()),
            };
            PropertyResult { property: (*property).to_owned(), pass, not_applicable: false, detail }
        })
        .collect()
}

fn missing(property: &str, stem: &str) -> PropertyResult {
    PropertyResult {
        property: property.to_owned(),
        pass: false,
        not_applicable: false,
        detail: format!("audit: scenario {stem} was not loaded"),
    }
}

/// Runs every scenario [`CLIENT_PROPERTIES`] names, from `scenarios` (as [`load`] returns
/// them), for each seed in `seeds` with `client` in place of anchorage's channel, and judges
/// each cell on the checks it reads.
pub fn check_client(
    client: ClientKind,
    scenarios: &[Scenario],
    seeds: Range<u64>,
) -> Vec<PropertyResult> {
    let options = RunOptions {
        client,
        subject: client.is_tonic().then(|| client.name().to_owned()),
        ..RunOptions::default()
    };
    // Each scenario runs once per seed, however many cells read it.
    let mut runs: BTreeMap<&str, Vec<RunReport>> = BTreeMap::new();
    CLIENT_PROPERTIES
        .iter()
        .map(|(property, stem, reads)| {
            let Some(scenario) = find(scenarios, stem) else {
                return missing(property, stem);
            };
            let reports = runs.entry(stem).or_insert_with(|| {
                seeds.clone().map(|seed| run_with(scenario, seed, &options)).collect()
            });
            judge(property, reads, reports, seeds.end - seeds.start)
        })
        .collect()
}

/// One cell: the first run in which a check it reads failed, or n/a when every check it
/// reads is n/a in every run, or a pass.
fn judge(property: &str, reads: &[&str], reports: &[RunReport], seeds: u64) -> PropertyResult {
    let read = |name: &str| reads.is_empty() || reads.contains(&name);
    let mut result = PropertyResult {
        property: property.to_owned(),
        pass: true,
        not_applicable: false,
        detail: format!("{seeds} seeds"),
    };
    for report in reports {
        let failed: Vec<String> = report
            .properties
            .iter()
            .filter(|p| read(&p.name) && p.failed())
            .map(|p| format!("{} ({})", p.name, p.measured))
            .collect();
        if !failed.is_empty() {
            result.pass = false;
            result.detail = format!(
                "FAIL {} seed {}: {}; replay: {}",
                report.scenario,
                report.seed,
                failed.join("; "),
                report.replay
            );
            return result;
        }
    }
    let judged = reports.iter().flat_map(|r| &r.properties).filter(|p| read(&p.name));
    let mut judged = judged.peekable();
    if judged.peek().is_none() {
        // Nothing to judge is not a pass: the scenario no longer declares what the cell reads.
        result.pass = false;
        result.detail = format!("FAIL no run checked any of: {}", reads.join(", "));
        return result;
    }
    if judged.all(|p| p.verdict == Verdict::NotApplicable) {
        result.pass = false;
        result.not_applicable = true;
        let why = reports.iter().flat_map(|r| &r.properties).find(|p| read(&p.name));
        result.detail = why.map_or_else(String::new, |p| p.measured.clone());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::RpcCounts;
    use crate::sim::checks::Property;

    fn report(properties: Vec<Property>) -> RunReport {
        RunReport {
            scenario: "s".into(),
            path: "sims/s.toml".into(),
            seed: 0,
            passed: true,
            properties,
            rpcs: RpcCounts { sent: 0, ok: 0, failed: 0 },
            servers: Vec::new(),
            split: None,
            sim_time_ms: 0,
            trace_hash: String::new(),
            trace_lines: 0,
            replay: "replay".into(),
            trace: String::new(),
            timeline: Default::default(),
            figures: Vec::new(),
        }
    }

    fn passed(name: &str) -> Property {
        Property {
            name: name.into(),
            verdict: Verdict::Pass,
            measured: "fine".into(),
            premise_missing: false,
        }
    }

    /// Regression: a cell whose checks appeared in no run (the scenario stopped declaring them)
    /// passed with "N seeds", judging nothing.
    #[test]
    fn a_cell_whose_checks_no_run_made_fails_instead_of_passing() {
        let reports = [report(vec![passed("completed")]), report(vec![passed("completed")])];
        let cell = judge("weighted-split", &["split"], &reports, 2);
        assert!(!cell.pass && !cell.not_applicable, "nothing judged must not pass: {cell:?}");
        assert!(cell.detail.contains("split"), "the failure must name the check: {cell:?}");
        let judged = judge("weighted-split", &["split"], &[report(vec![passed("split")])], 1);
        assert!(judged.pass, "a check that ran and held must pass: {judged:?}");
    }
}
