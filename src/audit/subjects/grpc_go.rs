//! **Models** of how grpc-go's versions treat the `pass` resolver's addresses, so the audit
//! matrix shows on which versions the `#N` trick yields N connections. These are models of
//! documented behaviour, not grpc-go itself.
//!
//! What each rests on (DESIGN §5 and grpc-go's history):
//!
//! | versions | target parsing | address identity for subchannels |
//! |---|---|---|
//! | 1.33 | `#` kept in the endpoint | by pointer: every address in an update is its own subchannel, duplicates included |
//! | 1.35–1.41 | `#` kept in the endpoint | attributes ignored: round_robin strips them (grpc-go pull request 4024, "roundrobin: strip attributes from addresses"), so `a#2` collapses to one connection |
//! | 1.42–1.70 | targets go through Go's `url.Parse`: everything after the first `#` is a URL fragment and is dropped | by value: address and attributes, so distinct `idx` give distinct connections |
//! | 1.71+ | as 1.42 | round_robin delegates to pick_first per endpoint keyed by address string (grpc-go pull request 7966, "roundrobin: Delegate subchannel creation to pickfirst"), so `#N` copies collapse again |
//!
//! A model is the `pass` resolver wrapped with the version's target rewrite and identity
//! rule, applied to the addresses before our policy sees them; our policies key by value, so
//! the rewritten list reproduces the version's subchannel count.

use crate::address::{Address, Attributes};
use crate::resolver::pass::PassBuilder;
use crate::resolver::{Resolver, ResolverBuilder, ResolverError, ResolverState, UpdateSink};
use crate::target::Target;

/// How a grpc-go version decides that two addresses are the same subchannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// Every address object is distinct (1.33).
    ByPointer,
    /// Attributes are stripped before keying (1.35–1.41).
    AttributesIgnored,
    /// Address and attributes compared by value (1.42–1.70), as anchorage does.
    ByValue,
    /// Only the address string counts (round_robin in 1.71+).
    AddressOnly,
}

/// One grpc-go version range as an audit subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcGoModel {
    /// The versions it stands for, such as `1.42–1.70`.
    pub versions: &'static str,
    /// Whether the target's endpoint loses everything after the first `#` (`url.Parse`).
    pub fragment_dropped: bool,
    /// The identity rule.
    pub identity: Identity,
}

/// The four version ranges of the table above.
pub const MODELS: [GrpcGoModel; 4] = [
    GrpcGoModel { versions: "1.33", fragment_dropped: false, identity: Identity::ByPointer },
    GrpcGoModel {
        versions: "1.35-1.41",
        fragment_dropped: false,
        identity: Identity::AttributesIgnored,
    },
    GrpcGoModel { versions: "1.42-1.70", fragment_dropped: true, identity: Identity::ByValue },
    GrpcGoModel { versions: "1.71+", fragment_dropped: true, identity: Identity::AddressOnly },
];

impl GrpcGoModel {
    /// Applies the identity rule to one resolver update.
    pub fn rewrite(&self, addresses: Vec<Address>) -> Vec<Address> {
        match self.identity {
            Identity::ByValue => addresses,
            Identity::AttributesIgnored | Identity::AddressOnly => addresses
                .into_iter()
                .map(|a| Address { attributes: Attributes::new(), ..a })
                .collect(),
            // A distinct position tag stands for a distinct pointer.
            Identity::ByPointer => addresses
                .into_iter()
                .enumerate()
                .map(|(i, a)| a.with_attribute("pointer", i as i64))
                .collect(),
        }
    }

    /// The endpoint as this version's target parser leaves it.
    pub fn endpoint<'a>(&self, endpoint: &'a str) -> &'a str {
        match endpoint.find('#') {
            Some(cut) if self.fragment_dropped => &endpoint[..cut],
            _ => endpoint,
        }
    }
}

/// The model as a resolver builder for `pass` targets.
#[derive(Debug, Clone)]
pub struct GrpcGoPassBuilder {
    model: GrpcGoModel,
}

impl GrpcGoPassBuilder {
    /// The `pass` resolver as grpc-go `model` would see it.
    pub fn new(model: GrpcGoModel) -> Self {
        Self { model }
    }
}

impl ResolverBuilder for GrpcGoPassBuilder {
    fn scheme(&self) -> &str {
        "pass"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        let cut = format!("pass:///{}", self.model.endpoint(target.endpoint()));
        let cut = Target::parse(&cut, |s| s == "pass")
            .map_err(|_| ResolverError::EmptyEndpoint { scheme: "pass".into() })?;
        let model = self.model;
        let updates = updates.with_transform(move |state: ResolverState| ResolverState {
            addresses: model.rewrite(state.addresses),
            ..state
        });
        PassBuilder.build(&cut, updates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::dedup;

    #[test]
    fn only_by_pointer_and_by_value_versions_keep_n_connections_per_address() {
        let list: crate::anchor::AnchorList = "a:1#2".parse().unwrap();
        let kept: Vec<usize> =
            MODELS.iter().map(|m| dedup(m.rewrite(list.expand())).len()).collect();
        assert_eq!(kept, [2, 1, 2, 1], "by pointer and by value keep a:1#2 as two connections");
    }

    #[test]
    fn from_1_42_a_raw_hash_cuts_the_target_at_the_first_item() {
        let m = MODELS[2];
        assert_eq!(m.endpoint("a:1#2,b:1#1"), "a:1", "url.Parse drops the fragment");
        assert_eq!(MODELS[1].endpoint("a:1#2,b:1#1"), "a:1#2,b:1#1");
    }
}
