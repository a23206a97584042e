//! Anchor lists (`pass` endpoints) and etcd service names (DESIGN §2.2).
//!
//! An *anchor* is one address with the number of separate HTTP/2 connections to open to it
//! (a replacement for a connection pool). Each connection becomes its own [`Address`], tagged with
//! its connection index, so a policy keyed by address identity opens `N` subchannels.
//!
//! # `pass` grammar
//! ```text
//! list  = item *( "," item )
//! item  = [host] ":" port [ "#" N ]
//! host  = name / IPv4 / "[" IPv6 "]"
//! port  = 1*DIGIT                      ; 1..=65535 (port 0 cannot be connected to)
//! N     = 1*DIGIT                      ; 1..=1024, absent means 1
//! ```
//! - An empty host means `localhost` (`:9080` is `localhost:9080`).
//! - A name is dot-separated labels of ASCII letters, digits, `-` and `_`, with at most one
//!   trailing dot (`svc.cluster.local.`); labels are 1..=63 bytes, the name at most 253. Names are
//!   case-insensitive and stored lowercased. A host made only of digits and dots must be a valid
//!   IPv4 address (`256.1.1.1` and `010.0.0.1` are errors, not names).
//! - An IPv6 literal needs brackets (`[::1]:80`); it is compared by value, so `[0:0::1]:80` and
//!   `[::1]:80` are the same address. Zone identifiers are not supported.
//! - `%23` is accepted wherever `#` is, so a list that went through a URL encoder still parses.
//!   (A target's endpoint is already percent-decoded, so in a target `%2523` also ends up as `#`.)
//! - Each item's `N` is its own: `a:1#2,b:1` gives `b:1` one connection, never two.
//! - No whitespace anywhere, no empty items, and no address twice (compared after normalising, so
//!   `:9080` and `localhost:9080` are duplicates): write one item with `#N` instead.
//!
//! # `etcd` grammar
//! ```text
//! endpoint = service [ "#" N ]
//! ```
//! The service name is the etcd key prefix the servers register under. It may contain `/`
//! (`foo/bar/my-service`, as etcd's Go naming package allows) and leading or trailing `/`; it must
//! not be empty and must not contain `,` (one service per target), whitespace or control characters.
//! `N` applies to every address discovered under the service.
//!
//! # Examples
//! ```
//! use anchorage::address::Address;
//! use anchorage::anchor::{AnchorList, EtcdService};
//!
//! let list: AnchorList = ":9080#2,10.0.0.2:9090".parse()?;
//! assert_eq!(list.to_string(), "localhost:9080#2,10.0.0.2:9090");
//! assert_eq!(
//!     list.expand(),
//!     [
//!         Address::new("localhost:9080").with_connection_index(0),
//!         Address::new("localhost:9080").with_connection_index(1),
//!         Address::new("10.0.0.2:9090").with_connection_index(0),
//!     ]
//! );
//!
//! let err = "a:9080,b:9090#0".parse::<AnchorList>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"pass target: item 2 ("b:9090#0"): connection count must be 1..=1024"#
//! );
//!
//! let service: EtcdService = "user-service#3".parse()?;
//! assert_eq!(service.name(), "user-service");
//! assert_eq!(service.expand("10.0.0.1:50051").len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::address::Address;

/// The largest connection count `#N` accepts.
pub const MAX_CONNECTIONS: u32 = 1024;

/// The most connections one target may ask for in all (the sum of its items' `#N`, or an
/// `etcd` service's `#N` times the addresses discovered): 16,384, some 500 MB of HTTP/2
/// connection state. A longer list is refused before anything is expanded or dialled.
pub const MAX_TOTAL_CONNECTIONS: u32 = 16 * 1024;

/// The host an empty host (`:9080`) stands for.
const DEFAULT_HOST: &str = "localhost";

/// The longest host name, in bytes (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// The longest label of a host name, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// The host part of an [`Anchor`], normalised so that equal hosts compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Host {
    /// A host name, lowercased (`localhost`, `svc.cluster.local.`).
    Name(String),
    /// An IPv4 literal.
    Ipv4(Ipv4Addr),
    /// An IPv6 literal (written in brackets).
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    /// Writes the host as it appears before `:port`: IPv6 in brackets, in RFC 5952 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ipv4(ip) => write!(f, "{ip}"),
            Self::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// One item of a `pass` list: where to connect and how many connections to open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Anchor {
    host: Host,
    port: u16,
    connections: u32,
}

impl Anchor {
    /// The host, normalised (an empty host is `localhost`).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, in `1..=65535`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The number of connections to open, in `1..=`[`MAX_CONNECTIONS`].
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The address to connect to, `host:port`, with an IPv6 host in brackets (`[::1]:50051`).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// One [`Address`] per connection: [`Anchor::addr`] tagged with connection index
    /// `0..connections`, in index order.
    pub fn expand(&self) -> Vec<Address> {
        indexed(&self.addr(), self.connections)
    }
}

impl fmt::Display for Anchor {
    /// Writes the canonical item: `host:port`, then `#N` when `N` is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)?;
        write_count(f, self.connections)
    }
}

/// A parsed `pass` endpoint: a non-empty list of distinct [`Anchor`]s in target order.
///
/// [`FromStr`] parses the grammar in the [module docs](self); [`Display`](fmt::Display) writes the
/// canonical form, which parses back to an equal list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnchorList {
    items: Vec<Anchor>,
}

impl AnchorList {
    /// The items in target order; never empty.
    pub fn items(&self) -> &[Anchor] {
        &self.items
    }

    /// Every connection as its own [`Address`], in target order: `a:1#2,b:1` gives
    /// `[a:1{idx=0}, a:1{idx=1}, b:1{idx=0}]`.
    pub fn expand(&self) -> Vec<Address> {
        self.items.iter().flat_map(Anchor::expand).collect()
    }

    /// The sum of the items' connection counts, which is the length of [`AnchorList::expand`].
    pub fn total_connections(&self) -> usize {
        self.items.iter().map(|a| a.connections as usize).sum()
    }
}

impl FromStr for AnchorList {
    type Err = AnchorError;

    /// Parses a `pass` endpoint.
    ///
    /// # Errors
    /// [`AnchorError::EmptyList`] for the empty string; otherwise [`AnchorError::Item`] for the
    /// first bad item, naming its 1-based position, its text and the reason.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AnchorError::EmptyList);
        }
        let mut items = Vec::new();
        let mut seen: HashMap<(Host, u16), usize> = HashMap::new();
        let mut total = 0u64;
        for (index, text) in s.split(',').enumerate() {
            let position = index + 1;
            let fail = |kind| AnchorError::Item { position, item: text.to_owned(), kind };
            let anchor = parse_item(text).map_err(fail)?;
            match seen.entry((anchor.host.clone(), anchor.port)) {
                Entry::Occupied(first) => {
                    let first = *first.get();
                    return Err(fail(ItemErrorKind::Duplicate { first, addr: anchor.addr() }));
                }
                Entry::Vacant(slot) => slot.insert(position),
            };
            total += u64::from(anchor.connections);
            if total > u64::from(MAX_TOTAL_CONNECTIONS) {
                return Err(AnchorError::TooManyConnections { position });
            }
            items.push(anchor);
        }
        Ok(AnchorList { items })
    }
}

impl fmt::Display for AnchorList {
    /// Writes the canonical list: canonical items joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

/// A parsed `etcd` endpoint: the service name and the connections to open per discovered address.
///
/// [`FromStr`] parses the grammar in the [module docs](self); [`Display`](fmt::Display) writes the
/// canonical form (`name`, or `name#N` when `N` is not 1), which parses back to an equal value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EtcdService {
    name: String,
    connections: u32,
}

impl EtcdService {
    /// The service name: the etcd key prefix, without the `/` that discovery appends.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connections to open to each discovered address, in `1..=`[`MAX_CONNECTIONS`].
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// One [`Address`] per connection to `addr`, one address discovered under the service:
    /// `addr` tagged with connection index `0..connections`.
    pub fn expand(&self, addr: &str) -> Vec<Address> {
        indexed(addr, self.connections)
    }
}

impl FromStr for EtcdService {
    type Err = ServiceError;

    /// Parses an `etcd` endpoint.
    ///
    /// # Errors
    /// [`ServiceError`] when the text is empty, has no name before `#`, contains `,`, whitespace or
    /// control characters, or has a bad connection count.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ServiceError::Empty);
        }
        let fail = |kind| ServiceError::Invalid { service: s.to_owned(), kind };
        if s.chars().any(char::is_whitespace) {
            return Err(fail(ServiceErrorKind::Whitespace));
        }
        if s.chars().any(char::is_control) {
            return Err(fail(ServiceErrorKind::Control));
        }
        if s.contains(',') {
            return Err(fail(ServiceErrorKind::Comma));
        }
        let unescaped = s.replace("%23", "#");
        let (name, count) = split_count(&unescaped);
        if name.is_empty() {
            return Err(fail(ServiceErrorKind::NoName));
        }
        let connections = parse_count(count).map_err(|e| fail(ServiceErrorKind::Count(e)))?;
        Ok(EtcdService { name: name.to_owned(), connections })
    }
}

impl fmt::Display for EtcdService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        write_count(f, self.connections)
    }
}

/// Why a `pass` endpoint is not a valid anchor list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The endpoint is the empty string.
    #[error("pass target: empty list (expected host:port[#N], ...)")]
    EmptyList,
    /// One item is bad.
    #[error("pass target: item {position} ({item:?}): {kind}")]
    Item {
        /// 1-based position of the item in the list.
        position: usize,
        /// The item's text as written.
        item: String,
        /// What is wrong with it.
        kind: ItemErrorKind,
    },
    /// The items ask for more than [`MAX_TOTAL_CONNECTIONS`] connections in all.
    #[error(
        "pass target: the items up to item {position} ask for more than {MAX_TOTAL_CONNECTIONS} \
         connections in all (the sum of their #N)"
    )]
    TooManyConnections {
        /// 1-based position of the item that went over the limit.
        position: usize,
    },
}

/// What is wrong with one item of a `pass` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemErrorKind {
    /// Nothing between two commas, or a comma at the start or end.
    #[error("empty item (two commas in a row, or a comma at the start or end)")]
    Empty,
    /// Whitespace somewhere in the item.
    #[error("stray whitespace (anchor lists allow none)")]
    Whitespace,
    /// Nothing before `#` (such as `#2`).
    #[error("no address before \"#\"")]
    NoAddress,
    /// No `:port` (such as `a`), or nothing after the `:` (such as `a:`).
    #[error("missing port (write host:port, or :port for localhost)")]
    MissingPort,
    /// The port is not a decimal in `1..=65535`.
    #[error("port {port:?} must be a decimal in 1..=65535")]
    BadPort {
        /// The port text as written.
        port: String,
    },
    /// `[` with no closing `]`.
    #[error("\"[\" without a closing \"]\"")]
    UnclosedBracket,
    /// Something other than `:port` after `]`.
    #[error("expected \":\" and a port after \"]\"")]
    AfterBracket,
    /// More than one `:` outside brackets, as in an unbracketed IPv6 address.
    #[error("more than one \":\" (an IPv6 address needs brackets, as in [::1]:80)")]
    UnbracketedIpv6,
    /// The text in brackets is an IPv6 address with a zone identifier (`fe80::1%eth0`).
    #[error("{text:?} has an IPv6 zone identifier, which anchor lists do not support")]
    Ipv6Zone {
        /// The text between the brackets.
        text: String,
    },
    /// The text in brackets is not an IPv6 address.
    #[error("{text:?} is not a valid IPv6 address")]
    BadIpv6 {
        /// The text between the brackets.
        text: String,
    },
    /// A host of only digits and dots that is not a valid IPv4 address.
    #[error("{text:?} is not a valid IPv4 address")]
    BadIpv4 {
        /// The host text.
        text: String,
    },
    /// A host name with a character outside letters, digits, `-`, `_` and `.`.
    #[error("host name {name:?} contains {found:?} (allowed: letters, digits, '-', '_', '.')")]
    BadHostChar {
        /// The host text.
        name: String,
        /// The first character not allowed.
        found: char,
    },
    /// A host name with an empty label (leading dot, or two dots in a row).
    #[error("host name {name:?} has an empty label (a leading dot or two dots in a row)")]
    EmptyLabel {
        /// The host text.
        name: String,
    },
    /// A host name or one of its labels is too long.
    #[error("host name {name:?} is too long (at most 253 bytes, 63 per label)")]
    NameTooLong {
        /// The host text.
        name: String,
    },
    /// A bad `#N`.
    #[error(transparent)]
    Count(#[from] CountError),
    /// The address already appeared in an earlier item.
    #[error(
        "same address as item {first} ({addr}); write one item with \"#N\" for more connections"
    )]
    Duplicate {
        /// 1-based position of the earlier item.
        first: usize,
        /// The normalised address both items name.
        addr: String,
    },
}

/// What is wrong with a `#N` connection count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// `#` with nothing after it.
    #[error("\"#\" must be followed by a connection count")]
    Missing,
    /// Not only ASCII digits (such as `abc`, `-1`, `+1`, `1.5`).
    #[error("connection count {text:?} is not a decimal number")]
    NotDecimal {
        /// The text after `#`.
        text: String,
    },
    /// Zero, or more than [`MAX_CONNECTIONS`].
    #[error("connection count must be 1..=1024")]
    OutOfRange,
}

/// Why an `etcd` endpoint is not a valid service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The endpoint is the empty string.
    #[error("etcd target: empty service name")]
    Empty,
    /// The endpoint is not empty but is bad.
    #[error("etcd target: service {service:?}: {kind}")]
    Invalid {
        /// The endpoint as written.
        service: String,
        /// What is wrong with it.
        kind: ServiceErrorKind,
    },
}

/// What is wrong with an `etcd` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceErrorKind {
    /// Nothing before `#` (such as `#3`).
    #[error("no service name before \"#\"")]
    NoName,
    /// A `,`: an etcd target names one service.
    #[error("\",\" is not allowed (an etcd target names one service)")]
    Comma,
    /// Whitespace somewhere in the endpoint.
    #[error("stray whitespace (service names allow none)")]
    Whitespace,
    /// A control character somewhere in the endpoint.
    #[error("control characters are not allowed")]
    Control,
    /// A bad `#N`.
    #[error(transparent)]
    Count(#[from] CountError),
}

/// Parses one `pass` item (not yet checked for duplicates).
fn parse_item(text: &str) -> Result<Anchor, ItemErrorKind> {
    if text.is_empty() {
        return Err(ItemErrorKind::Empty);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(ItemErrorKind::Whitespace);
    }
    let unescaped = text.replace("%23", "#");
    let (address, count) = split_count(&unescaped);
    if address.is_empty() {
        return Err(ItemErrorKind::NoAddress);
    }
    let (host, port) = parse_host_port(address)?;
    let connections = parse_count(count)?;
    Ok(Anchor { host, port, connections })
}

/// Splits `text` at its first `#` into the part before and the count text after, if any.
fn split_count(text: &str) -> (&str, Option<&str>) {
    match text.split_once('#') {
        Some((before, after)) => (before, Some(after)),
        None => (text, None),
    }
}

/// Parses `host:port`, `:port` or `[ipv6]:port`.
fn parse_host_port(address: &str) -> Result<(Host, u16), ItemErrorKind> {
    if let Some(bracketed) = address.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or(ItemErrorKind::UnclosedBracket)?;
        let ip = inside.parse::<Ipv6Addr>().map_err(|_| {
            let text = inside.to_owned();
            let zoned =
                inside.split_once('%').is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok());
            if zoned { ItemErrorKind::Ipv6Zone { text } } else { ItemErrorKind::BadIpv6 { text } }
        })?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(ItemErrorKind::MissingPort),
            None => return Err(ItemErrorKind::AfterBracket),
        };
        return Ok((Host::Ipv6(ip), parse_port(port)?));
    }
    let (host, port) = address.split_once(':').ok_or(ItemErrorKind::MissingPort)?;
    if port.contains(':') {
        return Err(ItemErrorKind::UnbracketedIpv6);
    }
    Ok((parse_host(host)?, parse_port(port)?))
}

/// Parses an unbracketed host: empty (localhost), IPv4 or a name.
fn parse_host(host: &str) -> Result<Host, ItemErrorKind> {
    if host.is_empty() {
        return Ok(Host::Name(DEFAULT_HOST.to_owned()));
    }
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric && host.bytes().any(|b| b.is_ascii_digit()) {
        return host
            .parse::<Ipv4Addr>()
            .map(Host::Ipv4)
            .map_err(|_| ItemErrorKind::BadIpv4 { text: host.to_owned() });
    }
    if let Some(found) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        return Err(ItemErrorKind::BadHostChar { name: host.to_owned(), found });
    }
    let labels = host.strip_suffix('.').unwrap_or(host);
    if labels.split('.').any(str::is_empty) {
        return Err(ItemErrorKind::EmptyLabel { name: host.to_owned() });
    }
    if labels.len() > MAX_NAME_LEN || labels.split('.').any(|l| l.len() > MAX_LABEL_LEN) {
        return Err(ItemErrorKind::NameTooLong { name: host.to_owned() });
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

/// Parses a port: ASCII digits whose value is in `1..=65535`.
fn parse_port(port: &str) -> Result<u16, ItemErrorKind> {
    if port.is_empty() {
        return Err(ItemErrorKind::MissingPort);
    }
    let bad = || ItemErrorKind::BadPort { port: port.to_owned() };
    // Port 0 asks the OS for any port when listening; a client cannot connect to it.
    decimal(port).and_then(|v| u16::try_from(v).ok()).filter(|&p| p != 0).ok_or_else(bad)
}

/// Parses the text after `#` (if there was a `#`) into a connection count.
fn parse_count(count: Option<&str>) -> Result<u32, CountError> {
    let Some(text) = count else { return Ok(1) };
    if text.is_empty() {
        return Err(CountError::Missing);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CountError::NotDecimal { text: text.to_owned() });
    }
    decimal(text)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
        .ok_or(CountError::OutOfRange)
}

/// The value of a string of ASCII digits, or `None` if it has another character or overflows.
/// Leading zeros are allowed.
fn decimal(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |acc, b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `addr` once per connection, tagged with connection index `0..connections`.
fn indexed(addr: &str, connections: u32) -> Vec<Address> {
    (0..connections).map(|i| Address::new(addr).with_connection_index(i)).collect()
}

/// Writes `#N` unless `N` is the default, 1.
fn write_count(f: &mut fmt::Formatter<'_>, connections: u32) -> fmt::Result {
    if connections == 1 { Ok(()) } else { write!(f, "#{connections}") }
}

#[cfg(test)]
mod tests {
    /// Regression: a valid list of 10,000 items each `#1024` expanded to 10.24M addresses
    /// (10 s, 6.5 GB) before anything was dialled.
    #[test]
    fn a_list_asking_for_more_than_the_total_connection_limit_is_refused_before_expanding() {
        let at_limit: Vec<String> = (0..16).map(|i| format!("h{i}:1#1024")).collect();
        let list: AnchorList = at_limit.join(",").parse().expect("16 x 1024 is the limit");
        assert_eq!(list.expand().len(), MAX_TOTAL_CONNECTIONS as usize);
        let over: Vec<String> = (0..10_000).map(|i| format!("h{i}:1#1024")).collect();
        let err = over.join(",").parse::<AnchorList>().unwrap_err();
        assert_eq!(err, AnchorError::TooManyConnections { position: 17 }, "named at item 17");
        assert!(err.to_string().contains("16384"), "the message must name the limit: {err}");
    }

    use super::*;

    fn list(s: &str) -> AnchorList {
        s.parse().unwrap_or_else(|e| panic!("{s:?} must parse: {e}"))
    }

    fn item_error(s: &str) -> (usize, ItemErrorKind) {
        match s.parse::<AnchorList>() {
            Err(AnchorError::Item { position, kind, .. }) => (position, kind),
            other => panic!("{s:?} must fail on one item, got {other:?}"),
        }
    }

    fn addrs(list: &AnchorList) -> Vec<String> {
        list.expand().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn given_an_empty_host_when_parsed_then_it_means_localhost() {
        let l = list(":9080");
        assert_eq!(
            l.items()[0].host(),
            &Host::Name("localhost".into()),
            "an empty host means localhost"
        );
        assert_eq!(l.items()[0].addr(), "localhost:9080", "the address must name localhost");
    }

    #[test]
    fn given_an_item_without_count_after_one_with_count_when_parsed_then_it_gets_one() {
        let l = list("10.0.0.1:9080#2,10.0.0.2:9090");
        let counts: Vec<_> = l.items().iter().map(Anchor::connections).collect();
        assert_eq!(counts, [2, 1], "an item's count must never be inherited from the previous one");
    }

    #[test]
    fn given_counts_when_expanded_then_each_connection_is_an_indexed_address_in_order() {
        let l = list("a:1#2,b:1");
        assert_eq!(
            addrs(&l),
            ["a:1{idx=0}", "a:1{idx=1}", "b:1{idx=0}"],
            "#N must give N indexed addresses, item by item in target order"
        );
        assert_eq!(l.total_connections(), 3, "the total must be the sum of the counts");
    }

    #[test]
    fn given_percent_23_when_parsed_then_it_is_read_as_hash() {
        assert_eq!(list("a:1%232,b:1%231"), list("a:1#2,b:1#1"), "%23 must be accepted for #");
    }

    #[test]
    fn given_ipv6_literals_when_parsed_then_they_are_bracketed_and_compared_by_value() {
        let l = list("[0:0::1]:80#2,[::ffff:10.0.0.1]:81");
        assert_eq!(
            l.to_string(),
            "[::1]:80#2,[::ffff:10.0.0.1]:81",
            "IPv6 displays in RFC 5952 form"
        );
        assert_eq!(
            item_error("[::1]:80,[0:0::1]:80").1,
            ItemErrorKind::Duplicate { first: 1, addr: "[::1]:80".into() }
        );
    }

    #[test]
    fn given_names_in_mixed_case_when_parsed_then_they_are_lowercased_and_compared_so() {
        assert_eq!(
            list("Host-1.Example_X.:9").to_string(),
            "host-1.example_x.:9",
            "names are lowercased"
        );
        assert_eq!(item_error("A:1,a:1").0, 2, "names are case-insensitive for duplicates");
    }

    #[test]
    fn given_localhost_written_two_ways_when_parsed_then_it_is_a_duplicate() {
        assert_eq!(
            item_error(":9080,localhost:9080").1,
            ItemErrorKind::Duplicate { first: 1, addr: "localhost:9080".into() }
        );
    }

    #[test]
    fn given_each_bad_item_form_when_parsed_then_the_specific_reason_is_reported() {
        use ItemErrorKind as K;
        let bad_port = |p: &str| K::BadPort { port: p.into() };
        let cases: Vec<(&str, usize, ItemErrorKind)> = vec![
            ("a:1,,b:1", 2, K::Empty),
            ("a:1,", 2, K::Empty),
            (",a:1", 1, K::Empty),
            (" a:1", 1, K::Whitespace),
            ("a:1 ,b:1", 1, K::Whitespace),
            ("a:1,b:1\t", 2, K::Whitespace),
            ("#2", 1, K::NoAddress),
            ("a", 1, K::MissingPort),
            ("a:", 1, K::MissingPort),
            ("a#2", 1, K::MissingPort),
            ("[::1]", 1, K::MissingPort),
            ("a:1#", 1, K::Count(CountError::Missing)),
            ("a:1#0", 1, K::Count(CountError::OutOfRange)),
            ("a:1#1025", 1, K::Count(CountError::OutOfRange)),
            ("a:1#99999999999999999999999", 1, K::Count(CountError::OutOfRange)),
            ("a:1#abc", 1, K::Count(CountError::NotDecimal { text: "abc".into() })),
            ("a:1#-1", 1, K::Count(CountError::NotDecimal { text: "-1".into() })),
            ("a:1#+1", 1, K::Count(CountError::NotDecimal { text: "+1".into() })),
            ("a:1#2#3", 1, K::Count(CountError::NotDecimal { text: "2#3".into() })),
            ("a:0", 1, bad_port("0")),
            ("a:65536", 1, bad_port("65536")),
            ("a:x", 1, bad_port("x")),
            ("a:+80", 1, bad_port("+80")),
            ("[::1:80", 1, K::UnclosedBracket),
            ("[::1]80", 1, K::AfterBracket),
            ("::1:80", 1, K::UnbracketedIpv6),
            ("[::g]:80", 1, K::BadIpv6 { text: "::g".into() }),
            ("[10.0.0.1]:80", 1, K::BadIpv6 { text: "10.0.0.1".into() }),
            ("[fe80::1%eth0]:80", 1, K::Ipv6Zone { text: "fe80::1%eth0".into() }),
            ("[fe80::g%eth0]:80", 1, K::BadIpv6 { text: "fe80::g%eth0".into() }),
            ("256.0.0.1:80", 1, K::BadIpv4 { text: "256.0.0.1".into() }),
            ("010.0.0.1:80", 1, K::BadIpv4 { text: "010.0.0.1".into() }),
            ("a/b:80", 1, K::BadHostChar { name: "a/b".into(), found: '/' }),
            ("a..b:80", 1, K::EmptyLabel { name: "a..b".into() }),
            (".a:80", 1, K::EmptyLabel { name: ".a".into() }),
        ];
        for (input, position, kind) in cases {
            assert_eq!(item_error(input), (position, kind), "{input:?} must be rejected this way");
        }
    }

    #[test]
    fn given_an_empty_list_when_parsed_then_it_is_its_own_error() {
        assert_eq!(
            "".parse::<AnchorList>(),
            Err(AnchorError::EmptyList),
            "an empty list has nothing to dial"
        );
    }

    #[test]
    fn given_port_and_count_bounds_when_parsed_then_both_ends_are_accepted() {
        let l = list("a:1#1,b:65535#1024");
        assert_eq!(l.total_connections(), 1025, "port 1..=65535 and N 1..=1024 are all accepted");
        assert_eq!(l.to_string(), "a:1,b:65535#1024", "#1 is the default and is not written");
    }

    #[test]
    fn given_long_names_when_parsed_then_the_dns_limits_apply() {
        let label63 = "a".repeat(63);
        assert!(format!("{label63}:1").parse::<AnchorList>().is_ok(), "a 63-byte label is allowed");
        let label64 = "a".repeat(64);
        let err = item_error(&format!("{label64}:1")).1;
        assert!(matches!(err, ItemErrorKind::NameTooLong { .. }), "a 64-byte label is too long");
        let name255 = ["a"; 127].join(".") + "aa";
        let err = item_error(&format!("{name255}:1")).1;
        assert!(matches!(err, ItemErrorKind::NameTooLong { .. }), "a 255-byte name is too long");
    }

    #[test]
    fn given_an_item_error_when_displayed_then_it_names_position_item_and_reason() {
        let err = "a:9080,b:9090#0".parse::<AnchorList>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"pass target: item 2 ("b:9090#0"): connection count must be 1..=1024"#
        );
    }

    #[test]
    fn given_a_service_with_slashes_and_count_when_parsed_then_both_are_kept() {
        let s: EtcdService = "foo/bar/my-service#3".parse().unwrap();
        assert_eq!(
            (s.name(), s.connections()),
            ("foo/bar/my-service", 3),
            "'/' belongs to the name"
        );
        assert_eq!(s.to_string(), "foo/bar/my-service#3", "display must be the canonical form");
        let s: EtcdService = "svc%232".parse().unwrap();
        assert_eq!((s.name(), s.connections()), ("svc", 2), "%23 must be accepted for #");
    }

    #[test]
    fn given_a_service_when_expanding_an_address_then_each_connection_is_indexed() {
        let s: EtcdService = "svc#2".parse().unwrap();
        let got: Vec<_> = s.expand("10.0.0.1:1").iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1:1{idx=0}", "10.0.0.1:1{idx=1}"], "N connections, indices 0..N");
    }

    #[test]
    fn given_each_bad_service_form_when_parsed_then_the_specific_reason_is_reported() {
        use ServiceErrorKind as K;
        assert_eq!(
            "".parse::<EtcdService>(),
            Err(ServiceError::Empty),
            "a service name is never empty"
        );
        let cases = [
            ("#3", K::NoName),
            ("a,b", K::Comma),
            ("a b", K::Whitespace),
            ("svc\n", K::Whitespace),
            ("svc\0", K::Control),
            ("svc#", K::Count(CountError::Missing)),
            ("svc#0", K::Count(CountError::OutOfRange)),
            ("svc#x", K::Count(CountError::NotDecimal { text: "x".into() })),
        ];
        for (input, kind) in cases {
            assert_eq!(
                input.parse::<EtcdService>(),
                Err(ServiceError::Invalid { service: input.into(), kind }),
                "{input:?} must be rejected this way"
            );
        }
    }
}
