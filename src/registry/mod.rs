//! Server-side registration: announcing a server's address where resolvers look for it.
//!
//! [`etcd`] registers `<service>/<addr>` in etcd under a lease that a background task keeps
//! alive, in the format of etcd's Go `naming/endpoints` package, so both `etcd:///<service>`
//! resolvers here and grpc-go's etcd resolver discover it. The key disappears when the server
//! stops renewing the lease (it crashed, or lost etcd for longer than the lease's time-to-live)
//! and at once when it deregisters.

pub mod etcd;

pub use etcd::{EtcdRegistrar, Registration, RegistrationState, RegistryError};
