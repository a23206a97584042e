//! The generator: one scenario per seed, drawn from one ChaCha8 stream.
//!
//! Order of the draws: fault kinds switched on, servers, target, client settings, network,
//! the random fault phase, the heal, then (from the bounds) the workload's size and the time
//! limit. Changing the order changes every seed's scenario, so append new draws at the end of
//! their step. The draws added later come from other streams of the same seed, so they left
//! every earlier draw as it was: GOAWAY faults and MAX_CONNECTION_AGE from stream 1 (`extra`),
//! health checking from stream 2 ([`health_rng`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Generated;
use super::bounds;
use crate::sim::scenario::{
    Action, BackoffSpec, ClientSpec, EtcdSpec, Expect, Fault, KeepAliveSpec, Network, RegisterSpec,
    Scenario, ServerSpec, Workload,
};

/// The fault kinds of the random phase, in declaration order: each seed switches each on or off
/// at the first draw. `goaway`, `unhealthy` and `healthy` came later and are drawn from streams
/// of their own (see [`generate`]), so that adding them left these draws as they were.
pub(super) const ACTIONS: [Action; 14] = [
    Action::Crash,
    Action::Restart,
    Action::Bounce,
    Action::Partition,
    Action::Repair,
    Action::Hold,
    Action::Release,
    Action::Latency,
    Action::Resolve,
    Action::Register,
    Action::Deregister,
    Action::ExpireLease,
    Action::Compact,
    Action::SlowBody,
];

/// How the client finds its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discovery {
    /// `pass:///host:port#N,...`.
    Pass,
    /// `manual:///swarm`, driven by `resolve` faults.
    Manual,
    /// `etcd:///echo#N`, servers registering in `[etcd]`.
    Etcd,
}

/// What the bounds need to know beyond the scenario itself.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    pub(super) discovery: Discovery,
    /// The final address list's servers in its order, each with its connection count.
    pub(super) listed: Vec<(String, u32)>,
    pub(super) round_robin: bool,
    pub(super) retry: bool,
    /// The client checks health (`healthCheckConfig`) and the random phase may make servers
    /// NOT_SERVING.
    pub(super) health: bool,
    /// When the heal phase starts (everything repaired, released, restarted, resolved).
    pub(super) heal_ms: u64,
    /// When every server host is restarted at once, the last fault of the run.
    pub(super) restart_all_ms: u64,
    /// A focused seed's one fault: the crash of the first listed server's host, when, and the
    /// failover bound derived for it ([`bounds::failover_ms`]).
    pub(super) focus: Option<Focus>,
}

/// The single crash of a focused seed.
#[derive(Debug, Clone)]
pub(super) struct Focus {
    /// The crashed host (the first listed server's).
    pub(super) host: String,
    /// When it crashes, simulated ms.
    pub(super) at_ms: u64,
    /// How long after the crash pick_first must be serving from another host.
    pub(super) failover_ms: u64,
}

/// The etcd host's name and the service servers register under.
const ETCD_HOST: &str = "etcd";
const SERVICE: &str = "echo";

pub(super) fn generate(seed: u64) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut kinds: Vec<Action> = ACTIONS.into_iter().filter(|_| rng.random_bool(0.5)).collect();
    let servers = servers(&mut rng);
    let discovery = match rng.random_range(0..3) {
        0 => Discovery::Pass,
        1 => Discovery::Manual,
        _ => Discovery::Etcd,
    };
    let mut picked: Vec<usize> = (0..servers.len()).filter(|_| rng.random_bool(0.8)).collect();
    if picked.is_empty() {
        picked.push(rng.random_range(0..servers.len()));
    }
    picked.shuffle(&mut rng);
    let etcd_n = rng.random_range(1..=8u32);
    let mut listed: Vec<(usize, u32)> = picked
        .iter()
        .map(|&i| (i, if discovery == Discovery::Etcd { etcd_n } else { rng.random_range(1..=8) }))
        .collect();
    if discovery == Discovery::Etcd {
        // The etcd resolver publishes addresses in key order, `echo/<host>:<port>`.
        listed.sort_by_key(|&(i, _)| addr(&servers[i]));
    }
    let round_robin = rng.random_bool(0.5);
    let retry = rng.random_bool(0.5);
    let client = client(&mut rng, discovery, &servers, &listed, round_robin, retry);
    let min_latency_ms = rng.random_range(1..=3);
    let network = Network {
        min_latency_ms,
        max_latency_ms: min_latency_ms + rng.random_range(0..=4),
        links: Vec::new(),
    };
    let start_ms: u64 = rng.random_range(0..=200);
    let faults_end = start_ms + rng.random_range(500..=1500);
    let mut servers = servers;
    let etcd = (discovery == Discovery::Etcd).then(|| {
        for &(i, _) in &listed {
            let at_ms = if rng.random_bool(0.2) { rng.random_range(0..=faults_end) } else { 0 };
            servers[i].register = Some(RegisterSpec {
                service: SERVICE.into(),
                ttl_s: rng.random_range(1..=3),
                at_ms,
            });
        }
        EtcdSpec {
            host: ETCD_HOST.into(),
            port: 2379,
            min_lease_ttl_s: 1,
            request_timeout_ms: rng.random_range(3..=6) * 100,
        }
    });
    let world = World { servers: &servers, discovery, listed: &listed };
    let mut faults = random_phase(&mut rng, &world, &kinds, start_ms + 100, faults_end);
    let mut heal_ms = faults_end + 100;
    // Focus: in a quarter of the seeds whose `pass` list spans two server hosts or more, the
    // random phase is replaced by one crash of the first listed server's host, healed by the
    // heal's restart. The invariants that need one clean crash then apply: pick_first fails
    // over to the next host (`failover`), and round_robin with a retry policy loses nothing
    // to it (`max_failed = 0`, see `bounds::expect`).
    let focus_draw = rng.random_bool(0.25);
    let crash_at = start_ms + rng.random_range(200..=400);
    let focus = (focus_draw && discovery == Discovery::Pass)
        .then(|| focus_on_first_host(&servers, &listed, &client, &network, crash_at))
        .flatten();
    if let Some(focus) = &focus {
        let mut crash = fault(focus.at_ms, Action::Crash);
        crash.host = Some(focus.host.clone());
        faults = vec![crash];
        // Every kind but the crash is switched off for this seed's random phase.
        kinds = vec![Action::Crash];
        // Room after the failover bound for RPCs to show where they went.
        heal_ms = heal_ms.max(focus.at_ms + focus.failover_ms + 1000);
    }
    let mut extra = ChaCha8Rng::seed_from_u64(seed);
    extra.set_stream(1);
    if focus.is_none() {
        let world = World { servers: &servers, discovery, listed: &listed };
        let goaways = goaways(&mut extra, &world, &mut kinds, start_ms + 100, faults_end);
        // In half the seeds where a retry policy makes every other loss recoverable, the
        // GOAWAYs are the whole random phase, so `bounds` can demand that nothing is lost.
        let alone = discovery == Discovery::Pass && round_robin && retry;
        if !goaways.is_empty() && alone && extra.random_bool(0.5) {
            faults = goaways;
            kinds = vec![Action::GoAway];
        } else {
            faults.extend(goaways);
            faults.sort_by_key(|f| f.at_ms);
        }
    }
    // Not in focused seeds: their failover bound assumes the connection the channel fails over
    // to stays up, while a max age sends pick_first back through the crashed host's addresses
    // (each a connect timeout) every age, as grpc-go's pick_first does.
    if focus.is_none() {
        max_age(&mut extra, &mut servers);
    }
    let mut client = client;
    let health = round_robin && focus.is_none() && health_drawn(seed);
    if health {
        let unhealthy = health_phase(seed, &servers, &listed, start_ms + 100, faults_end);
        faults.extend(unhealthy);
        faults.sort_by_key(|f| f.at_ms);
        kinds.extend([Action::Unhealthy, Action::Healthy]);
        client.service_config = client.service_config.map(|config| {
            let body = config.strip_suffix('}').unwrap_or(&config).to_owned();
            format!(r#"{body},"healthCheckConfig":{{"serviceName":""}}}}"#)
        });
    }
    let mut scenario = Scenario {
        path: PathBuf::from(format!("swarm/swarm-{seed}")),
        regression_seeds: Vec::new(),
        time_limit_ms: 0,
        servers,
        client,
        etcd,
        workload: Workload::default(),
        network,
        faults: Vec::new(),
        expect: Expect::default(),
    };
    let listed_names: Vec<(String, u32)> =
        listed.iter().map(|&(i, n)| (scenario.servers[i].name.clone(), n)).collect();
    let mut facts = Facts {
        discovery,
        listed: listed_names,
        round_robin,
        retry,
        health,
        heal_ms,
        restart_all_ms: 0,
        focus,
    };
    // The heal restarts what crashed; the restart of everything comes once all of it has
    // recovered, so the channel is READY on every listed address at that moment.
    let recovered = bounds::liveness_ms(&scenario, &facts);
    facts.restart_all_ms = heal_ms + recovered;
    faults.extend(heal(&scenario, &faults, &facts));
    scenario.faults = faults;
    scenario.workload = workload(&mut rng, &scenario, &facts, start_ms);
    scenario.time_limit_ms = bounds::time_limit_ms(&scenario, &facts);
    scenario.expect = bounds::expect(&scenario, &facts);
    Generated { scenario, kinds, heal_ms }
}

/// In half the seeds `goaway` is switched on: 1–3 GOAWAYs from listed servers at times in
/// `from..=until`, merged into the random phase in time order (a GOAWAY is never a
/// disruption: it must lose no RPC).
fn goaways(
    extra: &mut ChaCha8Rng,
    world: &World<'_>,
    kinds: &mut Vec<Action>,
    from: u64,
    until: u64,
) -> Vec<Fault> {
    if !extra.random_bool(0.5) {
        return Vec::new();
    }
    kinds.push(Action::GoAway);
    (0..extra.random_range(1..=3))
        .map(|_| {
            let (i, _) = world.listed[extra.random_range(0..world.listed.len())];
            let server = Some(world.servers[i].name.clone());
            Fault { server, ..fault(extra.random_range(from..=until), Action::GoAway) }
        })
        .collect()
}

/// In a quarter of the seeds every server has a MAX_CONNECTION_AGE of 0.5–1.5 s, with a grace
/// of 0.5–1 s or none, so connections keep being replaced through the whole run, heal and
/// quiet period included.
fn max_age(extra: &mut ChaCha8Rng, servers: &mut [ServerSpec]) {
    if !extra.random_bool(0.25) {
        return;
    }
    let age = extra.random_range(5..=15) * 100;
    let grace = extra.random_bool(0.5).then(|| extra.random_range(5..=10) * 100);
    for server in servers {
        server.max_connection_age_ms = Some(age);
        server.max_connection_age_grace_ms = grace;
    }
}

/// The third stream of `seed`'s draws: health checking's, kept apart so that the main stream
/// (and GOAWAY's, stream 1) is the same with or without it.
fn health_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2);
    rng
}

/// Whether a round_robin seed checks health: half of them.
fn health_drawn(seed: u64) -> bool {
    health_rng(seed).random_bool(0.5)
}

/// 1–3 `unhealthy` faults on listed servers at times in `from..=until` (the heal makes each of
/// them healthy again), each followed, half the time, by a `healthy` before the heal.
fn health_phase(
    seed: u64,
    servers: &[ServerSpec],
    listed: &[(usize, u32)],
    from: u64,
    until: u64,
) -> Vec<Fault> {
    let mut rng = health_rng(seed);
    let _ = rng.random_bool(0.5); // the draw of `health_drawn`
    let mut out = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let server = servers[listed[rng.random_range(0..listed.len())].0].name.clone();
        let at_ms = rng.random_range(from..=until);
        out.push(Fault { server: Some(server.clone()), ..fault(at_ms, Action::Unhealthy) });
        if rng.random_bool(0.5) {
            let back = rng.random_range(at_ms..=until);
            out.push(Fault { server: Some(server), ..fault(back, Action::Healthy) });
        }
    }
    out
}

/// The focused crash of the first listed server's host at `at_ms`, if another listed server
/// runs on another host (else nothing could fail over).
fn focus_on_first_host(
    servers: &[ServerSpec],
    listed: &[(usize, u32)],
    client: &ClientSpec,
    network: &Network,
    at_ms: u64,
) -> Option<Focus> {
    let host_of = |i: usize| servers[i].host.clone().unwrap_or_else(|| servers[i].name.clone());
    let host = host_of(listed.first()?.0);
    // pick_first tries the crashed host's addresses, in list order, before the first other one.
    let position = listed.iter().position(|&(i, _)| host_of(i) != host)?;
    let before: u32 = listed[..position].iter().map(|&(_, n)| n).sum();
    let failover_ms = bounds::failover_ms(client, network, before);
    Some(Focus { host, at_ms, failover_ms })
}

fn addr(server: &ServerSpec) -> String {
    format!("{}:{}", server.host.as_deref().unwrap_or(&server.name), server.port)
}

/// 1–6 servers `s1..`, on hosts `h1..`; some share an earlier server's host (on their own port).
fn servers(rng: &mut ChaCha8Rng) -> Vec<ServerSpec> {
    let n = rng.random_range(1..=6u16);
    let mut out: Vec<ServerSpec> = Vec::new();
    for i in 1..=n {
        let host = match out.len() {
            0 => format!("h{i}"),
            len if rng.random_bool(0.3) => {
                out[rng.random_range(0..len)].host.clone().unwrap_or_default()
            }
            _ => format!("h{i}"),
        };
        out.push(ServerSpec {
            name: format!("s{i}"),
            host: Some(host),
            port: 9000 + i,
            count: None,
            register: None,
            body_delay_ms: None,
            max_connection_age_ms: None,
            max_connection_age_grace_ms: None,
            health: None,
        });
    }
    out
}

/// The manual resolver's full list: each listed server's address N times, told apart by `idx`.
pub(super) fn full_list(servers: &[ServerSpec], listed: &[(usize, u32)]) -> Vec<String> {
    let mut out = Vec::new();
    for &(i, n) in listed {
        let a = addr(&servers[i]);
        if n == 1 {
            out.push(a);
        } else {
            out.extend((0..n).map(|k| format!("{a}{{idx={k}}}")));
        }
    }
    out
}

fn client(
    rng: &mut ChaCha8Rng,
    discovery: Discovery,
    servers: &[ServerSpec],
    listed: &[(usize, u32)],
    round_robin: bool,
    retry: bool,
) -> ClientSpec {
    let (target, manual_addresses) = match discovery {
        Discovery::Pass => {
            let items: Vec<String> = listed
                .iter()
                .map(|&(i, n)| match n {
                    1 if rng.random_bool(0.5) => addr(&servers[i]),
                    n => format!("{}#{n}", addr(&servers[i])),
                })
                .collect();
            (format!("pass:///{}", items.join(",")), None)
        }
        Discovery::Manual => {
            let full = full_list(servers, listed);
            let initial = if rng.random_bool(0.2) { None } else { Some(variant(rng, &full)) };
            ("manual:///swarm".to_owned(), initial)
        }
        Discovery::Etcd => (format!("etcd:///{SERVICE}#{}", listed[0].1), None),
    };
    let mut config = Vec::new();
    if round_robin {
        config.push(r#""loadBalancingConfig":[{"round_robin":{}}]"#.to_owned());
    } else if rng.random_bool(0.5) {
        config.push(r#""loadBalancingConfig":[{"pick_first":{}}]"#.to_owned());
    }
    if retry {
        config.push(format!(
            r#""methodConfig":[{{"name":[{{"service":"anchorage.echo.v1.Echo"}}],"retryPolicy":{{"maxAttempts":{},"initialBackoff":"0.0{}s","maxBackoff":"0.{}s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}}}]"#,
            rng.random_range(2..=5),
            rng.random_range(1..=5),
            rng.random_range(1..=3),
        ));
    }
    let service_config = (!config.is_empty()).then(|| format!("{{{}}}", config.join(",")));
    let initial_ms = rng.random_range(1..=5) * 50;
    ClientSpec {
        target,
        service_config,
        manual_addresses,
        connect_timeout_ms: rng.random_range(2..=5) * 100,
        keepalive: KeepAliveSpec {
            enabled: true,
            interval_ms: rng.random_range(3..=5) * 100,
            timeout_ms: rng.random_range(2..=3) * 100,
        },
        backoff: BackoffSpec {
            initial_ms,
            multiplier: [1.2, 1.6, 2.0][rng.random_range(0..3)],
            jitter: [0.0, 0.1, 0.2][rng.random_range(0..3)],
            max_ms: initial_ms.max(rng.random_range(2..=5) * 100),
        },
    }
}

/// A resolver update drawn from the full list: a subset (addresses added or removed), the
/// subset reordered, or with some addresses repeated.
fn variant(rng: &mut ChaCha8Rng, full: &[String]) -> Vec<String> {
    let mut list: Vec<String> = full.iter().filter(|_| rng.random_bool(0.7)).cloned().collect();
    if rng.random_bool(0.4) {
        list.shuffle(rng);
    }
    if !list.is_empty() && rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..=3) {
            let copy = list[rng.random_range(0..list.len())].clone();
            let at = rng.random_range(0..=list.len());
            list.insert(at, copy);
        }
    }
    list
}

/// What the fault drawing needs to know.
struct World<'a> {
    servers: &'a [ServerSpec],
    discovery: Discovery,
    listed: &'a [(usize, u32)],
}

impl World<'_> {
    fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for s in self.servers {
            let h = s.host.clone().unwrap_or_default();
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if self.discovery == Discovery::Etcd {
            hosts.push(ETCD_HOST.into());
        }
        hosts
    }

    /// The links a partition, hold or latency change may cut: client to each host, and each
    /// server host to etcd.
    fn pairs(&self) -> Vec<[String; 2]> {
        let mut pairs: Vec<[String; 2]> =
            self.hosts().into_iter().map(|h| ["client".to_owned(), h]).collect();
        if self.discovery == Discovery::Etcd {
            for h in self.hosts().into_iter().filter(|h| h != ETCD_HOST) {
                pairs.push([h, ETCD_HOST.into()]);
            }
        }
        pairs
    }

    fn applies(&self, action: Action) -> bool {
        match action {
            Action::Resolve => self.discovery == Discovery::Manual,
            Action::Register | Action::Deregister | Action::ExpireLease | Action::Compact => {
                self.discovery == Discovery::Etcd
            }
            _ => true,
        }
    }
}

fn fault(at_ms: u64, action: Action) -> Fault {
    Fault {
        at_ms,
        action,
        host: None,
        between: None,
        oneway: false,
        latency_ms: None,
        addresses: None,
        push: None,
        server: None,
        delay_ms: None,
        service: None,
    }
}

/// 0–8 faults of the kinds switched on, at times in `from..=until`, in time order.
fn random_phase(
    rng: &mut ChaCha8Rng,
    world: &World<'_>,
    kinds: &[Action],
    from: u64,
    until: u64,
) -> Vec<Fault> {
    let usable: Vec<Action> = kinds.iter().copied().filter(|&k| world.applies(k)).collect();
    if usable.is_empty() {
        return Vec::new();
    }
    let mut times: Vec<u64> =
        (0..rng.random_range(0..=8)).map(|_| rng.random_range(from..=until)).collect();
    times.sort_unstable();
    let hosts = world.hosts();
    let pairs = world.pairs();
    let full = full_list(world.servers, world.listed);
    let registering: Vec<String> =
        world.listed.iter().map(|&(i, _)| world.servers[i].name.clone()).collect();
    let mut out = Vec::new();
    for at_ms in times {
        let action = usable[rng.random_range(0..usable.len())];
        let mut f = fault(at_ms, action);
        match action {
            Action::Crash | Action::Restart | Action::Bounce => {
                f.host = Some(hosts[rng.random_range(0..hosts.len())].clone());
            }
            Action::Partition | Action::Repair | Action::Hold | Action::Release => {
                let mut pair = pairs[rng.random_range(0..pairs.len())].clone();
                if rng.random_bool(0.5) {
                    pair.reverse();
                }
                f.oneway =
                    matches!(action, Action::Partition | Action::Repair) && rng.random_bool(0.5);
                f.between = Some(pair);
            }
            Action::Latency => {
                f.between = Some(pairs[rng.random_range(0..pairs.len())].clone());
                f.latency_ms = Some(rng.random_range(0..=100));
            }
            Action::Resolve => f.addresses = Some(variant(rng, &full)),
            Action::Register
            | Action::Deregister
            | Action::ExpireLease
            | Action::Unhealthy
            | Action::Healthy => {
                f.server = Some(registering[rng.random_range(0..registering.len())].clone());
            }
            Action::Compact => {}
            Action::GoAway => {
                f.server = Some(registering[rng.random_range(0..registering.len())].clone());
            }
            Action::SlowBody => {
                // 0..=2 s, against a workload deadline of 0.3..=1.5 s: sometimes the body
                // comes in time, sometimes the deadline must cut it off.
                f.server = Some(registering[rng.random_range(0..registering.len())].clone());
                f.delay_ms = Some(rng.random_range(0..=20) * 100);
            }
        }
        out.push(f);
    }
    out
}

/// The heal: at `heal_ms` every link the random phase touched is repaired (both ways),
/// released and given the network's greatest latency again, etcd and every crashed host are
/// restarted, every slowed server sends bodies at once again (`slow_body` with `delay_ms = 0`),
/// every server made NOT_SERVING is `healthy` again,
/// every registering server registers again and the manual resolver sends the full list; at
/// `restart_all_ms` every server host is restarted at once.
fn heal(scenario: &Scenario, random: &[Fault], facts: &Facts) -> Vec<Fault> {
    let at = facts.heal_ms;
    let mut out = Vec::new();
    let mut links: BTreeSet<[String; 2]> = BTreeSet::new();
    let mut latencies: BTreeSet<[String; 2]> = BTreeSet::new();
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    let mut slowed: BTreeSet<String> = BTreeSet::new();
    let mut unhealthy: BTreeSet<String> = BTreeSet::new();
    for f in random {
        if let (Action::SlowBody, Some(server)) = (f.action, &f.server) {
            slowed.insert(server.clone());
        }
        if let (Action::Unhealthy, Some(server)) = (f.action, &f.server) {
            unhealthy.insert(server.clone());
        }
        if let Some([a, b]) = &f.between {
            let pair = if a <= b { [a.clone(), b.clone()] } else { [b.clone(), a.clone()] };
            if f.action == Action::Latency {
                latencies.insert(pair);
            } else {
                links.insert(pair);
            }
        }
        match (f.action, &f.host) {
            (Action::Crash, Some(h)) => {
                crashed.insert(h.clone());
            }
            (Action::Restart | Action::Bounce, Some(h)) => {
                crashed.remove(h);
            }
            _ => {}
        }
    }
    for pair in links {
        out.push(Fault { between: Some(pair.clone()), ..fault(at, Action::Repair) });
        out.push(Fault { between: Some(pair), ..fault(at, Action::Release) });
    }
    for pair in latencies {
        let latency_ms = Some(scenario.network.max_latency_ms);
        out.push(Fault { between: Some(pair), latency_ms, ..fault(at, Action::Latency) });
    }
    for host in crashed {
        out.push(Fault { host: Some(host), ..fault(at, Action::Restart) });
    }
    for server in slowed {
        let delay_ms = Some(0);
        out.push(Fault { server: Some(server), delay_ms, ..fault(at, Action::SlowBody) });
    }
    for server in unhealthy {
        out.push(Fault { server: Some(server), ..fault(at, Action::Healthy) });
    }
    if facts.discovery == Discovery::Etcd {
        for (name, _) in &facts.listed {
            out.push(Fault { server: Some(name.clone()), ..fault(at, Action::Register) });
        }
    }
    if facts.discovery == Discovery::Manual {
        let listed: Vec<(usize, u32)> = facts
            .listed
            .iter()
            .filter_map(|(name, n)| {
                scenario.servers.iter().position(|s| &s.name == name).map(|i| (i, *n))
            })
            .collect();
        let addresses = Some(full_list(&scenario.servers, &listed));
        out.push(Fault { addresses, ..fault(at, Action::Resolve) });
    }
    for host in scenario.hosts() {
        out.push(Fault { host: Some(host), ..fault(facts.restart_all_ms, Action::Restart) });
    }
    out
}

/// Workers, pacing and deadline drawn; the number of RPCs sized so that the workload lasts
/// past the quiet period even if every RPC failed at once (each takes at least `pacing_ms`).
fn workload(rng: &mut ChaCha8Rng, s: &Scenario, facts: &Facts, start_ms: u64) -> Workload {
    let concurrency = rng.random_range(1..=4u32);
    let rate = rng.random_range(40..=100u64);
    let pacing_ms = (u64::from(concurrency) * 1000 / rate).max(5);
    let end = bounds::quiet_end_ms(s, facts);
    let per_worker = (end - start_ms).div_ceil(pacing_ms) + 1;
    Workload {
        rpcs: u32::try_from(per_worker * u64::from(concurrency)).unwrap_or(u32::MAX),
        concurrency,
        deadline_ms: rng.random_range(3..=15) * 100,
        wait_for_ready: rng.random_bool(0.3),
        pacing_ms,
        start_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_seeds_send_goaways_or_age_connections_and_some_of_those_must_lose_nothing() {
        let (mut goaway_seeds, mut aging_seeds, mut lossless_goaway_seeds) = (0, 0, 0);
        for seed in 0..150 {
            let generated = generate(seed);
            let s = &generated.scenario;
            let goaways = s.faults.iter().filter(|f| f.action == Action::GoAway).count();
            assert_eq!(
                goaways > 0,
                generated.kinds.contains(&Action::GoAway),
                "seed {seed}: goaway faults come exactly when the kind is switched on"
            );
            goaway_seeds += usize::from(goaways > 0);
            lossless_goaway_seeds += usize::from(goaways > 0 && s.expect.max_failed == Some(0));
            aging_seeds += usize::from(s.servers.iter().any(|v| v.max_connection_age_ms.is_some()));
        }
        assert!(goaway_seeds > 30, "goaway must be common: {goaway_seeds} of 150 seeds");
        assert!(aging_seeds > 15, "max age must be common: {aging_seeds} of 150 seeds");
        assert!(lossless_goaway_seeds > 0, "some goaway seeds must also demand max_failed = 0");
    }

    fn has_health_config(s: &Scenario) -> bool {
        s.client.service_config.as_deref().is_some_and(|c| c.contains("healthCheckConfig"))
    }

    #[test]
    fn some_round_robin_seeds_check_health_and_every_unhealthy_server_is_healed() {
        let mut with_health = 0;
        for seed in 0..150 {
            let generated = generate(seed);
            let s = &generated.scenario;
            let unhealthy: Vec<&Fault> =
                s.faults.iter().filter(|f| f.action == Action::Unhealthy).collect();
            if unhealthy.is_empty() {
                assert!(!has_health_config(s), "seed {seed}: health checking without faults");
                continue;
            }
            with_health += 1;
            assert!(has_health_config(s), "seed {seed}: unhealthy faults need healthCheckConfig");
            let config = s.client.service_config.as_deref().unwrap_or_default();
            let parsed = crate::service_config::ServiceConfig::parse(config)
                .unwrap_or_else(|e| panic!("seed {seed}: {config} must parse: {e}"));
            assert!(parsed.health_check().is_some(), "seed {seed}: health checking must be on");
            for f in unhealthy {
                let healed = s.faults.iter().any(|h| {
                    h.action == Action::Healthy
                        && h.server == f.server
                        && h.at_ms == generated.heal_ms
                });
                assert!(healed, "seed {seed}: {} must be healthy again at the heal", f.describe());
                assert!(f.at_ms < generated.heal_ms, "seed {seed}: unhealthy only before the heal");
            }
        }
        assert!(
            with_health >= 10,
            "health checking must be drawn in some seeds, got {with_health}"
        );
    }
}
