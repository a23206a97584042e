//! Load balancing: policies, pickers and subchannels, after gRPC's balancer API.
//!
//! The shape follows grpc-go's `balancer` package and the official `grpc` crate:
//!
//! - A [`Subchannel`] is one HTTP/2 connection to one [`Address`], with the connectivity states
//!   IDLE → CONNECTING → READY / TRANSIENT_FAILURE → … → SHUTDOWN ([`ConnectivityState`]).
//! - An [`LbPolicy`] owns subchannels. It reacts to resolver updates and to subchannel state
//!   changes, and publishes a [`Picker`] through its [`ChannelController`].
//! - A [`Picker`] is an immutable snapshot that routes each RPC: to a READY subchannel, to the
//!   queue (nothing ready yet), or to a fast failure.
//!
//! One task per channel owns the policy and calls it one event at a time, so policies need no
//! locks. Pickers are shared with every RPC and must never block.
//!
//! Built-in policies: [`pick_first`] (the default) and [`round_robin`]. The service config's
//! `loadBalancingConfig` chooses among every policy in the [`registry`] (see [`policy_for`]).
//!
//! ## Writing a policy
//! Implement [`LbPolicy`] (and usually a [`Picker`]) against a [`ChannelController`], give it a
//! [`PolicyBuilder`] that validates its config, and [`register`] the builder once at start-up;
//! service configs then select it by name, as grpc-go's `balancer.Register` allows. This one
//! reuses `round_robin` and only adds a config:
//!
//! ```
//! use anchorage::balancer::{self, LbPolicy, PolicyBuilder, PolicyConfig, PolicyConfigError};
//! use anchorage::service_config::{ServiceConfig, ServiceConfigErrorKind};
//! use serde_json::{Map, Value};
//!
//! /// `{"label": "..."}`, a name for dashboards.
//! #[derive(Debug, PartialEq)]
//! struct LabelledConfig {
//!     label: String,
//! }
//!
//! impl PolicyConfig for LabelledConfig {
//!     fn to_json(&self) -> Map<String, Value> {
//!         Map::from_iter([("label".to_owned(), Value::from(self.label.as_str()))])
//!     }
//! }
//!
//! struct Labelled;
//!
//! impl PolicyBuilder for Labelled {
//!     type Config = LabelledConfig;
//!
//!     fn name(&self) -> &'static str {
//!         "labelled_round_robin"
//!     }
//!
//!     fn parse_config(
//!         &self,
//!         config: &Map<String, Value>,
//!     ) -> Result<LabelledConfig, PolicyConfigError> {
//!         match config.get("label") {
//!             Some(Value::String(label)) => Ok(LabelledConfig { label: label.clone() }),
//!             _ => Err(PolicyConfigError::at("label", "must be a string")),
//!         }
//!     }
//!
//!     fn build(&self, _: &LabelledConfig) -> Box<dyn LbPolicy> {
//!         Box::new(balancer::round_robin::RoundRobin::new())
//!     }
//! }
//!
//! balancer::register(Labelled)?;
//!
//! // Unknown names are skipped in order (gRFC A24); the first registered one wins.
//! let config = ServiceConfig::parse(
//!     r#"{"loadBalancingConfig": [{"wrr_experimental": {}}, {"labelled_round_robin": {"label": "blue"}}]}"#,
//! )?;
//! assert_eq!(config.load_balancing().name(), "labelled_round_robin");
//! let _policy = balancer::policy_for(config.load_balancing());
//!
//! // The chosen policy's builder validates its config.
//! let error = ServiceConfig::parse(r#"{"loadBalancingConfig": [{"labelled_round_robin": {}}]}"#)
//!     .unwrap_err();
//! assert_eq!(error.path(), "loadBalancingConfig[0].labelled_round_robin.label");
//! assert!(matches!(error.kind(), ServiceConfigErrorKind::InvalidPolicyConfig { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A policy with its own picker, driving real RPCs, is in the crate's `tests/custom_policy.rs`.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;

use crate::address::Address;
use crate::resolver::ResolverError;
use crate::service_config::LoadBalancingConfig;

pub mod pick_first;
pub mod registry;
pub mod round_robin;
pub mod subchannel;

pub use registry::{
    PolicyBuilder, PolicyConfig, PolicyConfigError, RegisterError, RegisteredConfig, register,
};
pub use subchannel::{
    ConnectionError, Subchannel, SubchannelConfig, SubchannelId, SubchannelOptions,
};

/// gRPC connectivity states (gRPC's `connectivity-semantics-and-api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectivityState {
    /// Not connected and not trying; a connect request moves it to CONNECTING.
    Idle,
    /// A connection attempt is in progress.
    Connecting,
    /// Connected: RPCs can be sent.
    Ready,
    /// The last attempt failed; waiting out the reconnect backoff.
    TransientFailure,
    /// Shut down for good; no further transitions.
    Shutdown,
}

impl fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "IDLE",
            Self::Connecting => "CONNECTING",
            Self::Ready => "READY",
            Self::TransientFailure => "TRANSIENT_FAILURE",
            Self::Shutdown => "SHUTDOWN",
        })
    }
}

/// A subchannel's new state and, for TRANSIENT_FAILURE and a lost READY connection, why.
#[derive(Debug, Clone, PartialEq)]
pub struct SubchannelState {
    /// The state entered.
    pub state: ConnectivityState,
    /// The error that caused it, if any.
    pub error: Option<ConnectionError>,
}

impl SubchannelState {
    /// A state with no error attached.
    pub fn new(state: ConnectivityState) -> Self {
        Self { state, error: None }
    }
}

/// What a [`Picker`] decides for one RPC.
#[derive(Debug, Clone)]
pub enum PickResult {
    /// Send the RPC on this READY subchannel.
    Pick(Subchannel),
    /// Nothing can take the RPC yet: wait for the next picker (bounded by the RPC's deadline).
    Queue,
    /// Fail the RPC with `UNAVAILABLE` and this reason, unless it is wait-for-ready, in which case
    /// it waits for the next picker like [`PickResult::Queue`].
    Fail(Arc<str>),
}

/// What a picker is told about the RPC it routes.
#[derive(Debug, Clone, Copy)]
pub struct PickInfo<'a> {
    /// The RPC's full method path, `/package.Service/Method`.
    pub method: &'a str,
}

/// Routes RPCs; published by a policy whenever its view changes.
///
/// # Contract
/// - Called concurrently from every task that sends an RPC; must be cheap and must never block.
/// - Immutable snapshot semantics: a picker never sees later state changes; the policy publishes
///   a new one instead. Interior state such as a round-robin counter is allowed.
pub trait Picker: Send + Sync + fmt::Debug {
    /// Decides where one RPC goes.
    fn pick(&self, info: &PickInfo<'_>) -> PickResult;
}

/// A picker with the aggregate connectivity state it was published with.
#[derive(Debug, Clone)]
pub struct PickerUpdate {
    /// The channel's connectivity state as the policy sees it.
    pub state: ConnectivityState,
    /// The picker for that state.
    pub picker: Arc<dyn Picker>,
}

/// The channel's side of a policy: what a policy may ask for.
///
/// # Contract
/// Passed by `&mut` into each [`LbPolicy`] call on the channel's control task; a policy must not
/// keep it. Every call returns at once; effects (a subchannel's first state, a re-resolution)
/// arrive later as new events.
pub trait ChannelController {
    /// Creates a subchannel in IDLE for `address` with default [`SubchannelOptions`]. It
    /// connects only when asked ([`Subchannel::connect`]) and shuts down when its last handle
    /// is dropped.
    fn new_subchannel(&mut self, address: &Address) -> Subchannel {
        self.new_subchannel_with(address, SubchannelOptions::default())
    }
    /// [`new_subchannel`](Self::new_subchannel) with `options`, such as client-side health
    /// checking (gRFC A17).
    fn new_subchannel_with(&mut self, address: &Address, options: SubchannelOptions) -> Subchannel;
    /// Publishes a new picker and aggregate state; RPCs waiting in the queue re-pick with it.
    fn update_picker(&mut self, update: PickerUpdate);
    /// Asks the resolver to resolve again (a hint; see [`crate::resolver::Resolver::resolve_now`]).
    fn request_resolution(&mut self);
    /// The channel's seeded random number generator, for anything a policy randomises.
    fn rng(&mut self) -> &mut dyn RngCore;
    /// A handle that asks the channel to call [`LbPolicy::exit_idle`] on its control task. An
    /// IDLE policy puts it in its picker ([`IdlePicker`]), so the next RPC wakes the policy.
    fn idle_exit(&mut self) -> IdleExit;
}

/// Asks the channel's control task to call [`LbPolicy::exit_idle`]. Cheap to clone; calling it
/// from any task, any number of times, returns at once; requests that arrive before the control
/// task runs coalesce into one.
#[derive(Clone)]
pub struct IdleExit(Arc<dyn Fn() + Send + Sync>);

impl IdleExit {
    /// A handle that runs `wake` on every request.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(wake))
    }

    /// Requests that the policy leave IDLE.
    pub fn request(&self) {
        (self.0)()
    }
}

impl fmt::Debug for IdleExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdleExit")
    }
}

/// A resolver state the policy cannot use (grpc-go's `ErrBadResolverState`), such as an empty
/// address list. The resolver is told, and retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("balancer: resolver state rejected: {0}")]
pub struct BadResolverState(pub String);

/// A load-balancing policy.
///
/// # Contract
/// - Called only from the channel's control task, one call at a time, never concurrently; no
///   locks are needed. No call may block or await.
/// - Each call may create subchannels, ask them to connect, drop them (dropping the last handle
///   shuts a subchannel down), publish a picker and request re-resolution, all through the
///   controller passed in.
/// - State updates for a subchannel the policy has dropped are not delivered.
pub trait LbPolicy: Send + fmt::Debug {
    /// The resolver produced a new address list (possibly empty). Duplicates by [`Address`]
    /// identity are the policy's to collapse.
    ///
    /// # Errors
    /// [`BadResolverState`] when the policy cannot use the state (an empty list, for the
    /// built-in policies). The policy has then already published TRANSIENT_FAILURE and
    /// requested re-resolution; the channel tells the resolver, which retries with backoff.
    fn resolver_update(
        &mut self,
        addresses: &[Address],
        controller: &mut dyn ChannelController,
    ) -> Result<(), BadResolverState>;

    /// The resolver failed. A policy that is serving keeps serving; one that has no addresses
    /// reports TRANSIENT_FAILURE with the error. Either way it requests re-resolution.
    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController);

    /// An RPC arrived while the policy was IDLE (its picker called [`IdleExit::request`]): start
    /// connecting. Policies that are never IDLE ignore it (the default).
    fn exit_idle(&mut self, controller: &mut dyn ChannelController) {
        let _ = controller;
    }

    /// `subchannel` entered `state`.
    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    );
}

/// The policy a service config's `loadBalancingConfig` selects. With no config the default is
/// `pick_first` (DESIGN §2.4).
pub fn policy_for(config: &LoadBalancingConfig) -> Box<dyn LbPolicy> {
    policy_with_mutant(config, None)
}

/// [`policy_for`] with the channel's [`Mutant`](crate::mutant::Mutant), if any.
pub(crate) fn policy_with_mutant(
    config: &LoadBalancingConfig,
    mutant: Option<crate::mutant::Mutant>,
) -> Box<dyn LbPolicy> {
    match config {
        LoadBalancingConfig::RoundRobin => {
            Box::new(round_robin::RoundRobin::new().with_mutant(mutant))
        }
        LoadBalancingConfig::PickFirst(config) => {
            Box::new(pick_first::PickFirst::new(config.shuffle_address_list).with_mutant(mutant))
        }
        // Mutants are defects planted in the built-in policies; a registered one has none.
        LoadBalancingConfig::Registered(registered) => registered.build(),
    }
}

/// A picker that queues every RPC: published while a policy is connecting.
#[derive(Debug, Default)]
pub struct QueuingPicker;

impl Picker for QueuingPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        PickResult::Queue
    }
}

/// A picker published in IDLE: the first RPC that picks asks the policy to leave IDLE, and every
/// RPC queues until the next picker.
#[derive(Debug)]
pub struct IdlePicker {
    exit: IdleExit,
    requested: std::sync::atomic::AtomicBool,
}

impl IdlePicker {
    /// A picker that calls `exit` on its first pick.
    pub fn new(exit: IdleExit) -> Self {
        Self { exit, requested: std::sync::atomic::AtomicBool::new(false) }
    }
}

impl Picker for IdlePicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        if !self.requested.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.exit.request();
        }
        PickResult::Queue
    }
}

/// A picker that fails every RPC with the same reason: published in TRANSIENT_FAILURE.
#[derive(Debug)]
pub struct FailingPicker(pub Arc<str>);

impl Picker for FailingPicker {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        PickResult::Fail(self.0.clone())
    }
}

impl PickerUpdate {
    /// IDLE with a picker that wakes the policy on the first RPC.
    pub fn idle(exit: IdleExit) -> Self {
        Self { state: ConnectivityState::Idle, picker: Arc::new(IdlePicker::new(exit)) }
    }

    /// CONNECTING with a queuing picker.
    pub fn connecting() -> Self {
        Self { state: ConnectivityState::Connecting, picker: Arc::new(QueuingPicker) }
    }

    /// TRANSIENT_FAILURE with a picker that fails RPCs with `reason`.
    pub fn failing(reason: impl Into<Arc<str>>) -> Self {
        Self {
            state: ConnectivityState::TransientFailure,
            picker: Arc::new(FailingPicker(reason.into())),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
