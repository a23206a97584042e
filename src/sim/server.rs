//! Servers as turmoil hosts: each host runs the instrumented Echo servers that name it, bound to
//! `0.0.0.0:<port>`, with a fresh [`ServerRecorder`] per boot.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turmoil::net::TcpListener;

use super::etcd::{SimEtcd, keep_registered};
use super::net::{RegisteredListener, SocketRegistry};
use super::scenario::Server;
use super::scenario::ServerHealth;
use super::trace::{self, Trace};
use crate::health_pb::health_check_response::ServingStatus;
use crate::server::{
    BodyDelay, GoAwayHandle, HealthStatus, InstrumentedServer, ServerRecorder, ServerStats,
};
use crate::sync::lock;

/// One boot of one server: when it started (simulated time) and what it recorded.
#[derive(Debug, Clone)]
pub(crate) struct Incarnation {
    pub(crate) server: String,
    pub(crate) boot: u32,
    pub(crate) started: Duration,
    pub(crate) recorder: ServerRecorder,
}

impl Incarnation {
    /// The record so far.
    pub(crate) fn stats(&self) -> ServerStats {
        self.recorder.stats()
    }

    /// How connection `id` of this boot is named in reports: `a#c0`, or `a@1#c0` after a restart.
    pub(crate) fn label(&self, id: u64) -> String {
        if self.boot == 0 {
            format!("{}#c{id}", self.server)
        } else {
            format!("{}@{}#c{id}", self.server, self.boot)
        }
    }
}

/// Every boot of every server, in boot order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Boots(Arc<Mutex<Vec<Incarnation>>>);

impl Boots {
    fn push(&self, server: &str, started: Duration, recorder: ServerRecorder) -> u32 {
        let mut boots = lock(&self.0);
        let boot = boots.iter().filter(|b| b.server == server).count() as u32;
        boots.push(Incarnation { server: server.to_owned(), boot, started, recorder });
        boot
    }

    /// A copy of the list.
    pub(crate) fn all(&self) -> Vec<Incarnation> {
        lock(&self.0).clone()
    }
}

/// Each server's body delay, by name: made once per run from the servers' `body_delay_ms`, set
/// by `slow_body` faults, and handed to every boot of the server, so a restarted server keeps
/// the delay the last fault set.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyDelays(Arc<BTreeMap<String, BodyDelay>>);

impl BodyDelays {
    /// One delay per server, starting at its `body_delay_ms`.
    pub(crate) fn new(servers: &[Server]) -> Self {
        let delays = servers
            .iter()
            .map(|s| (s.name.clone(), BodyDelay::new(s.body_delay_ms.map(Duration::from_millis))));
        Self(Arc::new(delays.collect()))
    }

    /// The handle of server `name`; a server the run does not have gets one of its own, which
    /// nothing changes.
    pub(crate) fn of(&self, name: &str) -> BodyDelay {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// Each server's GOAWAY handle, by name: made once per run, fired by `goaway` faults, and
/// handed to every boot of the server (a fault while its host is down reaches no connection).
#[derive(Debug, Clone, Default)]
pub(crate) struct GoAways(Arc<BTreeMap<String, GoAwayHandle>>);

impl GoAways {
    /// One handle per server.
    pub(crate) fn new(servers: &[Server]) -> Self {
        Self(Arc::new(servers.iter().map(|s| (s.name.clone(), GoAwayHandle::new())).collect()))
    }

    /// The handle of server `name`; a server the run does not have gets one nothing serves.
    pub(crate) fn of(&self, name: &str) -> GoAwayHandle {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

/// Each server's health table, by name: made once per run from the servers' `health`, changed
/// by `unhealthy`/`healthy` faults, and handed to every boot of the server, so a restarted
/// server keeps the status the last fault set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Healths(Arc<BTreeMap<String, HealthStatus>>);

impl Healths {
    /// One table per server, starting as its `health` says.
    pub(crate) fn new(servers: &[Server]) -> Self {
        let tables = servers.iter().map(|s| {
            let initial = match s.health {
                Some(ServerHealth::NotServing) => ServingStatus::NotServing,
                _ => ServingStatus::Serving,
            };
            let unimplemented = s.health == Some(ServerHealth::Unimplemented);
            (s.name.clone(), HealthStatus::new(initial).watch_unimplemented(unimplemented))
        });
        Self(Arc::new(tables.collect()))
    }

    /// The table of server `name`; a server the run does not have gets one of its own, which
    /// nothing reads.
    pub(crate) fn of(&self, name: &str) -> HealthStatus {
        self.0.get(name).cloned().unwrap_or_default()
    }
}

type Software = Pin<Box<dyn Future<Output = turmoil::Result>>>;

/// What every server host shares: the server keep-alive, the boot record, the trace, the
/// run's etcd when servers register in it, and each server's body delay.
#[derive(Debug, Clone)]
pub(crate) struct HostContext {
    pub(crate) keepalive: Option<Duration>,
    pub(crate) boots: Boots,
    pub(crate) trace: Trace,
    pub(crate) etcd: Option<SimEtcd>,
    pub(crate) body_delays: BodyDelays,
    pub(crate) goaways: GoAways,
    pub(crate) healths: Healths,
}

/// The software of host `host`: what turmoil starts at first and again on every restart.
pub(crate) fn host_software(
    host: String,
    servers: Vec<Server>,
    context: HostContext,
) -> impl Fn() -> Software {
    move || Box::pin(boot(host.clone(), servers.clone(), context.clone()))
}

async fn boot(host: String, servers: Vec<Server>, context: HostContext) -> turmoil::Result {
    let HostContext { keepalive, boots, trace, etcd, body_delays, goaways, healths } = context;
    // Created here, inside the host, so the recorder's time zero is this boot's simulated time.
    let registry = SocketRegistry::start(&host, trace.clone());
    let mut serving = Vec::new();
    for server in servers {
        let listener = TcpListener::bind(("0.0.0.0", server.port)).await?;
        let recorder = ServerRecorder::new(server.name.clone());
        let boot = boots.push(&server.name, trace::now(), recorder.clone());
        trace.record(&server.name, format!("boot {boot}: listening on {host}:{}", server.port));
        if let (Some(etcd), Some(_)) = (&etcd, &server.register) {
            let (etcd, sockets) = (etcd.clone(), registry.clone());
            let registering = keep_registered(etcd, server.clone(), boot, trace.clone(), sockets);
            tokio::task::spawn_local(registering);
        }
        let listener = RegisteredListener {
            listener,
            registry: registry.clone(),
            server: server.name.clone(),
            trace: trace.clone(),
            accepted: Mutex::new(0),
        };
        let body_delay = body_delays.of(&server.name);
        let max_age = server.max_connection_age_ms.map(Duration::from_millis);
        let grace = server.max_connection_age_grace_ms.map(Duration::from_millis);
        let mut instrumented = InstrumentedServer::new(recorder)
            .shared_body_delay(body_delay)
            .shared_goaway(goaways.of(&server.name))
            .max_connection_age(max_age, grace)
            .health(healths.of(&server.name));
        if let Some(interval) = keepalive {
            instrumented = instrumented.http2_keepalive(interval, interval);
        }
        let name = server.name;
        serving.push(tokio::task::spawn_local(async move {
            instrumented.serve(listener, std::future::pending()).await;
            tracing::debug!(server = %name, "simulated server stopped");
        }));
    }
    for task in serving {
        task.await?;
    }
    Ok(())
}
