//! The `[etcd]` table and the servers' `register` key: an in-memory etcd on its own turmoil
//! host, and servers that register themselves in it under leases.

use serde::{Deserialize, Serialize};

/// The `[etcd]` table: one in-memory etcd ([`MemoryEtcd`](crate::etcd::memory::MemoryEtcd))
/// serving on `<host>:<port>`. Its store lives outside the host, so it survives a crash of the
/// host (as etcd's data directory would) and leases start afresh when it comes back.
///
/// The etcd clients of the simulation (the `etcd` resolver's and each registering server's)
/// take their connect timeout, keep-alive and reconnect backoff from `[client]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// The turmoil host etcd runs on. Default `"etcd"`.
    #[serde(default = "default_host")]
    pub host: String,
    /// The port it listens on. Default 2379.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The least lease time-to-live etcd grants, s (etcd's own default is 2). Default 2.
    #[serde(default = "default_min_lease_ttl_s")]
    pub min_lease_ttl_s: i64,
    /// The deadline of each unary etcd RPC (reads, lease grants, puts), ms. Default 2000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl Default for EtcdSpec {
    /// What an empty `[etcd]` table means.
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            min_lease_ttl_s: default_min_lease_ttl_s(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

impl EtcdSpec {
    /// The address etcd clients dial: `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn default_host() -> String {
    "etcd".to_owned()
}
fn default_port() -> u16 {
    2379
}
fn default_min_lease_ttl_s() -> i64 {
    2
}
fn default_request_timeout_ms() -> u64 {
    2000
}

/// A server's `register = { service = "echo", ttl_s = 2, at_ms = 0 }`: on every boot at or
/// after `at_ms`, the server writes `<service>/<host>:<port>` into etcd under a lease of `ttl_s`
/// seconds and keeps the lease alive. A crash stops the keep-alive, so the key goes when the
/// lease expires.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// The service name: the `<service>` of `etcd:///<service>#N`.
    pub service: String,
    /// The lease time-to-live, s (etcd raises it to `etcd.min_lease_ttl_s`). Default 10.
    #[serde(default = "default_ttl_s", skip_serializing_if = "is_default_ttl_s")]
    pub ttl_s: i64,
    /// The simulated time before which the server does not register, ms. Default 0 (at boot).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_ms: u64,
}

fn default_ttl_s() -> i64 {
    10
}

fn is_default_ttl_s(ttl_s: &i64) -> bool {
    *ttl_s == default_ttl_s()
}

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}
