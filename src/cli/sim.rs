//! `anchorage sim [SCENARIO...] [--seed S | --seeds A..B] [--trace] [--json]`: runs simulation
//! scenarios and prints one report per run, the replay command of every failing run, and the
//! determinism self-check.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anchorage::audit::subjects;
use anchorage::sim::{self, RunOptions, RunReport, scenario::Scenario};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seeds run per scenario when neither `--seed` nor `--seeds` is given.
const DEFAULT_SEEDS: Range<u64> = 0..8;

/// Arguments of `anchorage sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scenario files to run; all of `sims/*.toml` when none are given.
    scenarios: Vec<PathBuf>,
    /// Run exactly this seed (replays a failing run; regression seeds are not added).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds A..B (B excluded) after each scenario's regression seeds.
    /// Default: 0..8, so 8 seeds per scenario plus its regression seeds, which run first.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Print each run's event trace after its report.
    #[arg(long)]
    trace: bool,
    /// Print one JSON object per run (and one for the determinism check) instead of tables.
    #[arg(long)]
    json: bool,
    /// Simulations run in parallel. Default: the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run the scenarios with this shipped audit subject's resolver (see `anchorage audit`)
    /// in place of the built-in one for its scheme.
    #[arg(long, value_name = "NAME")]
    subject: Option<String>,
    /// Run with this deliberate defect in the channel (see `anchorage mutants`): replays a
    /// mutant's failing run.
    #[arg(long, value_name = "NAME")]
    mutant: Option<sim::Mutant>,
    /// Also print, per scenario, wall time, simulated seconds per wall second and RPCs per
    /// wall second (to stderr).
    #[arg(long)]
    timing: bool,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or("write A..B, e.g. 0..32")?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a seed"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a seed"))?;
    if a >= b {
        return Err(format!("{text}: the range is empty"));
    }
    Ok(a..b)
}

/// One simulation to run.
struct Job {
    scenario: usize,
    seed: u64,
    /// The determinism self-check's second run of the scenario's first seed.
    repeat: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let paths =
        if args.scenarios.is_empty() { scenario_files("sims") } else { Ok(args.scenarios.clone()) };
    let paths = match paths {
        Ok(paths) if paths.is_empty() => {
            eprintln!("anchorage sim: no scenarios: sims/ holds no *.toml files");
            return ExitCode::FAILURE;
        }
        Ok(paths) => paths,
        Err(err) => {
            eprintln!("anchorage sim: cannot list sims/: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut scenarios = Vec::new();
    for path in &paths {
        match Scenario::load(path) {
            Ok(scenario) => scenarios.push(scenario),
            Err(err) => {
                eprintln!("anchorage sim: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let mut options = match &args.subject {
        None => RunOptions::default(),
        Some(name) => match subjects::shipped().into_iter().find(|s| &s.name == name) {
            Some(subject) => {
                let (resolver, subject) = (Some(subject.builder), Some(subject.name));
                RunOptions { resolver, subject, ..RunOptions::default() }
            }
            None => {
                let names: Vec<String> = subjects::shipped().into_iter().map(|s| s.name).collect();
                eprintln!("anchorage sim: no subject {name:?}; shipped: {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    options.mutant = args.mutant;
    let jobs = plan(&scenarios, &args);
    let started = Instant::now();
    let (reports, wall) = execute(&scenarios, &jobs, &args, &options);
    print(&scenarios, &jobs, &reports, &args);
    if args.timing {
        print_timing(&scenarios, &jobs, &reports, &wall, started.elapsed());
    }
    let failed = reports.iter().any(|r| !r.passed) || !determinism(&scenarios, &jobs, &reports).1;
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Every (scenario, seed) to run, in order: per scenario its regression seeds, then the
/// requested seeds, then the repeat of its first seed.
fn plan(scenarios: &[Scenario], args: &Args) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut seeds: Vec<u64> = Vec::new();
        match args.seed {
            Some(seed) => seeds.push(seed),
            None => {
                let range = args.seeds.clone().unwrap_or(DEFAULT_SEEDS);
                for seed in scenario.regression_seeds.iter().copied().chain(range) {
                    if !seeds.contains(&seed) {
                        seeds.push(seed);
                    }
                }
            }
        }
        let first = seeds[0];
        jobs.extend(seeds.into_iter().map(|seed| Job { scenario: index, seed, repeat: false }));
        jobs.push(Job { scenario: index, seed: first, repeat: true });
    }
    jobs
}

/// Runs every job on `--jobs` threads; returns the reports and wall times in job order.
fn execute(
    scenarios: &[Scenario],
    jobs: &[Job],
    args: &Args,
    options: &RunOptions,
) -> (Vec<RunReport>, Vec<Duration>) {
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len());
    let bar = if jobs.len() > 1 {
        ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, (RunReport, Duration)>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // Bounded: each pass takes one job number.
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let scenario = &scenarios[job.scenario];
                    bar.set_message(format!("{} seed {}", scenario.name(), job.seed));
                    let wall = Instant::now();
                    let report = sim::run_with(scenario, job.seed, options);
                    let wall = wall.elapsed();
                    results.lock().unwrap_or_else(|p| p.into_inner()).insert(i, (report, wall));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.into_values().unzip()
}

fn print(scenarios: &[Scenario], jobs: &[Job], reports: &[RunReport], args: &Args) {
    for (job, report) in jobs.iter().zip(reports) {
        if job.repeat {
            continue;
        }
        if args.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.table());
        }
        if args.trace {
            println!("-- trace of {} seed {}\n{}", report.scenario, report.seed, report.trace);
        }
    }
    let (lines, identical) = determinism(scenarios, jobs, reports);
    let runs: Vec<&RunReport> =
        jobs.iter().zip(reports).filter(|(j, _)| !j.repeat).map(|(_, r)| r).collect();
    let failed: Vec<&&RunReport> = runs.iter().filter(|r| !r.passed).collect();
    if args.json {
        let check = serde_json::json!({ "determinism": lines, "identical": identical });
        println!("{check}");
    } else {
        for line in &lines {
            println!("{line}");
        }
    }
    // One line per failing run, with its replay command; on stderr with --json, so stdout
    // stays one JSON object per line.
    for report in &failed {
        if args.json {
            eprintln!("{}", report.failure_line());
        } else {
            println!("{}", report.failure_line());
        }
    }
    let summary = format!(
        "{} runs over {} scenarios: {} passed, {} failed; determinism self-check {}",
        runs.len(),
        scenarios.len(),
        runs.len() - failed.len(),
        failed.len(),
        if identical { "passed" } else { "FAILED" }
    );
    if args.json { eprintln!("{summary}") } else { println!("{summary}") }
}

/// One line per scenario comparing the trace hashes of its first seed's two runs; and whether
/// all matched.
fn determinism(scenarios: &[Scenario], jobs: &[Job], reports: &[RunReport]) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut identical = true;
    for (job, repeat) in jobs.iter().zip(reports).filter(|(j, _)| j.repeat) {
        let first = jobs
            .iter()
            .zip(reports)
            .find(|(j, _)| !j.repeat && j.scenario == job.scenario && j.seed == job.seed)
            .map(|(_, r)| r);
        let Some(first) = first else { continue };
        let path = scenarios[job.scenario].path.display().to_string();
        if first.trace_hash == repeat.trace_hash {
            lines.push(format!(
                "determinism {} seed {}: trace {} twice",
                first.scenario, job.seed, first.trace_hash
            ));
        } else {
            identical = false;
            lines.push(format!(
                "FAIL {} seed {}: determinism (trace hashes {} and {} differ); replay: {} --trace",
                first.scenario,
                job.seed,
                first.trace_hash,
                repeat.trace_hash,
                sim::replay_command(&path, job.seed)
            ));
        }
    }
    (lines, identical)
}

fn print_timing(
    scenarios: &[Scenario],
    jobs: &[Job],
    reports: &[RunReport],
    wall: &[Duration],
    total: Duration,
) {
    eprintln!(
        "{:<28} {:>5} {:>9} {:>10} {:>12} {:>12}",
        "scenario", "runs", "wall s", "sim s", "sim s/wall s", "RPCs/wall s"
    );
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut runs = 0;
        let (mut w, mut s, mut rpcs) = (Duration::ZERO, 0u64, 0u64);
        for ((job, report), took) in jobs.iter().zip(reports).zip(wall) {
            if job.scenario == index {
                runs += 1;
                w += *took;
                s += report.sim_time_ms;
                rpcs += u64::from(report.rpcs.sent);
            }
        }
        let secs = w.as_secs_f64().max(1e-9);
        eprintln!(
            "{:<28} {runs:>5} {:>9.2} {:>10.1} {:>12.1} {:>12.0}",
            scenario.name(),
            secs,
            s as f64 / 1000.0,
            s as f64 / 1000.0 / secs,
            rpcs as f64 / secs
        );
    }
    eprintln!("total wall time {:.2} s for {} runs", total.as_secs_f64(), jobs.len());
}

/// The `*.toml` files in `dir`, sorted by name so runs are in a stable order.
fn scenario_files(dir: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}
