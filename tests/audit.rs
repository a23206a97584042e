//! The audit matrix over the shipped subjects: anchorage's resolver passes everything, the
//! original notes' port fails exactly where its bugs are, and the grpc-go models show which
//! versions keep `#N` as N connections.
#![cfg(feature = "sim")]

use std::path::Path;
use std::sync::OnceLock;

use anchorage::audit::matrix::{Matrix, Row};
use anchorage::audit::scenarios;
use anchorage::audit::subjects::shipped;

/// The matrix over the shipped subjects: 32 generated cases per property and the simulated
/// properties over seed 0; computed once for all tests.
fn matrix() -> Matrix {
    static MATRIX: OnceLock<Matrix> = OnceLock::new();
    MATRIX.get_or_init(compute).clone()
}

fn compute() -> Matrix {
    let loaded = scenarios::load(Path::new("sims")).expect("the audit's scenarios are in sims/");
    Matrix::run_with_scenarios(&shipped(), 1, 32, &loaded, 0..1)
}

fn row<'a>(matrix: &'a Matrix, subject: &str) -> &'a Row {
    matrix.rows.iter().find(|r| r.subject == subject).expect("a shipped subject")
}

fn failure(row: &Row, property: &str) -> String {
    let result = row.result(property).expect("a checked property");
    assert!(!result.pass, "{} must fail {property}", row.subject);
    result.detail.clone()
}

#[test]
fn anchorage_pass_resolver_passes_every_property_syntax_and_simulated() {
    let matrix = matrix();
    let ours = row(&matrix, "anchorage-pass");
    let failed: Vec<_> = ours.results.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "anchorage's own resolver must pass everything: {failed:?}");
}

#[test]
fn the_notes_port_carries_a_count_over_to_the_next_item() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "notes-port"), "own-count");
    assert_eq!(
        detail,
        r#"counterexample "a:1#2,a:2": a:2 got 2 connections, not 1 (the first item has #2)"#,
        "the audit must catch the inherited #N with a minimal counterexample"
    );
}

#[test]
fn the_notes_port_turns_a_bad_count_into_one_silently() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "notes-port"), "rejects-bad-count");
    assert_eq!(detail, r#"counterexample "a:1#0": accepted as [a:1{idx=0}]"#);
}

#[test]
fn only_grpc_go_versions_that_key_by_pointer_or_value_and_keep_the_hash_give_n_connections() {
    let matrix = matrix();
    let n_connections = |subject: &str| {
        let row = row(&matrix, subject);
        ["counts", "distinct"].iter().all(|p| row.result(p).is_some_and(|r| r.pass))
    };
    assert!(n_connections("grpc-go-1.33"));
    assert!(!n_connections("grpc-go-1.35-1.41"), "attributes ignored collapse the #N copies");
    assert!(!n_connections("grpc-go-1.42-1.70"), "url.Parse drops everything after #");
    assert!(!n_connections("grpc-go-1.71+"));
}

#[test]
fn the_notes_port_gives_an_item_without_count_two_connections_in_the_simulation() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "notes-port"), "sim-own-count");
    assert!(
        detail.contains("connections (a=2 (want 2), b=2 (want 1))"),
        "the simulated servers must show b's inherited #2: {detail}"
    );
    assert!(
        detail.ends_with(
            "replay: cargo run --release -- sim sims/notes_example_without_count.toml --seed 0 --subject notes-port"
        ),
        "a failing simulated property must carry its replay command: {detail}"
    );
}

#[test]
fn only_grpc_go_1_33_keeps_n_connections_per_address_in_the_simulation() {
    let matrix = matrix();
    let passes = |subject: &str| {
        row(&matrix, subject).result("sim-connections-per-n").is_some_and(|r| r.pass)
    };
    assert!(passes("anchorage-pass") && passes("grpc-go-1.33"));
    for subject in ["grpc-go-1.35-1.41", "grpc-go-1.42-1.70", "grpc-go-1.71+"] {
        assert!(!passes(subject), "{subject} must not give a:#2 two connections");
    }
}

#[test]
fn the_matrix_is_deterministic_and_snapshotted() {
    let first = matrix();
    assert_eq!(first, compute(), "the same seed must give the same matrix");
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("audit_matrix", first.to_string());
    });
}

/// An etcd resolver that loses the connection indices, so `#N` collapses to one address each:
/// the etcd properties must catch it.
#[derive(Debug)]
struct CollapsingEtcd(anchorage::resolver::etcd::EtcdBuilder);

impl anchorage::resolver::ResolverBuilder for CollapsingEtcd {
    fn scheme(&self) -> &str {
        "etcd"
    }

    fn build(
        &self,
        target: &anchorage::target::Target,
        updates: anchorage::resolver::UpdateSink,
    ) -> Result<Box<dyn anchorage::resolver::Resolver>, anchorage::resolver::ResolverError> {
        let collapse = |state: anchorage::resolver::ResolverState| {
            let plain =
                state.addresses.iter().map(|a| anchorage::address::Address::new(a.addr.clone()));
            anchorage::resolver::ResolverState {
                addresses: anchorage::address::dedup(plain),
                ..state
            }
        };
        self.0.build(target, updates.with_transform(collapse))
    }
}

#[test]
fn the_etcd_properties_catch_a_resolver_that_collapses_the_connection_count() {
    let client = anchorage::etcd::EtcdClient::builder().seed(0);
    let subject = CollapsingEtcd(anchorage::resolver::etcd::EtcdBuilder::new(client));
    let results = anchorage::audit::etcd::check(&subject, 1, 16);
    let counts = results.iter().find(|r| r.property == "etcd-counts").unwrap();
    assert!(!counts.pass, "a collapsed #N must fail etcd-counts: {counts:?}");
    assert!(counts.detail.starts_with("counterexample \"#2 over"), "got {}", counts.detail);
    let prefix = results.iter().find(|r| r.property == "etcd-prefix").unwrap();
    assert!(prefix.pass, "collapsing does not read other services' keys");
}

#[test]
fn anchorage_etcd_resolver_passes_every_etcd_property() {
    let matrix = matrix();
    let ours = row(&matrix, "anchorage-etcd");
    assert!(ours.results.len() >= 6);
    let failed: Vec<_> = ours.results.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "anchorage's etcd resolver must pass everything: {failed:?}");
}

/// The client rows: anchorage's channel and tonic's own clients, each run unmodified on the
/// simulated network with the scenario's own resolver.
const TONIC: [&str; 4] = ["tonic-channel", "tonic-pool", "tonic-p2c", "tonic-balance-list"];

#[test]
fn anchorage_channel_passes_every_client_property() {
    let matrix = matrix();
    let ours = row(&matrix, "anchorage-channel");
    assert!(!ours.results.is_empty(), "anchorage's channel must be a client row");
    let not_passed: Vec<_> = ours.results.iter().filter(|r| !r.pass).collect();
    assert!(
        not_passed.is_empty(),
        "anchorage's channel must pass every client cell: {not_passed:?}"
    );
}

#[test]
fn properties_of_anchorage_internals_read_not_applicable_for_tonic_clients_never_pass() {
    let matrix = matrix();
    for subject in TONIC {
        let cell = row(&matrix, subject).result("pick-first-default").expect("a client cell");
        assert!(
            cell.not_applicable && !cell.pass && !cell.failed(),
            "{subject}: pick_first default judges anchorage's policy, so it must read n/a: {cell:?}"
        );
    }
    let shown = matrix.to_string();
    assert!(shown.contains("| n/a"), "the matrix must print n/a cells:\n{shown}");
    assert!(!matrix.all_pass(), "tonic's failing cells still count as failures");
}

#[test]
fn tonic_balance_list_collapses_the_n_copies_of_an_address_into_one_connection() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "tonic-balance-list"), "connections-per-n");
    assert!(
        detail.contains("connections (a=1 (want 2), b=1 (want 1))"),
        "balance_list keys endpoints by URI, so a#2 must give one connection: {detail}"
    );
    assert!(
        detail.ends_with(
            "replay: cargo run --release -- sim sims/weighted_round_robin.toml --seed 0 --subject tonic-balance-list"
        ),
        "a failing client cell must carry its replay command: {detail}"
    );
    for subject in ["tonic-pool", "tonic-p2c"] {
        let cell = row(&matrix, subject).result("connections-per-n").expect("a client cell");
        assert!(cell.pass, "{subject} opens one channel per #N index: {cell:?}");
    }
}

#[test]
fn a_single_tonic_channel_does_not_fail_over_when_its_server_crashes() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "tonic-channel"), "crash-restart");
    assert!(
        detail.contains("failover (crash a at 1.500s: 0 of 0 OK RPCs"),
        "one Channel to the first address has nowhere to go while it is down: {detail}"
    );
}

#[test]
fn tonic_p2c_keeps_losing_rpcs_to_an_endpoint_that_died() {
    let matrix = matrix();
    let detail = failure(row(&matrix, "tonic-p2c"), "endpoint-dies");
    assert!(
        detail.contains("lost_per_fault (before any fault 0, crash a 8 (0 in flight)"),
        "after each failed reconnect p2c picks the dead endpoint again (tonic #2839): {detail}"
    );
}
