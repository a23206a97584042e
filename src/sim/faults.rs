//! Applying the fault schedule to a running simulation.

use std::time::Duration;

use super::etcd::SimEtcd;
use super::scenario::{Action, Fault, parse_address};
use super::server::{BodyDelays, GoAways, Healths};
use super::trace::Trace;
use crate::health_pb::health_check_response::ServingStatus;
use crate::resolver::manual::ManualResolver;

/// A fault as applied: the simulated time it took effect (the first tick boundary at or after
/// its `at_ms`).
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) at: Duration,
    pub(crate) fault: Fault,
}

/// The schedule in time order (faults at the same time keep their file order).
pub(crate) fn schedule(faults: &[Fault]) -> Vec<Fault> {
    let mut sorted = faults.to_vec();
    sorted.sort_by_key(|f| f.at_ms);
    sorted
}

/// What a fault acts on besides the simulation itself: the channel's manual resolver, present
/// for `manual:` targets; the run's etcd, present with `[etcd]`; each server's body delay and
/// GOAWAY handle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets<'a> {
    pub(crate) manual: Option<&'a ManualResolver>,
    pub(crate) etcd: Option<&'a SimEtcd>,
    pub(crate) body_delays: &'a BodyDelays,
    pub(crate) goaways: &'a GoAways,
    pub(crate) healths: &'a Healths,
}

/// Applies one fault.
pub(crate) fn apply(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    targets: Targets<'_>,
    trace: &Trace,
) {
    let Targets { manual, etcd, body_delays, goaways, healths } = targets;
    let pair = fault.between.as_ref().map(|[a, b]| (a.as_str(), b.as_str()));
    let at = sim.elapsed();
    if let (Action::SlowBody, Some(server)) = (fault.action, fault.server.as_deref()) {
        let delay = fault.delay_ms.filter(|&ms| ms > 0).map(Duration::from_millis);
        return body_delays.of(server).set(delay);
    }
    if let (Action::GoAway, Some(server)) = (fault.action, fault.server.as_deref()) {
        return goaways.of(server).send();
    }
    if let (Action::Unhealthy | Action::Healthy, Some(server)) =
        (fault.action, fault.server.as_deref())
    {
        let status = if fault.action == Action::Unhealthy {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        let health = healths.of(server);
        match &fault.service {
            Some(service) => {
                health.set(service, status);
            }
            None => health.set_all(status),
        }
        return;
    }
    match (fault.action, etcd, fault.server.as_deref()) {
        (Action::Register, Some(etcd), Some(server)) => {
            return etcd.registrations.want(server, true);
        }
        (Action::Deregister, Some(etcd), Some(server)) => {
            return etcd.registrations.want(server, false);
        }
        (Action::ExpireLease, Some(etcd), Some(server)) => {
            return etcd.expire_lease(server, trace, at);
        }
        (Action::Compact, Some(etcd), _) => return etcd.compact(trace, at),
        _ => {}
    }
    match (fault.action, fault.host.as_deref(), pair) {
        (Action::Crash, Some(host), _) => sim.crash(host),
        (Action::Restart | Action::Bounce, Some(host), _) => sim.bounce(host),
        (Action::Partition, _, Some((a, b))) if fault.oneway => sim.partition_oneway(a, b),
        (Action::Partition, _, Some((a, b))) => sim.partition(a, b),
        (Action::Repair, _, Some((a, b))) if fault.oneway => sim.repair_oneway(a, b),
        (Action::Repair, _, Some((a, b))) => sim.repair(a, b),
        (Action::Hold, _, Some((a, b))) => sim.hold(a, b),
        (Action::Release, _, Some((a, b))) => sim.release(a, b),
        (Action::Latency, _, Some((a, b))) => {
            let latency = Duration::from_millis(fault.latency_ms.unwrap_or_default());
            sim.set_link_latency(a, b, latency);
        }
        (Action::Resolve, _, _) => {
            let addresses = fault.addresses.iter().flatten().filter_map(|a| parse_address(a).ok());
            match manual {
                // Like a DNS record that changed: the channel learns it when it re-resolves.
                Some(manual) if fault.push == Some(false) => {
                    manual.stage_addresses(addresses.collect());
                }
                Some(manual) => manual.update_addresses(addresses.collect()),
                None => {}
            }
        }
        // Scenario validation guarantees each action has what it needs.
        _ => unreachable!("fault {fault:?} passed validation without its host or pair"),
    }
}
