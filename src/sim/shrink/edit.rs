//! The shrinker's passes: each offers smaller versions of a scenario, in the order to try them,
//! each with a line saying what it removed. A pass never checks validity; the shrinker writes
//! and reads back every candidate, and drops those that do not load.

use std::collections::BTreeMap;

use super::Candidate;
use crate::sim::scenario::{Action, Expect, Fault, Scenario, ServerSpec};

/// Halves `workload.rpcs`.
pub(super) fn fewer_rpcs(s: &Scenario) -> Vec<Candidate> {
    let rpcs = s.workload.rpcs;
    halved(u64::from(rpcs))
        .map(|fewer| {
            let mut c = s.clone();
            c.workload.rpcs = u32::try_from(fewer).unwrap_or(rpcs);
            (format!("workload.rpcs {rpcs} -> {fewer}"), c)
        })
        .into_iter()
        .collect()
}

/// Halves `workload.concurrency`.
pub(super) fn less_concurrency(s: &Scenario) -> Vec<Candidate> {
    let workers = s.workload.concurrency;
    halved(u64::from(workers))
        .map(|fewer| {
            let mut c = s.clone();
            c.workload.concurrency = u32::try_from(fewer).unwrap_or(workers);
            (format!("workload.concurrency {workers} -> {fewer}"), c)
        })
        .into_iter()
        .collect()
}

/// `n / 2` when that is at least 1 and smaller than `n`.
fn halved(n: u64) -> Option<u64> {
    (n > 1).then_some(n / 2)
}

/// Each server removed, with everything that names it (see [`without_server`]).
pub(super) fn without_each_server(s: &Scenario) -> Vec<Candidate> {
    let servers = s.server_list();
    if servers.len() < 2 {
        return Vec::new();
    }
    servers
        .iter()
        .filter_map(|server| {
            let c = without_server(s, &server.name)?;
            Some((format!("server {:?}", server.name), c))
        })
        .collect()
}

/// `s` without the server `name`: its `[[server]]` entry (a `count` entry it comes from is
/// written out as one entry per server first), its items in a `pass:` target, its address in
/// manual lists, faults and links on its host unless another server shares the host, faults
/// naming it (registration, `slow_body`), and its keys in `[expect]`. `None` when the target
/// would be left with nothing.
fn without_server(s: &Scenario, name: &str) -> Option<Scenario> {
    let mut c = s.clone();
    expand_count_of(&mut c, name);
    let server = c.server_list().into_iter().find(|x| x.name == name)?;
    let addr = server.addr();
    c.servers.retain(|spec| spec.name != name);
    if !c.server_list().iter().any(|x| x.host == server.host) {
        c.faults.retain(|f| !f.hosts().contains(&server.host.as_str()));
        c.network.links.retain(|l| !l.between.contains(&server.host));
    }
    c.faults.retain(|f| !names_server(f, name));
    match Items::parse(&c.client.target) {
        Some(mut items) if items.scheme == "pass" => {
            items.list.retain(|i| i.dial() != addr);
            if items.list.is_empty() {
                return None;
            }
            c.client.target = items.render();
        }
        Some(_) => {}
        None if c.client.target.contains(&addr) => return None,
        None => {}
    }
    for list in address_lists(&mut c) {
        list.retain(|a| address_part(a) != addr);
    }
    trim_expect(&mut c.expect, name, &addr);
    Some(c)
}

/// Replaces the `count` entry that `name` comes from (if any) with one entry per server, named
/// and hosted as `count` expands them, so one of them can go.
fn expand_count_of(s: &mut Scenario, name: &str) {
    let expands_to_name = |spec: &ServerSpec| {
        spec.count.is_some_and(|n| n > 1 && (1..=n).any(|i| format!("{}{i}", spec.name) == name))
    };
    let Some(at) = s.servers.iter().position(expands_to_name) else { return };
    let spec = s.servers.remove(at);
    let each = (1..=spec.count.unwrap_or(1)).map(|i| ServerSpec {
        name: format!("{}{i}", spec.name),
        host: None,
        port: spec.port,
        count: None,
        register: spec.register.clone(),
        body_delay_ms: spec.body_delay_ms,
        max_connection_age_ms: spec.max_connection_age_ms,
        max_connection_age_grace_ms: spec.max_connection_age_grace_ms,
        health: spec.health,
    });
    s.servers.splice(at..at, each);
}

/// Whether `fault` names `server` (a registration fault, `slow_body` or `goaway`).
fn names_server(fault: &Fault, server: &str) -> bool {
    fault.server.as_deref() == Some(server)
}

/// `[expect]` without the keys that name the server `name` (or its address `addr`); a map left
/// empty goes, with the keys that only mean something beside it.
fn trim_expect(e: &mut Expect, name: &str, addr: &str) {
    for map in [&mut e.connections, &mut e.no_rpcs_after_ms, &mut e.connections_after] {
        remove_key(map, name);
    }
    remove_key(&mut e.weights, name);
    remove_key(&mut e.unresolved_by_ms, addr);
    if let Some(list) = &mut e.final_addresses {
        list.retain(|a| address_part(a) != addr);
        if list.is_empty() {
            e.final_addresses = None;
        }
    }
    if e.weights.is_none() {
        e.settle_ms = None;
        e.tolerance = None;
    }
    if e.connections_after.is_none() {
        e.connections_after_ms = None;
    }
}

/// Removes `key` from the map, and the map when it is left empty.
fn remove_key<V>(map: &mut Option<BTreeMap<String, V>>, key: &str) {
    if let Some(m) = map {
        m.remove(key);
        if m.is_empty() {
            *map = None;
        }
    }
}

/// Each single address removed: from a `pass:` target of two or more items, from
/// `manual_addresses`, from each `resolve` fault.
pub(super) fn without_each_address(s: &Scenario) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(items) = Items::parse(&s.client.target).filter(|i| i.scheme == "pass")
        && items.list.len() > 1
    {
        for (i, item) in items.list.iter().enumerate() {
            let mut fewer = items.clone();
            fewer.list.remove(i);
            let mut c = s.clone();
            c.client.target = fewer.render();
            out.push((format!("address {} from client.target", item.render()), c));
        }
    }
    for (which, len) in list_lengths(s).into_iter().enumerate() {
        for i in 0..len {
            let mut c = s.clone();
            let list = address_lists(&mut c).swap_remove(which);
            let gone = list.remove(i);
            out.push((format!("address {gone} from {}", list_name(s, which)), c));
        }
    }
    out
}

/// Every manual address list: `client.manual_addresses`, then each `resolve` fault's.
fn address_lists(s: &mut Scenario) -> Vec<&mut Vec<String>> {
    let resolves = s.faults.iter_mut().filter(|f| f.action == Action::Resolve);
    s.client
        .manual_addresses
        .iter_mut()
        .chain(resolves.filter_map(|f| f.addresses.as_mut()))
        .collect()
}

/// The lengths of [`address_lists`].
fn list_lengths(s: &Scenario) -> Vec<usize> {
    let resolves = s.faults.iter().filter(|f| f.action == Action::Resolve);
    let lists =
        s.client.manual_addresses.iter().chain(resolves.filter_map(|f| f.addresses.as_ref()));
    lists.map(Vec::len).collect()
}

/// What [`address_lists`]'s `which`-th list is called.
fn list_name(s: &Scenario, which: usize) -> String {
    let offset = usize::from(s.client.manual_addresses.is_some());
    if which < offset {
        return "client.manual_addresses".to_owned();
    }
    let resolves = s.faults.iter().enumerate();
    let fault = resolves
        .filter(|(_, f)| f.action == Action::Resolve && f.addresses.is_some())
        .nth(which - offset);
    fault.map_or_else(String::new, |(i, f)| format!("fault {} ({})", i + 1, f.describe()))
}

/// The `host:port` of a written address (`a:9080{idx=1}` → `a:9080`).
fn address_part(text: &str) -> &str {
    text.split_once('{').map_or(text, |(addr, _)| addr)
}

/// Each `#N` above 1 of the target lowered: to 1, else halved.
pub(super) fn lower_counts(s: &Scenario) -> Vec<Candidate> {
    let Some(items) = Items::parse(&s.client.target) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in items.list.iter().enumerate() {
        let Some(n) = item.count.filter(|n| *n > 1) else { continue };
        let mut lowers = vec![1];
        if n / 2 > 1 {
            lowers.push(n / 2);
        }
        for lower in lowers {
            let mut fewer = items.clone();
            fewer.list[i].count = (lower > 1).then_some(lower);
            let mut c = s.clone();
            c.client.target = fewer.render();
            out.push((format!("client.target {} -> {}", item.render(), fewer.list[i].render()), c));
        }
    }
    out
}

/// Sets one time of a scenario.
type SetTime = fn(&mut Scenario, u64);

/// Every fault time halved (their order kept).
pub(super) fn earlier_faults(s: &Scenario) -> Vec<Candidate> {
    if !s.faults.iter().any(|f| f.at_ms > 0) {
        return Vec::new();
    }
    let mut c = s.clone();
    c.faults.iter_mut().for_each(|f| f.at_ms /= 2);
    vec![("every fault time halved".to_owned(), c)]
}

/// Every other time halved, one at a time: the workload's start, the deadline (not below
/// [`deadline_floor`]), the pacing, the time limit.
pub(super) fn shorter_times(s: &Scenario) -> Vec<Candidate> {
    let mut out = Vec::new();
    let w = &s.workload;
    let knobs: [(&str, u64, SetTime); 4] = [
        ("workload.start_ms", w.start_ms, |c, v| c.workload.start_ms = v),
        ("workload.deadline_ms", w.deadline_ms, |c, v| c.workload.deadline_ms = v),
        ("workload.pacing_ms", w.pacing_ms, |c, v| c.workload.pacing_ms = v),
        ("time_limit_ms", s.time_limit_ms, |c, v| c.time_limit_ms = v),
    ];
    for (key, value, set) in knobs {
        let floor = if key == "workload.deadline_ms" { deadline_floor(s) } else { 0 };
        if value > 0 && value / 2 >= floor {
            let mut c = s.clone();
            set(&mut c, value / 2);
            out.push((format!("{key} {value} -> {}", value / 2), c));
        }
    }
    out
}

/// The shortest deadline a shrink tries: 20 one-way latencies at the network's slowest (and
/// slowest link), enough for a connect, the HTTP/2 handshake and an RPC with room to spare.
fn deadline_floor(s: &Scenario) -> u64 {
    let links = s.network.links.iter().map(|l| l.latency_ms);
    let slowest = links.chain([s.network.max_latency_ms, 1]).max().unwrap_or(1);
    slowest.saturating_mul(20)
}

/// How many addresses the client is given (see [`Size::addresses`](super::Size::addresses)).
pub(super) fn address_count(s: &Scenario) -> usize {
    let target = match Items::parse(&s.client.target) {
        Some(items) if items.scheme == "etcd" => {
            let registering = s.server_list().iter().filter(|x| x.register.is_some()).count();
            items.connections() * registering
        }
        Some(items) => items.connections(),
        None => usize::from(!s.client.target.to_ascii_lowercase().starts_with("manual:")),
    };
    let lists: usize = list_lengths(s).iter().sum();
    target + lists
}

/// A `pass:` or `etcd:` target: the text before its endpoint, and the endpoint's items.
#[derive(Debug, Clone)]
struct Items {
    /// `pass` or `etcd`.
    scheme: String,
    /// `pass:///`, `etcd:` …
    prefix: String,
    list: Vec<Item>,
}

/// One item: `a:9080#2` (or `%23` for `#`, as the target grammar allows).
#[derive(Debug, Clone)]
struct Item {
    addr: String,
    separator: &'static str,
    count: Option<u32>,
}

impl Items {
    /// `None` for targets of other schemes.
    fn parse(target: &str) -> Option<Self> {
        let (scheme, rest) = target.split_once(':')?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "pass" && scheme != "etcd" {
            return None;
        }
        let endpoint = match rest.strip_prefix("//") {
            Some(after) => &after[after.find('/')? + 1..],
            None => rest,
        };
        let prefix = target[..target.len() - endpoint.len()].to_owned();
        let list = if scheme == "pass" {
            endpoint.split(',').map(Item::parse).collect()
        } else {
            vec![Item::parse(endpoint)]
        };
        Some(Self { scheme, prefix, list })
    }

    fn render(&self) -> String {
        let items: Vec<String> = self.list.iter().map(Item::render).collect();
        format!("{}{}", self.prefix, items.join(","))
    }

    /// Connections asked for: the sum of the counts.
    fn connections(&self) -> usize {
        self.list.iter().map(|i| i.count.unwrap_or(1) as usize).sum()
    }
}

impl Item {
    fn parse(text: &str) -> Self {
        let split = [("#", "#"), ("%23", "%23")].into_iter().find_map(|(needle, separator)| {
            let at = text.to_ascii_lowercase().find(needle)?;
            let count = text[at + needle.len()..].parse::<u32>().ok()?;
            Some((at, separator, count))
        });
        match split {
            Some((at, separator, count)) => {
                Self { addr: text[..at].to_owned(), separator, count: Some(count) }
            }
            None => Self { addr: text.to_owned(), separator: "#", count: None },
        }
    }

    fn render(&self) -> String {
        match self.count {
            Some(n) => format!("{}{}{n}", self.addr, self.separator),
            None => self.addr.clone(),
        }
    }

    /// The `host:port` a client dials for it: an empty host means `localhost` (DESIGN §2.2).
    fn dial(&self) -> String {
        if self.addr.starts_with(':') {
            format!("localhost{}", self.addr)
        } else {
            self.addr.clone()
        }
    }
}
