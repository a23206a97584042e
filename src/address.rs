//! Addresses and their identity (DESIGN §2.3).
//!
//! An [`Address`] is what a resolver produces and what a load-balancing policy connects to: a
//! network address string plus ordered, value-compared [`Attributes`]. Two addresses are the same
//! subchannel exactly when both parts are equal, which is how `#N` in a `pass` target becomes N
//! separate connections (`idx=0..N`) and how duplicates in one resolver update collapse into one.

use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;

use crate::mutant::{self, Mutant};

/// The attribute key under which `pass` and `etcd` store an address's connection index
/// (`a:1#2` expands to `a:1{idx=0}` and `a:1{idx=1}`).
pub const CONNECTION_INDEX: &str = "idx";

/// One attribute value. Values compare by value, never by identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AttributeValue {
    /// An integer, such as a connection index.
    Int(i64),
    /// A string.
    Str(String),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Str(v) => write!(f, "{v:?}"),
        }
    }
}

impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

/// Ordered key → value attributes of an [`Address`], compared by value.
///
/// Iteration is in key order, so attributes can reach traces and snapshots deterministically.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes(BTreeMap<String, AttributeValue>);

impl Attributes {
    /// Empty attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns these attributes with `key` set to `value` (replacing any earlier value).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Returns these attributes without `key`.
    pub(crate) fn without(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&AttributeValue> {
        self.0.get(key)
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The attributes in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttributeValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

/// A resolved address: where to connect (`addr`, such as `10.0.0.1:9080` or `[::1]:50051`) and
/// attributes that distinguish otherwise equal addresses.
///
/// Equality, ordering and hashing cover both fields (DESIGN §2.3): equal `addr` **and** equal
/// attributes are one subchannel; the same `addr` with different attributes are two.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// The network address, `host:port`.
    pub addr: String,
    /// Attributes that take part in the address's identity.
    pub attributes: Attributes,
}

impl Address {
    /// An address with no attributes.
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), attributes: Attributes::new() }
    }

    /// Returns this address with attribute `key` set to `value`.
    pub fn with_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<AttributeValue>,
    ) -> Self {
        self.attributes = self.attributes.with(key, value);
        self
    }

    /// Returns this address tagged with connection index `idx` (the [`CONNECTION_INDEX`] attribute).
    pub fn with_connection_index(self, idx: u32) -> Self {
        self.with_attribute(CONNECTION_INDEX, i64::from(idx))
    }

    /// The connection index set by [`Address::with_connection_index`], if any.
    pub fn connection_index(&self) -> Option<u32> {
        match self.attributes.get(CONNECTION_INDEX) {
            Some(AttributeValue::Int(v)) => u32::try_from(*v).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attributes.is_empty() {
            f.write_str(&self.addr)
        } else {
            write!(f, "{}{}", self.addr, self.attributes)
        }
    }
}

/// A map keyed by [`Address`] identity that iterates in insertion order.
///
/// Policies keep their subchannels in one of these, so that a resolver update's duplicates
/// collapse and the iteration order (which reaches pickers and traces) is the resolver's order.
#[derive(Debug, Clone)]
pub struct AddressMap<V>(IndexMap<Address, V>);

impl<V> Default for AddressMap<V> {
    fn default() -> Self {
        Self(IndexMap::new())
    }
}

impl<V> AddressMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `value` under `address`; an existing entry keeps its position and gets the new value.
    /// Returns the previous value.
    pub fn insert(&mut self, address: Address, value: V) -> Option<V> {
        self.0.insert(address, value)
    }

    /// The value for `address`.
    pub fn get(&self, address: &Address) -> Option<&V> {
        self.0.get(address)
    }

    /// The value for `address`, mutably.
    pub fn get_mut(&mut self, address: &Address) -> Option<&mut V> {
        self.0.get_mut(address)
    }

    /// Whether `address` is present.
    pub fn contains(&self, address: &Address) -> bool {
        self.0.contains_key(address)
    }

    /// Removes `address`, keeping the order of the others.
    pub fn remove(&mut self, address: &Address) -> Option<V> {
        self.0.shift_remove(address)
    }

    /// The number of distinct addresses.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Address, &V)> {
        self.0.iter()
    }

    /// Values in insertion order, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.values_mut()
    }

    /// Keeps only the entries for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Address, &mut V) -> bool) {
        self.0.retain(|k, v| keep(k, v));
    }
}

/// Removes later duplicates (by [`Address`] identity) from `addresses`, keeping the first
/// occurrence of each in its original position.
pub fn dedup(addresses: impl IntoIterator<Item = Address>) -> Vec<Address> {
    dedup_with_mutant(addresses, None)
}

/// [`dedup`] with the channel's [`Mutant`], if any: what the policies call.
pub(crate) fn dedup_with_mutant(
    addresses: impl IntoIterator<Item = Address>,
    mutant: Option<Mutant>,
) -> Vec<Address> {
    let mut seen = AddressMap::new();
    let mut kept = Vec::new();
    for address in addresses {
        // Mutant DedupByHostPortOnly: identity by `host:port` alone, attributes ignored.
        let key = if mutant::is(mutant, Mutant::DedupByHostPortOnly) {
            Address::new(address.addr.clone())
        } else {
            address.clone()
        };
        if !seen.contains(&key) {
            seen.insert(key, ());
            kept.push(address);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_addr_with_equal_attributes_is_one_address() {
        let a = Address::new("a:1").with_connection_index(0);
        let b = Address::new("a:1").with_connection_index(0);
        assert_eq!(a, b, "equal addr and equal attributes must be the same address");
        assert_eq!(dedup([a, b]).len(), 1);
    }

    #[test]
    fn same_addr_with_distinct_attributes_is_two_addresses() {
        let a = Address::new("a:1").with_connection_index(0);
        let b = Address::new("a:1").with_connection_index(1);
        assert_ne!(a, b, "distinct attributes must make distinct addresses");
        assert_eq!(dedup([a, b]).len(), 2);
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        let list = ["b:1", "a:1", "b:1", "c:1", "a:1"].map(Address::new);
        let got: Vec<_> = dedup(list).into_iter().map(|a| a.addr).collect();
        assert_eq!(got, ["b:1", "a:1", "c:1"]);
    }

    #[test]
    fn the_host_port_dedup_mutant_collapses_distinct_attributes_and_nothing_else_does() {
        let list = [0, 1].map(|i| Address::new("a:1").with_connection_index(i));
        assert_eq!(dedup_with_mutant(list.clone(), None).len(), 2);
        let mutated = dedup_with_mutant(list.clone(), Some(Mutant::DedupByHostPortOnly));
        assert_eq!(mutated, [list[0].clone()], "the mutant must keep only the first a:1");
        let other = dedup_with_mutant(list, Some(Mutant::RoundRobinAlwaysFirst));
        assert_eq!(other.len(), 2, "another mutant must not change dedup");
    }

    #[test]
    fn display_shows_attributes_in_key_order() {
        let a = Address::new("a:1").with_attribute("zone", "x").with_connection_index(2);
        assert_eq!(a.to_string(), r#"a:1{idx=2,zone="x"}"#);
    }
}
