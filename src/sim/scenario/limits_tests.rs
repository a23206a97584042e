//! Every key a scenario can get wrong is refused at load, with the file, the line, the key and
//! the allowed range in the message.

use super::*;

/// A scenario with one server `a` on 9080; `top` goes before the first table, `client` into
/// `[client]` (a `target` there replaces the default one), `rest` after it.
fn scenario(top: &str, client: &str, rest: &str) -> String {
    let target = if client.contains("target =") { "" } else { "target = \"pass:///a:9080\"" };
    format!(
        "{top}\n[[server]]\nname = \"a\"\nport = 9080\n\n[client]\n{target}\n{client}\n\n{rest}\n"
    )
}

/// The 1-based line of the last line of `text` that sets `key`.
fn line_setting(text: &str, key: &str) -> usize {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            line.starts_with(&format!("{leaf} ")) || line.starts_with(&format!("{leaf}="))
        })
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or_else(|| panic!("the case sets {leaf}"))
}

/// Asserts that `text` is refused, naming the file, the line that sets `key`, `key` and `range`.
fn refused(text: &str, key: &str, range: &str) {
    let line = line_setting(text, key);
    let err = match Scenario::parse("sims/limits.toml", text) {
        Ok(_) => panic!("{key}: a scenario with\n{text}\nmust be refused at load"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("sims/limits.toml")
            && err.contains(&format!("line {line}"))
            && err.contains(key)
            && err.contains(range),
        "the error must name the file, line {line}, {key} and {range}: {err}"
    );
}

/// Regression: huge times loaded without complaint and then panicked in tonic (a deadline past
/// the end of `Instant`), overflowed in the in-memory etcd (a lease time-to-live near
/// `i64::MAX`) or panicked at run time (`[etcd] port = 0`).
#[test]
fn times_and_ports_out_of_range_are_refused_with_the_range() {
    let day = "0..=86400000";
    let cases = [
        (
            "",
            "",
            "[workload]\ndeadline_ms = 400000000000000",
            "workload.deadline_ms",
            "1..=86400000",
        ),
        ("", "", "[workload]\npacing_ms = 18446744073709551615", "workload.pacing_ms", day),
        ("", "", "[workload]\nstart_ms = 18446744073709551615", "workload.start_ms", day),
        ("", "connect_timeout_ms = 0", "", "client.connect_timeout_ms", "1..=86400000"),
        (
            "",
            "",
            "[client.keepalive]\ninterval_ms = 18446744073709551615",
            "client.keepalive.interval_ms",
            "1..=86400000",
        ),
        (
            "",
            "",
            "[client.keepalive]\ntimeout_ms = 0",
            "client.keepalive.timeout_ms",
            "1..=86400000",
        ),
        (
            "",
            "",
            "[etcd]\nrequest_timeout_ms = 18446744073709551615",
            "etcd.request_timeout_ms",
            "1..=86400000",
        ),
        (
            "",
            "",
            "[etcd]\nmin_lease_ttl_s = 9223372036854775807",
            "etcd.min_lease_ttl_s",
            "1..=86400",
        ),
        ("", "", "[etcd]\nport = 0", "etcd.port", "1..=65535"),
        ("time_limit_ms = 0", "", "", "time_limit_ms", "1..=600000"),
        ("time_limit_ms = 18446744073709551615", "", "", "time_limit_ms", "1..=600000"),
        ("", "", "[network]\nmax_latency_ms = 18446744073709551615", "network.max_latency_ms", day),
        (
            "",
            "",
            "[[network.link]]\nbetween = [\"a\", \"client\"]\nlatency_ms = 18446744073709551615",
            "latency_ms",
            day,
        ),
        (
            "",
            "",
            "[[fault]]\naction = \"crash\"\nhost = \"a\"\nat_ms = 18446744073709551615",
            "at_ms",
            "0..=time_limit_ms (120000)",
        ),
        (
            "",
            "",
            "[expect]\nsettle_ms = 18446744073709551615\nweights = { a = 1 }",
            "settle_ms",
            day,
        ),
        ("", "", "[expect]\nfailover_within_ms = 18446744073709551615", "failover_within_ms", day),
    ];
    for (top, client, rest, key, range) in cases {
        refused(&scenario(top, client, rest), key, range);
    }
    let text = "[[server]]\nname = \"a\"\nport = 0\n[client]\ntarget = \"pass:///a:9080\"\n";
    refused(text, "port", "1..=65535");
}

/// Regression: `count = 4294967295` tried to allocate hundreds of gigabytes, `concurrency =
/// 4294967295` spawned a task per worker until memory ran out, and thousands of servers ran
/// for minutes.
#[test]
fn sizes_beyond_the_documented_limits_are_refused() {
    let many = "[[server]]\nname = \"s\"\nport = 1\ncount = 4294967295";
    refused(&scenario("", "", many), "count", "1..=64");
    refused(&scenario("", "", "[workload]\nconcurrency = 4294967295"), "concurrency", "1..=1024");
    refused(&scenario("", "", "[workload]\nconcurrency = 0"), "concurrency", "1..=1024");
    refused(&scenario("", "", "[workload]\nrpcs = 4294967295"), "workload.rpcs", "1..=20000");
    let target = "target = \"pass:///a:9080#1024,a:9081#1024,a:9082#1024,a:9083#1024,a:9084#1\"";
    refused(&scenario("", target, ""), "client.target", "at most 4096 connections");
    let faults: String = (0..=MAX_FAULTS)
        .map(|i| format!("[[fault]]\nat_ms = {i}\naction = \"crash\"\nhost = \"a\"\n"))
        .collect();
    let err = Scenario::parse("sims/limits.toml", &scenario("", "", &faults))
        .expect_err("too many faults must be refused")
        .to_string();
    assert!(err.contains("fault") && err.contains("at most 256"), "{err}");
}

/// Regression: each of these loaded and was then silently read as something else (a link of
/// three hosts as a link of the first two), never checked (an unknown policy or state name
/// never matches), divided by zero (NaN weights), or failed every seed at run time (a bad target
/// or service config).
#[test]
fn settings_that_used_to_be_silently_accepted_are_refused() {
    let link = "[[network.link]]\nbetween = [\"a\", \"client\", \"a\"]\nlatency_ms = 5";
    refused(&scenario("", "", link), "between", "exactly two hosts");
    let fault =
        "[[fault]]\nat_ms = 5\naction = \"partition\"\nbetween = [\"a\", \"client\", \"a\"]";
    refused(&scenario("", "", fault), "between", "exactly two hosts");
    let expect = |body: &str| scenario("", "", &format!("[expect]\n{body}"));
    refused(&expect("policy = \"round_robbin\""), "expect.policy", "pick_first, round_robin");
    refused(&expect("all_fail_with = \"UNAVAILABEL\""), "expect.all_fail_with", "UNAVAILABLE");
    refused(&expect("final_state = \"RUNNING\""), "expect.final_state", "TRANSIENT_FAILURE");
    refused(&expect("weights = { a = nan }"), "expect.weights", "finite and at least 0");
    refused(&expect("weights = { a = -1.0 }"), "expect.weights", "finite and at least 0");
    refused(&expect("weights = { a = 0.0 }"), "expect.weights", "above 0");
    refused(&expect("weights = { a = 1 }\ntolerance = nan"), "expect.tolerance", "0.0..=1.0");
    refused(&expect("weights = { a = 1 }\ntolerance = -0.1"), "expect.tolerance", "0.0..=1.0");
    refused(&expect("tolerance = 0.1"), "expect.tolerance", "goes with `weights`");
    refused(&expect("settle_ms = 100"), "expect.settle_ms", "goes with `weights`");
    let contains = "fail_message_contains = \"x\"";
    refused(&expect(contains), "expect.fail_message_contains", "goes with `all_fail_with`");
    let manual = "manual_addresses = [\"a:9080\"]";
    refused(&scenario("", manual, ""), "client.manual_addresses", "manual:/// target");
    let bad_target = "target = \"pass:///a:9080#0\"";
    refused(&scenario("", bad_target, ""), "client.target", "1..=1024");
    let bad_target = "target = \"pass://auth/a:9080\"";
    refused(&scenario("", bad_target, ""), "client.target", "authority");
    let config = "service_config = '{\"loadBalancingConfig\": 5}'";
    refused(&scenario("", config, ""), "client.service_config", "loadBalancingConfig");
}

/// Regression: a `dns:///` target did a real system lookup from inside the simulation.
#[test]
fn a_dns_target_is_refused_because_it_would_leave_the_simulation() {
    let target = "target = \"dns:///a:9080\"";
    refused(&scenario("", target, ""), "client.target", "real system lookup");
}

#[test]
fn the_ends_of_every_range_are_accepted() {
    let top = "time_limit_ms = 600000";
    let client =
        "connect_timeout_ms = 86400000\n[client.keepalive]\ninterval_ms = 1\ntimeout_ms = 86400000";
    let rest = "[workload]\nrpcs = 20000\nconcurrency = 1024\ndeadline_ms = 86400000\n\
                [etcd]\nport = 65535\nmin_lease_ttl_s = 86400\nrequest_timeout_ms = 1\n\
                [[fault]]\nat_ms = 600000\naction = \"crash\"\nhost = \"a\"\n\
                [expect]\nweights = { a = 0.0, b1 = 1 }\ntolerance = 1.0\npolicy = \"pick_first\"\n\
                all_fail_with = \"DEADLINE_EXCEEDED\"\nfinal_state = \"IDLE\"";
    let text = scenario(top, client, rest)
        .replace("[client]", "[[server]]\nname = \"b\"\nport = 1\ncount = 63\n[client]");
    let target = "target = \"pass:///a:9080#1024,a:9081#1024,a:9082#1024,a:9083#1024\"";
    let text = text.replace("target = \"pass:///a:9080\"", target);
    let s = Scenario::parse("sims/ends.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.server_list().len(), MAX_SERVERS, "64 servers are allowed");
}

#[test]
fn health_faults_need_a_known_server_and_service_goes_with_them_only() {
    let fault = |body: &str| scenario("", "", &format!("[[fault]]\nat_ms = 5\n{body}"));
    refused(&fault("action = \"unhealthy\"\nserver = \"nobody\""), "server", "no server is named");
    refused(&fault("action = \"healthy\"\nserver = \"nobody\""), "server", "no server is named");
    refused(&fault("action = \"crash\"\nhost = \"a\"\nservice = \"x\""), "service", "unhealthy");
    let server = "[[server]]\nname = \"b\"\nport = 9080\nhealth = \"sick\"";
    let err = Scenario::parse("sims/limits.toml", &scenario("", "", server))
        .expect_err("an unknown health mode must be refused");
    assert!(err.to_string().contains("health"), "the error must name the key: {err}");
    let ok = fault("action = \"unhealthy\"\nserver = \"a\"\nservice = \"\"");
    Scenario::parse("sims/limits.toml", &ok).expect("an unhealthy fault on a known server loads");
}
