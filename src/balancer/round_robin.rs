//! `round_robin`: one subchannel per distinct address, RPCs spread over the READY ones
//! (DESIGN §2.4).
//!
//! Every address gets its own subchannel, so a `pass` target's `a:1#2` (two addresses that
//! differ only in their connection index) gets two connections and twice the share of RPCs.
//! The picker cycles over READY subchannels only, from a start index drawn from the channel's
//! seeded RNG (grpc-go starts at a random index too), and is rebuilt whenever a subchannel
//! enters or leaves READY. With nothing READY and something still connecting, RPCs queue; once
//! every subchannel is in TRANSIENT_FAILURE the policy reports TRANSIENT_FAILURE with the last
//! connection error and stays there until one subchannel becomes READY (gRFC A61).
//! Subchannels that go IDLE (a lost connection, or the end of a backoff) reconnect at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::{
    ChannelController, ConnectionError, ConnectivityState, LbPolicy, PickInfo, PickResult, Picker,
    PickerUpdate, Subchannel, SubchannelState,
};
use crate::address::{Address, AddressMap};
use crate::resolver::ResolverError;

/// The `round_robin` policy.
#[derive(Debug)]
pub struct RoundRobin {
    subchannels: AddressMap<(Subchannel, ConnectivityState)>,
    last_error: Option<ConnectionError>,
    state: ConnectivityState,
    /// The ids of the READY subchannels in the last published picker.
    published_ready: Vec<Subchannel>,
}

impl RoundRobin {
    /// A `round_robin` policy with no addresses yet.
    pub fn new() -> Self {
        Self {
            subchannels: AddressMap::new(),
            last_error: None,
            state: ConnectivityState::Idle,
            published_ready: Vec::new(),
        }
    }

    fn ready(&self) -> Vec<Subchannel> {
        self.subchannels
            .iter()
            .filter(|(_, (_, state))| *state == ConnectivityState::Ready)
            .map(|(_, (sc, _))| sc.clone())
            .collect()
    }

    /// Publishes the picker for the current subchannel states if it changed.
    fn update_picker(&mut self, controller: &mut dyn ChannelController) {
        let ready = self.ready();
        if !ready.is_empty() {
            if self.state == ConnectivityState::Ready && ready == self.published_ready {
                return;
            }
            let start = controller.rng().random_range(0..ready.len());
            let picker = Arc::new(RoundRobinPicker::new(ready.clone(), start));
            self.publish(
                PickerUpdate { state: ConnectivityState::Ready, picker },
                ready,
                controller,
            );
            return;
        }
        let all_failed = self
            .subchannels
            .iter()
            .all(|(_, (_, state))| *state == ConnectivityState::TransientFailure);
        // Sticky TRANSIENT_FAILURE: once every subchannel has failed, stay there (with the
        // latest error) until one becomes READY, so fail-fast RPCs keep failing fast.
        if all_failed || self.state == ConnectivityState::TransientFailure {
            let reason = match &self.last_error {
                Some(error) => format!(
                    "round_robin: no READY subchannel among {}; last error: {error}",
                    self.subchannels.len()
                ),
                None => {
                    format!("round_robin: no READY subchannel among {}", self.subchannels.len())
                }
            };
            self.publish(PickerUpdate::failing(reason), ready, controller);
        } else if self.state != ConnectivityState::Connecting {
            self.publish(PickerUpdate::connecting(), ready, controller);
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
    fn resolver_update(&mut self, addresses: &[Address], controller: &mut dyn ChannelController) {
        let mut old = std::mem::take(&mut self.subchannels);
        for address in addresses {
            if self.subchannels.contains(address) {
                continue; // a duplicate in the same update: one subchannel (DESIGN §2.3)
            }
            let entry = old.remove(address).unwrap_or_else(|| {
                let sc = controller.new_subchannel(address);
                sc.connect();
                (sc, ConnectivityState::Idle)
            });
            self.subchannels.insert(address.clone(), entry);
        }
        // Subchannels of addresses no longer listed shut down as `old` drops here.
        drop(old);
        if self.subchannels.is_empty() {
            let reason = "round_robin: the resolver returned no addresses";
            self.publish(PickerUpdate::failing(reason), Vec::new(), controller);
            return;
        }
        self.update_picker(controller);
    }

    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController) {
        if self.subchannels.is_empty() {
            let reason = format!("round_robin: no addresses: {error}");
            self.publish(PickerUpdate::failing(reason), Vec::new(), controller);
        }
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        let Some((_, entry_state)) = self.subchannels.get_mut(subchannel.address()) else {
            return;
        };
        let previous = std::mem::replace(entry_state, state.state);
        match state.state {
            ConnectivityState::Idle => {
                if previous == ConnectivityState::Ready {
                    controller.request_resolution();
                }
                subchannel.connect();
            }
            ConnectivityState::TransientFailure => {
                self.last_error = state.error.clone();
                controller.request_resolution();
            }
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
}

impl RoundRobinPicker {
    fn new(subchannels: Vec<Subchannel>, start: usize) -> Self {
        Self { subchannels, next: AtomicUsize::new(start) }
    }
}

impl Picker for RoundRobinPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.subchannels.len();
        PickResult::Pick(self.subchannels[index].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use ConnectivityState::*;

    fn given_list(list: &[&str]) -> (RoundRobin, RecordingController) {
        let mut policy = RoundRobin::new();
        let mut cc = RecordingController::new();
        policy.resolver_update(&addrs(list), &mut cc);
        (policy, cc)
    }

    fn move_to(policy: &mut RoundRobin, cc: &mut RecordingController, id: u64, s: SubchannelState) {
        let sc = cc.subchannel(id);
        policy.subchannel_update(&sc, &s, cc);
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
        policy.resolver_update(&addrs(&["b:1", "c:1"]), &mut cc);
        assert_eq!(cc.take_log(), ["new sc2 c:1", "connect sc2", "picker READY"]);
        assert_eq!(cc.picks(3), ["sc1", "sc1", "sc1"], "a removed address must leave the picker");
    }

    #[test]
    fn round_robin_with_no_addresses_reports_transient_failure_saying_so() {
        let (_policy, cc) = given_list(&[]);
        assert_eq!(cc.state(), TransientFailure);
        assert!(cc.picks(1)[0].contains("no addresses"));
    }
}
