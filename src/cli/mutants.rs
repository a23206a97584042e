//! `anchorage mutants [--json] [--seeds A..B] [--jobs N]`: runs every mutant against the
//! scenarios in `sims/` and prints the matrix of mutants × checks; fails when a mutant
//! survives or the baseline fails.

use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use anchorage::sim::mutants::{self, Mutant, Options};

/// Seeds run per scenario (after its regression seeds) when `--seeds` is not given.
const DEFAULT_SEEDS: Range<u64> = 0..2;

/// Arguments of `anchorage mutants`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Run seeds A..B (B excluded) of every scenario, after its regression seeds. Default: 0..2.
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Print one JSON object per row (the baseline first) instead of the table.
    #[arg(long)]
    json: bool,
    /// Rows (mutants) run in parallel. Default: the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
    /// Only these mutants (repeatable). Default: all.
    #[arg(long = "mutant", value_name = "NAME")]
    only: Vec<Mutant>,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or("write A..B, e.g. 0..4")?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a seed"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a seed"))?;
    if a >= b {
        return Err(format!("{text}: the range is empty"));
    }
    Ok(a..b)
}

pub(crate) fn run(args: Args) -> ExitCode {
    let runs = match mutants::fixed_runs("sims", args.seeds.clone().unwrap_or(DEFAULT_SEEDS)) {
        Ok(runs) if runs.is_empty() => {
            eprintln!("anchorage mutants: no scenarios: sims/ holds no *.toml files");
            return ExitCode::FAILURE;
        }
        Ok(runs) => runs,
        Err(err) => {
            eprintln!("anchorage mutants: {err}");
            return ExitCode::from(2);
        }
    };
    let list: Vec<Mutant> = if args.only.is_empty() { Mutant::ALL.to_vec() } else { args.only };
    let mut options = Options::default();
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    let started = Instant::now();
    let matrix = mutants::matrix(&list, &runs, &options);
    let wall = started.elapsed();
    if args.json {
        for row in std::iter::once(&matrix.baseline).chain(&matrix.rows) {
            println!("{}", row.to_json());
        }
    } else {
        println!("{}", matrix.table());
    }
    let total: u32 = std::iter::once(&matrix.baseline).chain(&matrix.rows).map(|r| r.runs).sum();
    eprintln!("{total} runs in {:.1} s", wall.as_secs_f64());
    if let Some(error) = matrix.baseline_error() {
        eprintln!("{error}");
    }
    for row in matrix.rows.iter().filter(|r| r.killed()) {
        if let (Some(mutant), Some(line)) = (row.mutant, &row.first_failure) {
            eprintln!("{mutant}: {line}");
        }
    }
    for mutant in matrix.survivors() {
        eprintln!("SURVIVED {mutant}: no check failed in {} runs", runs_of(&matrix, mutant));
    }
    if matrix.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn runs_of(matrix: &mutants::Matrix, mutant: Mutant) -> u32 {
    matrix.rows.iter().find(|r| r.mutant == Some(mutant)).map_or(0, |r| r.runs)
}
