//! etcd in the simulation: the in-memory etcd as a turmoil host, servers that register
//! themselves in it, and the settings every simulated etcd client shares.
//!
//! # Determinism
//! The store ([`MemoryEtcd`]) is created once per run, outside the hosts, and cloned into the
//! etcd host's software, so it survives crashes. Every etcd client and registration gets a seed
//! derived from the run's seed and the server's name and boot, so nothing draws from the OS.
//! The etcd host's accepted sockets are co-owned by a [`SocketRegistry`], so a crash of the
//! etcd host closes them in accept order (DESIGN §3).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use turmoil::net::TcpListener;

use super::net::{RegisteredConnector, SocketRegistry, TurmoilConnector};
use super::scenario::{EtcdSpec, Scenario, Server};
use super::trace::{self, Trace};
use crate::backoff::BackoffConfig;
use crate::balancer::subchannel::KeepAlive;
use crate::etcd::memory::MemoryEtcd;
use crate::etcd::{Endpoints, EtcdClient, EtcdClientBuilder};
use crate::registry::{EtcdRegistrar, Registration, RegistrationState};
use crate::sync::lock;

type Software = Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// The run's etcd: its store, its settings, and the registrations the fault schedule controls.
#[derive(Debug, Clone)]
pub(crate) struct SimEtcd {
    pub(crate) store: MemoryEtcd,
    pub(crate) spec: EtcdSpec,
    client: ClientSettings,
    pub(crate) registrations: Registrations,
    seed: u64,
}

/// What every simulated etcd client takes from `[client]`.
#[derive(Debug, Clone)]
struct ClientSettings {
    dial_timeout: Duration,
    keepalive: Option<KeepAlive>,
    backoff: BackoffConfig,
}

impl SimEtcd {
    /// The scenario's etcd, if it has `[etcd]`. `seed` is the run's channel seed.
    pub(crate) fn new(scenario: &Scenario, seed: u64) -> Option<Self> {
        let spec = scenario.etcd.clone()?;
        let c = &scenario.client;
        let client = ClientSettings {
            dial_timeout: Duration::from_millis(c.connect_timeout_ms),
            keepalive: c.keepalive.enabled.then(|| KeepAlive {
                interval: Duration::from_millis(c.keepalive.interval_ms),
                timeout: Duration::from_millis(c.keepalive.timeout_ms),
                while_idle: true,
            }),
            backoff: BackoffConfig {
                initial: Duration::from_millis(c.backoff.initial_ms),
                multiplier: c.backoff.multiplier,
                jitter: c.backoff.jitter,
                max: Duration::from_millis(c.backoff.max_ms),
            },
        };
        let registrations = Registrations::default();
        for server in scenario.server_list().iter().filter(|s| s.register.is_some()) {
            lock(&registrations.0).insert(server.name.clone(), Control::new());
        }
        Some(Self {
            store: MemoryEtcd::with_min_lease_ttl(spec.min_lease_ttl_s),
            spec,
            client,
            registrations,
            seed,
        })
    }

    /// An etcd client builder for the simulated network, seeded from `who` and `boot`.
    pub(crate) fn client(&self, who: &str, boot: u32) -> EtcdClientBuilder {
        // A host name and a port always parse as an endpoint list.
        let endpoints: Endpoints = self.spec.addr().parse().expect("[etcd] host:port parses");
        EtcdClient::builder()
            .connector(TurmoilConnector)
            .endpoints(endpoints)
            .dial_timeout(self.client.dial_timeout)
            .request_timeout(Duration::from_millis(self.spec.request_timeout_ms))
            .keepalive(self.client.keepalive.clone())
            .backoff(self.client.backoff.clone())
            .seed(self.seed_for(who, boot, 0))
    }

    /// The retry backoff of resolvers and registrations: the client's reconnect backoff.
    pub(crate) fn retry_backoff(&self) -> BackoffConfig {
        self.client.backoff.clone()
    }

    /// A seed for `who`'s `boot`, stream `stream`: the run's seed mixed with all three.
    pub(crate) fn seed_for(&self, who: &str, boot: u32, stream: u64) -> u64 {
        let who = trace::fnv1a(who);
        super::channel_seed(self.seed ^ who ^ (u64::from(boot) << 32) ^ stream)
    }

    /// The etcd host's software: what turmoil starts at first and on every restart.
    pub(crate) fn host_software(&self, trace: Trace) -> impl Fn() -> Software + use<> {
        let (store, host, port) = (self.store.clone(), self.spec.host.clone(), self.spec.port);
        move || {
            let (store, host, trace) = (store.clone(), host.clone(), trace.clone());
            Box::pin(serve(store, host, port, trace))
        }
    }

    /// Carries out a `compact` fault: compacts history up to the current revision.
    pub(crate) fn compact(&self, trace: &Trace, at: Duration) {
        let revision = self.store.revision();
        let text = match self.store.compact(revision) {
            Ok(()) => format!("compacted up to revision {revision}"),
            Err(error) => format!("compaction at revision {revision} failed: {error}"),
        };
        trace.record_at(at, &self.spec.host, text);
    }

    /// Carries out an `expire_lease` fault on `server`'s current lease.
    pub(crate) fn expire_lease(&self, server: &str, trace: &Trace, at: Duration) {
        let lease = lock(&self.registrations.0).get(server).and_then(|c| c.lease);
        let text = match lease {
            Some(id) if self.store.expire_lease(id) => format!("lease {id:#x} of {server} expired"),
            Some(id) => format!("lease {id:#x} of {server} is already gone"),
            None => format!("{server} holds no lease to expire"),
        };
        trace.record_at(at, &self.spec.host, text);
    }
}

/// Serves the store on `host:port` with every accepted socket in a [`SocketRegistry`].
async fn serve(store: MemoryEtcd, host: String, port: u16, trace: Trace) -> turmoil::Result {
    let registry = SocketRegistry::start(&host, trace.clone());
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    trace.record(&host, format!("etcd listening on {host}:{port}, revision {}", store.revision()));
    // turmoil's accept future is not Send: accept on a local task, hand the sockets over.
    let (tx, rx) = mpsc::unbounded_channel();
    let accepting = host.clone();
    tokio::task::spawn_local(async move {
        loop {
            let accepted = listener.accept().await.map(|(stream, peer)| {
                let stream = registry.register(stream);
                trace.record(&accepting, format!("accepted {peer} (socket s{})", stream.id()));
                (stream, peer)
            });
            if tx.send(accepted).is_err() {
                return;
            }
        }
    });
    store.serve_incoming(UnboundedReceiverStream::new(rx), std::future::pending()).await;
    Ok(())
}

/// Per registering server: whether it should be registered now (the `register` and
/// `deregister` faults set it) and the lease it holds (what `expire_lease` expires).
#[derive(Debug, Clone, Default)]
pub(crate) struct Registrations(Arc<Mutex<BTreeMap<String, Control>>>);

#[derive(Debug)]
struct Control {
    wanted: watch::Sender<bool>,
    lease: Option<i64>,
}

impl Control {
    fn new() -> Self {
        Self { wanted: watch::channel(true).0, lease: None }
    }
}

impl Registrations {
    /// Asks `server` to register (`true`) or to deregister (`false`).
    pub(crate) fn want(&self, server: &str, registered: bool) {
        if let Some(control) = lock(&self.0).get(server) {
            control.wanted.send_replace(registered);
        }
    }

    fn subscribe(&self, server: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.0).get(server).map(|c| c.wanted.subscribe())
    }

    fn set_lease(&self, server: &str, lease: Option<i64>) {
        if let Some(control) = lock(&self.0).get_mut(server) {
            control.lease = lease;
        }
    }
}

/// Keeps `server` (boot `boot`) registered while the schedule wants it: from its `at_ms` on,
/// register; on `deregister`, revoke; on `register`, register again. Runs on the server's host,
/// so a crash stops the keep-alive and the lease runs out.
pub(crate) async fn keep_registered(
    etcd: SimEtcd,
    server: Server,
    boot: u32,
    trace: Trace,
    sockets: SocketRegistry,
) {
    let Some(spec) = server.register.clone() else { return };
    let Some(mut wanted) = etcd.registrations.subscribe(&server.name) else { return };
    let name = server.name.as_str();
    let at = Duration::from_millis(spec.at_ms);
    tokio::time::sleep(at.saturating_sub(trace::now())).await;
    let connector = RegisteredConnector { registry: sockets };
    let client = match etcd.client(name, boot).connector(connector).build() {
        Ok(client) => client,
        Err(error) => {
            trace.record(name, format!("etcd client failed to build: {error}"));
            return;
        }
    };
    let mut attempt = 0u64;
    loop {
        while !*wanted.borrow_and_update() {
            if wanted.changed().await.is_err() {
                return;
            }
        }
        let registrar =
            EtcdRegistrar::new(client.clone(), &spec.service, &server.addr()).map(|r| {
                r.ttl(spec.ttl_s).retry_backoff(etcd.retry_backoff()).seed(etcd.seed_for(
                    name,
                    boot,
                    1 + attempt,
                ))
            });
        attempt += 1;
        let registration = match registrar {
            Ok(registrar) => match registrar.register().await {
                Ok(registration) => registration,
                Err(error) => {
                    trace.record(name, format!("etcd registration failed: {error}"));
                    tokio::time::sleep(etcd.retry_backoff().initial).await;
                    continue;
                }
            },
            Err(error) => {
                trace.record(name, format!("etcd registration refused: {error}"));
                return;
            }
        };
        follow(&etcd, &registration, &mut wanted, name, &trace).await;
        etcd.registrations.set_lease(name, None);
        let key = registration.key().to_owned();
        match registration.deregister().await {
            Ok(()) => trace.record(name, format!("deregistered {key}")),
            Err(error) => trace.record(name, format!("deregistering failed: {error}")),
        }
    }
}

/// Traces `registration`'s state changes and publishes its lease until deregistration is
/// wanted.
async fn follow(
    etcd: &SimEtcd,
    registration: &Registration,
    wanted: &mut watch::Receiver<bool>,
    name: &str,
    trace: &Trace,
) {
    let mut state = registration.subscribe();
    let key = registration.key().to_owned();
    let ttl = registration.granted_ttl();
    let mut traced = None;
    loop {
        let now = state.borrow_and_update().clone();
        etcd.registrations.set_lease(name, registration.lease());
        // A renewed keep-alive stream reports the same state again; trace changes only.
        if traced.as_ref() != Some(&now) {
            trace.record(name, describe(&key, ttl, &now));
            traced = Some(now);
        }
        tokio::select! {
            biased;
            changed = wanted.changed() => {
                if changed.is_err() || !*wanted.borrow_and_update() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One trace line for a registration state.
fn describe(key: &str, ttl: i64, state: &RegistrationState) -> String {
    match state {
        RegistrationState::Registered { lease } => {
            format!("registered {key} (lease {lease:#x}, ttl {ttl}s)")
        }
        RegistrationState::Retrying { lease: Some(lease), reason } => {
            format!("renewing lease {lease:#x} failed: {reason}")
        }
        RegistrationState::Retrying { lease: None, reason } => {
            format!("registering {key} again failed: {reason}")
        }
    }
}
