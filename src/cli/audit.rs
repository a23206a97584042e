//! `anchorage audit [--subject NAME ...] [--json]`: the conformance matrix over the shipped
//! subjects (anchorage's resolvers and models of others; anchorage's channel and tonic's own
//! clients under the simulated faults).

use std::process::ExitCode;

use anchorage::audit::matrix::Matrix;
use anchorage::audit::scenarios;
use anchorage::audit::subjects::shipped;

/// Arguments of `anchorage audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Subjects to audit (repeatable); all shipped subjects when none is given.
    #[arg(long = "subject", value_name = "NAME")]
    subjects: Vec<String>,
    /// Seed the generated cases are drawn from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generated cases per property.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    cases: u32,
    /// Directory holding the scenarios the simulated properties use.
    #[arg(long, default_value = "sims")]
    sims: std::path::PathBuf,
    /// Seeds each simulated property runs, `A..B` (B excluded); `0..0` skips them.
    #[arg(long, value_name = "A..B", default_value = "0..4", value_parser = parse_range)]
    sim_seeds: std::ops::Range<u64>,
    /// Exit with status 1 when any cell fails (the shipped models fail by design).
    #[arg(long)]
    strict: bool,
    /// Print the matrix as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let all = shipped();
    let mut chosen = Vec::new();
    for name in &args.subjects {
        match all.iter().find(|s| &s.name == name) {
            Some(subject) => chosen.push(subject.clone()),
            None => {
                let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                eprintln!("audit: no subject {name:?}; shipped subjects: {}", names.join(", "));
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = all;
    }
    let loaded = if args.sim_seeds.is_empty() {
        Vec::new()
    } else {
        match scenarios::load(&args.sims) {
            Ok(loaded) => loaded,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        }
    };
    let matrix =
        Matrix::run_with_scenarios(&chosen, args.seed, args.cases, &loaded, args.sim_seeds.clone());
    if args.json {
        match serde_json::to_string(&matrix) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("audit: cannot serialise the matrix: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{matrix}");
    }
    if args.strict && !matrix.all_pass() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn parse_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or("write A..B, e.g. 0..4")?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a seed"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a seed"))?;
    if a > b {
        return Err(format!("{text}: the end comes before the start"));
    }
    Ok(a..b)
}
