//! `anchorage bench [--callers 8,64] [--duration 4s] [--rounds 5] [--json]`: anchorage against
//! tonic on loopback, in one run.
//!
//! A plain tonic Echo server runs in a separate process on this machine
//! ([`super::bench_server`]). Six clients ("variants") send unary Echo RPCs to it from closed
//! loops of `--callers` tokio tasks on this process's multi-thread runtime:
//!
//! | variant | connections | baseline |
//! |---|---|---|
//! | `tonic-1`: one tonic `Channel` | 1 | itself |
//! | `anchorage-pf-1`: `pass:///127.0.0.1:PORT`, pick_first | 1 | `tonic-1` |
//! | `tonic-p2c-4`: `Channel::balance_channel`, 4 keys, one endpoint | 4 | itself |
//! | `tonic-pool-4`: 4 tonic `Channel`s taken in turn | 4 | `tonic-p2c-4` |
//! | `anchorage-rr-4`: `pass:///127.0.0.1:PORT#4`, round_robin | 4 | `tonic-p2c-4` |
//! | `anchorage-rr-64`: `#64`, round_robin | 64 | `tonic-p2c-4` |
//!
//! Rounds interleave the variants: round `r` runs each once, starting from the `r`-th, so no
//! variant always goes first. Every run builds its client afresh, warms its connections up
//! (all of them accepted by the server and, for anchorage, READY) and then times `--duration`.
//! Per variant the report gives the median QPS over rounds, p50/p99 latency over all rounds'
//! samples, the connections the server accepted during a run, errors, and the ratio of its
//! median QPS to its baseline's. The 1-minute load average at start and end lets a reader judge
//! the noise. Then memory per idle READY connection ([`super::bench_memory`]) unless
//! `--no-memory`.
//!
//! Exit status: 0 when every RPC succeeded and every measurement was made; 1 otherwise (the
//! report is still printed, variants with errors marked `!`); 2 for bad flags.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::bench_client::{self, Client};
use super::bench_memory::{self, MemoryReport};
use super::bench_server::{ServerProcess, accepted};
use super::bench_stats::{Histogram, median};

/// Deadline of each timed RPC: a stuck RPC counts as an error instead of stalling the run.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The most callers per run, and the most caller counts per bench.
const MAX_CALLERS: usize = 4_096;
const MAX_CALLER_COUNTS: usize = 16;
/// The note printed with the table and kept in the JSON.
const P2C_NOTE: &str = "tonic-p2c-4 feeds Channel::balance_channel 4 distinct keys for one \
    endpoint: Channel::balance_list keys endpoints by URI and collapses them into one connection";

/// Arguments of `anchorage bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Concurrent callers, as a comma-separated list of counts (1 to 4096 each); every variant
    /// runs once per count.
    #[arg(long, default_value = "8,64", value_name = "LIST", value_parser = parse_callers)]
    callers: Callers,
    /// How long each variant is timed per round: seconds (`4`, `0.5`) or with a unit (`4s`,
    /// `500ms`, `1m`); from 1ms to 1 day.
    #[arg(long, default_value = "4s", value_parser = super::common::parse_bounded_duration)]
    duration: Duration,
    /// Rounds; each runs every variant once, in an order rotated per round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// Idle READY connections per stack for the memory measurement.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1024))]
    memory_connections: u64,
    /// Skip the memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The caller counts of `--callers`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Callers(Vec<usize>);

fn parse_callers(text: &str) -> Result<Callers, String> {
    let counts = text
        .split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CALLERS).contains(&n) => Ok(n),
            _ => Err(format!("{item:?} is not a caller count (1 to {MAX_CALLERS})")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if counts.len() > MAX_CALLER_COUNTS {
        return Err(format!("at most {MAX_CALLER_COUNTS} caller counts, got {}", counts.len()));
    }
    Ok(Callers(counts))
}

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Tonic1,
    AnchoragePf1,
    TonicP2c4,
    TonicPool4,
    AnchorageRr4,
    AnchorageRr64,
}

const VARIANTS: [Variant; 6] = [
    Variant::Tonic1,
    Variant::AnchoragePf1,
    Variant::TonicP2c4,
    Variant::TonicPool4,
    Variant::AnchorageRr4,
    Variant::AnchorageRr64,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Tonic1 => "tonic-1",
            Variant::AnchoragePf1 => "anchorage-pf-1",
            Variant::TonicP2c4 => "tonic-p2c-4",
            Variant::TonicPool4 => "tonic-pool-4",
            Variant::AnchorageRr4 => "anchorage-rr-4",
            Variant::AnchorageRr64 => "anchorage-rr-64",
        }
    }

    /// tonic's `Channel` for one connection, its p2c balancer for several.
    fn baseline(self) -> Variant {
        if self.connections() == 1 { Variant::Tonic1 } else { Variant::TonicP2c4 }
    }

    fn connections(self) -> usize {
        match self {
            Variant::Tonic1 | Variant::AnchoragePf1 => 1,
            Variant::TonicP2c4 | Variant::TonicPool4 | Variant::AnchorageRr4 => 4,
            Variant::AnchorageRr64 => 64,
        }
    }

    /// Builds the client and brings all its connections up.
    async fn connect(self, port: u16, counter_port: u16) -> Result<Client, String> {
        let base = accepted(counter_port).await?;
        let n = self.connections();
        let (mut client, ready) = match self {
            Variant::Tonic1 => (bench_client::tonic_single(port).await?, None),
            Variant::TonicP2c4 => (bench_client::tonic_balanced(port, n).await?, None),
            Variant::TonicPool4 => (bench_client::tonic_pool(port, n).await?, None),
            Variant::AnchoragePf1 | Variant::AnchorageRr4 | Variant::AnchorageRr64 => {
                let round_robin = self != Variant::AnchoragePf1;
                let (client, ready) = bench_client::anchorage(port, n, round_robin)?;
                (client, Some(ready))
            }
        };
        let limit = Duration::from_secs(10);
        bench_client::warm_up(&mut client, counter_port, base, n as u64, ready, limit).await?;
        Ok(client)
    }
}

/// What one timed run of one variant measured.
#[derive(Debug, Default)]
struct Run {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Histogram,
}

/// One variant at one caller count, over all rounds.
#[derive(Debug, Serialize)]
struct VariantReport {
    name: &'static str,
    callers: usize,
    baseline: &'static str,
    qps_median: f64,
    ratio: f64,
    p50_us: f64,
    p99_us: f64,
    server_connections: u64,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    qps_rounds: Vec<f64>,
}

/// Everything `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    loadavg: [Option<f64>; 2],
    server: &'static str,
    /// The allocator of this process and its children: `mimalloc` (feature `mimalloc`, the
    /// default) or `system`. It shapes the memory figures.
    allocator: &'static str,
    callers: Vec<usize>,
    duration_s: f64,
    rounds: u64,
    variants: Vec<VariantReport>,
    memory: Option<MemoryReport>,
    note: &'static str,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let load_start = load_average();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match ServerProcess::spawn() {
        Ok(server) => server,
        Err(message) => {
            eprintln!("bench: {message}");
            return ExitCode::FAILURE;
        }
    };
    let variants = runtime.block_on(throughput(&args, &server));
    let memory = (!args.no_memory).then(|| {
        bench_memory::measure(&runtime, server.port, server.counter_port, args.memory_connections)
    });
    drop(server);
    let report = Report {
        loadavg: [load_start, load_average()],
        server: "separate process",
        allocator: ALLOCATOR,
        callers: args.callers.0.clone(),
        duration_s: args.duration.as_secs_f64(),
        rounds: args.rounds,
        variants,
        memory,
        note: P2C_NOTE,
    };
    let printed = if args.json {
        serde_json::to_string(&report)
            .map_err(|e| e.to_string())
            .and_then(|line| super::common::print_line(&line))
    } else {
        super::common::print_line(&table(&report))
    };
    if let Err(message) = printed {
        eprintln!("bench: {message}");
        return ExitCode::FAILURE;
    }
    let failed = report.variants.iter().any(|v| v.errors > 0)
        || report.memory.as_ref().is_some_and(MemoryReport::failed);
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Runs every variant at every caller count, round by round, and summarises.
async fn throughput(args: &Args, server: &ServerProcess) -> Vec<VariantReport> {
    let mut reports = Vec::new();
    for &callers in &args.callers.0 {
        let mut runs: Vec<Vec<(Run, u64)>> = VARIANTS.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds as usize {
            for offset in 0..VARIANTS.len() {
                let index = (round + offset) % VARIANTS.len();
                let run = run_once(VARIANTS[index], server, callers, args.duration).await;
                runs[index].push(run);
            }
        }
        let mut group: Vec<VariantReport> =
            VARIANTS.iter().zip(runs).map(|(v, runs)| summarise(*v, callers, runs)).collect();
        for index in 0..group.len() {
            let baseline = VARIANTS[index].baseline();
            let base = VARIANTS.iter().position(|v| *v == baseline).map(|b| group[b].qps_median);
            let base = base.unwrap_or_default();
            group[index].ratio = if base > 0.0 { group[index].qps_median / base } else { 0.0 };
        }
        reports.extend(group);
    }
    reports
}

/// One timed run: build and warm the variant, time `duration`, and count the server's
/// connections from before the build to after the run.
async fn run_once(
    variant: Variant,
    server: &ServerProcess,
    callers: usize,
    duration: Duration,
) -> (Run, u64) {
    let failed = |error: String| Run { errors: 1, first_error: Some(error), ..Run::default() };
    let base = match accepted(server.counter_port).await {
        Ok(base) => base,
        Err(error) => return (failed(error), 0),
    };
    let run = match variant.connect(server.port, server.counter_port).await {
        Ok(client) => drive(client, callers, duration).await,
        Err(error) => failed(error),
    };
    let seen = accepted(server.counter_port).await.map_or(0, |n| n.saturating_sub(base));
    // Let the server close the dropped client's connections before the next run starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (run, seen)
}

/// `callers` tasks send RPCs back to back until `duration` has passed.
async fn drive(client: Client, callers: usize, duration: Duration) -> Run {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let outcome = tokio::time::timeout(RPC_TIMEOUT, client.echo()).await;
                    match outcome {
                        Ok(Ok(())) => {
                            run.latencies.record(sent.elapsed());
                            run.ok += 1;
                        }
                        Ok(Err(status)) => {
                            run.error(format!("{:?}: {}", status.code(), status.message()))
                        }
                        Err(_) => run.error(format!("no answer within {RPC_TIMEOUT:?}")),
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for task in tasks {
        match task.await {
            Ok(run) => total.absorb(run),
            Err(e) => total.error(format!("a caller task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total
}

impl Run {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    fn absorb(&mut self, other: Run) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.merge(&other.latencies);
    }

    fn qps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ok as f64 / secs } else { 0.0 }
    }
}

fn summarise(variant: Variant, callers: usize, runs: Vec<(Run, u64)>) -> VariantReport {
    let qps_rounds: Vec<f64> = runs.iter().map(|(run, _)| run.qps()).collect();
    let server_connections = runs.iter().map(|(_, seen)| *seen).max().unwrap_or(0);
    let mut all = Run::default();
    for (run, _) in runs {
        all.absorb(run);
    }
    VariantReport {
        name: variant.name(),
        callers,
        baseline: variant.baseline().name(),
        qps_median: median(&qps_rounds),
        ratio: 0.0,
        p50_us: all.latencies.quantile_us(0.5),
        p99_us: all.latencies.quantile_us(0.99),
        server_connections,
        errors: all.errors,
        first_error: all.first_error,
        qps_rounds,
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The allocator this binary was built with.
const ALLOCATOR: &str = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" };

/// The human-readable report.
fn table(report: &Report) -> String {
    let load = |l: Option<f64>| l.map_or_else(|| "unknown".to_owned(), |l| format!("{l:.2}"));
    let mut lines = vec![
        "server: plain tonic Echo server, a separate process on this machine (multi-thread \
         runtime), loopback"
            .to_owned(),
        format!("allocator: {} (client, server and memory children)", report.allocator),
        format!(
            "{} round(s) x {:.3}s per variant, interleaved; load average (1 min) at start {}, at end {}",
            report.rounds,
            report.duration_s,
            load(report.loadavg[0]),
            load(report.loadavg[1])
        ),
        String::new(),
        format!(
            "{:>7}  {:<16} {:<12} {:>11} {:>6} {:>9} {:>9} {:>5} {:>6}",
            "callers",
            "variant",
            "baseline",
            "qps median",
            "ratio",
            "p50 us",
            "p99 us",
            "conns",
            "errors"
        ),
    ];
    for v in &report.variants {
        let mark = if v.errors > 0 { "!" } else { "" };
        lines.push(format!(
            "{:>7}  {:<16} {:<12} {:>11.0} {:>6.3} {:>9.1} {:>9.1} {:>5} {:>6}",
            v.callers,
            format!("{}{mark}", v.name),
            v.baseline,
            v.qps_median,
            v.ratio,
            v.p50_us,
            v.p99_us,
            v.server_connections,
            v.errors
        ));
    }
    for v in report.variants.iter().filter(|v| v.errors > 0) {
        let first = v.first_error.as_deref().unwrap_or("");
        lines.push(format!(
            "! {} at {} callers: {} errors, first: {first}",
            v.name, v.callers, v.errors
        ));
    }
    lines.push(format!("note: {}", report.note));
    if let Some(memory) = &report.memory {
        lines.push(String::new());
        lines.push(format!(
            "memory: RSS per idle READY connection, {} connections, each stack in its own process",
            memory.connections
        ));
        for stack in [&memory.anchorage, &memory.tonic] {
            lines.push(match (&stack.error, stack.kib_per_connection) {
                (None, Some(kib)) => format!(
                    "  {:<48} {kib:>6.1} KiB per connection, {:.1} KiB anonymous (RSS {} -> {} \
                     KiB, server saw {})",
                    stack.what,
                    stack.anon_kib_per_connection.unwrap_or_default(),
                    stack.before_kib,
                    stack.after_kib,
                    stack.server_connections
                ),
                (error, _) => format!("  ! {}", error.as_deref().unwrap_or("no measurement")),
            });
        }
        let list = &memory.tonic_balance_list_same_uri;
        lines.push(match &list.error {
            None => format!(
                "  tonic balance_list, the same URI {} times: {} connection(s) open at the server \
                 ({} accepted: each listing replaces the last)",
                list.endpoints, list.server_connections, list.server_connections_accepted
            ),
            Some(error) => {
                format!("  ! tonic balance_list, the same URI {} times: {error}", list.endpoints)
            }
        });
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_lists_take_counts_from_one_to_the_limit() {
        assert_eq!(parse_callers("8,64"), Ok(Callers(vec![8, 64])));
        assert_eq!(parse_callers("1"), Ok(Callers(vec![1])));
        for bad in ["", "0", "8,", "x", "-1", "4097", "8;64"] {
            assert!(parse_callers(bad).is_err(), "--callers {bad:?} must be rejected");
        }
    }

    #[test]
    fn each_variant_is_compared_with_tonic_at_its_own_connection_count() {
        for variant in VARIANTS {
            let baseline = variant.baseline();
            let expected = if variant.connections() == 1 { "tonic-1" } else { "tonic-p2c-4" };
            assert_eq!(baseline.name(), expected, "{}'s baseline", variant.name());
        }
    }
}
