//! Why a service config is rejected: [`ServiceConfigError`] with its path and
//! [`ServiceConfigErrorKind`], and the vocabulary those use ([`Expected`], [`JsonType`],
//! [`DurationError`]).

use std::fmt;

use serde_json::Value;

/// A service config that cannot be used: where (a JSON path) and why.
///
/// Displays as `service config: methodConfig[1].retryPolicy.maxAttempts: must be at least 2 (got
/// 1)`; errors about the whole document omit the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service config: {}{kind}", path_prefix(.path))]
pub struct ServiceConfigError {
    pub(super) path: String,
    pub(super) kind: ServiceConfigErrorKind,
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
    /// `loadBalancingConfig` lists no registered policy (gRFC A24).
    #[error("lists no supported policy (got {names:?}; supported: {})", .supported.join(", "))]
    NoSupportedPolicy {
        /// The policy names listed, in order.
        names: Vec<String>,
        /// The registered policy names when the config was parsed
        /// ([`registered_names`](crate::balancer::registry::registered_names)).
        supported: Vec<String>,
    },
    /// `loadBalancingPolicy` names a policy that is not registered.
    #[error("unknown policy {name:?} (supported: {})", .supported.join(", "))]
    UnknownPolicy {
        /// The name given.
        name: String,
        /// The registered policy names when the config was parsed.
        supported: Vec<String>,
    },
    /// The chosen policy's builder rejected its config
    /// ([`PolicyBuilder::parse_config`](crate::balancer::registry::PolicyBuilder::parse_config)).
    #[error("invalid config for policy {policy:?}: {reason}")]
    InvalidPolicyConfig {
        /// The policy's registered name.
        policy: String,
        /// The builder's reason.
        reason: String,
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
    pub(super) fn of(value: &Value) -> Self {
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
