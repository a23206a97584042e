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
use crate::anchor::AnchorList;
use crate::target::Target;

/// Builds `pass` resolvers.
#[derive(Debug, Clone, Default)]
pub struct PassBuilder;

impl ResolverBuilder for PassBuilder {
    fn scheme(&self) -> &str {
        "pass"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        self.validate(target)?;
        let anchors: AnchorList = target.endpoint().parse()?;
        updates.update(ResolverState::from_addresses(anchors.expand()));
        Ok(Box::new(StaticResolver))
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
