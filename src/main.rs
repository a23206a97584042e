//! The `anchorage` command line: inspect targets, run the simulation, serve and probe.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The process allocator. A simulation run is dominated by the allocations of the HTTP/2 and
/// gRPC stack under each RPC; with glibc's allocator a quarter of `anchorage sim`'s CPU time
/// went to `malloc` and `free` (README, "Performance"). Feature `mimalloc` (default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::Cli::parse().run()
}
