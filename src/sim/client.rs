//! The client host: the real [`Channel`] over the turmoil connector, running the workload and
//! recording every RPC's outcome with simulated start and end times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tonic::Code;

use super::etcd::SimEtcd;
use super::net::TurmoilConnector;
use super::scenario::{Scenario, Workload};
use super::trace::{self, Trace};
use crate::backoff::BackoffConfig;
use crate::balancer::ConnectivityState;
use crate::balancer::subchannel::KeepAlive;
use crate::channel::{Channel, ChannelEvent, ServedBy, WaitForReady};
use crate::mutant::Mutant;
use crate::pb::EchoRequest;
use crate::pb::echo_client::EchoClient;
use crate::resolver::ResolverBuilder;
use crate::resolver::etcd::{EtcdBuilder, EtcdResolverCounts, EtcdResolverStats};
use crate::resolver::manual::ManualResolver;
use crate::sync::lock;

/// How one RPC ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded.
    Ok {
        /// The server that answered (its name).
        server: String,
        /// The server's id for the connection that carried it (per boot).
        connection: u64,
        /// The client's subchannel (`u64::MAX` for a tonic client, which has none).
        subchannel: u64,
        /// The subchannel's address (empty for a tonic client).
        address: String,
    },
    /// It failed with a status.
    Failed {
        /// The status code's name (`UNAVAILABLE`).
        code: String,
        /// The status message.
        message: String,
    },
}

/// One RPC of the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcRecord {
    /// Its number, 0-based, in the order workers took them.
    pub index: u32,
    /// Simulated time it was sent.
    pub start: Duration,
    /// Simulated time it ended.
    pub end: Duration,
    /// Its deadline, relative to `start`.
    pub deadline: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

impl RpcRecord {
    /// The server that answered, if it succeeded.
    pub fn server(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok { server, .. } => Some(server),
            Outcome::Failed { .. } => None,
        }
    }
}

/// What the client saw, shared with the driver.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    pub(crate) rpcs: Vec<RpcRecord>,
    pub(crate) subchannels_created: u64,
    pub(crate) first_resolution: Option<usize>,
    /// Every resolver update: when, and its distinct `host:port`s in order.
    pub(crate) resolutions: Vec<(Duration, Vec<String>)>,
    /// What the `etcd` resolver did, with an `etcd:///` target.
    pub(crate) etcd_resolver: Option<EtcdResolverCounts>,
    pub(crate) final_state: Option<ConnectivityState>,
    pub(crate) build_error: Option<String>,
}

pub(crate) type SharedLog = Arc<Mutex<ClientLog>>;

/// The client's software: builds the channel, runs the workload, records the final state.
pub(crate) async fn run(
    scenario: Scenario,
    channel_seed: u64,
    manual: Option<ManualResolver>,
    etcd: Option<SimEtcd>,
    options: super::RunOptions,
    trace: Trace,
    log: SharedLog,
) -> turmoil::Result {
    let mut resolvers: Vec<Arc<dyn ResolverBuilder>> = Vec::new();
    let mut etcd_stats = None;
    if let Some(manual) = manual {
        resolvers.push(Arc::new(manual));
    }
    if let Some(etcd) = etcd.filter(|_| scenario.has_etcd_target()) {
        let builder = EtcdBuilder::new(etcd.client("client", 0))
            .retry_backoff(etcd.retry_backoff())
            .seed(etcd.seed_for("client", 0, 1));
        etcd_stats = Some(builder.stats());
        resolvers.push(Arc::new(builder));
    }
    resolvers.extend(options.resolver);
    if options.client.is_tonic() {
        let result = super::tonic_client::run(
            scenario,
            channel_seed,
            resolvers,
            options.client,
            trace,
            log.clone(),
        )
        .await;
        // The etcd resolver ran for the tonic client as it does for the channel.
        lock(&log).etcd_resolver = etcd_stats.as_ref().map(EtcdResolverStats::snapshot);
        return result;
    }
    let mutant = options.mutant;
    let channel = match build_channel(&scenario, channel_seed, resolvers, mutant, &trace, &log) {
        Ok(channel) => channel,
        Err(error) => {
            trace.record("client", format!("channel failed to build: {error}"));
            lock(&log).build_error = Some(error);
            return Ok(());
        }
    };
    let w = scenario.workload.clone();
    tokio::time::sleep(Duration::from_millis(w.start_ms)).await;
    trace.record("client", format!("workload: {} RPCs, {} workers", w.rpcs, w.concurrency));
    let rpc = {
        let (channel, w, trace) = (channel.clone(), w.clone(), trace.clone());
        move |index| {
            let (mut client, w, trace) =
                (EchoClient::new(channel.clone()), w.clone(), trace.clone());
            async move { one_rpc(&mut client, index, &w, &trace).await }
        }
    };
    run_workers(&w, &log, rpc).await?;
    let state = channel.state();
    trace.record("client", format!("workload done; channel {state}"));
    let counts = etcd_stats.as_ref().map(EtcdResolverStats::snapshot);
    if let Some(c) = &counts {
        let text = format!(
            "etcd resolver: {} reads, {} watches, {} compacted, {} failures",
            c.reads, c.watches, c.compactions, c.failures
        );
        trace.record("client", text);
    }
    let mut log = lock(&log);
    log.final_state = Some(state);
    log.etcd_resolver = counts;
    Ok(())
}

/// Runs the workload's workers, whichever client they call: each takes the next RPC number
/// until `w.rpcs` are taken, runs `rpc` for it, records the outcome and waits the pacing.
pub(crate) async fn run_workers<F, Fut>(w: &Workload, log: &SharedLog, rpc: F) -> turmoil::Result
where
    F: Fn(u32) -> Fut + Clone + 'static,
    Fut: Future<Output = RpcRecord> + 'static,
{
    let next = Arc::new(Mutex::new(0u32));
    let mut workers = Vec::new();
    for _ in 0..w.concurrency {
        let (rpc, next, log, w) = (rpc.clone(), next.clone(), log.clone(), w.clone());
        workers.push(tokio::task::spawn_local(async move {
            // Bounded: each pass takes one of the `rpcs` numbers.
            loop {
                let index = {
                    let mut next = lock(&next);
                    *next += 1;
                    *next - 1
                };
                if index >= w.rpcs {
                    break;
                }
                let record = rpc(index).await;
                lock(&log).rpcs.push(record);
                tokio::time::sleep(Duration::from_millis(w.pacing_ms)).await;
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    Ok(())
}

fn build_channel(
    scenario: &Scenario,
    seed: u64,
    resolvers: Vec<Arc<dyn ResolverBuilder>>,
    mutant: Option<Mutant>,
    trace: &Trace,
    log: &SharedLog,
) -> Result<Channel, String> {
    let c = &scenario.client;
    let b = &c.backoff;
    let mut builder = Channel::builder(c.target.clone())
        .connector(TurmoilConnector)
        .seed(seed)
        .min_connect_timeout(Duration::from_millis(c.connect_timeout_ms))
        .backoff(BackoffConfig {
            initial: Duration::from_millis(b.initial_ms),
            multiplier: b.multiplier,
            jitter: b.jitter,
            max: Duration::from_millis(b.max_ms),
        });
    if c.keepalive.enabled {
        builder = builder.keepalive(KeepAlive {
            interval: Duration::from_millis(c.keepalive.interval_ms),
            timeout: Duration::from_millis(c.keepalive.timeout_ms),
            while_idle: true,
        });
    }
    if let Some(json) = &c.service_config {
        builder = builder.default_service_config(json).map_err(|e| e.to_string())?;
    }
    if let Some(mutant) = mutant {
        builder = builder.mutant(mutant);
    }
    // Later ones replace earlier ones for the same scheme.
    for resolver in resolvers {
        builder = builder.resolver(resolver);
    }
    let (trace, log) = (trace.clone(), log.clone());
    builder = builder.on_event(move |event| {
        match event {
            ChannelEvent::SubchannelCreated { .. } => lock(&log).subchannels_created += 1,
            ChannelEvent::Resolved { addresses } => {
                let mut log = lock(&log);
                let mut distinct: Vec<String> = Vec::new();
                for address in addresses {
                    if !distinct.contains(&address.addr) {
                        distinct.push(address.addr.clone());
                    }
                }
                log.resolutions.push((trace::now(), distinct));
                if log.first_resolution.is_none() {
                    let distinct = crate::address::dedup(addresses.iter().cloned()).len();
                    log.first_resolution = Some(distinct);
                }
            }
            _ => {}
        }
        trace.record("client", describe(event));
    });
    builder.build().map_err(|e| e.to_string())
}

async fn one_rpc(
    client: &mut EchoClient<Channel>,
    index: u32,
    w: &Workload,
    trace: &Trace,
) -> RpcRecord {
    let deadline = Duration::from_millis(w.deadline_ms);
    let mut request =
        tonic::Request::new(EchoRequest { message: format!("rpc {index}"), ..Default::default() });
    request.set_timeout(deadline);
    if w.wait_for_ready {
        request.extensions_mut().insert(WaitForReady(true));
    }
    let start = trace::now();
    let result = client.echo(request).await;
    let end = trace::now();
    let outcome = match result {
        Ok(response) => {
            let served = response.extensions().get::<ServedBy>().cloned();
            let reply = response.into_inner();
            Outcome::Ok {
                server: reply.server,
                connection: reply.connection,
                subchannel: served.as_ref().map_or(u64::MAX, |s| s.subchannel.0),
                address: served.map_or_else(String::new, |s| s.address.to_string()),
            }
        }
        Err(status) => Outcome::Failed {
            code: code_name(status.code()).to_owned(),
            message: status.message().to_owned(),
        },
    };
    let took = trace::secs(end.saturating_sub(start));
    let text = match &outcome {
        Outcome::Ok { server, connection, subchannel, address } => {
            format!(
                "rpc {index} OK via sc{subchannel} {address} -> {server}#c{connection} in {took}"
            )
        }
        Outcome::Failed { code, message } => format!("rpc {index} {code} in {took}: {message}"),
    };
    trace.record("client", text);
    RpcRecord { index, start, end, deadline, outcome }
}

/// One trace line for a channel event.
fn describe(event: &ChannelEvent) -> String {
    match event {
        ChannelEvent::Resolved { addresses } => {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            format!("resolved [{}]", list.join(", "))
        }
        ChannelEvent::ResolverError { error } => format!("resolver error: {error}"),
        ChannelEvent::ResolverStateRejected { error } => {
            format!("resolver state rejected: {error}")
        }
        ChannelEvent::ResolveNow => "resolve_now".to_owned(),
        ChannelEvent::SubchannelCreated { id, address } => format!("{id} created for {address}"),
        ChannelEvent::SubchannelState { id, address, state, error } => match error {
            Some(error) => format!("{id} {address} {state}: {error}"),
            None => format!("{id} {address} {state}"),
        },
        ChannelEvent::Picker { state } => format!("picker {state}"),
    }
}

/// The gRPC name of a status code (`UNAVAILABLE`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
