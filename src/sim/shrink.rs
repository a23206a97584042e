//! Shrinking a failing run: delta debugging of a (scenario, seed) pair down to a smaller
//! scenario that still fails the same property with the same seed.
//!
//! The shrinker repeats rounds of passes over the current scenario and keeps a candidate as
//! soon as its run fails the property again:
//!
//! 1. fewer faults: ddmin (Zeller and Hildebrandt) over the fault list, removing halves, then
//!    quarters, down to single faults;
//! 2. fewer RPCs (halved), tried again after each pass that can make room for it, so later
//!    runs are cheaper; every fault earlier (times halved, order kept) comes right after the
//!    first try, since a late fault is what a short workload misses;
//! 3. fewer servers, each removed with everything that names it: its target items, manual and
//!    resolver-update addresses, faults and links on its host (unless another server shares
//!    the host), registration faults, and its keys in `[expect]`;
//! 4. fewer addresses: single items of a `pass:` target, of `manual_addresses` and of each
//!    `resolve` fault;
//! 5. lower `#N` counts (to 1, else halved);
//! 6. shorter times: an earlier start, halved pacing and time limit, and a halved deadline, though never below 20 one-way latencies
//!    (a connect, the HTTP/2 handshake and the RPC, with room): below that every RPC fails
//!    its deadline, whatever else the scenario does;
//! 7. less concurrency (halved), last, because it makes the workload take longer.
//!
//! A candidate is kept when its run fails the property and breaks none of the properties every
//! run checks (completion, deadlines, accounting, no panic) that the original run kept: a
//! shrink must not slip from the failure it was given to a hang or a panic.
//!
//! It stops after a round that keeps nothing, or after [`MAX_RUNS`] simulation runs. A candidate
//! is written with [`Scenario::to_toml`] and read back with [`Scenario::parse`] before it runs,
//! so only candidates that validate run, and the result is exactly what its file loads as.
//! The `[expect]` table stays (it is what makes the run fail), trimmed of keys that name
//! removed servers.
//!
//! # Determinism
//! Candidates are tried in a fixed order and each run is a function of (scenario, seed), so a
//! shrink is a function of its inputs.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use super::RunReport;
use super::scenario::{Fault, Scenario};

mod edit;

/// The most simulation runs one shrink makes (the run confirming the failure included). A run
/// of a scenario from `sims/` costs up to a few seconds in a debug build, so this bounds a
/// shrink to minutes at worst; a typical shrink keeps most of its candidates early, while the
/// scenario is large, and ends well before.
pub const MAX_RUNS: usize = 200;

/// How big a scenario is, in the units a shrink reduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    /// `[[fault]]` entries.
    pub faults: usize,
    /// Servers, after `count` expansion.
    pub servers: usize,
    /// Addresses the client is given: items of a `pass:` target (`#N` counted N times; an
    /// `etcd:` target's `#N` times the registering servers), entries of `manual_addresses` and
    /// of every `resolve` fault.
    pub addresses: usize,
    /// `workload.rpcs`.
    pub rpcs: u32,
    /// The simulated time the run took, ms.
    pub sim_ms: u64,
}

impl Size {
    /// The size of `scenario`, whose run took `sim_ms`.
    pub fn of(scenario: &Scenario, sim_ms: u64) -> Self {
        Self {
            faults: scenario.faults.len(),
            servers: scenario.server_list().len(),
            addresses: edit::address_count(scenario),
            rpcs: scenario.workload.rpcs,
            sim_ms,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults, {} servers, {} addresses, {} RPCs, {:.3} s simulated",
            self.faults,
            self.servers,
            self.addresses,
            self.rpcs,
            self.sim_ms as f64 / 1000.0
        )
    }
}

/// What `progress` hears after each kept candidate.
#[derive(Debug, Clone)]
pub struct ShrinkStep {
    /// Candidates kept so far, this one included (1-based).
    pub step: usize,
    /// Simulation runs so far.
    pub runs: usize,
    /// What this candidate removed or shortened (`fault 2 (restart a)`, `server "b"`, …).
    pub removed: String,
    /// The size now.
    pub size: Size,
}

impl fmt::Display for ShrinkStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shrink step {} (run {}): {}; now {}",
            self.step, self.runs, self.removed, self.size
        )
    }
}

/// The result of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest failing scenario found (its `path` is the original's).
    pub scenario: Scenario,
    /// Its run with the seed: the property fails in it.
    pub report: RunReport,
    /// The property that fails.
    pub property: String,
    /// The seed.
    pub seed: u64,
    /// Simulation runs made, the first (confirming the failure) included.
    pub runs: usize,
    /// Candidates kept.
    pub kept: usize,
    /// Whether the run budget ended the shrink before a round kept nothing.
    pub out_of_runs: bool,
    /// The size of the original scenario.
    pub before: Size,
    /// The size of the result.
    pub after: Size,
}

impl Shrunk {
    /// The comment for the shrunk scenario's file: the property it breaks, how to replay it,
    /// and the sizes before and after.
    pub fn comment(&self, original: &str) -> String {
        let measured = self
            .report
            .properties
            .iter()
            .find(|p| p.name == self.property && p.failed())
            .map_or_else(String::new, |p| format!(": {}", p.measured));
        format!(
            "Fails `{}` with seed {}{measured}.\n\
             Shrunk from {original} in {} runs ({} kept).\n\
             Before: {}.\n\
             After: {}.",
            self.property, self.seed, self.runs, self.kept, self.before, self.after
        )
    }
}

/// Why a shrink could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShrinkError {
    /// The run of the original scenario does not fail the property: there is nothing to keep
    /// failing.
    #[error(
        "shrink: scenario {scenario} seed {seed}: property {property:?} does not fail ({measured}); only a failing run can be shrunk"
    )]
    NotFailing {
        /// The scenario's name.
        scenario: String,
        /// The seed.
        seed: u64,
        /// The property asked for.
        property: String,
        /// What the run measured for it, or that it was not checked.
        measured: String,
    },
}

/// Shrinks `scenario`, whose run with `seed` fails `property`, within [`MAX_RUNS`] runs.
/// `run` runs a scenario with a seed (usually [`sim::run`](super::run) or
/// [`sim::run_with`](super::run_with)); `progress` hears of each kept candidate.
///
/// # Errors
/// [`ShrinkError::NotFailing`] when the first run does not fail `property`.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    property: &str,
    run: &mut dyn FnMut(&Scenario, u64) -> RunReport,
    progress: &mut dyn FnMut(&ShrinkStep),
) -> Result<Shrunk, ShrinkError> {
    shrink_within(scenario, seed, property, MAX_RUNS, run, progress)
}

/// [`shrink`] with another run budget (at least 1: the run that confirms the failure).
///
/// # Errors
/// [`ShrinkError::NotFailing`] when the first run does not fail `property`.
pub fn shrink_within(
    scenario: &Scenario,
    seed: u64,
    property: &str,
    max_runs: usize,
    run: &mut dyn FnMut(&Scenario, u64) -> RunReport,
    progress: &mut dyn FnMut(&ShrinkStep),
) -> Result<Shrunk, ShrinkError> {
    let report = run(scenario, seed);
    if !fails(&report, property) {
        let measured = report
            .properties
            .iter()
            .find(|p| p.name == property)
            .map_or_else(|| "not checked in this run".to_owned(), |p| p.measured.clone());
        return Err(ShrinkError::NotFailing {
            scenario: scenario.name(),
            seed,
            property: property.to_owned(),
            measured,
        });
    }
    let before = Size::of(scenario, report.sim_time_ms);
    let mut state = State {
        guarded: guarded_failures(&report),
        current: scenario.clone(),
        report,
        seed,
        property,
        runs: 1,
        kept: 0,
        max_runs,
        run,
        progress,
        rejected: HashSet::new(),
    };
    let mut out_of_runs = false;
    loop {
        match state.round() {
            Round::KeptSome => {}
            Round::KeptNothing => break,
            Round::OutOfRuns => {
                out_of_runs = true;
                break;
            }
        }
    }
    let after = Size::of(&state.current, state.report.sim_time_ms);
    Ok(Shrunk {
        scenario: state.current,
        report: state.report,
        property: property.to_owned(),
        seed,
        runs: state.runs,
        kept: state.kept,
        out_of_runs,
        before,
        after,
    })
}

/// Whether `report` has `property` failed, and not only for want of its premise (a candidate
/// without the crash that `failover` judges is no smaller example of a failed failover).
fn fails(report: &RunReport, property: &str) -> bool {
    report.properties.iter().any(|p| p.name == property && p.failed() && !p.premise_missing)
}

/// The properties every run checks whatever its `[expect]`: the run ended, no RPC outlived its
/// deadline, every success is accounted for, nothing panicked. A candidate that breaks one of
/// these when the original did not has slipped to another failure (a time limit halved below
/// the workload fails every unfinished RPC; a panic fails them all), so it is not kept.
const GUARDED: [&str; 4] = ["completed", "deadlines", "accounting", "no_panic"];

/// The [`GUARDED`] properties `report` fails.
fn guarded_failures(report: &RunReport) -> Vec<&'static str> {
    GUARDED.into_iter().filter(|name| fails(report, name)).collect()
}

/// How a round ended.
enum Round {
    KeptSome,
    KeptNothing,
    OutOfRuns,
}

/// Whether a candidate was kept.
#[derive(PartialEq, Eq)]
enum Tried {
    Kept,
    Rejected,
    OutOfRuns,
}

/// A smaller scenario to try, and what it removed.
type Candidate = (String, Scenario);

/// The candidates one pass offers for the current scenario, in the order to try them.
type Pass = fn(&Scenario) -> Vec<Candidate>;

struct State<'a> {
    current: Scenario,
    report: RunReport,
    seed: u64,
    property: &'a str,
    runs: usize,
    kept: usize,
    max_runs: usize,
    run: &'a mut dyn FnMut(&Scenario, u64) -> RunReport,
    progress: &'a mut dyn FnMut(&ShrinkStep),
    /// The [`GUARDED`] properties the original run fails: the only ones a candidate may fail.
    guarded: Vec<&'static str>,
    /// The written form of every candidate that did not validate or did not fail: never run
    /// twice. (Only asked for membership, never iterated.)
    rejected: HashSet<String>,
}

impl State<'_> {
    /// One round of every pass, in the order the module documentation gives, with fewer RPCs
    /// tried again after each pass that can make room for it (a fault moved earlier or a
    /// server removed often lets the workload shrink, and every later run is cheaper for it).
    fn round(&mut self) -> Round {
        let kept_before = self.kept;
        if self.ddmin_faults() == Tried::OutOfRuns {
            return Round::OutOfRuns;
        }
        let passes: [Pass; 11] = [
            edit::fewer_rpcs,
            edit::earlier_faults,
            edit::fewer_rpcs,
            edit::without_each_server,
            edit::fewer_rpcs,
            edit::without_each_address,
            edit::lower_counts,
            edit::shorter_times,
            edit::fewer_rpcs,
            edit::less_concurrency,
            edit::fewer_rpcs,
        ];
        for pass in passes {
            if self.repeatedly(pass) == Tried::OutOfRuns {
                return Round::OutOfRuns;
            }
        }
        if self.kept > kept_before { Round::KeptSome } else { Round::KeptNothing }
    }

    /// Tries the candidates of `pass` in order. After a kept one, asks `pass` again about the
    /// new scenario and goes on from the same position: for a pass that removes the i-th item
    /// that is the next item, for one that halves a number it is the same number again.
    fn repeatedly(&mut self, pass: Pass) -> Tried {
        let mut at = 0;
        loop {
            let Some((removed, candidate)) = pass(&self.current).into_iter().nth(at) else {
                return Tried::Rejected;
            };
            match self.try_candidate(removed, candidate) {
                Tried::Kept => {}
                Tried::Rejected => at += 1,
                Tried::OutOfRuns => return Tried::OutOfRuns,
            }
        }
    }

    /// ddmin over the fault list: remove chunks of `n` (starting at halves); after a removal
    /// keep the granularity (one fewer chunk), else double it; single faults last.
    fn ddmin_faults(&mut self) -> Tried {
        let mut chunks = 2usize;
        while !self.current.faults.is_empty() {
            let len = self.current.faults.len();
            let chunks_now = chunks.min(len);
            let size = len.div_ceil(chunks_now);
            let mut removed_one = false;
            for start in (0..len).step_by(size) {
                let end = (start + size).min(len);
                let mut candidate = self.current.clone();
                let gone: Vec<Fault> = candidate.faults.drain(start..end).collect();
                match self.try_candidate(describe_faults(start, &gone), candidate) {
                    Tried::Kept => {
                        removed_one = true;
                        break;
                    }
                    Tried::Rejected => {}
                    Tried::OutOfRuns => return Tried::OutOfRuns,
                }
            }
            if removed_one {
                chunks = chunks_now.saturating_sub(1).max(2);
            } else if chunks_now < len {
                chunks = (chunks_now * 2).min(len);
            } else {
                break;
            }
        }
        Tried::Rejected
    }

    /// Runs `candidate` if it validates and the budget allows; keeps it if the property still
    /// fails.
    fn try_candidate(&mut self, removed: String, candidate: Scenario) -> Tried {
        let text = candidate.to_toml("");
        if self.rejected.contains(&text) {
            return Tried::Rejected;
        }
        let Ok(candidate) = Scenario::parse(&self.current.path, &text) else {
            self.rejected.insert(text);
            return Tried::Rejected;
        };
        if self.runs >= self.max_runs {
            return Tried::OutOfRuns;
        }
        self.runs += 1;
        let report = (self.run)(&candidate, self.seed);
        let slipped = guarded_failures(&report).iter().any(|g| !self.guarded.contains(g));
        if slipped || !fails(&report, self.property) {
            // A run is a function of (scenario, seed): the same text would pass again.
            self.rejected.insert(text);
            return Tried::Rejected;
        }
        self.kept += 1;
        self.current = candidate;
        self.report = report;
        (self.progress)(&ShrinkStep {
            step: self.kept,
            runs: self.runs,
            removed,
            size: Size::of(&self.current, self.report.sim_time_ms),
        });
        Tried::Kept
    }
}

/// `fault 3 (crash a)` or `faults 3-4 (crash a; restart a)`, 1-based as validation errors are.
fn describe_faults(start: usize, gone: &[Fault]) -> String {
    let what: Vec<String> = gone.iter().map(Fault::describe).collect();
    match gone.len() {
        1 => format!("fault {} ({})", start + 1, what.join("; ")),
        n => format!("faults {}-{} ({})", start + 1, start + n, what.join("; ")),
    }
}
