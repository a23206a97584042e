//! The properties measured in windows around the fault schedule: failover after each crash,
//! partition or hold; recovery of the split after each heal; RPCs lost per fault; and liveness
//! after the last fault.

use std::time::Duration;

use super::super::scenario::Action;
use super::super::trace::secs;
use super::{Observed, Property, premise_missing, property, shares_text, within};
use crate::sim::RpcRecord;

pub(super) fn failover(o: &Observed<'_>, after: Duration) -> Property {
    let mut parts = Vec::new();
    let mut passed = true;
    for (i, applied) in o.applied.iter().enumerate() {
        if !matches!(applied.fault.action, Action::Crash | Action::Partition | Action::Hold) {
            continue;
        }
        let cut = o.cut_off(&applied.fault);
        if cut.is_empty() {
            continue;
        }
        let (from, until) = (applied.at + after, o.healed_at(i));
        let window: Vec<&RpcRecord> = o.ok().filter(|r| r.start >= from && r.end < until).collect();
        let wrong = window.iter().filter(|r| r.server().is_some_and(|s| cut.contains(&s))).count();
        // Failing over from a server that served nothing before the fault proves nothing.
        let served_before = o
            .ok()
            .filter(|r| r.end <= applied.at && r.server().is_some_and(|s| cut.contains(&s)))
            .count();
        // An empty window (the fault healed before failover was due) proves nothing either.
        let ok = wrong == 0 && !window.is_empty() && served_before > 0;
        passed &= ok;
        parts.push(format!(
            "{} at {}: {wrong} of {} OK RPCs from {} to {} went to {} (which served {served_before} before)",
            applied.fault.describe(),
            secs(applied.at),
            window.len(),
            secs(from),
            secs(until),
            cut.join("/")
        ));
    }
    if parts.is_empty() {
        return premise_missing("failover", "no crash, partition or hold cuts a server off");
    }
    property("failover", passed, parts.join("; "))
}

/// After each `unhealthy` fault on a server, no successful RPC that starts `after` it (and
/// before that server's next `healthy`) is served by it (gRFC A17: the client sees the server's
/// health and stops picking it). Its premise: the server served RPCs before the fault, and RPCs
/// succeeded elsewhere in the window; otherwise the window shows nothing.
pub(super) fn unhealthy_gets_no_rpcs(o: &Observed<'_>, after: Duration) -> Property {
    let mut parts = Vec::new();
    let mut passed = true;
    for (i, applied) in o.applied.iter().enumerate() {
        let (Action::Unhealthy, Some(server)) = (applied.fault.action, &applied.fault.server)
        else {
            continue;
        };
        let until = o.applied[i + 1..]
            .iter()
            .find(|a| a.fault.action == Action::Healthy && a.fault.server.as_ref() == Some(server))
            .map_or(o.end, |a| a.at);
        let from = applied.at + after;
        let window: Vec<&RpcRecord> =
            o.ok().filter(|r| r.start >= from && r.start < until).collect();
        let wrong = window.iter().filter(|r| r.server() == Some(server.as_str())).count();
        let served_before =
            o.ok().filter(|r| r.end <= applied.at && r.server() == Some(server.as_str())).count();
        passed &= wrong == 0 && !window.is_empty() && served_before > 0;
        parts.push(format!(
            "{} at {}: {wrong} of {} OK RPCs started from {} to {} went to it (it served {served_before} before)",
            applied.fault.describe(),
            secs(applied.at),
            window.len(),
            secs(from),
            secs(until),
        ));
    }
    if parts.is_empty() {
        return premise_missing("unhealthy_gets_no_rpcs", "no unhealthy fault");
    }
    property("unhealthy_gets_no_rpcs", passed, parts.join("; "))
}

pub(super) fn recovery(o: &Observed<'_>, after: Duration) -> Property {
    let Some(want) = o.weights() else {
        return property("recovery", false, "recovery needs expect.weights");
    };
    let tolerance = o.tolerance();
    let mut parts = Vec::new();
    let mut passed = true;
    for (i, applied) in o.applied.iter().enumerate() {
        if !applied.fault.is_heal() {
            continue;
        }
        let from = applied.at + after;
        let until = o.applied.get(i + 1).map_or(o.end, |next| next.at);
        if from >= until {
            continue; // superseded by the next fault before it could settle
        }
        let (total, shares) = o.shares(o.ok().filter(|r| r.start >= from && r.end < until));
        let ok = total >= 10 && within(&shares, &want, tolerance);
        passed &= ok;
        parts.push(format!(
            "after {} at {}: {} of {total} OK RPCs",
            applied.fault.describe(),
            secs(applied.at),
            shares_text(&shares)
        ));
    }
    if parts.is_empty() {
        return premise_missing("recovery", "no heal is followed by a settled window");
    }
    let measured = format!("{} (want {} ±{tolerance})", parts.join("; "), shares_text(&want));
    property("recovery", passed, measured)
}

/// Failed RPCs per fault (those ending between it and the next fault), at most `bound`, and
/// none before the first fault. Its premise: some fault that cuts a server off from the client
/// caught an RPC, in flight at that moment (started at or before it, ended after it) or lost to
/// it. Faults that all strike idle moments lose nothing by construction and show nothing about
/// how losses are bounded. The client's record does not say which connection an RPC retried
/// elsewhere first went to, so an RPC in flight to any server counts; a scenario that means to
/// show a retry makes the cut server busy.
pub(super) fn lost_per_fault(o: &Observed<'_>, bound: u64) -> Property {
    let first = o.applied.first().map_or(o.end, |a| a.at);
    let before = o.failed().filter(|r| r.end < first).count() as u64;
    let mut passed = before == 0;
    let mut parts = vec![format!("before any fault {before}")];
    let mut caught = 0;
    for (i, applied) in o.applied.iter().enumerate() {
        let until = o.applied.get(i + 1).map_or(Duration::MAX, |next| next.at);
        let lost = o.failed().filter(|r| r.end >= applied.at && r.end < until).count() as u64;
        passed &= lost <= bound;
        let mut part = format!("{} {lost}", applied.fault.describe());
        if applied.fault.is_disruption() && !o.cut_off(&applied.fault).is_empty() {
            let in_flight =
                o.log.rpcs.iter().filter(|r| r.start <= applied.at && r.end > applied.at).count();
            caught += in_flight + lost as usize;
            part.push_str(&format!(" ({in_flight} in flight)"));
        }
        parts.push(part);
    }
    if caught == 0 {
        passed = false;
        parts.push("no fault that cuts a server off caught an RPC".to_owned());
    }
    property("lost_per_fault", passed, format!("{} (at most {bound} each)", parts.join(", ")))
}

pub(super) fn liveness(o: &Observed<'_>, bound: Duration) -> Property {
    let last = o.applied.last();
    if let Some(last) = last.filter(|a| a.fault.is_disruption() && !a.fault.is_heal()) {
        let text = format!("the schedule ends with a disruption ({})", last.fault.describe());
        return premise_missing("liveness", text);
    }
    let (healed, what) =
        last.map_or((Duration::ZERO, "start".to_owned()), |a| (a.at, a.fault.describe()));
    let first_ok = o.ok().filter(|r| r.end >= healed).map(|r| r.end).min();
    let after = healed + bound;
    let late = o.log.rpcs.iter().filter(|r| r.start >= after);
    let (late_total, late_failed) =
        late.fold((0, 0), |(n, f), r| (n + 1, f + usize::from(r.server().is_none())));
    let (passed, first) = match first_ok {
        Some(at) => (at - healed <= bound && late_failed == 0, secs(at - healed)),
        None => (false, "never".to_owned()),
    };
    let measured = format!(
        "first OK {first} after {what} at {} (bound {}); {late_failed} of {late_total} RPCs started after {} failed",
        secs(healed),
        secs(bound),
        secs(after)
    );
    property("liveness", passed, measured)
}
