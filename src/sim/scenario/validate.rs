//! Checks that a parsed scenario is consistent: server names and ports, hosts named by links and
//! faults, what each fault action needs, addresses, and the servers `[expect]` names.

use std::fmt::Display;

use super::locate::{Step, key_path};
use super::{Action, CLIENT_HOST, Fault, Scenario, Server};
use crate::address::{Address, AttributeValue};
use crate::anchor::{AnchorList, EtcdService};
use crate::balancer::ConnectivityState;
use crate::resolver::pass::PassBuilder;
use crate::resolver::passthrough::PassthroughBuilder;
use crate::resolver::{ResolverBuilder, UpdateSink};
use crate::service_config::ServiceConfig;
use crate::target::Target;

/// What is wrong with a scenario, and where in its file.
#[derive(Debug)]
pub(super) struct Problem {
    /// The path to the offending key, for the line number.
    pub(super) at: Vec<Step>,
    /// Which part is wrong (`client.target`, `fault 2 (crash a)`, …).
    pub(super) what: String,
    /// Why, with the allowed range.
    pub(super) reason: String,
}

type Checked = Result<(), Problem>;

/// The policies `expect.policy` may name.
const POLICIES: [&str; 2] = ["pick_first", "round_robin"];

/// The connectivity states `expect.final_state` may name.
const STATES: [ConnectivityState; 5] = [
    ConnectivityState::Idle,
    ConnectivityState::Connecting,
    ConnectivityState::Ready,
    ConnectivityState::TransientFailure,
    ConnectivityState::Shutdown,
];

fn problem(at: Vec<Step>, what: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem { at, what: what.into(), reason: reason.into() }
}

/// A problem with the dotted key `key` (`workload.rpcs`).
fn at_key(key: &str, reason: impl Into<String>) -> Problem {
    problem(key_path(key), key, reason)
}

/// A problem with `key` of entry `index` (0-based) of the array of tables `table`, called `what`.
fn at_entry(table: &str, index: usize, key: Option<&str>, what: String, reason: String) -> Problem {
    let mut at = key_path(table);
    at.push(Step::Index(index));
    at.extend(key.map(|k| Step::Key(k.to_owned())));
    problem(at, what, reason)
}

/// `value` in `lo..=hi`, else the range and the value as a reason.
fn range<T: PartialOrd + Display>(value: T, lo: T, hi: T, note: &str) -> Result<(), String> {
    if value < lo || value > hi {
        return Err(format!("must be in {lo}..={hi}{note}, got {value}"));
    }
    Ok(())
}

/// `range` for the dotted key `key`.
fn key_range<T: PartialOrd + Display>(key: &str, value: T, lo: T, hi: T, note: &str) -> Checked {
    range(value, lo, hi, note).map_err(|reason| at_key(key, reason))
}

/// `range` for an optional dotted key.
fn opt_range<T: PartialOrd + Display>(key: &str, value: Option<T>, lo: T, hi: T) -> Checked {
    value.map_or(Ok(()), |v| key_range(key, v, lo, hi, ""))
}

impl Scenario {
    pub(super) fn validate(&self) -> Checked {
        self.validate_sizes()?;
        let servers = self.server_list();
        let mut names = Vec::new();
        for server in &servers {
            let what = format!("server {:?}", server.name);
            let entry = |reason: String| {
                at_entry("server", self.spec_index(&server.name), None, what.clone(), reason)
            };
            if server.host == CLIENT_HOST {
                return Err(entry("the host name \"client\" is the client's".into()));
            }
            if names.contains(&&server.name) {
                return Err(entry("named twice".into()));
            }
            names.push(&server.name);
            let clash = servers.iter().filter(|s| s.host == server.host && s.port == server.port);
            if clash.count() > 1 {
                return Err(entry(format!("{}:{} is used twice", server.host, server.port)));
            }
        }
        self.validate_etcd(&servers)?;
        let mut hosts = self.hosts();
        hosts.extend(self.etcd.iter().map(|e| e.host.clone()));
        let known = |h: &str| h == CLIENT_HOST || hosts.iter().any(|k| k == h);
        self.validate_times()?;
        for (i, link) in self.network.links.iter().enumerate() {
            let what = format!("network.link {}", i + 1);
            if let Some(h) = link.between.iter().find(|h| !known(h)) {
                return Err(at_entry("network.link", i, Some("between"), what, unknown_host(h)));
            }
            range(link.latency_ms, 0, MAX_TIME_MS, " (one day)").map_err(|reason| {
                at_entry(
                    "network.link",
                    i,
                    Some("latency_ms"),
                    what,
                    format!("`latency_ms` {reason}"),
                )
            })?;
        }
        self.validate_backoff()?;
        self.validate_client()?;
        for (i, fault) in self.faults.iter().enumerate() {
            self.validate_fault(i, fault, &known)?;
        }
        self.validate_expect(&names)
    }

    /// The `[[server]]` entry (0-based) that `name` comes from.
    fn spec_index(&self, name: &str) -> usize {
        let expands_to = |spec: &super::ServerSpec| match spec.count {
            None | Some(1) => spec.name == name,
            Some(n) => name
                .strip_prefix(spec.name.as_str())
                .and_then(|i| i.parse::<u32>().ok())
                .is_some_and(|i| (1..=n).contains(&i)),
        };
        self.servers.iter().position(expands_to).unwrap_or(0)
    }

    /// The sizes that bound a run's memory and time: servers, workers, RPCs, faults, simulated
    /// time. Checked before anything expands `count`.
    fn validate_sizes(&self) -> Checked {
        key_range("time_limit_ms", self.time_limit_ms, 1, MAX_TIME_LIMIT_MS, " (ten minutes)")?;
        if self.servers.is_empty() {
            return Err(at_key("server", "at least one [[server]] is needed"));
        }
        let mut total = 0usize;
        for (i, spec) in self.servers.iter().enumerate() {
            let what = || format!("server {:?}", spec.name);
            let count = spec.count.unwrap_or(1);
            range(count, 1, MAX_SERVERS as u32, " (servers in all)").map_err(|reason| {
                at_entry("server", i, Some("count"), what(), format!("`count` {reason}"))
            })?;
            total += count as usize;
            if total > MAX_SERVERS {
                let reason = format!("at most {MAX_SERVERS} servers in all (count included)");
                return Err(at_entry("server", i, Some("count"), what(), reason));
            }
            range(spec.port, 1, MAX_PORT, "").map_err(|reason| {
                at_entry("server", i, Some("port"), what(), format!("`port` {reason}"))
            })?;
            if let Some(delay) = spec.body_delay_ms {
                let limit = self.time_limit_ms;
                range(delay, 0, limit, " (time_limit_ms)").map_err(|reason| {
                    let reason = format!("`body_delay_ms` {reason}");
                    at_entry("server", i, Some("body_delay_ms"), what(), reason)
                })?;
            }
            self.validate_max_age(i, spec)?;
        }
        let w = &self.workload;
        key_range("workload.rpcs", w.rpcs, 1, MAX_RPCS, "")?;
        key_range("workload.concurrency", w.concurrency, 1, MAX_CONCURRENCY, "")?;
        if self.faults.len() > MAX_FAULTS {
            let reason = format!("at most {MAX_FAULTS} faults, got {}", self.faults.len());
            return Err(at_entry("fault", MAX_FAULTS, None, "fault".into(), reason));
        }
        Ok(())
    }

    /// A server's `max_connection_age_ms` (at least [`MIN_MAX_CONNECTION_AGE_MS`], so a run
    /// is not all reconnects) and `max_connection_age_grace_ms` (only beside it).
    fn validate_max_age(&self, i: usize, spec: &super::ServerSpec) -> Checked {
        let what = || format!("server {:?}", spec.name);
        let limit = self.time_limit_ms;
        if let Some(age) = spec.max_connection_age_ms {
            range(
                age,
                MIN_MAX_CONNECTION_AGE_MS,
                limit.max(MIN_MAX_CONNECTION_AGE_MS),
                " (time_limit_ms)",
            )
            .map_err(|reason| {
                let reason = format!("`max_connection_age_ms` {reason}");
                at_entry("server", i, Some("max_connection_age_ms"), what(), reason)
            })?;
        }
        if let Some(grace) = spec.max_connection_age_grace_ms {
            let key = "max_connection_age_grace_ms";
            if spec.max_connection_age_ms.is_none() {
                let reason = format!("`{key}` needs `max_connection_age_ms`");
                return Err(at_entry("server", i, Some(key), what(), reason));
            }
            range(grace, 1, limit, " (time_limit_ms)").map_err(|reason| {
                at_entry("server", i, Some(key), what(), format!("`{key}` {reason}"))
            })?;
        }
        Ok(())
    }

    /// Every time key of `[client]`, `[workload]` and `[network]`.
    fn validate_times(&self) -> Checked {
        let day = " (one day)";
        let c = &self.client;
        key_range("client.connect_timeout_ms", c.connect_timeout_ms, 1, MAX_TIME_MS, day)?;
        key_range("client.keepalive.interval_ms", c.keepalive.interval_ms, 1, MAX_TIME_MS, day)?;
        key_range("client.keepalive.timeout_ms", c.keepalive.timeout_ms, 1, MAX_TIME_MS, day)?;
        let w = &self.workload;
        key_range("workload.deadline_ms", w.deadline_ms, 1, MAX_TIME_MS, day)?;
        key_range("workload.pacing_ms", w.pacing_ms, 0, MAX_TIME_MS, day)?;
        key_range("workload.start_ms", w.start_ms, 0, MAX_TIME_MS, day)?;
        let n = &self.network;
        key_range("network.min_latency_ms", n.min_latency_ms, 0, MAX_TIME_MS, day)?;
        key_range("network.max_latency_ms", n.max_latency_ms, 0, MAX_TIME_MS, day)?;
        if n.min_latency_ms > n.max_latency_ms {
            return Err(at_key("network.min_latency_ms", "is above max_latency_ms"));
        }
        Ok(())
    }

    /// `[client]`: the target and the service config, checked as the channel will check them,
    /// and the manual addresses.
    fn validate_client(&self) -> Checked {
        check_target(&self.client.target).map_err(|reason| at_key("client.target", reason))?;
        if let Some(json) = &self.client.service_config {
            ServiceConfig::parse(json)
                .map_err(|error| at_key("client.service_config", error.to_string()))?;
        }
        if let Some(list) = &self.client.manual_addresses {
            let key = "client.manual_addresses";
            if !self.has_manual_target() {
                return Err(at_key(key, "goes with a manual:/// target only"));
            }
            check_addresses(list).map_err(|reason| at_key(key, reason))?;
        }
        Ok(())
    }

    /// `[expect]`: names of servers, codes, states and policies; numbers; keys that need others.
    fn validate_expect(&self, names: &[&String]) -> Checked {
        let e = &self.expect;
        let maps = [
            ("connections", e.connections.as_ref().map(|m| m.keys().collect::<Vec<_>>())),
            ("weights", e.weights.as_ref().map(|m| m.keys().collect())),
            ("no_rpcs_after_ms", e.no_rpcs_after_ms.as_ref().map(|m| m.keys().collect())),
            ("connections_after", e.connections_after.as_ref().map(|m| m.keys().collect())),
        ];
        for (key, keys) in maps {
            if let Some(name) = keys.into_iter().flatten().find(|n| !names.contains(n)) {
                return Err(at_key(
                    &format!("expect.{key}"),
                    format!("no server is named {name:?}"),
                ));
            }
        }
        let one_of = |key: &str, value: &Option<String>, allowed: &[String]| match value {
            Some(v) if !allowed.contains(v) => {
                Err(at_key(key, format!("{v:?} is none of {}", allowed.join(", "))))
            }
            _ => Ok(()),
        };
        let policies: Vec<String> = POLICIES.iter().map(|p| (*p).to_owned()).collect();
        one_of("expect.policy", &e.policy, &policies)?;
        let codes: Vec<String> = (0..=16)
            .map(|i| super::super::client::code_name(tonic::Code::from_i32(i)).to_owned())
            .collect();
        one_of("expect.all_fail_with", &e.all_fail_with, &codes)?;
        let states: Vec<String> = STATES.iter().map(ToString::to_string).collect();
        one_of("expect.final_state", &e.final_state, &states)?;
        self.validate_expect_numbers()?;
        let needs = [
            (
                "fail_message_contains",
                e.fail_message_contains.is_some(),
                "all_fail_with",
                e.all_fail_with.is_some(),
            ),
            ("settle_ms", e.settle_ms.is_some(), "weights", e.weights.is_some()),
            ("tolerance", e.tolerance.is_some(), "weights", e.weights.is_some()),
            (
                "connections_after_ms",
                e.connections_after_ms.is_some(),
                "connections_after",
                e.connections_after.is_some(),
            ),
        ];
        for (key, present, other, other_present) in needs {
            if present && !other_present {
                return Err(at_key(&format!("expect.{key}"), format!("goes with `{other}`")));
            }
        }
        let addresses = e
            .unresolved_by_ms
            .iter()
            .flat_map(|m| m.keys())
            .chain(e.final_addresses.iter().flatten());
        for addr in addresses {
            parse_address(addr).map_err(|reason| at_key("expect", reason))?;
        }
        if e.min_compacted_rereads == Some(0) {
            return Err(at_key("expect.min_compacted_rereads", "must be at least 1"));
        }
        if e.min_compacted_rereads.is_some() && !self.has_etcd_target() {
            return Err(at_key("expect.min_compacted_rereads", "needs an etcd:/// target"));
        }
        Ok(())
    }

    /// `[expect]`'s numbers: times up to one day, weights and tolerance finite.
    fn validate_expect_numbers(&self) -> Checked {
        let e = &self.expect;
        for (key, value) in [
            ("settle_ms", e.settle_ms),
            ("failover_within_ms", e.failover_within_ms),
            ("recovery_within_ms", e.recovery_within_ms),
            ("liveness_within_ms", e.liveness_within_ms),
            ("connections_after_ms", e.connections_after_ms),
            ("unhealthy_gets_no_rpcs_after_ms", e.unhealthy_gets_no_rpcs_after_ms),
        ] {
            opt_range(&format!("expect.{key}"), value, 0, MAX_TIME_MS)?;
        }
        let per_server =
            [("no_rpcs_after_ms", &e.no_rpcs_after_ms), ("unresolved_by_ms", &e.unresolved_by_ms)];
        for (key, map) in per_server {
            for ms in map.iter().flat_map(|m| m.values()) {
                key_range(&format!("expect.{key}"), *ms, 0, MAX_TIME_MS, " (one day)")?;
            }
        }
        if let Some(weights) = &e.weights {
            if let Some((name, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
                let reason =
                    format!("the weight of {name:?} must be finite and at least 0, got {w}");
                return Err(at_key("expect.weights", reason));
            }
            let total: f64 = weights.values().sum();
            if !(total.is_finite() && total > 0.0) {
                return Err(at_key(
                    "expect.weights",
                    format!("must add up to a finite number above 0, got {total}"),
                ));
            }
        }
        if let Some(t) = e.tolerance
            && !(t.is_finite() && (0.0..=1.0).contains(&t))
        {
            let reason = format!("must be finite and in 0.0..=1.0, got {t}");
            return Err(at_key("expect.tolerance", reason));
        }
        Ok(())
    }

    /// `[client.backoff]`: numbers the backoff arithmetic can use without overflowing, looping
    /// without delay or growing without bound.
    fn validate_backoff(&self) -> Checked {
        let b = &self.client.backoff;
        let key = |name: &str| format!("client.backoff.{name}");
        if !(b.multiplier.is_finite() && (1.0..=MAX_BACKOFF_MULTIPLIER).contains(&b.multiplier)) {
            return Err(at_key(
                &key("multiplier"),
                format!(
                    "must be finite and in 1.0..={MAX_BACKOFF_MULTIPLIER:.1}, got {}",
                    b.multiplier
                ),
            ));
        }
        if !(b.jitter.is_finite() && (0.0..=1.0).contains(&b.jitter)) {
            return Err(at_key(
                &key("jitter"),
                format!("must be finite and in 0.0..=1.0, got {}", b.jitter),
            ));
        }
        key_range(&key("max_ms"), b.max_ms, 1, MAX_BACKOFF_MS, " (one day)")?;
        if !(1..=b.max_ms).contains(&b.initial_ms) {
            return Err(at_key(
                &key("initial_ms"),
                format!("must be in 1..=max_ms ({}), got {}", b.max_ms, b.initial_ms),
            ));
        }
        Ok(())
    }

    /// Whether the client's target uses the `etcd` scheme.
    pub(crate) fn has_etcd_target(&self) -> bool {
        self.client.target.to_ascii_lowercase().starts_with("etcd:")
    }

    /// Whether the client's target uses the `manual` scheme.
    fn has_manual_target(&self) -> bool {
        self.client.target.to_ascii_lowercase().starts_with("manual:")
    }

    /// `[etcd]` and everything that needs it: an `etcd:///` target, registering servers.
    fn validate_etcd(&self, servers: &[Server]) -> Checked {
        let Some(etcd) = &self.etcd else {
            if self.has_etcd_target() {
                return Err(at_key("client.target", "an etcd:/// target needs [etcd]"));
            }
            if let Some(s) = servers.iter().find(|s| s.register.is_some()) {
                let what = format!("server {:?}", s.name);
                let reason = "`register` needs [etcd]".to_owned();
                return Err(at_entry(
                    "server",
                    self.spec_index(&s.name),
                    Some("register"),
                    what,
                    reason,
                ));
            }
            return Ok(());
        };
        if etcd.host == CLIENT_HOST || servers.iter().any(|s| s.host == etcd.host) {
            return Err(at_key("etcd.host", format!("host {:?} is taken", etcd.host)));
        }
        key_range("etcd.port", etcd.port, 1, MAX_PORT, "")?;
        key_range("etcd.min_lease_ttl_s", etcd.min_lease_ttl_s, 1, MAX_TTL_S, " (one day)")?;
        key_range(
            "etcd.request_timeout_ms",
            etcd.request_timeout_ms,
            1,
            MAX_TIME_MS,
            " (one day)",
        )?;
        for server in servers {
            let Some(register) = &server.register else { continue };
            let index = self.spec_index(&server.name);
            let fail = |reason: String| {
                at_entry(
                    "server",
                    index,
                    Some("register"),
                    format!("server {:?}", server.name),
                    reason,
                )
            };
            range(register.ttl_s, 1, MAX_TTL_S, " (one day)")
                .map_err(|r| fail(format!("`register.ttl_s` {r}")))?;
            let limit = self.time_limit_ms;
            range(register.at_ms, 0, limit, "").map_err(|_| {
                fail(format!(
                    "`register.at_ms` must be in 0..=time_limit_ms ({limit}), got {}",
                    register.at_ms
                ))
            })?;
            if register.service.contains('#') {
                return Err(fail("register.service cannot contain '#'".into()));
            }
            if let Err(error) = register.service.parse::<EtcdService>() {
                return Err(fail(format!("register.service: {error}")));
            }
        }
        Ok(())
    }

    fn validate_fault(&self, index: usize, fault: &Fault, known: &dyn Fn(&str) -> bool) -> Checked {
        let what = format!("fault {} ({})", index + 1, fault.describe());
        let fail =
            |key: Option<&str>, reason: String| at_entry("fault", index, key, what.clone(), reason);
        let limit = self.time_limit_ms;
        if fault.at_ms > limit {
            let reason =
                format!("`at_ms` must be in 0..=time_limit_ms ({limit}), got {}", fault.at_ms);
            return Err(fail(Some("at_ms"), reason));
        }
        if let Some(ms) = fault.latency_ms {
            range(ms, 0, MAX_TIME_MS, " (one day)")
                .map_err(|r| fail(Some("latency_ms"), format!("`latency_ms` {r}")))?;
        }
        let needs_server = matches!(
            fault.action,
            Action::Register
                | Action::Deregister
                | Action::ExpireLease
                | Action::SlowBody
                | Action::GoAway
                | Action::Unhealthy
                | Action::Healthy
        );
        match (&fault.server, needs_server) {
            (None, true) => return Err(fail(None, "needs `server`".into())),
            (Some(_), false) => return Err(fail(Some("server"), "takes no `server`".into())),
            (Some(name), true)
                if matches!(
                    fault.action,
                    Action::SlowBody | Action::GoAway | Action::Unhealthy | Action::Healthy
                ) =>
            {
                let known = self.server_list().iter().any(|s| s.name == *name);
                if !known {
                    let reason = format!("no server is named {name:?}");
                    return Err(fail(Some("server"), reason));
                }
            }
            (Some(name), true) => {
                let registered =
                    self.server_list().iter().any(|s| s.name == *name && s.register.is_some());
                if !registered {
                    let reason = format!("no server named {name:?} has `register`");
                    return Err(fail(Some("server"), reason));
                }
            }
            _ => {}
        }
        if fault.service.is_some() && !matches!(fault.action, Action::Unhealthy | Action::Healthy) {
            let reason = "`service` goes with action = \"unhealthy\" or \"healthy\" only".into();
            return Err(fail(Some("service"), reason));
        }
        if fault.action == Action::Compact && self.etcd.is_none() {
            return Err(fail(Some("action"), "compact needs [etcd]".into()));
        }
        let needs_host = matches!(fault.action, Action::Crash | Action::Restart | Action::Bounce);
        let needs_pair = matches!(
            fault.action,
            Action::Partition | Action::Repair | Action::Hold | Action::Release | Action::Latency
        );
        match (&fault.host, needs_host) {
            (None, true) => return Err(fail(None, "needs `host`".into())),
            (Some(_), false) => return Err(fail(Some("host"), "takes no `host`".into())),
            (Some(h), true) if h == CLIENT_HOST || !known(h) => {
                return Err(fail(Some("host"), unknown_host(h)));
            }
            _ => {}
        }
        match (&fault.between, needs_pair) {
            (None, true) => return Err(fail(None, "needs `between = [a, b]`".into())),
            (Some(_), false) => return Err(fail(Some("between"), "takes no `between`".into())),
            (Some(pair), true) => {
                if let Some(h) = pair.iter().find(|h| !known(h)) {
                    return Err(fail(Some("between"), unknown_host(h)));
                }
            }
            _ => {}
        }
        if fault.oneway && !matches!(fault.action, Action::Partition | Action::Repair) {
            return Err(fail(
                Some("oneway"),
                "`oneway` applies to partition and repair only".into(),
            ));
        }
        match (fault.delay_ms, fault.action == Action::SlowBody) {
            (None, true) => return Err(fail(None, "needs `delay_ms`".into())),
            (Some(_), false) => {
                let reason = "`delay_ms` goes with action = \"slow_body\" only".into();
                return Err(fail(Some("delay_ms"), reason));
            }
            (Some(ms), true) => {
                range(ms, 0, limit, " (time_limit_ms)")
                    .map_err(|r| fail(Some("delay_ms"), format!("`delay_ms` {r}")))?;
            }
            (None, false) => {}
        }
        if (fault.action == Action::Latency) != fault.latency_ms.is_some() {
            let reason = "`latency_ms` goes with action = \"latency\" only".into();
            return Err(fail(Some("latency_ms"), reason));
        }
        if fault.push.is_some() && fault.action != Action::Resolve {
            return Err(fail(Some("push"), "`push` goes with resolve only".into()));
        }
        match (&fault.addresses, fault.action == Action::Resolve) {
            (None, true) => Err(fail(None, "needs `addresses`".into())),
            (Some(_), false) => {
                Err(fail(Some("addresses"), "`addresses` goes with resolve only".into()))
            }
            (Some(list), true) => {
                if !self.has_manual_target() {
                    return Err(fail(Some("action"), "resolve needs a manual:/// target".into()));
                }
                check_addresses(list).map_err(|reason| fail(Some("addresses"), reason))
            }
            (None, false) => Ok(()),
        }
    }
}

/// The schemes a simulated client has; `dns` only to refuse it by name.
const SIM_SCHEMES: [&str; 5] = ["passthrough", "pass", "dns", "etcd", "manual"];

/// Checks the client's target the way the channel will: [`Target::parse`], then the scheme's
/// resolver builder (`pass`, `passthrough`) or endpoint grammar (`etcd`).
fn check_target(text: &str) -> Result<(), String> {
    let target = Target::parse(text, |s| SIM_SCHEMES.contains(&s)).map_err(|e| e.to_string())?;
    let build = |builder: &dyn ResolverBuilder| {
        let (sink, _updates) = UpdateSink::pair();
        builder.build(&target, sink).map(drop).map_err(|e| e.to_string())
    };
    match target.scheme() {
        "dns" => Err("a dns:/// target would do a real system lookup from inside the simulation; \
                      use pass:///, etcd:///, manual:/// or passthrough:///"
            .to_owned()),
        "pass" => {
            build(&PassBuilder)?;
            let anchors: AnchorList =
                target.endpoint().parse().map_err(|e: crate::anchor::AnchorError| e.to_string())?;
            let total = anchors.total_connections();
            if total > MAX_CONNECTIONS {
                return Err(format!(
                    "asks for {total} connections; a simulation allows at most {MAX_CONNECTIONS} connections"
                ));
            }
            Ok(())
        }
        "etcd" => {
            if !target.authority().is_empty() {
                return Err(
                    "write etcd:///<service>#N: the simulation's etcd is [etcd], not the authority"
                        .into(),
                );
            }
            target.endpoint().parse::<EtcdService>().map(drop).map_err(|e| e.to_string())
        }
        "manual" => Ok(()),
        _ => build(&PassthroughBuilder),
    }
}

/// Each entry parses as an address, and there are at most [`MAX_CONNECTIONS`].
fn check_addresses(list: &[String]) -> Result<(), String> {
    if list.len() > MAX_CONNECTIONS {
        return Err(format!("at most {MAX_CONNECTIONS} addresses, got {}", list.len()));
    }
    for item in list {
        parse_address(item)?;
    }
    Ok(())
}

/// The most servers a scenario may run, after `count` expansion: each is a turmoil host that
/// every simulated millisecond ticks.
pub const MAX_SERVERS: usize = 64;

/// The shortest `max_connection_age_ms` a scenario may set: below it a run would be mostly
/// reconnects (each costs a few simulated round trips) rather than traffic.
pub const MIN_MAX_CONNECTION_AGE_MS: u64 = 100;

/// The most RPCs (`workload.rpcs`) a scenario may send.
pub const MAX_RPCS: u32 = 20_000;

/// The most concurrent workers (`workload.concurrency`): one task each.
pub const MAX_CONCURRENCY: u32 = 1024;

/// The most `[[fault]]` entries a scenario may schedule.
pub const MAX_FAULTS: usize = 256;

/// The most connections a `pass:///` target or a manual address list may ask for (the sum of
/// its `#N`s, the length of the list). The simulated accept queue holds
/// [`crate::sim::SIM_TCP_CAPACITY`] connection attempts, so all of them fit in one tick.
pub const MAX_CONNECTIONS: usize = 4096;

/// The longest simulated run (`time_limit_ms`): ten minutes of simulated time.
pub const MAX_TIME_LIMIT_MS: u64 = 600_000;

/// The longest time any other `_ms` key may give: one day.
pub const MAX_TIME_MS: u64 = 86_400_000;

/// The longest lease time-to-live, s (`etcd.min_lease_ttl_s`, `register.ttl_s`): one day.
pub const MAX_TTL_S: i64 = 86_400;

/// The greatest port; 0 (an ephemeral port) is no port a client could dial.
pub const MAX_PORT: u16 = u16::MAX;

/// The largest `client.backoff.multiplier` a scenario may ask for.
const MAX_BACKOFF_MULTIPLIER: f64 = 100.0;

/// The largest `client.backoff.max_ms` (and so `initial_ms`): one day.
const MAX_BACKOFF_MS: u64 = 86_400_000;

fn unknown_host(host: &str) -> String {
    format!("no host is named {host:?} (hosts are the servers', etcd's and \"client\")")
}

/// Parses `host:port` or `host:port{key=value,...}` (the form addresses print in), where a value
/// is an integer or a (possibly quoted) string.
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn parse_address(text: &str) -> Result<Address, String> {
    let (addr, attributes) = match text.split_once('{') {
        None => (text, None),
        Some((addr, rest)) => match rest.strip_suffix('}') {
            Some(inner) => (addr, Some(inner)),
            None => return Err(format!("address {text:?}: unclosed '{{'")),
        },
    };
    if addr.is_empty() || !addr.contains(':') || addr.contains(char::is_whitespace) {
        return Err(format!("address {text:?}: write host:port"));
    }
    let mut address = Address::new(addr);
    for pair in attributes.iter().flat_map(|a| a.split(',')).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("address {text:?}: attribute {pair:?} is not key=value"));
        };
        let value = match value.parse::<i64>() {
            Ok(n) => AttributeValue::Int(n),
            Err(_) => AttributeValue::Str(value.trim_matches('"').to_owned()),
        };
        address = address.with_attribute(key, value);
    }
    Ok(address)
}
