//! Keys and values of etcd's Go `naming/endpoints` package (DESIGN §2.7).
//!
//! A server of service `S` at address `A` is announced by the key `S/A` with the JSON value
//! `{"Op":0,"Addr":"A","Metadata":null}` — byte for byte what Go's `endpoints.Manager`
//! writes — usually under a lease so the key vanishes when the server dies. Discovery reads every
//! key with the prefix `S/` (the trailing slash is part of the prefix, so service `foo` never
//! sees `foobar/…`) and watches the same prefix.
//!
//! # Decoding
//! Values are decoded as Go's `encoding/json` decodes them into the package's update struct:
//! - field names match exactly or else case-insensitively (`"addr"` is `"Addr"`); unknown fields
//!   are ignored; `null` leaves a field at its zero value;
//! - `Op` is 0 (add; also when absent) or 1 (delete); `Metadata` may be any JSON value;
//! - anything after the JSON object other than whitespace is an error.
//!
//! Where Go would accept a value that cannot be used, we refuse it ([`ValueError`]): an
//! `Addr` that is missing, empty or not a string, or an `Op` other than 0 and 1. A key whose
//! value says `Op: 1` contributes no address, like a deleted key. (Go's current reader ignores
//! `Op` in stored values; its older `grpcproxy` naming wrote and read it. Writing `Op: 1`
//! is rare; treating it as "gone" is the reading that cannot route traffic to a server that
//! announced its own removal.)

use serde::Serialize;
use serde_json::{Map, Value};

/// What one key under a service announces.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointUpdate {
    /// `Op` 0: a server at `addr`.
    Add {
        /// The address to connect to.
        addr: String,
        /// The `Metadata` field, any JSON (`null` when absent).
        metadata: Value,
    },
    /// `Op` 1: the key announces no server.
    Delete,
}

/// Why a value under a service prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a single JSON document.
    #[error("etcd endpoint value: not JSON: {reason}")]
    NotJson {
        /// The parser's message.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("etcd endpoint value: not a JSON object")]
    NotObject,
    /// `Op` is not 0 or 1.
    #[error("etcd endpoint value: \"Op\" must be 0 (add) or 1 (delete), found {found}")]
    BadOp {
        /// The JSON found.
        found: String,
    },
    /// No usable `Addr`.
    #[error("etcd endpoint value: \"Addr\" {reason}")]
    BadAddr {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The prefix every key of `service` starts with: `service/`.
pub fn service_prefix(service: &str) -> String {
    format!("{service}/")
}

/// The key that announces `addr` under `service`: `service/addr`.
pub fn endpoint_key(service: &str, addr: &str) -> String {
    format!("{service}/{addr}")
}

/// The `range_end` that makes an etcd range or watch cover every key starting with `prefix`:
/// `prefix` with its last byte below `0xff` incremented and the rest dropped; `"\0"` (every
/// key) when there is no such byte, as etcd's own clients compute it.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The value announcing `addr` with `metadata`, as Go's `endpoints.Manager` writes it:
/// `{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}`.
pub fn encode_endpoint(addr: &str, metadata: &Value) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Update<'a> {
        op: u8,
        addr: &'a str,
        metadata: &'a Value,
    }
    // Serialising a struct of a number, a string and a `Value` cannot fail.
    serde_json::to_vec(&Update { op: 0, addr, metadata }).unwrap_or_default()
}

/// Decodes a value found under a service prefix (see the [module docs](self)).
///
/// # Errors
/// [`ValueError`] when the value is not a JSON object, has an `Op` other than 0 or 1, or an add
/// has no non-empty string `Addr` free of whitespace and control characters.
pub fn decode_endpoint(value: &[u8]) -> Result<EndpointUpdate, ValueError> {
    let json: Value = serde_json::from_slice(value)
        .map_err(|err| ValueError::NotJson { reason: err.to_string() })?;
    let Value::Object(object) = json else {
        return Err(ValueError::NotObject);
    };
    let op = match field(&object, "Op") {
        None | Some(Value::Null) => 0,
        Some(value) => match value.as_u64() {
            Some(op @ (0 | 1)) => op,
            _ => return Err(ValueError::BadOp { found: value.to_string() }),
        },
    };
    if op == 1 {
        return Ok(EndpointUpdate::Delete);
    }
    let addr = match field(&object, "Addr") {
        None | Some(Value::Null) => return Err(ValueError::BadAddr { reason: "is missing" }),
        Some(Value::String(addr)) => addr,
        Some(_) => return Err(ValueError::BadAddr { reason: "is not a string" }),
    };
    if addr.is_empty() {
        return Err(ValueError::BadAddr { reason: "is empty" });
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValueError::BadAddr { reason: "contains whitespace or control characters" });
    }
    let metadata = field(&object, "Metadata").cloned().unwrap_or(Value::Null);
    Ok(EndpointUpdate::Add { addr: addr.clone(), metadata })
}

/// Go's field matching: the exact name, else the first name equal ignoring ASCII case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .get(name)
        .or_else(|| object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn add(addr: &str, metadata: Value) -> EndpointUpdate {
        EndpointUpdate::Add { addr: addr.into(), metadata }
    }

    #[test]
    fn the_go_endpoint_format_decodes_to_an_add() {
        let value = br#"{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}"#;
        assert_eq!(decode_endpoint(value), Ok(add("10.0.0.1:50051", Value::Null)));
    }

    #[test]
    fn encoding_writes_exactly_the_bytes_go_writes() {
        assert_eq!(
            encode_endpoint("10.0.0.1:50051", &Value::Null),
            br#"{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}"#,
            "registration must be byte-compatible with Go's endpoints.Manager"
        );
        let metadata = json!({"zone": "a", "weight": 2});
        let encoded = encode_endpoint("h:1", &metadata);
        assert_eq!(decode_endpoint(&encoded), Ok(add("h:1", metadata)));
    }

    #[test]
    fn op_1_is_a_delete_whatever_the_address() {
        assert_eq!(decode_endpoint(br#"{"Op":1,"Addr":"a:1"}"#), Ok(EndpointUpdate::Delete));
        assert_eq!(decode_endpoint(br#"{"Op":1}"#), Ok(EndpointUpdate::Delete));
    }

    #[test]
    fn metadata_may_be_any_json_value() {
        for metadata in [
            json!(null),
            json!("text"),
            json!(42),
            json!(-1.5),
            json!(true),
            json!([1, "two", null]),
            json!({"nested": {"deep": [true]}}),
        ] {
            let value = format!(r#"{{"Op":0,"Addr":"a:1","Metadata":{metadata}}}"#);
            assert_eq!(
                decode_endpoint(value.as_bytes()),
                Ok(add("a:1", metadata.clone())),
                "Metadata {metadata} must be accepted"
            );
        }
    }

    #[test]
    fn field_names_match_case_insensitively_and_unknown_fields_are_ignored_as_in_go() {
        let value = br#" {"addr":"a:1","op":0,"Weight":3} "#;
        assert_eq!(decode_endpoint(value), Ok(add("a:1", Value::Null)));
        let both = br#"{"addr":"lower:1","Addr":"exact:1"}"#;
        assert_eq!(decode_endpoint(both), Ok(add("exact:1", Value::Null)), "exact match wins");
        assert_eq!(decode_endpoint(br#"{"Addr":"a:1"}"#), Ok(add("a:1", Value::Null)));
        assert_eq!(decode_endpoint(br#"{"Op":null,"Addr":"a:1"}"#), Ok(add("a:1", Value::Null)));
    }

    #[test]
    fn malformed_values_are_errors_that_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not JSON"),
            (b"10.0.0.1:50051", "not JSON"),
            (br#"{"Addr":"a:1"} x"#, "not JSON"),
            (br#"{"Addr":"a:1""#, "not JSON"),
            (br#"["a:1"]"#, "not a JSON object"),
            (br#""a:1""#, "not a JSON object"),
            (br#"{"Op":2,"Addr":"a:1"}"#, r#""Op" must be 0 (add) or 1 (delete), found 2"#),
            (br#"{"Op":-1,"Addr":"a:1"}"#, "found -1"),
            (br#"{"Op":"0","Addr":"a:1"}"#, r#"found "0""#),
            (br#"{"Op":1.0,"Addr":"a:1"}"#, "found 1.0"),
            (br#"{"Op":0}"#, r#""Addr" is missing"#),
            (br#"{"Addr":null}"#, r#""Addr" is missing"#),
            (br#"{"Addr":7}"#, r#""Addr" is not a string"#),
            (br#"{"Addr":""}"#, r#""Addr" is empty"#),
            (br#"{"Addr":"a :1"}"#, "whitespace or control characters"),
        ];
        for (value, reason) in cases {
            let err = decode_endpoint(value).expect_err("a malformed value must be refused");
            assert!(
                err.to_string().contains(reason),
                "{:?}: expected {reason:?}, got {err}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn the_service_prefix_ends_with_a_slash_so_foo_never_covers_foobar() {
        assert_eq!(service_prefix("foo"), "foo/");
        assert_eq!(service_prefix("a/b/svc"), "a/b/svc/");
        assert_eq!(endpoint_key("foo", "10.0.0.1:1"), "foo/10.0.0.1:1");
        let start = service_prefix("foo").into_bytes();
        let end = prefix_range_end(&start);
        assert_eq!(end, b"foo0");
        let inside = |key: &[u8]| start.as_slice() <= key && key < end.as_slice();
        assert!(inside(b"foo/10.0.0.1:1"));
        assert!(inside(b"foo/"));
        assert!(!inside(b"foobar/10.0.0.1:1"), "foo must never match foobar/");
        assert!(!inside(b"foo"), "the bare service name is not an endpoint key");
        assert!(!inside(b"fo/x"));
    }

    #[test]
    fn the_prefix_range_end_carries_over_0xff_bytes() {
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0", "all-0xff prefixes mean every key");
        assert_eq!(prefix_range_end(b""), b"\0");
    }
}
