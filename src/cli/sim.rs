//! `anchorage sim [SCENARIO...]`: runs simulation scenarios and prints the report.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `anchorage sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scenario files to run; all of `sims/*.toml` when none are given.
    scenarios: Vec<PathBuf>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let paths = if args.scenarios.is_empty() { scenario_files("sims") } else { Ok(args.scenarios) };
    match paths {
        Ok(paths) if paths.is_empty() => {
            println!("no scenarios yet: sims/ holds no *.toml files");
            ExitCode::SUCCESS
        }
        Ok(paths) => {
            eprintln!(
                "the simulation harness is not built yet; cannot run {} scenario(s)",
                paths.len()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("sim: cannot list sims/: {err}");
            ExitCode::FAILURE
        }
    }
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
