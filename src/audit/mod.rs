//! Auditing resolvers and clients against the properties anchorage proves for its own.
//!
//! - [`clients`]: judge what real clients (in any language) did against instrumented servers
//!   over TCP: connections accepted per server against the expected `#N`, and the RPC split.

pub mod clients;
