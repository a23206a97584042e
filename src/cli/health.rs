//! `anchorage health ADDR [--set SERVING|NOT_SERVING] [--service NAME]`: reads, or changes, the
//! health status a running instrumented server reports (`grpc.health.v1.Health`), so a user
//! can watch clients with `healthCheckConfig` move their traffic.
//!
//! `ADDR` is `host:port` or `http://host:port`. `--service` names the service (default: the
//! empty name, the whole server, which is what `"healthCheckConfig": {"serviceName": ""}`
//! watches).
//!
//! Output contract (stdout), one line: with `--set`, `<addr> service "<name>": <NEW> (was
//! <PREVIOUS>)` after the server's admin RPC took the change; without it, `<addr> service
//! "<name>": <STATUS>` from `Health/Check`. Exit status 0 on success, 1 when the server cannot
//! be reached or refuses (the reason on stderr), 2 for bad arguments.

use std::process::ExitCode;

use anchorage::health_pb::health_check_response::ServingStatus;
use anchorage::health_pb::health_client::HealthClient;
use anchorage::health_pb::{HealthCheckRequest, HealthCheckResponse};
use anchorage::pb::SetHealthRequest;
use anchorage::pb::admin_client::AdminClient;
use anchorage::server::parse_serving_status;

use super::common::{init_tracing, print_line};

/// Arguments of `anchorage health`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server: `host:port` or `http://host:port`.
    addr: String,
    /// Change the status to this: SERVING or NOT_SERVING (UNKNOWN and SERVICE_UNKNOWN too).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    set: Option<ServingStatus>,
    /// The service whose status to read or change; empty for the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

fn parse_status(text: &str) -> Result<ServingStatus, String> {
    parse_serving_status(text).map_err(|err| err.to_string())
}

pub(crate) fn run(args: Args) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("health: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(health(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("health: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn health(args: Args) -> Result<(), String> {
    let url =
        if args.addr.contains("://") { args.addr.clone() } else { format!("http://{}", args.addr) };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|err| format!("{:?} is not a server address: {err}", args.addr))?;
    let channel =
        endpoint.connect().await.map_err(|err| format!("cannot connect to {url}: {err}"))?;
    let service = &args.service;
    let line = match args.set {
        Some(status) => {
            let request = SetHealthRequest { service: service.clone(), status: status.into() };
            let reply = AdminClient::new(channel)
                .set_health(request)
                .await
                .map_err(|status| format!("SetHealth on {url}: {}", status.message()))?
                .into_inner();
            let previous = name(reply.previous);
            format!("{} service {service:?}: {} (was {previous})", args.addr, status.as_str_name())
        }
        None => {
            let request = HealthCheckRequest { service: service.clone() };
            let HealthCheckResponse { status } = HealthClient::new(channel)
                .check(request)
                .await
                .map_err(|status| format!("Check on {url}: {}", status.message()))?
                .into_inner();
            format!("{} service {service:?}: {}", args.addr, name(status))
        }
    };
    print_line(&line)
}

/// A status number's name, or the number when it is not one.
fn name(status: i32) -> String {
    ServingStatus::try_from(status)
        .map_or_else(|_| format!("status {status}"), |s| s.as_str_name().to_owned())
}
