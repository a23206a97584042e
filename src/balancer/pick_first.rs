//! `pick_first`: one connection at a time, the default policy (DESIGN §2.4, gRFC A62, grpc-go's
//! `pickfirstleaf`).
//!
//! # States
//! The policy's own state is the one it last published:
//! - **IDLE**: before the first address list, and after the READY connection was lost. The
//!   picker queues RPCs and its first pick asks the channel to call [`LbPolicy::exit_idle`],
//!   which starts a pass.
//! - **CONNECTING**: a first pass is running and no subchannel of it has failed before.
//! - **READY**: one subchannel is selected; every RPC goes to it.
//! - **TRANSIENT_FAILURE**: every address failed in a pass (or the list is empty). Sticky
//!   (gRFC A62): the policy reports TRANSIENT_FAILURE until a subchannel becomes READY, even
//!   while subchannels reconnect.
//!
//! A *pass* walks the list in order: it connects the first
//! IDLE subchannel and waits for it, waits for one already CONNECTING, and skips one in
//! TRANSIENT_FAILURE (it is still backing off). A subchannel that fails while it is the one the
//! pass waits for moves the pass on. When every subchannel has failed in the pass, the *first
//! pass* ends: the policy publishes TRANSIENT_FAILURE with the latest error, requests
//! re-resolution, and from then on reconnects each subchannel as soon as its backoff ends
//! (it reports IDLE). Each further round of as many failures as there are subchannels
//! republishes TRANSIENT_FAILURE with the latest error and requests re-resolution again, so the
//! error RPCs see stays current and re-resolution is asked for once per failed pass, not once
//! per failed subchannel.
//!
//! # Invariants
//! - I1 (one connection): at most one subchannel is READY or being connected on behalf of a
//!   selection; when one becomes READY, every other subchannel that was asked to connect is
//!   replaced by a fresh IDLE one, so no attempt in flight can open a second connection.
//! - I2 (no stall): outside IDLE and READY, some subchannel is CONNECTING, or one will report
//!   IDLE when its backoff ends and is then connected. No subchannel is left IDLE with nothing
//!   scheduled to wake it: a pass waits only on a subchannel it asked to connect, and the end
//!   of the first pass connects every subchannel that is IDLE by then.
//! - I3 (keep what works): an update that still lists the READY subchannel's address keeps it.
//! - I4 (re-resolution): requested when the READY connection is lost, once per failed pass, and
//!   on resolver errors or an empty list.
//! - I5 (sticky failure): once TRANSIENT_FAILURE is published, CONNECTING is not published again
//!   for a subchannel that has already failed; only READY, IDLE (lost connection) or a new list
//!   with addresses that never failed end it.
//!
//! With `{"shuffleAddressList": true}` the list is shuffled with the channel's seeded RNG on
//! every resolver update (gRFC A62).

use std::sync::Arc;

use rand::seq::SliceRandom;

use super::{
    BadResolverState, ChannelController, ConnectionError, ConnectivityState, LbPolicy, PickInfo,
    PickResult, Picker, PickerUpdate, Subchannel, SubchannelState,
};
use crate::address::{Address, dedup_with_mutant};
use crate::mutant::{self, Mutant};
use crate::resolver::ResolverError;

use ConnectivityState::{Connecting, Idle, Ready, Shutdown, TransientFailure};

/// The `pick_first` policy.
#[derive(Debug)]
pub struct PickFirst {
    shuffle: bool,
    /// One entry per distinct address, in list order.
    entries: Vec<Entry>,
    /// The READY subchannel every RPC goes to.
    selected: Option<Subchannel>,
    /// Where the policy is in its connection attempts.
    pass: Pass,
    /// TRANSIENT_FAILURE reports since the last republished failure (after the first pass).
    failures: usize,
    last_error: Option<ConnectionError>,
    state: ConnectivityState,
    /// The deliberate defect switched on, if any (see [`Mutant`]).
    mutant: Option<Mutant>,
}

/// One subchannel and what the policy knows of it.
#[derive(Debug)]
struct Entry {
    subchannel: Subchannel,
    /// The state the subchannel last reported (IDLE for a new one).
    state: ConnectivityState,
    /// Whether it failed since the current first pass started.
    failed_in_pass: bool,
    /// Whether it failed since it was last READY (gRFC A62's sticky TRANSIENT_FAILURE).
    sticky_failure: bool,
    /// Whether the policy ever asked it to connect. Its report may still be on the way, so its
    /// recorded IDLE state alone does not show that it is harmless (I1).
    asked: bool,
}

impl Entry {
    fn new(subchannel: Subchannel) -> Self {
        Self { subchannel, state: Idle, failed_in_pass: false, sticky_failure: false, asked: false }
    }

    fn connect(&mut self) {
        self.asked = true;
        self.subchannel.connect();
    }
}

/// The policy's progress through its connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// No pass: IDLE, READY, or no addresses.
    None,
    /// The first pass over the list, waiting on the entry at this index (or past the end).
    First(usize),
    /// Every address failed once: each subchannel reconnects when its backoff ends.
    Reconnecting,
}

impl PickFirst {
    /// A `pick_first` policy; `shuffle` shuffles every address list it receives.
    pub fn new(shuffle: bool) -> Self {
        Self {
            shuffle,
            entries: Vec::new(),
            selected: None,
            pass: Pass::None,
            failures: 0,
            last_error: None,
            state: Idle,
            mutant: None,
        }
    }

    /// Switches on `mutant`'s defect, if it is one of this policy's.
    pub(crate) fn with_mutant(mut self, mutant: Option<Mutant>) -> Self {
        self.mutant = mutant;
        self
    }

    fn publish(&mut self, update: PickerUpdate, controller: &mut dyn ChannelController) {
        self.state = update.state;
        controller.update_picker(update);
    }

    fn publish_failure(&mut self, controller: &mut dyn ChannelController) {
        let reason = match &self.last_error {
            Some(error) => format!("pick_first: every address failed; last error: {error}"),
            None => "pick_first: every address failed".to_owned(),
        };
        self.publish(PickerUpdate::failing(reason), controller);
    }

    /// Replaces the entry list with one entry per address, keeping the subchannel (and its
    /// state and backoff) of an address that is already listed. Subchannels of addresses no
    /// longer listed shut down as their last handle drops.
    fn reconcile(&mut self, addresses: &[Address], controller: &mut dyn ChannelController) {
        let mut old = std::mem::take(&mut self.entries);
        for address in addresses {
            let entry = match old.iter().position(|e| e.subchannel.address() == address) {
                Some(i) => old.remove(i),
                None => Entry::new(controller.new_subchannel(address)),
            };
            self.entries.push(entry);
        }
    }

    /// Starts a first pass from the top of the list.
    fn start_pass(&mut self, controller: &mut dyn ChannelController) {
        for entry in &mut self.entries {
            entry.failed_in_pass = false;
        }
        self.failures = 0;
        self.pass = Pass::First(0);
        self.request_connection(controller);
    }

    /// Walks the first pass on from its index: connects the first IDLE subchannel, waits on one
    /// already CONNECTING, skips those still backing off in TRANSIENT_FAILURE, and ends the
    /// first pass when it runs off the end of the list.
    fn request_connection(&mut self, controller: &mut dyn ChannelController) {
        let Pass::First(mut index) = self.pass else { return };
        while let Some(entry) = self.entries.get_mut(index) {
            match entry.state {
                Idle => {
                    entry.connect();
                    break;
                }
                Connecting => break,
                Ready => {
                    let chosen = entry.subchannel.clone();
                    self.select(chosen, controller);
                    return;
                }
                TransientFailure | Shutdown => {
                    entry.failed_in_pass = true;
                    index += 1;
                }
            }
        }
        self.pass = Pass::First(index);
        self.end_first_pass_if_done(controller);
    }

    /// Ends the first pass once it has run off the end of the list and every subchannel has
    /// failed in it: TRANSIENT_FAILURE, re-resolution, and every IDLE subchannel reconnects.
    fn end_first_pass_if_done(&mut self, controller: &mut dyn ChannelController) {
        let Pass::First(index) = self.pass else { return };
        if index < self.entries.len() || !self.entries.iter().all(|e| e.failed_in_pass) {
            return;
        }
        self.pass = Pass::Reconnecting;
        self.failures = 0;
        self.publish_failure(controller);
        controller.request_resolution();
        for entry in &mut self.entries {
            if entry.state == Idle {
                entry.connect();
            }
        }
    }

    fn select(&mut self, chosen: Subchannel, controller: &mut dyn ChannelController) {
        // I1: every other subchannel that was asked to connect is replaced by a fresh IDLE one,
        // so an attempt still in flight (or a backoff about to end) cannot open a second
        // connection.
        for entry in &mut self.entries {
            if entry.subchannel == chosen {
                entry.sticky_failure = false;
            } else if entry.asked || entry.state != Idle {
                *entry = Entry::new(controller.new_subchannel(entry.subchannel.address()));
            }
        }
        self.pass = Pass::None;
        self.selected = Some(chosen.clone());
        let picker = Arc::new(SelectedPicker(chosen));
        self.publish(PickerUpdate { state: Ready, picker }, controller);
    }

    /// The READY connection was lost: re-resolve and go IDLE until the next RPC (grpc-go).
    fn lose_selected(&mut self, error: Option<ConnectionError>, c: &mut dyn ChannelController) {
        self.selected = None;
        self.pass = Pass::None;
        if error.is_some() {
            self.last_error = error;
        }
        c.request_resolution();
        let exit = c.idle_exit();
        self.publish(PickerUpdate::idle(exit), c);
    }

    /// A subchannel report during the first pass.
    fn first_pass_update(
        &mut self,
        index: usize,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        match state.state {
            Connecting => {
                // I5: a subchannel that already failed keeps the policy where it is.
                if !self.entries[index].sticky_failure && self.state != Connecting {
                    self.publish(PickerUpdate::connecting(), controller);
                }
            }
            TransientFailure => {
                let entry = &mut self.entries[index];
                entry.failed_in_pass = true;
                entry.sticky_failure = true;
                if self.pass == Pass::First(index) {
                    self.pass = Pass::First(index + 1);
                    self.request_connection(controller);
                } else {
                    self.end_first_pass_if_done(controller);
                }
            }
            // A subchannel skipped by the pass finished its backoff. The pass goes on without
            // it; if the pass fails everywhere, its end connects every IDLE subchannel (I2).
            Idle | Ready | Shutdown => {}
        }
    }

    /// A subchannel report after the first pass failed everywhere.
    fn reconnecting_update(
        &mut self,
        index: usize,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        match state.state {
            Idle => self.entries[index].connect(),
            TransientFailure => {
                self.entries[index].sticky_failure = true;
                self.failures += 1;
                if self.failures >= self.entries.len() {
                    // A whole pass' worth of failures: refresh the error RPCs see and ask
                    // for re-resolution once (I4).
                    self.failures = 0;
                    self.publish_failure(controller);
                    controller.request_resolution();
                }
            }
            Connecting | Ready | Shutdown => {}
        }
    }
}

impl LbPolicy for PickFirst {
    fn resolver_update(
        &mut self,
        addresses: &[Address],
        controller: &mut dyn ChannelController,
    ) -> Result<(), BadResolverState> {
        let mut list = dedup_with_mutant(addresses.iter().cloned(), self.mutant);
        if self.shuffle {
            list.shuffle(controller.rng());
        }
        // Mutant PickFirstNeverFailsOver: only the first address is ever tried.
        if mutant::is(self.mutant, Mutant::PickFirstNeverFailsOver) {
            list.truncate(1);
        }
        if list.is_empty() {
            self.entries.clear();
            self.selected = None;
            self.pass = Pass::None;
            let reason = "pick_first: the resolver returned no addresses";
            self.publish(PickerUpdate::failing(reason), controller);
            controller.request_resolution();
            return Err(BadResolverState(reason.to_owned()));
        }
        let had_addresses = !self.entries.is_empty();
        self.reconcile(&list, controller);
        // I3: a new update keeps the current connection if its address is still listed.
        if let Some(selected) = &self.selected {
            if self.entries.iter().any(|e| e.subchannel == *selected) {
                return Ok(());
            }
            self.selected = None;
            self.publish(PickerUpdate::connecting(), controller);
            self.start_pass(controller);
            return Ok(());
        }
        // Mutant PickFirstStallsAfterUpdateInBackoff: the old pass waited on the first
        // subchannel without asking it to connect, while others backed off.
        if mutant::is(self.mutant, Mutant::PickFirstStallsAfterUpdateInBackoff)
            && self.entries.iter().any(|e| e.state == TransientFailure)
        {
            self.publish(PickerUpdate::connecting(), controller);
            self.pass = Pass::First(0);
            return Ok(());
        }
        match self.state {
            // IDLE after a lost connection stays IDLE until an RPC arrives (grpc-go).
            Idle if had_addresses => {}
            // Sticky TRANSIENT_FAILURE: a new pass over the new list, still failing fast.
            TransientFailure if had_addresses => self.start_pass(controller),
            _ => {
                if self.state != Connecting {
                    self.publish(PickerUpdate::connecting(), controller);
                }
                self.start_pass(controller);
            }
        }
        Ok(())
    }

    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController) {
        if self.entries.is_empty() {
            let reason = format!("pick_first: no addresses: {error}");
            self.publish(PickerUpdate::failing(reason), controller);
        }
        controller.request_resolution();
    }

    fn exit_idle(&mut self, controller: &mut dyn ChannelController) {
        if self.state == Idle && !self.entries.is_empty() && self.selected.is_none() {
            self.publish(PickerUpdate::connecting(), controller);
            self.start_pass(controller);
        }
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        let Some(index) = self.entries.iter().position(|e| e.subchannel == *subchannel) else {
            return;
        };
        self.entries[index].state = state.state;
        if state.state == TransientFailure {
            self.last_error = state.error.clone();
        }
        if self.selected.as_ref() == Some(subchannel) {
            if state.state != Ready {
                self.lose_selected(state.error.clone(), controller);
            }
            return;
        }
        if state.state == Ready {
            match self.selected {
                None => self.select(subchannel.clone(), controller),
                // I1 makes this unreachable; should it happen, the extra connection goes.
                Some(_) => {
                    let address = subchannel.address();
                    self.entries[index] = Entry::new(controller.new_subchannel(address));
                }
            }
            return;
        }
        match self.pass {
            Pass::First(_) => self.first_pass_update(index, state, controller),
            Pass::Reconnecting => self.reconnecting_update(index, state, controller),
            Pass::None => {}
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

    fn given_list(list: &[&str]) -> (PickFirst, RecordingController) {
        let mut policy = PickFirst::new(false);
        let mut cc = RecordingController::new();
        policy.resolver_update(&addrs(list), &mut cc).expect("a non-empty list is accepted");
        (policy, cc)
    }

    fn move_to(policy: &mut PickFirst, cc: &mut RecordingController, id: u64, s: SubchannelState) {
        let sc = cc.subchannel(id);
        policy.subchannel_update(&sc, &s, cc);
    }

    fn update(policy: &mut PickFirst, cc: &mut RecordingController, list: &[&str]) {
        policy.resolver_update(&addrs(list), cc).expect("a non-empty list is accepted");
    }

    /// The ids of the subchannels in list order.
    fn ids(policy: &PickFirst) -> Vec<u64> {
        policy.entries.iter().map(|e| e.subchannel.id().0).collect()
    }

    #[test]
    fn pick_first_never_asks_for_health_checks_as_grpc_go() {
        let (_policy, cc) = given_list(&["a:1", "b:1"]);
        assert!(
            cc.options.iter().all(|o| !o.health_check),
            "pick_first must ignore healthCheckConfig (DESIGN §2.4), got {:?}",
            cc.options
        );
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
    fn pick_first_fails_over_to_the_next_address_in_order_without_reresolving_per_failure() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1", "c:1"]);
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        assert_eq!(
            cc.take_log(),
            ["connect sc1"],
            "I4: one failed subchannel moves the pass on; re-resolution waits for a failed pass"
        );
        move_to(&mut policy, &mut cc, 1, state(Ready));
        assert_eq!(cc.picks(1), ["sc1"]);
    }

    #[test]
    fn pick_first_reports_the_last_error_when_every_address_fails_then_retries_each() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        assert_eq!(cc.state(), TransientFailure);
        assert_eq!(
            cc.take_log(),
            ["connect sc1", "picker TRANSIENT_FAILURE", "resolve_now"],
            "I4: a failed pass must publish the failure and request re-resolution once"
        );
        let picks = cc.picks(1);
        assert!(
            picks[0].starts_with("fail: ") && picks[0].contains("b:1"),
            "the failure must carry the last connection error, got {picks:?}"
        );
        move_to(&mut policy, &mut cc, 0, state(Idle));
        assert_eq!(cc.take_log(), ["connect sc0"], "after backoff each subchannel must be retried");
        move_to(&mut policy, &mut cc, 0, state(Connecting));
        assert_eq!(
            cc.state(),
            TransientFailure,
            "I5: TRANSIENT_FAILURE must be sticky until READY"
        );
    }

    #[test]
    fn pick_first_keeps_the_sticky_failure_error_current_and_reresolves_once_per_failed_round() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        cc.take_log();
        move_to(&mut policy, &mut cc, 0, failure("a2:1"));
        assert_eq!(cc.take_log(), Vec::<String>::new(), "one failure is not yet a failed pass");
        move_to(&mut policy, &mut cc, 1, failure("b2:1"));
        assert_eq!(
            cc.take_log(),
            ["picker TRANSIENT_FAILURE", "resolve_now"],
            "I4: a whole round of failures republishes the error and re-resolves once"
        );
        assert!(cc.picks(1)[0].contains("b2:1"), "RPCs must see the latest connection error");
    }

    /// Regression: two servers crash, a resolver update with the same two addresses arrives
    /// while the first backs off, both restart. The old pass asked only IDLE subchannels to
    /// connect and ignored IDLE reports while it waited, so the channel stayed CONNECTING and
    /// every later RPC failed.
    #[test]
    fn pick_first_recovers_when_an_update_arrives_while_every_subchannel_backs_off() {
        for list in [["a:1", "b:1"], ["b:1", "a:1"]] {
            let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
            move_to(&mut policy, &mut cc, 0, state(Ready));
            move_to(&mut policy, &mut cc, 0, state(Idle));
            policy.exit_idle(&mut cc);
            move_to(&mut policy, &mut cc, 0, failure("a:1"));
            move_to(&mut policy, &mut cc, 1, failure("b:1"));
            cc.take_log();
            update(&mut policy, &mut cc, &list);
            assert_eq!(cc.state(), TransientFailure, "I5: still failing fast after the update");
            move_to(&mut policy, &mut cc, 0, state(Idle));
            move_to(&mut policy, &mut cc, 1, state(Idle));
            let log = cc.take_log();
            assert!(
                log.contains(&"connect sc0".to_owned()) && log.contains(&"connect sc1".to_owned()),
                "I2: with {list:?}, every subchannel whose backoff ends must be reconnected: {log:?}"
            );
            move_to(&mut policy, &mut cc, 1, state(Ready));
            assert_eq!(cc.picks(1), ["sc1"], "the channel must recover once a server is back");
        }
    }

    /// The same, with the update arriving while the pass waits on the second address.
    #[test]
    fn pick_first_recovers_when_an_update_arrives_mid_pass() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        update(&mut policy, &mut cc, &["a:1", "b:1"]);
        cc.take_log();
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        assert_eq!(cc.state(), TransientFailure);
        move_to(&mut policy, &mut cc, 0, state(Idle));
        assert!(cc.take_log().contains(&"connect sc0".to_owned()), "I2: a must be retried");
    }

    #[test]
    fn pick_first_goes_idle_when_the_connection_is_lost_and_the_next_rpc_starts_from_the_top() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, state(Ready));
        cc.take_log();
        move_to(&mut policy, &mut cc, 1, state(Idle));
        assert_eq!(
            cc.take_log(),
            ["resolve_now", "picker IDLE"],
            "a lost connection must re-resolve and go IDLE, opening nothing yet"
        );
        assert_eq!(cc.picks(2), ["queue", "queue"], "RPCs queue while IDLE");
        assert_eq!(cc.take_log(), ["exit_idle"], "the first RPC must wake the policy, once");
        policy.exit_idle(&mut cc);
        let first = policy.entries[0].subchannel.id();
        assert_eq!(
            cc.take_log(),
            ["picker CONNECTING".to_owned(), format!("connect {first}")],
            "pick_first must start again from the first address"
        );
    }

    #[test]
    fn pick_first_stays_idle_on_an_update_until_an_rpc_arrives() {
        let (mut policy, mut cc) = given_list(&["a:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        move_to(&mut policy, &mut cc, 0, state(Idle));
        cc.take_log();
        update(&mut policy, &mut cc, &["b:1", "a:1"]);
        assert_eq!(cc.take_log(), ["new sc1 b:1"]);
        assert_eq!(cc.state(), Idle);
        policy.exit_idle(&mut cc);
        assert_eq!(cc.take_log(), ["picker CONNECTING", "connect sc1"]);
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
            "I1: every subchannel asked to connect, other than the READY one, must be replaced"
        );
        assert_eq!(ids(&policy), [0, 3, 4]);
    }

    #[test]
    fn pick_first_keeps_the_ready_connection_when_its_address_is_still_listed() {
        let (mut policy, mut cc) = given_list(&["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        cc.take_log();
        update(&mut policy, &mut cc, &["c:1", "a:1"]);
        assert_eq!(
            cc.take_log(),
            ["new sc2 c:1"],
            "I3: pick_first must keep the READY connection when its address is still listed"
        );
        assert_eq!(cc.picks(1), ["sc0"]);
    }

    #[test]
    fn pick_first_starts_a_pass_when_the_ready_address_is_no_longer_listed() {
        let (mut policy, mut cc) = given_list(&["a:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        cc.take_log();
        update(&mut policy, &mut cc, &["b:1"]);
        assert_eq!(cc.take_log(), ["new sc1 b:1", "picker CONNECTING", "connect sc1"]);
    }

    #[test]
    fn pick_first_collapses_duplicate_addresses_but_not_distinct_attributes() {
        let (_policy, mut cc) = given_list(&["a:1#0", "a:1#0", "a:1#1"]);
        let created: Vec<_> = cc.take_log().into_iter().filter(|l| l.starts_with("new")).collect();
        assert_eq!(created, ["new sc0 a:1{idx=0}", "new sc1 a:1{idx=1}"]);
    }

    #[test]
    fn pick_first_rejects_an_empty_list_reporting_transient_failure_and_reresolving() {
        let mut policy = PickFirst::new(false);
        let mut cc = RecordingController::new();
        let rejected = policy.resolver_update(&[], &mut cc);
        assert!(rejected.is_err(), "an empty list must be rejected so the resolver retries");
        assert_eq!(cc.state(), TransientFailure);
        assert!(cc.picks(1)[0].contains("no addresses"));
        assert!(cc.take_log().contains(&"resolve_now".to_owned()), "I4: empty list re-resolves");
        update(&mut policy, &mut cc, &["a:1"]);
        assert_eq!(
            cc.take_log(),
            ["new sc0 a:1", "picker CONNECTING", "connect sc0"],
            "a list after an empty one must connect at once"
        );
    }

    #[test]
    fn pick_first_requests_reresolution_on_a_resolver_error_and_keeps_serving() {
        let (mut policy, mut cc) = given_list(&["a:1"]);
        move_to(&mut policy, &mut cc, 0, state(Ready));
        cc.take_log();
        policy.resolver_error(&ResolverError::Manual("down".into()), &mut cc);
        assert_eq!(cc.take_log(), ["resolve_now"], "I4: a resolver error must re-resolve");
        assert_eq!(cc.picks(1), ["sc0"], "a serving policy keeps serving");
    }

    #[test]
    fn pick_first_shuffle_uses_the_seeded_rng() {
        let order = || {
            let mut policy = PickFirst::new(true);
            let mut cc = RecordingController::new();
            let list: Vec<String> = (0..8).map(|i| format!("h{i}:1")).collect();
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            policy.resolver_update(&addrs(&list), &mut cc).unwrap();
            policy.entries.iter().map(|e| e.subchannel.address().addr.clone()).collect::<Vec<_>>()
        };
        let first = order();
        assert_eq!(first, order(), "the same seed must give the same shuffle");
        assert_ne!(first[0..3], ["h0:1", "h1:1", "h2:1"], "shuffleAddressList must shuffle");
    }

    /// The mutant replays the old liveness bug: the same steps as
    /// `pick_first_recovers_when_an_update_arrives_while_every_subchannel_backs_off` leave the
    /// policy CONNECTING with nothing asked to connect when the backoffs end.
    #[test]
    fn the_stall_mutant_leaves_pick_first_connecting_after_an_update_during_backoff() {
        let mut policy =
            PickFirst::new(false).with_mutant(Some(Mutant::PickFirstStallsAfterUpdateInBackoff));
        let mut cc = RecordingController::new();
        update(&mut policy, &mut cc, &["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        move_to(&mut policy, &mut cc, 1, failure("b:1"));
        cc.take_log();
        update(&mut policy, &mut cc, &["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, state(Idle));
        move_to(&mut policy, &mut cc, 1, state(Idle));
        assert_eq!(cc.state(), Connecting, "the mutant must publish CONNECTING");
        assert_eq!(
            cc.take_log(),
            ["picker CONNECTING"],
            "the mutant must connect nothing when the backoffs end"
        );
    }

    #[test]
    fn the_never_fails_over_mutant_keeps_only_the_first_address() {
        let mut policy = PickFirst::new(false).with_mutant(Some(Mutant::PickFirstNeverFailsOver));
        let mut cc = RecordingController::new();
        update(&mut policy, &mut cc, &["a:1", "b:1"]);
        move_to(&mut policy, &mut cc, 0, failure("a:1"));
        let log = cc.take_log();
        assert!(
            !log.iter().any(|l| l.contains("b:1") || l == "connect sc1"),
            "the mutant must never touch b: {log:?}"
        );
        assert_eq!(cc.state(), TransientFailure);
    }

    mod model {
        //! A model check of I1 and I2: random crashes, restarts and resolver updates (same,
        //! reordered, shrunk and grown lists) against fake subchannels that behave like real
        //! ones (connect → CONNECTING → READY or TRANSIENT_FAILURE → backoff → IDLE). Once
        //! every server is up and the world is quiet, the policy must be READY on exactly one
        //! subchannel.

        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::*;

        const HOSTS: [&str; 3] = ["a:1", "b:1", "c:1"];

        #[derive(Debug, Clone)]
        enum Event {
            Crash(usize),
            Restart(usize),
            Update(Vec<usize>),
            /// Deliver the next pending step of subchannel number `n` (mod the live ones).
            Step(usize),
            /// An RPC picks.
            Pick,
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                1 => (0..3usize).prop_map(Event::Crash),
                1 => (0..3usize).prop_map(Event::Restart),
                1 => proptest::sample::subsequence(vec![0usize, 1, 2], 1..=3)
                    .prop_shuffle()
                    .prop_map(Event::Update),
                4 => (0..8usize).prop_map(Event::Step),
                1 => Just(Event::Pick),
            ]
        }

        /// A fake subchannel's life: what it will report next.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Phase {
            Idle,
            /// Asked to connect; will report CONNECTING.
            Asked,
            /// Reported CONNECTING; will report READY or TRANSIENT_FAILURE.
            Connecting,
            Ready,
            /// Reported TRANSIENT_FAILURE; will report IDLE when its backoff ends.
            Backoff,
        }

        struct World {
            policy: PickFirst,
            cc: RecordingController,
            up: [bool; 3],
            phases: BTreeMap<u64, Phase>,
        }

        impl World {
            fn new() -> Self {
                let mut world = Self {
                    policy: PickFirst::new(false),
                    cc: RecordingController::new(),
                    up: [true; 3],
                    phases: BTreeMap::new(),
                };
                world.update(&[0, 1]);
                world
            }

            fn update(&mut self, hosts: &[usize]) {
                let list: Vec<&str> = hosts.iter().map(|&h| HOSTS[h]).collect();
                self.policy.resolver_update(&addrs(&list), &mut self.cc).unwrap();
                self.absorb_log();
            }

            /// Applies what the policy asked for to the fake subchannels.
            fn absorb_log(&mut self) {
                for line in self.cc.take_log() {
                    if let Some(id) = line.strip_prefix("new sc") {
                        let id: u64 = id.split(' ').next().unwrap().parse().unwrap();
                        self.phases.insert(id, Phase::Idle);
                    } else if let Some(id) = line.strip_prefix("connect sc") {
                        let phase = self.phases.get_mut(&id.parse().unwrap()).unwrap();
                        if *phase == Phase::Idle {
                            *phase = Phase::Asked;
                        }
                    } else if line == "exit_idle" {
                        self.policy.exit_idle(&mut self.cc);
                        self.absorb_log();
                        return;
                    }
                }
            }

            /// Subchannels the policy still holds, in id order.
            fn live(&self) -> Vec<Subchannel> {
                let held: BTreeSet<_> =
                    self.policy.entries.iter().map(|e| e.subchannel.id().0).collect();
                self.cc.subchannels.iter().filter(|sc| held.contains(&sc.id().0)).cloned().collect()
            }

            fn host_up(&self, sc: &Subchannel) -> bool {
                let host = HOSTS.iter().position(|h| *h == sc.address().addr).unwrap();
                self.up[host]
            }

            /// Delivers one pending report of `sc`, if it has one. Returns whether it did.
            fn step(&mut self, sc: &Subchannel) -> bool {
                let id = sc.id().0;
                let (next, report) = match self.phases[&id] {
                    Phase::Asked => (Phase::Connecting, state(Connecting)),
                    Phase::Connecting if self.host_up(sc) => (Phase::Ready, state(Ready)),
                    Phase::Connecting => (Phase::Backoff, failure(&sc.address().addr)),
                    Phase::Ready if !self.host_up(sc) => (Phase::Idle, state(Idle)),
                    Phase::Backoff => (Phase::Idle, state(Idle)),
                    Phase::Idle | Phase::Ready => return false,
                };
                self.phases.insert(id, next);
                self.policy.subchannel_update(sc, &report, &mut self.cc);
                self.absorb_log();
                true
            }

            fn apply(&mut self, event: &Event) {
                match event {
                    Event::Crash(h) => self.up[*h] = false,
                    Event::Restart(h) => self.up[*h] = true,
                    Event::Update(hosts) => self.update(hosts),
                    Event::Step(n) => {
                        let live = self.live();
                        if !live.is_empty() {
                            self.step(&live[n % live.len()]);
                        }
                    }
                    Event::Pick => {
                        if self.cc.picker.is_some() {
                            self.cc.picks(1);
                            self.absorb_log();
                        }
                    }
                }
            }

            /// Delivers every pending report until nothing moves, with an RPC arriving now
            /// and then; bounded, so a livelock fails instead of hanging.
            fn settle(&mut self) {
                for _ in 0..200 {
                    let mut moved = false;
                    for sc in self.live() {
                        moved |= self.step(&sc);
                    }
                    if !moved {
                        self.cc.picks(1);
                        self.absorb_log();
                        if self
                            .live()
                            .iter()
                            .all(|sc| matches!(self.phases[&sc.id().0], Phase::Idle | Phase::Ready))
                            && self.cc.state() != Idle
                        {
                            return;
                        }
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 512,
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x7069_636b),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// I2 (no stall) and I1 (one connection): whatever happened before, once every
            /// server is up and the reports are delivered, the policy is READY on exactly one
            /// subchannel.
            #[test]
            fn pick_first_always_ends_ready_on_one_subchannel_once_servers_are_up(
                events in proptest::collection::vec(event(), 0..40)
            ) {
                let mut world = World::new();
                for event in &events {
                    world.apply(event);
                }
                world.up = [true; 3];
                world.settle();
                let ready: Vec<_> = world.live().into_iter()
                    .filter(|sc| world.phases[&sc.id().0] == Phase::Ready)
                    .collect();
                prop_assert_eq!(world.cc.state(), Ready, "I2: the policy must end READY");
                prop_assert_eq!(ready.len(), 1, "I1: exactly one connection, got {:?}", ready);
                prop_assert_eq!(world.cc.picks(1), vec![ready[0].id().to_string()]);
            }
        }
    }
}
