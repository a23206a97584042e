//! `anchorage sim [SCENARIO...] [--seed S | --seeds A..B] [--verbose] [--trace] [--json]
//! [--shard K/N] [--plot FILE.svg | --plot-dir DIR]`: runs simulation scenarios and prints one
//! line per scenario (its seeds passed and its headline figures over them), a summary line with
//! the determinism self-check, and the table and replay command of every failing run. The table
//! of every run comes with `--verbose` or a single `--seed`. With `--swarm`, the scenarios are
//! generated, one per seed ([`anchorage::sim::swarm`]), instead of read from files.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anchorage::audit::subjects;
use anchorage::sim::{self, RunOptions, RunReport, scenario::Scenario, swarm};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seeds run per scenario when neither `--seed` nor `--seeds` is given.
const DEFAULT_SEEDS: Range<u64> = 0..8;

/// Seeds a swarm run generates when neither `--seed` nor `--seeds` is given.
const DEFAULT_SWARM_SEEDS: Range<u64> = 0..64;

/// Arguments of `anchorage sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scenario files to run; all of `sims/*.toml` when none are given.
    scenarios: Vec<PathBuf>,
    /// Generate one scenario per seed instead of reading files (default seeds 0..64); each runs
    /// with its own seed.
    #[arg(long, conflicts_with_all = ["scenarios", "subject"])]
    swarm: bool,
    /// Run only every N-th run from the K-th (0-based), so N shards split a run with no
    /// coordination; their `--json` lines concatenate into one report.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Run exactly this seed (replays a failing run; regression seeds are not added).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds A..B (B excluded) after each scenario's regression seeds.
    /// Default: 0..8, so 8 seeds per scenario plus its regression seeds, which run first.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Print every run's table (properties, servers, split) and the determinism lines, not only
    /// the failing runs' tables. Implied by `--seed` and `--trace`.
    #[arg(long, short)]
    verbose: bool,
    /// Print each run's event trace after its table.
    #[arg(long)]
    trace: bool,
    /// Draw the run as an SVG into FILE: RPC share and open connections per server over
    /// simulated time, faults and the windows the properties judged. Needs exactly one run
    /// (one scenario and `--seed`).
    #[arg(long, value_name = "FILE.svg", conflicts_with = "plot_dir")]
    plot: Option<PathBuf>,
    /// Draw the first run of each scenario as an SVG into DIR, as `<scenario>-seed<S>.svg`
    /// (the directory is created).
    #[arg(long, value_name = "DIR")]
    plot_dir: Option<PathBuf>,
    /// Print one JSON object per run (and one for the determinism check) instead of tables.
    #[arg(long)]
    json: bool,
    /// Simulations run in parallel. Default: the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run the scenarios with this shipped audit subject (see `anchorage audit`): a resolver
    /// in place of the built-in one for its scheme, or a client in place of anchorage's
    /// channel (`tonic-channel`, `tonic-pool`, `tonic-p2c`, `tonic-balance-list`).
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
    /// Shrink each failing run to a smaller scenario that fails the same property with the
    /// same seed, and write it into DIR as `<scenario>-seed<S>.toml` (progress on stderr).
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
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

/// `--shard K/N`: this process runs the runs whose index is K modulo N.
#[derive(Debug, Clone, Copy)]
struct Shard {
    index: usize,
    count: usize,
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    let problem = |why: &str| format!("--shard {text}: {why}");
    let (k, n) = text.split_once('/').ok_or_else(|| problem("write K/N, e.g. 0/4"))?;
    let index: usize = k.parse().map_err(|_| problem(&format!("{k:?} is not a shard index")))?;
    let count: usize = n.parse().map_err(|_| problem(&format!("{n:?} is not a shard count")))?;
    if count == 0 {
        return Err(problem("the shard count N must be at least 1"));
    }
    if index >= count {
        return Err(problem(&format!("the shard index K must be below N ({count}): 0..{count}")));
    }
    Ok(Shard { index, count })
}

/// One simulation to run.
struct Job {
    scenario: usize,
    seed: u64,
    /// The determinism self-check's second run of the scenario's first seed.
    repeat: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.swarm {
        let scenarios = swarm_scenarios(&args);
        let options = RunOptions { mutant: args.mutant, ..RunOptions::default() };
        return run_scenarios(&scenarios, &args, &options);
    }
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
            // A client subject runs in place of the channel, with the scenario's own resolver.
            Some(subject) => match subject.kind {
                subjects::SubjectKind::Client(client) => {
                    RunOptions { client, subject: Some(subject.name), ..RunOptions::default() }
                }
                _ => {
                    let (resolver, subject) = (Some(subject.builder), Some(subject.name));
                    RunOptions { resolver, subject, ..RunOptions::default() }
                }
            },
            None => {
                let names: Vec<String> = subjects::shipped().into_iter().map(|s| s.name).collect();
                eprintln!("anchorage sim: no subject {name:?}; shipped: {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    if let (Some(mutant), true) = (args.mutant, options.client.is_tonic()) {
        // A mutant is a defect in anchorage's channel; a tonic client has none to switch on.
        eprintln!(
            "anchorage sim: --mutant {mutant} changes anchorage's channel, which --subject {} does not run",
            options.subject.as_deref().unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    options.mutant = args.mutant;
    run_scenarios(&scenarios, &args, &options)
}

/// The generated scenarios of a swarm run: one per seed of the shard.
fn swarm_scenarios(args: &Args) -> Vec<Scenario> {
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => args.seeds.clone().unwrap_or(DEFAULT_SWARM_SEEDS).collect(),
    };
    seeds
        .into_iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| i % s.count == s.index))
        .map(|(_, seed)| swarm::generate(seed))
        .collect()
}

fn run_scenarios(scenarios: &[Scenario], args: &Args, options: &RunOptions) -> ExitCode {
    let jobs = plan(scenarios, args);
    if jobs.is_empty() {
        eprintln!("anchorage sim: this shard has no runs");
        return ExitCode::SUCCESS;
    }
    let runs = jobs.iter().filter(|j| !j.repeat).count();
    if let Some(path) = args.plot.as_ref().filter(|_| runs != 1) {
        eprintln!(
            "anchorage sim: --plot {} draws one run, and this is {runs} runs: name one scenario \
             and one --seed, or use --plot-dir DIR",
            path.display()
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let (mut reports, wall) = execute(scenarios, &jobs, args, options);
    if args.swarm {
        for report in &mut reports {
            report.replay = swarm::replay_command(report.seed);
            if let Some(mutant) = options.mutant {
                report.replay.push_str(&format!(" --mutant {mutant}"));
            }
        }
    }
    print(scenarios, &jobs, &reports, args, started.elapsed());
    if args.timing {
        print_timing(scenarios, &jobs, &reports, &wall, started.elapsed());
    }
    let mut failed =
        reports.iter().any(|r| !r.passed) || !determinism(scenarios, &jobs, &reports).1;
    if let Err(error) = plots(&jobs, &reports, args) {
        eprintln!("anchorage sim: {error}");
        failed = true;
    }
    if let Some(dir) = &args.save {
        let failing = jobs.iter().zip(&reports).filter(|(j, r)| !j.repeat && !r.passed);
        for (job, report) in failing {
            if let Err(error) = save_shrunk(&scenarios[job.scenario], report, dir, options) {
                eprintln!("anchorage sim: --save: {error}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Writes the SVGs `--plot` and `--plot-dir` ask for: the one run into the file, or the first
/// run of each scenario into the directory as `<scenario>-seed<S>.svg`.
fn plots(jobs: &[Job], reports: &[RunReport], args: &Args) -> Result<(), String> {
    let runs = jobs.iter().zip(reports).filter(|(j, _)| !j.repeat);
    let mut wanted: Vec<(PathBuf, &RunReport)> = Vec::new();
    if let Some(path) = &args.plot {
        wanted.extend(runs.take(1).map(|(_, r)| (path.clone(), r)));
    } else if let Some(dir) = &args.plot_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!("--plot-dir {}: cannot create the directory: {e}", dir.display())
        })?;
        let mut seen = Vec::new();
        for (job, report) in runs {
            if !seen.contains(&job.scenario) {
                seen.push(job.scenario);
                let name = format!("{}-seed{}.svg", report.scenario, report.seed);
                wanted.push((dir.join(name), report));
            }
        }
    }
    for (path, report) in wanted {
        let title = format!("{} seed {}", report.scenario, report.seed);
        sim::plot::write_svg(&report.timeline, &title, &path).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Shrinks the failing run `report` of `scenario` and writes the result into `dir`; returns
/// where. The property kept failing is the run's first failing one.
fn save_shrunk(
    scenario: &Scenario,
    report: &RunReport,
    dir: &std::path::Path,
    options: &RunOptions,
) -> Result<PathBuf, String> {
    let Some(property) = report.properties.iter().find(|p| p.failed()) else {
        return Err(format!(
            "{} seed {}: no failing property to keep",
            report.scenario, report.seed
        ));
    };
    eprintln!("shrinking {} seed {} (fails {})", report.scenario, report.seed, property.name);
    let baseline = RunOptions { mutant: None, ..options.clone() };
    let mut run = |s: &Scenario, seed: u64| {
        let mut report = sim::run_with(s, seed, options);
        // With a mutant, a candidate must still pass on the channel without it: one that fails
        // anyway (a crash of the only server, say) shows no defect, so it counts as not failing.
        if options.mutant.is_some() && !sim::run_with(s, seed, &baseline).passed {
            for p in report.properties.iter_mut().filter(|p| p.name == property.name) {
                p.verdict = sim::checks::Verdict::NotApplicable;
            }
        }
        report
    };
    let mut progress = |step: &sim::shrink::ShrinkStep| eprintln!("  {step}");
    let shrunk =
        sim::shrink::shrink(scenario, report.seed, &property.name, &mut run, &mut progress)
            .map_err(|e| e.to_string())?;
    let original = if report.replay.contains("--swarm") {
        format!("swarm seed {}", report.seed)
    } else {
        scenario.path.display().to_string()
    };
    let path = dir.join(format!("{}-seed{}.toml", report.scenario, report.seed));
    let mut comment = shrunk.comment(&original);
    comment.push_str(&format!(
        "\nThe original run: {}\nThis file: {}",
        report.replay,
        sim::replay_command(&path.display().to_string(), report.seed)
    ));
    let text = shrunk.scenario.to_toml(&comment);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "saved {}: fails {} (before: {}; after: {})",
        path.display(),
        shrunk.property,
        shrunk.before,
        shrunk.after
    );
    Ok(path)
}

/// Every (scenario, seed) to run, in order: per scenario its regression seeds, then the
/// requested seeds (a swarm scenario: its own seed); of those, `--shard`'s share (a swarm run
/// is sharded when its scenarios are generated); then the repeat of the first run of each
/// scenario (of a swarm: of the first scenario), the determinism self-check.
fn plan(scenarios: &[Scenario], args: &Args) -> Vec<Job> {
    let mut runs = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut seeds: Vec<u64> = Vec::new();
        match (args.swarm, args.seed) {
            (true, _) => seeds.extend(swarm_seed(scenario)),
            (false, Some(seed)) => seeds.push(seed),
            (false, None) => {
                let range = args.seeds.clone().unwrap_or(DEFAULT_SEEDS);
                for seed in scenario.regression_seeds.iter().copied().chain(range) {
                    if !seeds.contains(&seed) {
                        seeds.push(seed);
                    }
                }
            }
        }
        runs.extend(seeds.into_iter().map(|seed| Job { scenario: index, seed, repeat: false }));
    }
    let mut jobs: Vec<Job> = match args.shard.filter(|_| !args.swarm) {
        Some(shard) => runs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % shard.count == shard.index)
            .map(|(_, job)| job)
            .collect(),
        None => runs,
    };
    let mut repeats = Vec::new();
    for job in &jobs {
        let first = !repeats.iter().any(|r: &Job| r.scenario == job.scenario);
        if first && (!args.swarm || repeats.is_empty()) {
            repeats.push(Job { scenario: job.scenario, seed: job.seed, repeat: true });
        }
    }
    jobs.extend(repeats);
    jobs
}

/// The seed a swarm scenario was generated from (its name is `swarm-<seed>`).
fn swarm_seed(scenario: &Scenario) -> Option<u64> {
    scenario.name().strip_prefix("swarm-").and_then(|s| s.parse().ok())
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
        .clamp(1, jobs.len().max(1));
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

fn print(scenarios: &[Scenario], jobs: &[Job], reports: &[RunReport], args: &Args, wall: Duration) {
    if args.json {
        return print_json(scenarios, jobs, reports, args);
    }
    let runs: Vec<(&Job, &RunReport)> =
        jobs.iter().zip(reports).filter(|(j, _)| !j.repeat).collect();
    let tables = args.verbose || args.trace || args.seed.is_some();
    if tables {
        for (_, report) in &runs {
            println!("{}", report.table());
            if args.trace {
                println!("-- trace of {} seed {}\n{}", report.scenario, report.seed, report.trace);
            }
        }
    }
    for line in scenario_lines(scenarios, &runs) {
        println!("{line}");
    }
    let (lines, identical) = determinism(scenarios, jobs, reports);
    if tables || !identical {
        for line in lines.iter().filter(|l| tables || l.starts_with("FAIL")) {
            println!("{line}");
        }
    }
    let failed: Vec<&RunReport> = runs.iter().map(|(_, r)| *r).filter(|r| !r.passed).collect();
    let checked = jobs.iter().filter(|j| j.repeat).count();
    println!(
        "{} runs over {} scenarios: {} passed, {} failed; wall time {:.1}s; determinism \
         self-check {} ({checked} runs repeated)",
        runs.len(),
        scenarios.len(),
        runs.len() - failed.len(),
        failed.len(),
        wall.as_secs_f64(),
        if identical { "passed" } else { "FAILED" }
    );
    for report in failed {
        if !tables {
            println!("{}", report.table());
        }
        println!("{}", report.failure_line());
    }
}

/// One aligned line per scenario: its name, its seeds passed/run, and its headline figures
/// over those runs.
fn scenario_lines(scenarios: &[Scenario], runs: &[(&Job, &RunReport)]) -> Vec<String> {
    let width = scenarios.iter().map(|s| s.name().len()).max().unwrap_or(8);
    let mut rows = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let own: Vec<&RunReport> =
            runs.iter().filter(|(j, _)| j.scenario == index).map(|(_, r)| *r).collect();
        if own.is_empty() {
            continue;
        }
        let passed = own.iter().filter(|r| r.passed).count();
        let figures = sim::report::aggregate_figures(&own);
        rows.push((scenario.name(), format!("{passed}/{}", own.len()), figures));
    }
    let count_width = rows.iter().map(|(_, c, _)| c.len()).max().unwrap_or(3);
    // Figures follow each other rather than sitting in aligned columns: the same position holds
    // a split in one scenario and a failover time in another, and padding every position to its
    // widest value made lines too long for a terminal.
    rows.into_iter()
        .map(|(name, count, figures)| {
            let mut line = format!("{name:<width$}  {count:>count_width$}");
            for text in figures {
                line.push_str("  ");
                line.push_str(&text);
            }
            line
        })
        .collect()
}

/// `--json`: one object per run, then the determinism check's; the failing runs' replay lines
/// and the summary go to stderr so stdout stays one JSON object per line.
fn print_json(scenarios: &[Scenario], jobs: &[Job], reports: &[RunReport], args: &Args) {
    for (job, report) in jobs.iter().zip(reports) {
        if job.repeat {
            continue;
        }
        println!("{}", report.to_json());
        if args.trace {
            println!("-- trace of {} seed {}\n{}", report.scenario, report.seed, report.trace);
        }
    }
    let (lines, identical) = determinism(scenarios, jobs, reports);
    let runs: Vec<&RunReport> =
        jobs.iter().zip(reports).filter(|(j, _)| !j.repeat).map(|(_, r)| r).collect();
    let failed: Vec<&&RunReport> = runs.iter().filter(|r| !r.passed).collect();
    let check = serde_json::json!({ "determinism": lines, "identical": identical });
    println!("{check}");
    for report in &failed {
        eprintln!("{}", report.failure_line());
    }
    eprintln!(
        "{} runs over {} scenarios: {} passed, {} failed; determinism self-check {}",
        runs.len(),
        scenarios.len(),
        runs.len() - failed.len(),
        failed.len(),
        if identical { "passed" } else { "FAILED" }
    );
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
        let replay = match swarm_seed(&scenarios[job.scenario]) {
            Some(seed) if first.replay.starts_with(&swarm::replay_command(seed)) => {
                first.replay.clone()
            }
            _ => sim::replay_command(&path, job.seed),
        };
        if first.trace_hash == repeat.trace_hash {
            lines.push(format!(
                "determinism {} seed {}: trace {} twice",
                first.scenario, job.seed, first.trace_hash
            ));
        } else {
            identical = false;
            lines.push(format!(
                "FAIL {} seed {}: determinism (trace hashes {} and {} differ); replay: {replay} --trace",
                first.scenario, job.seed, first.trace_hash, repeat.trace_hash,
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
