//! Name resolution: turning a [`Target`] into addresses, after gRPC's resolver API.
//!
//! A [`ResolverBuilder`] is registered per scheme in a [`Registry`]. The channel parses its
//! target, finds the builder for the scheme (or falls back to `passthrough`, DESIGN §2.1) and
//! builds one [`Resolver`], handing it an [`UpdateSink`]. The resolver pushes whole states —
//! the full address list plus an optional service config — or errors into the sink whenever it
//! learns something; the channel's control task passes them to the load-balancing policy.
//!
//! Built-in schemes: `passthrough` ([`passthrough`]), `pass` ([`pass`]), `dns` ([`dns`]),
//! `etcd` ([`etcd`]); the [`manual`] resolver is for tests and is registered by hand.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::address::Address;
use crate::anchor::{AnchorError, ServiceError};
use crate::etcd::EndpointsError;
use crate::service_config::{ServiceConfig, ServiceConfigError};
use crate::target::Target;

pub mod dns;
pub mod etcd;
pub mod manual;
pub mod pass;
pub mod passthrough;

/// What a resolver knows at one moment: the complete address list, replacing any earlier one,
/// and optionally a service config.
#[derive(Debug, Clone, Default)]
pub struct ResolverState {
    /// Every address, in the resolver's order. May contain duplicates; policies collapse them.
    pub addresses: Vec<Address>,
    /// A service config from the resolver, which takes precedence over the channel's default.
    /// `Some(Err(..))` reports a config the resolver found but could not parse.
    pub service_config: Option<Result<ServiceConfig, ServiceConfigError>>,
}

impl ResolverState {
    /// A state with these addresses and no service config.
    pub fn from_addresses(addresses: Vec<Address>) -> Self {
        Self { addresses, service_config: None }
    }
}

/// Errors of name resolution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// The target's endpoint does not follow the scheme's grammar.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// The scheme takes no authority but the target has one.
    #[error("{scheme} target: unexpected authority {authority:?} (write {scheme}:///endpoint)")]
    UnexpectedAuthority {
        /// The target's scheme.
        scheme: String,
        /// The authority found.
        authority: String,
    },
    /// The target has no endpoint.
    #[error("{scheme} target: the endpoint is empty")]
    EmptyEndpoint {
        /// The target's scheme.
        scheme: String,
    },
    /// A `dns` endpoint is not `host[:port]`.
    #[error("dns target: {endpoint:?}: {reason}")]
    DnsEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A DNS lookup failed.
    #[error("dns resolver: lookup of {host:?} failed: {reason}")]
    DnsLookup {
        /// The host looked up.
        host: String,
        /// The system resolver's error.
        reason: String,
    },
    /// An `etcd` target's endpoint is not a valid service name.
    #[error(transparent)]
    EtcdService(#[from] ServiceError),
    /// An `etcd` target's authority is not a valid list of etcd endpoints.
    #[error(transparent)]
    EtcdEndpoints(#[from] EndpointsError),
    /// etcd could not be read (reported only until the first successful read; afterwards the
    /// last known addresses are kept).
    #[error("etcd resolver: cannot read service {service:?} from {endpoints}: {reason}")]
    EtcdUnavailable {
        /// The service name.
        service: String,
        /// The etcd endpoints tried.
        endpoints: String,
        /// The last error.
        reason: String,
    },
    /// An error reported through a [`manual::ManualResolver`].
    #[error("manual resolver: {0}")]
    Manual(String),
}

/// One message from a resolver to its channel.
pub(crate) type ResolverEvent = Result<ResolverState, ResolverError>;

/// A rewrite applied to every state sent through an [`UpdateSink`].
type Transform = Arc<dyn Fn(ResolverState) -> ResolverState + Send + Sync>;

/// Where a resolver sends its updates. Cheap to clone; a resolver may keep it in its own tasks.
#[derive(Clone)]
pub struct UpdateSink {
    tx: mpsc::UnboundedSender<ResolverEvent>,
    transform: Option<Transform>,
}

impl fmt::Debug for UpdateSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSink").field("transformed", &self.transform.is_some()).finish()
    }
}

impl UpdateSink {
    pub(crate) fn new(tx: mpsc::UnboundedSender<ResolverEvent>) -> Self {
        Self { tx, transform: None }
    }

    /// A sink that applies `rewrite` to every state before passing it on (after any rewrite
    /// this sink already applies). Resolver decorators use it to wrap another resolver.
    pub fn with_transform(
        self,
        rewrite: impl Fn(ResolverState) -> ResolverState + Send + Sync + 'static,
    ) -> Self {
        let transform: Transform = match self.transform {
            None => Arc::new(rewrite),
            Some(outer) => Arc::new(move |state| outer(rewrite(state))),
        };
        Self { tx: self.tx, transform: Some(transform) }
    }

    /// Sends a whole new state. Returns false once the channel is gone: the resolver should stop.
    pub fn update(&self, state: ResolverState) -> bool {
        let state = match &self.transform {
            Some(rewrite) => rewrite(state),
            None => state,
        };
        self.tx.send(Ok(state)).is_ok()
    }

    /// Reports an error. Returns false once the channel is gone: the resolver should stop.
    pub fn error(&self, error: ResolverError) -> bool {
        self.tx.send(Err(error)).is_ok()
    }

    /// Whether the channel is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A running resolver for one target.
///
/// # Contract
/// - Owned by the channel's control task; dropped when the channel closes, and dropping it must
///   stop every task it started (they may also stop when [`UpdateSink::update`] returns false).
/// - `resolve_now` is called from the control task when a connection is lost or a connect
///   attempt fails. It is a hint: it must return at once, and the resolver may ignore it or
///   rate-limit it.
pub trait Resolver: Send + fmt::Debug {
    /// Asks for a fresh resolution.
    fn resolve_now(&mut self);
}

/// Builds resolvers for one scheme.
///
/// # Contract
/// - `build` is called once per channel, on the task that builds the channel, inside a tokio
///   runtime. It must not block; it may spawn tasks.
/// - It validates the target and returns an error for one it cannot serve; afterwards failures
///   are reported through the sink, never by panicking.
/// - The first update may be sent before `build` returns.
pub trait ResolverBuilder: Send + Sync + fmt::Debug {
    /// The scheme this builder serves, lowercase (`pass`, `dns`, …).
    fn scheme(&self) -> &str;

    /// Starts resolving `target`, sending updates to `updates`.
    ///
    /// # Errors
    /// When the target's authority or endpoint is not valid for this scheme.
    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError>;

    /// The `:authority` of every RPC on a channel for `target`, unless the channel sets one
    /// (`ChannelBuilder::authority`). It names the service, never a resolved address.
    ///
    /// # Contract
    /// Called once per channel, after `build` accepted `target`, on the same task. A result that
    /// is not a valid URI authority (`host[:port]`, no userinfo) is sent as one host name with
    /// every character an authority cannot hold replaced by `_` (`a:1#2` becomes `a_1_2`):
    /// grpc-go sends an endpoint whatever it holds, but HTTP/2 here needs a valid one.
    /// Default: the target's endpoint, as grpc-go's resolvers do.
    fn default_authority(&self, target: &Target) -> String {
        target.endpoint().to_owned()
    }
}

/// A shared builder builds like the builder it shares, so `Arc<dyn ResolverBuilder>` can be
/// registered wherever a builder is taken.
impl<T: ResolverBuilder + ?Sized> ResolverBuilder for Arc<T> {
    fn scheme(&self) -> &str {
        (**self).scheme()
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        (**self).build(target, updates)
    }

    fn default_authority(&self, target: &Target) -> String {
        (**self).default_authority(target)
    }
}

/// Resolver builders by scheme.
#[derive(Debug, Clone)]
pub struct Registry {
    builders: BTreeMap<String, Arc<dyn ResolverBuilder>>,
}

impl Default for Registry {
    /// The built-in schemes: `passthrough`, `pass`, `dns` and `etcd`.
    fn default() -> Self {
        let mut registry = Self::empty();
        registry.register(Arc::new(passthrough::PassthroughBuilder));
        registry.register(Arc::new(pass::PassBuilder));
        registry.register(Arc::new(dns::DnsBuilder::default()));
        registry.register(Arc::new(etcd::EtcdBuilder::default()));
        registry
    }
}

impl Registry {
    /// A registry with no schemes at all.
    pub fn empty() -> Self {
        Self { builders: BTreeMap::new() }
    }

    /// Registers `builder` for its scheme, replacing an earlier builder for the same scheme.
    pub fn register(&mut self, builder: Arc<dyn ResolverBuilder>) {
        self.builders.insert(builder.scheme().to_ascii_lowercase(), builder);
    }

    /// The builder for `scheme` (case-insensitive).
    pub fn get(&self, scheme: &str) -> Option<&Arc<dyn ResolverBuilder>> {
        self.builders.get(&scheme.to_ascii_lowercase())
    }

    /// Whether a builder is registered for `scheme` (case-insensitive).
    pub fn has_scheme(&self, scheme: &str) -> bool {
        self.get(scheme).is_some()
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.builders.keys().map(String::as_str)
    }
}

/// Fails with [`ResolverError::UnexpectedAuthority`] when `target` has an authority.
pub(crate) fn reject_authority(target: &Target) -> Result<(), ResolverError> {
    if target.authority().is_empty() {
        Ok(())
    } else {
        Err(ResolverError::UnexpectedAuthority {
            scheme: target.scheme().to_owned(),
            authority: target.authority().to_owned(),
        })
    }
}

/// A resolver whose single update was sent at build time; `resolve_now` has nothing to do.
#[derive(Debug)]
pub(crate) struct StaticResolver;

impl Resolver for StaticResolver {
    fn resolve_now(&mut self) {}
}

/// `text` as a URI authority that is one host name (RFC 3986 `reg-name`): every character but
/// the unreserved and sub-delims ones (`:`, `/`, `#`, `%`, `@`, spaces, …) becomes `_`. Lossy on
/// purpose: the `http` crate accepts no percent-encoding in a host name.
pub(crate) fn sanitize_authority(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => c,
            '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=' => c,
            _ => '_',
        })
        .collect()
}
