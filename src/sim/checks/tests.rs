//! One passing and one failing run, built by hand, for every property; a regression test says
//! what passed vacuously before.

use std::time::Duration;

use super::given::Given;
use super::{Property, Verdict, evaluate};
use crate::balancer::ConnectivityState;
use crate::resolver::etcd::EtcdResolverCounts;

/// The property `name` of the run `given` describes.
fn check(mut given: Given, name: &str) -> Property {
    let found = evaluate(&given.observed()).into_iter().find(|p| p.name == name);
    found.unwrap_or_else(|| panic!("{name} must be checked"))
}

fn holds(given: Given, name: &str) {
    let p = check(given, name);
    assert_eq!(p.verdict, Verdict::Pass, "{name} must hold here: {}", p.measured);
}

fn fails(given: Given, name: &str) {
    let p = check(given, name);
    assert_eq!(p.verdict, Verdict::Fail, "{name} must fail here: {}", p.measured);
}

fn not_applicable(given: Given, name: &str) {
    let p = check(given, name);
    assert_eq!(p.verdict, Verdict::NotApplicable, "{name} must not apply here: {}", p.measured);
}

fn listed(addrs: &[&str]) -> Vec<String> {
    addrs.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn completed_holds_when_every_rpc_ended_and_fails_at_the_time_limit() {
    holds(Given::scenario("[workload]\nrpcs = 2").oks(0, 2, "a"), "completed");
    fails(Given::scenario("[workload]\nrpcs = 2").oks(0, 1, "a").timed_out(), "completed");
}

#[test]
fn deadlines_fail_for_an_rpc_that_outlived_its_deadline_and_do_not_apply_without_rpcs() {
    let given = || Given::scenario("[workload]\nrpcs = 1\ndeadline_ms = 100");
    holds(given().ok(0, 100, "a"), "deadlines");
    fails(given().ok(0, 500, "a"), "deadlines");
    not_applicable(given().timed_out(), "deadlines");
}

/// Regression: with no successful RPC, accounting passed as `0/0`, counted as a pass.
#[test]
fn accounting_needs_the_servers_records_to_cover_the_successes_and_some_success() {
    let given = || Given::scenario("[workload]\nrpcs = 2");
    holds(given().oks(0, 2, "a").connection("a", 0, None, 2), "accounting");
    fails(given().oks(0, 2, "a").connection("a", 0, None, 1), "accounting");
    not_applicable(given().failed(0, 1, "UNAVAILABLE").failed(2, 3, "UNAVAILABLE"), "accounting");
}

#[test]
fn connections_total_connections_and_subchannels_are_exact() {
    let expect = "[workload]\nrpcs = 1\n[expect]\nconnections = { a = 1 }\ntotal_connections = 1\nsubchannels = 1";
    let given = |conns: u64, subchannels: u64| {
        let mut g = Given::scenario(expect).ok(0, 2, "a");
        for i in 0..conns {
            g = g.connection("a", i, None, 1);
        }
        g.log(|log| log.subchannels_created = subchannels)
    };
    for name in ["connections", "total_connections", "subchannels"] {
        holds(given(1, 1), name);
    }
    fails(given(2, 1), "connections");
    fails(given(2, 1), "total_connections");
    fails(given(1, 2), "subchannels");
}

#[test]
fn pick_first_allows_exactly_one_connection_open_at_a_time() {
    let given = || Given::scenario("[workload]\nrpcs = 1\n[expect]\npolicy = \"pick_first\"");
    holds(
        given().ok(0, 2, "a").connection("a", 0, Some(50), 1).connection("b", 60, None, 0),
        "policy",
    );
    fails(given().ok(0, 2, "a").connection("a", 0, None, 1).connection("b", 60, None, 0), "policy");
}

/// Regression: round_robin's policy check was `open at once >= addresses`, so a channel that
/// leaked connections (more open than subchannels, or left open to a removed server) passed.
#[test]
fn round_robin_wants_one_open_connection_per_subchannel_and_none_to_unlisted_servers() {
    let given = |resolved: &[&str]| {
        let resolved = listed(resolved);
        Given::scenario("[workload]\nrpcs = 2\n[expect]\npolicy = \"round_robin\"")
            .ok(0, 2, "a")
            .ok(3, 5, "b")
            .log(move |log| {
                log.subchannels_created = 2;
                log.first_resolution = Some(2);
                log.resolutions = vec![(Duration::ZERO, resolved)];
            })
    };
    let both = ["a:1", "b:1"];
    holds(given(&both).connection("a", 0, None, 1).connection("b", 0, None, 1), "policy");
    let leak = given(&both).connection("a", 0, None, 1).connection("a", 1, None, 0);
    fails(leak.connection("b", 0, None, 1), "policy");
    fails(given(&both).connection("a", 0, None, 1), "policy");
    let removed = given(&["b:1"]).connection("a", 0, None, 1).connection("b", 0, None, 1);
    fails(removed, "policy");
}

#[test]
fn split_compares_shares_with_the_weights_within_the_tolerance() {
    let expect = "[workload]\nrpcs = 10\n[expect]\nweights = { a = 1, b = 1 }\ntolerance = 0.05";
    holds(Given::scenario(expect).oks(0, 5, "a").oks(100, 5, "b"), "split");
    fails(Given::scenario(expect).oks(0, 8, "a").oks(100, 2, "b"), "split");
}

const CRASH_A: &str = "[[fault]]\nat_ms = 100\naction = \"crash\"\nhost = \"a\"\n";
const RESTART_A: &str = "[[fault]]\nat_ms = 200\naction = \"restart\"\nhost = \"a\"\n";

/// Regression: failover from a server that never served passed, though nothing failed over.
#[test]
fn failover_needs_the_cut_server_to_have_served_and_then_to_get_nothing() {
    let given = || Given::scenario(&format!("{CRASH_A}[expect]\nfailover_within_ms = 10"));
    holds(given().oks(0, 5, "a").oks(110, 5, "b"), "failover");
    fails(given().oks(0, 5, "a").ok(112, 113, "a").oks(110, 5, "b"), "failover");
    fails(given().oks(0, 5, "b").oks(110, 5, "b"), "failover");
}

#[test]
fn recovery_wants_the_split_back_after_each_heal() {
    let expect = "[expect]\nrecovery_within_ms = 10\nweights = { a = 1, b = 1 }";
    let given = || Given::scenario(&format!("{CRASH_A}{RESTART_A}{expect}")).oks(110, 5, "b");
    holds(given().oks(210, 6, "a").oks(211, 6, "b"), "recovery");
    fails(given().oks(211, 12, "b"), "recovery");
}

/// Regression: a fault that struck while no RPC was in flight lost nothing by construction,
/// and lost_per_fault passed without showing anything about losses.
#[test]
fn lost_per_fault_bounds_the_losses_of_a_fault_that_caught_rpcs_in_flight() {
    let given =
        || Given::scenario(&format!("{CRASH_A}[expect]\nlost_per_fault = 1")).oks(0, 9, "a");
    holds(given().failed(95, 101, "UNAVAILABLE").oks(110, 5, "b"), "lost_per_fault");
    holds(given().ok(95, 105, "b").oks(110, 5, "b"), "lost_per_fault");
    let two = given().failed(95, 101, "UNAVAILABLE").failed(96, 101, "UNAVAILABLE");
    fails(two, "lost_per_fault");
    fails(given().oks(110, 5, "b"), "lost_per_fault");
}

#[test]
fn max_failed_bounds_the_failures_of_the_run() {
    let given = || Given::scenario("[workload]\nrpcs = 2\n[expect]\nmax_failed = 0").ok(0, 2, "a");
    holds(given().ok(3, 5, "b"), "max_failed");
    fails(given().failed(3, 5, "UNAVAILABLE"), "max_failed");
}

#[test]
fn all_fail_with_wants_every_rpc_to_fail_with_the_code() {
    let given =
        || {
            Given::scenario("[workload]\nrpcs = 2\n[expect]\nall_fail_with = \"UNAVAILABLE\"")
                .failed(0, 1, "UNAVAILABLE")
        };
    holds(given().failed(2, 3, "UNAVAILABLE"), "all_fail_with");
    fails(given().ok(2, 3, "a"), "all_fail_with");
}

#[test]
fn liveness_wants_an_early_success_and_no_late_failure_after_the_last_heal() {
    let given =
        || Given::scenario(&format!("{CRASH_A}{RESTART_A}[expect]\nliveness_within_ms = 50"));
    holds(given().ok(205, 210, "a").oks(260, 3, "b"), "liveness");
    fails(given().ok(205, 210, "a").failed(260, 270, "UNAVAILABLE"), "liveness");
}

#[test]
fn final_state_is_the_channel_state_when_the_workload_ends() {
    let given = |state| {
        Given::scenario("[workload]\nrpcs = 1\n[expect]\nfinal_state = \"READY\"")
            .ok(0, 1, "a")
            .log(move |log| log.final_state = Some(state))
    };
    holds(given(ConnectivityState::Ready), "final_state");
    fails(given(ConnectivityState::TransientFailure), "final_state");
}

/// Regression: no_rpcs_after passed for a server that never served at all.
#[test]
fn no_rpcs_after_needs_the_server_to_have_served_before_and_rpcs_to_go_on_without_it() {
    let given = || Given::scenario("[expect]\nno_rpcs_after_ms = { a = 100 }");
    holds(given().oks(0, 5, "a").oks(100, 5, "b"), "no_rpcs_after");
    fails(given().oks(0, 5, "a").oks(100, 5, "a"), "no_rpcs_after");
    fails(given().oks(0, 5, "b").oks(100, 5, "b"), "no_rpcs_after");
    fails(given().oks(0, 5, "a"), "no_rpcs_after");
}

const UNHEALTHY_A: &str = "[[fault]]\nat_ms = 100\naction = \"unhealthy\"\nserver = \"a\"\n";
const HEALTHY_A: &str = "[[fault]]\nat_ms = 200\naction = \"healthy\"\nserver = \"a\"\n";

#[test]
fn an_unhealthy_server_must_get_no_rpcs_from_the_bound_until_it_is_healthy_again() {
    let expect = "[expect]\nunhealthy_gets_no_rpcs_after_ms = 10";
    let given = || {
        Given::scenario(&format!("{UNHEALTHY_A}{HEALTHY_A}{expect}"))
            .oks(0, 5, "a")
            .oks(110, 5, "b")
    };
    holds(given(), "unhealthy_gets_no_rpcs");
    holds(given().ok(105, 106, "a"), "unhealthy_gets_no_rpcs"); // within the bound
    holds(given().ok(205, 206, "a"), "unhealthy_gets_no_rpcs"); // healthy again
    fails(given().ok(150, 151, "a"), "unhealthy_gets_no_rpcs");
    let never_served = Given::scenario(&format!("{UNHEALTHY_A}{expect}")).oks(0, 5, "b");
    fails(never_served.oks(110, 5, "b"), "unhealthy_gets_no_rpcs");
}

#[test]
fn connections_after_counts_exactly_the_connections_opened_while_rpcs_go_on() {
    let given = || {
        Given::scenario("[expect]\nconnections_after_ms = 100\nconnections_after = { b = 1 }")
            .oks(0, 5, "a")
    };
    holds(given().oks(100, 5, "b").connection("b", 150, None, 5), "connections_after");
    fails(given().oks(100, 5, "b").connection("b", 50, None, 5), "connections_after");
    fails(given().connection("b", 150, None, 0), "connections_after");
}

#[test]
fn unresolved_by_wants_the_address_gone_from_every_update_by_its_time() {
    let given = |removed_at: u64| {
        Given::scenario("[expect]\nunresolved_by_ms = { \"a:1\" = 100 }").oks(0, 5, "b").log(
            move |log| {
                log.resolutions = vec![
                    (Duration::ZERO, listed(&["a:1", "b:1"])),
                    (Duration::from_millis(removed_at), listed(&["b:1"])),
                ];
            },
        )
    };
    holds(given(90), "unresolved_by");
    fails(given(150), "unresolved_by");
}

#[test]
fn final_addresses_are_the_last_update_in_any_order() {
    let given = |last: &[&str]| {
        let last = listed(last);
        Given::scenario("[expect]\nfinal_addresses = [\"b:1\", \"a:1\"]")
            .oks(0, 5, "b")
            .log(move |log| log.resolutions = vec![(Duration::ZERO, last)])
    };
    holds(given(&["a:1", "b:1"]), "final_addresses");
    fails(given(&["b:1"]), "final_addresses");
}

#[test]
fn compacted_rereads_wants_the_etcd_resolver_to_have_read_again_often_enough() {
    let given = |compactions: Option<u64>| {
        Given::whole(
            "[etcd]\n[[server]]\nname = \"a\"\nport = 1\nregister = { service = \"echo\" }\n\
             [client]\ntarget = \"etcd:///echo\"\n[expect]\nmin_compacted_rereads = 1\n",
        )
        .oks(0, 5, "a")
        .log(move |log| {
            log.etcd_resolver = compactions
                .map(|compactions| EtcdResolverCounts { compactions, ..Default::default() })
        })
    };
    holds(given(Some(1)), "compacted_rereads");
    fails(given(Some(0)), "compacted_rereads");
    fails(given(None), "compacted_rereads");
}
