//! `round_robin`: one subchannel per distinct address, RPCs spread over the READY ones
//! (DESIGN §2.4, gRFC A61).
//!
//! Every address gets its own subchannel, so a `pass` target's `a:1#2` (two addresses that
//! differ only in their connection index) gets two connections and twice the share of RPCs.
//! The picker cycles over READY subchannels only, from a start index drawn from the channel's
//! seeded RNG (grpc-go starts at a random index too), and is rebuilt whenever a subchannel
//! enters or leaves READY. Subchannels that go IDLE (a lost connection, or the end of a backoff)
//! reconnect at once.
//!
//! # Health checking
//! Subchannels are created with health checks asked for (gRFC A17): with a `healthCheckConfig`
//! in the service config, a subchannel whose server is not SERVING reports TRANSIENT_FAILURE
//! although its connection stays up, so it leaves the picker (and, being sticky, stays out
//! while its health stream reopens) until it reports READY again.
//!
//! # Aggregate state
//! Each subchannel has an *effective* state: what it last reported, except that once it has
//! reported TRANSIENT_FAILURE it counts as TRANSIENT_FAILURE until it is READY again, even
//! while it reconnects (gRFC A61: "sticky" TRANSIENT_FAILURE per subchannel). The policy then
//! reports, as grpc-go's round_robin does:
//! - READY if any subchannel is READY;
//! - else CONNECTING if any is (effectively) CONNECTING or IDLE: RPCs queue;
//! - else TRANSIENT_FAILURE with the latest connection error: fail-fast RPCs fail at once.
//!
//! So a list whose every address keeps failing fails fast for good, while an update that
//! brings addresses that have never failed queues RPCs until they connect or fail.
//!
//! # Invariants
//! - R1: every subchannel not READY is connecting or will reconnect when its backoff ends.
//! - R2: the picker holds exactly the READY subchannels.
//! - R3: re-resolution is requested when a READY connection is lost, a subchannel fails, the
//!   resolver reports an error, or the list is empty (which is also rejected).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::{
    BadResolverState, ChannelController, ConnectionError, ConnectivityState, LbPolicy, PickInfo,
    PickResult, Picker, PickerUpdate, Subchannel, SubchannelOptions, SubchannelState,
};
use crate::address::{Address, AddressMap, CONNECTION_INDEX, dedup_with_mutant};
use crate::mutant::{self, Mutant};
use crate::resolver::ResolverError;

use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};

/// The `round_robin` policy.
#[derive(Debug)]
pub struct RoundRobin {
    subchannels: AddressMap<Entry>,
    last_error: Option<ConnectionError>,
    state: ConnectivityState,
    /// The READY subchannels in the last published picker.
    published_ready: Vec<Subchannel>,
    /// The reason of the last failing picker published.
    published_reason: String,
    /// The deliberate defect switched on, if any (see [`Mutant`]).
    mutant: Option<Mutant>,
}

/// One subchannel and what the policy knows of it.
#[derive(Debug)]
struct Entry {
    subchannel: Subchannel,
    /// The state it last reported.
    state: ConnectivityState,
    /// Whether it failed since it was last READY.
    sticky_failure: bool,
}

impl Entry {
    fn effective(&self) -> ConnectivityState {
        match self.state {
            Ready => Ready,
            _ if self.sticky_failure => TransientFailure,
            state => state,
        }
    }
}

impl RoundRobin {
    /// A `round_robin` policy with no addresses yet.
    pub fn new() -> Self {
        Self {
            subchannels: AddressMap::new(),
            last_error: None,
            state: Idle,
            published_ready: Vec::new(),
            published_reason: String::new(),
            mutant: None,
        }
    }

    /// Switches on `mutant`'s defect, if it is one of this policy's.
    pub(crate) fn with_mutant(mut self, mutant: Option<Mutant>) -> Self {
        self.mutant = mutant;
        self
    }

    fn ready(&self) -> Vec<Subchannel> {
        self.subchannels
            .iter()
            .filter(|(_, entry)| entry.state == Ready)
            .map(|(_, entry)| entry.subchannel.clone())
            .collect()
    }

    /// Publishes the picker for the current subchannel states if it changed; a failing picker
    /// is republished whenever asked, so its error stays the latest.
    fn update_picker(&mut self, controller: &mut dyn ChannelController) {
        let ready = self.ready();
        if !ready.is_empty() {
            if self.state == Ready && ready == self.published_ready {
                return;
            }
            let start = controller.rng().random_range(0..ready.len());
            let mut picker = RoundRobinPicker::new(ready.clone(), start);
            picker.always_first = mutant::is(self.mutant, Mutant::RoundRobinAlwaysFirst);
            let picker = Arc::new(picker);
            self.publish(PickerUpdate { state: Ready, picker }, ready, controller);
            return;
        }
        let connecting =
            self.subchannels.iter().any(|(_, e)| matches!(e.effective(), Connecting | Idle));
        if connecting {
            if self.state != Connecting {
                self.publish(PickerUpdate::connecting(), ready, controller);
            }
            return;
        }
        let count = self.subchannels.len();
        let reason = match &self.last_error {
            Some(error) => {
                format!("round_robin: no READY subchannel among {count}; last error: {error}")
            }
            None => format!("round_robin: no READY subchannel among {count}"),
        };
        // Republished whenever the error changes, so fail-fast RPCs see the latest one.
        if self.state != TransientFailure || self.published_reason != reason {
            self.published_reason.clone_from(&reason);
            self.publish(PickerUpdate::failing(reason), ready, controller);
        }
    }

    fn publish(
        &mut self,
        update: PickerUpdate,
        ready: Vec<Subchannel>,
        controller: &mut dyn ChannelController,
    ) {
        self.state = update.state;
        self.published_ready = ready;
        controller.update_picker(update);
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl LbPolicy for RoundRobin {
    fn resolver_update(
        &mut self,
        addresses: &[Address],
        controller: &mut dyn ChannelController,
    ) -> Result<(), BadResolverState> {
        let mut old = std::mem::take(&mut self.subchannels);
        // A duplicate in the same update is one subchannel (DESIGN §2.3).
        for mut address in dedup_with_mutant(addresses.iter().cloned(), self.mutant) {
            // Mutant RoundRobinIgnoresCount: one subchannel per host:port, `#N` ignored.
            if mutant::is(self.mutant, Mutant::RoundRobinIgnoresCount) {
                address.attributes = address.attributes.without(CONNECTION_INDEX);
                if self.subchannels.contains(&address) {
                    continue;
                }
            }
            let entry = old.remove(&address).unwrap_or_else(|| {
                // gRFC A17: round_robin honours healthCheckConfig (pick_first does not).
                let options = SubchannelOptions::with_health_check();
                let subchannel = controller.new_subchannel_with(&address, options);
                subchannel.connect();
                Entry { subchannel, state: Idle, sticky_failure: false }
            });
            self.subchannels.insert(address, entry);
        }
        // Subchannels of addresses no longer listed shut down as `old` drops here.
        drop(old);
        if self.subchannels.is_empty() {
            let reason = "round_robin: the resolver returned no addresses";
            self.publish(PickerUpdate::failing(reason), Vec::new(), controller);
            controller.request_resolution();
            return Err(BadResolverState(reason.to_owned()));
        }
        self.update_picker(controller);
        Ok(())
    }

    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController) {
        if self.subchannels.is_empty() {
            let reason = format!("round_robin: no addresses: {error}");
            self.publish(PickerUpdate::failing(reason), Vec::new(), controller);
        }
        controller.request_resolution();
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        let Some(entry) = self.subchannels.get_mut(subchannel.address()) else {
            return;
        };
        if entry.subchannel != *subchannel {
            return;
        }
        let previous = std::mem::replace(&mut entry.state, state.state);
        match state.state {
            Idle => {
                // A connection that was up ended (lost, or a GOAWAY). With health checking the
                // policy may have seen it as CONNECTING (its Watch opening) rather than READY;
                // a connect attempt itself never goes from CONNECTING to IDLE.
                if matches!(previous, Ready | Connecting) {
                    controller.request_resolution();
                }
                subchannel.connect();
            }
            TransientFailure => {
                entry.sticky_failure = true;
                self.last_error = state.error.clone();
                controller.request_resolution();
            }
            Ready => entry.sticky_failure = false,
            _ => {}
        }
        self.update_picker(controller);
    }
}

/// Cycles over a fixed list of READY subchannels.
#[derive(Debug)]
struct RoundRobinPicker {
    subchannels: Vec<Subchannel>,
    next: AtomicUsize,
    /// Mutant RoundRobinAlwaysFirst.
    always_first: bool,
}

impl RoundRobinPicker {
    fn new(subchannels: Vec<Subchannel>, start: usize) -> Self {
        Self { subchannels, next: AtomicUsize::new(start), always_first: false }
    }
}

impl Picker for RoundRobinPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        // Mutant RoundRobinAlwaysFirst: every RPC to the first READY subchannel.
        if self.always_first {
            return PickResult::Pick(self.subchannels[0].clone());
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.subchannels.len();
        PickResult::Pick(self.subchannels[index].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn given_list(list: &[&str]) -> (RoundRobin, RecordingController) {
        let mut policy = RoundRobin::new();
        let mut cc = RecordingController::new();
        let _ = policy.resolver_update(&addrs(list), &mut cc);
        (policy, cc)
    }

    fn move_to(policy: &mut RoundRobin, cc: &mut RecordingController, id: u64, s: SubchannelState) {
        let sc = cc.subchannel(id);
        policy.subchannel_update(&sc, &s, cc);
    }

    #[test]
    fn round_robin_asks_every_subchannel_for_health_checks() {
        let (_policy, cc) = given_list(&["a:1#0", "a:1#1", "b:1#0"]);
        assert!(
            cc.options.iter().all(|o| o.health_check),
            "round_robin must honour healthCheckConfig (gRFC A17), got {:?}",
            cc.options
        );
    }

    /// A61's sticky TRANSIENT_FAILURE holds for health too: a subchannel whose server went
    /// NOT_SERVING stays out of the picker while its health stream reopens (CONNECTING), and
    /// rejoins when SERVING again.
    #[test]
    fn round_robin_drops_an_unhealthy_subchannel_from_the_picker_until_it_is_serving_again() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        move_to(&mut policy, &mut cc, 1, state(TransientFailure));
        assert_eq!(cc.picks(3), ["sc0"; 3], "an unhealthy subchannel must get no RPCs");
        move_to(&mut policy, &mut cc, 1, state(Connecting));
        assert_eq!(cc.picks(3), ["sc0"; 3], "nor while its health stream reopens");
        move_to(&mut policy, &mut cc, 1, state(Ready));
        let mut picks = cc.picks(4);
        picks.sort();
        assert_eq!(picks, ["sc0", "sc0", "sc1", "sc1"], "a healthy one gets its share again");
    }

    #[test]
    fn round_robin_connects_every_distinct_address_at_once() {
        let (_policy, mut cc) = given_list(&["a:1#0", "a:1#1", "b:1#0"]);
        assert_eq!(
            cc.take_log(),
            [
                "new sc0 a:1{idx=0}",
                "connect sc0",
                "new sc1 a:1{idx=1}",
                "connect sc1",
                "new sc2 b:1{idx=0}",
                "connect sc2",
                "picker CONNECTING"
            ],
            "round_robin must open one subchannel per distinct address"
        );
        assert_eq!(cc.picks(1), ["queue"], "RPCs must queue while nothing is READY");
    }

    #[test]
    fn the_ignores_count_mutant_opens_one_subchannel_per_host_port() {
        let mut policy = RoundRobin::new().with_mutant(Some(Mutant::RoundRobinIgnoresCount));
        let mut cc = RecordingController::new();
        let _ = policy.resolver_update(&addrs(&["a:1#0", "a:1#1", "b:1#0"]), &mut cc);
        let created: Vec<_> = cc.take_log().into_iter().filter(|l| l.starts_with("new")).collect();
        assert_eq!(created, ["new sc0 a:1", "new sc1 b:1"], "the mutant must ignore #N");
    }

    #[test]
    fn the_always_first_mutant_sends_every_rpc_to_the_first_ready_subchannel() {
        let mut policy = RoundRobin::new().with_mutant(Some(Mutant::RoundRobinAlwaysFirst));
        let mut cc = RecordingController::new();
        let _ = policy.resolver_update(&addrs(&["a:1", "b:1"]), &mut cc);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        assert_eq!(cc.picks(4), ["sc0"; 4], "the mutant must always pick the first READY");
    }

    #[test]
    fn round_robin_collapses_equal_addresses_into_one_subchannel() {
        let (_policy, mut cc) = given_list(&["a:1#0", "a:1#0", "a:1"]);
        let created: Vec<_> = cc.take_log().into_iter().filter(|l| l.starts_with("new")).collect();
        assert_eq!(created, ["new sc0 a:1{idx=0}", "new sc1 a:1"]);
    }

    #[test]
    fn round_robin_cycles_over_ready_subchannels_in_proportion_to_their_count() {
        let (mut policy, mut cc) = given_list(&["a:1#0", "a:1#1", "b:1#0"]);
        for id in 0..3 {
            move_to(&mut policy, &mut cc, id, state(Ready));
        }
        let picks = cc.picks(300);
        let count = |id: &str| picks.iter().filter(|p| *p == id).count();
        assert_eq!((count("sc0"), count("sc1"), count("sc2")), (100, 100, 100));
        let to_a = count("sc0") + count("sc1");
        assert_eq!(to_a, 200, "a:1#2,b:1#1 must split 2:1");
    }

    #[test]
    fn round_robin_skips_subchannels_in_transient_failure() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1", "c:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        move_to(&mut policy, &mut cc, 2, state(Ready));
        let picks = cc.picks(6);
        assert!(
            !picks.contains(&"sc1".to_owned()),
            "a failed subchannel must not be picked: {picks:?}"
        );
        assert_eq!(picks.iter().filter(|p| *p == "sc0").count(), 3);
    }

    #[test]
    fn round_robin_rebuilds_the_picker_when_a_subchannel_leaves_ready_and_reconnects_it() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        cc.take_log();
        move_to(&mut policy, &mut cc, 1, state(Idle));
        assert_eq!(cc.take_log(), ["resolve_now", "connect sc1", "picker READY"]);
        assert_eq!(cc.picks(4), ["sc0", "sc0", "sc0", "sc0"]);
    }

    #[test]
    fn round_robin_fails_fast_with_the_last_error_once_every_subchannel_failed() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        assert_eq!(cc.state(), Connecting, "one subchannel still connecting: RPCs must queue");
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        assert_eq!(cc.state(), TransientFailure);
        let pick = &cc.picks(1)[0];
        assert!(pick.starts_with("fail: ") && pick.contains("b:1"), "got {pick}");
        move_to(&mut policy, &mut cc, 0, state(Idle));
        move_to(&mut policy, &mut cc, 0, state(Connecting));
        assert_eq!(cc.state(), TransientFailure, "TRANSIENT_FAILURE must be sticky until READY");
        move_to(&mut policy, &mut cc, 0, state(Ready));
        assert_eq!(cc.picks(2), ["sc0", "sc0"]);
    }

    #[test]
    fn round_robin_keeps_listed_subchannels_and_drops_removed_ones_on_update() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        cc.take_log();
        policy.resolver_update(&addrs(&["b:1", "c:1"]), &mut cc).unwrap();
        assert_eq!(cc.take_log(), ["new sc2 c:1", "connect sc2", "picker READY"]);
        assert_eq!(cc.picks(3), ["sc1", "sc1", "sc1"], "a removed address must leave the picker");
    }

    #[test]
    fn round_robin_with_no_addresses_reports_transient_failure_saying_so() {
        let (_policy, cc) = given_list(&[]);
        assert_eq!(cc.state(), TransientFailure);
        assert!(cc.picks(1)[0].contains("no addresses"));
    }

    /// Regression: after every subchannel failed, an update with all-new addresses left the
    /// policy in TRANSIENT_FAILURE, so fail-fast RPCs failed although nothing had been tried.
    #[test]
    fn round_robin_reports_connecting_after_an_update_that_brings_all_new_addresses() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        assert_eq!(cc.state(), TransientFailure);
        policy.resolver_update(&addrs(&["c:1", "d:1"]), &mut cc).unwrap();
        assert_eq!(
            cc.state(),
            Connecting,
            "new addresses that never failed must queue RPCs, not fail them"
        );
        assert_eq!(cc.picks(1), ["queue"]);
        move_to(&mut policy, &mut cc, 2, failure("c:1"));
        move_to(&mut policy, &mut cc, 3, failure("d:1"));
        assert_eq!(cc.state(), TransientFailure, "and fail again once they have all failed");
    }

    #[test]
    fn round_robin_keeps_the_failure_error_current_while_every_subchannel_fails() {
        let (mut policy, mut cc) = given_list(&["a:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 0, state(Idle));
        move_to(&mut policy, &mut cc, 0, failure("a2:1"));
        assert!(cc.picks(1)[0].contains("a2:1"), "RPCs must see the latest connection error");
    }

    /// Regression: re-resolution followed only READY → IDLE, so a GOAWAY on a connection whose
    /// health check was still opening (CONNECTING to the policy) re-resolved nothing, and
    /// MAX_CONNECTION_AGE did not move such clients to the resolver's new answer.
    #[test]
    fn round_robin_re_resolves_when_a_connection_ends_while_its_health_check_opens() {
        let (mut policy, mut cc) = given_list(&["a:1"]);
        move_to(&mut policy, &mut cc, 0, state(Connecting));
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, state(Idle));
        assert!(cc.take_log().contains(&"resolve_now".to_owned()), "a lost connection re-resolves");
    }

    #[test]
    fn round_robin_rejects_an_empty_list_and_requests_reresolution() {
        let mut policy = RoundRobin::new();
        let mut cc = RecordingController::new();
        assert!(policy.resolver_update(&[], &mut cc).is_err(), "an empty list must be rejected");
        assert!(cc.take_log().contains(&"resolve_now".to_owned()), "R3: empty list re-resolves");
    }
}
