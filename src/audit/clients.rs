//! Judging real clients by what instrumented servers saw (the original notes' "handshake"
//! check, made a verdict).
//!
//! Start instrumented servers, let any client — a grpc-go client with a custom resolver, say —
//! run against them, then judge the servers' records with [`judge`]: each server must have
//! accepted exactly the expected number of connections, and its share of the RPCs must be
//! within a tolerance of its share of the expected connections (round_robin's split).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::server::ServerStats;

/// What one server was expected to see and what it saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerVerdict {
    /// The server's name.
    pub server: String,
    /// Connections expected (`#N`); `None` when the expectation names no count for it.
    pub expected_connections: Option<u32>,
    /// Connections the server accepted.
    pub connections_accepted: u64,
    /// RPCs it served, all methods together.
    pub rpcs: u64,
    /// Its share of all RPCs served by the audited servers.
    pub rpc_share: f64,
    /// Its share of the expected connections, the split round_robin would give.
    pub expected_share: Option<f64>,
    /// Whether the connection count matched and the share was within tolerance.
    pub pass: bool,
    /// Why it failed, when it did.
    pub reasons: Vec<String>,
}

/// The verdict over every server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientAudit {
    /// Whether every judged server passed.
    pub pass: bool,
    /// One verdict per server, in the order given.
    pub servers: Vec<ServerVerdict>,
    /// The tolerance used for RPC shares.
    pub tolerance: f64,
}

/// Judges `stats` against `expected` connection counts by server name. Servers with no
/// expectation are reported but not judged. RPC shares are judged only when some RPC was served
/// and some connection was expected.
pub fn judge(
    stats: &[ServerStats],
    expected: &BTreeMap<String, u32>,
    tolerance: f64,
) -> ClientAudit {
    let total_rpcs: u64 = stats.iter().map(|s| s.rpcs).sum();
    let total_expected: u32 = expected.values().sum();
    let servers: Vec<ServerVerdict> = stats
        .iter()
        .map(|s| {
            let expected_connections = expected.get(&s.server).copied();
            let rpc_share = if total_rpcs == 0 { 0.0 } else { s.rpcs as f64 / total_rpcs as f64 };
            let expected_share = expected_connections
                .filter(|_| total_expected > 0)
                .map(|n| f64::from(n) / f64::from(total_expected));
            let mut reasons = Vec::new();
            if let Some(n) = expected_connections
                && s.connections_accepted != u64::from(n)
            {
                reasons.push(format!(
                    "accepted {} connection(s), expected {n}",
                    s.connections_accepted
                ));
            }
            if let Some(share) = expected_share.filter(|_| total_rpcs > 0)
                && (rpc_share - share).abs() > tolerance
            {
                reasons.push(format!(
                    "served {:.1}% of RPCs, expected {:.1}% ± {:.1}%",
                    rpc_share * 100.0,
                    share * 100.0,
                    tolerance * 100.0
                ));
            }
            ServerVerdict {
                server: s.server.clone(),
                expected_connections,
                connections_accepted: s.connections_accepted,
                rpcs: s.rpcs,
                rpc_share,
                expected_share,
                pass: reasons.is_empty(),
                reasons,
            }
        })
        .collect();
    ClientAudit { pass: servers.iter().all(|s| s.pass), servers, tolerance }
}

impl fmt::Display for ClientAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.servers {
            let expected = s.expected_connections.map_or("-".to_owned(), |n| n.to_string());
            let share = s
                .expected_share
                .map_or(String::new(), |e| format!(" (expected {:.1}%)", e * 100.0));
            writeln!(
                f,
                "{:<5} {:<12} connections {}/{expected}, RPCs {} = {:.1}%{share}{}",
                if s.pass { "PASS" } else { "FAIL" },
                s.server,
                s.connections_accepted,
                s.rpcs,
                s.rpc_share * 100.0,
                if s.reasons.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.reasons.join("; "))
                }
            )?;
        }
        write!(f, "verdict: {}", if self.pass { "PASS" } else { "FAIL" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(server: &str, connections: u64, rpcs: u64) -> ServerStats {
        ServerStats {
            server: server.into(),
            connections_accepted: connections,
            connections_closed: 0,
            rpcs,
            connections_dropped: 0,
            connections: Vec::new(),
        }
    }

    fn expect(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn matching_connections_and_split_pass() {
        let audit =
            judge(&[stats("a", 2, 200), stats("b", 1, 100)], &expect(&[("a", 2), ("b", 1)]), 0.05);
        assert!(audit.pass, "{audit}");
    }

    #[test]
    fn a_connection_count_off_by_one_fails_naming_both_numbers() {
        let audit =
            judge(&[stats("a", 1, 150), stats("b", 1, 150)], &expect(&[("a", 2), ("b", 1)]), 0.05);
        assert!(!audit.pass);
        assert_eq!(audit.servers[0].reasons[0], "accepted 1 connection(s), expected 2");
        assert!(audit.servers[0].reasons[1].contains("served 50.0% of RPCs, expected 66.7%"));
    }

    #[test]
    fn a_server_without_an_expectation_is_reported_but_not_judged() {
        let audit = judge(&[stats("a", 1, 10), stats("c", 5, 0)], &expect(&[("a", 1)]), 0.05);
        assert!(audit.pass, "{audit}");
        assert_eq!(audit.servers[1].expected_connections, None);
    }
}
