//! Subchannels over real loopback TCP, against peers that are not (well-behaved) HTTP/2
//! servers: READY only once the server has spoken HTTP/2 (DESIGN §2.5), and what a channel does
//! with a peer that never does.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::balancer::ConnectivityState;
use anchorage::balancer::subchannel::{BackoffConfig, KeepAlive};
use anchorage::channel::{Channel, ChannelBuilder, ChannelEvent};
use anchorage::connector::{ConnectFuture, Connector, TcpConnector};
use anchorage::pb::echo_client::EchoClient;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The connect timeout of these tests: short, so a silent peer costs little.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// A loopback peer that accepts TCP connections, writes `greeting` on each and then keeps it
/// open without ever reading or writing again. An empty greeting makes a silent peer.
struct RawPeer {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawPeer {
    async fn start(greeting: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let kept = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(greeting).await;
                kept.lock().unwrap().push(stream);
            }
        });
        Self { addr, accepted, task }
    }

    fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every subchannel state change the channel reports, in order, with its error.
type StateLog = mpsc::UnboundedReceiver<(ConnectivityState, Option<String>)>;

fn build_with_state_log(builder: ChannelBuilder) -> (Channel, StateLog) {
    let (tx, rx) = mpsc::unbounded_channel();
    let channel = builder
        .on_event(move |event| {
            if let ChannelEvent::SubchannelState { state, error, .. } = event {
                let _ = tx.send((*state, error.clone()));
            }
        })
        .build()
        .expect("the channel builds");
    (channel, rx)
}

/// Waits (at most 5 s) for the first TRANSIENT_FAILURE; returns the states seen before it and
/// its error.
async fn until_transient_failure(log: &mut StateLog) -> (Vec<ConnectivityState>, String) {
    let mut before = Vec::new();
    let wait = async {
        while let Some((state, error)) = log.recv().await {
            if state == ConnectivityState::TransientFailure {
                return error.unwrap_or_default();
            }
            before.push(state);
        }
        panic!("the channel closed before any TRANSIENT_FAILURE");
    };
    let error = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the subchannel must reach TRANSIENT_FAILURE within 5 s");
    (before, error)
}

fn channel_to(target: String) -> ChannelBuilder {
    Channel::builder(target).min_connect_timeout(CONNECT_TIMEOUT).backoff(fast_backoff()).seed(1)
}

/// Regression: READY was reported as soon as hyper's handshake returned, which is when our own
/// preface has been written, so a TCP peer that never speaks HTTP/2 became READY and swallowed
/// every RPC sent to it.
#[tokio::test]
async fn a_subchannel_to_a_silent_peer_never_becomes_ready_and_fails_after_the_connect_timeout() {
    let silent = RawPeer::start(b"").await;
    let started = Instant::now();
    let (_channel, mut log) = build_with_state_log(channel_to(format!("pass:///{}", silent.addr)));
    let (before, error) = until_transient_failure(&mut log).await;
    assert!(
        !before.contains(&ConnectivityState::Ready),
        "a subchannel must not be READY before the server has spoken HTTP/2, saw {before:?}"
    );
    assert!(silent.connections() >= 1, "the TCP connection must have been accepted");
    assert!(
        started.elapsed() >= CONNECT_TIMEOUT,
        "the attempt must be given the whole connect timeout, failed after {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("handshake") || error.contains("timed out"),
        "the error must say the handshake timed out, got {error:?}"
    );
}

/// Regression: a peer that answers with something other than HTTP/2 (here an HTTP/1.1 response)
/// made the subchannel READY before the connection failed.
#[tokio::test]
async fn a_subchannel_to_a_peer_that_writes_garbage_fails_with_a_handshake_error() {
    let garbage = RawPeer::start(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").await;
    let (_channel, mut log) = build_with_state_log(channel_to(format!("pass:///{}", garbage.addr)));
    let (before, error) = until_transient_failure(&mut log).await;
    assert!(
        !before.contains(&ConnectivityState::Ready),
        "a peer whose first frame is not SETTINGS must never make the subchannel READY, saw {before:?}"
    );
    assert!(error.contains("handshake"), "the error must name the handshake, got {error:?}");
}

/// Regression: pick_first kept the silent first address, because it looked READY, and every RPC
/// sent there waited until its deadline.
#[tokio::test]
async fn pick_first_over_a_silent_peer_and_a_good_server_ends_on_the_good_one_losing_no_rpc() {
    let silent = RawPeer::start(b"").await;
    let good = TestServer::start("good").await;
    let channel = channel_to(format!("pass:///{},{}", silent.addr, good.addr)).build().unwrap();
    let mut client = EchoClient::new(channel);
    for _ in 0..5 {
        // `echo` gives each RPC 5 s, much longer than the connect timeout.
        let served = echo(&mut client).await.expect("no RPC may be lost to the silent peer");
        assert_eq!(served, "good", "pick_first must end on the server that speaks HTTP/2");
    }
    assert_eq!(good.stats().rpcs, 5, "the good server must have served every RPC");
}

/// Regression: a NaN, negative or infinite backoff multiplier or jitter, or a zero or huge
/// duration, was accepted, and `Duration::mul_f64` then panicked inside a subchannel's task.
#[tokio::test]
async fn out_of_range_subchannel_settings_fail_the_build_naming_the_setting() {
    let backoff = fast_backoff();
    let cases = [
        (
            channel_to("pass:///127.0.0.1:1".into())
                .backoff(BackoffConfig { multiplier: f64::NAN, ..backoff.clone() }),
            "backoff.multiplier",
        ),
        (
            channel_to("pass:///127.0.0.1:1".into())
                .backoff(BackoffConfig { jitter: -1.0, ..backoff.clone() }),
            "backoff.jitter",
        ),
        (
            channel_to("pass:///127.0.0.1:1".into())
                .backoff(BackoffConfig { max: Duration::MAX, ..backoff.clone() }),
            "backoff.max",
        ),
        (
            channel_to("pass:///127.0.0.1:1".into()).min_connect_timeout(Duration::ZERO),
            "min_connect_timeout",
        ),
        (
            channel_to("pass:///127.0.0.1:1".into()).keepalive(KeepAlive {
                interval: Duration::from_secs(20),
                timeout: Duration::MAX,
                while_idle: true,
            }),
            "keepalive.timeout",
        ),
    ];
    for (builder, field) in cases {
        let error = builder.build().expect_err("an out-of-range setting must fail the build");
        let message = error.to_string();
        assert!(
            message.contains(field) && message.contains("must be"),
            "the error must name {field} and its allowed range, got {message:?}"
        );
    }
}

/// A raw HTTP/2 peer that speaks just enough of the protocol for keep-alive: it sends its
/// SETTINGS, acknowledges the client's SETTINGS and PINGs, and reports when each PING arrived.
/// With `complain`, after the second PING of a connection it sends
/// GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and closes, as a grpc-go server does.
struct PingPeer {
    addr: SocketAddr,
    /// (connection number, arrival) of every PING.
    pings: mpsc::UnboundedReceiver<(usize, Instant)>,
    task: tokio::task::JoinHandle<()>,
}

impl PingPeer {
    async fn start(complain_on_first_connection: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, pings) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let complain = complain_on_first_connection && n == 0;
                tokio::spawn(serve_pings(stream, n, complain, tx.clone()));
                n += 1;
            }
        });
        Self { addr, pings, task }
    }

    /// The gap between the first two PINGs of connection `n` (waiting at most 5 s).
    async fn ping_gap(&mut self, n: usize) -> Duration {
        let mut arrivals = Vec::new();
        let wait = async {
            while let Some((conn, at)) = self.pings.recv().await {
                if conn == n {
                    arrivals.push(at);
                    if arrivals.len() == 2 {
                        return arrivals[1] - arrivals[0];
                    }
                }
            }
            panic!("the peer stopped");
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("connection {n} must send two PINGs within 5 s"))
    }
}

impl Drop for PingPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_pings(
    mut stream: TcpStream,
    n: usize,
    complain: bool,
    pings: mpsc::UnboundedSender<(usize, Instant)>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const ACK: u8 = 1;
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        bytes.extend_from_slice(payload);
        bytes
    };
    stream.write_all(&frame(SETTINGS, 0, &[])).await?;
    let mut preface = [0u8; 24];
    stream.read_exact(&mut preface).await?;
    let mut seen = 0;
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        match (header[3], header[4] & ACK) {
            (SETTINGS, 0) => stream.write_all(&frame(SETTINGS, ACK, &[])).await?,
            (PING, 0) => {
                let _ = pings.send((n, Instant::now()));
                seen += 1;
                if complain && seen == 2 {
                    let mut goaway = vec![0, 0, 0, 0, 0, 0, 0, 0x0b]; // last stream 0, ENHANCE_YOUR_CALM
                    goaway.extend_from_slice(b"too_many_pings");
                    stream.write_all(&frame(GOAWAY, 0, &goaway)).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Ok(());
                }
                stream.write_all(&frame(PING, ACK, &payload)).await?;
            }
            _ => {}
        }
    }
}

/// Dials loopback TCP but, like the simulation's connector, allows keep-alive below gRFC A8's
/// 10 s, so these tests need not wait for real intervals.
#[derive(Debug)]
struct FastKeepaliveConnector;

impl Connector for FastKeepaliveConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        TcpConnector.connect(addr)
    }

    fn min_keepalive_interval(&self) -> Duration {
        Duration::ZERO
    }
}

const PING_INTERVAL: Duration = Duration::from_millis(250);

fn keepalive_every(interval: Duration) -> KeepAlive {
    KeepAlive { interval, timeout: Duration::from_secs(2), while_idle: true }
}

/// Regression: keep-alive had no floor, so a user could PING a real server every few
/// milliseconds; gRFC A8 requires at least 10 s.
#[tokio::test]
async fn a_keepalive_interval_below_ten_seconds_is_raised_to_ten_seconds() {
    let mut peer = PingPeer::start(false).await;
    let builder = channel_to(format!("pass:///{}", peer.addr))
        .default_service_config(ROUND_ROBIN)
        .unwrap()
        .keepalive(keepalive_every(PING_INTERVAL));
    let (_channel, ready) = build_counting_ready(builder);
    ready.wait_for(1).await;
    let ping = tokio::time::timeout(Duration::from_secs(1), peer.pings.recv()).await;
    assert!(
        ping.is_err(),
        "gRFC A8: a keep-alive interval below 10 s must be raised to 10 s, but a PING came {:?}",
        ping
    );
}

/// Regression: a GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") was treated like any lost
/// connection, and the next connection PINGed just as often (gRFC A8 says double the interval).
#[tokio::test]
async fn goaway_too_many_pings_doubles_the_keepalive_interval_of_the_next_connection() {
    let mut peer = PingPeer::start(true).await;
    let builder = channel_to(format!("pass:///{}", peer.addr))
        .default_service_config(ROUND_ROBIN)
        .unwrap()
        .connector(FastKeepaliveConnector)
        .keepalive(keepalive_every(PING_INTERVAL));
    let (_channel, _log) = build_with_state_log(builder);
    let first = peer.ping_gap(0).await;
    let second = peer.ping_gap(1).await;
    assert!(
        second >= PING_INTERVAL.mul_f64(1.6),
        "gRFC A8: after GOAWAY too_many_pings the next connection must PING half as often \
         (every {:?}), but PINGed {second:?} apart (the first connection: {first:?})",
        PING_INTERVAL * 2
    );
}
