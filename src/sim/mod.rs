//! The deterministic simulation harness: scenarios from `sims/*.toml` run on turmoil's simulated
//! network, through the real channel and the real instrumented servers, and are checked
//! against their expectations.
//!
//! - [`scenario`]: the scenario file format (every key documented in README.md).
//! - `net`: the turmoil connector and listener, and the socket registry (DESIGN §3's hazard).
//! - `server`: servers as turmoil hosts, one [`ServerRecorder`](crate::server::ServerRecorder)
//!   per boot.
//! - `client`: the channel and the workload on the client host; per-RPC outcomes.
//! - `faults`: the fault schedule (crash, restart, partition, hold, latency, resolver updates).
//! - [`checks`]: the properties, each reported with what was measured.
//! - [`trace`]: the event trace with simulated-time stamps, and its stable hash.
//! - [`report`]: the per-run table and JSON, and the headline figures of a scenario's runs.
//! - [`plot`]: a run drawn over simulated time as SVG.
//! - [`swarm`]: scenarios generated from a seed, checked against universal invariants.
//! - [`mutants`]: deliberately broken channels and the matrix of the checks that catch them.
//! - [`tonic_client`]: tonic's own clients (a `Channel`, a pool, p2c) in place of anchorage's
//!   channel, judged by the same properties.
//!
//! ```no_run
//! use anchorage::sim::{self, scenario::Scenario};
//! let scenario = Scenario::load("sims/weighted_round_robin.toml")?;
//! let report = sim::run(&scenario, 7);
//! if !report.passed {
//!     eprintln!("{}", report.failure_line());
//! }
//! # Ok::<_, anchorage::sim::scenario::ScenarioError>(())
//! ```
//!
//! # Determinism
//! The harness chooses every seed: turmoil's (`Builder::rng_seed`, which draws message
//! latencies) and the channel's (derived from the run's seed), so turmoil never seeds from the
//! OS. Nothing reads the wall clock; every time is turmoil's simulated time. A run is a function
//! of (scenario, seed): the same pair gives a byte-identical trace in any process.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::{Arc, Once};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

pub mod checks;
mod client;
mod etcd;
mod faults;
pub mod mutants;
mod net;
pub mod plot;
pub mod report;
pub mod scenario;
mod server;
pub mod shrink;
pub mod swarm;
pub mod tonic_client;
pub mod trace;

pub use checks::Property;
pub use client::{Outcome, RpcRecord};
pub use net::TurmoilConnector;
pub use tonic_client::ClientKind;

pub use crate::mutant::Mutant;
use crate::resolver::ResolverBuilder;
use crate::resolver::manual::ManualResolver;
use crate::sync::lock;
use scenario::{CLIENT_HOST, Scenario, parse_address};
use trace::Trace;

/// The simulated TCP capacity: how many connection attempts a listening port queues, and how
/// many segments a connection has in flight each way. turmoil's default of 64 panics ("server
/// socket buffer full") when a target such as `#1024` opens more connections to one port in one
/// tick; twice [`scenario::MAX_CONNECTIONS`] leaves room for two address lists in one tick.
pub const SIM_TCP_CAPACITY: usize = 2 * scenario::MAX_CONNECTIONS;

/// The simulated time each turmoil step advances.
pub const TICK: Duration = Duration::from_millis(1);

/// What one run of one scenario with one seed found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The scenario's name (its file stem).
    pub scenario: String,
    /// The scenario file.
    pub path: String,
    /// The seed.
    pub seed: u64,
    /// Whether every property held.
    pub passed: bool,
    /// Every property checked, with its measurements.
    pub properties: Vec<Property>,
    /// RPCs sent, succeeded and failed.
    pub rpcs: RpcCounts,
    /// Per server: connections accepted and RPCs served, per connection.
    pub servers: Vec<report::ServerReport>,
    /// The observed split of successful RPCs against the expected one, when weights are set.
    pub split: Option<report::Split>,
    /// Simulated time at the end of the run, ms.
    pub sim_time_ms: u64,
    /// FNV-1a hash of the trace, hex.
    pub trace_hash: String,
    /// Number of trace lines.
    pub trace_lines: usize,
    /// The command that replays this run.
    pub replay: String,
    /// The trace itself (not serialised; print it with `--trace`).
    #[serde(skip)]
    pub trace: String,
    /// What the run recorded over simulated time, for `--plot` (not serialised).
    #[serde(skip)]
    pub timeline: plot::Timeline,
    /// The headline figures of the properties checked, for the one-line summary of the
    /// scenario (not serialised).
    #[serde(skip)]
    pub figures: Vec<report::Figure>,
}

/// RPC totals of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RpcCounts {
    /// RPCs the workload sent.
    pub sent: u32,
    /// Of those, the ones that succeeded.
    pub ok: u32,
    /// Of those, the ones that failed.
    pub failed: u32,
}

impl RunReport {
    /// The one line printed for a failing run: what failed, and the command that replays it.
    pub fn failure_line(&self) -> String {
        let failed: Vec<String> = self
            .properties
            .iter()
            .filter(|p| p.failed())
            .map(|p| format!("{} ({})", p.name, p.measured))
            .collect();
        format!(
            "FAIL {} seed {}: {}; replay: {}",
            self.scenario,
            self.seed,
            failed.join("; "),
            self.replay
        )
    }
}

/// The command that replays `path` with `seed`.
pub fn replay_command(path: &str, seed: u64) -> String {
    format!("cargo run --release -- sim {path} --seed {seed}")
}

/// The channel's seed for a run: a fixed mix of the run's seed (SplitMix64's finaliser), so the
/// channel's and the network's random streams differ.
pub fn channel_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a run may change beyond its scenario and seed.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A resolver builder registered on the client's channel for its scheme, replacing the
    /// built-in one: how the audit runs scenarios against another resolver.
    pub resolver: Option<Arc<dyn ResolverBuilder>>,
    /// The name of that resolver as `anchorage sim --subject` takes it, for the replay line.
    pub subject: Option<String>,
    /// A deliberate defect switched on in the client's channel (`anchorage mutants`).
    pub mutant: Option<Mutant>,
    /// Which client runs the workload: anchorage's channel (the default) or one of tonic's
    /// ([`tonic_client`]), which takes its addresses from the same resolver.
    pub client: ClientKind,
}

/// Runs `scenario` once with `seed` and checks its properties.
///
/// Runs on the calling thread and blocks until the simulation ends: when the workload is done,
/// or at the scenario's `time_limit_ms` of simulated time (a failure).
pub fn run(scenario: &Scenario, seed: u64) -> RunReport {
    run_with(scenario, seed, &RunOptions::default())
}

/// [`run`] with [`RunOptions`].
///
/// # Panics
/// Never because of the scenario: a panic anywhere in the simulation — in turmoil, in a host's
/// software, or in a task that tokio would otherwise swallow — makes the run fail with the
/// panic's message in its `no_panic` property.
pub fn run_with(scenario: &Scenario, seed: u64, options: &RunOptions) -> RunReport {
    let trace = Trace::new();
    let outer = panics::start();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        simulate(scenario, seed, options, trace.clone())
    }));
    let caught = panics::finish(outer);
    let mut report = match result {
        Ok(report) => report,
        Err(_) => panicked_report(scenario, seed, options, &trace),
    };
    if !caught.is_empty() {
        report.passed = false;
        report.properties.push(Property {
            name: "no_panic".to_owned(),
            verdict: checks::Verdict::Fail,
            measured: format!("the simulation panicked: {}", caught.join("; ")),
            premise_missing: false,
        });
    }
    report
}

/// The report of a run that panicked before it could be checked: only the panic (added by
/// [`run_with`]) and the trace up to it.
fn panicked_report(
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
    trace: &Trace,
) -> RunReport {
    let text = trace.render();
    let path = scenario.path.display().to_string();
    RunReport {
        scenario: scenario.name(),
        passed: false,
        seed,
        rpcs: RpcCounts { sent: 0, ok: 0, failed: 0 },
        servers: Vec::new(),
        split: None,
        properties: Vec::new(),
        sim_time_ms: 0,
        trace_hash: format!("{:016x}", trace::fnv1a(&text)),
        trace_lines: trace.len(),
        replay: replay_line(&path, seed, options),
        path,
        trace: text,
        timeline: plot::Timeline::default(),
        figures: Vec::new(),
    }
}

fn replay_line(path: &str, seed: u64, options: &RunOptions) -> String {
    let mut line = replay_command(path, seed);
    if let Some(subject) = &options.subject {
        line.push_str(&format!(" --subject {subject}"));
    }
    if let Some(mutant) = options.mutant {
        line.push_str(&format!(" --mutant {mutant}"));
    }
    line
}

/// Panics on the simulating thread, recorded by a process-wide panic hook (installed once, and
/// chained to the hook it replaces) while a run is in progress on that thread. turmoil runs
/// every host on the calling thread, so this sees the panics tokio catches in spawned tasks
/// and would otherwise only drop.
mod panics {
    use super::*;

    thread_local! {
        static RECORDED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    static HOOK: Once = Once::new();

    /// Starts recording on this thread; returns the recording of an enclosing run, if any.
    pub(super) fn start() -> Option<Vec<String>> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let text = describe(info);
                let _ = RECORDED.try_with(|cell| {
                    if let Ok(mut slot) = cell.try_borrow_mut()
                        && let Some(list) = slot.as_mut()
                    {
                        list.push(text);
                    }
                });
                previous(info);
            }));
        });
        RECORDED.with(|cell| cell.replace(Some(Vec::new())))
    }

    /// Stops recording, restores `outer`, and returns what was recorded.
    pub(super) fn finish(outer: Option<Vec<String>>) -> Vec<String> {
        RECORDED.with(|cell| cell.replace(outer)).unwrap_or_default()
    }

    fn describe(info: &PanicHookInfo<'_>) -> String {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
        match info.location() {
            Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
            None => message,
        }
    }
}

/// One run, which may panic; [`run_with`] catches it.
fn simulate(scenario: &Scenario, seed: u64, options: &RunOptions, trace: Trace) -> RunReport {
    let limit = Duration::from_millis(scenario.time_limit_ms);
    let net = &scenario.network;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tcp_capacity(SIM_TCP_CAPACITY)
        .epoch(UNIX_EPOCH)
        .tick_duration(TICK)
        // turmoil's own limit only backs ours up.
        .simulation_duration(limit + Duration::from_secs(1))
        .min_message_latency(Duration::from_millis(net.min_latency_ms))
        .max_message_latency(Duration::from_millis(net.max_latency_ms))
        .build();

    let boots = server::Boots::default();
    let servers = scenario.server_list();
    let etcd = etcd::SimEtcd::new(scenario, channel_seed(seed));
    if let Some(etcd) = &etcd {
        sim.host(etcd.spec.host.as_str(), etcd.host_software(trace.clone()));
    }
    let body_delays = server::BodyDelays::new(&servers);
    let goaways = server::GoAways::new(&servers);
    let healths = server::Healths::new(&servers);
    let context = server::HostContext {
        keepalive: scenario
            .client
            .keepalive
            .enabled
            .then(|| Duration::from_millis(scenario.client.keepalive.interval_ms)),
        boots: boots.clone(),
        trace: trace.clone(),
        etcd: etcd.clone(),
        body_delays: body_delays.clone(),
        goaways: goaways.clone(),
        healths: healths.clone(),
    };
    for host in scenario.hosts() {
        let on_host: Vec<_> = servers.iter().filter(|s| s.host == host).cloned().collect();
        sim.host(host.as_str(), server::host_software(host.clone(), on_host, context.clone()));
    }
    let manual = manual_resolver(scenario);
    let log = client::SharedLog::default();
    sim.client(
        CLIENT_HOST,
        client::run(
            scenario.clone(),
            channel_seed(seed),
            manual.clone(),
            etcd.clone(),
            options.clone(),
            trace.clone(),
            log.clone(),
        ),
    );
    for link in &net.links {
        let [a, b] = &link.between;
        sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(link.latency_ms));
    }

    let schedule = faults::schedule(&scenario.faults);
    let mut pending = schedule.iter().peekable();
    let mut applied = Vec::new();
    let mut outcome = checks::Ending::TimedOut;
    let max_steps = limit.as_millis() / TICK.as_millis() + 1;
    for _ in 0..max_steps {
        while let Some(fault) =
            pending.next_if(|f| u128::from(f.at_ms) <= sim.elapsed().as_millis())
        {
            trace.record_at(sim.elapsed(), "faults", fault.describe());
            let targets = faults::Targets {
                manual: manual.as_ref(),
                etcd: etcd.as_ref(),
                body_delays: &body_delays,
                goaways: &goaways,
                healths: &healths,
            };
            faults::apply(&mut sim, fault, targets, &trace);
            applied.push(faults::Applied { at: sim.elapsed(), fault: fault.clone() });
        }
        match sim.step() {
            Ok(true) => {
                outcome = checks::Ending::Finished;
                break;
            }
            Ok(false) => {}
            Err(error) => {
                outcome = checks::Ending::Error(error.to_string());
                break;
            }
        }
    }
    let end = sim.elapsed();
    let skipped: Vec<_> = pending.cloned().collect();
    let boots = boots.all();
    drop(sim);

    let log = std::mem::take(&mut *lock(&log));
    let observed = checks::Observed::new(scenario, log, &boots, applied, skipped, outcome, end);
    let mut properties = checks::evaluate(&observed);
    tonic_client::adjust(&mut properties, scenario, options.client);
    let text = trace.render();
    let path = scenario.path.display().to_string();
    RunReport {
        scenario: scenario.name(),
        passed: !properties.iter().any(Property::failed),
        seed,
        rpcs: observed.counts(),
        servers: report::servers(&observed),
        split: report::split(&observed),
        timeline: plot::timeline(&observed),
        figures: report::figures(&observed),
        properties,
        sim_time_ms: u64::try_from(end.as_millis()).unwrap_or(u64::MAX),
        trace_hash: format!("{:016x}", trace::fnv1a(&text)),
        trace_lines: trace.len(),
        replay: replay_line(&path, seed, options),
        path,
        trace: text,
    }
}

/// The manual resolver for a `manual:` target, primed with `client.manual_addresses`.
fn manual_resolver(scenario: &Scenario) -> Option<ManualResolver> {
    let scheme = scenario.client.target.split(':').next()?.to_ascii_lowercase();
    if scheme != "manual" {
        return None;
    }
    let manual = ManualResolver::new("manual");
    if let Some(list) = &scenario.client.manual_addresses {
        manual.update_addresses(list.iter().filter_map(|a| parse_address(a).ok()).collect());
    }
    Some(manual)
}

/// Runs `scenario` with `seed` twice and returns both trace hashes: the determinism self-check.
pub fn determinism_check(scenario: &Scenario, seed: u64) -> (String, String) {
    let first = run(scenario, seed);
    let second = run(scenario, seed);
    (first.trace_hash, second.trace_hash)
}
