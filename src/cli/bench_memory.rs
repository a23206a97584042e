//! Memory per idle READY connection, for `anchorage bench`: each stack is measured in its own
//! child process (the hidden `bench-memory` subcommand), so that what the allocator keeps from
//! one measurement cannot bias the other. The child reads its resident set size (VmRSS) after
//! building its runtime and before the channel, then again once every connection is up and has
//! been idle for a second.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bench_client::{self, Client};
use super::bench_server::{accepted, counts};

/// How long the connections stay idle before the second reading.
const IDLE: Duration = Duration::from_secs(1);

/// Which stack a `bench-memory` child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Stack {
    /// anchorage, `pass:///127.0.0.1:PORT#N` with round_robin.
    Anchorage,
    /// tonic's p2c balancer (`balance_channel`) over N keys, all the same endpoint.
    Tonic,
}

/// Arguments of the hidden `anchorage bench-memory`.
#[derive(Debug, clap::Args)]
pub(crate) struct MemoryArgs {
    #[arg(long, value_enum)]
    stack: Stack,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    counter_port: u16,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
}

/// One stack's measurement; a child prints it as one JSON line.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StackMemory {
    /// What was measured.
    pub(crate) what: String,
    pub(crate) before_kib: u64,
    pub(crate) after_kib: u64,
    /// Connections the server accepted while the channel was built and warmed up.
    pub(crate) server_connections: u64,
    /// (after - before) / requested connections; absent when the measurement failed.
    pub(crate) kib_per_connection: Option<f64>,
    /// The same for `RssAnon`, the anonymous part of the RSS: without the code pages of the
    /// binary that the first connection brings in, which weigh heavily at few connections.
    pub(crate) anon_kib_per_connection: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The memory section of the report.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryReport {
    pub(crate) connections: u64,
    pub(crate) anchorage: StackMemory,
    pub(crate) tonic: StackMemory,
    pub(crate) tonic_balance_list_same_uri: ListCollapse,
}

/// What tonic's `balance_list` does with one URI listed many times.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ListCollapse {
    pub(crate) endpoints: u64,
    /// Connections the server accepted: each listing of the URI replaces the previous one, and
    /// a replaced connection attempt may already have reached the server.
    pub(crate) server_connections_accepted: u64,
    /// Connections still open once RPCs have gone through: what the channel kept.
    pub(crate) server_connections: u64,
    /// Why the measurement failed, if it did (the counts are then 0 and mean nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl MemoryReport {
    /// Whether any part of the measurement failed.
    pub(crate) fn failed(&self) -> bool {
        self.anchorage.error.is_some()
            || self.tonic.error.is_some()
            || self.tonic_balance_list_same_uri.error.is_some()
    }
}

/// The child: measures one stack and prints a [`StackMemory`] line.
pub(crate) fn run_child(args: MemoryArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench-memory: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure_here(&args)) {
        Ok(measured) => match serde_json::to_string(&measured) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench-memory: {e}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("bench-memory: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn measure_here(args: &MemoryArgs) -> Result<StackMemory, String> {
    let (before_kib, before_anon_kib) = rss_kib()?;
    let base = accepted(args.counter_port).await?;
    let n = usize::try_from(args.connections).map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(10) + Duration::from_millis(20) * u32::try_from(n).unwrap_or(0);
    let (mut client, ready, what) = match args.stack {
        Stack::Anchorage => {
            let (client, ready) = bench_client::anchorage(args.port, n, true)?;
            (client, Some(ready), format!("anchorage pass:///127.0.0.1:PORT#{n} round_robin"))
        }
        Stack::Tonic => {
            let client = bench_client::tonic_balanced(args.port, n).await?;
            (client, None, format!("tonic balance_channel, {n} keys, one endpoint"))
        }
    };
    bench_client::warm_up(&mut client, args.counter_port, base, args.connections, ready, limit)
        .await?;
    tokio::time::sleep(IDLE).await;
    let (after_kib, after_anon_kib) = rss_kib()?;
    let server_connections = accepted(args.counter_port).await?.saturating_sub(base);
    drop(client);
    let per_connection =
        |before: u64, after: u64| Some((after as f64 - before as f64) / args.connections as f64);
    Ok(StackMemory {
        what,
        before_kib,
        after_kib,
        server_connections,
        kib_per_connection: per_connection(before_kib, after_kib),
        anon_kib_per_connection: per_connection(before_anon_kib, after_anon_kib),
        error: None,
    })
}

/// This process's resident set size (`VmRSS`) and its anonymous part (`RssAnon`: heap and
/// stacks, without the binary's code that running a connection pages in), in KiB, from
/// `/proc/self/status`.
fn rss_kib() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("memory: cannot read /proc/self/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("memory: /proc/self/status has no {name} line"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// The parent: runs one child per stack, one after the other, then shows tonic's
/// `balance_list` over the same URI `connections` times.
pub(crate) fn measure(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    counter_port: u16,
    connections: u64,
) -> MemoryReport {
    let child = |stack: Stack| measure_in_child(stack, port, counter_port, connections);
    let anchorage = child(Stack::Anchorage);
    let tonic = child(Stack::Tonic);
    let list = runtime.block_on(list_same_uri(port, counter_port, connections));
    let list = list.unwrap_or_else(|error| ListCollapse {
        endpoints: connections,
        error: Some(error),
        ..ListCollapse::default()
    });
    MemoryReport { connections, anchorage, tonic, tonic_balance_list_same_uri: list }
}

fn measure_in_child(stack: Stack, port: u16, counter_port: u16, connections: u64) -> StackMemory {
    let failed = |error: String| StackMemory { error: Some(error), ..StackMemory::default() };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("memory: no path to myself: {e}")),
    };
    let stack_name = match stack {
        Stack::Anchorage => "anchorage",
        Stack::Tonic => "tonic",
    };
    let output = Command::new(exe)
        .args(["bench-memory", "--stack", stack_name])
        .args(["--port", &port.to_string(), "--counter-port", &counter_port.to_string()])
        .args(["--connections", &connections.to_string()])
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => return failed(format!("memory: cannot start the {stack_name} child: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return failed(format!("memory ({stack_name}): {}", stderr.trim()));
    }
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| failed(format!("memory ({stack_name}): unreadable result: {e}")))
}

/// Connections the server accepts, and keeps open, for `balance_list` given the same URI
/// `times` times, after `times` RPCs and a short pause.
async fn list_same_uri(port: u16, counter_port: u16, times: u64) -> Result<ListCollapse, String> {
    // Let the server close what the children left open (bounded: 5 s).
    let mut before = counts(counter_port).await?;
    for _ in 0..50 {
        if before.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = counts(counter_port).await?;
    }
    let (accepted_before, open_before) = before;
    let mut client: Client = bench_client::tonic_list_same_uri(port, times as usize)?;
    for _ in 0..times {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.echo()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (accepted, open) = counts(counter_port).await?;
    Ok(ListCollapse {
        endpoints: times,
        server_connections_accepted: accepted.saturating_sub(accepted_before),
        server_connections: open.saturating_sub(open_before),
        error: None,
    })
}
