//! Swarm runs: scenarios generated from a seed alone, each checked against universal
//! invariants whose bounds derive from what was generated.
//!
//! [`generate`] draws one [`Scenario`] per seed: 1–6 servers (some sharing a host), a `pass`,
//! `manual` or `etcd` target, pick_first or round_robin, with or without a retry policy and
//! wait-for-ready, a random workload, and a random fault schedule. Following swarm testing
//! (Groce et al., "Swarm Testing", ISSTA 2012), each seed first switches whole fault kinds off,
//! so the kinds left on get room to combine. Every schedule ends with a heal phase (everything
//! repaired, released, re-registered and resolved again, then every server host restarted)
//! followed by a quiet period in which every RPC must succeed.
//!
//! The invariants are ordinary `[expect]` keys, so a generated scenario written out as a file
//! checks the same things; `bounds` derives each of them from the generated configuration and
//! says why each bound is sound.
//!
//! ```
//! use anchorage::sim::{self, swarm};
//! let scenario = swarm::generate(42);
//! assert_eq!(scenario.name(), "swarm-42");
//! assert_eq!(swarm::replay_command(42), "cargo run --release -- sim --swarm --seed 42");
//! # let _ = sim::run;
//! ```
//!
//! # Determinism
//! A scenario is a function of its seed: one ChaCha8 stream seeded with it draws everything,
//! and a run of it uses the same seed for the network and the channel, so `--swarm --seed S`
//! replays a failure exactly.

use super::RunReport;
use super::scenario::{Action, Scenario};

mod bounds;
mod generate;

/// A generated scenario with what the generator decided on the way.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The scenario.
    pub scenario: Scenario,
    /// The fault kinds this seed left switched on for its random phase, in declaration order.
    pub kinds: Vec<Action>,
    /// When the heal phase starts, simulated ms: every fault before it is from the random
    /// phase, every fault at or after it heals.
    pub heal_ms: u64,
}

/// The scenario of swarm seed `seed`, with its path `swarm/swarm-<seed>` (so its name is
/// `swarm-<seed>`).
pub fn generate(seed: u64) -> Scenario {
    generate_with_plan(seed).scenario
}

/// [`generate`], also returning the fault kinds switched on and the start of the heal.
pub fn generate_with_plan(seed: u64) -> Generated {
    generate::generate(seed)
}

/// The command that replays swarm seed `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -- sim --swarm --seed {seed}")
}

/// Generates swarm seed `seed` and runs it with the same seed; the report's replay command is
/// the swarm one.
pub fn run(seed: u64) -> RunReport {
    let scenario = generate(seed);
    let mut report = super::run(&scenario, seed);
    report.replay = replay_command(seed);
    report
}
