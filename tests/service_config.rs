//! gRPC service config parsing, as a channel sees it (DESIGN §2.6, gRPC's service_config.md, gRFC A6).

use std::time::Duration;

use anchorage::service_config::{
    DurationError, Expected, JsonType, LoadBalancingConfig, MethodConfig, RetryPolicy,
    ServiceConfig, ServiceConfigError, ServiceConfigErrorKind as Kind,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tonic::Code;

// ---- helpers ----

fn parse(json: &str) -> ServiceConfig {
    ServiceConfig::parse(json).unwrap_or_else(|e| panic!("{json} must parse, got: {e}"))
}

fn parse_err(json: &str) -> ServiceConfigError {
    match ServiceConfig::parse(json) {
        Ok(config) => panic!("{json} must be rejected, parsed as {config}"),
        Err(e) => e,
    }
}

fn policy_of(json: &str) -> LoadBalancingConfig {
    parse(json).load_balancing().clone()
}

fn pick_first(shuffle: bool) -> LoadBalancingConfig {
    let json = format!(
        r#"{{"loadBalancingConfig":[{{"pick_first":{{"shuffleAddressList":{shuffle}}}}}]}}"#
    );
    policy_of(&json)
}

/// A retry policy that passes validation.
fn valid_retry() -> Value {
    json!({
        "maxAttempts": 3,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]
    })
}

/// A config whose only method config (for service `s`) holds `retry`.
fn with_retry(retry: Value) -> String {
    json!({"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": retry}]}).to_string()
}

/// The valid retry policy with `key` set to `value`.
fn retry_with(key: &str, value: Value) -> String {
    let mut retry = valid_retry();
    retry[key] = value;
    with_retry(retry)
}

/// The valid retry policy without `key`.
fn retry_without(key: &str) -> String {
    let mut retry = valid_retry();
    retry.as_object_mut().expect("retry policy is an object").remove(key);
    with_retry(retry)
}

fn retry_policy(json: &str) -> RetryPolicy {
    let config = parse(json);
    let method = config.method_config("s", "m").expect("the config names service s");
    method.retry_policy.clone().expect("the method config has a retry policy")
}

/// A method config for service `s` with `field` set to `value`.
fn method_with(field: &str, value: Value) -> String {
    let mut entry = json!({"name": [{"service": "s"}]});
    entry[field] = value;
    json!({ "methodConfig": [entry] }).to_string()
}

fn timeout_of(text: &str) -> Option<Duration> {
    let config = parse(&method_with("timeout", json!(text)));
    config.method_config("s", "m").and_then(|m| m.timeout)
}

// ---- load-balancing choice ----

#[test]
fn an_empty_config_chooses_pick_first_like_no_config_at_all() {
    assert_eq!(policy_of("{}"), LoadBalancingConfig::default(), "{{}} must mean pick_first");
    assert_eq!(policy_of("{}"), pick_first(false), "pick_first must not shuffle by default");
    assert_eq!(parse("{}"), ServiceConfig::default(), "{{}} must equal the default config");
    assert_eq!(ServiceConfig::default().load_balancing().name(), "pick_first");
    assert_eq!(
        ServiceConfig::default().method_config("any.Service", "Any"),
        None,
        "no config must set no method config"
    );
}

#[test]
fn load_balancing_config_chooses_round_robin_as_a_grpc_go_user_writes_it() {
    let policy = policy_of(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);
    assert_eq!(policy, LoadBalancingConfig::RoundRobin, "round_robin must be chosen");
}

#[test]
fn load_balancing_config_beats_the_deprecated_load_balancing_policy() {
    let json = r#"{"loadBalancingPolicy":"round_robin","loadBalancingConfig":[{"pick_first":{}}]}"#;
    assert_eq!(policy_of(json), pick_first(false), "loadBalancingConfig must win");
    let json =
        r#"{"loadBalancingPolicy":"no_such_policy","loadBalancingConfig":[{"round_robin":{}}]}"#;
    assert_eq!(
        policy_of(json),
        LoadBalancingConfig::RoundRobin,
        "an unused loadBalancingPolicy name must not be looked at"
    );
}

#[test]
fn the_first_known_policy_wins_and_unknown_ones_are_skipped() {
    let json = r#"{"loadBalancingConfig":[
        {"grpclb":{"childPolicy":[]}},
        {"round_robin":{}},
        {"pick_first":{}},
        {"weighted_round_robin":{}}
    ]}"#;
    assert_eq!(policy_of(json), LoadBalancingConfig::RoundRobin, "round_robin is first known");
    let json = r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}},{"round_robin":{}}]}"#;
    assert_eq!(policy_of(json), pick_first(true), "pick_first is first known, with its config");
}

#[test]
fn the_deprecated_load_balancing_policy_is_read_ignoring_case() {
    for name in ["round_robin", "ROUND_ROBIN", "Round_Robin"] {
        let json = format!(r#"{{"loadBalancingPolicy":"{name}"}}"#);
        assert_eq!(policy_of(&json), LoadBalancingConfig::RoundRobin, "{name} is round_robin");
    }
    assert_eq!(policy_of(r#"{"loadBalancingPolicy":"PICK_FIRST"}"#), pick_first(false));
}

#[test]
fn policy_names_in_load_balancing_config_are_matched_ignoring_case_as_grpc_go_does() {
    let json = r#"{"loadBalancingConfig":[{"Round_Robin":{}}]}"#;
    assert_eq!(policy_of(json), LoadBalancingConfig::RoundRobin, "Round_Robin is round_robin");
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let json = r#"{
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        "healthCheckConfig": {"serviceName": "x"},
        "someFutureField": [1, 2, 3],
        "loadBalancingConfig": [{"round_robin": {"someFutureKnob": 7}}],
        "methodConfig": [{"name": [{"service": "s", "futureNameField": 1}], "maxRequestMessageBytes": 1024}]
    }"#;
    let config = parse(json);
    assert_eq!(config.load_balancing(), &LoadBalancingConfig::RoundRobin);
    assert_eq!(config.method_config("s", "m"), Some(&MethodConfig::default()));
}

#[test]
fn null_fields_count_as_absent() {
    let json = r#"{"loadBalancingConfig":null,"loadBalancingPolicy":null,"methodConfig":null}"#;
    assert_eq!(parse(json), ServiceConfig::default(), "null must mean absent");
}

// ---- method configs ----

#[test]
fn method_lookup_prefers_the_method_then_the_service_then_the_default() {
    let config = parse(
        r#"{"methodConfig":[
            {"name":[{}], "timeout":"1s"},
            {"name":[{"service":"pkg.Svc"}], "timeout":"2s"},
            {"name":[{"service":"pkg.Svc","method":"Exact"},{"service":"other.Svc","method":"Too"}], "timeout":"3s"}
        ]}"#,
    );
    let timeout = |service, method| config.method_config(service, method).and_then(|m| m.timeout);
    assert_eq!(timeout("pkg.Svc", "Exact"), Some(Duration::from_secs(3)), "exact name first");
    assert_eq!(timeout("other.Svc", "Too"), Some(Duration::from_secs(3)), "any listed name");
    assert_eq!(timeout("pkg.Svc", "Other"), Some(Duration::from_secs(2)), "service next");
    assert_eq!(timeout("other.Svc", "Other"), Some(Duration::from_secs(1)), "default last");
    assert_eq!(timeout("unknown.Svc", "Exact"), Some(Duration::from_secs(1)), "default last");
}

#[test]
fn method_lookup_finds_nothing_without_a_default_entry() {
    let config = parse(
        r#"{"methodConfig":[{"name":[{"service":"pkg.Svc","method":"M"}],"waitForReady":true}]}"#,
    );
    let method = config.method_config("pkg.Svc", "M").expect("named method must be found");
    assert_eq!(method.wait_for_ready, Some(true));
    assert_eq!(method.timeout, None, "unset timeout stays unset");
    assert_eq!(config.method_config("pkg.Svc", "N"), None, "other methods have no config");
    assert_eq!(config.method_config("", ""), None, "there is no default entry");
}

#[test]
fn an_empty_service_or_method_string_means_the_field_is_absent() {
    let config = parse(
        r#"{"methodConfig":[
            {"name":[{"service":"","method":""}], "timeout":"1s"},
            {"name":[{"service":"pkg.Svc","method":""}], "timeout":"2s"}
        ]}"#,
    );
    let timeout = |service, method| config.method_config(service, method).and_then(|m| m.timeout);
    assert_eq!(timeout("x", "y"), Some(Duration::from_secs(1)), "empty service is the default");
    assert_eq!(
        timeout("pkg.Svc", "y"),
        Some(Duration::from_secs(2)),
        "empty method is the service"
    );
}

#[test]
fn timeouts_parse_as_protobuf_json_durations() {
    let cases = [
        ("1.5s", Duration::from_millis(1500)),
        ("0.000001s", Duration::from_micros(1)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("0s", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        (".01s", Duration::from_millis(10)),
        ("315576000000s", Duration::from_secs(315_576_000_000)),
    ];
    for (text, expected) in cases {
        assert_eq!(timeout_of(text), Some(expected), "timeout {text:?}");
    }
}

#[test]
fn max_attempts_above_five_are_capped_not_rejected() {
    let cases = [
        (json!(2), 2),
        (json!(5), 5),
        (json!(6), 5),
        (json!(100), 5),
        (json!(3.0), 3),
        (json!(u64::MAX), 5),
        (json!(1e300), 5),
    ];
    for (value, expected) in cases {
        let policy = retry_policy(&retry_with("maxAttempts", value.clone()));
        assert_eq!(policy.max_attempts, expected, "maxAttempts {value} must become {expected}");
    }
}

#[test]
fn retryable_status_codes_are_names_or_numbers_sorted_and_deduplicated() {
    let codes = json!(["UNAVAILABLE", 4, "resource_exhausted", 14, "Aborted", 0]);
    let policy = retry_policy(&retry_with("retryableStatusCodes", codes));
    assert_eq!(
        policy.retryable_status_codes,
        vec![
            Code::Ok,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unavailable
        ],
        "codes must be read by name (any case) or number, sorted by number, without duplicates"
    );
    assert!(policy.is_retryable(Code::Unavailable), "UNAVAILABLE was listed");
    assert!(!policy.is_retryable(Code::Internal), "INTERNAL was not listed");
}

#[test]
fn every_grpc_status_code_is_accepted_by_number_and_by_its_canonical_name() {
    for number in 0..=16 {
        let config = parse(&retry_with("retryableStatusCodes", json!([number])));
        let code = retry_policy(&config.to_string()).retryable_status_codes[0];
        assert_eq!(code as i32, number, "code {number} must map to itself");
        let canonical = serde_json::to_value(&config).expect("a config always serializes");
        let name = &canonical["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"][0];
        assert!(name.is_string(), "the canonical form names code {number}, got {name}");
        let by_name = retry_policy(&retry_with("retryableStatusCodes", json!([name])));
        assert_eq!(
            by_name.retryable_status_codes,
            vec![code],
            "{name} must parse back to {code:?}"
        );
    }
}

#[test]
fn retry_policy_fields_are_read_as_written() {
    let policy = retry_policy(&with_retry(valid_retry()));
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.initial_backoff, Duration::from_millis(100));
    assert_eq!(policy.max_backoff, Duration::from_secs(1));
    assert_eq!(policy.backoff_multiplier, 2.0);
    assert_eq!(policy.retryable_status_codes, vec![Code::Unavailable]);
}

#[test]
fn grpc_gos_own_retry_example_parses() {
    // grpc-go's examples/features/retry capitalizes the field names and writes ".01s"; Go's
    // encoding/json matches field names ignoring case.
    let json = r#"{
        "methodConfig": [{
            "name": [{"service": "grpc.examples.echo.Echo"}],
            "waitForReady": true,
            "retryPolicy": {
                "MaxAttempts": 4,
                "InitialBackoff": ".01s",
                "MaxBackoff": ".01s",
                "BackoffMultiplier": 1.0,
                "RetryableStatusCodes": [ "UNAVAILABLE" ]
            }
        }]
    }"#;
    let config = parse(json);
    let method =
        config.method_config("grpc.examples.echo.Echo", "UnaryEcho").expect("service entry");
    let retry = method.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.initial_backoff, Duration::from_millis(10));
    assert_eq!(method.wait_for_ready, Some(true));
}

// ---- backoff (gRFC A6: random(0, min(initialBackoff*backoffMultiplier^(n-1), maxBackoff))) ----

fn backoff_policy() -> RetryPolicy {
    retry_policy(&with_retry(json!({
        "maxAttempts": 5,
        "initialBackoff": "1s",
        "maxBackoff": "10s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]
    })))
}

#[test]
fn backoff_grows_by_the_multiplier_up_to_max_backoff_scaled_by_jitter() {
    let policy = backoff_policy();
    let cases = [
        (1, 0.5, Duration::from_millis(500)),
        (2, 0.5, Duration::from_secs(1)),
        (3, 0.5, Duration::from_secs(2)),
        (4, 0.25, Duration::from_secs(2)),
        (5, 0.5, Duration::from_secs(5)),
        (50, 0.5, Duration::from_secs(5)),
        (1, 0.0, Duration::ZERO),
        (3, 0.75, Duration::from_secs(3)),
    ];
    for (retry, jitter, expected) in cases {
        assert_eq!(policy.backoff(retry, jitter), expected, "retry {retry} with jitter {jitter}");
    }
}

#[test]
fn backoff_treats_retry_zero_as_the_first_retry() {
    let policy = backoff_policy();
    assert_eq!(policy.backoff(0, 0.5), policy.backoff(1, 0.5), "retry 0 must read as retry 1");
}

#[test]
fn backoff_clamps_jitter_outside_the_unit_interval() {
    let policy = backoff_policy();
    assert_eq!(policy.backoff(1, -1.0), Duration::ZERO, "negative jitter counts as 0");
    assert_eq!(policy.backoff(1, f64::NAN), Duration::ZERO, "NaN jitter counts as 0");
    assert_eq!(policy.backoff(1, 7.0), Duration::from_secs(1), "jitter above 1 counts as 1");
    assert_eq!(policy.backoff(u32::MAX, f64::INFINITY), Duration::from_secs(10), "capped at max");
}

#[test]
fn backoff_with_an_initial_backoff_above_the_max_is_capped_from_the_first_retry() {
    let json = retry_with("initialBackoff", json!("60s"));
    let policy = retry_policy(&json);
    assert_eq!(policy.backoff(1, 0.5), Duration::from_millis(500), "min(60s, 1s) * 0.5");
}

// ---- invalid configs: each names the field's JSON path and the reason ----

/// The policies every process has registered: no test in this file registers others.
fn built_ins() -> Vec<String> {
    vec!["pick_first".to_owned(), "round_robin".to_owned()]
}

/// Invalid configs with the path and reason each must report.
fn invalid_cases() -> Vec<(String, &'static str, Kind)> {
    use Kind::*;
    let wrong = |expected, found| WrongType { expected, found };
    let method = |field: &str, value: Value| method_with(field, value);
    let lb = |list: Value| json!({ "loadBalancingConfig": list }).to_string();
    let names = |list: Value| json!({"methodConfig": [{"name": list}]}).to_string();
    let s = |text: &str| text.to_owned();
    vec![
        (s("[]"), "", wrong(Expected::Object, JsonType::Array)),
        (s("null"), "", wrong(Expected::Object, JsonType::Null)),
        (lb(json!({"round_robin": {}})), "loadBalancingConfig", wrong(Expected::Array, JsonType::Object)),
        (lb(json!([])), "loadBalancingConfig", NoSupportedPolicy { names: vec![], supported: built_ins() }),
        (
            lb(json!([{"grpclb": {}}, {"xds": {}}])),
            "loadBalancingConfig",
            NoSupportedPolicy { names: vec![s("grpclb"), s("xds")], supported: built_ins() },
        ),
        (lb(json!(["round_robin"])), "loadBalancingConfig[0]", wrong(Expected::Object, JsonType::String)),
        (
            lb(json!([{"round_robin": {}, "pick_first": {}}])),
            "loadBalancingConfig[0]",
            PolicyEntryKeys { count: 2 },
        ),
        (lb(json!([{}])), "loadBalancingConfig[0]", PolicyEntryKeys { count: 0 }),
        (
            lb(json!([{"round_robin": {}}, {"a": {}, "b": {}}])),
            "loadBalancingConfig[1]",
            PolicyEntryKeys { count: 2 },
        ),
        (
            lb(json!([{"round_robin": []}])),
            "loadBalancingConfig[0].round_robin",
            wrong(Expected::Object, JsonType::Array),
        ),
        (
            lb(json!([{"pick_first": {"shuffleAddressList": "yes"}}])),
            "loadBalancingConfig[0].pick_first.shuffleAddressList",
            wrong(Expected::Boolean, JsonType::String),
        ),
        (
            s(r#"{"loadBalancingPolicy":"least_request"}"#),
            "loadBalancingPolicy",
            UnknownPolicy { name: s("least_request"), supported: built_ins() },
        ),
        (
            s(r#"{"loadBalancingPolicy":1,"loadBalancingConfig":[{"round_robin":{}}]}"#),
            "loadBalancingPolicy",
            wrong(Expected::String, JsonType::Number),
        ),
        (s(r#"{"methodConfig":{}}"#), "methodConfig", wrong(Expected::Array, JsonType::Object)),
        (s(r#"{"methodConfig":[[]]}"#), "methodConfig[0]", wrong(Expected::Object, JsonType::Array)),
        (s(r#"{"methodConfig":[{"timeout":"1s"}]}"#), "methodConfig[0].name", Missing),
        (names(json!([])), "methodConfig[0].name", Empty),
        (names(json!({"service": "s"})), "methodConfig[0].name", wrong(Expected::Array, JsonType::Object)),
        (
            names(json!([{"service": 7}])),
            "methodConfig[0].name[0].service",
            wrong(Expected::String, JsonType::Number),
        ),
        (
            names(json!([{"method": "M"}])),
            "methodConfig[0].name[0]",
            MethodWithoutService { method: s("M") },
        ),
        (
            names(json!([{"service": "", "method": "M"}])),
            "methodConfig[0].name[0]",
            MethodWithoutService { method: s("M") },
        ),
        (
            s(r#"{"methodConfig":[{"name":[{"service":"s","method":"m"}]},{"name":[{"service":"t"},{"service":"s","method":"m"}]}]}"#),
            "methodConfig[1].name[1]",
            DuplicateName { service: s("s"), method: s("m"), first: s("methodConfig[0].name[0]") },
        ),
        (
            s(r#"{"methodConfig":[{"name":[{}]},{"name":[{"service":""}]}]}"#),
            "methodConfig[1].name[0]",
            DuplicateName { service: s(""), method: s(""), first: s("methodConfig[0].name[0]") },
        ),
        (
            names(json!([{"service": "s"}, {"service": "s", "method": ""}])),
            "methodConfig[0].name[1]",
            DuplicateName { service: s("s"), method: s(""), first: s("methodConfig[0].name[0]") },
        ),
        (method("timeout", json!(5)), "methodConfig[0].timeout", wrong(Expected::Duration, JsonType::Number)),
        (
            method("timeout", json!("5")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("5"), reason: DurationError::MissingUnit },
        ),
        (
            method("timeout", json!("1m")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("1m"), reason: DurationError::MissingUnit },
        ),
        (
            method("timeout", json!("-1s")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("-1s"), reason: DurationError::Negative },
        ),
        (
            method("timeout", json!("1.0000000001s")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("1.0000000001s"), reason: DurationError::TooPrecise },
        ),
        (
            method("timeout", json!("1,5s")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("1,5s"), reason: DurationError::Malformed },
        ),
        (
            method("timeout", json!("315576000001s")),
            "methodConfig[0].timeout",
            InvalidDuration { value: s("315576000001s"), reason: DurationError::OutOfRange },
        ),
        (
            method("waitForReady", json!("true")),
            "methodConfig[0].waitForReady",
            wrong(Expected::Boolean, JsonType::String),
        ),
        (
            method("retryPolicy", json!([])),
            "methodConfig[0].retryPolicy",
            wrong(Expected::Object, JsonType::Array),
        ),
        (
            s(r#"{"methodConfig":[{"name":[{"service":"a"}]},{"name":[{"service":"b"}],"retryPolicy":{"maxAttempts":1}}]}"#),
            "methodConfig[1].retryPolicy.maxAttempts",
            TooSmall { min: 2, got: 1 },
        ),
        (
            retry_with("maxAttempts", json!(-3)),
            "methodConfig[0].retryPolicy.maxAttempts",
            TooSmall { min: 2, got: -3 },
        ),
        (
            retry_with("maxAttempts", json!(2.5)),
            "methodConfig[0].retryPolicy.maxAttempts",
            NotAnInteger { got: s("2.5") },
        ),
        (
            retry_with("maxAttempts", json!("3")),
            "methodConfig[0].retryPolicy.maxAttempts",
            wrong(Expected::Integer, JsonType::String),
        ),
        (retry_without("maxAttempts"), "methodConfig[0].retryPolicy.maxAttempts", Missing),
        (retry_without("initialBackoff"), "methodConfig[0].retryPolicy.initialBackoff", Missing),
        (retry_without("maxBackoff"), "methodConfig[0].retryPolicy.maxBackoff", Missing),
        (retry_without("backoffMultiplier"), "methodConfig[0].retryPolicy.backoffMultiplier", Missing),
        (
            retry_without("retryableStatusCodes"),
            "methodConfig[0].retryPolicy.retryableStatusCodes",
            Missing,
        ),
        (
            retry_with("initialBackoff", json!("0s")),
            "methodConfig[0].retryPolicy.initialBackoff",
            NotPositive { got: s(r#""0s""#) },
        ),
        (
            retry_with("maxBackoff", json!("0.000s")),
            "methodConfig[0].retryPolicy.maxBackoff",
            NotPositive { got: s(r#""0.000s""#) },
        ),
        (
            retry_with("maxBackoff", json!(1)),
            "methodConfig[0].retryPolicy.maxBackoff",
            wrong(Expected::Duration, JsonType::Number),
        ),
        (
            retry_with("backoffMultiplier", json!(0)),
            "methodConfig[0].retryPolicy.backoffMultiplier",
            NotPositive { got: s("0") },
        ),
        (
            retry_with("backoffMultiplier", json!(-1.5)),
            "methodConfig[0].retryPolicy.backoffMultiplier",
            NotPositive { got: s("-1.5") },
        ),
        (
            retry_with("backoffMultiplier", json!("2")),
            "methodConfig[0].retryPolicy.backoffMultiplier",
            wrong(Expected::Number, JsonType::String),
        ),
        (retry_with("retryableStatusCodes", json!([])), "methodConfig[0].retryPolicy.retryableStatusCodes", Empty),
        (
            retry_with("retryableStatusCodes", json!("UNAVAILABLE")),
            "methodConfig[0].retryPolicy.retryableStatusCodes",
            wrong(Expected::Array, JsonType::String),
        ),
        (
            retry_with("retryableStatusCodes", json!(["UNAVAILABLE", "NOPE"])),
            "methodConfig[0].retryPolicy.retryableStatusCodes[1]",
            UnknownStatusCode { got: s(r#""NOPE""#) },
        ),
        (
            retry_with("retryableStatusCodes", json!([17])),
            "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
            UnknownStatusCode { got: s("17") },
        ),
        (
            retry_with("retryableStatusCodes", json!([-1])),
            "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
            UnknownStatusCode { got: s("-1") },
        ),
        (
            retry_with("retryableStatusCodes", json!(["14"])),
            "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
            UnknownStatusCode { got: s(r#""14""#) },
        ),
        (
            retry_with("retryableStatusCodes", json!([true])),
            "methodConfig[0].retryPolicy.retryableStatusCodes[0]",
            wrong(Expected::StatusCode, JsonType::Boolean),
        ),
        (
            json!({"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": valid_retry(), "hedgingPolicy": {}}]})
                .to_string(),
            "methodConfig[0]",
            RetryAndHedging,
        ),
        (
            method("hedgingPolicy", json!({"maxAttempts": 3, "hedgingDelay": "0.5s"})),
            "methodConfig[0].hedgingPolicy",
            Unsupported,
        ),
        (
            s(r#"{"MethodConfig":[{"Name":[{"Service":"s"}],"RetryPolicy":{"MaxAttempts":0}}]}"#),
            "MethodConfig[0].RetryPolicy.MaxAttempts",
            TooSmall { min: 2, got: 0 },
        ),
    ]
}

#[test]
fn invalid_configs_are_rejected_naming_the_field_path_and_the_reason() {
    for (input, path, kind) in invalid_cases() {
        let error = parse_err(&input);
        assert_eq!(error.path(), path, "the error for {input} must name the bad field");
        assert_eq!(error.kind(), &kind, "the error for {input} must give the reason");
        let message = error.to_string();
        let located = if path.is_empty() { String::new() } else { format!("{path}: ") };
        assert_eq!(message, format!("service config: {located}{kind}"), "message for {input}");
    }
}

#[test]
fn invalid_config_messages_read_well() {
    let table: String = invalid_cases()
        .iter()
        .map(|(input, _, _)| format!("{input}\n  => {}\n", parse_err(input)))
        .collect();
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("service_config_invalid_messages", table);
    });
}

#[test]
fn the_documented_max_attempts_message_reads_exactly() {
    let json = r#"{"methodConfig":[{"name":[{}]},{"name":[{"service":"s"}],"retryPolicy":{"maxAttempts":1}}]}"#;
    assert_eq!(
        parse_err(json).to_string(),
        "service config: methodConfig[1].retryPolicy.maxAttempts: must be at least 2 (got 1)",
    );
}

#[test]
fn invalid_json_is_reported_with_serde_jsons_line_and_column() {
    let error = parse_err("{\n  \"methodConfig\": [,]\n}");
    assert_eq!(error.path(), "", "a syntax error belongs to the whole document");
    let Kind::InvalidJson { line, column, message } = error.kind() else {
        panic!("a syntax error must be InvalidJson, got {error:?}");
    };
    assert_eq!((*line, *column), (2, 20), "the position of the stray comma");
    assert!(!message.contains("line"), "the position must not be repeated in {message:?}");
    assert_eq!(
        error.to_string(),
        format!("service config: invalid JSON at line 2 column 20: {message}"),
        "the message must lead with the position"
    );
    assert!(
        matches!(parse_err("").kind(), Kind::InvalidJson { .. }),
        "an empty string is not a config"
    );
}

// ---- canonical form ----

const RICH: &str = r#"{
    "loadBalancingPolicy": "pick_first",
    "loadBalancingConfig": [{"unknown": {}}, {"round_robin": {"x": 1}}],
    "methodConfig": [
        {"name": [{}], "timeout": "0.5s"},
        {"name": [{"service": "pkg.Svc"}, {"service": "pkg.Svc", "method": "M"}], "waitForReady": false},
        {"name": [{"service": "other.Svc"}], "timeout": "0.000001s", "retryPolicy": {
            "maxAttempts": 9, "initialBackoff": "0.1s", "maxBackoff": "2s",
            "backoffMultiplier": 1.6, "retryableStatusCodes": [14, "ABORTED", "UNAVAILABLE"]}}
    ]
}"#;

#[test]
fn the_canonical_form_parses_back_to_the_same_config() {
    let config = parse(RICH);
    assert_eq!(parse(&config.to_string()), config, "Display must round-trip");
    let serialized = serde_json::to_string(&config).expect("a config always serializes");
    assert_eq!(serialized, config.to_string(), "Serialize and Display give the same JSON");
}

#[test]
fn the_canonical_form_reads_well() {
    let config = parse(RICH);
    let value = serde_json::to_value(&config).expect("a config always serializes");
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_json_snapshot!("service_config_canonical_form", value);
    });
}

// ---- never panic ----

const KEYS: &[&str] = &[
    "loadBalancingConfig",
    "loadBalancingPolicy",
    "methodConfig",
    "name",
    "service",
    "method",
    "timeout",
    "waitForReady",
    "retryPolicy",
    "hedgingPolicy",
    "maxAttempts",
    "initialBackoff",
    "maxBackoff",
    "backoffMultiplier",
    "retryableStatusCodes",
    "pick_first",
    "round_robin",
    "shuffleAddressList",
    "MAXATTEMPTS",
    "",
];

const STRINGS: &[&str] = &[
    "",
    "s",
    "1s",
    "0s",
    "-1s",
    ".5s",
    "1.s",
    "1.0000000001s",
    "999999999999999999999s",
    "UNAVAILABLE",
    "unavailable",
    "round_robin",
    "ROUND_ROBIN",
    "pick_first",
    "pkg.Svc",
    "M",
    "١s",
    "\u{0}",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-20i64..20).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let key =
            prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => ".{0,8}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = ServiceConfig::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_json_and_accepted_configs_round_trip(value in json_value()) {
        let text = value.to_string();
        if let Ok(config) = ServiceConfig::parse(&text) {
            let again = ServiceConfig::parse(&config.to_string());
            prop_assert_eq!(again, Ok(config), "an accepted config must round-trip through its canonical form");
        }
    }

    #[test]
    fn parse_never_panics_on_near_valid_retry_policies(
        key in prop::sample::select(&KEYS[10..15]),
        replacement in json_value(),
    ) {
        let _ = ServiceConfig::parse(&retry_with(key, replacement));
    }

    #[test]
    fn backoff_never_exceeds_max_backoff(
        initial_ms in 1u64..100_000,
        max_ms in 1u64..100_000,
        multiplier in 0.001f64..100.0,
        retry in any::<u32>(),
        jitter in any::<f64>(),
    ) {
        let policy = retry_policy(&with_retry(json!({
            "maxAttempts": 2,
            "initialBackoff": format!("{}.{:03}s", initial_ms / 1000, initial_ms % 1000),
            "maxBackoff": format!("{}.{:03}s", max_ms / 1000, max_ms % 1000),
            "backoffMultiplier": multiplier,
            "retryableStatusCodes": [14],
        })));
        prop_assert!(policy.backoff(retry, jitter) <= policy.max_backoff, "backoff is capped at maxBackoff");
    }
}

// ---- retryThrottling (gRFC A6) ----

fn throttling(value: Value) -> String {
    json!({ "retryThrottling": value }).to_string()
}

/// Regression: `retryThrottling` was ignored like an unknown field, so retries were never
/// throttled.
#[test]
fn retry_throttling_is_read_with_its_max_tokens_and_token_ratio() {
    let config = parse(&throttling(json!({"maxTokens": 10, "tokenRatio": 0.1})));
    let read = config.retry_throttling().expect("retryThrottling must be read, not ignored");
    assert_eq!((read.max_tokens, read.token_ratio), (10, 0.1));
    assert_eq!(parse(&config.to_string()), config, "the canonical form must parse back");
    assert_eq!(parse("{}").retry_throttling(), None, "no retryThrottling means no throttling");
    for (tokens, ratio) in [(1, 0.001), (1000, 1000.5), (3, 2.0)] {
        let config = parse(&throttling(json!({"maxTokens": tokens, "tokenRatio": ratio})));
        assert!(config.retry_throttling().is_some(), "{tokens}/{ratio} is within gRFC A6's limits");
    }
}

#[test]
fn invalid_retry_throttling_is_rejected_naming_the_field_and_the_reason() {
    use Kind::*;
    let wrong = |expected, found| WrongType { expected, found };
    let (top, tokens, ratio) =
        ("retryThrottling", "retryThrottling.maxTokens", "retryThrottling.tokenRatio");
    let cases = [
        (json!([]), top, wrong(Expected::Object, JsonType::Array)),
        (json!({"tokenRatio": 1}), tokens, Missing),
        (json!({"maxTokens": 10}), ratio, Missing),
        (json!({"maxTokens": 0, "tokenRatio": 1}), tokens, TooSmall { min: 1, got: 0 }),
        (json!({"maxTokens": 1001, "tokenRatio": 1}), tokens, TooLarge { max: 1000, got: 1001 }),
        (json!({"maxTokens": 1.5, "tokenRatio": 1}), tokens, NotAnInteger { got: "1.5".into() }),
        (json!({"maxTokens": 10, "tokenRatio": 0}), ratio, NotPositive { got: "0".into() }),
        (json!({"maxTokens": 10, "tokenRatio": -0.5}), ratio, NotPositive { got: "-0.5".into() }),
        (
            json!({"maxTokens": 10, "tokenRatio": 0.1234}),
            ratio,
            TooPrecise { max: 3, got: "0.1234".into() },
        ),
        (
            json!({"maxTokens": 10, "tokenRatio": "0.1"}),
            ratio,
            wrong(Expected::Number, JsonType::String),
        ),
    ];
    for (value, path, kind) in cases {
        let error = parse_err(&throttling(value.clone()));
        assert_eq!(error.path(), path, "the error for {value} must name the bad field");
        assert_eq!(error.kind(), &kind, "the error for {value} must give the reason");
    }
    assert_eq!(
        parse_err(&throttling(json!({"maxTokens": 1001, "tokenRatio": 1}))).to_string(),
        "service config: retryThrottling.maxTokens: must be at most 1000 (got 1001)",
    );
}
