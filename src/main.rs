//! The `anchorage` command line: inspect targets, run the simulation, serve and probe.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::Cli::parse().run()
}
