//! The properties of discovery: which addresses the resolver published and when, and what the
//! servers saw as addresses came and went — servers that must stop getting RPCs after a time,
//! connections opened after a time, the final address set, and the `etcd` resolver's full
//! re-reads after compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::trace::secs;
use super::{Observed, Property, premise_missing, property};

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Per server: no RPC that started at or after its time was served by it. Its premise: the
/// server served RPCs before that time, and RPCs still succeeded (elsewhere) after it; a server
/// that never served, or a workload that ended first, shows nothing.
pub(super) fn no_rpcs_after(o: &Observed<'_>, want: &BTreeMap<String, u64>) -> Property {
    let mut parts = Vec::new();
    let mut passed = true;
    for (server, &ms) in want {
        let served: Vec<_> = o.ok().filter(|r| r.server() == Some(server.as_str())).collect();
        let late = served.iter().filter(|r| r.start >= at(ms)).count();
        let early = served.len() - late;
        let after = o.ok().filter(|r| r.start >= at(ms)).count();
        passed &= late == 0 && early > 0 && after > 0;
        let last = served.iter().map(|r| r.start).max();
        parts.push(format!(
            "{server}: {late} of {after} OK RPCs started from {} (it served {early} before; its last started {})",
            secs(at(ms)),
            last.map_or_else(|| "never".to_owned(), secs)
        ));
    }
    property("no_rpcs_after", passed, parts.join("; "))
}

/// Per server: connections accepted at or after `from`, exactly. Its premise: RPCs still
/// succeeded after `from` (a workload over by then would count nothing).
pub(super) fn connections_after(
    o: &Observed<'_>,
    from_ms: u64,
    want: &BTreeMap<String, u64>,
) -> Property {
    let mut parts = Vec::new();
    let after = o.ok().filter(|r| r.start >= at(from_ms)).count();
    let mut passed = after > 0;
    for server in &o.servers {
        let got = server.connections.iter().filter(|c| c.opened >= at(from_ms)).count() as u64;
        match want.get(&server.name) {
            Some(&w) => {
                passed &= got == w;
                parts.push(format!("{}={got} (want {w})", server.name));
            }
            None => parts.push(format!("{}={got}", server.name)),
        }
    }
    let measured =
        format!("from {} ({after} OK RPCs started): {}", secs(at(from_ms)), parts.join(", "));
    property("connections_after", passed, measured)
}

/// Per address: it was published, and every update from its time on leaves it out.
pub(super) fn unresolved_by(o: &Observed<'_>, want: &BTreeMap<String, u64>) -> Property {
    let updates = &o.log.resolutions;
    let mut parts = Vec::new();
    let mut passed = true;
    for (addr, &ms) in want {
        let listed = |i: usize| updates[i].1.contains(addr);
        let Some(last) = (0..updates.len()).rev().find(|&i| listed(i)) else {
            passed = false;
            parts.push(format!("{addr} was never resolved"));
            continue;
        };
        let Some((removed, _)) = updates.get(last + 1) else {
            passed = false;
            parts.push(format!("{addr} is still in the last update ({})", secs(updates[last].0)));
            continue;
        };
        passed &= *removed <= at(ms);
        parts.push(format!("{addr} left at {} (by {})", secs(*removed), secs(at(ms))));
    }
    property("unresolved_by", passed, parts.join("; "))
}

/// The last update's distinct addresses are `want`, in any order.
pub(super) fn final_addresses(o: &Observed<'_>, want: &[String]) -> Property {
    let mut want = want.to_vec();
    want.sort();
    let Some((when, last)) = o.log.resolutions.last() else {
        return property("final_addresses", false, "the resolver published nothing");
    };
    let mut got = last.clone();
    got.sort();
    let measured = format!(
        "[{}] at {} (want [{}]); {} updates",
        got.join(", "),
        secs(*when),
        want.join(", "),
        o.log.resolutions.len()
    );
    property("final_addresses", got == want, measured)
}

/// The `etcd` resolver found its watch compacted, and read the prefix again, often enough.
pub(super) fn compacted_rereads(o: &Observed<'_>, least: u64) -> Property {
    let Some(counts) = o.log.etcd_resolver else {
        return premise_missing("compacted_rereads", "no etcd resolver ran");
    };
    let measured = format!(
        "{} compacted watches (at least {least}); {} reads, {} watches, {} failures",
        counts.compactions, counts.reads, counts.watches, counts.failures
    );
    property("compacted_rereads", counts.compactions >= least, measured)
}
