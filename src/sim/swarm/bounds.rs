//! Every bound of the swarm's universal invariants, derived from the generated configuration,
//! each with why it is sound. The invariants are `[expect]` keys (see `checks`), so a generated
//! scenario written out as a file keeps them.
//!
//! Always on, whatever `[expect]` says (`checks::evaluate`): `completed` (no hang: every RPC
//! ended within `time_limit_ms`, below), `deadlines` (no RPC outlives its deadline by more than
//! one simulated tick: the workload measures start and end on the tick clock the deadline timer
//! fires on), `accounting` (every success the client saw was recorded by a server), and
//! `no_panic`. Same seed, same trace is the CLI's determinism self-check.
//!
//! An `unhealthy` fault of the random phase (health-checking round_robin seeds only) needs no
//! bound of its own either: the heal makes every such server `healthy` at `heal_ms`, so from
//! `restart_all_ms` on every listed server is SERVING and the split and connection bounds
//! hold as without it; `liveness_ms` adds the Watch round trip a new connection needs before
//! it is READY. Before the heal, every listed server may be NOT_SERVING (or crashed) at once
//! and round_robin then fails fast, so such a seed never gets `max_failed = 0` (its random
//! phase is not only crashes) and is never a focused seed.
//!
//! A `slow_body` fault of the random phase (a body up to 2 s late, past many deadlines) needs
//! no bound of its own: the heal sets every slowed server back to 0 at `heal_ms`, before
//! `restart_all_ms` where the liveness bound starts, so every RPC the bounds below count on is
//! answered at once; before that, `deadlines` is what it tests, and it disqualifies a seed
//! from `max_failed` like any fault that is not a crash.
//!
//! A `goaway` fault needs no bound either: it ends connections without failing anything (the
//! subchannel goes IDLE and reconnects at once; streams the server did not process are retried
//! transparently), so it is allowed beside the crashes of a `max_failed = 0` seed. A
//! MAX_CONNECTION_AGE keeps replacing connections through the quiet period, so the bounds that
//! count connections or measure a split over it (`connections_after`, `weights`) and the final
//! state (pick_first is IDLE between a GOAWAY and the next RPC) are left out for those seeds;
//! liveness and `max_failed` still hold: no RPC may fail because a connection aged.

use std::collections::BTreeMap;

use super::generate::{Discovery, Facts};
use crate::sim::scenario::{Action, Expect, MAX_TIME_LIMIT_MS, Scenario};

/// How long after the liveness bound RPCs must keep succeeding: the quiet period the workload
/// is sized to reach.
pub(super) const QUIET_MS: u64 = 1000;

/// The longest a subchannel may take to be READY again once everything it needs is healthy,
/// ms. A connection wedged by a partition is declared dead within one keep-alive interval plus
/// its timeout; a connect attempt that began while its host was down (turmoil drops the SYN)
/// hangs for at most the connect timeout; the next attempt waits at most the longest backoff
/// with jitter (`max_ms * (1 + jitter)`); that attempt takes at most the connect timeout again.
/// Five greatest one-way latencies cover the TCP handshake, the HTTP/2 SETTINGS exchange and a
/// request on top. With etcd, the same chain happens first to etcd (the resolver's watch and
/// each server's registration), then a registration whose lease expired while cut off needs
/// up to one lease time-to-live to be noticed and two requests (grant, put) to be written.
pub(super) fn liveness_ms(s: &Scenario, facts: &Facts) -> u64 {
    let c = &s.client;
    let backoff_cap = (c.backoff.max_ms as f64 * (1.0 + c.backoff.jitter)).ceil() as u64;
    let keepalive = c.keepalive.interval_ms + c.keepalive.timeout_ms;
    let chain = keepalive + 2 * c.connect_timeout_ms + backoff_cap;
    // With health checking a new connection is READY for the policy only once its Watch
    // stream has answered SERVING: one more round trip (gRFC A17).
    let health_rtt = if facts.health { 2 * s.network.max_latency_ms } else { 0 };
    let channel = chain + 5 * s.network.max_latency_ms + health_rtt;
    let etcd = match (&s.etcd, facts.discovery) {
        (Some(etcd), Discovery::Etcd) => {
            let ttl_ms = s
                .servers
                .iter()
                .filter_map(|sv| sv.register.as_ref())
                .map(|r| u64::try_from(r.ttl_s).unwrap_or(0) * 1000)
                .max()
                .unwrap_or(0);
            chain + ttl_ms + 2 * etcd.request_timeout_ms
        }
        _ => 0,
    };
    channel + etcd
}

/// How long after a crash of the host of the first `before` addresses pick_first serves from
/// the next host, ms. The lost connection is noticed at the latest when keep-alive declares it
/// dead (interval plus timeout; a crash closes the socket, which is usually sooner). pick_first
/// then goes IDLE and the next RPC starts a pass from the top of the list: each of the `before`
/// addresses on the crashed host hangs (turmoil drops the SYN) until its attempt's timeout,
/// which is the connect timeout or the current backoff, whichever is longer (gRFC A62 with
/// grpc's connection backoff), at most the longest backoff with jitter. Five greatest one-way
/// latencies cover the handshake, SETTINGS and a request on the next host; 100 ms absorbs the
/// tick granularity of each step.
pub(super) fn failover_ms(
    client: &crate::sim::scenario::ClientSpec,
    network: &crate::sim::scenario::Network,
    before: u32,
) -> u64 {
    let backoff_cap = (client.backoff.max_ms as f64 * (1.0 + client.backoff.jitter)).ceil() as u64;
    let attempt = client.connect_timeout_ms.max(backoff_cap);
    let keepalive = client.keepalive.interval_ms + client.keepalive.timeout_ms;
    keepalive + u64::from(before) * attempt + 5 * network.max_latency_ms + 100
}

/// When the quiet period ends: the last fault, then the liveness bound, then [`QUIET_MS`].
pub(super) fn quiet_end_ms(s: &Scenario, facts: &Facts) -> u64 {
    facts.restart_all_ms + liveness_ms(s, facts) + QUIET_MS
}

/// The slowest a successful RPC can be once the network is healthy: a round trip at the
/// greatest latency, with a tick each way for the hosts to run.
fn healthy_rtt_ms(s: &Scenario) -> u64 {
    2 * s.network.max_latency_ms + 2
}

/// No hang: the workload sends an RPC at most every `pacing_ms` per worker, so by the end of
/// the quiet period it has at most every RPC left; from then on each takes at most a healthy
/// round trip plus its pacing, and one RPC per worker may still be waiting out its deadline.
/// Two seconds on top absorb the tick granularity of every step.
pub(super) fn time_limit_ms(s: &Scenario, facts: &Facts) -> u64 {
    let w = &s.workload;
    let per_worker = u64::from(w.rpcs).div_ceil(u64::from(w.concurrency)) + 1;
    let tail = per_worker * (w.pacing_ms + healthy_rtt_ms(s));
    (quiet_end_ms(s, facts) + w.deadline_ms + tail + 2000).min(MAX_TIME_LIMIT_MS)
}

/// The `[expect]` table of a generated scenario.
pub(super) fn expect(s: &Scenario, facts: &Facts) -> Expect {
    let live = liveness_ms(s, facts);
    let mut e = Expect {
        // Liveness: from the restart of everything (the last fault), every RPC that starts
        // after the bound succeeds, and the channel ends READY.
        liveness_within_ms: Some(live),
        final_state: Some("READY".into()),
        ..Expect::default()
    };
    // Connections after the heal. At `restart_all_ms` every server host restarts, so every
    // connection before it is gone and each subchannel reconnects exactly once: round_robin
    // opens `#N` to each listed server; pick_first, READY at that moment on some address,
    // starts a new pass from the top of the list, whose first address is up, so it opens one
    // connection, to the first listed server. Nothing fails after that, so nothing reconnects.
    let mut after: BTreeMap<String, u64> =
        s.servers.iter().map(|sv| (sv.name.clone(), 0)).collect();
    let mut weights: BTreeMap<String, f64> =
        s.servers.iter().map(|sv| (sv.name.clone(), 0.0)).collect();
    if facts.round_robin {
        for (name, n) in &facts.listed {
            after.insert(name.clone(), u64::from(*n));
            weights.insert(name.clone(), f64::from(*n));
        }
    } else if let Some((first, _)) = facts.listed.first() {
        after.insert(first.clone(), 1);
        weights.insert(first.clone(), 1.0);
    }
    e.connections_after = Some(after);
    e.connections_after_ms = Some(facts.restart_all_ms);
    // The split, from the liveness bound on. round_robin cycles over its READY subchannels in
    // a fixed order and nothing enters or leaves READY in the window, so over n picks each
    // subchannel gets n/S ± 1 and a server with N of them is off by at most N/n; up to one RPC
    // per worker straddles the window's start. n is at least the RPCs the workers start in the
    // quiet period at the healthy round trip. pick_first sends everything to one server.
    let w = &s.workload;
    let n_min = (u64::from(w.concurrency) * QUIET_MS / (w.pacing_ms + healthy_rtt_ms(s))).max(1);
    let max_n = facts.listed.iter().map(|(_, n)| u64::from(*n)).max().unwrap_or(1);
    let tolerance = if facts.round_robin {
        // Rounded up to a thousandth so reports stay readable.
        ((max_n + u64::from(w.concurrency)) as f64 * 1000.0 / n_min as f64).ceil().min(1000.0)
            / 1000.0
    } else {
        0.0
    };
    e.weights = Some(weights);
    e.settle_ms = Some(live);
    e.tolerance = Some(tolerance);
    if s.servers.iter().any(|sv| sv.max_connection_age_ms.is_some()) {
        e.connections_after = None;
        e.connections_after_ms = None;
        e.weights = None;
        e.settle_ms = None;
        e.tolerance = None;
        e.final_state = None;
    }
    // Failover: a focused seed's crash cuts the first listed host off while another listed
    // host stays up and untouched until the heal. pick_first must serve from another host
    // within the bound (it served from the first host before: the crash comes at least 200 ms
    // into the workload, after the first connection is READY). round_robin needs no bound of
    // its own: its other subchannels are READY throughout.
    if let (Some(focus), false) = (&facts.focus, facts.round_robin) {
        e.failover_within_ms = Some(focus.failover_ms);
    }
    // With a retry policy, nothing is lost to a crash it could be retried around. Only set
    // when that holds by construction: round_robin over a static list with at least two
    // server hosts, where the random phase only crashes, restarts or bounces one of them, so
    // the others stay READY throughout; the final restart of every host at once may catch one
    // RPC per worker, but the retry finds the restarted servers as soon as they reconnect.
    if facts.retry && facts.round_robin && facts.discovery == Discovery::Pass {
        let random: Vec<_> = s.faults.iter().filter(|f| f.at_ms < facts.heal_ms).collect();
        let only_server_faults = random.iter().all(|f| {
            matches!(f.action, Action::Crash | Action::Restart | Action::Bounce | Action::GoAway)
        });
        let touched: std::collections::BTreeSet<&str> =
            random.iter().filter_map(|f| f.host.as_deref()).collect();
        let listed_hosts: std::collections::BTreeSet<String> = facts
            .listed
            .iter()
            .filter_map(|(name, _)| s.servers.iter().find(|sv| &sv.name == name))
            .map(|sv| sv.host.clone().unwrap_or_else(|| sv.name.clone()))
            .collect();
        let untouched = listed_hosts.iter().filter(|h| !touched.contains(h.as_str())).count();
        // A random phase of GOAWAYs alone touches no host: it must lose nothing either.
        let only_goaways = !random.is_empty() && random.iter().all(|f| f.action == Action::GoAway);
        let one_crashed = touched.len() <= 1 && untouched >= 1 && listed_hosts.len() >= 2;
        if only_goaways || (only_server_faults && one_crashed) {
            e.max_failed = Some(0);
        }
    }
    e
}
