//! `pass`: a static anchor list where `#N` asks for N connections per address (DESIGN §2.2).
//!
//! `pass:///10.0.0.1:9080#2,10.0.0.2:9090#1` resolves once, at build time, to
//! `[10.0.0.1:9080{idx=0}, 10.0.0.1:9080{idx=1}, 10.0.0.2:9090{idx=0}]`. The connection index
//! makes the copies distinct addresses, so `round_robin` opens one subchannel for each and
//! splits traffic 2:1. Re-resolution requests are ignored: the list never changes.

use super::{
    Resolver, ResolverBuilder, ResolverError, ResolverState, StaticResolver, UpdateSink,
    reject_authority,
};
use crate::address::Address;
use crate::anchor::AnchorList;
use crate::target::Target;

/// Builds `pass` resolvers.
#[derive(Debug, Clone, Default)]
pub struct PassBuilder;

/// A `pass` builder with the [`Mutant::CountCarriesOver`](crate::mutant::Mutant) defect; the
/// channel registers it in place of [`PassBuilder`] only when that mutant is set.
#[derive(Debug, Clone, Default)]
pub(crate) struct CountCarriesOverBuilder;

impl ResolverBuilder for PassBuilder {
    fn scheme(&self) -> &str {
        "pass"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        build(target, updates, false)
    }

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        reject_authority(target)?;
        target.endpoint().parse::<AnchorList>()?;
        Ok(())
    }

    /// The first item's `host:port`. The endpoint itself (`a:1#2,b:1`) is no valid authority,
    /// and a `pass` list names replicas of one service, so any item names it; the first is the
    /// one a user reads first and `pick_first` tries first, and for a one-item list it is what
    /// grpc-go's `passthrough` would send. Replicas reached under a shared virtual host name
    /// should set `ChannelBuilder::authority`.
    fn default_authority(&self, target: &Target) -> String {
        match target.endpoint().parse::<AnchorList>() {
            Ok(anchors) => anchors.items().first().map(|a| a.addr()).unwrap_or_default(),
            Err(_) => target.endpoint().to_owned(),
        }
    }
}

/// Resolves `target` once; `carry_over` switches on the `CountCarriesOver` mutant.
fn build(
    target: &Target,
    updates: UpdateSink,
    carry_over: bool,
) -> Result<Box<dyn Resolver>, ResolverError> {
    PassBuilder.validate(target)?;
    let anchors: AnchorList = target.endpoint().parse()?;
    let mut addresses = anchors.expand();
    // Mutant CountCarriesOver: an item without `#N` takes the count of the item before it.
    if carry_over {
        addresses = expand_carrying_counts_over(&anchors, target.endpoint());
    }
    updates.update(ResolverState::from_addresses(addresses));
    Ok(Box::new(StaticResolver))
}

/// The `CountCarriesOver` expansion: each item's count, or for an item written without `#N`
/// (nor `%23N`) the count used for the item before it.
fn expand_carrying_counts_over(anchors: &AnchorList, endpoint: &str) -> Vec<Address> {
    let mut count = 1;
    let mut addresses = Vec::new();
    for (anchor, text) in anchors.items().iter().zip(endpoint.split(',')) {
        if text.contains('#') || text.contains("%23") {
            count = anchor.connections();
        }
        addresses.extend((0..count).map(|i| Address::new(anchor.addr()).with_connection_index(i)));
    }
    addresses
}

impl ResolverBuilder for CountCarriesOverBuilder {
    fn scheme(&self) -> &str {
        "pass"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        build(target, updates, true)
    }

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        PassBuilder.validate(target)
    }

    fn default_authority(&self, target: &Target) -> String {
        PassBuilder.default_authority(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carry_over_mutant_gives_an_item_without_a_count_the_previous_items_count() {
        let anchors: AnchorList = "a:1#2,b:1,c:1#1".parse().expect("a valid list");
        let got: Vec<String> = expand_carrying_counts_over(&anchors, "a:1#2,b:1,c:1#1")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["a:1{idx=0}", "a:1{idx=1}", "b:1{idx=0}", "b:1{idx=1}", "c:1{idx=0}"],
            "the mutant must carry a's #2 over to b and nothing else"
        );
        assert_eq!(anchors.expand().len(), 4, "without the mutant b keeps one connection");
    }
}
