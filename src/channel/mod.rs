//! The channel: a `tower::Service` that any tonic-generated client runs on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use anchorage::channel::Channel;
//! use anchorage::pb::{EchoRequest, echo_client::EchoClient};
//!
//! let channel = Channel::builder("pass:///127.0.0.1:9080#2,127.0.0.1:9090#1")
//!     .default_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#)?
//!     .build()?;
//! let mut client = EchoClient::new(channel);
//! client.echo(EchoRequest { message: "hi".into(), ..Default::default() }).await?;
//! # Ok(()) }
//! ```
//!
//! Building a channel parses the target, builds its resolver and starts one control task
//! (`channel/control.rs`) that owns the resolver, the load-balancing policy and the subchannels. Each RPC
//! then picks a subchannel from the latest published picker (`channel/call.rs`): it queues while nothing
//! is READY (until its deadline), fails fast with `UNAVAILABLE` when the policy is in
//! TRANSIENT_FAILURE (unless wait-for-ready), and is retried per the method's `retryPolicy`.
//! The control task stops when the last clone of the channel is dropped.
//!
//! # Deadlines
//! An RPC's deadline is the earlier of the caller's timeout (`grpc-timeout`, as tonic's
//! `Request::set_timeout` sets it) and the method config's `timeout`. It covers the whole RPC:
//! queueing for a connection, every attempt and retry backoff, and the response body up to its
//! trailers. When it passes, the RPC fails with `DEADLINE_EXCEEDED` and its HTTP/2 stream is
//! reset, even if the server already sent response headers. Each attempt tells the server the
//! time left in `grpc-timeout`, in the finest unit that fits 8 digits (rounded up).
//!
//! # Authority
//! Every RPC's `:authority` names the target, not the address it was sent to: the one set with
//! [`ChannelBuilder::authority`], or else the resolver's
//! [`default_authority`](ResolverBuilder::default_authority) — the endpoint for `passthrough`
//! and custom resolvers, `host:port` for `dns` (port 443 unless given), the first item's
//! `host:port` for `pass`, the service name for `etcd`. It is computed once, when the channel is
//! built; a default that is no valid authority has each character an authority cannot hold replaced
//! by `_` (`a:9080#2` becomes `a_9080_2`). Its `:scheme` is `https` on a channel with
//! [`ChannelBuilder::tls`], `http` otherwise.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::address::Address;
use crate::balancer::{
    ConnectivityState, PickerUpdate, SubchannelConfig, SubchannelId,
    subchannel::{self, BackoffConfig, ConfigError, KeepAlive},
};
use crate::connector::{Connector, TcpConnector};
use crate::mutant::Mutant;
use crate::resolver::{Registry, ResolverBuilder, ResolverError, UpdateSink};
use crate::service_config::{ServiceConfig, ServiceConfigError};
use crate::target::{Target, TargetError};
use crate::tls::{TlsConfig, TlsConnector, TlsError};

mod call;
mod control;
mod published;
mod replay;
mod throttle;

/// Marks an RPC as wait-for-ready (or not), overriding the method config: put it in the
/// request's extensions (`request.extensions_mut().insert(WaitForReady(true))`).
///
/// A wait-for-ready RPC is not failed by TRANSIENT_FAILURE; it waits for a READY subchannel
/// until its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitForReady(pub bool);

/// Which subchannel served an RPC: the channel puts it in every response's extensions, so a
/// caller can see the connection behind each RPC
/// (`response.extensions().get::<ServedBy>()` on a `tonic::Response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy {
    /// The subchannel's id.
    pub subchannel: SubchannelId,
    /// Its address, with attributes such as the connection index (shared with the subchannel,
    /// so that marking a response costs no copy).
    pub address: Arc<Address>,
}

/// Errors building a channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The target string is not a valid target.
    #[error("channel: {0}")]
    Target(#[from] TargetError),
    /// The resolver rejected the target.
    #[error("channel: {0}")]
    Resolver(#[from] ResolverError),
    /// The default service config is invalid.
    #[error("channel: default {0}")]
    ServiceConfig(#[from] ServiceConfigError),
    /// No resolver is registered for the target's scheme, and no `passthrough` to fall back to
    /// (possible only with a registry given to [`ChannelBuilder::registry`]).
    #[error(
        "channel: no resolver for scheme {scheme:?} and no passthrough resolver to fall back to"
    )]
    NoResolver {
        /// The target's scheme.
        scheme: String,
    },
    /// A subchannel setting (backoff, connect timeout, keep-alive) is out of range; the error
    /// names the setting and its allowed range.
    #[error("channel: {0}")]
    Subchannel(#[from] ConfigError),
    /// The authority given to [`ChannelBuilder::authority`] is not a valid `:authority`.
    #[error(
        "channel: authority {authority:?} is not a valid URI authority (host[:port]): {reason}"
    )]
    Authority {
        /// The authority given.
        authority: String,
        /// Why it is not valid.
        reason: String,
    },
    /// The resolver's default authority for the target is empty, so not even its sanitized
    /// form is a valid `:authority`.
    #[error(
        "channel: the {scheme} resolver's default authority {authority:?} is not a valid URI \
         authority (host[:port]): {reason}; set one with ChannelBuilder::authority"
    )]
    DefaultAuthority {
        /// The target's scheme.
        scheme: String,
        /// The resolver's default authority.
        authority: String,
        /// Why it is not valid.
        reason: String,
    },
    /// The TLS settings cannot be used with this channel (the `:authority` host is no server
    /// name, say).
    #[error("channel: {0}")]
    Tls(#[from] TlsError),
    /// `build` was called outside a tokio runtime.
    #[error("channel: build must be called inside a tokio runtime (the channel spawns tasks)")]
    NoRuntime,
}

/// Something the channel did, for observers (traces, tests, the simulation). Events are
/// delivered in order, synchronously, from the control task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChannelEvent {
    /// The resolver sent a new address list.
    Resolved {
        /// The addresses, in the resolver's order.
        #[serde(serialize_with = "display_all")]
        addresses: Vec<Address>,
    },
    /// The resolver reported an error.
    ResolverError {
        /// The error's message.
        error: String,
    },
    /// The policy rejected the resolver's state (an empty list, say); the resolver is told.
    ResolverStateRejected {
        /// Why.
        error: String,
    },
    /// The policy asked the resolver to resolve again.
    ResolveNow,
    /// The policy created a subchannel.
    SubchannelCreated {
        /// Its id.
        id: SubchannelId,
        /// Its address.
        #[serde(serialize_with = "display")]
        address: Address,
    },
    /// A subchannel changed state.
    SubchannelState {
        /// Its id.
        id: SubchannelId,
        /// Its address.
        #[serde(serialize_with = "display")]
        address: Address,
        /// The state entered.
        state: ConnectivityState,
        /// The error that caused it, if any.
        error: Option<String>,
    },
    /// The policy published a picker; RPCs picked from now on use it.
    Picker {
        /// The channel's aggregate state.
        state: ConnectivityState,
    },
}

fn display<S: serde::Serializer>(value: &Address, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_all<S: serde::Serializer>(values: &[Address], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}

type Observer = Arc<dyn Fn(&ChannelEvent) + Send + Sync>;

/// Delivers [`ChannelEvent`]s to the observer (if any) and to `tracing`.
#[derive(Clone, Default)]
pub(crate) struct EventSink(Option<Observer>);

impl EventSink {
    pub(crate) fn emit(&self, event: ChannelEvent) {
        tracing::debug!(?event, "channel event");
        if let Some(observer) = &self.0 {
            observer(&event);
        }
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "EventSink(observer)" } else { "EventSink(none)" })
    }
}

/// Configures and builds a [`Channel`].
#[derive(Debug)]
pub struct ChannelBuilder {
    target: String,
    registry: Registry,
    default_config: ServiceConfig,
    connector: Arc<dyn Connector>,
    subchannel: SubchannelConfig,
    seed: Option<u64>,
    retry_buffer: usize,
    events: EventSink,
    authority: Option<Authority>,
    tls: Option<TlsConfig>,
    mutant: Option<Mutant>,
}

/// Parses an `:authority`: a URI authority without userinfo (RFC 9113 §8.3.1).
fn parse_authority(text: &str) -> Result<Authority, String> {
    if text.contains('@') {
        return Err("userinfo (\"user@\") is not allowed".to_owned());
    }
    text.parse::<Authority>().map_err(|e| e.to_string())
}

/// What [`ChannelBuilder::check`] found valid.
struct Checked {
    target: Target,
    builder: Arc<dyn ResolverBuilder>,
    authority: http::uri::Authority,
    /// The connector subchannels dial through: the configured one, under TLS if asked.
    connector: Arc<dyn Connector>,
}

impl ChannelBuilder {
    /// Sets the `:authority` of every RPC, such as the virtual host name that the servers
    /// behind a `pass` list share. Default: the resolver's
    /// [`default_authority`](ResolverBuilder::default_authority) for the target.
    ///
    /// # Errors
    /// [`ChannelError::Authority`] when `authority` is not `host[:port]` (empty, userinfo, a
    /// path, characters a URI authority cannot hold).
    pub fn authority(mut self, authority: &str) -> Result<Self, ChannelError> {
        let parsed = parse_authority(authority).map_err(|reason| ChannelError::Authority {
            authority: authority.to_owned(),
            reason,
        })?;
        self.authority = Some(parsed);
        Ok(self)
    }

    /// Sets the service config used until (and unless) the resolver supplies one. Default: none,
    /// which means `pick_first` and no method configs.
    ///
    /// # Errors
    /// [`ChannelError::ServiceConfig`] naming the JSON path of the first invalid field.
    pub fn default_service_config(mut self, json: &str) -> Result<Self, ChannelError> {
        self.default_config = ServiceConfig::parse(json)?;
        Ok(self)
    }

    /// Sets how subchannels dial. Default: [`TcpConnector`].
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Speaks TLS on every connection: each subchannel dials through the channel's connector
    /// (see [`connector`](Self::connector)), then does its own TLS handshake, verifying the
    /// server's certificate against the `:authority` host (see [`authority`](Self::authority))
    /// unless `config` names another server name. The connect timeout bounds the handshake
    /// too. A failed handshake is the subchannel's connection error, so RPCs that fail because
    /// of it carry its reason (`unknown CA`, `name mismatch`, `certificate required`) in their
    /// `UNAVAILABLE` status. Default: plaintext HTTP/2.
    ///
    /// [`build`](Self::build) and [`validate`](Self::validate) return [`ChannelError::Tls`]
    /// when the name to verify is no DNS name or IP address.
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Registers a resolver builder for its scheme (replacing a built-in one of the same scheme).
    /// Default: `passthrough`, `pass`, `dns` and `etcd`.
    pub fn resolver(mut self, builder: impl ResolverBuilder + 'static) -> Self {
        self.registry.register(Arc::new(builder));
        self
    }

    /// Replaces the whole resolver registry: the target's scheme is looked up here, and targets
    /// with an unknown scheme go to this registry's `passthrough`. Default: [`Registry::default`].
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Seeds the channel's random number generator, which draws round_robin's start index,
    /// pick_first's shuffle, backoff jitter and retry jitter. Default: a seed drawn from the
    /// operating system, logged at debug level so a run can be replayed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the reconnect backoff. Default: [`BackoffConfig::default`] (1 s, ×1.6, ±20 %, 120 s).
    /// Checked by [`build`](Self::build) (see [`BackoffConfig::validate`]).
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.subchannel.backoff = backoff;
        self
    }

    /// Sets the minimum connect timeout: how long a connect attempt (dial, HTTP/2 handshake and
    /// the server's preface) is given at least. Default: 20 s. [`build`](Self::build) rejects
    /// zero and anything over [`MAX_SETTING_DURATION`](subchannel::MAX_SETTING_DURATION).
    pub fn min_connect_timeout(mut self, timeout: Duration) -> Self {
        self.subchannel.min_connect_timeout = timeout;
        self
    }

    /// Turns on HTTP/2 keep-alive. Default: off. [`build`](Self::build) rejects a zero or
    /// over-long interval or timeout, and raises an interval below gRFC A8's 10 s minimum to
    /// 10 s with a warning, as grpc-go does (a simulated network's connector lowers that floor:
    /// [`Connector::min_keepalive_interval`]).
    pub fn keepalive(mut self, keepalive: KeepAlive) -> Self {
        self.subchannel.keepalive = Some(keepalive);
        self
    }

    /// Sets the per-RPC retry buffer: an RPC whose request body grows past it is no longer
    /// retried. Default: 256 KiB.
    pub fn retry_buffer(mut self, bytes: usize) -> Self {
        self.retry_buffer = bytes;
        self
    }

    /// Calls `observer` with every [`ChannelEvent`], in order, from the control task. It must
    /// not block. Default: none (events still go to `tracing` at debug level).
    pub fn on_event(mut self, observer: impl Fn(&ChannelEvent) + Send + Sync + 'static) -> Self {
        self.events = EventSink(Some(Arc::new(observer)));
        self
    }

    /// Switches on a deliberate defect, for the simulation's mutant runs only (`anchorage
    /// mutants`): the channel then misbehaves on purpose. Default: none.
    #[doc(hidden)]
    pub fn mutant(mut self, mutant: Mutant) -> Self {
        self.mutant = Some(mutant);
        self
    }

    /// Checks everything [`build`](Self::build) would check, without starting anything and
    /// without a runtime: the target's syntax, the resolver's own rules for it
    /// ([`ResolverBuilder::validate`]), the `:authority`, and the subchannel settings.
    /// `anchorage target` uses it, so it says exactly what `build` would.
    ///
    /// # Errors
    /// The error `build` would return (other than [`ChannelError::NoRuntime`]).
    pub fn validate(&self) -> Result<(), ChannelError> {
        self.check().map(|_| ())
    }

    /// The checks shared by [`validate`](Self::validate) and [`build`](Self::build).
    fn check(&self) -> Result<Checked, ChannelError> {
        self.subchannel.validate()?;
        let registry = &self.registry;
        let target = Target::parse(&self.target, |scheme| registry.has_scheme(scheme))?;
        let builder = registry
            .get(target.scheme())
            .or_else(|| registry.get("passthrough"))
            .cloned()
            .ok_or_else(|| ChannelError::NoResolver { scheme: target.scheme().to_owned() })?;
        builder.validate(&target)?;
        let authority = match &self.authority {
            Some(authority) => authority.clone(),
            None => {
                let default = builder.default_authority(&target);
                parse_authority(&default)
                    .or_else(|_| parse_authority(&crate::resolver::sanitize_authority(&default)))
                    .map_err(|reason| ChannelError::DefaultAuthority {
                        scheme: target.scheme().to_owned(),
                        authority: default.clone(),
                        reason,
                    })?
            }
        };
        let connector = match &self.tls {
            None => self.connector.clone(),
            Some(tls) => {
                Arc::new(TlsConnector::new(self.connector.clone(), tls, authority.host())?)
            }
        };
        Ok(Checked { target, builder, authority, connector })
    }

    /// Parses the target, builds its resolver and starts the channel's control task.
    ///
    /// # Errors
    /// [`ChannelError::Target`] for a malformed target, [`ChannelError::Resolver`] when the
    /// resolver rejects it (a bad anchor list, say), [`ChannelError::Subchannel`] for a
    /// backoff, connect timeout or keep-alive setting out of range, [`ChannelError::NoRuntime`]
    /// outside tokio.
    pub fn build(mut self) -> Result<Channel, ChannelError> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::NoRuntime)?;
        // Mutant CountCarriesOver lives in the `pass` resolver.
        if self.mutant == Some(Mutant::CountCarriesOver) {
            self.registry.register(Arc::new(crate::resolver::pass::CountCarriesOverBuilder));
        }
        let Checked { target, builder, authority, connector } = self.check()?;
        let subchannel_config =
            self.subchannel.with_keepalive_floor(connector.min_keepalive_interval());
        let seed = self.seed.unwrap_or_else(rand::random);
        tracing::debug!(target = %target, seed, "building channel");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let call_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());

        let scheme =
            if self.tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let origin = Origin { scheme, authority };
        let (sink, updates) = UpdateSink::pair();
        let resolver = builder.build(&target, sink)?;
        let default_config = Arc::new(self.default_config);
        let (config_tx, config_rx) = watch::channel(default_config.clone());
        let rpc_config = Arc::new(ArcSwap::new(default_config.clone()));
        let published = Arc::new(published::Published::new(PickerUpdate::connecting()));
        let (state_tx, state_rx) = mpsc::channel(subchannel::STATE_EVENT_CAPACITY);
        let (close_tx, closed) = oneshot::channel();
        let controller = control::Controller {
            next_id: 0,
            subchannels: Default::default(),
            picker_tx: published.clone(),
            resolve_now: false,
            rng,
            config: Arc::new(subchannel_config),
            health: subchannel::HealthSource {
                config: config_rx.clone(),
                scheme: origin.scheme.clone(),
                authority: origin.authority.clone(),
            },
            connector,
            state_tx,
            events: self.events,
            idle: Arc::default(),
            calling: 0,
            current: 0,
            current_state: ConnectivityState::Connecting,
            pending_picker: None,
        };
        let control = control::Control {
            resolver,
            updates,
            default_config,
            config_tx,
            rpc_config: rpc_config.clone(),
            controller,
            state_rx,
            closed,
            mutant: self.mutant,
        };
        tokio::spawn(control.run());
        Ok(Channel {
            shared: Arc::new(Shared {
                target: target.to_string(),
                picker: published,
                config: rpc_config,
                rng: Mutex::new(call_rng),
                retry_buffer: self.retry_buffer,
                origin,
                throttles: throttle::Throttles::default(),
                mutant: self.mutant,
                dropped: Mutex::default(),
                _close: close_tx,
            }),
        })
    }
}

/// A gRPC channel over resolvers, load-balancing policies and subchannels. Cheap to clone;
/// clones share everything. It is a `tower::Service<http::Request<tonic::body::Body>>`, so
/// tonic-generated clients take it directly: `EchoClient::new(channel)`.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

/// What RPCs share; the control task stops when this drops (its `_close` sender closes).
struct Shared {
    target: String,
    picker: Arc<published::Published>,
    /// The current service config, read by every RPC without a lock.
    config: Arc<ArcSwap<ServiceConfig>>,
    rng: Mutex<ChaCha8Rng>,
    retry_buffer: usize,
    /// Every RPC's `:scheme` and `:authority`.
    origin: Origin,
    /// The retry throttling bucket (gRFC A6).
    throttles: throttle::Throttles,
    /// The deliberate defect switched on, if any.
    mutant: Option<Mutant>,
    /// Mutant DropOneRpcPerCrash: per subchannel, when it last failed an RPC on purpose.
    dropped: Mutex<std::collections::BTreeMap<SubchannelId, tokio::time::Instant>>,
    _close: oneshot::Sender<()>,
}

/// Every RPC's `:scheme` (`https` over TLS, as gRPC clients send, else `http`) and `:authority`.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: Authority,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.shared.target)
            .field("state", &self.state())
            .finish()
    }
}

impl Channel {
    /// Starts configuring a channel for `target` (DESIGN §2.1: `pass:///a:1#2,b:1`,
    /// `dns:///host:port`, `host:port`, …).
    pub fn builder(target: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            target: target.into(),
            registry: Registry::default(),
            default_config: ServiceConfig::default(),
            connector: Arc::new(TcpConnector),
            subchannel: SubchannelConfig::default(),
            seed: None,
            retry_buffer: replay::DEFAULT_LIMIT,
            events: EventSink::default(),
            authority: None,
            tls: None,
            mutant: None,
        }
    }

    /// The channel's aggregate connectivity state, as its policy last published it.
    pub fn state(&self) -> ConnectivityState {
        self.shared.picker.state()
    }

    /// Waits until the channel's state satisfies `done`, returning that state.
    pub async fn wait_for_state(
        &self,
        done: impl Fn(ConnectivityState) -> bool,
    ) -> ConnectivityState {
        // Each pass either returns or waits for the next picker.
        loop {
            let (version, state) = {
                let current = self.shared.picker.current();
                (current.version, current.update.state)
            };
            if done(state) {
                return state;
            }
            if !self.shared.picker.changed(version).await {
                return ConnectivityState::Shutdown;
            }
        }
    }

    /// Picks a subchannel for an RPC to `method` exactly as an RPC does before it sends, without
    /// waiting or sending: the subchannel whose READY connection it would use, if any. It measures the pick path in
    /// the crate's benchmarks and is not part of the supported API.
    #[doc(hidden)]
    pub fn pick_for_benchmark(&self, method: &str) -> Option<SubchannelId> {
        let mut skip = call::Skip::default();
        match call::pick_now(&self.shared, method, &mut skip, false) {
            call::Picked::Ready(sc, _) => Some(sc.id()),
            _ => None,
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::Status;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, tonic::Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        // RPCs queue inside `call` until a subchannel is READY; the channel itself is always
        // ready to accept one.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(call::run(self.shared.clone(), request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registry_without_the_scheme_or_passthrough_is_a_build_error() {
        let err = Channel::builder("pass:///a:1").registry(Registry::empty()).build().unwrap_err();
        assert!(
            matches!(&err, ChannelError::NoResolver { scheme } if scheme == "passthrough"),
            "an unknown scheme with no passthrough must be reported, got {err:?}"
        );
    }

    #[test]
    fn the_channel_is_send_sync_clone_and_a_tonic_service() {
        fn assert_channel<T: Send + Sync + Clone + 'static>() {}
        fn assert_grpc_service<T: tonic::client::GrpcService<tonic::body::Body>>() {}
        assert_channel::<Channel>();
        assert_grpc_service::<Channel>();
    }
}
