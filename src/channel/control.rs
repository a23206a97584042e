//! The channel's control task: the one place that owns the resolver, the policy and the
//! subchannel table, and handles their events one at a time (the model of the official `grpc`
//! crate). Nothing here is shared with RPCs except what it publishes: the picker and the
//! service config.
//!
//! # Inputs, all bounded
//! - resolver states and errors, through a one-slot mailbox where the latest wins
//!   ([`Updates`]);
//! - subchannel state reports, one per transition, from the subchannels' tasks;
//! - exit-idle requests from IDLE pickers, coalesced into one flag;
//! - the channel's close.
//!
//! # Graceful policy switch
//! When the service config selects another policy, the new one is built as *pending*: it gets
//! the address list and creates its own subchannels while the *current* one keeps serving with
//! its picker. The pending policy takes over (and the current one, with its subchannels, is
//! dropped) as soon as it publishes a state other than CONNECTING, or the current one is not
//! READY (grpc-go's `gracefulswitch` balancer). Each subchannel is tagged with the policy that
//! created it, so its reports reach only that policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{ChannelEvent, EventSink};
use crate::address::Address;
use crate::balancer::subchannel::{self, StateEvent, WeakSubchannel};
use crate::balancer::{
    ChannelController, ConnectivityState, IdleExit, LbPolicy, PickerUpdate, Subchannel,
    SubchannelConfig, SubchannelId, SubchannelOptions, policy_with_mutant,
};
use crate::connector::Connector;
use crate::mutant::Mutant;
use crate::resolver::{Resolver, ResolverState, Updates, Verdict};
use crate::service_config::{LoadBalancingConfig, ServiceConfig};
use arc_swap::ArcSwap;

/// What the control task needs to start.
pub(super) struct Control {
    pub(super) resolver: Box<dyn Resolver>,
    pub(super) updates: Updates,
    pub(super) default_config: Arc<ServiceConfig>,
    pub(super) config_tx: watch::Sender<Arc<ServiceConfig>>,
    /// The same config for RPCs, which read it without a lock.
    pub(super) rpc_config: Arc<ArcSwap<ServiceConfig>>,
    pub(super) controller: Controller,
    pub(super) state_rx: mpsc::Receiver<StateEvent>,
    pub(super) closed: oneshot::Receiver<()>,
    /// The deliberate defect switched on, if any: handed to every policy built.
    pub(super) mutant: Option<Mutant>,
}

/// Which policy a call, a subchannel or a picker belongs to.
type Generation = u64;

/// A policy and what the control task knows of it.
struct Slot {
    config: LoadBalancingConfig,
    policy: Box<dyn LbPolicy>,
    generation: Generation,
}

/// The exit-idle flag shared with IDLE pickers, and the wake-up of the control task.
#[derive(Debug, Default)]
pub(super) struct IdleRequest {
    requested: AtomicBool,
    wake: Notify,
}

/// The [`ChannelController`] the policies talk to.
pub(super) struct Controller {
    pub(super) next_id: u64,
    /// Every live subchannel with the generation of the policy that created it.
    pub(super) subchannels: BTreeMap<SubchannelId, (WeakSubchannel, Generation)>,
    pub(super) picker_tx: Arc<super::published::Published>,
    pub(super) resolve_now: bool,
    pub(super) rng: ChaCha8Rng,
    pub(super) config: Arc<SubchannelConfig>,
    /// The channel's current service config, for subchannels that check health (gRFC A17).
    pub(super) health: subchannel::HealthSource,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) state_tx: mpsc::Sender<StateEvent>,
    pub(super) events: EventSink,
    pub(super) idle: Arc<IdleRequest>,
    /// The policy being called now.
    pub(super) calling: Generation,
    /// The generation of the current policy, whose pickers are published.
    pub(super) current: Generation,
    /// The state the current policy last published.
    pub(super) current_state: ConnectivityState,
    /// The last picker of the pending policy, held back until it takes over.
    pub(super) pending_picker: Option<PickerUpdate>,
}

impl ChannelController for Controller {
    fn new_subchannel_with(&mut self, address: &Address, options: SubchannelOptions) -> Subchannel {
        let id = SubchannelId(self.next_id);
        self.next_id += 1;
        let seed = self.rng.next_u64();
        let sc = subchannel::spawn(
            id,
            address.clone(),
            self.config.clone(),
            self.connector.clone(),
            self.state_tx.clone(),
            seed,
            options.health_check.then(|| self.health.clone()),
        );
        self.subchannels.insert(id, (sc.downgrade(), self.calling));
        self.events.emit(ChannelEvent::SubchannelCreated { id, address: address.clone() });
        sc
    }

    fn update_picker(&mut self, update: PickerUpdate) {
        if self.calling != self.current {
            self.pending_picker = Some(update);
            return;
        }
        self.publish(update);
    }

    fn request_resolution(&mut self) {
        self.resolve_now = true;
    }

    fn rng(&mut self) -> &mut dyn RngCore {
        &mut self.rng
    }

    fn idle_exit(&mut self) -> IdleExit {
        let idle = self.idle.clone();
        IdleExit::new(move || {
            idle.requested.store(true, Ordering::Release);
            idle.wake.notify_one();
        })
    }
}

impl Controller {
    fn publish(&mut self, update: PickerUpdate) {
        let state = update.state;
        self.current_state = state;
        self.picker_tx.publish(update);
        // Emitted after publishing, so an observer that sees it knows RPCs now use this picker.
        self.events.emit(ChannelEvent::Picker { state });
    }
}

/// The current policy and the one waiting to replace it.
#[derive(Default)]
struct Policies {
    current: Option<Slot>,
    pending: Option<Slot>,
    next_generation: Generation,
}

impl Policies {
    /// The newest policy: resolver updates and exit-idle requests go here.
    fn latest(&mut self) -> Option<&mut Slot> {
        match self.pending {
            Some(ref mut pending) => Some(pending),
            None => self.current.as_mut(),
        }
    }
}

impl Control {
    pub(super) async fn run(mut self) {
        let mut policies = Policies::default();
        let idle = self.controller.idle.clone();
        loop {
            tokio::select! {
                biased;
                _ = &mut self.closed => break,
                Some(event) = self.state_rx.recv() => self.subchannel_event(event, &mut policies),
                events = self.updates.recv() => {
                    for (event, verdict) in events {
                        match event {
                            Ok(state) => self.resolver_update(state, verdict, &mut policies),
                            Err(error) => self.resolver_error(&error, &mut policies),
                        }
                    }
                }
                () = idle.wake.notified() => {
                    if idle.requested.swap(false, Ordering::AcqRel) {
                        self.call(&mut policies, |policy, cc| policy.exit_idle(cc));
                    }
                }
                else => break,
            }
            if std::mem::take(&mut self.controller.resolve_now) {
                self.controller.events.emit(ChannelEvent::ResolveNow);
                self.resolver.resolve_now();
            }
        }
        self.controller.picker_tx.close();
    }

    /// Calls the latest policy, then lets a pending policy take over if it may.
    fn call<R>(
        &mut self,
        policies: &mut Policies,
        f: impl FnOnce(&mut dyn LbPolicy, &mut Controller) -> R,
    ) -> Option<R> {
        let slot = policies.latest()?;
        self.controller.calling = slot.generation;
        let result = f(slot.policy.as_mut(), &mut self.controller);
        self.maybe_swap(policies);
        Some(result)
    }

    /// The pending policy takes over once it is not CONNECTING, or once the current policy is
    /// not READY (grpc-go's graceful switch).
    fn maybe_swap(&mut self, policies: &mut Policies) {
        let Some(update) = &self.controller.pending_picker else { return };
        if policies.pending.is_none() {
            self.controller.pending_picker = None;
            return;
        }
        let pending_ready = update.state != ConnectivityState::Connecting;
        if !pending_ready && self.controller.current_state == ConnectivityState::Ready {
            return;
        }
        let pending = policies.pending.take().expect("checked above");
        self.controller.current = pending.generation;
        // The old policy and its subchannels shut down as it drops here.
        policies.current = Some(pending);
        if let Some(update) = self.controller.pending_picker.take() {
            self.controller.publish(update);
        }
    }

    fn subchannel_event(&mut self, event: StateEvent, policies: &mut Policies) {
        let owner = self.controller.subchannels.get(&event.id);
        let Some((sc, generation)) = owner.and_then(|(weak, g)| Some((weak.upgrade()?, *g))) else {
            // The policy dropped this subchannel; its late reports mean nothing now.
            self.controller.subchannels.remove(&event.id);
            return;
        };
        self.controller.events.emit(ChannelEvent::SubchannelState {
            id: event.id,
            address: sc.address().clone(),
            state: event.state.state,
            error: event.state.error.as_ref().map(ToString::to_string),
        });
        let slot = [policies.current.as_mut(), policies.pending.as_mut()]
            .into_iter()
            .flatten()
            .find(|slot| slot.generation == generation);
        if let Some(slot) = slot {
            self.controller.calling = generation;
            slot.policy.subchannel_update(&sc, &event.state, &mut self.controller);
            self.maybe_swap(policies);
        }
    }

    fn resolver_error(&mut self, error: &crate::resolver::ResolverError, policies: &mut Policies) {
        self.controller.events.emit(ChannelEvent::ResolverError { error: error.to_string() });
        if policies.current.is_none() {
            let config = self.default_config.load_balancing().clone();
            self.install(config, policies);
        }
        self.call(policies, |policy, cc| policy.resolver_error(error, cc));
    }

    fn resolver_update(
        &mut self,
        state: ResolverState,
        verdict: Option<Verdict>,
        policies: &mut Policies,
    ) {
        self.controller.events.emit(ChannelEvent::Resolved { addresses: state.addresses.clone() });
        // A config from the resolver beats the default one; an invalid one keeps what we had
        // (gRPC's service_config.md).
        let config = match state.service_config {
            Some(Ok(config)) => Arc::new(config),
            Some(Err(error)) => {
                tracing::warn!(%error, "resolver sent an invalid service config; keeping the current one");
                self.config_tx.borrow().clone()
            }
            None => self.default_config.clone(),
        };
        let lb = config.load_balancing().clone();
        self.rpc_config.store(config.clone());
        self.config_tx.send_replace(config);
        self.install(lb, policies);
        let addresses = &state.addresses;
        let result = self.call(policies, |policy, cc| policy.resolver_update(addresses, cc));
        if let Some(Err(rejected)) = &result {
            self.controller
                .events
                .emit(ChannelEvent::ResolverStateRejected { error: rejected.to_string() });
        }
        if let Some(verdict) = verdict {
            let _ = verdict.send(result.unwrap_or(Ok(())));
        }
    }

    /// Makes `config` the latest policy: the first one becomes current at once; a different
    /// one becomes pending (replacing an older pending one); going back to the current one
    /// drops the pending one.
    fn install(&mut self, config: LoadBalancingConfig, policies: &mut Policies) {
        let generation = policies.next_generation;
        let mutant = self.mutant;
        let slot = || Slot {
            config: config.clone(),
            policy: policy_with_mutant(&config, mutant),
            generation,
        };
        match (&policies.current, &policies.pending) {
            (None, _) => {
                policies.next_generation += 1;
                self.controller.current = generation;
                policies.current = Some(slot());
            }
            (Some(current), _) if current.config == config => {
                policies.pending = None;
                self.controller.pending_picker = None;
            }
            (_, Some(pending)) if pending.config == config => {}
            (Some(_), _) => {
                policies.next_generation += 1;
                self.controller.pending_picker = None;
                policies.pending = Some(slot());
            }
        }
    }
}
