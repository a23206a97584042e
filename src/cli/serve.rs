//! `anchorage serve [--listen ADDR] [--name NAME] [--for SECONDS] [--allow-remote]`: runs one
//! instrumented `Echo` server over real TCP until Ctrl-C, SIGTERM or `--for` elapses.
//!
//! Output contract (stdout): the first line is exactly `listening on <bound address>`, flushed
//! at once; after a clean stop, one line with the server's stats as a JSON object. Diagnostics
//! go to stderr (`RUST_LOG` filters them).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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

    let server = InstrumentedServer::new(ServerRecorder::new(args.name));
    let stats = server.serve(listener, stop).await.map_err(|err| error_chain(&err))?;
    print_line(&stats.to_json())
}
