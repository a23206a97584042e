//! Checks that a parsed scenario is consistent: server names and ports, hosts named by links and
//! faults, what each fault action needs, addresses, and the servers `[expect]` names.

use super::{Action, CLIENT_HOST, Fault, Scenario, ScenarioError, Server};
use crate::address::{Address, AttributeValue};
use crate::anchor::EtcdService;

impl Scenario {
    fn invalid(&self, what: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid { path: self.path.clone(), what: what.into(), reason: reason.into() }
    }

    pub(super) fn validate(&self) -> Result<(), ScenarioError> {
        let servers = self.server_list();
        if servers.is_empty() {
            return Err(self.invalid("server", "at least one [[server]] is needed"));
        }
        let mut names = Vec::new();
        for server in &servers {
            if server.host == CLIENT_HOST {
                return Err(self.invalid(
                    format!("server {:?}", server.name),
                    "the host name \"client\" is the client's",
                ));
            }
            if names.contains(&&server.name) {
                return Err(self.invalid(format!("server {:?}", server.name), "named twice"));
            }
            names.push(&server.name);
            let clash = servers.iter().filter(|s| s.host == server.host && s.port == server.port);
            if clash.count() > 1 {
                return Err(self.invalid(
                    format!("server {:?}", server.name),
                    format!("{}:{} is used twice", server.host, server.port),
                ));
            }
        }
        self.validate_etcd(&servers)?;
        let mut hosts = self.hosts();
        hosts.extend(self.etcd.iter().map(|e| e.host.clone()));
        let known = |h: &str| h == CLIENT_HOST || hosts.iter().any(|k| k == h);
        let w = &self.workload;
        if w.concurrency == 0 || w.rpcs == 0 {
            return Err(self.invalid("workload", "rpcs and concurrency must be at least 1"));
        }
        if self.network.min_latency_ms > self.network.max_latency_ms {
            return Err(self.invalid("network", "min_latency_ms is above max_latency_ms"));
        }
        for (i, link) in self.network.links.iter().enumerate() {
            if let Some(h) = link.between.iter().find(|h| !known(h)) {
                return Err(self.invalid(format!("network.link {}", i + 1), unknown_host(h)));
            }
        }
        self.validate_backoff()?;
        if let Some(list) = &self.client.manual_addresses {
            self.check_addresses("client.manual_addresses", list)?;
        }
        for (i, fault) in self.faults.iter().enumerate() {
            self.validate_fault(i + 1, fault, &known)?;
        }
        let e = &self.expect;
        let named = e.connections.iter().flat_map(|m| m.keys());
        let named = named.chain(e.weights.iter().flat_map(|m| m.keys()));
        let named = named.chain(e.no_rpcs_after_ms.iter().flat_map(|m| m.keys()));
        let mut named = named.chain(e.connections_after.iter().flat_map(|m| m.keys()));
        if let Some(name) = named.find(|n| !names.contains(n)) {
            return Err(self.invalid("expect", format!("no server is named {name:?}")));
        }
        if e.connections_after_ms.is_some() && e.connections_after.is_none() {
            return Err(
                self.invalid("expect", "`connections_after_ms` goes with `connections_after`")
            );
        }
        let addresses = e
            .unresolved_by_ms
            .iter()
            .flat_map(|m| m.keys())
            .chain(e.final_addresses.iter().flatten());
        for addr in addresses {
            parse_address(addr).map_err(|reason| self.invalid("expect", reason))?;
        }
        if e.min_compacted_rereads == Some(0) {
            return Err(self.invalid("expect", "`min_compacted_rereads` must be at least 1"));
        }
        if e.min_compacted_rereads.is_some() && !self.has_etcd_target() {
            return Err(self.invalid("expect", "`min_compacted_rereads` needs an etcd:/// target"));
        }
        Ok(())
    }

    /// `[client.backoff]`: numbers the backoff arithmetic can use without overflowing, looping
    /// without delay or growing without bound.
    fn validate_backoff(&self) -> Result<(), ScenarioError> {
        let b = &self.client.backoff;
        let key = |name: &str| format!("client.backoff.{name}");
        if !(b.multiplier.is_finite() && (1.0..=MAX_BACKOFF_MULTIPLIER).contains(&b.multiplier)) {
            return Err(self.invalid(
                key("multiplier"),
                format!(
                    "must be finite and in 1.0..={MAX_BACKOFF_MULTIPLIER:.1}, got {}",
                    b.multiplier
                ),
            ));
        }
        if !(b.jitter.is_finite() && (0.0..=1.0).contains(&b.jitter)) {
            return Err(self.invalid(
                key("jitter"),
                format!("must be finite and in 0.0..=1.0, got {}", b.jitter),
            ));
        }
        if !(1..=MAX_BACKOFF_MS).contains(&b.max_ms) {
            return Err(self.invalid(
                key("max_ms"),
                format!("must be in 1..={MAX_BACKOFF_MS} (one day), got {}", b.max_ms),
            ));
        }
        if !(1..=b.max_ms).contains(&b.initial_ms) {
            return Err(self.invalid(
                key("initial_ms"),
                format!("must be in 1..=max_ms ({}), got {}", b.max_ms, b.initial_ms),
            ));
        }
        Ok(())
    }

    /// Whether the client's target uses the `etcd` scheme.
    pub(crate) fn has_etcd_target(&self) -> bool {
        self.client.target.to_ascii_lowercase().starts_with("etcd:")
    }

    /// `[etcd]` and everything that needs it: an `etcd:///` target, registering servers.
    fn validate_etcd(&self, servers: &[Server]) -> Result<(), ScenarioError> {
        let Some(etcd) = &self.etcd else {
            if self.has_etcd_target() {
                return Err(self.invalid("client.target", "an etcd:/// target needs [etcd]"));
            }
            if let Some(s) = servers.iter().find(|s| s.register.is_some()) {
                return Err(self.invalid(format!("server {:?}", s.name), "`register` needs [etcd]"));
            }
            return Ok(());
        };
        if etcd.host == CLIENT_HOST || servers.iter().any(|s| s.host == etcd.host) {
            return Err(self.invalid("etcd", format!("host {:?} is taken", etcd.host)));
        }
        if etcd.min_lease_ttl_s < 1 {
            return Err(self.invalid("etcd", "min_lease_ttl_s must be at least 1"));
        }
        if self.has_etcd_target() {
            let authority = self.client.target.split('/').nth(2).unwrap_or_default();
            if !authority.is_empty() {
                return Err(self.invalid(
                    "client.target",
                    "write etcd:///<service>#N: the simulation's etcd is [etcd], not the authority",
                ));
            }
        }
        for server in servers {
            let Some(register) = &server.register else { continue };
            let what = format!("server {:?}", server.name);
            if register.ttl_s < 1 {
                return Err(self.invalid(what, "register.ttl_s must be at least 1"));
            }
            if register.service.contains('#') {
                return Err(self.invalid(what, "register.service cannot contain '#'"));
            }
            if let Err(error) = register.service.parse::<EtcdService>() {
                return Err(self.invalid(what, format!("register.service: {error}")));
            }
        }
        Ok(())
    }

    fn validate_fault(
        &self,
        number: usize,
        fault: &Fault,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<(), ScenarioError> {
        let what = format!("fault {number} ({})", fault.describe());
        let needs_server =
            matches!(fault.action, Action::Register | Action::Deregister | Action::ExpireLease);
        match (&fault.server, needs_server) {
            (None, true) => return Err(self.invalid(what, "needs `server`")),
            (Some(_), false) => return Err(self.invalid(what, "takes no `server`")),
            (Some(name), true) => {
                let registered =
                    self.server_list().iter().any(|s| s.name == *name && s.register.is_some());
                if !registered {
                    return Err(
                        self.invalid(what, format!("no server named {name:?} has `register`"))
                    );
                }
            }
            _ => {}
        }
        if fault.action == Action::Compact && self.etcd.is_none() {
            return Err(self.invalid(what, "compact needs [etcd]"));
        }
        let needs_host = matches!(fault.action, Action::Crash | Action::Restart | Action::Bounce);
        let needs_pair = matches!(
            fault.action,
            Action::Partition | Action::Repair | Action::Hold | Action::Release | Action::Latency
        );
        match (&fault.host, needs_host) {
            (None, true) => return Err(self.invalid(what, "needs `host`")),
            (Some(_), false) => return Err(self.invalid(what, "takes no `host`")),
            (Some(h), true) if h == CLIENT_HOST || !known(h) => {
                return Err(self.invalid(what, unknown_host(h)));
            }
            _ => {}
        }
        match (&fault.between, needs_pair) {
            (None, true) => return Err(self.invalid(what, "needs `between = [a, b]`")),
            (Some(_), false) => return Err(self.invalid(what, "takes no `between`")),
            (Some(pair), true) => {
                if let Some(h) = pair.iter().find(|h| !known(h)) {
                    return Err(self.invalid(what, unknown_host(h)));
                }
            }
            _ => {}
        }
        if fault.oneway && !matches!(fault.action, Action::Partition | Action::Repair) {
            return Err(self.invalid(what, "`oneway` applies to partition and repair only"));
        }
        if (fault.action == Action::Latency) != fault.latency_ms.is_some() {
            return Err(self.invalid(what, "`latency_ms` goes with action = \"latency\" only"));
        }
        match (&fault.addresses, fault.action == Action::Resolve) {
            (None, true) => Err(self.invalid(what, "needs `addresses`")),
            (Some(_), false) => Err(self.invalid(what, "`addresses` goes with resolve only")),
            (Some(list), true) => {
                if !self.client.target.to_ascii_lowercase().starts_with("manual:") {
                    return Err(self.invalid(what, "resolve needs a manual:/// target"));
                }
                self.check_addresses(&what, list)
            }
            (None, false) => Ok(()),
        }
    }

    fn check_addresses(&self, what: &str, list: &[String]) -> Result<(), ScenarioError> {
        for item in list {
            parse_address(item).map_err(|reason| self.invalid(what, reason))?;
        }
        Ok(())
    }
}

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
