//! gRPC target strings (DESIGN §2.1).
//!
//! A target names what a channel connects to and which resolver turns that name into addresses.
//! The shapes follow gRPC's naming document (`doc/naming.md`):
//!
//! ```text
//! scheme://[authority]/endpoint      pass:///10.0.0.1:9080#2,10.0.0.2:9090
//!                                    etcd://127.0.0.1:2379/user-service#3
//! scheme:endpoint                    dns:example.com:443   (opaque form, empty authority)
//! anything else                      127.0.0.1:50051, localhost:50051, [::1]:50051
//! ```
//!
//! # Grammar
//! - **Scheme**: RFC 3986 `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` before the first `:`,
//!   compared case-insensitively and stored lowercased (`PASS:///a:1` has scheme `pass`).
//! - **Fallback**: a target with no scheme, or whose scheme the caller has not registered, is
//!   handed to `passthrough` *whole*, exactly as grpc-go's `Dial` does. `localhost:50051` looks like
//!   scheme `localhost` with endpoint `50051`; `localhost` is not registered, so the target becomes
//!   `passthrough:///localhost:50051` and [`Target::is_fallback`] says so.
//! - **Authority**: with `scheme://`, the text up to the next `/`, which must be present
//!   (`dns://8.8.8.8` with no `/` is an error, not an empty endpoint). It is kept as written: not
//!   percent-decoded, and it may be empty. The opaque form `scheme:endpoint` has no authority.
//! - **Endpoint**: everything after that `/` (or after `scheme:` in the opaque form, kept as
//!   written, so `dns:/x` has endpoint `/x`), percent-decoded: `%23` becomes `#`, `%25` becomes
//!   `%`. An escape that is not `%` plus two hex digits, or bytes that do not decode to UTF-8, are
//!   errors. An IPv6 zone is therefore written `%25`, as RFC 6874 asks (`[fe80::1%25eth0]`).
//!   The endpoint must not be empty: every resolver needs something to resolve.
//! - **`#` and `?` are not a URL fragment or query**: they stay in the endpoint. grpc-go ≥ 1.42
//!   parses targets with `url.Parse` and silently drops everything after `#`, which loses
//!   `#2,10.0.0.2:9090` from a `pass` target; this parser does not.
//!
//! The endpoint's own grammar belongs to the resolver: see [`crate::anchor`] for `pass` and `etcd`.
//!
//! # Examples
//! ```
//! use anchorage::target::{Target, BUILTIN_SCHEMES};
//!
//! let registered = |scheme: &str| BUILTIN_SCHEMES.contains(&scheme);
//!
//! let t = Target::parse("pass:///10.0.0.1:9080#2,10.0.0.2:9090", registered)?;
//! assert_eq!(t.scheme(), "pass");
//! assert_eq!(t.authority(), "");
//! assert_eq!(t.endpoint(), "10.0.0.1:9080#2,10.0.0.2:9090");
//!
//! let t = Target::parse("localhost:50051", registered)?;
//! assert_eq!(t.scheme(), "passthrough");
//! assert_eq!(t.endpoint(), "localhost:50051");
//! assert!(t.is_fallback());
//! assert_eq!(t.to_string(), "passthrough:///localhost:50051");
//!
//! let t = Target::parse("etcd://127.0.0.1:2379/user%2Dservice%233", registered)?;
//! assert_eq!(t.authority(), "127.0.0.1:2379");
//! assert_eq!(t.endpoint(), "user-service#3");
//! # Ok::<(), anchorage::target::TargetError>(())
//! ```

use std::fmt;

/// The schemes whose resolvers this crate ships: `passthrough`, `pass` (anchor lists) and its
/// aliases ([`PASS_ALIASES`]), `dns` and `etcd`.
///
/// Pass `|s| BUILTIN_SCHEMES.contains(&s)` to [`Target::parse`] when only the built-in resolvers
/// are available.
pub const BUILTIN_SCHEMES: &[&str] = &["passthrough", "pass", "addr", "extd", "dns", "etcd"];

/// Other names for `pass`, as the original notes list them: `addr:///a:1#2` is `pass:///a:1#2`.
pub const PASS_ALIASES: &[&str] = &["addr", "extd"];

/// The scheme that takes targets with no scheme or an unregistered one.
const FALLBACK_SCHEME: &str = "passthrough";

/// A parsed gRPC target: scheme, authority and percent-decoded endpoint.
///
/// Built by [`Target::parse`]. [`Display`](fmt::Display) gives the canonical
/// `scheme://authority/endpoint` form, which parses back to the same scheme, authority and endpoint
/// (`%`, spaces and control characters in the endpoint are written as percent escapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    scheme: String,
    authority: String,
    endpoint: String,
    fallback: bool,
}

/// Why a string is not a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The input was the empty string.
    #[error("target: empty string")]
    Empty,
    /// A `%` in the endpoint is not followed by two hex digits.
    #[error("target {target:?}: invalid percent escape {escape:?} at byte {offset}")]
    InvalidEscape {
        /// The whole target as given.
        target: String,
        /// The bad escape, `%` and up to two following characters.
        escape: String,
        /// Byte offset of the `%` in the target.
        offset: usize,
    },
    /// The percent-decoded endpoint is not valid UTF-8 (such as `%FF`).
    #[error("target {target:?}: the endpoint is not UTF-8 after percent-decoding")]
    NotUtf8 {
        /// The whole target as given.
        target: String,
    },
    /// `scheme://authority` with no `/` before the endpoint.
    #[error(
        "target {target:?}: expected \"/\" between the authority {authority:?} and the endpoint"
    )]
    MissingSlash {
        /// The whole target as given.
        target: String,
        /// The authority text that was read.
        authority: String,
    },
    /// The endpoint is empty (such as `pass:///` or `dns:`).
    #[error("target {target:?}: the endpoint is empty")]
    EmptyEndpoint {
        /// The whole target as given.
        target: String,
    },
}

impl Target {
    /// Parses `input`, asking `is_registered` whether a (lowercased) scheme has a resolver.
    ///
    /// A target with no scheme, or whose scheme is not registered, is handed to `passthrough`
    /// whole: the result has scheme `passthrough`, an empty authority, the percent-decoded input as
    /// its endpoint, and [`Target::is_fallback`] true.
    ///
    /// # Errors
    /// [`TargetError`] when `input` is empty, when the endpoint has an invalid percent escape or
    /// does not decode to UTF-8, when `scheme://authority` lacks the `/` before the endpoint, or
    /// when the endpoint is empty.
    pub fn parse(input: &str, is_registered: impl Fn(&str) -> bool) -> Result<Target, TargetError> {
        if input.is_empty() {
            return Err(TargetError::Empty);
        }
        let registered = split_scheme(input)
            .map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest))
            .filter(|(scheme, _)| is_registered(scheme));
        let Some((scheme, rest)) = registered else {
            // naming.md: "If the scheme is not registered, the target is passed to the default
            // resolver" — as grpc-go does, the whole input, as if written `passthrough:///input`.
            let endpoint = decode(input, input, 0)?;
            return Target::new(input, FALLBACK_SCHEME.to_owned(), String::new(), endpoint, true);
        };
        let offset = input.len() - rest.len();
        match rest.strip_prefix("//") {
            Some(hier) => {
                let Some((authority, raw_endpoint)) = hier.split_once('/') else {
                    return Err(TargetError::MissingSlash {
                        target: input.to_owned(),
                        authority: hier.to_owned(),
                    });
                };
                let endpoint_offset = offset + 2 + authority.len() + 1;
                let endpoint = decode(input, raw_endpoint, endpoint_offset)?;
                Target::new(input, scheme, authority.to_owned(), endpoint, false)
            }
            None => {
                let endpoint = decode(input, rest, offset)?;
                Target::new(input, scheme, String::new(), endpoint, false)
            }
        }
    }

    fn new(
        input: &str,
        scheme: String,
        authority: String,
        endpoint: String,
        fallback: bool,
    ) -> Result<Target, TargetError> {
        if endpoint.is_empty() {
            return Err(TargetError::EmptyEndpoint { target: input.to_owned() });
        }
        Ok(Target { scheme, authority, endpoint, fallback })
    }

    /// The lowercased scheme, which names the resolver; `passthrough` for a fallback target.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The authority as written (not percent-decoded); empty when absent.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The percent-decoded endpoint; never empty. `#` and `?` are part of it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the target went to `passthrough` because it had no scheme or an unregistered one.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/", self.scheme, self.authority)?;
        for c in self.endpoint.chars() {
            if c == '%' || c == ' ' || c.is_ascii_control() {
                write!(f, "%{:02X}", u32::from(c))?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Splits `scheme:rest` when the text before the first `:` is an RFC 3986 scheme.
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = input.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let tail_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (starts_alpha && tail_ok).then_some((scheme, rest))
}

/// Percent-decodes `raw`, a slice of `target` starting at byte `offset` (for error messages).
fn decode(target: &str, raw: &str, offset: usize) -> Result<String, TargetError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                // Both digits are < 16, so the byte cannot overflow.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                return Err(TargetError::InvalidEscape {
                    target: target.to_owned(),
                    escape: raw[i..].chars().take(3).collect(),
                    offset: offset + i,
                });
            }
        }
    }
    String::from_utf8(out).map_err(|_| TargetError::NotUtf8 { target: target.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(input: &str) -> Result<Target, TargetError> {
        Target::parse(input, |s| BUILTIN_SCHEMES.contains(&s))
    }

    fn parts(t: &Target) -> (&str, &str, &str, bool) {
        (t.scheme(), t.authority(), t.endpoint(), t.is_fallback())
    }

    #[test]
    fn given_a_registered_scheme_with_authority_when_parsed_then_all_three_parts_are_split() {
        let t = builtin("etcd://127.0.0.1:2379,127.0.0.1:22379/foo/bar#2").unwrap();
        assert_eq!(
            parts(&t),
            ("etcd", "127.0.0.1:2379,127.0.0.1:22379", "foo/bar#2", false),
            "the authority ends at the first '/', the endpoint keeps later '/' and '#'"
        );
    }

    #[test]
    fn given_an_uppercase_scheme_when_parsed_then_the_scheme_is_lowercased() {
        let t = builtin("PaSs:///a:1").unwrap();
        assert_eq!(t.scheme(), "pass", "schemes are case-insensitive and stored lowercased");
        assert!(!t.is_fallback(), "a registered scheme in any case must not fall back");
    }

    #[test]
    fn given_the_opaque_form_when_parsed_then_the_endpoint_is_everything_after_the_colon() {
        let t = builtin("dns:example.com:443").unwrap();
        assert_eq!(
            parts(&t),
            ("dns", "", "example.com:443", false),
            "the opaque form has no authority"
        );
        let t = builtin("dns:/x").unwrap();
        assert_eq!(t.endpoint(), "/x", "the opaque endpoint is kept as written");
    }

    #[test]
    fn given_host_port_targets_without_a_scheme_when_parsed_then_they_fall_back_whole() {
        for input in ["127.0.0.1:50051", "localhost:50051", "[::1]:50051", "my-host"] {
            let t = builtin(input).unwrap();
            assert_eq!(
                parts(&t),
                ("passthrough", "", input, true),
                "{input} must go to passthrough whole"
            );
        }
    }

    #[test]
    fn given_an_unregistered_scheme_when_parsed_then_the_whole_target_goes_to_passthrough() {
        let t = builtin("unix:///tmp/sock").unwrap();
        assert_eq!(parts(&t), ("passthrough", "", "unix:///tmp/sock", true), "whole, not split");
        assert_eq!(t.to_string(), "passthrough:///unix:///tmp/sock", "display names passthrough");
    }

    #[test]
    fn given_a_caller_registry_when_parsed_then_only_its_schemes_are_recognised() {
        let t = Target::parse("pass:///a:1", |_| false).unwrap();
        assert!(t.is_fallback(), "a scheme the caller did not register must fall back");
        let t = Target::parse("unix:///tmp/sock", |s| s == "unix").unwrap();
        assert_eq!(parts(&t), ("unix", "", "tmp/sock", false), "a registered scheme is honoured");
    }

    #[test]
    fn given_hash_and_question_mark_when_parsed_then_they_stay_in_the_endpoint() {
        let t = builtin("pass:///a:1#2,b:1?x#3").unwrap();
        assert_eq!(t.endpoint(), "a:1#2,b:1?x#3", "'#' and '?' are not fragment or query");
    }

    #[test]
    fn given_percent_escapes_when_parsed_then_the_endpoint_is_decoded() {
        let t = builtin("pass:///a:1%232,b:1%23%33").unwrap();
        assert_eq!(t.endpoint(), "a:1#2,b:1#3", "%23 must decode to #");
        let t = builtin("localhost%3A50051").unwrap();
        assert_eq!(t.endpoint(), "localhost:50051", "a fallback endpoint is decoded too");
    }

    #[test]
    fn given_an_invalid_escape_when_parsed_then_the_error_names_it_and_its_offset() {
        for (input, escape, offset) in
            [("pass:///a:1%2", "%2", 11), ("pass:///%zz1", "%zz", 8), ("a%", "%", 1)]
        {
            let err = builtin(input).unwrap_err();
            assert_eq!(
                err,
                TargetError::InvalidEscape { target: input.into(), escape: escape.into(), offset },
                "an invalid escape must be an error, not kept or dropped"
            );
        }
    }

    #[test]
    fn given_an_escape_before_a_multibyte_char_when_parsed_then_the_error_does_not_split_it() {
        let err = builtin("pass:///%é").unwrap_err();
        assert!(
            matches!(err, TargetError::InvalidEscape { ref escape, .. } if escape == "%é"),
            "the escape text must end on a character boundary, got {err:?}"
        );
    }

    #[test]
    fn given_escapes_that_are_not_utf8_when_parsed_then_it_is_an_error() {
        let err = builtin("pass:///%FF").unwrap_err();
        assert_eq!(
            err,
            TargetError::NotUtf8 { target: "pass:///%FF".into() },
            "bytes must decode to UTF-8"
        );
    }

    #[test]
    fn given_an_authority_with_no_slash_when_parsed_then_it_is_an_error() {
        let err = builtin("dns://8.8.8.8").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"target "dns://8.8.8.8": expected "/" between the authority "8.8.8.8" and the endpoint"#,
            "a missing '/' must be an error, never a silently empty endpoint"
        );
    }

    #[test]
    fn given_empty_input_or_endpoint_when_parsed_then_it_is_an_error() {
        assert_eq!(builtin(""), Err(TargetError::Empty), "empty input must be an error");
        for input in ["pass:///", "dns:", "etcd://127.0.0.1:2379/"] {
            assert_eq!(
                builtin(input),
                Err(TargetError::EmptyEndpoint { target: input.into() }),
                "{input} has nothing to resolve"
            );
        }
    }

    #[test]
    fn given_a_scheme_like_prefix_with_bad_characters_when_parsed_then_it_is_not_a_scheme() {
        for input in ["1pass:///a:1", "pa_ss:///a:1", ":///a:1"] {
            assert!(builtin(input).unwrap().is_fallback(), "{input} has no RFC 3986 scheme");
        }
    }

    #[test]
    fn given_an_endpoint_with_percent_and_spaces_when_displayed_then_it_parses_back() {
        let t = builtin("passthrough:///a%25b%20c%0A").unwrap();
        assert_eq!(t.endpoint(), "a%b c\n");
        assert_eq!(t.to_string(), "passthrough:///a%25b%20c%0A");
        assert_eq!(builtin(&t.to_string()).unwrap(), t, "display must parse back to the target");
    }
}
