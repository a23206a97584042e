//! Real-TCP test servers on loopback that can be killed abruptly, and channel helpers.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::balancer::ConnectivityState;
use anchorage::channel::{Channel, ChannelBuilder, ChannelEvent};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::server::{InstrumentedServer, ServerRecorder, ServerStats};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An instrumented Echo server on a loopback port. `kill` closes every accepted socket and the
/// listener at once, like a crashed process: peers see their connections reset and new
/// connections refused.
pub struct TestServer {
    pub addr: SocketAddr,
    pub recorder: ServerRecorder,
    sockets: Arc<Mutex<Sockets>>,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl TestServer {
    /// Starts `name` on a free loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts `name` on `addr` (a loopback address).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let recorder = ServerRecorder::new(name);
        let sockets: Arc<Mutex<Sockets>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let kept = sockets.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                // Keep a duplicate of the socket so `kill` can shut it down from outside.
                let std = stream.into_std().unwrap();
                let mut sockets = kept.lock().unwrap();
                if sockets.killed {
                    // Killed while this accept was in progress: close it like the rest.
                    let _ = std.shutdown(Shutdown::Both);
                    return;
                }
                sockets.open.push(std.try_clone().unwrap());
                drop(sockets);
                let stream = TcpStream::from_std(std).unwrap();
                if tx.send(Ok((stream, peer))).is_err() {
                    return;
                }
            }
        });
        let server = InstrumentedServer::new(recorder.clone());
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let serve = tokio::spawn(async move {
            let _ = server.serve_incoming(incoming, std::future::pending()).await;
        });
        Self { addr, recorder, sockets, accept, serve }
    }

    /// Kills the server: no more accepts, every open connection shut down.
    pub fn kill(&self) {
        self.accept.abort();
        self.serve.abort();
        let mut sockets = self.sockets.lock().unwrap();
        sockets.killed = true;
        for socket in sockets.open.drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    pub fn stats(&self) -> ServerStats {
        self.recorder.stats()
    }

    /// RPCs served per accepted connection, in accept order.
    pub fn rpcs_per_connection(&self) -> Vec<u64> {
        self.stats().connections.iter().map(|c| c.rpcs).collect()
    }
}

/// Duplicates of the accepted sockets, so `kill` can shut them down from outside; `killed` makes
/// an accept that races with `kill` close its socket too.
#[derive(Default)]
struct Sockets {
    killed: bool,
    open: Vec<std::net::TcpStream>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address with nothing listening on it.
pub async fn unused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Builds the channel, counting subchannels that reach READY; returns it with a waiter.
pub fn build_counting_ready(builder: ChannelBuilder) -> (Channel, ReadyCount) {
    let count = ReadyCount(Arc::new(tokio::sync::watch::channel((0usize, false)).0));
    let sender = count.0.clone();
    let channel = builder
        .on_event(move |event| match event {
            ChannelEvent::SubchannelState { state, .. } => sender.send_modify(|(n, published)| {
                *n += usize::from(*state == ConnectivityState::Ready);
                *published = false;
            }),
            ChannelEvent::Picker { .. } => sender.send_modify(|(_, published)| *published = true),
            _ => {}
        })
        .build()
        .expect("the channel builds");
    (channel, count)
}

/// How many subchannels have entered READY so far, and whether the picker published after the
/// last state change is in place.
#[derive(Clone)]
pub struct ReadyCount(Arc<tokio::sync::watch::Sender<(usize, bool)>>);

impl ReadyCount {
    /// Waits (at most 10 s) until `n` subchannels have entered READY and RPCs pick from a
    /// picker that reflects it.
    pub async fn wait_for(&self, n: usize) {
        let mut rx = self.0.subscribe();
        let ready = rx.wait_for(|(count, published)| *count >= n && *published);
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .unwrap_or_else(|_| panic!("{n} subchannels must become READY within 10 s"))
            .unwrap();
    }
}

/// Sends one Echo RPC with a 5 s deadline.
pub async fn echo(client: &mut EchoClient<Channel>) -> Result<String, tonic::Status> {
    let mut request =
        tonic::Request::new(EchoRequest { message: "hi".into(), ..Default::default() });
    request.set_timeout(Duration::from_secs(5));
    client.echo(request).await.map(|r| r.into_inner().server)
}

/// `pass:///a#na,b#nb` over the servers' addresses.
pub fn pass_target(anchors: &[(&TestServer, u32)]) -> String {
    let items: Vec<String> = anchors.iter().map(|(s, n)| format!("{}#{n}", s.addr)).collect();
    format!("pass:///{}", items.join(","))
}

pub const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A reconnect backoff short enough for loopback tests: 50 ms, ×1.6, ±20 %, at most 200 ms.
pub fn fast_backoff() -> anchorage::balancer::subchannel::BackoffConfig {
    anchorage::balancer::subchannel::BackoffConfig {
        initial: Duration::from_millis(50),
        multiplier: 1.6,
        jitter: 0.2,
        max: Duration::from_millis(200),
    }
}
