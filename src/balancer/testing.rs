//! A recording channel controller for policy tests: every request a policy makes is appended to
//! one log, in order, so tests can assert exact sequences.

use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::sync::lock;

/// Records what a policy asks for: `new sc0 a:1{idx=0}`, `connect sc0`, `picker READY`,
/// `resolve_now`.
#[derive(Debug)]
pub(crate) struct RecordingController {
    log: Arc<Mutex<Vec<String>>>,
    next_id: u64,
    /// Every subchannel created, by id.
    pub(crate) subchannels: Vec<Subchannel>,
    /// The options each subchannel was created with, by id.
    pub(crate) options: Vec<SubchannelOptions>,
    /// The last picker published.
    pub(crate) picker: Option<PickerUpdate>,
    rng: ChaCha8Rng,
}

impl RecordingController {
    pub(crate) fn new() -> Self {
        Self {
            log: Arc::default(),
            next_id: 0,
            subchannels: Vec::new(),
            options: Vec::new(),
            picker: None,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    /// Takes the log recorded so far.
    pub(crate) fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// The subchannel with id `id`.
    pub(crate) fn subchannel(&self, id: u64) -> Subchannel {
        self.subchannels[id as usize].clone()
    }

    /// The ids the current picker picks for `n` RPCs; "queue" or "fail: …" otherwise.
    pub(crate) fn picks(&self, n: usize) -> Vec<String> {
        let picker = &self.picker.as_ref().expect("a picker was published").picker;
        (0..n)
            .map(|_| match picker.pick(&PickInfo { method: "/test.Echo/Echo" }) {
                PickResult::Pick(sc) => sc.id().to_string(),
                PickResult::Queue => "queue".to_owned(),
                PickResult::Fail(reason) => format!("fail: {reason}"),
            })
            .collect()
    }

    /// The state of the last published picker.
    pub(crate) fn state(&self) -> ConnectivityState {
        self.picker.as_ref().expect("a picker was published").state
    }
}

impl ChannelController for RecordingController {
    fn new_subchannel_with(&mut self, address: &Address, options: SubchannelOptions) -> Subchannel {
        let id = SubchannelId(self.next_id);
        let log = Arc::clone(&self.log);
        let record = Box::new(move || lock(&log).push(format!("connect {id}")));
        let sc = Subchannel::with_connect_hook(id, address.clone(), record);
        self.next_id += 1;
        lock(&self.log).push(format!("new {} {address}", sc.id()));
        self.options.push(options);
        self.subchannels.push(sc.clone());
        sc
    }

    fn update_picker(&mut self, update: PickerUpdate) {
        lock(&self.log).push(format!("picker {}", update.state));
        self.picker = Some(update);
    }

    fn request_resolution(&mut self) {
        lock(&self.log).push("resolve_now".to_owned());
    }

    fn rng(&mut self) -> &mut dyn RngCore {
        &mut self.rng
    }

    fn idle_exit(&mut self) -> IdleExit {
        let log = self.log.clone();
        IdleExit::new(move || lock(&log).push("exit_idle".to_owned()))
    }
}

/// A state with no error.
pub(crate) fn state(state: ConnectivityState) -> SubchannelState {
    SubchannelState::new(state)
}

/// TRANSIENT_FAILURE with a connect error to `addr`.
pub(crate) fn failure(addr: &str) -> SubchannelState {
    SubchannelState {
        state: ConnectivityState::TransientFailure,
        error: Some(ConnectionError::Connect { addr: addr.to_owned(), reason: "refused".into() }),
    }
}

/// Addresses from `addr` strings, each with connection index `idx` when given as `addr#idx`.
pub(crate) fn addrs(list: &[&str]) -> Vec<Address> {
    list.iter()
        .map(|item| match item.split_once('#') {
            Some((addr, idx)) => Address::new(addr).with_connection_index(idx.parse().unwrap()),
            None => Address::new(*item),
        })
        .collect()
}
