//! `anchorage target` as a user runs it: the built binary, its stdout, stderr and exit code.
#![cfg(feature = "cli")]

use std::process::{Command, Output};

use serde_json::{Value, json};

fn anchorage_target(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .arg("target")
        .args(args)
        .output()
        .expect("the anchorage binary must start")
}

#[test]
fn given_a_pass_target_when_inspected_as_json_then_one_object_lists_every_connection() {
    let out = anchorage_target(&["--json", "pass:///:9080#2,:9090#1"]);

    assert!(out.status.success(), "a valid target must exit 0, got {:?}", out.status);
    let json: Value =
        serde_json::from_slice(&out.stdout).expect("--json must print one JSON value");
    assert_eq!(json["scheme"], "pass");
    assert_eq!(json["authority"], "");
    assert_eq!(json["endpoint"], ":9080#2,:9090#1", "the endpoint must keep '#' as written");
    assert_eq!(json["resolver"], "pass");
    assert_eq!(json["fallback"], false);
    assert_eq!(
        json["addresses"],
        json!([
            {"addr": "localhost:9080", "idx": 0},
            {"addr": "localhost:9080", "idx": 1},
            {"addr": "localhost:9090", "idx": 0},
        ]),
        "#N must give N indexed connections per address, in target order, with :port as localhost"
    );
    assert!(out.stderr.is_empty(), "a valid target must print nothing to stderr");
}

#[test]
fn given_an_etcd_target_when_inspected_as_json_then_service_and_count_are_shown() {
    let out = anchorage_target(&["--json", "etcd:///user-service#3"]);

    assert!(out.status.success(), "a valid target must exit 0");
    let json: Value =
        serde_json::from_slice(&out.stdout).expect("--json must print one JSON value");
    assert_eq!(json["resolver"], "etcd");
    assert_eq!(json["service"], "user-service");
    assert_eq!(json["connections_per_address"], 3);
    assert!(json.get("addresses").is_none(), "addresses are listed only for pass targets");
}

#[test]
fn given_a_host_port_without_scheme_when_inspected_then_passthrough_takes_it_whole() {
    let out = anchorage_target(&["--json", "localhost:50051"]);

    let json: Value =
        serde_json::from_slice(&out.stdout).expect("--json must print one JSON value");
    assert_eq!(json["resolver"], "passthrough");
    assert_eq!(json["endpoint"], "localhost:50051", "the whole target must go to passthrough");
    assert_eq!(json["fallback"], true);
}

#[test]
fn given_a_bad_pass_item_when_inspected_then_it_exits_2_and_stderr_names_the_item() {
    let out = anchorage_target(&["--json", "pass:///a:9080,b:9090#0"]);

    assert_eq!(out.status.code(), Some(2), "bad input must exit with code 2");
    assert!(out.stdout.is_empty(), "a rejected target must print nothing to stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"item 2 ("b:9090#0"): connection count must be 1..=1024"#),
        "stderr must name the bad item, its position and the reason, got {stderr:?}"
    );
}

#[test]
fn given_a_pass_target_when_inspected_as_text_then_each_connection_is_a_line() {
    let out = anchorage_target(&["pass:///10.0.0.1:9080#2,10.0.0.2:9090"]);

    assert!(out.status.success(), "a valid target must exit 0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(
        lines,
        ["  10.0.0.1:9080 idx=0", "  10.0.0.1:9080 idx=1", "  10.0.0.2:9090 idx=0"],
        "an item without #N must get one connection, not the previous item's count"
    );
}

/// Regression: `anchorage target` accepted targets that `Channel::build` refuses, because it
/// checked only the target's syntax, not each resolver's own rules.
#[tokio::test]
async fn target_refuses_exactly_what_the_channel_refuses_with_the_same_message() {
    let huge: Vec<String> = (0..10_000).map(|i| format!("h{i}:1#1024")).collect();
    let huge = format!("pass:///{}", huge.join(","));
    let refused = [
        "pass://auth/a:1",
        "passthrough://x/a:1",
        "dns:///host:0",
        "dns://8.8.8.8/host:443",
        "etcd://https://h:1/svc",
        huge.as_str(),
    ];
    for target in refused {
        let built = anchorage::channel::Channel::builder(target).build();
        let error = built.expect_err("the channel must refuse it").to_string();
        let out = anchorage_target(&[target]);
        assert_eq!(out.status.code(), Some(2), "{target:.60}: target must exit 2");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("anchorage target: {error}"),
            "{target:.60}: target must say what Channel::build says"
        );
    }
    for accepted in ["pass:///a:1#2,b:1", "dns:///host:443", "etcd:///svc#2", "localhost:50051"] {
        assert!(anchorage::channel::Channel::builder(accepted).build().is_ok(), "{accepted}");
        assert!(anchorage_target(&[accepted]).status.success(), "{accepted} must exit 0");
    }
}

/// The notes name `addr` and `extd` as other prefixes for `pass`: both take the same anchor
/// lists, and `anchorage target` says which resolver serves them.
#[test]
fn given_an_addr_or_extd_target_when_inspected_then_the_pass_resolver_expands_it() {
    for scheme in ["addr", "extd"] {
        let out = anchorage_target(&["--json", &format!("{scheme}:///:9080#2,:9090")]);
        assert!(out.status.success(), "{scheme} must be a registered scheme: {out:?}");
        let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(json["scheme"], scheme, "the scheme is shown as written");
        assert_eq!(json["resolver"], "pass", "{scheme} is an alias of pass");
        assert_eq!(
            json["addresses"],
            json!([
                {"addr": "localhost:9080", "idx": 0},
                {"addr": "localhost:9080", "idx": 1},
                {"addr": "localhost:9090", "idx": 0},
            ]),
            "{scheme} must expand #N exactly as pass does"
        );
        let text = anchorage_target(&[&format!("{scheme}:///:9080#2")]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains(&format!("resolver:  pass ({scheme} is an alias of pass)")),
            "the text output must name the alias: {text}"
        );
    }
}

#[test]
fn given_a_bad_item_under_an_alias_when_inspected_then_it_is_rejected_as_under_pass() {
    let out = anchorage_target(&["addr:///a:9080,b:9090#0"]);
    assert_eq!(out.status.code(), Some(2), "a bad anchor list is bad under an alias too");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b:9090#0"), "stderr must name the bad item: {stderr}");
}
