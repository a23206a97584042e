//! `anchorage probe <TARGET>`: runs RPCs through a channel and reports where they went, from
//! both sides: the client's outcomes and each server's own `Stats` (which accepted connection
//! served each RPC). Server connections are attributed to the probe when they answered one of
//! its RPCs or are still open when it asks; a server that other clients use at the same time
//! shows their open connections too.
//!
//! With `--duration D` the RPCs are paced evenly over D (RPC `i` starts at `i * D / --rpcs`
//! after the first), so a probe can watch a channel over time, across server restarts or
//! GOAWAYs, instead of sending everything at once.
//!
//! RPCs are fail-fast: while the channel is in TRANSIENT_FAILURE they fail at once and the report
//! prints the first error per status code (the connection error). `--wait-for-ready` marks every
//! RPC wait-for-ready, so they wait up to `--timeout` for a connection instead.
//!
//! `--ca FILE`, `--server-name NAME`, `--cert FILE --key FILE` or `--tls` make every connection
//! speak TLS ([`anchorage::tls`]); a failed handshake shows as the first UNAVAILABLE error, with
//! its reason (unknown CA, name mismatch, certificate required).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::anchor::AnchorList;
use anchorage::balancer::{ConnectivityState, SubchannelId};
use anchorage::channel::{Channel, ChannelEvent, ServedBy, WaitForReady};
use anchorage::pb::echo_client::EchoClient;
use anchorage::pb::{EchoRequest, StatsRequest, StatsResponse};
use anchorage::service_config::{LoadBalancingConfig, ServiceConfig};
use anchorage::target::{BUILTIN_SCHEMES, Target};
use serde::Serialize;

/// Arguments of `anchorage probe`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The target, e.g. `pass:///127.0.0.1:9080#2,127.0.0.1:9090#1`.
    target: String,
    /// The default service config (JSON), e.g. `{"loadBalancingConfig":[{"round_robin":{}}]}`.
    #[arg(long)]
    service_config: Option<String>,
    /// How many RPCs to send.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rpcs: u64,
    /// How many RPCs to keep in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Spread the RPCs evenly over this long instead of sending them as fast as possible:
    /// seconds (`6`, `0.5`) or with a unit (`6s`, `500ms`, `2m`); from 1ms to 1 day.
    #[arg(long, value_name = "DURATION", value_parser = super::common::parse_bounded_duration)]
    duration: Option<Duration>,
    /// Deadline of each RPC, in seconds: more than 0, at most 86400 (one day).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Send every RPC as wait-for-ready: while the channel is in TRANSIENT_FAILURE, RPCs wait
    /// (up to --timeout) for a connection instead of failing at once, so a recovery can be
    /// watched. Without it, probe fails fast and prints the connection error.
    #[arg(long)]
    wait_for_ready: bool,
    /// Seed of the channel's random number generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: super::common::TlsClientArgs,
}

/// The probe's findings; `--json` prints exactly this.
#[derive(Debug, Default, Serialize)]
struct Report {
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// The first message seen per status code (for UNAVAILABLE, the connection error).
    first_errors: BTreeMap<String, String>,
    servers: Vec<ServerReport>,
    /// Why a server's `Stats` could not be read, after some RPC succeeded: the report would be
    /// incomplete, so the probe fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats_error: Option<String>,
    /// (server name, connection id) of every connection that answered one of this probe's RPCs.
    #[serde(skip)]
    used: BTreeSet<(String, u64)>,
}

#[derive(Debug, Serialize)]
struct ServerReport {
    addr: String,
    name: String,
    connections_accepted: usize,
    rpcs: u64,
    rpcs_per_connection: Vec<u64>,
    /// Share of the probe's successful RPCs this server served.
    observed_share: f64,
    /// Share its `#N` weight asks for (only for `pass` targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_share: Option<f64>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let timeout = match timeout(args.timeout) {
        Ok(timeout) => timeout,
        Err(message) => {
            eprintln!("probe: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(probe(&args, timeout)) {
        Ok(report) => {
            print_report(&args, &report);
            if let Some(error) = &report.stats_error {
                eprintln!("probe: {error}");
                return ExitCode::FAILURE;
            }
            if report.errors.values().sum::<u64>() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("probe: {message}");
            ExitCode::from(2)
        }
    }
}

/// The longest `--timeout`, in seconds: one day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `--timeout` as a duration, if it is in (0, [`MAX_TIMEOUT_SECS`]].
fn timeout(secs: f64) -> Result<Duration, String> {
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(format!(
            "--timeout must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds, got {secs:?}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

async fn probe(args: &Args, timeout: Duration) -> Result<Report, String> {
    let mut builder = Channel::builder(args.target.clone()).seed(args.seed);
    if let Some(tls) = args.tls.config()? {
        builder = builder.tls(tls);
    }
    if let Some(json) = &args.service_config {
        builder = builder.default_service_config(json).map_err(|e| e.to_string())?;
    }
    let warm = Arc::new(tokio::sync::watch::Sender::new(Warmup::default()));
    let observer = warm.clone();
    let channel = builder
        .on_event(move |event| observer.send_modify(|w| w.observe(event)))
        .build()
        .map_err(|e| e.to_string())?;
    warm_up(&warm, args.service_config.as_deref(), timeout, args.wait_for_ready).await;
    let report = Arc::new(Mutex::new(Report::default()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pace =
        Pace { start: tokio::time::Instant::now(), duration: args.duration, rpcs: args.rpcs };
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (channel, report, next, total) =
            (channel.clone(), report.clone(), next.clone(), args.rpcs);
        let wait_for_ready = args.wait_for_ready;
        workers.push(tokio::spawn(async move {
            let mut client = EchoClient::new(channel);
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= total {
                    break;
                }
                tokio::time::sleep_until(pace.start_of(index)).await;
                let mut request = tonic::Request::new(EchoRequest {
                    message: "probe".into(),
                    ..Default::default()
                });
                request.set_timeout(timeout);
                if wait_for_ready {
                    request.extensions_mut().insert(WaitForReady(true));
                }
                let outcome = client.echo(request).await;
                let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        report.ok += 1;
                        report.used.insert((reply.server, reply.connection));
                    }
                    Err(status) => {
                        let code = code_name(status.code());
                        report
                            .first_errors
                            .entry(code.clone())
                            .or_insert_with(|| status.message().to_owned());
                        *report.errors.entry(code).or_default() += 1;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let mut report = Arc::try_unwrap(report)
        .map_err(|_| "workers still hold the report".to_owned())?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    report.errors.entry("UNAVAILABLE".into()).or_default();
    let (servers, stats_error) = server_stats(&channel, timeout, &report.used).await;
    report.servers = servers;
    // With no successful RPC there is no server to ask; the RPC errors already say why.
    if report.ok > 0 {
        report.stats_error = stats_error;
    }
    let weights = pass_weights(&args.target);
    for server in &mut report.servers {
        server.observed_share =
            if report.ok == 0 { 0.0 } else { server.rpcs as f64 / report.ok as f64 };
        server.expected_share =
            weights.as_ref().map(|w| w.get(&server.addr).copied().unwrap_or(0.0));
    }
    Ok(report)
}

/// When each RPC starts: all at once, or evenly over `--duration`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    start: tokio::time::Instant,
    duration: Option<Duration>,
    rpcs: u64,
}

impl Pace {
    /// The start of RPC number `index` (from 0): `index * duration / rpcs` after the first.
    fn start_of(&self, index: u64) -> tokio::time::Instant {
        let Some(duration) = self.duration else { return self.start };
        // `--rpcs` is at most 1,000,000 and `--duration` at most a day: no overflow in u128.
        let nanos = duration.as_nanos() * u128::from(index) / u128::from(self.rpcs.max(1));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// What the channel has connected so far, from its events.
#[derive(Debug, Default)]
struct Warmup {
    /// Distinct addresses in the resolver's last update.
    addresses: usize,
    /// Subchannels currently READY.
    ready: BTreeSet<SubchannelId>,
    /// Whether a picker was published after the last subchannel state change.
    published: bool,
    /// Whether the last picker was TRANSIENT_FAILURE: every connection attempt failed.
    failing: bool,
}

impl Warmup {
    fn observe(&mut self, event: &ChannelEvent) {
        match event {
            ChannelEvent::Resolved { addresses } => {
                self.addresses = anchorage::address::dedup(addresses.iter().cloned()).len();
            }
            ChannelEvent::Picker { state } => {
                self.published = true;
                self.failing = *state == ConnectivityState::TransientFailure;
            }
            ChannelEvent::SubchannelState { id, state, .. } => {
                self.published = false;
                if *state == ConnectivityState::Ready {
                    self.ready.insert(*id);
                } else {
                    self.ready.remove(id);
                }
            }
            _ => {}
        }
    }
}

/// Waits (at most `limit`) until the channel is warm, so the measured split is the policy's
/// steady state rather than an artefact of connections finishing at different times:
/// for `round_robin`, every resolved address READY; otherwise one READY connection. Unless
/// `wait_for_ready`, it stops early when the channel reports TRANSIENT_FAILURE, so fail-fast
/// RPCs fail at once with the connection error.
async fn warm_up(
    warm: &tokio::sync::watch::Sender<Warmup>,
    config: Option<&str>,
    limit: Duration,
    wait_for_ready: bool,
) {
    let round_robin = config
        .and_then(|json| ServiceConfig::parse(json).ok())
        .is_some_and(|c| *c.load_balancing() == LoadBalancingConfig::RoundRobin);
    let mut rx = warm.subscribe();
    let warmed = rx.wait_for(|w| {
        let connected = if round_robin {
            w.addresses > 0 && w.ready.len() >= w.addresses
        } else {
            !w.ready.is_empty()
        };
        (connected && w.published) || (w.failing && !wait_for_ready)
    });
    // Not warm in time (a server down, say): probe anyway and let the report show it.
    let _ = tokio::time::timeout(limit, warmed).await;
}

/// Asks every server reachable through the channel for its `Stats`, by sending `Stats` RPCs
/// through the channel itself (so no extra connection is opened) until a round brings no new
/// server. Servers are keyed by the address that served them. A `Stats` RPC that fails ends
/// the rounds, and its error is returned with the servers read so far.
async fn server_stats(
    channel: &Channel,
    timeout: Duration,
    used: &BTreeSet<(String, u64)>,
) -> (Vec<ServerReport>, Option<String>) {
    let mut client = EchoClient::new(channel.clone());
    let mut seen: BTreeMap<String, StatsResponse> = BTreeMap::new();
    let mut quiet_rounds = 0;
    let mut error = None;
    for _ in 0..64 {
        let mut request = tonic::Request::new(StatsRequest {});
        request.set_timeout(timeout);
        let response = match client.stats(request).await {
            Ok(response) => response,
            Err(status) => {
                let code = code_name(status.code());
                error = Some(format!("cannot read server stats: {code}: {}", status.message()));
                break;
            }
        };
        let addr = response.extensions().get::<ServedBy>().map(|s| s.address.addr.clone());
        let Some(addr) = addr else {
            error = Some("cannot read server stats: the reply names no serving address".into());
            break;
        };
        if seen.insert(addr, response.into_inner()).is_some() {
            quiet_rounds += 1;
            if quiet_rounds >= 8 {
                break;
            }
        } else {
            quiet_rounds = 0;
        }
    }
    let servers = seen
        .into_iter()
        .map(|(addr, stats)| {
            // This probe's connections: those that answered its RPCs, and those still open
            // (its channel is alive, so its idle connections are open too). Connections of
            // earlier clients, closed by now, are left out; other clients connected at the
            // same moment cannot be told apart and are counted.
            let ours = stats.connections.iter().filter(|c| {
                c.closed_at_ms.is_none() || used.contains(&(stats.server.clone(), c.id))
            });
            let rpcs_per_connection: Vec<u64> = ours.map(|c| c.rpcs).collect();
            ServerReport {
                addr,
                name: stats.server,
                connections_accepted: rpcs_per_connection.len(),
                rpcs: rpcs_per_connection.iter().sum(),
                rpcs_per_connection,
                observed_share: 0.0,
                expected_share: None,
            }
        })
        .collect();
    (servers, error)
}

/// For a `pass` target, each address's share of the `#N` weights.
fn pass_weights(target: &str) -> Option<BTreeMap<String, f64>> {
    let target = Target::parse(target, |s| BUILTIN_SCHEMES.contains(&s)).ok()?;
    if target.scheme() != "pass" {
        return None;
    }
    let anchors: AnchorList = target.endpoint().parse().ok()?;
    let total = anchors.total_connections() as f64;
    Some(anchors.items().iter().map(|a| (a.addr(), f64::from(a.connections()) / total)).collect())
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_uppercase()).then_some('_');
            sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

fn print_report(args: &Args, report: &Report) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
        return;
    }
    let failed: u64 = report.errors.values().sum();
    println!("probe {}: {} ok, {failed} failed", args.target, report.ok);
    for (code, count) in report.errors.iter().filter(|(_, n)| **n > 0) {
        match report.first_errors.get(code) {
            Some(message) => println!("  {code}: {count} (first: {message})"),
            None => println!("  {code}: {count}"),
        }
    }
    for s in &report.servers {
        let expected =
            s.expected_share.map_or(String::new(), |e| format!(", expected {:.1}%", e * 100.0));
        println!(
            "  server {} ({}): {} RPCs ({:.1}%{expected}), {} connection(s), per connection {:?}",
            s.name,
            s.addr,
            s.rpcs,
            s.observed_share * 100.0,
            s.connections_accepted,
            s.rpcs_per_connection
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_rpcs_start_evenly_over_the_duration() {
        let start = tokio::time::Instant::now();
        let pace = Pace { start, duration: Some(Duration::from_secs(6)), rpcs: 300 };
        assert_eq!(pace.start_of(0), start, "the first RPC starts at once");
        assert_eq!(pace.start_of(150) - start, Duration::from_secs(3), "RPC 150 of 300 at 3 s");
        let unpaced = Pace { duration: None, ..pace };
        assert_eq!(unpaced.start_of(299), start, "without --duration every RPC starts at once");
    }

    /// Regression: `--timeout 1e300` passed the old check and panicked converting to a duration.
    #[test]
    fn timeouts_outside_zero_to_one_day_are_errors_naming_the_flag_and_the_range() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300, 86_400.5] {
            let err = timeout(bad).expect_err("must be rejected");
            assert!(err.contains("--timeout") && err.contains("86400"), "{bad}: {err}");
        }
        assert_eq!(timeout(86_400.0), Ok(Duration::from_secs(86_400)));
        assert_eq!(timeout(0.5), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn status_codes_print_in_grpc_spelling() {
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(tonic::Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }
}
