//! `pick_first`: one connection at a time, the default policy (DESIGN §2.4).
//!
//! The policy tries the addresses in list order, one attempt at a time, and keeps the first
//! subchannel that becomes READY; every RPC goes there. When that connection is lost it asks for
//! re-resolution and starts again from the top of the current list. When every address has
//! failed it reports TRANSIENT_FAILURE with the last error and then reconnects each subchannel as
//! its backoff ends (gRFC A62's "sticky" TRANSIENT_FAILURE) until one becomes READY.
//!
//! With `{"shuffleAddressList": true}` the list is shuffled with the channel's seeded RNG on
//! every resolver update (gRFC A62).

use std::sync::Arc;

use rand::seq::SliceRandom;

use super::{
    ChannelController, ConnectionError, ConnectivityState, LbPolicy, PickInfo, PickResult, Picker,
    PickerUpdate, Subchannel, SubchannelState,
};
use crate::address::{Address, dedup};
use crate::resolver::ResolverError;

/// The `pick_first` policy.
#[derive(Debug)]
pub struct PickFirst {
    shuffle: bool,
    /// One subchannel per distinct address, in list order, with its last known state.
    subchannels: Vec<(Subchannel, ConnectivityState)>,
    /// The READY subchannel every RPC goes to.
    selected: Option<Subchannel>,
    /// Index of the subchannel being tried during the first pass over the list; `None` once
    /// every address has failed (sticky TRANSIENT_FAILURE).
    attempt: Option<usize>,
    last_error: Option<ConnectionError>,
    state: ConnectivityState,
}

impl PickFirst {
    /// A `pick_first` policy; `shuffle` shuffles every address list it receives.
    pub fn new(shuffle: bool) -> Self {
        Self {
            shuffle,
            subchannels: Vec::new(),
            selected: None,
            attempt: None,
            last_error: None,
            state: ConnectivityState::Idle,
        }
    }

    fn publish(&mut self, update: PickerUpdate, controller: &mut dyn ChannelController) {
        self.state = update.state;
        controller.update_picker(update);
    }

    /// Replaces the subchannel list with fresh IDLE subchannels for `addresses`, keeping the
    /// subchannel of an address that is already listed (and so its backoff).
    fn rebuild(&mut self, addresses: &[Address], controller: &mut dyn ChannelController) {
        let mut old = std::mem::take(&mut self.subchannels);
        for address in addresses {
            let kept = old.iter().position(|(sc, _)| sc.address() == address);
            let entry = match kept {
                Some(i) => old.remove(i),
                None => (controller.new_subchannel(address), ConnectivityState::Idle),
            };
            self.subchannels.push(entry);
        }
    }

    /// Starts a pass over the list from the top.
    fn start_pass(&mut self, controller: &mut dyn ChannelController) {
        self.attempt = Some(0);
        if self.state != ConnectivityState::TransientFailure {
            self.publish(PickerUpdate::connecting(), controller);
        }
        self.connect_at(0);
    }

    /// Asks the subchannel at `index` to connect if it is IDLE, and records it as CONNECTING at
    /// once, so a later decision never mistakes it for one that was not asked.
    fn connect_at(&mut self, index: usize) {
        if let Some((sc, state @ ConnectivityState::Idle)) = self.subchannels.get_mut(index) {
            sc.connect();
            *state = ConnectivityState::Connecting;
        }
    }

    fn select(&mut self, chosen: Subchannel, controller: &mut dyn ChannelController) {
        // Only one connection at a time: every other subchannel that was asked to connect is
        // shut down and replaced by a fresh IDLE one, so an attempt still in flight (or a
        // backoff about to end) cannot open a second connection.
        for (sc, state) in &mut self.subchannels {
            if *sc != chosen && *state != ConnectivityState::Idle {
                *sc = controller.new_subchannel(sc.address());
                *state = ConnectivityState::Idle;
            }
        }
        self.attempt = None;
        self.selected = Some(chosen.clone());
        let picker = Arc::new(SelectedPicker(chosen));
        self.publish(PickerUpdate { state: ConnectivityState::Ready, picker }, controller);
    }

    fn fail_reason(&self) -> String {
        match &self.last_error {
            Some(error) => format!("pick_first: every address failed; last error: {error}"),
            None => "pick_first: every address failed".to_owned(),
        }
    }
}

impl LbPolicy for PickFirst {
    fn resolver_update(&mut self, addresses: &[Address], controller: &mut dyn ChannelController) {
        let mut list = dedup(addresses.iter().cloned());
        if self.shuffle {
            list.shuffle(controller.rng());
        }
        if list.is_empty() {
            self.subchannels.clear();
            self.selected = None;
            self.attempt = None;
            let reason = "pick_first: the resolver returned no addresses";
            self.publish(PickerUpdate::failing(reason), controller);
            return;
        }
        self.rebuild(&list, controller);
        // A new update keeps the current connection if its address is still listed.
        if let Some(selected) = &self.selected {
            if self.subchannels.iter().any(|(sc, _)| sc == selected) {
                return;
            }
            self.selected = None;
        }
        self.start_pass(controller);
    }

    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController) {
        if self.subchannels.is_empty() {
            let reason = format!("pick_first: no addresses: {error}");
            self.publish(PickerUpdate::failing(reason), controller);
        }
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        let Some(index) = self.subchannels.iter().position(|(sc, _)| sc == subchannel) else {
            return;
        };
        self.subchannels[index].1 = state.state;
        if self.selected.as_ref() == Some(subchannel) {
            if state.state != ConnectivityState::Ready {
                // The connection is lost: re-resolve and start again from the top.
                self.selected = None;
                self.last_error = state.error.clone();
                controller.request_resolution();
                self.start_pass(controller);
            }
            return;
        }
        match state.state {
            ConnectivityState::Ready if self.selected.is_none() => {
                self.select(subchannel.clone(), controller)
            }
            ConnectivityState::TransientFailure => {
                self.last_error = state.error.clone();
                controller.request_resolution();
                let Some(attempt) = self.attempt else { return };
                if index != attempt {
                    return;
                }
                if attempt + 1 < self.subchannels.len() {
                    self.attempt = Some(attempt + 1);
                    self.connect_at(attempt + 1);
                } else {
                    // Every address failed: report it and keep trying each one as its
                    // backoff ends.
                    self.attempt = None;
                    self.publish(PickerUpdate::failing(self.fail_reason()), controller);
                    for index in 0..self.subchannels.len() {
                        self.connect_at(index);
                    }
                }
            }
            ConnectivityState::Idle if self.attempt.is_none() && self.selected.is_none() => {
                self.connect_at(index);
            }
            _ => {}
        }
    }
}

/// Sends every RPC to the selected subchannel.
#[derive(Debug)]
struct SelectedPicker(Subchannel);

impl Picker for SelectedPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        PickResult::Pick(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use ConnectivityState::*;

    fn given_list(list: &[&str]) -> (PickFirst, RecordingController) {
        let mut policy = PickFirst::new(false);
        let mut cc = RecordingController::new();
        policy.resolver_update(&addrs(list), &mut cc);
        (policy, cc)
    }

    fn move_to(policy: &mut PickFirst, cc: &mut RecordingController, id: u64, s: SubchannelState) {
        let sc = cc.subchannel(id);
        policy.subchannel_update(&sc, &s, cc);
    }

    #[test]
    fn pick_first_connects_only_the_first_address_and_queues_meanwhile() {
        let (_policy, mut cc) = given_list(&["a:1", "b:1"]);
        assert_eq!(
            cc.take_log(),
            ["new sc0 a:1", "new sc1 b:1", "picker CONNECTING", "connect sc0"],
            "pick_first must try one address at a time, in list order"
        );
        assert_eq!(cc.picks(2), ["queue", "queue"]);
    }

    #[test]
    fn pick_first_sends_every_rpc_to_the_first_ready_address() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, state(Connecting));
        move_to(&mut policy, &mut cc, 0, state(Ready));
        assert_eq!(cc.state(), Ready);
        assert_eq!(
            cc.picks(3),
            ["sc0", "sc0", "sc0"],
            "pick_first must send every RPC to one connection"
        );
        assert!(
            cc.take_log().iter().all(|line| !line.starts_with("connect")),
            "pick_first must not open a second connection once one is READY"
        );
    }

    #[test]
    fn pick_first_fails_over_to_the_next_address_in_order() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1", "c:1"]);
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        assert_eq!(cc.take_log(), ["resolve_now", "connect sc1"]);
        move_to(&mut policy, &mut cc, 1, state(Ready));
        assert_eq!(cc.picks(1), ["sc1"]);
    }

    #[test]
    fn pick_first_reports_the_last_error_when_every_address_fails_then_retries_each() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        assert_eq!(cc.state(), TransientFailure);
        let picks = cc.picks(1);
        assert!(
            picks[0].starts_with("fail: ") && picks[0].contains("b:1"),
            "the failure must carry the last connection error, got {picks:?}"
        );
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, state(Idle));
        assert_eq!(cc.take_log(), ["connect sc0"], "after backoff each subchannel must be retried");
        assert_eq!(cc.state(), TransientFailure, "TRANSIENT_FAILURE must be sticky until READY");
    }

    #[test]
    fn pick_first_restarts_from_the_top_and_reresolves_when_the_connection_is_lost() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        cc.take_log();
        move_to(&mut policy, &mut cc, 1, state(Idle));
        let log = cc.take_log();
        assert_eq!(log[0], "resolve_now", "a lost connection must trigger re-resolution");
        assert!(log.contains(&"picker CONNECTING".to_owned()));
        let first = policy.subchannels[0].0.id();
        assert_eq!(
            log.last().unwrap(),
            &format!("connect {first}"),
            "pick_first must start again from the first address"
        );
    }

    /// Regression: in sticky TRANSIENT_FAILURE every subchannel retries at once; when one
    /// became READY the others kept connecting and could open a second connection.
    #[test]
    fn pick_first_replaces_other_connecting_subchannels_when_one_becomes_ready() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1", "c:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        move_to(&mut policy, &mut cc, 2, failure("c:1"));
        move_to(&mut policy, &mut cc, 0, state(Idle));
        move_to(&mut policy, &mut cc, 1, state(Idle));
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, state(Ready));
        assert_eq!(
            cc.take_log(),
            ["new sc3 b:1", "new sc4 c:1", "picker READY"],
            "every subchannel asked to connect, other than the READY one, must be replaced"
        );
        let ids: Vec<u64> = policy.subchannels.iter().map(|(sc, _)| sc.id().0).collect();
        assert_eq!(ids, [0, 3, 4]);
    }

    #[test]
    fn pick_first_keeps_the_ready_connection_when_its_address_is_still_listed() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        cc.take_log();
        policy.resolver_update(&addrs(&["c:1", "a:1"]), &mut cc);
        assert_eq!(
            cc.take_log(),
            ["new sc2 c:1"],
            "pick_first must keep the READY connection when its address is still listed"
        );
        assert_eq!(cc.picks(1), ["sc0"]);
    }

    #[test]
    fn pick_first_collapses_duplicate_addresses_but_not_distinct_attributes() {
        let (_policy, mut cc) = given_list(&["a:1#0", "a:1#0", "a:1#1"]);
        let created: Vec<_> = cc.take_log().into_iter().filter(|l| l.starts_with("new")).collect();
        assert_eq!(created, ["new sc0 a:1{idx=0}", "new sc1 a:1{idx=1}"]);
    }

    #[test]
    fn pick_first_with_no_addresses_reports_transient_failure_saying_so() {
        let (_policy, cc) = given_list(&[]);
        assert_eq!(cc.state(), TransientFailure);
        assert!(cc.picks(1)[0].contains("no addresses"));
    }

    #[test]
    fn pick_first_shuffle_uses_the_seeded_rng() {
        let order = || {
            let mut policy = PickFirst::new(true);
            let mut cc = RecordingController::new();
            let list: Vec<String> = (0..8).map(|i| format!("h{i}:1")).collect();
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            policy.resolver_update(&addrs(&list), &mut cc);
            policy.subchannels.iter().map(|(sc, _)| sc.address().addr.clone()).collect::<Vec<_>>()
        };
        let first = order();
        assert_eq!(first, order(), "the same seed must give the same shuffle");
        assert_ne!(first[0..3], ["h0:1", "h1:1", "h2:1"], "shuffleAddressList must shuffle");
    }
}
