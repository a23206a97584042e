//! The properties checked on every run, each reported with what was measured.
//!
//! Always checked: the run completed (every RPC ended, every fault applied, no host failed);
//! every RPC ended by its deadline; the client's successes are accounted for by the servers'
//! own records. Checked when the scenario's `[expect]` asks: connections per server and in
//! total, subchannels (dedup), the policy's shape, the split by weight, failover, recovery, RPCs
//! lost per fault, failures overall, an expected failure code, liveness and the final state.
//!
//! Server-side facts (connections, RPCs per connection) come from the servers' recorders; RPC
//! outcomes and times from the client. All times are simulated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::TICK;
use super::client::{ClientLog, Outcome, RpcRecord};
use super::faults::Applied;
use super::scenario::{Action, Fault, Scenario};
use super::server::Incarnation;
use super::trace::secs;

mod after_faults;
mod discovery;
#[cfg(test)]
mod given;
#[cfg(test)]
mod tests;

use after_faults::{failover, liveness, lost_per_fault, recovery};

/// One property of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Property {
    /// Its name (`connections`, `split`, `failover`, …).
    pub name: String,
    /// Whether it held, failed, or had nothing to judge.
    pub verdict: Verdict,
    /// What was measured, against what was expected.
    pub measured: String,
    /// Whether it failed only because its premise was absent from the run (no crash for
    /// `failover` to judge, no settled window after a heal for `recovery`, …) rather than
    /// because what it judges went wrong. A shrink never keeps a candidate that fails this
    /// way: removing the premise is not a smaller example of the failure.
    #[serde(skip)]
    pub premise_missing: bool,
}

impl Property {
    /// Whether it failed. A property that was not applicable did not fail, and did not pass.
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
    }
}

/// What a property found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It held, and its premise was present: there was something to judge.
    Pass,
    /// It did not hold, or a property the scenario asks for had nothing to judge.
    Fail,
    /// An always-checked property whose premise is absent from this run (accounting when no
    /// RPC succeeded): shown in the report, not counted as a pass, and not a failure.
    NotApplicable,
}

fn property(name: &str, passed: bool, measured: impl Into<String>) -> Property {
    let verdict = if passed { Verdict::Pass } else { Verdict::Fail };
    Property { name: name.to_owned(), verdict, measured: measured.into(), premise_missing: false }
}

/// A property the scenario asks for that fails because the run holds nothing it could judge.
fn premise_missing(name: &str, measured: impl Into<String>) -> Property {
    Property { premise_missing: true, ..property(name, false, measured) }
}

fn not_applicable(name: &str, measured: impl Into<String>) -> Property {
    Property {
        name: name.to_owned(),
        verdict: Verdict::NotApplicable,
        measured: measured.into(),
        premise_missing: false,
    }
}

/// How the simulation loop ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// The workload finished.
    Finished,
    /// The time limit came first.
    TimedOut,
    /// A host's software failed.
    Error(String),
}

/// One accepted connection, in simulated time.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionObs {
    pub(crate) label: String,
    pub(crate) rpcs: u64,
    pub(crate) opened: Duration,
    pub(crate) closed: Option<Duration>,
}

/// One server over all its boots.
#[derive(Debug, Clone)]
pub(crate) struct ServerObs {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) connections: Vec<ConnectionObs>,
}

impl ServerObs {
    pub(crate) fn rpcs(&self) -> u64 {
        self.connections.iter().map(|c| c.rpcs).sum()
    }
}

/// Everything a run observed.
#[derive(Debug)]
pub(crate) struct Observed<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) log: ClientLog,
    pub(crate) servers: Vec<ServerObs>,
    pub(crate) applied: Vec<Applied>,
    skipped: Vec<Fault>,
    ending: Ending,
    pub(crate) end: Duration,
}

impl<'a> Observed<'a> {
    pub(crate) fn new(
        scenario: &'a Scenario,
        mut log: ClientLog,
        boots: &[Incarnation],
        applied: Vec<Applied>,
        skipped: Vec<Fault>,
        ending: Ending,
        end: Duration,
    ) -> Self {
        log.rpcs.sort_by_key(|r| r.index);
        let servers = scenario
            .server_list()
            .into_iter()
            .map(|server| {
                let mut connections = Vec::new();
                for boot in boots.iter().filter(|b| b.server == server.name) {
                    for c in boot.stats().connections {
                        connections.push(ConnectionObs {
                            label: boot.label(c.id),
                            rpcs: c.rpcs,
                            opened: boot.started + Duration::from_millis(c.accepted_at_ms),
                            closed: c
                                .closed_at_ms
                                .map(|ms| boot.started + Duration::from_millis(ms)),
                        });
                    }
                }
                ServerObs { name: server.name, host: server.host, connections }
            })
            .collect();
        Self { scenario, log, servers, applied, skipped, ending, end }
    }

    pub(crate) fn counts(&self) -> super::RpcCounts {
        let ok = self.ok().count() as u32;
        super::RpcCounts {
            sent: self.log.rpcs.len() as u32,
            ok,
            failed: self.failed().count() as u32,
        }
    }

    pub(crate) fn ok(&self) -> impl Iterator<Item = &RpcRecord> {
        self.log.rpcs.iter().filter(|r| r.server().is_some())
    }

    fn failed(&self) -> impl Iterator<Item = &RpcRecord> {
        self.log.rpcs.iter().filter(|r| r.server().is_none())
    }

    /// The expected shares, normalised to sum to 1.
    pub(crate) fn weights(&self) -> Option<BTreeMap<String, f64>> {
        let weights = self.scenario.expect.weights.as_ref()?;
        let total: f64 = weights.values().sum();
        Some(weights.iter().map(|(k, v)| (k.clone(), v / total)).collect())
    }

    pub(crate) fn tolerance(&self) -> f64 {
        self.scenario.expect.tolerance.unwrap_or(0.05)
    }

    /// Observed shares per weighted server of the successful RPCs in `rpcs`.
    pub(crate) fn shares<'r>(
        &self,
        rpcs: impl Iterator<Item = &'r RpcRecord>,
    ) -> (usize, BTreeMap<String, f64>) {
        let mut counts: BTreeMap<String, usize> =
            self.servers.iter().map(|s| (s.name.clone(), 0)).collect();
        let mut total = 0;
        for server in rpcs.filter_map(RpcRecord::server) {
            *counts.entry(server.to_owned()).or_default() += 1;
            total += 1;
        }
        let shares = counts
            .into_iter()
            .map(|(k, n)| (k, if total == 0 { 0.0 } else { n as f64 / total as f64 }))
            .collect();
        (total, shares)
    }

    /// The servers a fault cuts off from the client.
    pub(crate) fn cut_off(&self, fault: &Fault) -> Vec<&str> {
        let hosts = fault.hosts();
        let touches_client = fault.host.is_some() || hosts.contains(&super::CLIENT_HOST);
        if !touches_client {
            return Vec::new();
        }
        self.servers
            .iter()
            .filter(|s| hosts.contains(&s.host.as_str()))
            .map(|s| s.name.as_str())
            .collect()
    }

    /// When the disruption `index` of `applied` ends: the first later heal touching its hosts.
    pub(crate) fn healed_at(&self, index: usize) -> Duration {
        let hosts = self.applied[index].fault.hosts();
        self.applied[index + 1..]
            .iter()
            .find(|a| a.fault.is_heal() && a.fault.hosts().iter().any(|h| hosts.contains(h)))
            .map_or(self.end, |a| a.at)
    }
}

/// Checks every property that applies.
pub(crate) fn evaluate(o: &Observed<'_>) -> Vec<Property> {
    let e = &o.scenario.expect;
    let mut out = vec![completed(o), deadlines(o), accounting(o)];
    if let Some(want) = &e.connections {
        out.push(connections(o, want));
    }
    if let Some(want) = e.total_connections {
        let got: usize = o.servers.iter().map(|s| s.connections.len()).sum();
        out.push(property("total_connections", got as u64 == want, format!("{got} (want {want})")));
    }
    if let Some(want) = e.subchannels {
        let got = o.log.subchannels_created;
        out.push(property("subchannels", got == want, format!("{got} created (want {want})")));
    }
    if let Some(policy) = &e.policy {
        out.push(policy_shape(o, policy));
    }
    if o.weights().is_some() {
        out.push(split(o));
    }
    if let Some(within) = e.failover_within_ms {
        out.push(failover(o, Duration::from_millis(within)));
    }
    if let Some(within) = e.recovery_within_ms {
        out.push(recovery(o, Duration::from_millis(within)));
    }
    if let Some(bound) = e.lost_per_fault {
        out.push(lost_per_fault(o, bound));
    }
    let default_max =
        (o.scenario.faults.is_empty() && e.all_fail_with.is_none() && e.lost_per_fault.is_none())
            .then_some(0);
    if let Some(bound) = e.max_failed.or(default_max) {
        let failed = o.failed().count() as u64;
        out.push(property(
            "max_failed",
            failed <= bound,
            format!("{failed} failed (at most {bound})"),
        ));
    }
    if let Some(code) = &e.all_fail_with {
        out.push(all_fail_with(o, code, e.fail_message_contains.as_deref()));
    }
    if let Some(within) = e.liveness_within_ms {
        out.push(liveness(o, Duration::from_millis(within)));
    }
    if let Some(want) = &e.final_state {
        let got = o.log.final_state.map_or_else(|| "none".to_owned(), |s| s.to_string());
        out.push(property("final_state", got == *want, format!("{got} (want {want})")));
    }
    if let Some(want) = &e.no_rpcs_after_ms {
        out.push(discovery::no_rpcs_after(o, want));
    }
    if let Some(after) = e.unhealthy_gets_no_rpcs_after_ms {
        out.push(after_faults::unhealthy_gets_no_rpcs(o, Duration::from_millis(after)));
    }
    if let Some(want) = &e.connections_after {
        out.push(discovery::connections_after(o, e.connections_after_ms.unwrap_or(0), want));
    }
    if let Some(want) = &e.unresolved_by_ms {
        out.push(discovery::unresolved_by(o, want));
    }
    if let Some(want) = &e.final_addresses {
        out.push(discovery::final_addresses(o, want));
    }
    if let Some(least) = e.min_compacted_rereads {
        out.push(discovery::compacted_rereads(o, least));
    }
    out
}

fn completed(o: &Observed<'_>) -> Property {
    let want = o.scenario.workload.rpcs as usize;
    let got = o.log.rpcs.len();
    let limit = secs(Duration::from_millis(o.scenario.time_limit_ms));
    if let Some(error) = &o.log.build_error {
        return property("completed", false, format!("the channel did not build: {error}"));
    }
    let mut measured = match &o.ending {
        Ending::Finished => format!("{got}/{want} RPCs ended by {}", secs(o.end)),
        Ending::TimedOut => format!("only {got}/{want} RPCs ended within the {limit} limit"),
        Ending::Error(error) => format!("a host failed: {error}"),
    };
    for fault in &o.skipped {
        let _ =
            write!(measured, "; fault at {}ms ({}) never applied", fault.at_ms, fault.describe());
    }
    let passed = matches!(o.ending, Ending::Finished) && got == want && o.skipped.is_empty();
    property("completed", passed, measured)
}

fn deadlines(o: &Observed<'_>) -> Property {
    if o.log.rpcs.is_empty() {
        return not_applicable("deadlines", "no RPC ended");
    }
    let over: Vec<&RpcRecord> =
        o.log.rpcs.iter().filter(|r| r.end - r.start > r.deadline + TICK).collect();
    let longest = o.log.rpcs.iter().map(|r| r.end - r.start).max().unwrap_or_default();
    let deadline = Duration::from_millis(o.scenario.workload.deadline_ms);
    let mut measured = format!(
        "longest {} against a {} deadline; {} over",
        secs(longest),
        secs(deadline),
        over.len()
    );
    if let Some(first) = over.first() {
        let _ = write!(measured, " (first: rpc {})", first.index);
    }
    property("deadlines", over.is_empty(), measured)
}

fn accounting(o: &Observed<'_>) -> Property {
    if o.ok().next().is_none() {
        return not_applicable("accounting", "no RPC succeeded, so no success to account for");
    }
    let mut parts = Vec::new();
    let mut passed = true;
    for server in &o.servers {
        let client = o.ok().filter(|r| r.server() == Some(server.name.as_str())).count() as u64;
        let recorded = server.rpcs();
        // A server may have served an RPC whose answer was lost to a fault; never the reverse.
        let ok = if o.scenario.faults.is_empty() { client == recorded } else { client <= recorded };
        passed &= ok;
        parts.push(format!("{} {client}/{recorded}", server.name));
    }
    property("accounting", passed, format!("client OK / server recorded: {}", parts.join(", ")))
}

fn connections(o: &Observed<'_>, want: &BTreeMap<String, u64>) -> Property {
    let mut parts = Vec::new();
    let mut passed = true;
    for server in &o.servers {
        let got = server.connections.len() as u64;
        match want.get(&server.name) {
            Some(&w) => {
                passed &= got == w;
                parts.push(format!("{}={got} (want {w})", server.name));
            }
            None => parts.push(format!("{}={got}", server.name)),
        }
    }
    property("connections", passed, parts.join(", "))
}

/// The most connections open at once, over all servers.
fn max_open(o: &Observed<'_>) -> usize {
    let mut edges: Vec<(Duration, i32)> = Vec::new();
    for c in o.servers.iter().flat_map(|s| &s.connections) {
        edges.push((c.opened, 1));
        if let Some(closed) = c.closed {
            edges.push((closed, -1));
        }
    }
    // Closes before opens at the same instant.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most.max(0) as usize
}

/// `pick_first`: exactly one connection open at any time. `round_robin`: one connection per
/// subchannel, all open at once (the most open at once equals the subchannels created), and
/// none left open at the end to a server the resolver's last update no longer lists. Exact, so
/// a leaked or doubled connection fails as surely as a missing one.
fn policy_shape(o: &Observed<'_>, policy: &str) -> Property {
    let most = max_open(o);
    match policy {
        "pick_first" => property(
            "policy",
            most == 1,
            format!("pick_first: at most {most} connection(s) open at once (want 1)"),
        ),
        "round_robin" => {
            let want = o.log.subchannels_created as usize;
            let listed = o.log.resolutions.last().map(|(_, list)| list.as_slice()).unwrap_or(&[]);
            let addrs: BTreeMap<String, String> =
                o.scenario.server_list().into_iter().map(|s| (s.name.clone(), s.addr())).collect();
            let left_open: usize = o
                .servers
                .iter()
                .filter(|s| addrs.get(&s.name).is_none_or(|addr| !listed.contains(addr)))
                .map(|s| s.connections.iter().filter(|c| c.closed.is_none()).count())
                .sum();
            property(
                "policy",
                most == want && want > 0 && left_open == 0,
                format!(
                    "round_robin: {most} connections open at once for {want} subchannels (want \
                     equal); {left_open} left open to unlisted servers (want 0)"
                ),
            )
        }
        other => property("policy", false, format!("unknown policy {other:?}")),
    }
}

/// Formats shares as `a=0.667 b=0.333`.
pub(crate) fn shares_text(shares: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = shares.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
    parts.join(" ")
}

fn within(shares: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>, tolerance: f64) -> bool {
    shares.iter().all(|(k, v)| (v - want.get(k).copied().unwrap_or(0.0)).abs() <= tolerance)
}

/// The start of the window the overall split is measured over: `settle_ms` after the last
/// fault or late etcd registration (`register.at_ms`) that changes which servers the client can
/// use (latency changes do not), or the whole run.
pub(crate) fn split_window_start(o: &Observed<'_>) -> Duration {
    let settle = Duration::from_millis(o.scenario.expect.settle_ms.unwrap_or(0));
    let fault = o.applied.iter().rev().find(|a| a.fault.action != Action::Latency).map(|a| a.at);
    let registered = o
        .scenario
        .server_list()
        .into_iter()
        .filter_map(|s| s.register.filter(|r| r.at_ms > 0))
        .map(|r| Duration::from_millis(r.at_ms))
        .max();
    fault.max(registered).map_or(Duration::ZERO, |at| at + settle)
}

fn split(o: &Observed<'_>) -> Property {
    let want = o.weights().unwrap_or_default();
    let from = split_window_start(o);
    let (total, shares) = o.shares(o.log.rpcs.iter().filter(|r| r.start >= from));
    let tolerance = o.tolerance();
    let measured = format!(
        "{} of {total} OK RPCs from {} (want {} ±{tolerance})",
        shares_text(&shares),
        secs(from),
        shares_text(&want)
    );
    property("split", total > 0 && within(&shares, &want, tolerance), measured)
}

fn all_fail_with(o: &Observed<'_>, code: &str, contains: Option<&str>) -> Property {
    let matching = o
        .log
        .rpcs
        .iter()
        .filter(|r| match &r.outcome {
            Outcome::Failed { code: c, message } => {
                c == code && contains.is_none_or(|text| message.contains(text))
            }
            Outcome::Ok { .. } => false,
        })
        .count();
    let total = o.log.rpcs.len();
    let example = o.log.rpcs.iter().find_map(|r| match &r.outcome {
        Outcome::Failed { code, message } => Some(format!("{code}: {message}")),
        Outcome::Ok { .. } => None,
    });
    let mut measured = format!("{matching}/{total} failed with {code}");
    if let Some(text) = contains {
        let _ = write!(measured, " containing {text:?}");
    }
    if let Some(example) = example {
        let _ = write!(measured, "; e.g. {example}");
    }
    property("all_fail_with", total > 0 && matching == total, measured)
}
