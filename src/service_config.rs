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

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tonic::Code;

/// `maxAttempts` above this is treated as this (gRFC A6).
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// The largest duration protobuf's `Duration` can hold, in seconds (10,000 years).
const MAX_DURATION_SECS: u64 = 315_576_000_000;

/// gRPC status code names, indexed by code number.
const STATUS_CODES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

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

/// The load-balancing policy a service config chooses (DESIGN §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadBalancingConfig {
    /// `pick_first`: one connection at a time, in address order. The default.
    PickFirst(PickFirstConfig),
    /// `round_robin`: one subchannel per address, RPCs spread over the READY ones.
    RoundRobin,
}

impl LoadBalancingConfig {
    /// The policy's gRPC name: `pick_first` or `round_robin`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PickFirst(_) => "pick_first",
            Self::RoundRobin => "round_robin",
        }
    }

    fn to_json(self) -> Value {
        match self {
            Self::PickFirst(c) => {
                json!({ "pick_first": { "shuffleAddressList": c.shuffle_address_list } })
            }
            Self::RoundRobin => json!({ "round_robin": {} }),
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

/// A service config that cannot be used: where (a JSON path) and why.
///
/// Displays as `service config: methodConfig[1].retryPolicy.maxAttempts: must be at least 2 (got
/// 1)`; errors about the whole document omit the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service config: {}{kind}", path_prefix(.path))]
pub struct ServiceConfigError {
    path: String,
    kind: ServiceConfigErrorKind,
}

impl ServiceConfigError {
    /// The JSON path of the bad field, such as `methodConfig[1].retryPolicy.maxAttempts`; empty for
    /// the document itself (invalid JSON, not an object).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why the field is bad.
    pub fn kind(&self) -> &ServiceConfigErrorKind {
        &self.kind
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() { String::new() } else { format!("{path}: ") }
}

/// Why a service config field is bad; see [`ServiceConfigError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceConfigErrorKind {
    /// The text is not JSON; position and message from serde_json.
    #[error("invalid JSON at line {line} column {column}: {message}")]
    InvalidJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// serde_json's description, without the position.
        message: String,
    },
    /// The value has the wrong JSON type.
    #[error("must be {expected} (got {found})")]
    WrongType {
        /// What the field must hold.
        expected: Expected,
        /// What it holds.
        found: JsonType,
    },
    /// A required field is absent (or `null`).
    #[error("is required")]
    Missing,
    /// A list that must have members has none.
    #[error("must not be empty")]
    Empty,
    /// A number with a fractional part where an integer is required.
    #[error("must be an integer (got {got})")]
    NotAnInteger {
        /// The number as written.
        got: String,
    },
    /// An integer above its maximum.
    #[error("must be at most {max} (got {got})")]
    TooLarge {
        /// The largest allowed value.
        max: i64,
        /// The value given.
        got: i64,
    },
    /// A number with more decimal places than the field supports.
    #[error("must have at most {max} decimal places (got {got})")]
    TooPrecise {
        /// The most decimal places allowed.
        max: u32,
        /// The number as written.
        got: String,
    },
    /// An integer below its minimum.
    #[error("must be at least {min} (got {got})")]
    TooSmall {
        /// The smallest allowed value.
        min: i64,
        /// The value given.
        got: i64,
    },
    /// A duration or number that must be greater than zero is not.
    #[error("must be greater than 0 (got {got})")]
    NotPositive {
        /// The value as JSON.
        got: String,
    },
    /// A string that is not a protobuf JSON duration.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The string given.
        value: String,
        /// What is wrong with it.
        reason: DurationError,
    },
    /// A status code name or number that gRPC does not define.
    #[error(
        "unknown status code {got} (expected a name such as \"UNAVAILABLE\" or a number 0..=16)"
    )]
    UnknownStatusCode {
        /// The value as JSON.
        got: String,
    },
    /// A `loadBalancingConfig` entry without exactly one key.
    #[error("must have exactly one key, the policy name (got {count})")]
    PolicyEntryKeys {
        /// How many keys the entry has.
        count: usize,
    },
    /// `loadBalancingConfig` lists no policy this client supports.
    #[error("lists no supported policy (got {names:?}; supported: pick_first, round_robin)")]
    NoSupportedPolicy {
        /// The policy names listed, in order.
        names: Vec<String>,
    },
    /// `loadBalancingPolicy` names a policy this client does not support.
    #[error("unknown policy {name:?} (supported: pick_first, round_robin)")]
    UnknownPolicy {
        /// The name given.
        name: String,
    },
    /// A method config name sets `method` but no `service`.
    #[error("sets method {method:?} without a service (only a name with neither is the default)")]
    MethodWithoutService {
        /// The method given.
        method: String,
    },
    /// Two method config names are the same.
    #[error("repeats {}, first named at {first}", describe_name(.service, .method))]
    DuplicateName {
        /// The service (empty for the default entry).
        service: String,
        /// The method (empty for a service-wide entry).
        method: String,
        /// The JSON path of the earlier name.
        first: String,
    },
    /// A method config sets both `retryPolicy` and `hedgingPolicy` (gRFC A6 allows one).
    #[error("retryPolicy and hedgingPolicy are mutually exclusive")]
    RetryAndHedging,
    /// A field this client knows but does not implement (`hedgingPolicy`).
    #[error("is not supported by this client")]
    Unsupported,
}

fn describe_name(service: &str, method: &str) -> String {
    match (service, method) {
        ("", _) => "the default name".to_owned(),
        (service, "") => format!("service {service:?}"),
        (service, method) => format!("method {:?}", format!("{service}/{method}")),
    }
}

/// What a service config field must hold, in [`ServiceConfigErrorKind::WrongType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// A JSON string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// A protobuf JSON duration string.
    Duration,
    /// A status code name or number.
    StatusCode,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Object => "a JSON object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Duration => "a duration string such as \"1.5s\"",
            Self::StatusCode => "a status code name such as \"UNAVAILABLE\" or a number",
        })
    }
}

/// The JSON type a service config field actually holds, in [`ServiceConfigErrorKind::WrongType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}

impl JsonType {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

/// Why a string is not a protobuf JSON duration, in [`ServiceConfigErrorKind::InvalidDuration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string does not end in `s`.
    #[error("must end in \"s\" (seconds), as in \"1.5s\"")]
    MissingUnit,
    /// The number before the `s` is not plain decimal seconds.
    #[error("must be decimal seconds, as in \"1.5s\"")]
    Malformed,
    /// More than 9 digits after the point (finer than a nanosecond).
    #[error("has more than 9 fractional digits")]
    TooPrecise,
    /// A leading `-`.
    #[error("must not be negative")]
    Negative,
    /// More than protobuf's `Duration` can hold.
    #[error("exceeds 315576000000 seconds")]
    OutOfRange,
}

/// Method configs in input order, indexed by name for lookup without allocating.
#[derive(Debug, Clone, Default, PartialEq)]
struct MethodTable {
    entries: Vec<MethodEntry>,
    services: BTreeMap<String, ServiceEntries>,
    default: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ServiceEntries {
    whole_service: Option<usize>,
    methods: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq)]
struct MethodEntry {
    names: Vec<MethodName>,
    config: MethodConfig,
}

/// A `{service, method}` name; empty strings stand for absent fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MethodName {
    service: String,
    method: String,
}

impl MethodTable {
    fn push(&mut self, entry: MethodEntry) {
        let index = self.entries.len();
        for name in &entry.names {
            if name.service.is_empty() {
                self.default = Some(index);
            } else {
                let service = self.services.entry(name.service.clone()).or_default();
                if name.method.is_empty() {
                    service.whole_service = Some(index);
                } else {
                    service.methods.insert(name.method.clone(), index);
                }
            }
        }
        self.entries.push(entry);
    }

    fn lookup(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        let by_service = self.services.get(service);
        let index = by_service
            .and_then(|s| s.methods.get(method).copied().or(s.whole_service))
            .or(self.default)?;
        self.entries.get(index).map(|entry| &entry.config)
    }
}

impl MethodEntry {
    fn to_json(&self) -> Value {
        let names: Vec<Value> = self.names.iter().map(MethodName::to_json).collect();
        let mut entry = Map::new();
        entry.insert("name".into(), Value::Array(names));
        let config = &self.config;
        if let Some(timeout) = config.timeout {
            entry.insert("timeout".into(), format_duration(timeout).into());
        }
        if let Some(wait_for_ready) = config.wait_for_ready {
            entry.insert("waitForReady".into(), wait_for_ready.into());
        }
        if let Some(retry) = &config.retry_policy {
            entry.insert("retryPolicy".into(), retry.to_json());
        }
        Value::Object(entry)
    }
}

impl MethodName {
    fn to_json(&self) -> Value {
        let mut name = Map::new();
        for (key, value) in [("service", &self.service), ("method", &self.method)] {
            if !value.is_empty() {
                name.insert(key.into(), value.as_str().into());
            }
        }
        Value::Object(name)
    }
}

// ---- Parsing. Each function validates one value and knows its own JSON path. ----

type Parsed<T> = Result<T, ServiceConfigError>;

fn fail<T>(path: &str, kind: ServiceConfigErrorKind) -> Parsed<T> {
    Err(ServiceConfigError { path: path.to_owned(), kind })
}

fn wrong_type<T>(path: &str, expected: Expected, value: &Value) -> Parsed<T> {
    fail(path, ServiceConfigErrorKind::WrongType { expected, found: JsonType::of(value) })
}

fn invalid_json(error: &serde_json::Error) -> ServiceConfigError {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full).to_owned();
    let kind =
        ServiceConfigErrorKind::InvalidJson { line: error.line(), column: error.column(), message };
    ServiceConfigError { path: String::new(), kind }
}

fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A field by exact name or else ignoring ASCII case; `null` is absent. Returns the key as written.
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<(&'v str, &'v Value)> {
    let (key, value) = object
        .get_key_value(name)
        .or_else(|| object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)))?;
    (!value.is_null()).then_some((key.as_str(), value))
}

fn optional<'v, T>(
    object: &'v Map<String, Value>,
    path: &str,
    name: &str,
    parse: impl FnOnce(&'v Value, &str) -> Parsed<T>,
) -> Parsed<Option<T>> {
    field(object, name).map(|(key, value)| parse(value, &key_path(path, key))).transpose()
}

fn required<'v, T>(
    object: &'v Map<String, Value>,
    path: &str,
    name: &str,
    parse: impl FnOnce(&'v Value, &str) -> Parsed<T>,
) -> Parsed<T> {
    match field(object, name) {
        Some((key, value)) => parse(value, &key_path(path, key)),
        None => fail(&key_path(path, name), ServiceConfigErrorKind::Missing),
    }
}

fn object<'v>(value: &'v Value, path: &str) -> Parsed<&'v Map<String, Value>> {
    value.as_object().map_or_else(|| wrong_type(path, Expected::Object, value), Ok)
}

fn array<'v>(value: &'v Value, path: &str) -> Parsed<&'v [Value]> {
    value.as_array().map_or_else(|| wrong_type(path, Expected::Array, value), |a| Ok(a.as_slice()))
}

fn non_empty_array<'v>(value: &'v Value, path: &str) -> Parsed<&'v [Value]> {
    let items = array(value, path)?;
    if items.is_empty() { fail(path, ServiceConfigErrorKind::Empty) } else { Ok(items) }
}

fn string<'v>(value: &'v Value, path: &str) -> Parsed<&'v str> {
    value.as_str().map_or_else(|| wrong_type(path, Expected::String, value), Ok)
}

fn boolean(value: &Value, path: &str) -> Parsed<bool> {
    value.as_bool().map_or_else(|| wrong_type(path, Expected::Boolean, value), Ok)
}

/// An integer, saturated to `i64`; integral numbers written with a point or exponent count.
fn integer(value: &Value, path: &str) -> Parsed<i64> {
    let Value::Number(number) = value else { return wrong_type(path, Expected::Integer, value) };
    if let Some(i) = number.as_i64() {
        return Ok(i);
    }
    if number.as_u64().is_some() {
        return Ok(i64::MAX);
    }
    match number.as_f64() {
        // `as` saturates, which is what we want for integral values beyond i64.
        Some(f) if f.fract() == 0.0 => Ok(f as i64),
        _ => fail(path, ServiceConfigErrorKind::NotAnInteger { got: number.to_string() }),
    }
}

fn positive_number(value: &Value, path: &str) -> Parsed<f64> {
    let Value::Number(number) = value else { return wrong_type(path, Expected::Number, value) };
    match number.as_f64() {
        Some(f) if f > 0.0 && f.is_finite() => Ok(f),
        _ => fail(path, ServiceConfigErrorKind::NotPositive { got: number.to_string() }),
    }
}

fn duration(value: &Value, path: &str) -> Parsed<Duration> {
    let Value::String(text) = value else { return wrong_type(path, Expected::Duration, value) };
    parse_duration(text).or_else(|reason| {
        fail(path, ServiceConfigErrorKind::InvalidDuration { value: text.clone(), reason })
    })
}

fn positive_duration(value: &Value, path: &str) -> Parsed<Duration> {
    let parsed = duration(value, path)?;
    if parsed.is_zero() {
        return fail(path, ServiceConfigErrorKind::NotPositive { got: value.to_string() });
    }
    Ok(parsed)
}

/// Parses protobuf's JSON duration form as grpc-go reads it (see the module docs).
fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let number = text.strip_suffix('s').ok_or(DurationError::MissingUnit)?;
    if number.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(DurationError::Malformed);
    }
    if fraction.len() > 9 {
        return Err(DurationError::TooPrecise);
    }
    let seconds = if whole.is_empty() { 0 } else { whole.parse::<u64>().unwrap_or(u64::MAX) };
    let nanos = format!("{fraction:0<9}").parse::<u32>().map_err(|_| DurationError::Malformed)?;
    if seconds > MAX_DURATION_SECS || (seconds == MAX_DURATION_SECS && nanos > 0) {
        return Err(DurationError::OutOfRange);
    }
    Ok(Duration::new(seconds, nanos))
}

/// Protobuf's canonical JSON duration: 0, 3, 6 or 9 fractional digits.
fn format_duration(duration: Duration) -> String {
    let (seconds, nanos) = (duration.as_secs(), duration.subsec_nanos());
    match nanos {
        0 => format!("{seconds}s"),
        n if n % 1_000_000 == 0 => format!("{seconds}.{:03}s", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{seconds}.{:06}s", n / 1_000),
        n => format!("{seconds}.{n:09}s"),
    }
}

fn code_name(code: Code) -> &'static str {
    STATUS_CODES.iter().find(|(_, c)| *c == code).map_or("UNKNOWN", |(name, _)| name)
}

fn status_code(value: &Value, path: &str) -> Parsed<Code> {
    let found = match value {
        Value::String(name) => STATUS_CODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)),
        Value::Number(_) => {
            let number = integer(value, path)?;
            usize::try_from(number).ok().and_then(|n| STATUS_CODES.get(n))
        }
        _ => return wrong_type(path, Expected::StatusCode, value),
    };
    found.map_or_else(
        || fail(path, ServiceConfigErrorKind::UnknownStatusCode { got: value.to_string() }),
        |&(_, code)| Ok(code),
    )
}

fn status_codes(value: &Value, path: &str) -> Parsed<Vec<Code>> {
    let items = non_empty_array(value, path)?;
    let mut codes = items
        .iter()
        .enumerate()
        .map(|(i, item)| status_code(item, &index_path(path, i)))
        .collect::<Parsed<Vec<Code>>>()?;
    codes.sort_by_key(|&code| code as i32);
    codes.dedup();
    Ok(codes)
}

fn max_attempts(value: &Value, path: &str) -> Parsed<u32> {
    let attempts = integer(value, path)?;
    if attempts < 2 {
        return fail(path, ServiceConfigErrorKind::TooSmall { min: 2, got: attempts });
    }
    // gRFC A6: "values greater than 5 are treated as 5 without being considered a validation error".
    Ok(u32::try_from(attempts).map_or(MAX_ATTEMPTS_CAP, |a| a.min(MAX_ATTEMPTS_CAP)))
}

fn retry_policy(value: &Value, path: &str) -> Parsed<RetryPolicy> {
    let policy = object(value, path)?;
    Ok(RetryPolicy {
        max_attempts: required(policy, path, "maxAttempts", max_attempts)?,
        initial_backoff: required(policy, path, "initialBackoff", positive_duration)?,
        max_backoff: required(policy, path, "maxBackoff", positive_duration)?,
        backoff_multiplier: required(policy, path, "backoffMultiplier", positive_number)?,
        retryable_status_codes: required(policy, path, "retryableStatusCodes", status_codes)?,
    })
}

fn max_tokens(value: &Value, path: &str) -> Parsed<u32> {
    let tokens = integer(value, path)?;
    let max = i64::from(MAX_THROTTLING_TOKENS);
    if tokens < 1 {
        return fail(path, ServiceConfigErrorKind::TooSmall { min: 1, got: tokens });
    }
    if tokens > max {
        return fail(path, ServiceConfigErrorKind::TooLarge { max, got: tokens });
    }
    Ok(u32::try_from(tokens).unwrap_or(MAX_THROTTLING_TOKENS))
}

/// gRFC A6: "tokenRatio ... up to 3 decimal places are supported".
fn token_ratio(value: &Value, path: &str) -> Parsed<f64> {
    let ratio = positive_number(value, path)?;
    let thousandths = (ratio * 1000.0).round();
    if (thousandths / 1000.0 - ratio).abs() > ratio * f64::EPSILON {
        return fail(path, ServiceConfigErrorKind::TooPrecise { max: 3, got: value.to_string() });
    }
    Ok(ratio)
}

fn retry_throttling(value: &Value, path: &str) -> Parsed<RetryThrottling> {
    let throttling = object(value, path)?;
    Ok(RetryThrottling {
        max_tokens: required(throttling, path, "maxTokens", max_tokens)?,
        token_ratio: required(throttling, path, "tokenRatio", token_ratio)?,
    })
}

fn health_check_config(value: &Value, path: &str) -> Parsed<HealthCheckConfig> {
    let health = object(value, path)?;
    let service_name = optional(health, path, "serviceName", string)?.unwrap_or_default();
    Ok(HealthCheckConfig::new(service_name))
}

fn method_config(entry: &Map<String, Value>, path: &str) -> Parsed<MethodConfig> {
    let timeout = optional(entry, path, "timeout", duration)?;
    let wait_for_ready = optional(entry, path, "waitForReady", boolean)?;
    if let Some((key, _)) = field(entry, "hedgingPolicy") {
        return if field(entry, "retryPolicy").is_some() {
            fail(path, ServiceConfigErrorKind::RetryAndHedging)
        } else {
            fail(&key_path(path, key), ServiceConfigErrorKind::Unsupported)
        };
    }
    let retry_policy = optional(entry, path, "retryPolicy", retry_policy)?;
    Ok(MethodConfig { timeout, wait_for_ready, retry_policy })
}

fn method_name(value: &Value, path: &str) -> Parsed<MethodName> {
    let name = object(value, path)?;
    let service = optional(name, path, "service", string)?.unwrap_or_default();
    let method = optional(name, path, "method", string)?.unwrap_or_default();
    // service_config.md: if `service` is empty, `method` must be empty too (the default entry).
    if service.is_empty() && !method.is_empty() {
        let method = method.to_owned();
        return fail(path, ServiceConfigErrorKind::MethodWithoutService { method });
    }
    Ok(MethodName { service: service.to_owned(), method: method.to_owned() })
}

fn method_table(value: &Value, path: &str) -> Parsed<MethodTable> {
    let mut table = MethodTable::default();
    let mut first_seen: BTreeMap<MethodName, String> = BTreeMap::new();
    for (i, item) in array(value, path)?.iter().enumerate() {
        let entry_path = index_path(path, i);
        let entry = object(item, &entry_path)?;
        let names = required(entry, &entry_path, "name", |names, names_path| {
            let mut parsed = Vec::new();
            for (j, name) in non_empty_array(names, names_path)?.iter().enumerate() {
                let name_path = index_path(names_path, j);
                let name = method_name(name, &name_path)?;
                if let Some(first) = first_seen.get(&name) {
                    let MethodName { service, method } = name;
                    let first = first.clone();
                    let kind = ServiceConfigErrorKind::DuplicateName { service, method, first };
                    return fail(&name_path, kind);
                }
                first_seen.insert(name.clone(), name_path);
                parsed.push(name);
            }
            Ok(parsed)
        })?;
        let config = method_config(entry, &entry_path)?;
        table.push(MethodEntry { names, config });
    }
    Ok(table)
}

fn load_balancing(top: &Map<String, Value>) -> Parsed<LoadBalancingConfig> {
    let chosen = optional(top, "", "loadBalancingConfig", policy_list)?;
    let legacy =
        optional(top, "", "loadBalancingPolicy", |v, p| Ok((string(v, p)?, p.to_owned())))?;
    match (chosen, legacy) {
        (Some(chosen), _) => Ok(chosen),
        (None, Some((name, path))) => known_policy(name, &Map::new(), &path)?.map_or_else(
            || fail(&path, ServiceConfigErrorKind::UnknownPolicy { name: name.to_owned() }),
            Ok,
        ),
        (None, None) => Ok(LoadBalancingConfig::default()),
    }
}

/// `loadBalancingConfig`: the first supported policy wins; unsupported ones are skipped.
fn policy_list(value: &Value, path: &str) -> Parsed<LoadBalancingConfig> {
    let mut chosen = None;
    let mut skipped = Vec::new();
    for (i, item) in array(value, path)?.iter().enumerate() {
        let entry_path = index_path(path, i);
        let entry = object(item, &entry_path)?;
        let mut keys = entry.iter();
        let (Some((name, config)), None) = (keys.next(), keys.next()) else {
            let kind = ServiceConfigErrorKind::PolicyEntryKeys { count: entry.len() };
            return fail(&entry_path, kind);
        };
        let config_path = key_path(&entry_path, name);
        let config = object(config, &config_path)?;
        if chosen.is_none() {
            chosen = known_policy(name, config, &config_path)?;
            if chosen.is_none() {
                skipped.push(name.clone());
            }
        }
    }
    chosen.map_or_else(
        || fail(path, ServiceConfigErrorKind::NoSupportedPolicy { names: skipped }),
        Ok,
    )
}

/// The policy called `name` with its validated `config`, or `None` when this client lacks it.
fn known_policy(
    name: &str,
    config: &Map<String, Value>,
    path: &str,
) -> Parsed<Option<LoadBalancingConfig>> {
    if name.eq_ignore_ascii_case("pick_first") {
        let shuffle = optional(config, path, "shuffleAddressList", boolean)?;
        let config = PickFirstConfig { shuffle_address_list: shuffle.unwrap_or(false) };
        Ok(Some(LoadBalancingConfig::PickFirst(config)))
    } else if name.eq_ignore_ascii_case("round_robin") {
        Ok(Some(LoadBalancingConfig::RoundRobin))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_protobuf_json_forms() {
        let cases = [
            ("0s", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.000001s", Duration::from_micros(1)),
            ("0.000000001s", Duration::from_nanos(1)),
            (".01s", Duration::from_millis(10)),
            ("1.s", Duration::from_secs(1)),
            ("007s", Duration::from_secs(7)),
            ("315576000000s", Duration::from_secs(MAX_DURATION_SECS)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?} is a valid duration");
        }
    }

    #[test]
    fn durations_reject_everything_else_with_a_reason() {
        let cases = [
            ("", DurationError::MissingUnit),
            ("5", DurationError::MissingUnit),
            ("5m", DurationError::MissingUnit),
            ("1.5S", DurationError::MissingUnit),
            ("s", DurationError::Malformed),
            (".s", DurationError::Malformed),
            ("+1s", DurationError::Malformed),
            (" 1s", DurationError::Malformed),
            ("1e3s", DurationError::Malformed),
            ("1.2.3s", DurationError::Malformed),
            ("١s", DurationError::Malformed),
            ("-1s", DurationError::Negative),
            ("-0s", DurationError::Negative),
            ("0.0000000001s", DurationError::TooPrecise),
            ("315576000000.000000001s", DurationError::OutOfRange),
            ("315576000001s", DurationError::OutOfRange),
            ("99999999999999999999999s", DurationError::OutOfRange),
        ];
        for (text, reason) in cases {
            assert_eq!(
                parse_duration(text),
                Err(reason),
                "{text:?} must be rejected as {reason:?}"
            );
        }
    }

    #[test]
    fn durations_format_in_canonical_protobuf_form_and_parse_back() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1.500s"),
            (Duration::from_micros(1), "0.000001s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "canonical form of {duration:?}");
            assert_eq!(parse_duration(text), Ok(duration), "{text:?} must parse back");
        }
    }

    #[test]
    fn field_lookup_prefers_the_exact_name_then_ignores_case_and_treats_null_as_absent() {
        let object =
            json!({"maxattempts": 1, "maxAttempts": 2, "Timeout": "1s", "waitForReady": null});
        let object = object.as_object().expect("literal is an object");
        assert_eq!(
            field(object, "maxAttempts"),
            Some(("maxAttempts", &json!(2))),
            "exact match wins"
        );
        assert_eq!(field(object, "timeout"), Some(("Timeout", &json!("1s"))), "case is ignored");
        assert_eq!(field(object, "waitForReady"), None, "null means absent");
    }

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

    #[test]
    fn every_status_code_number_maps_to_the_code_with_that_number() {
        for (number, (name, code)) in STATUS_CODES.iter().enumerate() {
            assert_eq!(*code as usize, number, "{name} must sit at index {number}");
            assert_eq!(code_name(*code), *name, "{code:?} must be named {name}");
        }
    }
}
