//! Every scenario in `sims/` holds over eight seeds plus its regression seeds, and the report of
//! one fixed seed per scenario is snapshotted, so any change in behaviour shows as a diff.
#![cfg(feature = "sim")]

use std::path::Path;

use anchorage::sim::{self, scenario::Scenario};

/// Seeds every scenario must pass, after its regression seeds (the CLI's default too).
const SEEDS: std::ops::Range<u64> = 0..8;

/// The seed whose report is snapshotted.
const SNAPSHOT_SEED: u64 = 0;

/// Runs the scenario's regression seeds, then [`SEEDS`]; fails with every failing run's replay
/// line; snapshots the report of [`SNAPSHOT_SEED`].
fn scenario_holds(file: &str) {
    let path = format!("sims/{file}.toml");
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut seeds = scenario.regression_seeds.clone();
    seeds.extend(SEEDS.filter(|s| !scenario.regression_seeds.contains(s)));
    let mut failures = Vec::new();
    for seed in seeds {
        let report = sim::run(&scenario, seed);
        if !report.passed {
            failures.push(format!("{}\n{}", report.failure_line(), report.table()));
        }
        if seed == SNAPSHOT_SEED {
            insta::with_settings!({
                snapshot_path => "../snapshots",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(format!("sim_{file}"), report.table());
            });
        }
    }
    assert!(failures.is_empty(), "every seed must pass:\n{}", failures.join("\n"));
}

macro_rules! scenarios {
    ($($file:ident),* $(,)?) => {
        $(
            #[test]
            fn $file() {
                scenario_holds(stringify!($file));
            }
        )*

        /// The scenarios listed here, so a new file in sims/ cannot be left out.
        const LISTED: &[&str] = &[$(stringify!($file)),*];
    };
}

scenarios!(
    all_down_then_back,
    all_down_wait_for_ready,
    crash_restart_weighted,
    deadline_covers_slow_body,
    dedup_distinct_attributes,
    dedup_equal_addresses,
    endpoint_dies,
    etcd_compaction_during_watch_loss,
    etcd_discovery_at_start,
    etcd_expire_deregister_register,
    etcd_late_registration,
    etcd_lease_expiry,
    etcd_outage,
    goaway_under_load,
    goaway_under_load_pick_first,
    health_checking,
    hold_and_oneway_partition,
    max_age_follows_resolver,
    notes_example_without_count,
    original_notes_client,
    partition_heal_keepalive,
    pick_first_default,
    pick_first_failover,
    pick_first_reorder_one_returns,
    pick_first_update_during_backoff,
    resolver_reorder,
    resolver_updates,
    restart_storm,
    slow_server,
    thousand_workers,
    weighted_round_robin,
    zero_addresses,
);

#[test]
fn every_scenario_file_in_sims_is_run_by_this_suite() {
    let mut files: Vec<String> = std::fs::read_dir(Path::new("sims"))
        .expect("sims/ exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "toml" {
                return None;
            }
            Some(path.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    files.sort();
    assert_eq!(files, LISTED, "each sims/*.toml must be listed in tests/sim.rs");
    assert!(files.len() >= 12, "the harness must ship at least 12 scenarios");
}
