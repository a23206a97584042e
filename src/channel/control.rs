//! The channel's control task: the one place that owns the resolver, the policy and the
//! subchannel table, and handles their events one at a time (the model of the official `grpc`
//! crate). Nothing here is shared with RPCs except what it publishes: the picker and the
//! service config, through `watch` channels.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot, watch};

use super::{ChannelEvent, EventSink};
use crate::address::Address;
use crate::balancer::subchannel::{self, StateEvent, WeakSubchannel};
use crate::balancer::{
    ChannelController, LbPolicy, PickerUpdate, Subchannel, SubchannelConfig, SubchannelId,
    policy_for,
};
use crate::connector::Connector;
use crate::resolver::{Resolver, ResolverEvent, ResolverState};
use crate::service_config::{LoadBalancingConfig, ServiceConfig};

/// What the control task needs to start.
pub(super) struct Control {
    pub(super) resolver: Box<dyn Resolver>,
    pub(super) resolver_rx: mpsc::UnboundedReceiver<ResolverEvent>,
    pub(super) default_config: Arc<ServiceConfig>,
    pub(super) config_tx: watch::Sender<Arc<ServiceConfig>>,
    pub(super) controller: Controller,
    pub(super) state_rx: mpsc::Receiver<StateEvent>,
    pub(super) closed: oneshot::Receiver<()>,
}

/// The [`ChannelController`] the policy talks to.
pub(super) struct Controller {
    pub(super) next_id: u64,
    pub(super) subchannels: BTreeMap<SubchannelId, WeakSubchannel>,
    pub(super) picker_tx: Arc<super::published::Published>,
    pub(super) resolve_now: bool,
    pub(super) rng: ChaCha8Rng,
    pub(super) config: Arc<SubchannelConfig>,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) state_tx: mpsc::Sender<StateEvent>,
    pub(super) events: EventSink,
}

impl ChannelController for Controller {
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
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
        );
        self.subchannels.insert(id, sc.downgrade());
        self.events.emit(ChannelEvent::SubchannelCreated { id, address: address.clone() });
        sc
    }

    fn update_picker(&mut self, update: PickerUpdate) {
        let state = update.state;
        self.picker_tx.publish(update);
        // Emitted after publishing, so an observer that sees it knows RPCs now use this picker.
        self.events.emit(ChannelEvent::Picker { state });
    }

    fn request_resolution(&mut self) {
        self.resolve_now = true;
    }

    fn rng(&mut self) -> &mut dyn RngCore {
        &mut self.rng
    }
}

impl Control {
    pub(super) async fn run(mut self) {
        let mut policy: Option<(LoadBalancingConfig, Box<dyn LbPolicy>)> = None;
        loop {
            tokio::select! {
                biased;
                _ = &mut self.closed => break,
                Some(event) = self.state_rx.recv() => self.subchannel_event(event, &mut policy),
                Some(event) = self.resolver_rx.recv() => self.resolver_event(event, &mut policy),
                else => break,
            }
            if std::mem::take(&mut self.controller.resolve_now) {
                self.controller.events.emit(ChannelEvent::ResolveNow);
                self.resolver.resolve_now();
            }
        }
        self.controller.picker_tx.close();
    }

    fn subchannel_event(
        &mut self,
        event: StateEvent,
        policy: &mut Option<(LoadBalancingConfig, Box<dyn LbPolicy>)>,
    ) {
        let Some(sc) = self.controller.subchannels.get(&event.id).and_then(WeakSubchannel::upgrade)
        else {
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
        if let Some((_, policy)) = policy {
            policy.subchannel_update(&sc, &event.state, &mut self.controller);
        }
    }

    fn resolver_event(
        &mut self,
        event: ResolverEvent,
        policy: &mut Option<(LoadBalancingConfig, Box<dyn LbPolicy>)>,
    ) {
        match event {
            Ok(state) => self.resolver_update(state, policy),
            Err(error) => {
                self.controller
                    .events
                    .emit(ChannelEvent::ResolverError { error: error.to_string() });
                let current = policy.get_or_insert_with(|| {
                    let config = *self.default_config.load_balancing();
                    let built = policy_for(&config);
                    (config, built)
                });
                current.1.resolver_error(&error, &mut self.controller);
            }
        }
    }

    fn resolver_update(
        &mut self,
        state: ResolverState,
        policy: &mut Option<(LoadBalancingConfig, Box<dyn LbPolicy>)>,
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
        let lb = *config.load_balancing();
        self.config_tx.send_replace(config);
        if policy.as_ref().is_none_or(|(current, _)| *current != lb) {
            // Switching policy: the old one and its subchannels shut down as it drops.
            *policy = Some((lb, policy_for(&lb)));
        }
        if let Some((_, policy)) = policy {
            policy.resolver_update(&state.addresses, &mut self.controller);
        }
    }
}
