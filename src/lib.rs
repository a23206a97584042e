//! # anchorage
//!
//! gRPC-style name resolution and load balancing for [tonic], proven in a deterministic network
//! simulation.
//!
//! ## Map of the crate
//! - [`target`]: gRPC target strings (`scheme://authority/endpoint`) and the passthrough fallback.
//! - [`anchor`]: the `pass` anchor-list grammar (`a:9080#2,b:9090#1`) and `etcd` service names.
//! - [`address`]: [`Address`](address::Address) identity (addr + attributes) and ordered maps of them.
//! - [`resolver`]: the resolver API, the scheme registry and the built-in resolvers
//!   (`passthrough`, `pass`, `dns`, `etcd`, `manual`).
//! - [`balancer`]: the policy API and its public registry (`balancer::register`), `pick_first`,
//!   `round_robin`, pickers and subchannels.
//! - [`service_config`]: gRPC service-config JSON: load-balancing choice, timeouts, retries.
//! - [`connector`]: how subchannels dial (real TCP, or simulated TCP in the harness).
//! - [`channel`]: the `tower::Service` that tonic-generated clients run on.
//! - [`etcd`]: a thin etcd v3 client over the channel, etcd's Go naming format, and an
//!   in-memory etcd server for tests and simulations.
//! - [`registry`]: server-side registration in etcd under a lease with keep-alive.
//! - [`server`]: instrumented `Echo` servers that record accepted connections and which
//!   connection served each RPC, over any listener.
//! - [`tls`]: TLS with rustls for channels ([`TlsConfig`](tls::TlsConfig)) and servers
//!   ([`ServerTlsConfig`](tls::ServerTlsConfig), [`TlsListener`](server::TlsListener)).
#![cfg_attr(
    feature = "sim",
    doc = "- [`sim`] (feature `sim`): the deterministic simulation harness: scenarios from \
           `sims/*.toml` on turmoil, property checks, seeds and replay.\n\
           - [`audit`] (feature `sim`): judging other resolvers and clients by the same \
           properties."
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "- `sim` and `audit` (feature `sim`, not enabled in this build): the simulation \
           harness and the audit kit."
)]
//!
//! ## Cargo features
//! - `sim`: the simulation harness (module `sim`) and the audit kit (module `audit`); brings turmoil,
//!   proptest, toml and plotters.
//! - `cli` (default): the `anchorage` command line; brings `sim`, clap and indicatif.
//!
//! With `default-features = false` the crate is the library alone: channel, resolvers,
//! policies, service config, TLS, the etcd client, resolver and registration, and the
//! instrumented servers.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod address;
pub mod anchor;
#[cfg(feature = "sim")]
pub mod audit;
mod backoff;
pub mod balancer;
pub mod channel;
pub mod connector;
pub mod etcd;
mod io;
#[doc(hidden)]
pub mod mutant;
pub mod registry;
pub mod resolver;
mod serve;
pub mod server;
pub mod service_config;
#[cfg(feature = "sim")]
pub mod sim;
mod sync;
pub mod target;
pub mod tls;

/// Generated code for the instrumented `Echo` test service (`proto/echo.proto`).
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("anchorage.echo.v1");
}

/// Generated code for the standard `grpc.health.v1` health service (gRFC A17): the client stub
/// the subchannels' health watch uses and the server stub instrumented servers implement.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod health_pb {
    tonic::include_proto!("grpc.health.v1");
}
