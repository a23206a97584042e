//! tonic's own clients as simulation subjects: the client host runs unmodified tonic 0.14
//! client code — `Endpoint::connect_with_connector_lazy` over the turmoil network — instead of
//! anchorage's channel, so a scenario shows side by side what a user's tonic client does under
//! the same faults.
//!
//! Addresses come from the scenario's own resolver (the `pass` target, the manual resolver's
//! scripted updates, etcd), driven here outside any channel; each update is handed to the
//! subject the way a user would hand it:
//!
//! | subject | built from each resolver update |
//! |---|---|
//! | `tonic-channel` | one `Channel` to the first address of the first update |
//! | `tonic-pool` | one `Channel` per address of the first update (`#N` gives N), picked in turn |
//! | `tonic-p2c` | tonic's `Change::Insert`/`Change::Remove`, one key per address and connection index, into a power-of-two-choices balancer |
//! | `tonic-balance-list` | the first update's addresses as URIs, keyed by URI as `Channel::balance_list` keys them |
//!
//! # Why `tonic-p2c` is not `Channel::balance_channel` itself
//! `balance_channel` cannot run here: the per-endpoint connections it builds always dial real
//! TCP (`Endpoint::http_connector`), and its balancer is tower's `Balance::new`, which draws
//! from a per-process `RandomState`, so no run could be replayed. `tonic-p2c` is tower 0.5's
//! public p2c `Balance`, built with `Balance::from_rng` and a seeded ChaCha generator, behind a
//! `Buffer` as `balance_channel` puts it. tonic's per-endpoint service (its lazy `Reconnect`
//! over one HTTP/2 connection) is crate-private, so each endpoint here follows its states over
//! tonic's public API:
//! - the first `poll_ready` starts a connection attempt (`Endpoint::connect_with_connector`)
//!   and the endpoint is not ready until it ends, so p2c picks another;
//! - after a failed attempt it is ready, and the next RPC picked for it fails with the
//!   connection error, after which the next `poll_ready` starts a new attempt (the behaviour
//!   tonic issue #2839 reports as p2c picking dead endpoints);
//! - a lost connection is noticed when p2c next polls the endpoint, which starts a new attempt.
//!
//! Each endpoint reports load 0, as tonic's does, so p2c's choice is its first random index.
//! What differs from `balance_channel`: each connection is its own tonic `Channel` (a `Buffer`
//! and tonic's `Reconnect` over it) instead of tonic's bare per-endpoint service, and an
//! endpoint counts its connection lost when hyper drops the connection's socket rather than
//! when hyper's `SendRequest` reports it closed.
//!
//! `tonic-balance-list` shares that balancer.
//!
//! # Settings
//! Applied to every `Endpoint`: the connect timeout, HTTP/2 keep-alive interval and timeout,
//! and keep-alive while idle. tonic has no equivalent of the service config (policy, retries,
//! method timeouts), the reconnect backoff or wait-for-ready; [`not_applied`] names the service
//! config and wait-for-ready when a scenario sets them, and the backoff always (every scenario
//! has one, its own or the default).
//!
//! # Determinism
//! The balancer's generator is seeded from the run's seed; tonic's, tower's and hyper's tasks
//! run on the client host's single thread; nothing here iterates a hash map.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;
use tower::util::BoxCloneService;

use super::checks::{Property, Verdict};
use super::client::{Outcome, RpcRecord, SharedLog, code_name, run_workers};
use super::scenario::{ClientSpec, Scenario, Workload};
use super::trace::{self, Trace};
use crate::address::Address;
use crate::pb::EchoRequest;
use crate::pb::echo_client::EchoClient;
use crate::resolver::{Registry, ResolverBuilder, Updates};
use crate::sync::lock;
use crate::target::Target;

mod p2c;

use p2c::{BoxError, Svc, TonicConnector, balancer};

/// Which client runs a scenario's workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClientKind {
    /// anchorage's channel (the default).
    #[default]
    Anchorage,
    /// One tonic `Channel` to the first address.
    TonicChannel,
    /// tower's p2c over one tonic `Channel` per address and connection index, fed by the
    /// resolver's updates (see the module documentation for how it differs from
    /// `Channel::balance_channel`).
    TonicP2c,
    /// The same balancer fed once with the first update's URIs, keyed by URI as
    /// `Channel::balance_list` keys them.
    TonicBalanceList,
    /// One tonic `Channel` per address and connection index, picked in turn.
    TonicPool,
}

impl ClientKind {
    /// The tonic clients, in matrix order.
    pub const TONIC: [ClientKind; 4] =
        [Self::TonicChannel, Self::TonicPool, Self::TonicP2c, Self::TonicBalanceList];

    /// Its name, as `anchorage sim --subject` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anchorage => "anchorage-channel",
            Self::TonicChannel => "tonic-channel",
            Self::TonicP2c => "tonic-p2c",
            Self::TonicBalanceList => "tonic-balance-list",
            Self::TonicPool => "tonic-pool",
        }
    }

    /// The client named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Anchorage].into_iter().chain(Self::TONIC).find(|k| k.name() == name)
    }

    /// What it is, one line.
    pub fn description(self) -> &'static str {
        match self {
            Self::Anchorage => "anchorage's channel with its own resolvers and policies",
            Self::TonicChannel => "tonic 0.14: one Channel to the first resolved address",
            Self::TonicP2c => {
                "tonic 0.14 Channels per address and #N index under tower 0.5's p2c Balance with \
                 a seeded RNG and tonic's per-endpoint readiness, fed Change::Insert/Remove \
                 (balance_channel itself dials real TCP and is unseeded)"
            }
            Self::TonicBalanceList => {
                "tonic 0.14 Channels keyed by URI as balance_list keys them, under the same \
                 seeded p2c; first resolution only"
            }
            Self::TonicPool => {
                "tonic 0.14: one Channel per address and #N index, picked in turn; first \
                 resolution only"
            }
        }
    }

    /// Whether it is one of tonic's clients.
    pub fn is_tonic(self) -> bool {
        self != Self::Anchorage
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Properties that judge anchorage's internals (its subchannels, its policy, its connectivity
/// state): shown as not applicable for a tonic client, never as a pass.
const INTERNAL: [&str; 3] = ["subchannels", "policy", "final_state"];

/// Marks the properties a tonic `client` cannot be judged on as not applicable, and adds one
/// line naming the scenario's settings tonic has no equivalent for.
pub(crate) fn adjust(properties: &mut Vec<Property>, scenario: &Scenario, client: ClientKind) {
    if !client.is_tonic() {
        return;
    }
    for p in properties.iter_mut().filter(|p| INTERNAL.contains(&p.name.as_str())) {
        p.verdict = Verdict::NotApplicable;
        p.measured = format!("n/a for {client}: it judges anchorage's channel internals");
    }
    let skipped = not_applied(scenario);
    if !skipped.is_empty() {
        properties.push(Property {
            name: "client_settings".to_owned(),
            verdict: Verdict::NotApplicable,
            measured: format!(
                "not applied to {client} (no tonic equivalent): {}",
                skipped.join(", ")
            ),
            premise_missing: false,
        });
    }
}

/// The scenario's client settings that a tonic client cannot apply.
pub fn not_applied(scenario: &Scenario) -> Vec<&'static str> {
    let mut out = Vec::new();
    if scenario.client.service_config.is_some() {
        out.push("service config (policy, retries, method timeouts)");
    }
    out.push("reconnect backoff");
    if scenario.workload.wait_for_ready {
        out.push("wait-for-ready");
    }
    out
}

/// What the workers send on.
#[derive(Clone)]
enum Client {
    One(Channel),
    Pool { channels: Arc<Vec<Channel>>, next: Arc<AtomicUsize> },
    Balanced(Svc),
}

impl Client {
    /// The service for the next RPC: a pool takes its channels in turn.
    fn pick(&self) -> Svc {
        let boxed =
            |channel: &Channel| BoxCloneService::new(channel.clone().map_err(BoxError::from));
        match self {
            Self::One(channel) => boxed(channel),
            Self::Pool { channels, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % channels.len();
                boxed(&channels[i])
            }
            Self::Balanced(svc) => svc.clone(),
        }
    }
}

/// How resolver updates reach the client.
enum Feed {
    /// Built from the first update only (`tonic-channel`, `tonic-pool`).
    Once { kind: ClientKind, built: watch::Sender<Option<Client>> },
    /// Each update's difference as tonic `Change`s (`tonic-p2c`), or the first update's URIs
    /// (`tonic-balance-list`, `once`).
    Changes { changes: mpsc::Sender<Change<String, Endpoint>>, keys: Vec<String>, once: bool },
}

fn endpoint(addr: &str, c: &ClientSpec) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("tonic endpoint: address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(c.connect_timeout_ms));
    if c.keepalive.enabled {
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_millis(c.keepalive.interval_ms))
            .keep_alive_timeout(Duration::from_millis(c.keepalive.timeout_ms))
            .keep_alive_while_idle(true);
    }
    Ok(endpoint)
}

impl Feed {
    /// Hands `addresses` to the client; returns false once nothing more will be taken.
    async fn apply(&mut self, addresses: &[Address], c: &ClientSpec, trace: &Trace) -> bool {
        match self {
            Self::Once { kind, built } => {
                let take = if *kind == ClientKind::TonicChannel { 1 } else { addresses.len() };
                let mut channels = Vec::new();
                for a in &addresses[..take.min(addresses.len())] {
                    match endpoint(&a.addr, c) {
                        Ok(e) => {
                            channels.push(e.connect_with_connector_lazy(TonicConnector::default()))
                        }
                        Err(error) => {
                            trace.record("client", error);
                            return true;
                        }
                    }
                }
                let shape = match channels.len() {
                    0 => return true,
                    1 => format!("one channel to {}", addresses[0].addr),
                    n => format!("{n} channels"),
                };
                let client = if *kind == ClientKind::TonicChannel {
                    Client::One(channels.remove(0))
                } else {
                    Client::Pool { channels: Arc::new(channels), next: Arc::default() }
                };
                let text = format!("{kind}: built {shape}; later updates are not taken");
                trace.record("client", text);
                let _ = built.send(Some(client));
                false
            }
            Self::Changes { changes, keys, once } => {
                let mut wanted: Vec<(String, &Address)> = Vec::new();
                for a in addresses {
                    let key = if *once { format!("http://{}", a.addr) } else { a.to_string() };
                    wanted.push((key, a));
                }
                for key in keys.iter().filter(|k| !wanted.iter().any(|(w, _)| w == *k)) {
                    trace.record("client", format!("p2c remove {key}"));
                    let _ = changes.send(Change::Remove(key.clone())).await;
                }
                for (key, a) in &wanted {
                    if keys.contains(key) && !*once {
                        continue;
                    }
                    match endpoint(&a.addr, c) {
                        Ok(e) => {
                            trace.record("client", format!("p2c insert {key}"));
                            let _ = changes.send(Change::Insert(key.clone(), e)).await;
                        }
                        Err(error) => trace.record("client", error),
                    }
                }
                *keys = wanted.into_iter().map(|(k, _)| k).collect();
                keys.dedup();
                !*once
            }
        }
    }
}

/// The client host's software with a tonic client: drives the scenario's resolver, hands its
/// updates to the client, runs the workload and records every RPC.
pub(crate) async fn run(
    scenario: Scenario,
    seed: u64,
    resolvers: Vec<Arc<dyn ResolverBuilder>>,
    kind: ClientKind,
    trace: Trace,
    log: SharedLog,
) -> turmoil::Result {
    let (resolver, updates) = match start_resolver(&scenario.client.target, resolvers) {
        Ok(started) => started,
        Err(error) => {
            trace.record("client", format!("{kind} did not start: {error}"));
            lock(&log).build_error = Some(error);
            return Ok(());
        }
    };
    let (built, mut client) = watch::channel(None);
    let feed = match kind {
        ClientKind::TonicP2c | ClientKind::TonicBalanceList => {
            let (svc, changes) = balancer(seed);
            let _ = built.send(Some(Client::Balanced(svc)));
            let once = kind == ClientKind::TonicBalanceList;
            Feed::Changes { changes, keys: Vec::new(), once }
        }
        _ => Feed::Once { kind, built },
    };
    let spec = scenario.client.clone();
    let (t, l) = (trace.clone(), log.clone());
    tokio::task::spawn_local(async move {
        // The resolver lives as long as this task.
        let _resolver = resolver;
        follow(updates, feed, spec, t, l).await;
    });

    let w = scenario.workload.clone();
    tokio::time::sleep(Duration::from_millis(w.start_ms)).await;
    // A user builds these clients from the first address list, so the workload starts then.
    let Ok(ready) = client.wait_for(Option::is_some).await.map(|c| c.clone()) else {
        return Ok(());
    };
    let Some(client) = ready else { return Ok(()) };
    trace.record("client", format!("workload: {} RPCs, {} workers", w.rpcs, w.concurrency));
    let rpc = {
        let (w, trace) = (w.clone(), trace.clone());
        move |index| {
            let (svc, w, trace) = (client.pick(), w.clone(), trace.clone());
            async move { one_rpc(svc, index, &w, &trace).await }
        }
    };
    run_workers(&w, &log, rpc).await?;
    trace.record("client", format!("workload done ({kind})"));
    Ok(())
}

/// Builds the resolver for `target` from the scenario's resolvers (anchorage's registry with
/// the run's overrides), as the channel would.
fn start_resolver(
    target: &str,
    resolvers: Vec<Arc<dyn ResolverBuilder>>,
) -> Result<(Box<dyn crate::resolver::Resolver>, Updates), String> {
    let mut registry = Registry::default();
    for builder in resolvers {
        registry.register(builder);
    }
    let target = Target::parse(target, |s| registry.has_scheme(s)).map_err(|e| e.to_string())?;
    let builder = registry
        .get(target.scheme())
        .or_else(|| registry.get("passthrough"))
        .cloned()
        .ok_or_else(|| format!("resolver: no resolver for scheme {:?}", target.scheme()))?;
    let (sink, updates) = crate::resolver::UpdateSink::pair();
    let resolver = builder.build(&target, sink).map_err(|e| e.to_string())?;
    Ok((resolver, updates))
}

/// Reads the resolver's updates, records them as the channel's would be, and feeds the client.
async fn follow(
    mut updates: Updates,
    mut feed: Feed,
    spec: ClientSpec,
    trace: Trace,
    log: SharedLog,
) {
    let mut taking = true;
    while let Some(event) = updates.next().await {
        let state = match event {
            Ok(state) => state,
            Err(error) => {
                trace.record("client", format!("resolver error: {error}"));
                continue;
            }
        };
        let list: Vec<String> = state.addresses.iter().map(ToString::to_string).collect();
        trace.record("client", format!("resolved [{}]", list.join(", ")));
        {
            let mut log = lock(&log);
            let mut distinct: Vec<String> = Vec::new();
            for address in &state.addresses {
                if !distinct.contains(&address.addr) {
                    distinct.push(address.addr.clone());
                }
            }
            log.resolutions.push((trace::now(), distinct));
            if log.first_resolution.is_none() {
                let distinct = crate::address::dedup(state.addresses.iter().cloned()).len();
                log.first_resolution = Some(distinct);
            }
        }
        if taking {
            taking = feed.apply(&state.addresses, &spec, &trace).await;
        }
    }
}

async fn one_rpc(svc: Svc, index: u32, w: &Workload, trace: &Trace) -> RpcRecord {
    let deadline = Duration::from_millis(w.deadline_ms);
    let mut request =
        tonic::Request::new(EchoRequest { message: format!("rpc {index}"), ..Default::default() });
    request.set_timeout(deadline);
    let start = trace::now();
    let result = EchoClient::new(svc).echo(request).await;
    let end = trace::now();
    let took = trace::secs(end.saturating_sub(start));
    let (outcome, text) = match result {
        Ok(response) => {
            let reply = response.into_inner();
            let text =
                format!("rpc {index} OK -> {}#c{} in {took}", reply.server, reply.connection);
            let outcome = Outcome::Ok {
                server: reply.server,
                connection: reply.connection,
                subchannel: u64::MAX,
                address: String::new(),
            };
            (outcome, text)
        }
        Err(status) => {
            let code = code_name(status.code()).to_owned();
            let text = format!("rpc {index} {code} in {took}: {}", status.message());
            (Outcome::Failed { code, message: status.message().to_owned() }, text)
        }
    };
    trace.record("client", text);
    RpcRecord { index, start, end, deadline, outcome }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::ClientKind;
    use crate::sim::scenario::Scenario;
    use crate::sim::{RunOptions, run_with};

    thread_local! {
        /// Whether the balancer draws from tower's per-process generator (this thread only).
        pub(crate) static UNSEEDED: Cell<bool> = const { Cell::new(false) };
    }

    fn p2c_trace(seed: u64) -> String {
        let scenario =
            Scenario::load("sims/weighted_round_robin.toml").expect("a shipped scenario");
        let options = RunOptions { client: ClientKind::TonicP2c, ..RunOptions::default() };
        run_with(&scenario, seed, &options).trace
    }

    /// What `Channel::balance_channel` does (tower's `Balance::new`, a per-process
    /// `RandomState`) is not replayable: the seeded balancer exists because of this.
    #[test]
    fn a_p2c_balancer_drawing_from_random_state_gives_another_trace_for_the_same_seed() {
        UNSEEDED.set(true);
        let (first, second) = (p2c_trace(1), p2c_trace(1));
        UNSEEDED.set(false);
        assert_ne!(
            first, second,
            "an unseeded p2c must be caught by comparing two runs of the same seed"
        );
    }

    #[test]
    fn the_seeded_p2c_balancer_gives_the_same_trace_for_the_same_seed() {
        assert_eq!(p2c_trace(1), p2c_trace(1), "tonic-p2c must be replayable from its seed");
    }
}
