//! Reports: the table printed per run, the serialisable pieces of [`RunReport`], and the
//! headline figures that sum a scenario's runs up in one line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

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

/// One headline figure of a run, for the one-line summary of its scenario: a measurement
/// behind one of the properties the scenario checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What it measures, as printed (`conns`, `split`, `failover`, …).
    pub label: &'static str,
    /// The value, which says how runs of the scenario aggregate.
    pub value: FigureValue,
}

/// A figure's value, and how the runs of a scenario aggregate it.
#[derive(Debug, Clone, PartialEq)]
pub enum FigureValue {
    /// A count per server, aggregated as its range over runs (`a=2` or `a=2..3`).
    PerServer(BTreeMap<String, u64>),
    /// A share per server, aggregated as its mean over runs (`a=0.667`).
    Shares(BTreeMap<String, f64>),
    /// A duration, ms, aggregated as the worst (longest) over runs.
    WorstMs(u64),
    /// A count, aggregated as the most over runs (`≤2`).
    Most(u64),
    /// Part of a whole, both summed over runs (`799/800`).
    Fraction(u64, u64),
}

/// The headline figures of an observed run: for each property the scenario checks that has
/// one, in the order the checks run; the RPCs that succeeded and the longest RPC when that
/// leaves fewer than two.
pub(crate) fn figures(o: &Observed<'_>) -> Vec<Figure> {
    let e = &o.scenario.expect;
    let mut out = Vec::new();
    let mut push = |label, value| out.push(Figure { label, value });
    let conns = |s: &super::checks::ServerObs| (s.name.clone(), s.connections.len() as u64);
    if e.connections.is_some() {
        push("conns", FigureValue::PerServer(o.servers.iter().map(conns).collect()));
    } else if e.total_connections.is_some() {
        let total = o.servers.iter().map(|s| s.connections.len() as u64).sum();
        push("conns", FigureValue::PerServer([("total".to_owned(), total)].into()));
    }
    if let Some(split) = split(o) {
        push("split", FigureValue::Shares(split.observed));
    }
    if e.failover_within_ms.is_some() {
        push("failover", FigureValue::WorstMs(failover_ms(o)));
    }
    if e.lost_per_fault.is_some() {
        push("lost/fault", FigureValue::Most(most_lost_per_fault(o)));
    }
    if let Some(bound) = e.liveness_within_ms {
        let healed = o.applied.last().map_or(Duration::ZERO, |a| a.at);
        let first = o.ok().filter(|r| r.end >= healed).map(|r| r.end - healed).min();
        let never = Duration::from_millis(bound).max(o.end - healed);
        push("first OK after last fault", FigureValue::WorstMs(ms(first.unwrap_or(never))));
    }
    if e.all_fail_with.is_some() || e.max_failed.is_some() {
        let failed = o.log.rpcs.iter().filter(|r| r.server().is_none()).count() as u64;
        push("failed", FigureValue::Fraction(failed, o.log.rpcs.len() as u64));
    }
    if out.len() < 2 && !out.iter().any(|f| f.label == "failed") {
        let counts = o.counts();
        let value = FigureValue::Fraction(u64::from(counts.ok), u64::from(counts.sent));
        out.push(Figure { label: "ok", value });
    }
    if out.len() < 2 {
        let longest = o.log.rpcs.iter().map(|r| r.end - r.start).max().unwrap_or_default();
        out.push(Figure { label: "longest RPC", value: FigureValue::WorstMs(ms(longest)) });
    }
    out
}

fn ms(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// After each fault that cuts servers off, how long RPCs kept failing: from the fault to the
/// end of the last RPC that failed before it healed (0 when none did); the longest of these.
fn failover_ms(o: &Observed<'_>) -> u64 {
    let mut worst = Duration::ZERO;
    for (i, applied) in o.applied.iter().enumerate() {
        if !applied.fault.is_disruption() || o.cut_off(&applied.fault).is_empty() {
            continue;
        }
        let until = o.healed_at(i);
        let last_failure = o
            .log
            .rpcs
            .iter()
            .filter(|r| r.server().is_none() && r.end >= applied.at && r.end < until)
            .map(|r| r.end - applied.at)
            .max();
        worst = worst.max(last_failure.unwrap_or_default());
    }
    ms(worst)
}

/// The most RPCs that failed between one fault and the next (as `lost_per_fault` counts).
fn most_lost_per_fault(o: &Observed<'_>) -> u64 {
    let mut most = 0;
    for (i, applied) in o.applied.iter().enumerate() {
        let until = o.applied.get(i + 1).map_or(Duration::MAX, |next| next.at);
        let lost = o
            .log
            .rpcs
            .iter()
            .filter(|r| r.server().is_none() && r.end >= applied.at && r.end < until)
            .count() as u64;
        most = most.max(lost);
    }
    most
}

/// The one line of a scenario's runs: its headline figures aggregated over `runs`, as
/// `label value` columns.
pub fn aggregate_figures(runs: &[&RunReport]) -> Vec<String> {
    // A run that panicked has no figures; the others all have the scenario's.
    let Some(full) = runs.iter().max_by_key(|r| r.figures.len()) else { return Vec::new() };
    let mut out = Vec::new();
    for (k, figure) in full.figures.iter().enumerate() {
        let values: Vec<&FigureValue> =
            runs.iter().filter_map(|r| r.figures.get(k)).map(|f| &f.value).collect();
        out.push(format!("{} {}", figure.label, aggregate(&values)));
    }
    out
}

fn aggregate(values: &[&FigureValue]) -> String {
    let mut ranges: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let (mut worst, mut most, mut part, mut whole) = (0u64, 0u64, 0u64, 0u64);
    for value in values {
        match value {
            FigureValue::PerServer(map) => {
                for (name, &n) in map {
                    let range = ranges.entry(name).or_insert((n, n));
                    *range = (range.0.min(n), range.1.max(n));
                }
            }
            FigureValue::Shares(map) => {
                for (name, &share) in map {
                    let sum = sums.entry(name).or_default();
                    *sum = (sum.0 + share, sum.1 + 1);
                }
            }
            FigureValue::WorstMs(ms) => worst = worst.max(*ms),
            FigureValue::Most(n) => most = most.max(*n),
            FigureValue::Fraction(p, w) => (part, whole) = (part + p, whole + w),
        }
    }
    match values.first() {
        Some(FigureValue::PerServer(_)) => {
            let parts: Vec<String> =
                ranges
                    .iter()
                    .map(|(name, &(lo, hi))| {
                        if lo == hi { format!("{name}={lo}") } else { format!("{name}={lo}..{hi}") }
                    })
                    .collect();
            parts.join(" ")
        }
        Some(FigureValue::Shares(_)) => {
            let mean =
                sums.iter().map(|(k, &(sum, n))| ((*k).to_owned(), sum / n as f64)).collect();
            shares_text(&mean)
        }
        Some(FigureValue::WorstMs(_)) => format!("≤{}", secs(Duration::from_millis(worst))),
        Some(FigureValue::Most(_)) => format!("≤{most}"),
        Some(FigureValue::Fraction(..)) => format!("{part}/{whole}"),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_server(a: u64, b: u64) -> FigureValue {
        FigureValue::PerServer([("a".to_owned(), a), ("b".to_owned(), b)].into())
    }

    #[test]
    fn counts_per_server_aggregate_as_their_range_over_runs() {
        let (one, other) = (per_server(2, 1), per_server(3, 1));
        assert_eq!(aggregate(&[&one, &other]), "a=2..3 b=1", "a range where runs differ");
    }

    #[test]
    fn shares_aggregate_as_their_mean_and_durations_as_the_worst() {
        let share = |a: f64| FigureValue::Shares([("a".to_owned(), a)].into());
        assert_eq!(aggregate(&[&share(0.6), &share(0.7)]), "a=0.650", "the mean share");
        let (short, long) = (FigureValue::WorstMs(5), FigureValue::WorstMs(1200));
        assert_eq!(aggregate(&[&short, &long]), "≤1.200s", "the longest over runs");
        let (one, other) = (FigureValue::Fraction(1, 10), FigureValue::Fraction(0, 10));
        assert_eq!(aggregate(&[&one, &other]), "1/20", "parts and wholes summed over runs");
    }
}
