//! `anchorage serve [--listen ADDR] [--name NAME] [--for DURATION] [--allow-remote]
//! [--max-connection-age AGE [--max-connection-age-grace GRACE]] [--health STATUS]
//! [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
//! [--register --service S [--etcd ENDPOINTS] [--etcd-ca FILE] [--ttl SECONDS] [--advertise ADDR]]`:
//! runs one instrumented `Echo` server over real TCP until Ctrl-C, SIGTERM or `--for` elapses.
//!
//! With `--register` the server announces its address (the bound address, or `--advertise`) in
//! etcd under service `S` with a lease kept alive while it serves
//! ([`anchorage::registry::etcd`]); on stop it revokes the lease first, so clients stop picking
//! it, and then drains its connections.
//!
//! Output contract (stdout): the first line is exactly `listening on <bound address>`, flushed
//! at once; with `--register`, then `registered <key> lease <id in hex> ttl <seconds>s`; after a
//! clean stop, one line with the server's stats as a JSON object. Diagnostics go to stderr
//! (`RUST_LOG` filters them). With `--register` the key is written before the `listening` line,
//! so when etcd cannot be reached nothing is printed on stdout, the reason goes to stderr and the
//! exit status is 1.
//!
//! With `--tls-cert FILE --tls-key FILE` the server speaks TLS (rustls); `--client-ca FILE`
//! then requires each client to present a certificate that CA signed (mTLS). Each connection's
//! TLS handshake runs on its own task and must finish within `--handshake-timeout`; the counts
//! of completed and failed handshakes are logged at stop. An unreadable or invalid TLS file
//! exits with status 2 before anything is printed on stdout.
//!
//! With `--max-connection-age AGE` each connection is sent GOAWAY once it is AGE old (±10 %
//! jitter, as grpc-go does), so clients reconnect and re-resolve; streams in flight then have
//! `--max-connection-age-grace` (default: as long as they take) before the connection closes.
//!
//! Connections that stay silent are closed: no HTTP/2 preface within `--handshake-timeout`
//! (default 10 s), or no request within `--idle-timeout` (default 120 s) of the accept. Every
//! duration flag takes 1ms to 1 day, `--ttl` 1 to 86400 seconds; anything else exits with
//! status 2 and an error naming the flag.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anchorage::etcd::{DEFAULT_ENDPOINT, Endpoints};
use anchorage::health_pb::health_check_response::ServingStatus;
use anchorage::registry::{EtcdRegistrar, Registration};
use anchorage::server::{HealthStatus, InstrumentedServer, ServerRecorder, TlsListener};
use anchorage::tls::ServerTlsConfig;

use super::common::{
    EtcdTlsArgs, TlsServerArgs, error_chain, init_tracing, parse_bounded_duration, print_line,
    stop_signal,
};
use tokio::net::TcpListener;

/// Arguments of `anchorage serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The server's name, echoed in every response.
    #[arg(long, default_value = "server")]
    name: String,
    /// Stop by itself after this long: seconds (`2`, `0.5`) or with a unit (`30s`, `500ms`, `2m`);
    /// from 1ms to 1 day.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_bounded_duration)]
    run_for: Option<Duration>,
    /// Close a connection that has not sent the HTTP/2 preface this long after it was accepted;
    /// from 1ms to 1 day.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_bounded_duration)]
    handshake_timeout: Duration,
    /// Close a connection that has not sent a request this long after it was accepted; from 1ms
    /// to 1 day.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_bounded_duration)]
    idle_timeout: Duration,
    /// Send each connection GOAWAY once it is this old, ±10 % (grpc-go's MaxConnectionAge), so
    /// clients reconnect and re-resolve; from 1ms to 1 day.
    #[arg(long, value_name = "DURATION", value_parser = parse_bounded_duration)]
    max_connection_age: Option<Duration>,
    /// After a max-age GOAWAY, close the connection this long later even if streams are still
    /// open (grpc-go's MaxConnectionAgeGrace); from 1ms to 1 day. Default: wait for them.
    #[arg(long, value_name = "DURATION", requires = "max_connection_age", value_parser = parse_bounded_duration)]
    max_connection_age_grace: Option<Duration>,
    /// Allow listening on a non-loopback address, reachable from other hosts.
    #[arg(long)]
    allow_remote: bool,
    #[command(flatten)]
    tls: TlsServerArgs,
    /// Register the server in etcd while it serves (needs --service).
    #[arg(long, requires = "service")]
    register: bool,
    /// etcd endpoints for --register, comma-separated: `host:port`, `http://host:port` or
    /// `https://host:port` (TLS).
    #[arg(long, value_name = "ENDPOINTS", default_value = DEFAULT_ENDPOINT)]
    etcd: String,
    #[command(flatten)]
    etcd_tls: EtcdTlsArgs,
    /// The service to register under (with --register).
    #[arg(long, requires = "register")]
    service: Option<String>,
    /// Lease time-to-live in seconds for --register: 1 to 86400 (one day).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = anchorage::registry::etcd::DEFAULT_TTL,
        value_parser = clap::value_parser!(i64).range(1..=86_400)
    )]
    ttl: i64,
    /// The address to register instead of the bound one (needed when listening on 0.0.0.0).
    #[arg(long, value_name = "ADDR", requires = "register")]
    advertise: Option<String>,
    /// The initial grpc.health.v1 status of the server and its Echo service: SERVING or
    /// NOT_SERVING; `anchorage health ADDR --set` changes it while the server runs.
    #[arg(long, value_name = "STATUS", default_value = "SERVING", value_parser = parse_health)]
    health: ServingStatus,
}

fn parse_health(text: &str) -> Result<ServingStatus, String> {
    anchorage::server::parse_serving_status(text).map_err(|err| err.to_string())
}

pub(crate) fn run(args: Args) -> ExitCode {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        eprintln!(
            "serve: refusing to listen on {}: not a loopback address; \
             pass --allow-remote to accept connections from other hosts",
            args.listen
        );
        return ExitCode::from(2);
    }
    init_tracing();
    let tls = match args.tls.config() {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("serve: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("serve: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("serve: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, tls: Option<ServerTlsConfig>) -> Result<(), String> {
    // Signal handlers go in before the listening line, so a signal sent as soon as the line is
    // read already stops the server gracefully.
    let stop = stop_signal(args.run_for).map_err(|err| format!("cannot watch signals: {err}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let bound = listener.local_addr().map_err(|err| format!("cannot read bound address: {err}"))?;
    // Register before announcing: a server whose registration fails never says it is listening.
    let registration = match &args.service {
        Some(service) if args.register => Some(register(&args, service, bound).await?),
        _ => None,
    };
    print_line(&format!("listening on {bound}"))?;
    if let Some(registration) = &registration {
        let lease = registration.lease().unwrap_or_default();
        let key = registration.key();
        let ttl = registration.granted_ttl();
        print_line(&format!("registered {key} lease {lease:#x} ttl {ttl}s"))?;
    }
    // On stop, leave etcd first so clients stop picking this server, then drain.
    let stop = async move {
        stop.await;
        if let Some(registration) = registration
            && let Err(err) = registration.deregister().await
        {
            eprintln!("serve: {}", error_chain(&err));
        }
    };
    let server = InstrumentedServer::new(ServerRecorder::new(args.name))
        .handshake_timeout(Some(args.handshake_timeout))
        .idle_timeout(Some(args.idle_timeout))
        .max_connection_age(args.max_connection_age, args.max_connection_age_grace)
        .health(HealthStatus::new(args.health));
    let stats = match tls {
        None => server.serve(listener, stop).await,
        Some(tls) => {
            let listener = TlsListener::new(listener, &tls)
                .map_err(|err| format!("--tls-cert: {err}"))?
                .handshake_timeout(Some(args.handshake_timeout));
            let handshakes = listener.handshakes();
            let stats = server.serve(listener, stop).await;
            tracing::info!(
                completed = handshakes.completed(),
                failed = handshakes.failed(),
                "TLS handshakes"
            );
            stats
        }
    };
    print_line(&stats.to_json())
}

/// Registers the server's address in etcd.
///
/// # Errors
/// A message that starts with `--register:` and says why etcd did not take the registration.
async fn register(args: &Args, service: &str, bound: SocketAddr) -> Result<Registration, String> {
    let addr = match &args.advertise {
        Some(addr) => addr.clone(),
        None if bound.ip().is_unspecified() => {
            return Err(format!(
                "--register: {bound} is not an address clients can dial; pass --advertise"
            ));
        }
        None => bound.to_string(),
    };
    let failed = |err: &dyn std::error::Error| format!("--register: {}", error_chain(err));
    let endpoints: Endpoints = args.etcd.parse().map_err(|err| failed(&err))?;
    let client = args.etcd_tls.client_builder(endpoints).map_err(|e| format!("--register: {e}"))?;
    let client = client.build().map_err(|e| failed(&e))?;
    EtcdRegistrar::new(client, service, &addr)
        .map_err(|err| failed(&err))?
        .ttl(args.ttl)
        .register()
        .await
        .map_err(|err| failed(&err))
}
