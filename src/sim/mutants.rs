//! Mutants: proof that the simulation's checks can fail.
//!
//! Each [`Mutant`] switches on one deliberate defect in the real channel (see its docs). The
//! [`matrix`] runs scenarios against every mutant and against the unmutated channel (the
//! baseline), and counts, per mutant and per check, the runs in which that check failed. A
//! mutant that no check catches *survived*: the checks would not have noticed that defect.
//! The baseline must pass every run, or the matrix means nothing.
//!
//! ```no_run
//! use anchorage::sim::mutants::{self, Mutant, Options};
//! let runs = mutants::fixed_runs("sims", 0..2)?;
//! let matrix = mutants::matrix(&Mutant::ALL, &runs, &Options::default());
//! println!("{}", matrix.table());
//! assert!(matrix.survivors().is_empty());
//! # Ok::<_, anchorage::sim::scenario::ScenarioError>(())
//! ```
//!
//! # Determinism
//! Each row (a mutant, or the baseline) runs its (scenario, seed) pairs in the order given,
//! on one thread; rows run in parallel. So the matrix, even when a row stops at its first
//! failing run, is a function of its inputs.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::scenario::{Scenario, ScenarioError};
use super::{RunOptions, run_with};
pub use crate::mutant::{Mutant, UnknownMutant};

/// How the matrix runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows run in parallel. Default: the number of CPUs.
    pub jobs: usize,
    /// Stop a mutant's runs at its first failing run (the baseline always runs everything).
    /// Default: false, so every cell counts every run.
    pub stop_when_killed: bool,
}

impl Default for Options {
    fn default() -> Self {
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { jobs, stop_when_killed: false }
    }
}

/// Every scenario in `dir` (`*.toml`, by file name) with its regression seeds followed by
/// `seeds` (each seed once).
///
/// # Errors
/// The first scenario that does not load, or [`ScenarioError::Read`] when `dir` cannot be
/// listed.
pub fn fixed_runs(
    dir: impl AsRef<Path>,
    seeds: Range<u64>,
) -> Result<Vec<(Scenario, Vec<u64>)>, ScenarioError> {
    let dir = dir.as_ref();
    let read = |source| ScenarioError::Read { path: dir.to_owned(), source };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut runs = Vec::new();
    for path in paths {
        let scenario = Scenario::load(&path)?;
        let seeds = seeds_for(&scenario, seeds.clone());
        runs.push((scenario, seeds));
    }
    Ok(runs)
}

/// `scenario`'s regression seeds, then `seeds`, each once.
pub fn seeds_for(scenario: &Scenario, seeds: Range<u64>) -> Vec<u64> {
    let mut out = scenario.regression_seeds.clone();
    out.extend(seeds.filter(|s| !scenario.regression_seeds.contains(s)));
    out
}

/// One row of the matrix: a mutant (or the baseline) over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The mutant's name; `None` for the baseline.
    pub mutant: Option<Mutant>,
    /// Runs made (fewer than given when the row stopped at its first failure).
    pub runs: u32,
    /// Per check name, the runs in which it failed (only checks that failed at least once).
    pub failed: BTreeMap<String, u32>,
    /// The replay command of the first failing run, if any.
    pub first_failure: Option<String>,
}

impl Row {
    /// Whether some check failed in some run.
    pub fn killed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The checks that failed, by name.
    pub fn killed_by(&self) -> Vec<&str> {
        self.failed.keys().map(String::as_str).collect()
    }

    /// The row's verdict: for a mutant KILLED or SURVIVED; for the baseline PASS or FAIL.
    pub fn verdict(&self) -> &'static str {
        match (self.mutant, self.killed()) {
            (Some(_), true) => "KILLED",
            (Some(_), false) => "SURVIVED",
            (None, false) => "PASS",
            (None, true) => "FAIL",
        }
    }

    /// One JSON object for the row.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "mutant": self.mutant.map_or_else(|| "baseline".to_owned(), |m| m.to_string()),
            "runs": self.runs,
            "failed": self.failed,
            "verdict": self.verdict(),
            "first_failure": self.first_failure,
        });
        value.to_string()
    }
}

/// The result: the baseline row and one row per mutant.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The unmutated channel over the same runs: must pass everywhere.
    pub baseline: Row,
    /// One row per mutant, in the order asked.
    pub rows: Vec<Row>,
    /// Every check that was evaluated in some run, in first-seen order.
    pub checks: Vec<String>,
}

impl Matrix {
    /// The mutants no check caught.
    pub fn survivors(&self) -> Vec<Mutant> {
        self.rows.iter().filter(|r| !r.killed()).filter_map(|r| r.mutant).collect()
    }

    /// What is wrong with the baseline, if anything: checks that fail without a mutant make
    /// the matrix meaningless.
    pub fn baseline_error(&self) -> Option<String> {
        if !self.baseline.killed() {
            return None;
        }
        let failed: Vec<String> =
            self.baseline.failed.iter().map(|(check, n)| format!("{check} in {n} runs")).collect();
        Some(format!(
            "mutants: the baseline (no mutant) fails {}; first: {}",
            failed.join(", "),
            self.baseline.first_failure.as_deref().unwrap_or("?")
        ))
    }

    /// Whether the matrix proves its point: the baseline passes and no mutant survives.
    pub fn passed(&self) -> bool {
        self.baseline_error().is_none() && self.survivors().is_empty()
    }

    /// The matrix as text: one row per mutant (the baseline first), one column per check that
    /// failed somewhere, each cell the number of runs in which it failed (`.` for none).
    pub fn table(&self) -> String {
        let columns: Vec<&String> = self
            .checks
            .iter()
            .filter(|c| self.all_rows().any(|r| r.failed.contains_key(*c)))
            .collect();
        let name = |r: &Row| r.mutant.map_or_else(|| "baseline".to_owned(), |m| m.to_string());
        let width = self.all_rows().map(|r| name(r).len()).max().unwrap_or(8);
        let mut out = format!("{:<width$} {:>5}", "mutant", "runs");
        for column in &columns {
            out.push_str(&format!(" {column}"));
        }
        out.push_str("  verdict\n");
        for row in self.all_rows() {
            out.push_str(&format!("{:<width$} {:>5}", name(row), row.runs));
            for column in &columns {
                let cell = row.failed.get(*column).map_or_else(|| ".".to_owned(), u32::to_string);
                out.push_str(&format!(" {cell:>w$}", w = column.len()));
            }
            out.push_str(&format!("  {}", row.verdict()));
            if row.mutant.is_some() && row.killed() {
                out.push_str(&format!(" by {}", row.killed_by().join(", ")));
            }
            out.push('\n');
        }
        let quiet: Vec<&str> =
            self.checks.iter().filter(|c| !columns.contains(c)).map(String::as_str).collect();
        if !quiet.is_empty() {
            out.push_str(&format!("checks that failed nowhere: {}\n", quiet.join(", ")));
        }
        let survivors = self.survivors();
        out.push_str(&format!(
            "{} mutants: {} killed, {} survived; baseline {}",
            self.rows.len(),
            self.rows.len() - survivors.len(),
            survivors.len(),
            self.baseline.verdict()
        ));
        out
    }

    fn all_rows(&self) -> impl Iterator<Item = &Row> {
        std::iter::once(&self.baseline).chain(&self.rows)
    }
}

/// Runs every (scenario, seed) in `runs` against the baseline and against each of
/// `mutants`; extra scenarios (generated ones, say) are simply more entries in `runs`.
pub fn matrix(mutants: &[Mutant], runs: &[(Scenario, Vec<u64>)], options: &Options) -> Matrix {
    let wanted: Vec<Option<Mutant>> =
        std::iter::once(None).chain(mutants.iter().copied().map(Some)).collect();
    let threads = options.jobs.clamp(1, wanted.len());
    let next = AtomicUsize::new(0);
    let done: Mutex<BTreeMap<usize, (Row, Vec<String>)>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // Bounded: each pass takes one row.
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&mutant) = wanted.get(i) else { break };
                    let stop = options.stop_when_killed && mutant.is_some();
                    let row = run_row(mutant, runs, stop);
                    done.lock().unwrap_or_else(|p| p.into_inner()).insert(i, row);
                }
            });
        }
    });
    let mut checks: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (row, seen) in done.into_inner().unwrap_or_else(|p| p.into_inner()).into_values() {
        for check in seen {
            if !checks.contains(&check) {
                checks.push(check);
            }
        }
        rows.push(row);
    }
    let baseline = rows.remove(0);
    Matrix { baseline, rows, checks }
}

/// One row, and the names of the checks evaluated in it (first-seen order).
fn run_row(
    mutant: Option<Mutant>,
    runs: &[(Scenario, Vec<u64>)],
    stop: bool,
) -> (Row, Vec<String>) {
    let options = RunOptions { mutant, ..RunOptions::default() };
    let mut row = Row { mutant, runs: 0, failed: BTreeMap::new(), first_failure: None };
    let mut seen: Vec<String> = Vec::new();
    for (scenario, seeds) in runs {
        for &seed in seeds {
            let report = run_with(scenario, seed, &options);
            row.runs += 1;
            for property in &report.properties {
                if !seen.contains(&property.name) {
                    seen.push(property.name.clone());
                }
                if property.failed() {
                    *row.failed.entry(property.name.clone()).or_default() += 1;
                }
            }
            if !report.passed && row.first_failure.is_none() {
                row.first_failure = Some(report.failure_line());
            }
            if stop && !report.passed {
                return (row, seen);
            }
        }
    }
    (row, seen)
}
