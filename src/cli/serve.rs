//! `anchorage serve [--listen ADDR] [--name NAME] [--for SECONDS] [--allow-remote]
//! [--register --service S [--etcd ENDPOINTS] [--ttl SECONDS] [--advertise ADDR]]`: runs one
//! instrumented `Echo` server over real TCP until Ctrl-C, SIGTERM or `--for` elapses.
//!
//! With `--register` the server announces its address (the bound address, or `--advertise`) in
//! etcd under service `S` with a lease kept alive while it serves
//! ([`anchorage::registry::etcd`]); on stop it revokes the lease first, so clients stop picking
//! it, and then drains its connections.
//!
//! Output contract (stdout): the first line is exactly `listening on <bound address>`, flushed
//! at once; with `--register`, then `registered <key> lease <id in hex> ttl <seconds>s`; after a
//! clean stop, one line with the server's stats as a JSON object. Diagnostics go to stderr
//! (`RUST_LOG` filters them).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anchorage::etcd::{DEFAULT_ENDPOINT, Endpoints, EtcdClient};
use anchorage::registry::{EtcdRegistrar, Registration};
use anchorage::server::{InstrumentedServer, ServerRecorder};

use super::common::{error_chain, init_tracing, parse_duration, print_line, stop_signal};
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
    /// Stop by itself after this long: seconds (`2`, `0.5`) or with a unit (`30s`, `500ms`, `2m`).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    run_for: Option<Duration>,
    /// Allow listening on a non-loopback address, reachable from other hosts.
    #[arg(long)]
    allow_remote: bool,
    /// Register the server in etcd while it serves (needs --service).
    #[arg(long, requires = "service")]
    register: bool,
    /// etcd endpoints for --register, comma-separated: `host:port` or `http://host:port`.
    #[arg(long, value_name = "ENDPOINTS", default_value = DEFAULT_ENDPOINT)]
    etcd: String,
    /// The service to register under (with --register).
    #[arg(long, requires = "register")]
    service: Option<String>,
    /// Lease time-to-live in seconds for --register.
    #[arg(long, value_name = "SECONDS", default_value_t = anchorage::registry::etcd::DEFAULT_TTL)]
    ttl: i64,
    /// The address to register instead of the bound one (needed when listening on 0.0.0.0).
    #[arg(long, value_name = "ADDR", requires = "register")]
    advertise: Option<String>,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("serve: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("serve: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    // Signal handlers go in before the listening line, so a signal sent as soon as the line is
    // read already stops the server gracefully.
    let stop = stop_signal(args.run_for).map_err(|err| format!("cannot watch signals: {err}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let bound = listener.local_addr().map_err(|err| format!("cannot read bound address: {err}"))?;
    print_line(&format!("listening on {bound}"))?;

    let registration = match &args.service {
        Some(service) if args.register => Some(register(&args, service, bound).await?),
        _ => None,
    };
    // On stop, leave etcd first so clients stop picking this server, then drain.
    let stop = async move {
        stop.await;
        if let Some(registration) = registration
            && let Err(err) = registration.deregister().await
        {
            eprintln!("serve: {}", error_chain(&err));
        }
    };
    let server = InstrumentedServer::new(ServerRecorder::new(args.name));
    let stats = server.serve(listener, stop).await.map_err(|err| error_chain(&err))?;
    print_line(&stats.to_json())
}

/// Registers the server's address in etcd and prints the `registered` line.
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
    let endpoints: Endpoints = args.etcd.parse().map_err(|err| error_chain(&err))?;
    let client = EtcdClient::builder().endpoints(endpoints).build().map_err(|e| error_chain(&e))?;
    let registration = EtcdRegistrar::new(client, service, &addr)
        .map_err(|err| err.to_string())?
        .ttl(args.ttl)
        .register()
        .await
        .map_err(|err| error_chain(&err))?;
    let lease = registration.lease().unwrap_or_default();
    let key = registration.key();
    print_line(&format!("registered {key} lease {lease:#x} ttl {}s", registration.granted_ttl()))?;
    Ok(registration)
}
