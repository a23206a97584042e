//! etcd endpoint lists: `127.0.0.1:2379,http://10.0.0.2:2379`.

use std::fmt;
use std::str::FromStr;

use crate::anchor::{AnchorError, AnchorList, ItemErrorKind};

/// The endpoint used when none is configured: etcd's default client port on loopback.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

/// A non-empty list of distinct etcd endpoints, each `host:port`, in the order given.
///
/// [`FromStr`] parses a comma-separated list. Each item is `host:port` with the `pass` host
/// grammar ([`crate::anchor`]: names, IPv4, bracketed IPv6; an empty host means `localhost`),
/// optionally written as a URL `http://host:port` or `https://host:port` (a trailing `/` is
/// allowed), as etcd's own tools write them. One `https://` item makes the whole list TLS
/// ([`is_tls`](Self::is_tls)); an `http://` item beside it is an error, and bare `host:port`
/// items follow the list.
///
/// ```
/// use anchorage::etcd::Endpoints;
/// let endpoints: Endpoints = "http://127.0.0.1:2379,[::1]:22379".parse()?;
/// assert_eq!(endpoints.addrs(), ["127.0.0.1:2379", "[::1]:22379"]);
/// assert_eq!(endpoints.to_string(), "127.0.0.1:2379,[::1]:22379");
/// assert!(!endpoints.is_tls());
/// # Ok::<(), anchorage::etcd::EndpointsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoints {
    addrs: Vec<String>,
    tls: bool,
}

impl Endpoints {
    /// The endpoints as `host:port`, in the order given; never empty.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Whether the endpoints were written `https://`: the client then speaks TLS to them.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl Default for Endpoints {
    /// [`DEFAULT_ENDPOINT`] alone.
    fn default() -> Self {
        Self { addrs: vec![DEFAULT_ENDPOINT.to_owned()], tls: false }
    }
}

impl fmt::Display for Endpoints {
    /// The canonical list: `host:port` items joined by `,` (without the scheme: see
    /// [`is_tls`](Endpoints::is_tls)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addrs.join(","))
    }
}

impl FromStr for Endpoints {
    type Err = EndpointsError;

    /// Parses a comma-separated endpoint list.
    ///
    /// # Errors
    /// [`EndpointsError::Empty`] for the empty string; [`EndpointsError::Item`] naming the first
    /// bad item, its 1-based position and the reason.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(EndpointsError::Empty);
        }
        let mut bare = Vec::new();
        let tls = s.split(',').any(|item| item.starts_with("https://"));
        for (index, item) in s.split(',').enumerate() {
            let fail = |kind| EndpointsError::Item { position: index + 1, item: item.into(), kind };
            if tls && item.starts_with("http://") {
                return Err(fail(EndpointErrorKind::MixedSchemes));
            }
            bare.push(strip_url(item).map_err(fail)?);
        }
        let list: AnchorList = bare.join(",").parse().map_err(|err| match err {
            AnchorError::Item { position, kind, .. } => EndpointsError::Item {
                position,
                item: s.split(',').nth(position - 1).unwrap_or_default().to_owned(),
                kind: EndpointErrorKind::Address(kind),
            },
            _ => EndpointsError::Empty,
        })?;
        Ok(Self { addrs: list.items().iter().map(|a| a.addr()).collect(), tls })
    }
}

/// `http://host:port/` or `https://host:port/` → `host:port`; refuses other schemes and `#`.
fn strip_url(item: &str) -> Result<&str, EndpointErrorKind> {
    let bare = match item.split_once("://") {
        None => item,
        Some(("http" | "https", rest)) => rest.strip_suffix('/').unwrap_or(rest),
        Some((scheme, _)) => return Err(EndpointErrorKind::Scheme { scheme: scheme.to_owned() }),
    };
    if bare.contains('#') || bare.contains("%23") {
        return Err(EndpointErrorKind::ConnectionCount);
    }
    Ok(bare)
}

/// Why an etcd endpoint list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointsError {
    /// The list is the empty string.
    #[error("etcd endpoints: empty list (expected host:port[,host:port...])")]
    Empty,
    /// One item is bad.
    #[error("etcd endpoints: item {position} ({item:?}): {kind}")]
    Item {
        /// 1-based position of the item.
        position: usize,
        /// The item as written.
        item: String,
        /// What is wrong with it.
        kind: EndpointErrorKind,
    },
}

/// What is wrong with one etcd endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointErrorKind {
    /// `http://` in a list with `https://` endpoints.
    #[error("http in a list of https endpoints (write all of them https:// or none)")]
    MixedSchemes,
    /// A URL scheme other than `http` or `https`.
    #[error(
        "unsupported scheme {scheme:?} (write host:port, http://host:port or https://host:port)"
    )]
    Scheme {
        /// The scheme written.
        scheme: String,
    },
    /// `#N`: connection counts belong to targets, not to etcd endpoints.
    #[error("\"#\" is not allowed in an etcd endpoint")]
    ConnectionCount,
    /// The address itself is bad (same grammar as a `pass` item).
    #[error(transparent)]
    Address(ItemErrorKind),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_host_port_and_http_urls_in_order() {
        let endpoints: Endpoints = "b:2379,http://a:2379/,:22379".parse().unwrap();
        assert_eq!(endpoints.addrs(), ["b:2379", "a:2379", "localhost:22379"]);
    }

    #[test]
    fn the_default_endpoint_is_loopback_2379() {
        assert_eq!(Endpoints::default().addrs(), ["127.0.0.1:2379"]);
    }

    #[test]
    fn bad_endpoints_name_the_item_and_the_reason() {
        let err = |s: &str| s.parse::<Endpoints>().unwrap_err().to_string();
        assert_eq!(err(""), "etcd endpoints: empty list (expected host:port[,host:port...])");
        assert_eq!(
            err("http://a:1,https://b:2"),
            "etcd endpoints: item 1 (\"http://a:1\"): http in a list of https endpoints \
             (write all of them https:// or none)"
        );
        assert_eq!(
            err("unix://x"),
            "etcd endpoints: item 1 (\"unix://x\"): unsupported scheme \"unix\" \
             (write host:port, http://host:port or https://host:port)"
        );
        assert!(err("a:1#2").contains("\"#\" is not allowed"));
        assert!(err("a:1,a").starts_with("etcd endpoints: item 2 (\"a\"): "), "{}", err("a:1,a"));
        assert!(err("a:1,a:1").contains("same address as item 1"));
    }
}
