//! Subcommands of the `anchorage` binary, one file each.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod audit_serve;
mod bench;
mod bench_client;
mod bench_memory;
mod bench_server;
mod bench_stats;
mod common;
mod health;
mod mutants;
mod probe;
mod register;
mod serve;
mod sim;
mod target;

/// gRPC name resolvers and load-balancing policies for tonic, proven in a deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "anchorage", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse a target string and show which resolver takes it and what it expands to.
    Target(target::Args),
    /// Send RPCs through a channel and report where they went, client and server side.
    Probe(probe::Args),
    /// Audit resolvers: the conformance matrix of subjects × properties.
    Audit(audit::Args),
    /// Run instrumented servers for any client, then judge what they saw against `#N`.
    AuditServe(audit_serve::Args),
    /// Run the simulation scenarios in `sims/` and print the report.
    Sim(sim::Args),
    /// Run deliberately broken channels against `sims/`: the matrix of mutants × checks.
    Mutants(mutants::Args),
    /// Run an instrumented Echo server on loopback TCP; print its stats as JSON when stopped.
    Serve(serve::Args),
    /// Register an address in etcd under a kept-alive lease until Ctrl-C; then revoke it.
    Register(register::Args),
    /// Read or change the health status a running instrumented server reports.
    Health(health::Args),
    /// Measure anchorage against tonic on loopback: QPS, latency, connections, memory.
    Bench(bench::Args),
    /// The plain tonic Echo server `bench` starts in a separate process.
    #[command(hide = true)]
    BenchServer(bench_server::ServerArgs),
    /// One memory measurement of `bench`, in a process of its own.
    #[command(hide = true)]
    BenchMemory(bench_memory::MemoryArgs),
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub(crate) fn run(self) -> ExitCode {
        match self.command {
            Command::Target(args) => target::run(args),
            Command::Probe(args) => probe::run(args),
            Command::Audit(args) => audit::run(args),
            Command::AuditServe(args) => audit_serve::run(args),
            Command::Sim(args) => sim::run(args),
            Command::Mutants(args) => mutants::run(args),
            Command::Serve(args) => serve::run(args),
            Command::Register(args) => register::run(args),
            Command::Health(args) => health::run(args),
            Command::Bench(args) => bench::run(args),
            Command::BenchServer(args) => bench_server::run_server(args),
            Command::BenchMemory(args) => bench_memory::run_child(args),
        }
    }
}
