//! `passthrough`: the endpoint is the address, unresolved (gRPC's naming doc).
//!
//! Targets with no scheme, or with a scheme no resolver is registered for, land here whole, so
//! `127.0.0.1:50051` and `localhost:50051` work as grpc-go's `Dial` makes them work. Name
//! lookup, if any, happens when the connector dials.

use super::{
    Resolver, ResolverBuilder, ResolverError, ResolverState, StaticResolver, UpdateSink,
    reject_authority,
};
use crate::address::Address;
use crate::target::Target;

/// Builds `passthrough` resolvers.
#[derive(Debug, Clone, Default)]
pub struct PassthroughBuilder;

impl ResolverBuilder for PassthroughBuilder {
    fn scheme(&self) -> &str {
        "passthrough"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        self.validate(target)?;
        updates.update(ResolverState::from_addresses(vec![Address::new(target.endpoint())]));
        Ok(Box::new(StaticResolver))
    }

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        reject_authority(target)?;
        if target.endpoint().is_empty() {
            return Err(ResolverError::EmptyEndpoint { scheme: "passthrough".into() });
        }
        Ok(())
    }
}
