//! Name resolution: turning a [`Target`] into addresses, after gRPC's resolver API.
//!
//! A [`ResolverBuilder`] is registered per scheme in a [`Registry`]. The channel parses its
//! target, finds the builder for the scheme (or falls back to `passthrough`, DESIGN §2.1) and
//! builds one [`Resolver`], handing it an [`UpdateSink`]. The resolver pushes whole states —
//! the full address list plus an optional service config — or errors into the sink whenever it
//! learns something; the channel's control task passes them to the load-balancing policy.
//!
//! Built-in schemes: `passthrough` ([`passthrough`]), `pass` ([`pass`]) with its aliases `addr`
//! and `extd` ([`PASS_ALIASES`]), `dns` ([`dns`]), `etcd` ([`etcd`]); the [`manual`] resolver is
//! for tests and is registered by hand.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use crate::address::Address;
use crate::anchor::{AnchorError, ServiceError};
use crate::balancer::BadResolverState;
use crate::etcd::EndpointsError;
use crate::service_config::{ServiceConfig, ServiceConfigError};
use crate::sync::lock;
pub use crate::target::PASS_ALIASES;
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

/// Why the channel did not take a state sent with [`UpdateSink::apply`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The load-balancing policy rejected the state (grpc-go's `ErrBadResolverState`), for
    /// example an empty address list. The resolver should resolve again after a backoff.
    #[error(transparent)]
    Rejected(#[from] BadResolverState),
    /// The channel is gone: the resolver should stop.
    #[error("resolver: the channel is closed")]
    Closed,
}

/// What the policy said of a state; `Ok` also when a newer state replaced it unread.
pub(crate) type Verdict = oneshot::Sender<Result<(), BadResolverState>>;

/// A rewrite applied to every state sent through an [`UpdateSink`].
type Transform = Arc<dyn Fn(ResolverState) -> ResolverState + Send + Sync>;

/// The one-slot mailbox between a resolver and its channel. A resolver can send faster than the
/// channel reads, so nothing queues: a new state replaces an unread one (latest wins), and an
/// error replaces an unread error. An error sent after an unread state is kept beside it and
/// read after it; a state sent after an unread error makes that error obsolete.
#[derive(Debug, Default)]
struct Mailbox {
    slot: Mutex<Slot>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Slot {
    state: Option<(ResolverState, Option<Verdict>)>,
    error: Option<ResolverError>,
    closed: bool,
}

/// Where a resolver sends its updates. Cheap to clone; a resolver may keep it in its own tasks.
#[derive(Clone)]
pub struct UpdateSink {
    mailbox: Arc<Mailbox>,
    transform: Option<Transform>,
}

impl fmt::Debug for UpdateSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSink").field("transformed", &self.transform.is_some()).finish()
    }
}

/// The channel's end of an [`UpdateSink`]. Nothing queues between the two: a state replaces an
/// unread state (latest wins) and an error replaces an unread error; an error sent after an
/// unread state is read after it, and a state makes an unread error obsolete. Dropping it
/// closes the sink.
#[derive(Debug)]
pub struct Updates {
    mailbox: Arc<Mailbox>,
}

impl Updates {
    /// Waits for what the resolver sent since the last call: at most one state (with the
    /// channel through which to answer it) and then at most one error.
    pub(crate) async fn recv(&mut self) -> Vec<(ResolverEvent, Option<Verdict>)> {
        loop {
            let events = self.take();
            if !events.is_empty() {
                return events;
            }
            self.mailbox.wake.notified().await;
        }
    }

    /// What is waiting, without waiting.
    fn take(&mut self) -> Vec<(ResolverEvent, Option<Verdict>)> {
        let mut slot = lock(&self.mailbox.slot);
        let mut events = Vec::new();
        if let Some((state, verdict)) = slot.state.take() {
            events.push((Ok(state), verdict));
        }
        if let Some(error) = slot.error.take() {
            events.push((Err(error), None));
        }
        events
    }

    /// Waits for the next state or error alone, answering any state as accepted: for code that
    /// drives a resolver without a channel (the audit kit, tests). `None` never happens while
    /// the sink is alive; it is there so callers can use `timeout(…)` uniformly.
    pub async fn next(&mut self) -> Option<Result<ResolverState, ResolverError>> {
        let (event, verdict) = self.recv().await.into_iter().next()?;
        if let Some(verdict) = verdict {
            let _ = verdict.send(Ok(()));
        }
        Some(event)
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        let mut slot = lock(&self.mailbox.slot);
        slot.closed = true;
        slot.state = None;
        slot.error = None;
    }
}

impl UpdateSink {
    /// A connected sink and the channel's end of it.
    pub fn pair() -> (UpdateSink, Updates) {
        let mailbox = Arc::new(Mailbox::default());
        (Self { mailbox: mailbox.clone(), transform: None }, Updates { mailbox })
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
        Self { mailbox: self.mailbox, transform: Some(transform) }
    }

    fn put_state(&self, state: ResolverState, verdict: Option<Verdict>) -> bool {
        let state = match &self.transform {
            Some(rewrite) => rewrite(state),
            None => state,
        };
        {
            let mut slot = lock(&self.mailbox.slot);
            if slot.closed {
                return false;
            }
            // A replaced state's verdict sender drops here: its waiter reads that as taken.
            slot.state = Some((state, verdict));
            slot.error = None;
        }
        self.mailbox.wake.notify_one();
        true
    }

    /// Sends a whole new state, replacing one the channel has not read yet. Returns false once
    /// the channel is gone: the resolver should stop.
    pub fn update(&self, state: ResolverState) -> bool {
        self.put_state(state, None)
    }

    /// Sends a whole new state and waits for the load-balancing policy's answer, as grpc-go's
    /// `ClientConn.UpdateState` returns one.
    ///
    /// # Errors
    /// [`UpdateError::Rejected`] when the policy could not use the state (the resolver should
    /// retry with backoff, as the `dns` resolver does); [`UpdateError::Closed`] once the channel
    /// is gone. A state replaced by a newer one before the channel read it counts as taken.
    pub async fn apply(&self, state: ResolverState) -> Result<(), UpdateError> {
        let (tx, rx) = oneshot::channel();
        if !self.put_state(state, Some(tx)) {
            return Err(UpdateError::Closed);
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(rejected)) => Err(UpdateError::Rejected(rejected)),
            Err(_) if self.is_closed() => Err(UpdateError::Closed),
            Err(_) => Ok(()),
        }
    }

    /// Reports an error, replacing an unread one. Returns false once the channel is gone: the
    /// resolver should stop.
    pub fn error(&self, error: ResolverError) -> bool {
        {
            let mut slot = lock(&self.mailbox.slot);
            if slot.closed {
                return false;
            }
            slot.error = Some(error);
        }
        self.mailbox.wake.notify_one();
        true
    }

    /// Whether the channel is gone.
    pub fn is_closed(&self) -> bool {
        lock(&self.mailbox.slot).closed
    }
}

/// A running resolver for one target.
///
/// # Contract
/// - Owned by the channel's control task; dropped when the channel closes, and dropping it must
///   stop every task it started (they may also stop when [`UpdateSink::update`] returns false).
/// - `resolve_now` is called from the control task when the policy asks for re-resolution (a
///   lost connection, a failed pass, a resolver error, an empty list). It is a hint: it must
///   return at once, and the resolver may ignore it or rate-limit it.
/// - A resolver whose resolution failed, or whose state the policy rejected
///   ([`UpdateSink::apply`] returned [`UpdateError::Rejected`]), retries by itself with
///   exponential backoff; `resolve_now` does not cut that backoff short.
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

    /// Checks `target` as [`build`](Self::build) would, without starting anything or needing a
    /// runtime. The channel calls it before `build`, and `anchorage target` calls it alone, so
    /// both say the same of a target.
    ///
    /// # Contract
    /// Whatever this accepts, `build` must accept too (barring the environment: a missing
    /// runtime, say). The built-in builders call it first thing in `build`. Default: accepts
    /// every target, leaving all checks to `build`.
    ///
    /// # Errors
    /// The error `build` would return for this target.
    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        let _ = target;
        Ok(())
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

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        (**self).validate(target)
    }
}

/// Resolver builders by scheme.
#[derive(Debug, Clone)]
pub struct Registry {
    builders: BTreeMap<String, Arc<dyn ResolverBuilder>>,
}

impl Default for Registry {
    /// The built-in schemes: `passthrough`, `pass` (also as `addr` and `extd`), `dns` and `etcd`.
    fn default() -> Self {
        let mut registry = Self::empty();
        registry.register(Arc::new(passthrough::PassthroughBuilder));
        let pass: Arc<dyn ResolverBuilder> = Arc::new(pass::PassBuilder);
        for alias in PASS_ALIASES {
            registry.register(Arc::new(Alias::new(*alias, Arc::clone(&pass))));
        }
        registry.register(pass);
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

/// Another name for a scheme: it validates, builds and names authorities exactly as the builder
/// it stands for, under its own scheme (so errors name the scheme the user wrote).
#[derive(Debug, Clone)]
pub struct Alias {
    scheme: String,
    of: Arc<dyn ResolverBuilder>,
}

impl Alias {
    /// `scheme` (lowercased) as another name for `of`.
    pub fn new(scheme: impl Into<String>, of: Arc<dyn ResolverBuilder>) -> Self {
        Self { scheme: scheme.into().to_ascii_lowercase(), of }
    }

    /// The scheme of the builder this alias stands for.
    pub fn of(&self) -> &str {
        self.of.scheme()
    }
}

impl ResolverBuilder for Alias {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        self.of.build(target, updates)
    }

    fn default_authority(&self, target: &Target) -> String {
        self.of.default_authority(target)
    }

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        self.of.validate(target)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(addr: &str) -> ResolverState {
        ResolverState::from_addresses(vec![Address::new(addr)])
    }

    fn read(updates: &mut Updates) -> Vec<String> {
        updates
            .take()
            .into_iter()
            .map(|(event, _)| match event {
                Ok(state) => state.addresses[0].addr.clone(),
                Err(error) => error.to_string(),
            })
            .collect()
    }

    #[test]
    fn unread_states_coalesce_so_the_channel_reads_only_the_latest() {
        let (sink, mut updates) = UpdateSink::pair();
        for i in 0..10_000 {
            assert!(sink.update(state(&format!("h{i}:1"))));
        }
        assert_eq!(read(&mut updates), ["h9999:1"], "nothing may queue up behind the latest");
        assert!(read(&mut updates).is_empty());
    }

    #[test]
    fn an_error_after_an_unread_state_is_read_after_it_and_a_state_clears_an_unread_error() {
        let (sink, mut updates) = UpdateSink::pair();
        sink.update(state("a:1"));
        sink.error(ResolverError::Manual("down".into()));
        assert_eq!(read(&mut updates), ["a:1", "manual resolver: down"], "nothing is lost");
        sink.error(ResolverError::Manual("down".into()));
        sink.update(state("b:1"));
        assert_eq!(read(&mut updates), ["b:1"], "a newer state makes the error obsolete");
    }

    #[tokio::test]
    async fn apply_returns_the_policy_verdict_and_closed_once_the_channel_is_gone() {
        let (sink, mut updates) = UpdateSink::pair();
        let answer = tokio::spawn(async move {
            let (_, verdict) = updates.recv().await.remove(0);
            verdict.unwrap().send(Err(BadResolverState("empty".into()))).unwrap();
            updates
        });
        let verdict = sink.apply(state("a:1")).await;
        assert!(matches!(verdict, Err(UpdateError::Rejected(_))), "got {verdict:?}");
        drop(answer.await.unwrap());
        assert!(sink.is_closed());
        assert_eq!(sink.apply(state("a:1")).await, Err(UpdateError::Closed));
        assert!(!sink.update(state("a:1")), "update must say the channel is gone");
    }
}
