//! The audit matrix over the shipped subjects: anchorage's resolver passes everything, the
//! original notes' port fails exactly where its bugs are, and the grpc-go models show which
//! versions keep `#N` as N connections.

use anchorage::audit::matrix::{Matrix, Row};
use anchorage::audit::subjects::shipped;

fn matrix() -> Matrix {
    Matrix::run(&shipped(), 1, 128)
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
fn anchorage_pass_resolver_passes_every_property() {
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
fn the_matrix_is_deterministic_and_snapshotted() {
    let first = matrix();
    assert_eq!(first, matrix(), "the same seed must give the same matrix");
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("audit_matrix", first.to_string());
    });
}
