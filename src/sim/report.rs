//! Reports: the table printed per run, and the serialisable pieces of [`RunReport`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::RunReport;
use super::checks::{Observed, Verdict, shares_text, split_window_start};
use super::trace::secs;

/// One server's part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Connections accepted over all its boots.
    pub accepted: u64,
    /// RPCs it served.
    pub rpcs: u64,
    /// RPCs per connection, labelled `a#c0` (or `a@1#c0` for a connection of its second boot).
    pub per_connection: Vec<(String, u64)>,
}

/// The observed split of successful RPCs against the expected one.
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    /// Simulated ms from which RPCs count (after the last fault settles).
    pub from_ms: u64,
    /// Successful RPCs in the window.
    pub rpcs: usize,
    /// Observed share per server.
    pub observed: BTreeMap<String, f64>,
    /// Expected share per server (normalised weights).
    pub expected: BTreeMap<String, f64>,
    /// Allowed absolute difference.
    pub tolerance: f64,
}

pub(crate) fn servers(o: &Observed<'_>) -> Vec<ServerReport> {
    o.servers
        .iter()
        .map(|s| ServerReport {
            name: s.name.clone(),
            host: s.host.clone(),
            accepted: s.connections.len() as u64,
            rpcs: s.rpcs(),
            per_connection: s.connections.iter().map(|c| (c.label.clone(), c.rpcs)).collect(),
        })
        .collect()
}

pub(crate) fn split(o: &Observed<'_>) -> Option<Split> {
    let expected = o.weights()?;
    let from = split_window_start(o);
    let (rpcs, observed) = o.shares(o.log.rpcs.iter().filter(|r| r.start >= from));
    Some(Split {
        from_ms: u64::try_from(from.as_millis()).unwrap_or(u64::MAX),
        rpcs,
        observed,
        expected,
        tolerance: o.tolerance(),
    })
}

impl RunReport {
    /// The report as a text table: a header line, the properties, the servers and the split.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let end = secs(std::time::Duration::from_millis(self.sim_time_ms));
        let _ = writeln!(
            out,
            "== {} seed {} {verdict}: {} RPCs, {} OK, {} failed, simulated {}, trace {} ({} lines)",
            self.scenario,
            self.seed,
            self.rpcs.sent,
            self.rpcs.ok,
            self.rpcs.failed,
            end,
            self.trace_hash,
            self.trace_lines
        );
        let width = self.properties.iter().map(|p| p.name.len()).max().unwrap_or(8).max(8);
        let _ = writeln!(out, "  {:<width$}  result  measured", "property");
        for p in &self.properties {
            let result = match p.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::NotApplicable => "n/a",
            };
            let _ = writeln!(out, "  {:<width$}  {result:<6}  {}", p.name, p.measured);
        }
        let width = self.servers.iter().map(|s| s.name.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(out, "  {:<width$}  accepted  rpcs  per connection", "server");
        for s in &self.servers {
            let per: Vec<String> =
                s.per_connection.iter().map(|(label, n)| format!("{label}={n}")).collect();
            let _ = writeln!(
                out,
                "  {:<width$}  {:>8}  {:>4}  {}",
                s.name,
                s.accepted,
                s.rpcs,
                if per.is_empty() { "-".to_owned() } else { per.join(" ") }
            );
        }
        if let Some(split) = &self.split {
            let _ = writeln!(
                out,
                "  split of {} OK RPCs from {}: observed {} expected {} (±{})",
                split.rpcs,
                secs(std::time::Duration::from_millis(split.from_ms)),
                shares_text(&split.observed),
                shares_text(&split.expected),
                split.tolerance
            );
        }
        out
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Plain structs, strings, numbers and string-keyed maps always serialise.
        serde_json::to_string(self).expect("a run report always serialises to JSON")
    }
}
