//! Writing a scenario back as a `sims/*.toml` file: the form a person would write, with every
//! key that holds its default left out, so a generated or shrunk scenario reads like a
//! hand-written one and loads back to an equal scenario.
//!
//! Every struct is destructured without `..`, so a key added to the schema and forgotten here
//! is a compile error, not a key silently dropped from written files.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    BackoffSpec, ClientSpec, EtcdSpec, Expect, Fault, KeepAliveSpec, Link, Network, Scenario,
    ServerSpec, Workload, default_connect_timeout_ms, default_time_limit_ms,
};

impl Scenario {
    /// The scenario as the text of a `sims/*.toml` file that [`Scenario::parse`] reads back to an
    /// equal scenario (its `path` aside). `comment` becomes the file's leading `# ` lines (say
    /// what the scenario demonstrates, or which property it breaks); keys that hold their
    /// default are left out.
    ///
    /// # Determinism
    /// The text is a function of the scenario: tables in a fixed order, keys in schema order,
    /// maps in key order.
    pub fn to_toml(&self, comment: &str) -> String {
        let Scenario {
            path: _,
            regression_seeds,
            time_limit_ms,
            servers,
            client,
            etcd,
            workload,
            network,
            faults,
            expect,
        } = self;
        let mut w = Writer::default();
        for line in comment.lines() {
            let line = line.trim_end();
            w.line(&if line.is_empty() { "#".to_owned() } else { format!("# {line}") });
        }
        w.blank();
        if !regression_seeds.is_empty() {
            w.key("regression_seeds", regression_seeds);
        }
        w.key_unless("time_limit_ms", time_limit_ms, &default_time_limit_ms());
        if let Some(etcd) = etcd {
            write_etcd(&mut w, etcd);
        }
        for server in servers {
            write_server(&mut w, server);
        }
        write_client(&mut w, client);
        write_workload(&mut w, workload);
        write_network(&mut w, network);
        for fault in faults {
            write_fault(&mut w, fault);
        }
        write_expect(&mut w, expect);
        w.finish()
    }
}

fn write_etcd(w: &mut Writer, etcd: &EtcdSpec) {
    let EtcdSpec { host, port, min_lease_ttl_s, request_timeout_ms } = etcd;
    let default = EtcdSpec::default();
    w.table("[etcd]");
    w.key_unless("host", host, &default.host);
    w.key_unless("port", port, &default.port);
    w.key_unless("min_lease_ttl_s", min_lease_ttl_s, &default.min_lease_ttl_s);
    w.key_unless("request_timeout_ms", request_timeout_ms, &default.request_timeout_ms);
}

fn write_server(w: &mut Writer, server: &ServerSpec) {
    let ServerSpec {
        name,
        host,
        port,
        count,
        register,
        body_delay_ms,
        max_connection_age_ms,
        max_connection_age_grace_ms,
        health,
    } = server;
    w.table("[[server]]");
    w.key("name", name);
    w.opt("host", host);
    w.key("port", port);
    w.opt("count", count);
    // An inline table: `RegisterSpec` leaves out its own defaults when serialised.
    w.opt("register", register);
    w.opt("body_delay_ms", body_delay_ms);
    w.opt("max_connection_age_ms", max_connection_age_ms);
    w.opt("max_connection_age_grace_ms", max_connection_age_grace_ms);
    w.opt("health", health);
}

fn write_client(w: &mut Writer, client: &ClientSpec) {
    let ClientSpec {
        target,
        service_config,
        manual_addresses,
        connect_timeout_ms,
        keepalive,
        backoff,
    } = client;
    w.table("[client]");
    w.key("target", target);
    w.opt("manual_addresses", manual_addresses);
    w.opt("service_config", service_config);
    w.key_unless("connect_timeout_ms", connect_timeout_ms, &default_connect_timeout_ms());

    let KeepAliveSpec { enabled, interval_ms, timeout_ms } = keepalive;
    let default = KeepAliveSpec::default();
    w.table_unless_default("[client.keepalive]", keepalive, &default);
    w.key_unless("enabled", enabled, &default.enabled);
    w.key_unless("interval_ms", interval_ms, &default.interval_ms);
    w.key_unless("timeout_ms", timeout_ms, &default.timeout_ms);

    let BackoffSpec { initial_ms, multiplier, jitter, max_ms } = backoff;
    let default = BackoffSpec::default();
    w.table_unless_default("[client.backoff]", backoff, &default);
    w.key_unless("initial_ms", initial_ms, &default.initial_ms);
    w.key_unless("multiplier", multiplier, &default.multiplier);
    w.key_unless("jitter", jitter, &default.jitter);
    w.key_unless("max_ms", max_ms, &default.max_ms);
}

fn write_workload(w: &mut Writer, workload: &Workload) {
    let Workload { rpcs, concurrency, deadline_ms, wait_for_ready, pacing_ms, start_ms } = workload;
    let default = Workload::default();
    w.table_unless_default("[workload]", workload, &default);
    w.key_unless("rpcs", rpcs, &default.rpcs);
    w.key_unless("concurrency", concurrency, &default.concurrency);
    w.key_unless("deadline_ms", deadline_ms, &default.deadline_ms);
    w.key_unless("wait_for_ready", wait_for_ready, &default.wait_for_ready);
    w.key_unless("pacing_ms", pacing_ms, &default.pacing_ms);
    w.key_unless("start_ms", start_ms, &default.start_ms);
}

fn write_network(w: &mut Writer, network: &Network) {
    let Network { min_latency_ms, max_latency_ms, links } = network;
    let default = Network::default();
    let latencies = (min_latency_ms, max_latency_ms);
    if latencies != (&default.min_latency_ms, &default.max_latency_ms) {
        w.table("[network]");
        w.key_unless("min_latency_ms", min_latency_ms, &default.min_latency_ms);
        w.key_unless("max_latency_ms", max_latency_ms, &default.max_latency_ms);
    }
    for Link { between, latency_ms } in links {
        w.table("[[network.link]]");
        w.key("between", between);
        w.key("latency_ms", latency_ms);
    }
}

fn write_fault(w: &mut Writer, fault: &Fault) {
    let Fault {
        at_ms,
        action,
        host,
        between,
        oneway,
        latency_ms,
        addresses,
        push,
        server,
        delay_ms,
        service,
    } = fault;
    w.table("[[fault]]");
    w.key("at_ms", at_ms);
    w.key("action", action);
    w.opt("host", host);
    w.opt("server", server);
    w.opt("service", service);
    w.opt("between", between);
    w.key_unless("oneway", oneway, &false);
    w.opt("latency_ms", latency_ms);
    w.opt("delay_ms", delay_ms);
    w.opt("addresses", addresses);
    w.opt("push", push);
}

fn write_expect(w: &mut Writer, expect: &Expect) {
    let Expect {
        policy,
        connections,
        total_connections,
        subchannels,
        weights,
        settle_ms,
        tolerance,
        failover_within_ms,
        recovery_within_ms,
        lost_per_fault,
        max_failed,
        all_fail_with,
        fail_message_contains,
        liveness_within_ms,
        final_state,
        no_rpcs_after_ms,
        unhealthy_gets_no_rpcs_after_ms,
        connections_after,
        connections_after_ms,
        unresolved_by_ms,
        final_addresses,
        min_compacted_rereads,
    } = expect;
    w.table_unless_default("[expect]", expect, &Expect::default());
    w.opt("policy", policy);
    w.opt("subchannels", subchannels);
    w.opt("connections", connections);
    w.opt("total_connections", total_connections);
    w.opt("connections_after", connections_after);
    w.opt("connections_after_ms", connections_after_ms);
    w.opt("failover_within_ms", failover_within_ms);
    w.opt("recovery_within_ms", recovery_within_ms);
    w.opt("settle_ms", settle_ms);
    // Whole-number weights read as the integers a person writes (`{ a = 2, b = 1 }`); the
    // loader reads an integer weight as the same f64.
    if let Some(weights) = weights {
        let shown: Vec<(&String, Number)> =
            weights.iter().map(|(name, weight)| (name, Number(*weight))).collect();
        w.key("weights", &shown.into_iter().collect::<std::collections::BTreeMap<_, _>>());
    }
    w.opt("tolerance", tolerance);
    w.opt("lost_per_fault", lost_per_fault);
    w.opt("max_failed", max_failed);
    w.opt("all_fail_with", all_fail_with);
    w.opt("fail_message_contains", fail_message_contains);
    w.opt("liveness_within_ms", liveness_within_ms);
    w.opt("final_state", final_state);
    w.opt("no_rpcs_after_ms", no_rpcs_after_ms);
    w.opt("unhealthy_gets_no_rpcs_after_ms", unhealthy_gets_no_rpcs_after_ms);
    w.opt("unresolved_by_ms", unresolved_by_ms);
    w.opt("final_addresses", final_addresses);
    w.opt("min_compacted_rereads", min_compacted_rereads);
}

/// A weight: written as an integer when it is a whole number TOML's integers hold exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Number(f64);

impl Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is an exact f64
        if self.0.fract() == 0.0 && self.0.abs() < EXACT {
            #[allow(clippy::cast_possible_truncation)] // whole and below 2^53: exact
            return s.serialize_i64(self.0 as i64);
        }
        s.serialize_f64(self.0)
    }
}

/// Builds the file: `[table]` headers with a blank line before each, `key = value` lines with
/// values in TOML's inline form.
#[derive(Debug, Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn line(&mut self, text: &str) {
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn blank(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn table(&mut self, header: &str) {
        self.blank();
        self.line(header);
    }

    /// Opens `header` unless the whole table holds its defaults; the keys that follow are then
    /// all left out by [`Writer::key_unless`].
    fn table_unless_default<T: PartialEq>(&mut self, header: &str, value: &T, default: &T) {
        if value != default {
            self.table(header);
        }
    }

    fn key<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        let _ = writeln!(self.out, "{key} = {}", inline(value));
    }

    fn key_unless<T: Serialize + PartialEq + ?Sized>(&mut self, key: &str, value: &T, default: &T) {
        if value != default {
            self.key(key, value);
        }
    }

    fn opt<T: Serialize>(&mut self, key: &str, value: &Option<T>) {
        if let Some(value) = value {
            self.key(key, value);
        }
    }

    fn finish(self) -> String {
        self.out
    }
}

/// `value` in TOML's inline form: strings in the plainest quoting that holds them (literal
/// `'...'` for JSON, `'''` for several lines), maps as `{ k = v }`.
///
/// Every value of a loaded scenario came from TOML and so has an inline form. A value built in
/// code that has none (an integer above `i64::MAX`) is written as a string naming the problem,
/// so the file fails to load with an error at that key instead of loading something else.
fn inline<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = String::new();
    match value.serialize(toml::ser::ValueSerializer::new(&mut out)) {
        Ok(_) => out,
        Err(error) => format!("{:?}", format!("cannot be written as TOML: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario's Debug text without its `path`, which is not part of the file.
    fn debug_without_path(scenario: &Scenario) -> String {
        let mut copy = scenario.clone();
        copy.path = std::path::PathBuf::new();
        format!("{copy:#?}")
    }

    #[test]
    fn every_scenario_in_sims_reads_back_equal_from_its_written_toml() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sims");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("sims/ is readable")
            .map(|entry| entry.expect("a sims/ entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 20, "sims/ must hold the scenarios, found {}", files.len());
        for file in files {
            let scenario = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
            let text = scenario.to_toml("written back");
            let again = Scenario::parse("written.toml", &text).unwrap_or_else(|e| {
                panic!("the written form of {} must load and validate: {e}\n{text}", file.display())
            });
            assert_eq!(
                debug_without_path(&again),
                debug_without_path(&scenario),
                "{} must read back equal from its written form:\n{text}",
                file.display()
            );
        }
    }

    #[test]
    fn a_written_scenario_leaves_out_default_keys_and_starts_with_its_comment() {
        let text =
            "[[server]]\nname = \"a\"\nport = 9080\n\n[client]\ntarget = \"pass:///a:9080\"\n";
        let scenario = Scenario::parse("m.toml", text).unwrap();
        let written = scenario.to_toml("Breaks max_failed.\n\nShrunk from m.toml.");
        assert_eq!(
            written,
            format!("# Breaks max_failed.\n#\n# Shrunk from m.toml.\n\n{text}"),
            "a scenario with only required keys must be written with only those keys"
        );
    }

    #[test]
    fn nested_values_are_written_inline_as_a_person_writes_them() {
        let scenario = Scenario::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sims/etcd_lease_expiry.toml"),
        )
        .unwrap();
        let written = scenario.to_toml("");
        for line in [
            "register = { service = \"echo\", ttl_s = 2 }",
            "unresolved_by_ms = { \"a:9080\" = 4500 }",
            "[etcd]\n",
            "service_config = \"\"\"\n{\n",
        ] {
            assert!(written.contains(line), "the written file must contain {line:?}:\n{written}");
        }
        let weighted = Scenario::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sims/crash_restart_weighted.toml"),
        )
        .unwrap()
        .to_toml("");
        assert!(
            weighted.contains("weights = { a = 2, b = 1 }"),
            "whole-number weights must be written as integers:\n{weighted}"
        );
    }
}
