//! etcd backends for the etcd tests: a real `etcd` process on loopback, or the in-memory etcd
//! served over loopback TCP. Every case runs against both, so the in-memory etcd is checked
//! against the real one.
#![allow(dead_code, unreachable_pub, unused_macros)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::address::Address;
use anchorage::balancer::subchannel::BackoffConfig;
use anchorage::channel::{Channel, ChannelEvent};
use anchorage::etcd::memory::MemoryEtcd;
use anchorage::etcd::{EtcdClient, EtcdClientBuilder};
use anchorage::resolver::etcd::EtcdBuilder;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Runs each case (an `async fn(Etcd)`) twice: against the in-memory etcd in module
/// `memory_etcd`, and against a real etcd in module `live_etcd`, ignored unless asked for.
macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod memory_etcd {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Etcd::memory().await).await;
                }
            )*
        }
        mod live_etcd {
            use super::*;
            $(
                #[tokio::test]
                #[ignore = "needs etcd: apt-get install etcd-server"]
                async fn $case() {
                    super::$case(Etcd::live().await).await;
                }
            )*
        }
    };
}

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// An etcd to test against.
pub enum Etcd {
    /// A real `etcd` process.
    Live(LiveEtcd),
    /// The in-memory etcd on a loopback port.
    Memory(MemoryServer),
}

impl Etcd {
    /// Starts a real etcd (the live tests).
    pub async fn live() -> Self {
        Self::Live(LiveEtcd::start().await)
    }

    /// Starts the in-memory etcd.
    pub async fn memory() -> Self {
        Self::Memory(MemoryServer::start(MemoryEtcd::new(), "127.0.0.1:0".parse().unwrap()).await)
    }

    /// The client endpoint, `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Live(etcd) => format!("127.0.0.1:{}", etcd.client_port),
            Self::Memory(server) => server.addr.to_string(),
        }
    }

    /// A client of this etcd with short timeouts and backoff.
    pub fn client(&self) -> EtcdClient {
        client_builder(&self.endpoint()).build().expect("the client builds")
    }

    /// Writes `key = value` from outside anchorage's client: with `etcdctl put` for the real
    /// etcd, straight into the store for the in-memory one.
    pub async fn external_put(&self, key: &str, value: &str) {
        match self {
            Self::Live(etcd) => etcd.etcdctl(&["put", "--", key, value]),
            Self::Memory(server) => {
                server.etcd.put(key, value);
            }
        }
    }

    /// The in-memory store, for cases that reach into it.
    pub fn memory_store(&self) -> Option<&MemoryEtcd> {
        match self {
            Self::Memory(server) => Some(&server.etcd),
            Self::Live(_) => None,
        }
    }
}

/// A client builder for `endpoint` with short timeouts and backoff, as tests want.
pub fn client_builder(endpoint: &str) -> EtcdClientBuilder {
    EtcdClient::builder()
        .endpoints(endpoint.parse().expect("a valid endpoint"))
        .request_timeout(Duration::from_secs(3))
        .dial_timeout(Duration::from_secs(2))
        .backoff(fast_backoff())
        .seed(7)
}

/// 50 ms growing to 300 ms.
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        multiplier: 1.6,
        jitter: 0.2,
        max: Duration::from_millis(300),
    }
}

/// An `etcd` resolver builder for `etcd` with fast retries.
pub fn resolver_builder(etcd: &Etcd) -> EtcdBuilder {
    resolver_for(&etcd.endpoint())
}

/// An `etcd` resolver builder for the etcd at `endpoint` with fast retries.
pub fn resolver_for(endpoint: &str) -> EtcdBuilder {
    EtcdBuilder::new(client_builder(endpoint)).retry_backoff(fast_backoff()).seed(3)
}

/// The in-memory etcd served on a loopback port until dropped, stopped or crashed.
pub struct MemoryServer {
    pub etcd: MemoryEtcd,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl MemoryServer {
    /// Serves `etcd` on `addr` (port 0 picks one).
    pub async fn start(etcd: MemoryEtcd, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let sockets: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let kept = sockets.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                // Keep a duplicate of the socket so `crash` can shut it down from outside.
                let std = stream.into_std().unwrap();
                kept.lock().unwrap().push(std.try_clone().unwrap());
                let stream = tokio::net::TcpStream::from_std(std).unwrap();
                if tx.send(Ok((stream, peer))).is_err() {
                    return;
                }
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = etcd.clone();
        let serve = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let shutdown = async {
                let _ = stopped.await;
            };
            serving.serve_incoming(incoming, shutdown).await;
        });
        Self { etcd, addr, stop: Some(stop), sockets, accept, serve }
    }

    /// Stops abruptly, like a crashed process: the listener closes and every connection is
    /// reset. The store survives, as etcd's data does on disk.
    pub async fn crash(&mut self) {
        self.stop.take();
        self.accept.abort();
        self.serve.abort();
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        // Wait until the listener is closed, so the port can be bound again.
        if !self.accept.is_finished() {
            let _ = (&mut self.accept).await;
        }
    }

    /// Serves the same store on the same address again, after a crash.
    pub async fn restart(&mut self) {
        self.crash().await;
        *self = Self::start(self.etcd.clone(), self.addr).await;
    }

    /// Shuts down gracefully and waits (at most `within`) until serving has returned.
    pub async fn stop_gracefully(&mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(within, &mut self.serve)
            .await
            .expect("the in-memory etcd must finish shutting down in time")
            .expect("serving must not fail");
    }
}

impl Drop for MemoryServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.serve.abort();
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A real `etcd` on free loopback ports with a temporary data directory; killed when dropped.
pub struct LiveEtcd {
    child: Child,
    data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

impl LiveEtcd {
    /// The command line the live tests run etcd with.
    pub fn command(data_dir: &std::path::Path, client_port: u16, peer_port: u16) -> Command {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg("anchorage-test")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("anchorage-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--log-level")
            .arg("error");
        command
    }

    /// Starts etcd and waits (at most 20 s) until it answers a read.
    pub async fn start() -> Self {
        let (client_port, peer_port) = (free_port(), free_port());
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let data_dir =
            std::env::temp_dir().join(format!("anchorage-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("create the etcd data directory");
        let child = Self::command(&data_dir, client_port, peer_port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start etcd ({err}): install it with apt-get install etcd-server")
            });
        let etcd = Self { child, data_dir, client_port, peer_port };
        let client = client_builder(&format!("127.0.0.1:{client_port}")).build().unwrap();
        let ready = async {
            while client.get("anchorage-test-ready").await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .expect("etcd must answer within 20 s of starting");
        etcd
    }

    /// Runs `etcdctl` against this etcd and checks that it succeeded.
    pub fn etcdctl(&self, args: &[&str]) {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://127.0.0.1:{}", self.client_port))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("etcdctl runs (apt-get install etcd-client)");
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for LiveEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The address lists a channel's resolver sent, in order.
pub struct Discovered {
    rx: mpsc::UnboundedReceiver<Vec<String>>,
    /// The last list seen.
    pub latest: Option<Vec<String>>,
    /// Every list seen so far, in order.
    pub history: Vec<Vec<String>>,
}

/// Builds a channel for `target` with `resolver`, recording every address list it resolves.
pub fn discovering(
    target: &str,
    builder: anchorage::channel::ChannelBuilder,
) -> (Channel, Discovered) {
    let (tx, rx) = mpsc::unbounded_channel();
    let channel = builder
        .on_event(move |event| {
            if let ChannelEvent::Resolved { addresses } = event {
                let _ = tx.send(addresses.iter().map(ToString::to_string).collect());
            }
        })
        .build()
        .unwrap_or_else(|err| panic!("the channel for {target} builds: {err}"));
    (channel, Discovered { rx, latest: None, history: Vec::new() })
}

/// `addrs` expanded with connection indices `0..n`, as the resolver lists them: in key order,
/// which for keys `<service>/<addr>` is address order.
pub fn expanded(addrs: &[&str], n: u32) -> Vec<String> {
    let mut addrs = addrs.to_vec();
    addrs.sort_unstable();
    addrs
        .iter()
        .flat_map(|a| (0..n).map(move |i| Address::new(*a).with_connection_index(i).to_string()))
        .collect()
}

impl Discovered {
    /// Waits (at most `within`) until the resolver sends exactly `expected`; returns the time
    /// it took.
    pub async fn wait_for(&mut self, expected: &[String], within: Duration, why: &str) -> Duration {
        let started = tokio::time::Instant::now();
        let found = tokio::time::timeout(within, async {
            if self.latest.as_deref() == Some(expected) {
                return;
            }
            while let Some(list) = self.rx.recv().await {
                let done = list == expected;
                self.history.push(list.clone());
                self.latest = Some(list);
                if done {
                    return;
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "{why}: expected {expected:?} within {within:?}, last resolved {:?}",
            self.latest
        );
        started.elapsed()
    }

    /// Whether any list seen so far mentions `addr`.
    pub fn ever_listed(&self, addr: &str) -> bool {
        let indexed = format!("{addr}{{");
        self.history.iter().flatten().any(|a| a == addr || a.starts_with(&indexed))
    }

    /// Every list sent during the next `period`.
    pub async fn during(&mut self, period: Duration) -> Vec<Vec<String>> {
        let mut lists = Vec::new();
        let _ = tokio::time::timeout(period, async {
            while let Some(list) = self.rx.recv().await {
                self.latest = Some(list.clone());
                self.history.push(list.clone());
                lists.push(list);
            }
        })
        .await;
        lists
    }
}
