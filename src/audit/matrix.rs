//! The audit matrix: subjects × properties, each cell pass or fail with its counterexample.

use std::fmt;

use serde::Serialize;

use std::ops::Range;

use super::subjects::{Subject, SubjectKind};
use super::syntax::{self, PropertyResult};
use super::{etcd, scenarios};
use crate::sim::scenario::Scenario;

/// One subject's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The subject's name.
    pub subject: String,
    /// What it is.
    pub description: String,
    /// One result per property, in the matrix's property order.
    pub results: Vec<PropertyResult>,
}

impl Row {
    /// The result of `property`, if it was checked.
    pub fn result(&self, property: &str) -> Option<&PropertyResult> {
        self.results.iter().find(|r| r.property == property)
    }
}

/// Subjects × properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// The seed the cases were drawn from.
    pub seed: u64,
    /// Cases per property.
    pub cases: u32,
    /// One row per subject, in the order given.
    pub rows: Vec<Row>,
}

impl Matrix {
    /// Audits every subject's target syntax with `cases` generated cases per property drawn
    /// from `seed`.
    pub fn run(subjects: &[Subject], seed: u64, cases: u32) -> Self {
        Self::run_with_scenarios(subjects, seed, cases, &[], 0..0)
    }

    /// [`Matrix::run`], plus the simulated properties of [`scenarios`] over
    /// `sim_seeds`, with `loaded` as [`super::scenarios::load`] returns it (empty: none).
    pub fn run_with_scenarios(
        subjects: &[Subject],
        seed: u64,
        cases: u32,
        loaded: &[Scenario],
        sim_seeds: Range<u64>,
    ) -> Self {
        let rows = subjects
            .iter()
            .map(|subject| {
                let results = match subject.kind {
                    SubjectKind::Etcd => etcd::check(subject.builder.as_ref(), seed, cases),
                    // Client subjects have only simulated properties.
                    SubjectKind::Client(_) if loaded.is_empty() => Vec::new(),
                    SubjectKind::Client(client) => {
                        scenarios::check_client(client, loaded, sim_seeds.clone())
                    }
                    _ => {
                        let mut results = syntax::check(subject.builder.as_ref(), seed, cases);
                        if !loaded.is_empty() {
                            results.extend(scenarios::check(subject, loaded, sim_seeds.clone()));
                        }
                        results
                    }
                };
                Row {
                    subject: subject.name.clone(),
                    description: subject.description.clone(),
                    results,
                }
            })
            .collect();
        Self { seed, cases, rows }
    }

    /// Whether no cell failed (a cell that does not apply is not a failure).
    pub fn all_pass(&self) -> bool {
        self.rows.iter().all(|row| row.results.iter().all(|r| !r.failed()))
    }
}

impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return writeln!(f, "no subjects");
        }
        let width = self.rows.iter().map(|r| r.subject.len()).max().unwrap_or(0).max(7);
        let mut columns: Vec<&str> = Vec::new();
        for row in self.rows.iter().filter(|r| !r.results.is_empty()) {
            // Subjects of another kind have other properties: a new header starts their block.
            let properties: Vec<&str> = row.results.iter().map(|r| r.property.as_str()).collect();
            if properties != columns {
                if !columns.is_empty() {
                    writeln!(f)?;
                }
                let mut header = format!("{:<width$}", "subject");
                for property in &properties {
                    header.push_str(&format!(" | {property}"));
                }
                writeln!(f, "{header}")?;
                columns = properties;
            }
            let mut line = format!("{:<width$}", row.subject);
            for result in &row.results {
                let cell = match (result.pass, result.not_applicable) {
                    (true, _) => "pass",
                    (false, true) => "n/a",
                    (false, false) => "FAIL",
                };
                line.push_str(&format!(" | {cell:<w$}", w = result.property.len()));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        writeln!(f, "\n(seed {}, {} cases per property)", self.seed, self.cases)?;
        for row in &self.rows {
            for result in row.results.iter().filter(|r| !r.pass) {
                writeln!(f, "{} / {}: {}", row.subject, result.property, result.detail)?;
            }
        }
        Ok(())
    }
}
