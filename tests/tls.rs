//! TLS over loopback: every subchannel does its own handshake, and a handshake that fails
//! (unknown CA, name mismatch, no client certificate for mTLS) fails RPCs with UNAVAILABLE
//! saying why. Certificates are made at run time.

mod pki;

use std::net::SocketAddr;
use std::time::Duration;

use anchorage::channel::{Channel, ChannelBuilder};
use anchorage::etcd::memory::MemoryEtcd;
use anchorage::etcd::{Endpoints, EtcdClient};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::server::{InstrumentedServer, ServerRecorder, TlsHandshakes, TlsListener};
use anchorage::tls::{ServerTlsConfig, TlsConfig, TlsError};
use pki::{Ca, Identity, TempDir};
use tokio::net::TcpListener;
use tonic::Code;

const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A TLS server on a free loopback port, with its connection record and handshake counts.
struct TlsServer {
    addr: SocketAddr,
    recorder: ServerRecorder,
    handshakes: TlsHandshakes,
}

async fn start(config: ServerTlsConfig) -> TlsServer {
    start_with(config, Duration::from_secs(10)).await
}

async fn start_with(config: ServerTlsConfig, handshake_timeout: Duration) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().unwrap();
    let listener = TlsListener::new(listener, &config)
        .expect("a valid server TLS config")
        .handshake_timeout(Some(handshake_timeout));
    let handshakes = listener.handshakes();
    let recorder = ServerRecorder::new("tls");
    let server = InstrumentedServer::new(recorder.clone());
    tokio::spawn(server.serve(listener, std::future::pending()));
    TlsServer { addr, recorder, handshakes }
}

fn server_config(identity: &Identity) -> ServerTlsConfig {
    ServerTlsConfig::from_pem(identity.cert_pem.as_bytes(), identity.key_pem.as_bytes()).unwrap()
}

fn trusting(ca: &Ca) -> TlsConfig {
    TlsConfig::with_ca_pem(ca.cert_pem().as_bytes()).unwrap()
}

fn channel(builder: ChannelBuilder) -> Channel {
    builder.min_connect_timeout(Duration::from_secs(5)).seed(1).build().unwrap()
}

async fn echo(client: &mut EchoClient<Channel>) -> Result<String, tonic::Status> {
    let mut request =
        tonic::Request::new(EchoRequest { message: "hi".into(), ..Default::default() });
    request.set_timeout(Duration::from_secs(5));
    Ok(client.echo(request).await?.into_inner().server)
}

/// Sends `n` RPCs and returns each failure's status; panics if one succeeds.
async fn all_fail(client: &mut EchoClient<Channel>, n: usize) -> Vec<tonic::Status> {
    let mut failures = Vec::new();
    for i in 0..n {
        match echo(client).await {
            Ok(_) => panic!("RPC {i} succeeded over a TLS connection that must not be accepted"),
            Err(status) => failures.push(status),
        }
    }
    failures
}

/// Waits up to 2 s for `condition`, which the server side reaches on its own task.
async fn eventually(condition: impl Fn() -> bool, requirement: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{requirement}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_unavailable_saying(failures: &[tonic::Status], words: &[&str]) {
    for status in failures {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a failed handshake is UNAVAILABLE: {status:?}"
        );
        for word in words {
            assert!(
                status.message().contains(word),
                "the status must say why the handshake failed ({word:?}): {:?}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn pass_over_tls_opens_two_connections_each_with_its_own_handshake() {
    let ca = Ca::new("test CA");
    let server = start(server_config(&ca.server(&["localhost"]))).await;
    let target = format!("pass:///localhost:{}#2", server.addr.port());
    let builder = Channel::builder(target).tls(trusting(&ca)).default_service_config(ROUND_ROBIN);
    let mut client = EchoClient::new(channel(builder.unwrap()));
    for _ in 0..20 {
        echo(&mut client).await.expect("every RPC over TLS must succeed");
    }
    let stats = server.recorder.stats();
    assert_eq!(stats.connections_accepted, 2, "#2 must open exactly 2 connections");
    assert_eq!(server.handshakes.completed(), 2, "each connection must do its own TLS handshake");
    assert_eq!(server.handshakes.failed(), 0);
    assert_eq!(stats.rpcs, 20);
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_fails_every_rpc_saying_so() {
    let (ca, other) = (Ca::new("server CA"), Ca::new("other CA"));
    let server = start(server_config(&ca.server(&["localhost"]))).await;
    let target = format!("pass:///localhost:{}", server.addr.port());
    let mut client = EchoClient::new(channel(Channel::builder(target).tls(trusting(&other))));
    let failures = all_fail(&mut client, 5).await;
    assert_unavailable_saying(&failures, &["TLS handshake", "unknown CA"]);
    assert_eq!(
        server.handshakes.completed(),
        0,
        "no handshake may complete with an untrusted certificate"
    );
    eventually(|| server.handshakes.failed() >= 1, "the server must count the failed handshake")
        .await;
    assert_eq!(server.recorder.stats().rpcs, 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_with_a_name_mismatch_unless_the_name_is_overridden() {
    let ca = Ca::new("test CA");
    let server = start(server_config(&ca.server(&["echo.example.test"]))).await;
    let target = format!("pass:///localhost:{}", server.addr.port());
    let mut client = EchoClient::new(channel(Channel::builder(target.clone()).tls(trusting(&ca))));
    let failures = all_fail(&mut client, 3).await;
    assert_unavailable_saying(&failures, &["name mismatch", "localhost"]);

    let tls = trusting(&ca).server_name("echo.example.test").unwrap();
    let mut client = EchoClient::new(channel(Channel::builder(target).tls(tls)));
    echo(&mut client).await.expect("the overriding server name must be the one verified");
}

#[tokio::test]
async fn the_authority_override_is_the_name_verified() {
    let ca = Ca::new("test CA");
    let server = start(server_config(&ca.server(&["echo.example.test"]))).await;
    let target = format!("pass:///127.0.0.1:{}", server.addr.port());
    let builder = Channel::builder(target).authority("echo.example.test:443").unwrap();
    let mut client = EchoClient::new(channel(builder.tls(trusting(&ca))));
    echo(&mut client).await.expect("the channel's :authority host must be the TLS server name");
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_and_accepts_one_the_ca_signed() {
    let ca = Ca::new("test CA");
    let config =
        server_config(&ca.server(&["localhost"])).client_ca_pem(ca.cert_pem().as_bytes()).unwrap();
    let server = start(config).await;
    let target = format!("pass:///localhost:{}", server.addr.port());

    let mut anonymous =
        EchoClient::new(channel(Channel::builder(target.clone()).tls(trusting(&ca))));
    let failures = all_fail(&mut anonymous, 3).await;
    assert_unavailable_saying(&failures, &["certificate required"]);

    let client = ca.client("client-a");
    let tls = trusting(&ca).identity_pem(client.cert_pem.as_bytes(), client.key_pem.as_bytes());
    let mut known = EchoClient::new(channel(Channel::builder(target).tls(tls.unwrap())));
    echo(&mut known).await.expect("a client certificate signed by the client CA must be accepted");
    assert_eq!(server.recorder.stats().rpcs, 1);
}

#[tokio::test]
async fn the_connect_timeout_bounds_the_tls_handshake() {
    // A TCP peer that accepts and never answers the ClientHello.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("pass:///localhost:{}", silent.local_addr().unwrap().port());
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let ca = Ca::new("test CA");
    let channel = Channel::builder(target)
        .tls(trusting(&ca))
        .min_connect_timeout(Duration::from_millis(300))
        .seed(1)
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    let started = tokio::time::Instant::now();
    let status = echo(&mut client).await.expect_err("a peer that never handshakes cannot serve");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("timed out"),
        "the status must say the connect timed out: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the handshake must end at the connect timeout"
    );
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_closed_at_the_handshake_timeout_without_blocking_others()
{
    use tokio::io::AsyncReadExt;
    let ca = Ca::new("test CA");
    let server =
        start_with(server_config(&ca.server(&["localhost"])), Duration::from_millis(300)).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();

    // A well-behaved client is served while the silent one still holds its connection.
    let target = format!("pass:///localhost:{}", server.addr.port());
    let mut client = EchoClient::new(channel(Channel::builder(target).tls(trusting(&ca))));
    echo(&mut client).await.expect("a silent connection must not block other handshakes");

    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server must close a connection whose handshake does not finish in time: {read:?}"
    );
    assert_eq!(server.handshakes.failed(), 1, "the timed-out handshake counts as failed");
    assert_eq!(server.handshakes.completed(), 1);
}

#[test]
fn bad_pem_and_missing_files_are_typed_errors_naming_the_input() {
    let err = TlsConfig::with_ca_pem(b"not a certificate").unwrap_err();
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err:?}");
    assert!(err.to_string().starts_with("tls: "), "messages start with the concept: {err}");

    let dir = TempDir::new("tls-errors");
    let missing = dir.path().join("missing.pem");
    let err = TlsConfig::with_ca_file(&missing).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "the error must name the file: {err}");

    let ca = Ca::new("test CA");
    let server = ca.server(&["localhost"]);
    let err = ServerTlsConfig::from_pem(server.cert_pem.as_bytes(), b"").unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    let other = ca.server(&["localhost"]);
    let err = ServerTlsConfig::from_pem(server.cert_pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap_err();
    assert!(err.to_string().contains("key"), "a key that does not match must be named: {err}");
    let err = TlsConfig::with_webpki_roots().server_name("not a name!").unwrap_err();
    assert!(matches!(err, TlsError::ServerName { .. }), "{err:?}");
}

/// The in-memory etcd serving TLS on a free loopback port; returns its port.
async fn tls_etcd(config: &ServerTlsConfig) -> (u16, MemoryEtcd) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let etcd = MemoryEtcd::new();
    let listener = TlsListener::new(listener, config).unwrap();
    tokio::spawn(etcd.clone().serve(listener, std::future::pending()));
    (port, etcd)
}

fn etcd_client(endpoints: &str, tls: Option<TlsConfig>) -> EtcdClient {
    let mut builder = EtcdClient::builder()
        .endpoints(endpoints.parse().expect("valid endpoints"))
        .request_timeout(Duration::from_secs(2))
        .dial_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.build().expect("the client builds")
}

#[tokio::test]
async fn the_etcd_client_speaks_tls_to_https_endpoints_verifying_each_endpoints_own_name() {
    let ca = Ca::new("etcd CA");
    // Two endpoints to one member; its certificate names only the second one's host, so a
    // client that verified the first endpoint's name on every connection would fail over to
    // it and still be refused.
    let (port, etcd) = tls_etcd(&server_config(&ca.server(&["127.0.0.1"]))).await;
    let endpoints = format!("https://localhost:{port},https://127.0.0.1:{port}");
    let client = etcd_client(&endpoints, Some(trusting(&ca)));
    let mut last = None;
    for _ in 0..20 {
        match client.put("svc/a:1", "x", None).await {
            Ok(_) => break,
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        etcd.get_prefix("svc/").len(),
        1,
        "the put must reach etcd over TLS through the endpoint whose name matches: {last:?}"
    );
}

#[tokio::test]
async fn https_etcd_endpoints_without_a_ca_trust_the_webpki_roots_and_say_unknown_ca() {
    let ca = Ca::new("etcd CA");
    let (port, _etcd) = tls_etcd(&server_config(&ca.server(&["localhost"]))).await;
    let client = etcd_client(&format!("https://localhost:{port}"), None);
    let err =
        client.put("svc/a:1", "x", None).await.expect_err("a private CA is not a webpki root");
    assert!(err.to_string().contains("unknown CA"), "the error must say why: {err}");
}

#[test]
fn etcd_endpoints_are_all_https_or_none() {
    let endpoints: Endpoints = "https://a:2379,b:2379".parse().unwrap();
    assert!(endpoints.is_tls(), "an https endpoint makes the list TLS");
    assert_eq!(endpoints.addrs(), ["a:2379", "b:2379"]);
    assert!(!"http://a:2379,b:2379".parse::<Endpoints>().unwrap().is_tls());
    let err = "https://a:2379,http://b:2379".parse::<Endpoints>().unwrap_err().to_string();
    assert!(
        err.contains("item 2") && err.contains("https"),
        "mixing schemes must be refused: {err}"
    );
}

/// Regression: the configs' `Debug` printed every certificate's bytes, so a `ChannelBuilder`
/// in a log line carried kilobytes of DER.
#[test]
fn tls_configs_debug_print_counts_not_certificate_bytes() {
    let ca = Ca::new("test CA");
    let server = ca.server(&["localhost"]);
    let client = trusting(&ca).identity_pem(server.cert_pem.as_bytes(), server.key_pem.as_bytes());
    let shown = format!("{:?}", client.unwrap());
    assert!(shown.len() < 300, "a client config's Debug must stay short: {shown}");
    let shown =
        format!("{:?}", server_config(&server).client_ca_pem(ca.cert_pem().as_bytes()).unwrap());
    assert!(shown.len() < 300, "a server config's Debug must stay short: {shown}");
}

#[tokio::test]
async fn a_tls_server_that_does_not_select_alpn_h2_is_refused_saying_so() {
    use tokio_rustls::rustls;
    let ca = Ca::new("test CA");
    let identity = ca.server(&["localhost"]);
    let chain = rustls_pki_types::pem::PemObject::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
        .unwrap();
    let key =
        <rustls_pki_types::PrivateKeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
            identity.key_pem.as_bytes(),
        )
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    // A TLS server that offers no ALPN protocol at all.
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            if let Ok(stream) = acceptor.accept(socket).await {
                open.push(stream);
            }
        }
    });
    let target = format!("pass:///localhost:{port}");
    let mut client = EchoClient::new(channel(Channel::builder(target).tls(trusting(&ca))));
    let failures = all_fail(&mut client, 2).await;
    assert_unavailable_saying(&failures, &["ALPN \"h2\""]);
}

/// A TLS client connection to `addr` that offers no ALPN protocol, trusting `ca`.
async fn connect_without_alpn(
    addr: SocketAddr,
    ca: &Ca,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn the_server_refuses_a_tls_client_that_does_not_offer_alpn_h2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let server = start(server_config(&ca.server(&["localhost"]))).await;
    // TLS 1.3: the client's handshake may complete before the server has judged it.
    if let Ok(mut stream) = connect_without_alpn(server.addr, &ca).await {
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the server must close a connection that did not negotiate h2: {read:?}"
        );
    }
    eventually(|| server.handshakes.failed() == 1, "a client without ALPN h2 fails its handshake")
        .await;
    assert_eq!(server.handshakes.completed(), 0);
}

/// What a request said about where it was going: its path, `:scheme` and `:authority`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// A TLS server for one connection that records every request and answers each with
/// UNIMPLEMENTED (so a health check is switched off and an RPC fails at once).
async fn recording_server(ca: &Ca, names: &[&str]) -> (u16, Seen) {
    use anchorage::server::Listener;
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener::new(tcp, &server_config(&ca.server(names))).unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let (io, _) = listener.accept().await.expect("one TLS connection");
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let uri = request.uri();
            record.lock().unwrap().push((
                uri.path().to_owned(),
                uri.scheme_str().map(str::to_owned),
                uri.authority().map(ToString::to_string),
            ));
            let _body: hyper::body::Incoming = request.into_body();
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await
    });
    (port, seen)
}

/// Regression: every request went out with `:scheme` `http`, even over TLS, where gRPC clients
/// send `https` (RFC 9113 §8.3.1; grpc-go does).
#[tokio::test]
async fn rpcs_over_tls_carry_the_https_scheme() {
    let ca = Ca::new("test CA");
    let (port, seen) = recording_server(&ca, &["localhost"]).await;
    let target = format!("pass:///localhost:{port}");
    let mut client = EchoClient::new(channel(Channel::builder(target).tls(trusting(&ca))));
    let status = echo(&mut client).await.expect_err("the test server answers UNIMPLEMENTED");
    assert_eq!(status.code(), Code::Unimplemented, "the request must reach the server: {status:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one request: {seen:?}");
    assert_eq!(seen[0].1.as_deref(), Some("https"), "an RPC over TLS must carry :scheme https");
}

/// Regression: the health check's `Watch` went out with `:scheme` `http` and the resolved
/// address as `:authority`, where every other RPC of the channel carries the channel's own
/// (grpc-go's health client runs on the channel's transport, with its authority).
#[tokio::test]
async fn the_health_watch_carries_the_channels_scheme_and_authority() {
    let ca = Ca::new("test CA");
    let (port, seen) = recording_server(&ca, &["localhost", "echo.example"]).await;
    let target = format!("pass:///127.0.0.1:{port}");
    let config =
        r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""}}"#;
    let builder = Channel::builder(target)
        .tls(trusting(&ca))
        .authority("echo.example")
        .unwrap()
        .default_service_config(config)
        .unwrap();
    let mut client = EchoClient::new(channel(builder));
    let status = echo(&mut client).await.expect_err("the test server answers UNIMPLEMENTED");
    assert_eq!(status.code(), Code::Unimplemented, "UNIMPLEMENTED Watch keeps the server in use");
    let seen = seen.lock().unwrap().clone();
    let watch = seen.iter().find(|(path, ..)| path == "/grpc.health.v1.Health/Watch");
    let (_, scheme, authority) = watch.unwrap_or_else(|| panic!("a Watch must be sent: {seen:?}"));
    assert_eq!(scheme.as_deref(), Some("https"), "the Watch over TLS must carry :scheme https");
    assert_eq!(
        authority.as_deref(),
        Some("echo.example"),
        "the Watch must carry the channel's :authority, not the address dialled"
    );
}

/// A channel without TLS dialling a TLS server must say that TLS is the likely cause, not only
/// that the connection ended.
#[tokio::test]
async fn a_plaintext_channel_to_a_tls_server_fails_saying_the_server_speaks_tls() {
    let ca = Ca::new("test CA");
    let server = start(server_config(&ca.server(&["localhost"]))).await;
    let target = format!("pass:///localhost:{}", server.addr.port());
    let mut client = EchoClient::new(channel(Channel::builder(target)));
    let failures = all_fail(&mut client, 3).await;
    assert_unavailable_saying(&failures, &["TLS", "ChannelBuilder::tls"]);
}
