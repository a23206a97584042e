//! `anchorage register --etcd ENDPOINTS [--etcd-ca FILE] --service S --addr A [--ttl SECONDS]
//! [--metadata JSON]`:
//! announces `A` under service `S` in etcd, as etcd's Go `naming/endpoints` package does, keeps
//! the lease alive until Ctrl-C or SIGTERM, then revokes it so the key disappears at once.
//!
//! Output contract (stdout): `registered <key> lease <id in hex> ttl <granted seconds>s` once
//! the key is written, then `deregistered <key>` after the lease is revoked. Diagnostics (lost
//! leases, re-registrations) go to stderr (`RUST_LOG` filters them). Exit status 2 for bad
//! arguments, 1 when etcd cannot be reached at the start or at the end.

use std::process::ExitCode;

use anchorage::etcd::{DEFAULT_ENDPOINT, Endpoints};
use anchorage::registry::{EtcdRegistrar, RegistryError};

use super::common::{EtcdTlsArgs, error_chain, init_tracing, print_line, stop_signal};

/// Arguments of `anchorage register`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// etcd endpoints, comma-separated: `host:port`, `http://host:port` or `https://host:port`
    /// (TLS).
    #[arg(long, value_name = "ENDPOINTS", default_value = DEFAULT_ENDPOINT)]
    etcd: String,
    #[command(flatten)]
    etcd_tls: EtcdTlsArgs,
    /// The service to register under; `etcd:///<SERVICE>` targets discover the address.
    #[arg(long)]
    service: String,
    /// The address clients should connect to, `host:port`.
    #[arg(long)]
    addr: String,
    /// Lease time-to-live in seconds: how long the key outlives this process if it dies; 1 to
    /// 86400 (one day).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = anchorage::registry::etcd::DEFAULT_TTL,
        value_parser = clap::value_parser!(i64).range(1..=86_400)
    )]
    ttl: i64,
    /// JSON written as the value's `Metadata` (default `null`).
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
}

/// Why `register` stopped early.
enum Failure {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// etcd or the system failed: exit status 1.
    Failed(String),
}

pub(crate) fn run(args: Args) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("register: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(register(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("register: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("register: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn register(args: Args) -> Result<(), Failure> {
    let endpoints: Endpoints = args.etcd.parse().map_err(|e| Failure::Usage(error_chain(&e)))?;
    let metadata = match args.metadata.as_deref().map(serde_json::from_str).transpose() {
        Ok(metadata) => metadata.unwrap_or_default(),
        Err(err) => return Err(Failure::Usage(format!("--metadata is not JSON: {err}"))),
    };
    let failed = |err: &dyn std::error::Error| Failure::Failed(error_chain(err));
    let stop = stop_signal(None).map_err(|err| failed(&err))?;
    let client = args.etcd_tls.client_builder(endpoints).map_err(Failure::Usage)?;
    let client = client.build().map_err(|e| failed(&e))?;
    let registrar = EtcdRegistrar::new(client, &args.service, &args.addr)
        .map_err(|err| Failure::Usage(err.to_string()))?
        .ttl(args.ttl)
        .metadata(metadata);
    let registration = registrar.register().await.map_err(|err| match err {
        RegistryError::InvalidTtl { .. } => Failure::Usage(err.to_string()),
        err => failed(&err),
    })?;
    let key = registration.key().to_owned();
    let lease = registration.lease().unwrap_or_default();
    let line = format!("registered {key} lease {lease:#x} ttl {}s", registration.granted_ttl());
    print_line(&line).map_err(Failure::Failed)?;
    stop.await;
    registration.deregister().await.map_err(|err| failed(&err))?;
    print_line(&format!("deregistered {key}")).map_err(Failure::Failed)
}
