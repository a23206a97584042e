//! The clients `anchorage bench` compares, each an `EchoClient` over one way of holding
//! connections to the bench server, and the warm-up that brings their connections up before
//! anything is timed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anchorage::balancer::{ConnectivityState, SubchannelId};
use anchorage::channel::{Channel, ChannelEvent};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::channel::Change;
use tonic::transport::{Channel as TonicChannel, Endpoint};

use super::bench_server::accepted;

/// The round_robin service config.
const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// The discovery side of a tonic balanced channel: kept so its endpoints stay listed.
type Discovery = mpsc::Sender<Change<usize, Endpoint>>;

/// One way of holding connections, cheap to clone into each caller.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    /// A tonic `Channel`: one connection, or tonic's p2c balancer fed by `_discovery`, which is kept so its endpoints stay listed.
    Tonic { client: EchoClient<TonicChannel>, _discovery: Option<Arc<Discovery>> },
    /// Several tonic `Channel`s taken in turn through a shared counter, as users pool by hand.
    Pool(Vec<EchoClient<TonicChannel>>, Arc<AtomicUsize>),
    /// An anchorage channel.
    Anchorage(EchoClient<Channel>),
}

impl Client {
    /// Sends one unary Echo.
    pub(crate) async fn echo(&mut self) -> Result<(), tonic::Status> {
        let request = EchoRequest { message: "bench".into(), ..Default::default() };
        match self {
            Client::Tonic { client, .. } => client.echo(request).await.map(drop),
            Client::Anchorage(client) => client.echo(request).await.map(drop),
            Client::Pool(clients, next) => {
                let turn = next.fetch_add(1, Ordering::Relaxed) % clients.len().max(1);
                match clients.get_mut(turn) {
                    Some(client) => client.echo(request).await.map(drop),
                    None => Err(tonic::Status::internal("pool: no channel in the pool")),
                }
            }
        }
    }
}

fn endpoint(port: u16) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{}:{port}", Ipv4Addr::LOCALHOST))
        .map_err(|e| format!("tonic endpoint: {e}"))
}

async fn connected(port: u16) -> Result<EchoClient<TonicChannel>, String> {
    let channel = endpoint(port)?.connect().await.map_err(|e| format!("tonic connect: {e}"))?;
    Ok(EchoClient::new(channel))
}

/// One tonic `Channel`, connected.
pub(crate) async fn tonic_single(port: u16) -> Result<Client, String> {
    Ok(Client::Tonic { client: connected(port).await?, _discovery: None })
}

/// tonic's p2c balancer over `keys` endpoints, all the same URI under distinct keys (unlike
/// `balance_list`, which keys by URI and so collapses them into one connection).
pub(crate) async fn tonic_balanced(port: u16, keys: usize) -> Result<Client, String> {
    let (channel, discovery) = TonicChannel::balance_channel(keys.max(1));
    let endpoint = endpoint(port)?;
    for key in 0..keys {
        discovery
            .send(Change::Insert(key, endpoint.clone()))
            .await
            .map_err(|_| "tonic balance_channel: the balancer stopped listening".to_owned())?;
    }
    Ok(Client::Tonic { client: EchoClient::new(channel), _discovery: Some(Arc::new(discovery)) })
}

/// tonic's `balance_list` over the same URI `times` times.
pub(crate) fn tonic_list_same_uri(port: u16, times: usize) -> Result<Client, String> {
    let endpoint = endpoint(port)?;
    let channel = TonicChannel::balance_list(std::iter::repeat_n(endpoint, times));
    Ok(Client::Tonic { client: EchoClient::new(channel), _discovery: None })
}

/// `size` tonic `Channel`s, each connected.
pub(crate) async fn tonic_pool(port: u16, size: usize) -> Result<Client, String> {
    let mut clients = Vec::with_capacity(size);
    for _ in 0..size {
        clients.push(connected(port).await?);
    }
    Ok(Client::Pool(clients, Arc::new(AtomicUsize::new(0))))
}

/// An anchorage channel to `pass:///127.0.0.1:PORT#connections`: round_robin when asked,
/// else the default pick_first. The receiver holds the subchannels currently READY.
pub(crate) fn anchorage(
    port: u16,
    connections: usize,
    round_robin: bool,
) -> Result<(Client, watch::Receiver<BTreeSet<SubchannelId>>), String> {
    let count = if connections == 1 { String::new() } else { format!("#{connections}") };
    let target = format!("pass:///{}:{port}{count}", Ipv4Addr::LOCALHOST);
    let mut builder = Channel::builder(target).seed(0);
    if round_robin {
        builder = builder.default_service_config(ROUND_ROBIN).map_err(|e| e.to_string())?;
    }
    let (ready, watcher) = watch::channel(BTreeSet::new());
    let channel = builder
        .on_event(move |event| {
            if let ChannelEvent::SubchannelState { id, state, .. } = event {
                ready.send_modify(|ready| {
                    if *state == ConnectivityState::Ready {
                        ready.insert(*id);
                    } else {
                        ready.remove(id);
                    }
                });
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    Ok((Client::Anchorage(EchoClient::new(channel)), watcher))
}

/// Sends RPCs one at a time until the server has accepted `expected` connections since it
/// counted `base`, then `expected` more so that every connection has finished its handshake;
/// with `ready`, also waits until that many subchannels are READY. Gives up after `limit`.
///
/// # Errors
/// A message starting with `warm-up:` saying how many connections came up.
pub(crate) async fn warm_up(
    client: &mut Client,
    counter_port: u16,
    base: u64,
    expected: u64,
    ready: Option<watch::Receiver<BTreeSet<SubchannelId>>>,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, client.echo()).await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => last_error = Some(status.message().to_owned()),
            Err(_) => last_error = Some("no answer before the warm-up's deadline".to_owned()),
        }
        let seen = accepted(counter_port).await?.saturating_sub(base);
        if seen >= expected {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = last_error.map(|e| format!(" (last RPC error: {e})")).unwrap_or_default();
            return Err(format!(
                "warm-up: the server saw {seen} of {expected} connections after {limit:?}{why}"
            ));
        }
    }
    for _ in 0..expected {
        let _ = tokio::time::timeout_at(deadline, client.echo()).await;
    }
    if let Some(mut ready) = ready {
        let expected = usize::try_from(expected).unwrap_or(usize::MAX);
        let all_ready = ready.wait_for(|ready| ready.len() >= expected);
        let reached = matches!(tokio::time::timeout_at(deadline, all_ready).await, Ok(Ok(_)));
        if !reached {
            let now = ready.borrow().len();
            return Err(format!("warm-up: {now} of {expected} subchannels READY after {limit:?}"));
        }
    }
    Ok(())
}
