//! Walking the service-config JSON. Each function validates one value and knows its own JSON
//! path, so an error can say where it is.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tonic::Code;

use super::duration::parse_duration;
use super::method::{MethodEntry, MethodName, MethodTable};
use super::*;
use crate::balancer::registry::{self, PolicyConfigError};

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

pub(super) type Parsed<T> = Result<T, ServiceConfigError>;

fn fail<T>(path: &str, kind: ServiceConfigErrorKind) -> Parsed<T> {
    Err(ServiceConfigError { path: path.to_owned(), kind })
}

fn wrong_type<T>(path: &str, expected: Expected, value: &Value) -> Parsed<T> {
    fail(path, ServiceConfigErrorKind::WrongType { expected, found: JsonType::of(value) })
}

pub(super) fn invalid_json(error: &serde_json::Error) -> ServiceConfigError {
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

pub(super) fn optional<'v, T>(
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

pub(super) fn object<'v>(value: &'v Value, path: &str) -> Parsed<&'v Map<String, Value>> {
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

pub(super) fn code_name(code: Code) -> &'static str {
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

pub(super) fn retry_throttling(value: &Value, path: &str) -> Parsed<RetryThrottling> {
    let throttling = object(value, path)?;
    Ok(RetryThrottling {
        max_tokens: required(throttling, path, "maxTokens", max_tokens)?,
        token_ratio: required(throttling, path, "tokenRatio", token_ratio)?,
    })
}

pub(super) fn health_check_config(value: &Value, path: &str) -> Parsed<HealthCheckConfig> {
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

pub(super) fn method_table(value: &Value, path: &str) -> Parsed<MethodTable> {
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

pub(super) fn load_balancing(top: &Map<String, Value>) -> Parsed<LoadBalancingConfig> {
    let chosen = optional(top, "", "loadBalancingConfig", policy_list)?;
    let legacy =
        optional(top, "", "loadBalancingPolicy", |v, p| Ok((string(v, p)?, p.to_owned())))?;
    match (chosen, legacy) {
        (Some(chosen), _) => Ok(chosen),
        (None, Some((name, path))) => known_policy(name, &Map::new(), &path)?.map_or_else(
            || {
                let (name, supported) = (name.to_owned(), registry::registered_names());
                fail(&path, ServiceConfigErrorKind::UnknownPolicy { name, supported })
            },
            Ok,
        ),
        (None, None) => Ok(LoadBalancingConfig::default()),
    }
}

/// `loadBalancingConfig`: the first registered policy wins; unknown ones are skipped (gRFC A24).
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
        || {
            let supported = registry::registered_names();
            fail(path, ServiceConfigErrorKind::NoSupportedPolicy { names: skipped, supported })
        },
        Ok,
    )
}

/// The policy registered as `name` with its validated `config`, or `None` when no policy has
/// that name.
fn known_policy(
    name: &str,
    config: &Map<String, Value>,
    path: &str,
) -> Parsed<Option<LoadBalancingConfig>> {
    registry::parse(name, config, path).transpose()
}

/// `pick_first`'s config object (the registry's built-in entry parses with this).
pub(crate) fn pick_first_config(
    config: &Map<String, Value>,
    path: &str,
) -> Parsed<PickFirstConfig> {
    let shuffle = optional(config, path, "shuffleAddressList", boolean)?;
    Ok(PickFirstConfig { shuffle_address_list: shuffle.unwrap_or(false) })
}

/// A policy builder's rejection as a service-config error at the policy's config (`path`), or
/// at the field the builder named.
pub(crate) fn invalid_policy_config(
    policy: &str,
    path: &str,
    error: &PolicyConfigError,
) -> ServiceConfigError {
    let path = error.field().map_or_else(|| path.to_owned(), |field| key_path(path, field));
    let kind = ServiceConfigErrorKind::InvalidPolicyConfig {
        policy: policy.to_owned(),
        reason: error.reason().to_owned(),
    };
    ServiceConfigError { path, kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn every_status_code_number_maps_to_the_code_with_that_number() {
        for (number, (name, code)) in STATUS_CODES.iter().enumerate() {
            assert_eq!(*code as usize, number, "{name} must sit at index {number}");
            assert_eq!(code_name(*code), *name, "{code:?} must be named {name}");
        }
    }
}
