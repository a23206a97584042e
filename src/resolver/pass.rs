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
        reject_authority(target)?;
        let anchors: AnchorList = target.endpoint().parse()?;
        updates.update(ResolverState::from_addresses(anchors.expand()));
        Ok(Box::new(StaticResolver))
    }
}
