//! The in-memory etcd, the etcd client, registration and the `etcd` resolver on turmoil's
//! simulated network: etcd runs as a host, leases expire in simulated time, and the same seed
//! gives the same run.
#![cfg(feature = "sim")]

use std::cell::RefCell;
use std::future::pending;
use std::rc::Rc;
use std::time::Duration;

use anchorage::channel::{Channel, ChannelEvent, WaitForReady};
use anchorage::connector::{BoxedIo, ConnectFuture, Connector};
use anchorage::etcd::memory::MemoryEtcd;
use anchorage::etcd::{EtcdClient, EtcdClientBuilder};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::registry::EtcdRegistrar;
use anchorage::resolver::etcd::EtcdBuilder;
use anchorage::server::{InstrumentedServer, ServerRecorder};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Dials turmoil's simulated TCP.
#[derive(Debug, Clone)]
struct SimConnector;

impl Connector for SimConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

/// Accepts on `port` of this host and hands the connections out as a stream.
async fn accepted(
    port: u16,
) -> UnboundedReceiverStream<std::io::Result<(turmoil::net::TcpStream, std::net::SocketAddr)>> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        loop {
            let accepted = listener.accept().await;
            if tx.send(accepted).is_err() {
                return;
            }
        }
    });
    UnboundedReceiverStream::new(rx)
}

fn etcd_client(seed: u64) -> EtcdClientBuilder {
    EtcdClient::builder().connector(SimConnector).endpoints("etcd:2379".parse().unwrap()).seed(seed)
}

/// What the client saw, in simulated time since it started.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    discovered_at: Option<Duration>,
    removed_at: Option<Duration>,
    served_by: Vec<String>,
}

fn run(seed: u64) -> (Seen, Duration) {
    let mut sim =
        turmoil::Builder::new().rng_seed(seed).simulation_duration(Duration::from_secs(60)).build();
    let etcd = MemoryEtcd::new();
    sim.host("etcd", move || {
        let etcd = etcd.clone();
        async move {
            etcd.serve_incoming(accepted(2379).await, pending()).await;
            Ok(())
        }
    });
    sim.host("server", || async {
        let server = InstrumentedServer::new(ServerRecorder::new("server"));
        tokio::spawn(server.serve_incoming(accepted(9000).await, pending()));
        let client = etcd_client(1).build()?;
        let _registration =
            EtcdRegistrar::new(client, "svc", "server:9000")?.ttl(3).register().await?;
        pending::<()>().await;
        Ok(())
    });
    let seen = Rc::new(RefCell::new(Seen::default()));
    let record = seen.clone();
    sim.client("client", async move {
        let (tx, mut lists) = mpsc::unbounded_channel();
        let resolver = EtcdBuilder::new(etcd_client(2)).seed(3);
        let channel = Channel::builder("etcd:///svc#2")
            .connector(SimConnector)
            .resolver(resolver)
            .seed(4)
            .on_event(move |event| {
                if let ChannelEvent::Resolved { addresses } = event {
                    let _ = tx.send(addresses.len());
                }
            })
            .build()?;
        let started = tokio::time::Instant::now();
        while lists.recv().await != Some(2) {}
        record.borrow_mut().discovered_at = Some(started.elapsed());
        let mut client = EchoClient::new(channel);
        // The update that lists the server may reach the policy after this task saw it.
        let mut request =
            tonic::Request::new(EchoRequest { message: "hi".into(), ..Default::default() });
        request.extensions_mut().insert(WaitForReady(true));
        let reply = client.echo(request).await?.into_inner();
        record.borrow_mut().served_by.push(reply.server);
        while lists.recv().await != Some(0) {}
        record.borrow_mut().removed_at = Some(started.elapsed());
        Ok(())
    });
    // Crash the server as soon as the client has been served by it.
    let mut crashed_at = None;
    while !sim.step().expect("the simulation runs") {
        if crashed_at.is_none() && !seen.borrow().served_by.is_empty() {
            sim.crash("server");
            crashed_at = Some(sim.elapsed());
        }
    }
    let seen = seen.borrow().clone();
    let crashed_at = crashed_at.expect("the server was crashed");
    (seen, crashed_at)
}

#[test]
fn a_crashed_servers_lease_expires_in_simulated_time_and_it_leaves_discovery() {
    let (seen, _crashed_at) = run(11);
    assert_eq!(seen.served_by, ["server"], "the discovered server must serve the RPC");
    let discovered = seen.discovered_at.expect("the registered server must be discovered");
    let removed = seen.removed_at.expect("the crashed server must leave discovery");
    let gone_after = removed - discovered;
    assert!(
        gone_after <= Duration::from_secs(3 + 1),
        "a 3 s lease must take the server out within TTL + 1 s of simulated time: {gone_after:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_simulated_timings() {
    assert_eq!(run(5), run(5), "a simulation must be reproducible from its seed");
}
