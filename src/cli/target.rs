//! `anchorage target <TARGET> [--json]`.

use std::process::ExitCode;

/// Arguments of `anchorage target`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The target string, e.g. `pass:///10.0.0.1:9080#2,10.0.0.2:9090`.
    target: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let _ = args;
    ExitCode::SUCCESS
}
