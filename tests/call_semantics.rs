//! What goes on the wire for each RPC, seen by a hand-written HTTP/2 server on loopback that
//! decides exactly what to answer: deadlines that cover the response body, `:authority`,
//! `grpc-previous-rpc-attempts`, retry throttling, and transparent retries on REFUSED_STREAM and
//! GOAWAY (gRFC A6, DESIGN §2.5–2.6).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::address::Address;
use anchorage::channel::{Channel, ChannelError};
use anchorage::pb::echo_client::EchoClient;
use anchorage::pb::{EchoRequest, EchoResponse};
use anchorage::resolver::ResolverBuilder;
use anchorage::resolver::dns::DnsBuilder;
use anchorage::resolver::etcd::EtcdBuilder;
use anchorage::resolver::manual::ManualResolver;
use anchorage::resolver::pass::PassBuilder;
use anchorage::target::{BUILTIN_SCHEMES, Target};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;

// ---- a scripted HTTP/2 gRPC server ----

/// What the server does with one request.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Response headers, one Echo reply, trailers with `grpc-status: 0`.
    Reply,
    /// A trailers-only response with this status.
    Status(Code),
    /// `RST_STREAM(REFUSED_STREAM)`: the request is not processed.
    Refuse,
    /// Response headers, then nothing until the client resets the stream.
    Stall,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    authority: Option<String>,
    previous_attempts: Option<String>,
}

type Plan = Box<dyn Fn(usize) -> Action + Send + Sync>;

struct State {
    plan: Plan,
    seen: Mutex<Vec<Seen>>,
    /// Client resets of stalled streams: the reason and how long after the headers.
    resets: Mutex<Vec<(h2::Reason, Duration)>>,
}

struct ScriptedServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl ScriptedServer {
    /// Serves on a free loopback port; `plan(n)` says what to do with the n-th request (from 0).
    async fn start(plan: impl Fn(usize) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            plan: Box::new(plan),
            seen: Mutex::default(),
            resets: Mutex::default(),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_connection(socket, shared.clone()));
            }
        });
        Self { addr, state, accept }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn resets(&self) -> Vec<(h2::Reason, Duration)> {
        self.state.resets.lock().unwrap().clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_connection(socket: TcpStream, state: Arc<State>) {
    let Ok(mut conn) = h2::server::handshake(socket).await else { return };
    while let Some(Ok((request, respond))) = conn.accept().await {
        let header = |name: &str| {
            request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let seen = Seen {
            authority: request.uri().authority().map(ToString::to_string),
            previous_attempts: header("grpc-previous-rpc-attempts"),
        };
        let index = {
            let mut all = state.seen.lock().unwrap();
            all.push(seen);
            all.len() - 1
        };
        let action = (state.plan)(index);
        tokio::spawn(respond_with(action, request, respond, state.clone()));
    }
}

async fn respond_with(
    action: Action,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    state: Arc<State>,
) {
    if let Action::Refuse = action {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let mut body = request.into_body();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    let headers = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    match action {
        Action::Reply => {
            let Ok(mut stream) = respond.send_response(headers, false) else { return };
            let reply =
                EchoResponse { message: "hi".into(), server: "scripted".into(), connection: 0 };
            let _ = stream.send_data(grpc_frame(&reply), false);
            let _ = stream.send_trailers(trailers(Code::Ok));
        }
        Action::Status(code) => {
            let mut headers = headers;
            headers.headers_mut().extend(trailers(code));
            let _ = respond.send_response(headers, true);
        }
        Action::Stall => {
            let Ok(mut stream) = respond.send_response(headers, false) else { return };
            let sent = Instant::now();
            if let Ok(reason) = std::future::poll_fn(|cx| stream.poll_reset(cx)).await {
                state.resets.lock().unwrap().push((reason, sent.elapsed()));
            }
        }
        Action::Refuse => unreachable!("handled above"),
    }
}

fn grpc_frame(message: &EchoResponse) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len()).unwrap());
    frame.put_slice(&encoded);
    frame.freeze()
}

fn trailers(code: Code) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(code as i32));
    trailers
}

// ---- helpers ----

fn pass_target(server: &ScriptedServer) -> String {
    format!("pass:///{}", server.addr)
}

fn client(channel: Channel) -> EchoClient<Channel> {
    EchoClient::new(channel)
}

async fn echo_with_timeout(
    client: &mut EchoClient<Channel>,
    timeout: Duration,
) -> Result<EchoResponse, tonic::Status> {
    let mut request = tonic::Request::new(EchoRequest { message: "hi".into(), fail_with_code: 0 });
    request.set_timeout(timeout);
    client.echo(request).await.map(tonic::Response::into_inner)
}

async fn echo(client: &mut EchoClient<Channel>) -> Result<EchoResponse, tonic::Status> {
    echo_with_timeout(client, Duration::from_secs(5)).await
}

fn retry_config(extra: &str) -> String {
    format!(
        r#"{{{extra}"methodConfig":[{{"name":[{{}}],"retryPolicy":{{
            "maxAttempts":5,"initialBackoff":"0.01s","maxBackoff":"0.01s",
            "backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}}}]}}"#
    )
}

// ---- deadlines ----

/// Regression: the deadline covered only the wait for response headers, so a server that sent
/// headers and then stalled held the RPC (and its stream) open forever.
#[tokio::test]
async fn the_deadline_covers_the_response_body_and_resets_the_stalled_stream() {
    let server = ScriptedServer::start(|_| Action::Stall).await;
    let mut client = client(Channel::builder(pass_target(&server)).build().unwrap());
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        echo_with_timeout(&mut client, Duration::from_millis(300)),
    )
    .await
    .expect("an RPC whose server stalls after the headers must end at its deadline");
    let status = result.expect_err("a stalled RPC cannot succeed");
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "a passed deadline is DEADLINE_EXCEEDED: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the RPC must end on time, not {:?} after a 300 ms deadline",
        started.elapsed()
    );
    let waited = Instant::now();
    while server.resets().is_empty() && waited.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resets = server.resets();
    assert_eq!(resets.len(), 1, "the stalled stream must be reset, not left open");
    assert_eq!(resets[0].0, h2::Reason::CANCEL, "a deadline cancels the stream");
}

// ---- :authority ----

/// Regression: `:authority` was each subchannel's resolved address, so virtual hosting and TLS
/// names broke as soon as a resolver returned IPs.
#[tokio::test]
async fn the_authority_is_the_resolvers_default_not_the_resolved_address() {
    let server = ScriptedServer::start(|_| Action::Reply).await;
    let manual = ManualResolver::new("manual");
    manual.update_addresses(vec![Address::new(server.addr.to_string())]);
    let channel = Channel::builder("manual:///echo.example").resolver(manual).build().unwrap();
    echo(&mut client(channel)).await.expect("the RPC must succeed");
    let seen = server.seen();
    assert_eq!(
        seen[0].authority.as_deref(),
        Some("echo.example"),
        "a resolver without its own default names the target's endpoint, as grpc-go does"
    );
}

#[tokio::test]
async fn the_dns_resolver_names_the_host_and_port_it_resolves() {
    let server = ScriptedServer::start(|_| Action::Reply).await;
    let target = format!("dns:///localhost:{}", server.addr.port());
    let channel = Channel::builder(target).build().unwrap();
    echo(&mut client(channel)).await.expect("the RPC must succeed");
    let expected = format!("localhost:{}", server.addr.port());
    assert_eq!(
        server.seen()[0].authority.as_deref(),
        Some(expected.as_str()),
        "a dns channel must send the host it resolved, not the IP it connected to"
    );
}

#[tokio::test]
async fn a_builder_authority_overrides_the_resolvers_default() {
    let server = ScriptedServer::start(|_| Action::Reply).await;
    let channel = Channel::builder(pass_target(&server))
        .authority("api.example.com:8443")
        .unwrap()
        .build()
        .unwrap();
    echo(&mut client(channel)).await.expect("the RPC must succeed");
    assert_eq!(
        server.seen()[0].authority.as_deref(),
        Some("api.example.com:8443"),
        "the builder's authority must be sent as given"
    );
}

#[test]
fn an_invalid_builder_authority_is_an_error_naming_it() {
    for bad in ["", "user@host:1", "a b", "host/path"] {
        let error = Channel::builder("pass:///a:1").authority(bad).unwrap_err();
        assert!(
            matches!(&error, ChannelError::Authority { authority, .. } if authority == bad),
            "{bad:?} must be rejected as an authority, got {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("channel: authority ") && message.contains(&format!("{bad:?}")),
            "the message must name the authority: {message}"
        );
    }
}

#[test]
fn each_builtin_resolver_has_a_documented_default_authority() {
    let target = |text: &str| Target::parse(text, |s| BUILTIN_SCHEMES.contains(&s)).unwrap();
    let cases: [(&dyn ResolverBuilder, &str, &str); 5] = [
        (&PassBuilder, "pass:///localhost:1#2,127.0.0.1:2", "localhost:1"),
        (&PassBuilder, "pass:///:9080", "localhost:9080"),
        (&DnsBuilder::default(), "dns:///example.com", "example.com:443"),
        (&DnsBuilder::default(), "dns:///[::1]:50051", "[::1]:50051"),
        (&EtcdBuilder::default(), "etcd:///foo/bar#2", "foo_bar"),
    ];
    for (builder, text, expected) in cases {
        assert_eq!(
            builder.default_authority(&target(text)),
            expected,
            "default authority of {text}"
        );
    }
}

// ---- retries ----

/// Regression: retries never said which attempt they were.
#[tokio::test]
async fn attempts_after_the_first_carry_the_number_of_previous_attempts() {
    let server = ScriptedServer::start(|n| match n {
        0 | 1 => Action::Status(Code::Unavailable),
        _ => Action::Reply,
    })
    .await;
    let channel = Channel::builder(pass_target(&server))
        .default_service_config(&retry_config(""))
        .unwrap()
        .seed(1)
        .build()
        .unwrap();
    echo(&mut client(channel)).await.expect("the third attempt succeeds");
    let previous: Vec<_> = server.seen().into_iter().map(|s| s.previous_attempts).collect();
    assert_eq!(
        previous,
        [None, Some("1".to_owned()), Some("2".to_owned())],
        "grpc-previous-rpc-attempts must be absent on the first attempt and count the earlier ones"
    );
}

/// Regression: `retryThrottling` was ignored, so a failing backend got every retry.
#[tokio::test]
async fn retry_throttling_stops_retries_at_half_the_tokens_and_successes_restore_them() {
    let failing = Arc::new(AtomicBool::new(true));
    let fail = failing.clone();
    let server = ScriptedServer::start(move |_| {
        if fail.load(Ordering::SeqCst) { Action::Status(Code::Unavailable) } else { Action::Reply }
    })
    .await;
    let config = retry_config(r#""retryThrottling":{"maxTokens":3,"tokenRatio":0.5},"#);
    let channel = Channel::builder(pass_target(&server))
        .default_service_config(&config)
        .unwrap()
        .seed(1)
        .build()
        .unwrap();
    let mut client = client(channel);
    let mut attempts = {
        let mut last = 0;
        move |server: &ScriptedServer| {
            let now = server.seen().len();
            std::mem::replace(&mut last, now).abs_diff(now)
        }
    };
    echo(&mut client).await.expect_err("the server fails");
    assert_eq!(attempts(&server), 2, "3 tokens: one retry, then 1 token is at or below 1.5");
    echo(&mut client).await.expect_err("the server fails");
    assert_eq!(attempts(&server), 1, "below the threshold no RPC is retried");
    failing.store(false, Ordering::SeqCst);
    for _ in 0..6 {
        echo(&mut client).await.expect("the server recovered");
    }
    attempts(&server);
    failing.store(true, Ordering::SeqCst);
    echo(&mut client).await.expect_err("the server fails again");
    assert_eq!(attempts(&server), 2, "six successes × 0.5 refill the bucket: retries resume");
}

/// Regression: a stream the server refused was failed with UNAVAILABLE although the server had
/// not processed it.
#[tokio::test]
async fn a_refused_stream_is_retried_transparently_without_counting_as_an_attempt() {
    let server =
        ScriptedServer::start(|n| if n == 0 { Action::Refuse } else { Action::Reply }).await;
    let channel = Channel::builder(pass_target(&server)).build().unwrap();
    echo(&mut client(channel))
        .await
        .expect("a refused stream must be retried without a retry policy");
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the refused request is sent once more");
    assert_eq!(seen[1].previous_attempts, None, "a transparent retry is not a counted attempt");
}

#[tokio::test]
async fn a_stream_refused_again_fails_after_one_transparent_retry() {
    let server = ScriptedServer::start(|_| Action::Refuse).await;
    let channel = Channel::builder(pass_target(&server)).build().unwrap();
    let status = echo(&mut client(channel)).await.expect_err("every stream is refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server.seen().len(), 2, "gRFC A6: an unprocessed RPC is retried transparently once");
}

/// Regression: RPCs above a GOAWAY's last-stream-id were failed with UNAVAILABLE although the
/// server never processed them.
#[tokio::test]
async fn streams_above_a_goaway_last_stream_id_are_retried_transparently() {
    let server = ScriptedServer::start(|_| Action::Reply).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server.state.clone();
    let accept = tokio::spawn(async move {
        let (first, _) = listener.accept().await.unwrap();
        tokio::spawn(goaway_after_two_streams(first));
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_connection(socket, state.clone()));
        }
    });
    let channel = Channel::builder(format!("pass:///{addr}")).build().unwrap();
    let (mut a, mut b) = (client(channel.clone()), client(channel));
    let (first, second) = tokio::join!(echo(&mut a), echo(&mut b));
    accept.abort();
    first.expect("both RPCs in flight at the GOAWAY must succeed");
    second.expect("both RPCs in flight at the GOAWAY must succeed");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "the stream above last-stream-id must be sent again, once: {seen:?}");
    assert_eq!(seen[0].previous_attempts, None, "a transparent retry is not a counted attempt");
}

/// A raw HTTP/2 server for one connection: once the client has opened two streams it sends
/// GOAWAY with the lower one as last-stream-id, answers that one and closes the connection.
/// (h2's own server counts every stream whose HEADERS arrived as processed, so it cannot leave
/// a stream above last-stream-id on purpose.)
async fn goaway_after_two_streams(mut socket: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut frame = BytesMut::new();
        frame.put_uint(payload.len() as u64, 3);
        frame.put_u8(kind);
        frame.put_u8(flags);
        frame.put_u32(stream);
        frame.put_slice(payload);
        frame
    };
    // HPACK literal header field without indexing, new name, no Huffman coding.
    let literal = |block: &mut BytesMut, name: &str, value: &str| {
        block.put_u8(0);
        block.put_u8(name.len() as u8);
        block.put_slice(name.as_bytes());
        block.put_u8(value.len() as u8);
        block.put_slice(value.as_bytes());
    };
    let mut preface = [0; 24];
    socket.read_exact(&mut preface).await.unwrap();
    socket.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut streams = Vec::new();
    while streams.len() < 2 {
        let mut header = [0; 9];
        socket.read_exact(&mut header).await.unwrap();
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        socket.read_exact(&mut payload).await.unwrap();
        match header[3] {
            1 => streams.push(stream),
            4 if header[4] & 1 == 0 => socket.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
            _ => {}
        }
    }
    let last = streams[0].min(streams[1]);
    let mut goaway = BytesMut::new();
    goaway.put_u32(last);
    goaway.put_u32(0); // NO_ERROR
    socket.write_all(&frame(7, 0, 0, &goaway)).await.unwrap();
    let mut headers = BytesMut::new();
    headers.put_u8(0x88); // :status 200, from HPACK's static table
    literal(&mut headers, "content-type", "application/grpc");
    socket.write_all(&frame(1, 0x4, last, &headers)).await.unwrap();
    let reply = EchoResponse { message: "hi".into(), server: "raw".into(), connection: 0 };
    socket.write_all(&frame(0, 0, last, &grpc_frame(&reply))).await.unwrap();
    let mut trailers = BytesMut::new();
    literal(&mut trailers, "grpc-status", "0");
    socket.write_all(&frame(1, 0x5, last, &trailers)).await.unwrap();
    socket.flush().await.unwrap();
    let _ = socket.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Regression: a third-party resolver whose endpoint is no valid authority (a `pass`-like list
/// keeps its `#N`) made the channel fail to build.
#[tokio::test]
async fn a_default_authority_that_is_no_valid_authority_is_sanitized_not_a_build_error() {
    let server = ScriptedServer::start(|_| Action::Reply).await;
    let manual = ManualResolver::new("manual");
    manual.update_addresses(vec![Address::new(server.addr.to_string())]);
    let channel = Channel::builder("manual:///a:9080#2,b:9090")
        .resolver(manual)
        .build()
        .expect("a resolver's odd endpoint must not stop the channel from building");
    echo(&mut client(channel)).await.expect("the RPC must succeed");
    assert_eq!(
        server.seen()[0].authority.as_deref(),
        Some("a_9080_2,b_9090"),
        "characters an authority cannot hold must become _"
    );
}
