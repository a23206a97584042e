//! Auditing resolvers and clients against the properties anchorage proves for its own.
//!
//! - [`syntax`]: target-syntax properties of any `pass`-style resolver, on generated input.
//! - [`etcd`]: discovery properties of any `etcd`-style resolver, against an in-memory etcd.
//! - [`scenarios`]: simulated-scenario properties of a subject (connections per `#N`, the
//!   default policy, failover, liveness), each failure with its replay command; and of a client
//!   (anchorage's channel or one of tonic's) under crashes, partitions and address changes.
//! - [`matrix`]: subjects × properties, with counterexamples.
//! - [`subjects`]: the resolvers shipped for auditing (anchorage's own and models of others),
//!   and the clients (anchorage's channel, tonic's `Channel`, a pool, p2c, `balance_list`).
//! - [`clients`]: judge what real clients (in any language) did against instrumented servers
//!   over TCP: connections accepted per server against the expected `#N`, and the RPC split.

pub mod clients;
pub mod etcd;
pub mod matrix;
pub mod scenarios;
pub mod subjects;
pub mod syntax;
