//! gRPC service config: the JSON that chooses a channel's load-balancing policy and sets per-method
//! timeouts, `waitForReady` and retries (DESIGN §2.6).
//!
//! The format is gRPC's own (`doc/service_config.md`, and gRFC A6 for `retryPolicy`), so a config
//! written for grpc-go works unchanged:
//!
//! ```
//! use std::time::Duration;
//! use anchorage::service_config::{LoadBalancingConfig, ServiceConfig};
//!
//! let config = ServiceConfig::parse(r#"{
//!     "loadBalancingConfig": [{"round_robin": {}}],
//!     "methodConfig": [{
//!         "name": [{"service": "anchorage.echo.v1.Echo"}],
//!         "timeout": "1.5s",
//!         "retryPolicy": {
//!             "maxAttempts": 3,
//!             "initialBackoff": "0.1s",
//!             "maxBackoff": "1s",
//!             "backoffMultiplier": 2,
//!             "retryableStatusCodes": ["UNAVAILABLE"]
//!         }
//!     }]
//! }"#)?;
//! assert_eq!(config.load_balancing(), &LoadBalancingConfig::RoundRobin);
//! let echo = config.method_config("anchorage.echo.v1.Echo", "UnaryEcho");
//! assert_eq!(echo.and_then(|m| m.timeout), Some(Duration::from_millis(1500)));
//! # Ok::<(), anchorage::service_config::ServiceConfigError>(())
//! ```
//!
//! ## Choices where gRPC leaves room
//! - Unknown fields are ignored at every level (top level, method configs, retry policies, a
//!   policy's own config such as `round_robin`'s), as gRPC does for forward compatibility. That
//!   includes fields this crate does not implement: `maxRequestMessageBytes`,
//!   `maxResponseMessageBytes`.
//! - `healthCheckConfig` (gRFC A17) turns on client-side health checking for policies that
//!   honour it (`round_robin`): it must be an object, and its `serviceName`, when present, a
//!   string. An absent or empty `serviceName` checks the server's overall health (the empty
//!   service name of `grpc.health.v1`), as grpc-go reads it.
//! - `retryThrottling` (gRFC A6) is one token bucket per channel: it starts full at `maxTokens`
//!   (an integer in `1..=1000`); every attempt that fails with a code its method's
//!   `retryableStatusCodes` lists takes one token, every RPC that ends OK gives back `tokenRatio`
//!   (greater than 0, at most 3 decimal places) up to `maxTokens`, and no RPC is retried while
//!   the tokens are at or below `maxTokens / 2`. A resolver config whose `retryThrottling`
//!   differs from the current one starts a fresh, full bucket.
//! - A field name matches exactly or, failing that, ignoring ASCII case (`"MaxAttempts"`): grpc-go
//!   decodes service configs with Go's `encoding/json`, which does the same, and its own retry
//!   example is written that way. Error paths show the key as the input spelled it.
//! - `null` means "absent", as in protobuf's JSON mapping.
//! - Policy names are looked up in the [balancer registry](crate::balancer::registry): the
//!   built-ins and every policy added with [`register`](crate::balancer::register). A registered
//!   policy's config is validated by its builder and carried as
//!   [`LoadBalancingConfig::Registered`].
//! - Policy names match ignoring ASCII case in both `loadBalancingConfig` and the deprecated
//!   `loadBalancingPolicy`, as grpc-go's balancer registry does. When `loadBalancingConfig` is
//!   present, `loadBalancingPolicy` must still be a string but its name is not looked at.
//! - Every `loadBalancingConfig` entry must be a one-key object whose value is an object, even after
//!   the chosen entry (that is the list's grammar, whichever policies a client knows); only the
//!   chosen policy's own config is validated.
//! - `hedgingPolicy` is an error: with `retryPolicy` because gRFC A6 makes them mutually exclusive,
//!   alone because this client does not hedge, and quietly sending single attempts would hide that.
//! - A method config must list at least one name: an entry that matches no RPC is a mistake.
//! - `timeout` may be `"0s"`; backoffs and `backoffMultiplier` must be greater than zero.
//! - Integers may be written as integral numbers (`3.0`, `1e1`) but not as strings; status codes
//!   are names in any case (`"unavailable"`) or JSON numbers `0..=16`, not numeric strings.
//! - Durations follow grpc-go's reading of protobuf's JSON form: decimal seconds ending in `s`, up
//!   to 9 fractional digits, either side of the point may be empty but not both (`".01s"`,
//!   `"1.s"`), no sign, at most 315,576,000,000 s (protobuf's `Duration` limit).

mod duration;
mod error;
mod method;
mod parse;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tonic::Code;

pub use error::{DurationError, Expected, JsonType, ServiceConfigError, ServiceConfigErrorKind};

use crate::balancer::registry::RegisteredConfig;
use duration::format_duration;
use method::{MethodEntry, MethodTable};
use parse::{
    code_name, health_check_config, invalid_json, load_balancing, method_table, object, optional,
    retry_throttling,
};
pub(crate) use parse::{invalid_policy_config, pick_first_config};

/// `maxAttempts` above this is treated as this (gRFC A6).
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// A parsed and validated gRPC service config.
///
/// [`Default`] is "no config": `pick_first` and no method configs. [`Display`](fmt::Display) and
/// [`Serialize`] give the canonical JSON form, which parses back to an equal config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceConfig {
    load_balancing: LoadBalancingConfig,
    methods: MethodTable,
    retry_throttling: Option<RetryThrottling>,
    health_check: Option<HealthCheckConfig>,
}

impl ServiceConfig {
    /// Parses and validates a service config.
    ///
    /// # Errors
    /// A [`ServiceConfigError`] naming the JSON path of the first bad field found (fields are
    /// checked in a fixed order, lists front to back) and why it is bad: invalid JSON (with
    /// serde_json's line and column), a wrong JSON type, a missing required field, an out-of-range
    /// value, no supported load-balancing policy, a duplicate method name, or an unsupported
    /// `hedgingPolicy`. Never panics, whatever the input.
    pub fn parse(json: &str) -> Result<Self, ServiceConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| invalid_json(&e))?;
        let top = object(&value, "")?;
        let load_balancing = load_balancing(top)?;
        let methods = optional(top, "", "methodConfig", method_table)?.unwrap_or_default();
        let retry_throttling = optional(top, "", "retryThrottling", retry_throttling)?;
        let health_check = optional(top, "", "healthCheckConfig", health_check_config)?;
        Ok(Self { load_balancing, methods, retry_throttling, health_check })
    }

    /// `healthCheckConfig` (gRFC A17), if the config sets it: client-side health checking is
    /// on for the policies that ask for it.
    pub fn health_check(&self) -> Option<&HealthCheckConfig> {
        self.health_check.as_ref()
    }

    /// The load-balancing policy to use: the first supported entry of `loadBalancingConfig`, else
    /// the deprecated `loadBalancingPolicy`, else `pick_first`.
    pub fn load_balancing(&self) -> &LoadBalancingConfig {
        &self.load_balancing
    }

    /// The method config that applies to `method` of `service` (`service` includes its package,
    /// as in `anchorage.echo.v1.Echo`).
    ///
    /// Lookup order, per gRPC: the entry naming both the service and the method, then the entry
    /// naming only the service, then the default entry (a name with no service). `None` when none
    /// of them exists.
    pub fn method_config(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        self.methods.lookup(service, method)
    }

    /// `retryThrottling` (gRFC A6), if the config sets it.
    pub fn retry_throttling(&self) -> Option<&RetryThrottling> {
        self.retry_throttling.as_ref()
    }

    /// The canonical JSON form of this config.
    fn to_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("loadBalancingConfig".into(), json!([self.load_balancing.to_json()]));
        if !self.methods.entries.is_empty() {
            let entries = self.methods.entries.iter().map(MethodEntry::to_json).collect();
            top.insert("methodConfig".into(), Value::Array(entries));
        }
        if let Some(throttling) = &self.retry_throttling {
            top.insert("retryThrottling".into(), throttling.to_json());
        }
        if let Some(health) = &self.health_check {
            top.insert("healthCheckConfig".into(), json!({ "serviceName": health.service_name }));
        }
        Value::Object(top)
    }
}

impl FromStr for ServiceConfig {
    type Err = ServiceConfigError;

    /// Same as [`ServiceConfig::parse`].
    fn from_str(json: &str) -> Result<Self, Self::Err> {
        Self::parse(json)
    }
}

impl fmt::Display for ServiceConfig {
    /// The canonical JSON form on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl Serialize for ServiceConfig {
    /// Serializes the canonical JSON form: one `loadBalancingConfig` entry, method configs in input
    /// order, durations in protobuf form, status codes by name.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// The load-balancing policy a service config chooses, with its parsed config (DESIGN §2.4).
///
/// Equal values build equivalent policies: a channel whose new service config carries an equal
/// value keeps its running policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LoadBalancingConfig {
    /// `pick_first`: one connection at a time, in address order. The default.
    PickFirst(PickFirstConfig),
    /// `round_robin`: one subchannel per address, RPCs spread over the READY ones.
    RoundRobin,
    /// A policy added with [`balancer::register`](crate::balancer::register), with the config
    /// its builder parsed.
    Registered(RegisteredConfig),
}

impl LoadBalancingConfig {
    /// The policy's registered name: `pick_first`, `round_robin`, or a registered policy's.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PickFirst(_) => "pick_first",
            Self::RoundRobin => "round_robin",
            Self::Registered(registered) => registered.name(),
        }
    }

    /// The `loadBalancingConfig` entry: `{"<name>": {<config>}}`.
    fn to_json(&self) -> Value {
        match self {
            Self::PickFirst(c) => {
                json!({ "pick_first": { "shuffleAddressList": c.shuffle_address_list } })
            }
            Self::RoundRobin => json!({ "round_robin": {} }),
            Self::Registered(registered) => {
                let mut entry = Map::new();
                entry.insert(registered.name().into(), Value::Object(registered.to_json()));
                Value::Object(entry)
            }
        }
    }
}

impl Default for LoadBalancingConfig {
    /// `pick_first` with its default config, as gRPC uses when no policy is named.
    fn default() -> Self {
        Self::PickFirst(PickFirstConfig::default())
    }
}

/// `pick_first`'s config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PickFirstConfig {
    /// `shuffleAddressList`: shuffle each resolver update's addresses (with the channel's seeded
    /// RNG) before trying them in order. Default `false`.
    pub shuffle_address_list: bool,
}

/// Per-method settings from one `methodConfig` entry.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MethodConfig {
    /// `timeout`: the longest an RPC may take; the shorter of this and the caller's deadline wins.
    /// `None` when the config sets none.
    pub timeout: Option<Duration>,
    /// `waitForReady`: queue instead of failing fast while no connection is ready. `None` when the
    /// config leaves it to the caller.
    pub wait_for_ready: Option<bool>,
    /// `retryPolicy` (gRFC A6). `None`: RPCs are not retried (transparent retry still applies).
    pub retry_policy: Option<RetryPolicy>,
}

/// A validated gRFC A6 retry policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts including the original one, in `2..=`[`MAX_ATTEMPTS_CAP`] (larger values in the
    /// JSON are capped, not rejected).
    pub max_attempts: u32,
    /// Ceiling of the first retry's randomized delay; greater than zero.
    pub initial_backoff: Duration,
    /// Upper bound on every retry's delay ceiling; greater than zero.
    pub max_backoff: Duration,
    /// Growth of the delay ceiling per retry; greater than zero and finite.
    pub backoff_multiplier: f64,
    /// Status codes that make an attempt retryable: non-empty, sorted by code number, no duplicates.
    pub retryable_status_codes: Vec<Code>,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry, i.e. the second attempt).
    ///
    /// gRFC A6: "the n-th attempt will occur at random(0, min(initialBackoff*backoffMultiplier^(n-1),
    /// maxBackoff))". The randomness is `jitter`, a draw in `[0, 1)` from the caller's seeded RNG;
    /// the result is the ceiling times `jitter`. `retry` 0 is read as 1.
    ///
    /// # Determinism
    /// A pure function of the policy, `retry` and `jitter`. A `jitter` outside `[0, 1]` is clamped
    /// into it (NaN counts as 0), so the result never exceeds `max_backoff`, and nothing panics.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = i32::try_from(retry.max(1) - 1).unwrap_or(i32::MAX);
        let ceiling = self.initial_backoff.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        let max = self.max_backoff.as_secs_f64();
        let ceiling = if ceiling < max { ceiling } else { max };
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        Duration::try_from_secs_f64(ceiling * jitter)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Whether an attempt that ended with `code` may be retried under this policy.
    pub fn is_retryable(&self, code: Code) -> bool {
        self.retryable_status_codes.contains(&code)
    }

    fn to_json(&self) -> Value {
        let codes: Vec<&str> = self.retryable_status_codes.iter().map(|&c| code_name(c)).collect();
        json!({
            "maxAttempts": self.max_attempts,
            "initialBackoff": format_duration(self.initial_backoff),
            "maxBackoff": format_duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": codes,
        })
    }
}

/// A validated gRFC A6 `retryThrottling` policy: a token bucket shared by every RPC on the channel
/// (see the [module docs](self) for how tokens move).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryThrottling {
    /// The bucket's size and starting level, in `1..=`[`MAX_THROTTLING_TOKENS`].
    pub max_tokens: u32,
    /// Tokens given back by each RPC that ends OK: greater than 0, at most 3 decimal places.
    pub token_ratio: f64,
}

impl RetryThrottling {
    fn to_json(self) -> Value {
        json!({ "maxTokens": self.max_tokens, "tokenRatio": self.token_ratio })
    }
}

/// A validated gRFC A17 `healthCheckConfig`: which service's health a subchannel watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheckConfig {
    /// The service name sent in `grpc.health.v1.HealthCheckRequest`; empty means the server's
    /// overall health.
    pub service_name: String,
}

impl HealthCheckConfig {
    /// A config that watches `service_name` (empty: the server's overall health).
    pub fn new(service_name: impl Into<String>) -> Self {
        Self { service_name: service_name.into() }
    }
}

/// The largest `retryThrottling.maxTokens` gRFC A6 allows.
pub const MAX_THROTTLING_TOKENS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_config_names_the_watched_service_and_an_empty_name_means_the_whole_server() {
        let cases = [
            (r#"{"healthCheckConfig":{"serviceName":"echo"}}"#, Some("echo")),
            (r#"{"healthCheckConfig":{"serviceName":""}}"#, Some("")),
            (r#"{"healthCheckConfig":{}}"#, Some("")),
            (r#"{"healthCheckConfig":null}"#, None),
            (r#"{}"#, None),
        ];
        for (json, expected) in cases {
            let config = ServiceConfig::parse(json).expect("a valid config");
            let name = config.health_check().map(|h| h.service_name.as_str());
            assert_eq!(name, expected, "{json} must turn health checking on for {expected:?}");
            let again = ServiceConfig::parse(&config.to_string()).expect("canonical form parses");
            assert_eq!(again, config, "the canonical form of {json} must keep healthCheckConfig");
        }
    }

    #[test]
    fn a_bad_health_check_config_is_an_error_naming_its_path_never_a_silent_default() {
        let cases = [
            (r#"{"healthCheckConfig":"echo"}"#, "healthCheckConfig"),
            (r#"{"healthCheckConfig":[]}"#, "healthCheckConfig"),
            (r#"{"healthCheckConfig":{"serviceName":7}}"#, "healthCheckConfig.serviceName"),
            (r#"{"healthCheckConfig":{"serviceName":{}}}"#, "healthCheckConfig.serviceName"),
        ];
        for (json, path) in cases {
            let error = ServiceConfig::parse(json).expect_err("a bad healthCheckConfig");
            assert_eq!(error.path(), path, "{json} must be rejected at {path}");
            assert!(
                matches!(error.kind(), ServiceConfigErrorKind::WrongType { .. }),
                "{json} must be rejected as a wrong type, got {error}"
            );
        }
    }
}
