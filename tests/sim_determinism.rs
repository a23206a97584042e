//! The simulation is a function of (scenario, seed): the same pair gives a byte-identical trace,
//! within one process and across processes.

use anchorage::sim::{self, scenario::Scenario};

/// Regression: RPCs queued while the channel was connecting woke, when the first picker
/// arrived, in an order drawn from tokio's unseeded thread RNG (tokio's `watch` spreads its
/// waiters over eight queues at random), so which subchannel each of three concurrent RPCs
/// picked changed from run to run with the same seed.
#[test]
fn concurrent_rpcs_queued_for_the_first_picker_pick_the_same_subchannels_every_run() {
    let scenario = Scenario::load("sims/weighted_round_robin.toml").expect("the scenario loads");
    assert!(scenario.workload.concurrency > 1, "the scenario must queue concurrent RPCs");
    for seed in 0..4 {
        let first = sim::run(&scenario, seed);
        for _ in 0..3 {
            let again = sim::run(&scenario, seed);
            assert_eq!(
                first.trace, again.trace,
                "seed {seed}: the same seed must give a byte-identical trace"
            );
        }
    }
}
