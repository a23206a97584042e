//! `manual`: a resolver driven by hand, for tests (like grpc-go's `resolver/manual`).
//!
//! ```
//! # use anchorage::resolver::manual::ManualResolver;
//! # use anchorage::address::Address;
//! let manual = ManualResolver::new("manual");
//! manual.update_addresses(vec![Address::new("127.0.0.1:50051")]);
//! // Channel::builder("manual:///anything").resolver(manual.clone()) … then later:
//! manual.update_addresses(vec![Address::new("127.0.0.1:50052")]);
//! ```
//! An update sent before the channel builds the resolver becomes its first state. Every
//! [`Resolver::resolve_now`] call is counted ([`ManualResolver::resolve_now_count`]). A state
//! can also be *staged* ([`ManualResolver::stage_addresses`]): kept back until the channel
//! next asks to re-resolve, like a DNS record that changed while the channel was not asking.

use std::sync::{Arc, Mutex};

use super::{Resolver, ResolverBuilder, ResolverError, ResolverState, UpdateSink};
use crate::address::Address;
use crate::sync::lock;
use crate::target::Target;

/// A resolver builder and remote control in one. Clones share the same state.
#[derive(Debug, Clone)]
pub struct ManualResolver {
    scheme: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last state sent, replayed to a resolver built later.
    last: Option<Result<ResolverState, ResolverError>>,
    sink: Option<UpdateSink>,
    resolve_now_calls: usize,
    /// Sent at the next `resolve_now`.
    staged: Option<ResolverState>,
}

impl ManualResolver {
    /// A manual resolver for `scheme` (lowercase it; `manual` is customary).
    pub fn new(scheme: impl Into<String>) -> Self {
        Self { scheme: scheme.into(), inner: Arc::default() }
    }

    /// Pushes a whole new state to the channel (or keeps it for when the channel builds).
    pub fn update(&self, state: ResolverState) {
        self.send(Ok(state));
    }

    /// Pushes a new address list with no service config.
    pub fn update_addresses(&self, addresses: Vec<Address>) {
        self.update(ResolverState::from_addresses(addresses));
    }

    /// Keeps `addresses` back until the channel next requests re-resolution, then sends them
    /// (a later call replaces a staged list not yet sent).
    pub fn stage_addresses(&self, addresses: Vec<Address>) {
        lock(&self.inner).staged = Some(ResolverState::from_addresses(addresses));
    }

    /// Reports a resolution error with `message`.
    pub fn report_error(&self, message: impl Into<String>) {
        self.send(Err(ResolverError::Manual(message.into())));
    }

    /// How many times the channel asked for re-resolution.
    pub fn resolve_now_count(&self) -> usize {
        lock(&self.inner).resolve_now_calls
    }

    fn send(&self, event: Result<ResolverState, ResolverError>) {
        lock(&self.inner).send(event);
    }
}

impl Inner {
    fn send(&mut self, event: Result<ResolverState, ResolverError>) {
        let inner = self;
        if let Some(sink) = &inner.sink {
            match &event {
                Ok(state) => sink.update(state.clone()),
                Err(error) => sink.error(error.clone()),
            };
        }
        inner.last = Some(event);
    }
}

impl ResolverBuilder for ManualResolver {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    fn build(&self, _: &Target, updates: UpdateSink) -> Result<Box<dyn Resolver>, ResolverError> {
        let mut inner = lock(&self.inner);
        match &inner.last {
            Some(Ok(state)) => updates.update(state.clone()),
            Some(Err(error)) => updates.error(error.clone()),
            None => true,
        };
        inner.sink = Some(updates);
        Ok(Box::new(ManualHandle(self.inner.clone())))
    }
}

#[derive(Debug)]
struct ManualHandle(Arc<Mutex<Inner>>);

impl Resolver for ManualHandle {
    fn resolve_now(&mut self) {
        let mut inner = lock(&self.0);
        inner.resolve_now_calls += 1;
        if let Some(state) = inner.staged.take() {
            inner.send(Ok(state));
        }
    }
}
