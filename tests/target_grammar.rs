//! Properties of the target and anchor-list grammars (DESIGN §2.1–2.3), checked on generated
//! input, and the examples from the original design notes.
//!
//! The generator seed is fixed so every run checks the same cases; failures are persisted under
//! `proptest-regressions/`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use anchorage::address::{Address, dedup};
use anchorage::anchor::{AnchorList, EtcdService};
use anchorage::target::{BUILTIN_SCHEMES, Target};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x616e_6368_6f72),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/target_grammar.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn builtin(input: &str) -> Result<Target, anchorage::target::TargetError> {
    Target::parse(input, |s| BUILTIN_SCHEMES.contains(&s))
}

/// Parses a list that the test built to be valid; failing is a test failure naming the text.
fn valid_list(text: &str) -> Result<AnchorList, TestCaseError> {
    text.parse().map_err(|e| TestCaseError::fail(format!("{text:?} must parse: {e}")))
}

/// Parses a service name that the test built to be valid.
fn valid_service(text: &str) -> Result<EtcdService, TestCaseError> {
    text.parse().map_err(|e| TestCaseError::fail(format!("{text:?} must parse: {e}")))
}

/// Parses a target that the test built to be valid.
fn valid_target(text: &str) -> Result<Target, TestCaseError> {
    builtin(text).map_err(|e| TestCaseError::fail(format!("{text:?} must parse: {e}")))
}

/// Runs every parser on `input` and formats every error, which must not panic.
fn parse_everything(input: &str) {
    let _ = builtin(input).map_err(|e| e.to_string());
    let _ = Target::parse(input, |_| true).map_err(|e| e.to_string());
    let _ = input.parse::<AnchorList>().map(|l| l.expand()).map_err(|e| e.to_string());
    let _ = input.parse::<EtcdService>().map(|s| s.expand("a:1")).map_err(|e| e.to_string());
}

/// One generated `pass` item, with the value it must parse to.
#[derive(Debug, Clone)]
struct GenItem {
    text: String,
    /// The normalised host as [`anchorage::anchor::Host`] displays it.
    host: String,
    port: u16,
    connections: u32,
}

fn host_strategy() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just((String::new(), "localhost".to_owned())),
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}(\\.[a-zA-Z0-9_-]{1,8}){0,2}\\.?"
            .prop_map(|name| (name.clone(), name.to_ascii_lowercase())),
        any::<[u8; 4]>().prop_map(|o| {
            let ip = Ipv4Addr::from(o);
            (ip.to_string(), ip.to_string())
        }),
        (any::<[u16; 8]>(), any::<bool>()).prop_map(|(segments, expanded)| {
            let ip = Ipv6Addr::from(segments);
            // Both the RFC 5952 form and the full eight-group form must parse to the same value.
            let written = if expanded {
                segments.map(|s| format!("{s:x}")).join(":")
            } else {
                ip.to_string()
            };
            (format!("[{written}]"), format!("[{ip}]"))
        }),
    ]
}

fn item_strategy() -> impl Strategy<Value = GenItem> {
    let count = prop_oneof![
        Just((String::new(), 1)),
        (1..=1024u32, prop::bool::ANY)
            .prop_map(|(n, escaped)| { (format!("{}{n}", if escaped { "%23" } else { "#" }), n) }),
    ];
    (host_strategy(), 1..=u16::MAX, count).prop_map(|((written, host), port, (suffix, n))| {
        GenItem { text: format!("{written}:{port}{suffix}"), host, port, connections: n }
    })
}

/// Valid anchor lists: 1..8 items, with later items naming an earlier address dropped.
fn list_strategy() -> impl Strategy<Value = Vec<GenItem>> {
    prop::collection::vec(item_strategy(), 1..8).prop_map(|items| {
        let mut seen = HashSet::new();
        items.into_iter().filter(|i| seen.insert((i.host.clone(), i.port))).collect()
    })
}

fn join(items: &[GenItem]) -> String {
    items.iter().map(|i| i.text.as_str()).collect::<Vec<_>>().join(",")
}

/// `text` with `%` always escaped and every other character escaped where `mask` says so.
fn percent_encode(text: &str, mask: &[bool]) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if c == '%' || mask.get(i).copied().unwrap_or(false) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn mixed_case(text: &str, mask: &[bool]) -> String {
    text.chars()
        .zip(mask.iter().chain(std::iter::repeat(&false)))
        .map(|(c, upper)| if *upper { c.to_ascii_uppercase() } else { c })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_arbitrary_strings_never_panics(input in any::<String>()) {
        parse_everything(&input);
    }

    #[test]
    fn parsing_arbitrary_bytes_read_lossily_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..64)
    ) {
        parse_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parsing_near_miss_grammar_strings_never_panics(
        input in "(pass|etcd|dns|PASS|x)?:?(//)?[a-z0-9]{0,3}/?[a-zA-Z0-9:#,%\\[\\]./ 23-]{0,24}"
    ) {
        parse_everything(&input);
    }

    #[test]
    fn a_generated_anchor_list_parses_to_the_items_it_was_built_from(items in list_strategy()) {
        let text = join(&items);
        let list = valid_list(&text)?;
        let got: Vec<_> = list
            .items()
            .iter()
            .map(|a| (a.host().to_string(), a.port(), a.connections()))
            .collect();
        let want: Vec<_> = items.iter().map(|i| (i.host.clone(), i.port, i.connections)).collect();
        prop_assert_eq!(got, want, "every item must keep its own host, port and count, in order");
    }

    #[test]
    fn an_anchor_list_parses_back_from_its_display(items in list_strategy()) {
        let list = valid_list(&join(&items))?;
        let shown = list.to_string();
        let again = valid_list(&shown)?;
        prop_assert_eq!(&again, &list, "parse(display(list)) must equal list");
        prop_assert_eq!(again.to_string(), shown, "the canonical form must be a fixed point");
    }

    #[test]
    fn expansion_has_one_address_per_connection_in_target_order(items in list_strategy()) {
        let list = valid_list(&join(&items))?;
        let expanded = list.expand();
        let sum: usize = items.iter().map(|i| i.connections as usize).sum();
        prop_assert_eq!(expanded.len(), sum, "expansion length must be the sum of the counts");
        prop_assert_eq!(list.total_connections(), sum);
        let want: Vec<(String, u32)> = list
            .items()
            .iter()
            .flat_map(|a| (0..a.connections()).map(move |i| (a.addr(), i)))
            .collect();
        let got: Vec<(String, u32)> = expanded
            .iter()
            .map(|a| (a.addr.clone(), a.connection_index().unwrap_or(u32::MAX)))
            .collect();
        prop_assert_eq!(got, want, "item by item in target order, indices 0..N within each");
        prop_assert_eq!(dedup(expanded.clone()).len(), expanded.len(),
            "every connection of a valid list must be a distinct address");
    }

    #[test]
    fn an_etcd_service_parses_back_from_its_display(
        name in "[a-zA-Z0-9/._-]{1,20}",
        count in prop::option::of(1..=1024u32),
    ) {
        let text = match count { Some(n) => format!("{name}#{n}"), None => name.clone() };
        let service = valid_service(&text)?;
        prop_assert_eq!(service.name(), name.as_str());
        prop_assert_eq!(service.connections(), count.unwrap_or(1), "absent #N must mean 1");
        let again = valid_service(&service.to_string())?;
        prop_assert_eq!(again, service, "parse(display(service)) must equal service");
    }

    #[test]
    fn a_generated_target_parses_to_its_parts_and_back_from_its_display(
        scheme in prop::sample::select(BUILTIN_SCHEMES),
        case_mask in prop::collection::vec(any::<bool>(), 12),
        authority in "[a-z0-9.:,@-]{0,20}",
        endpoint in "\\PC{1,30}",
        escape_mask in prop::collection::vec(any::<bool>(), 30),
    ) {
        let input = format!(
            "{}://{authority}/{}",
            mixed_case(scheme, &case_mask),
            percent_encode(&endpoint, &escape_mask)
        );
        let target = valid_target(&input)?;
        prop_assert_eq!(
            (target.scheme(), target.authority(), target.endpoint(), target.is_fallback()),
            (scheme, authority.as_str(), endpoint.as_str(), false),
            "scheme lowercased, authority as written, endpoint percent-decoded"
        );
        let again = valid_target(&target.to_string())?;
        prop_assert_eq!(again, target, "parse(display(target)) must equal target");
    }

    #[test]
    fn any_target_that_parses_keeps_its_parts_through_its_display(input in any::<String>()) {
        if let Ok(target) = builtin(&input) {
            let shown = target.to_string();
            let again = valid_target(&shown)?;
            prop_assert_eq!(
                (again.scheme(), again.authority(), again.endpoint()),
                (target.scheme(), target.authority(), target.endpoint()),
                "the canonical form must name the same resolver, authority and endpoint"
            );
        }
    }

    #[test]
    fn two_addresses_are_equal_iff_addr_and_attributes_are_equal(
        a in (prop::sample::select(vec!["a:1", "b:1"]), prop::option::of(0..3u32), prop::option::of("[xy]")),
        b in (prop::sample::select(vec!["a:1", "b:1"]), prop::option::of(0..3u32), prop::option::of("[xy]")),
    ) {
        let build = |(addr, idx, zone): (&str, Option<u32>, Option<String>)| {
            let mut address = Address::new(addr);
            if let Some(idx) = idx {
                address = address.with_connection_index(idx);
            }
            if let Some(zone) = zone {
                address = address.with_attribute("zone", zone);
            }
            address
        };
        let (x, y) = (build(a.clone()), build(b.clone()));
        prop_assert_eq!(x == y, a == b, "addresses must be equal exactly when addr and every attribute are");
        prop_assert_eq!(dedup([x, y]).len(), if a == b { 1 } else { 2 },
            "dedup must collapse exactly the equal addresses");
    }
}

/// The original notes dial `pass:///:9080#2,:9090#1` and expect two connections to the first
/// server and one to the second, both on localhost.
#[test]
fn the_notes_pass_example_with_empty_hosts_opens_two_and_one_connections_to_localhost() {
    let target = builtin("pass:///:9080#2,:9090#1").expect("the notes' target must parse");
    let list: AnchorList = target.endpoint().parse().expect("its endpoint must be an anchor list");

    let got: Vec<String> = list.expand().iter().map(ToString::to_string).collect();

    assert_eq!(
        got,
        ["localhost:9080{idx=0}", "localhost:9080{idx=1}", "localhost:9090{idx=0}"],
        "':port' means localhost, and '#N' means N connections, in target order"
    );
}

/// In the original Go parser an item without `#N` inherited the previous item's count, so
/// `10.0.0.2:9090` got two connections; its author meant one.
#[test]
fn the_notes_pass_example_gives_an_item_without_count_one_connection() {
    let target = builtin("pass:///10.0.0.1:9080#2,10.0.0.2:9090").expect("must parse");
    let list: AnchorList = target.endpoint().parse().expect("must be an anchor list");

    let got: Vec<String> = list.expand().iter().map(ToString::to_string).collect();

    assert_eq!(
        got,
        ["10.0.0.1:9080{idx=0}", "10.0.0.1:9080{idx=1}", "10.0.0.2:9090{idx=0}"],
        "an item without #N must get 1 connection, never the previous item's N"
    );
}

#[test]
fn the_notes_etcd_example_opens_three_connections_per_discovered_address() {
    let target = builtin("etcd:///user-service#3").expect("the notes' target must parse");
    let service: EtcdService = target.endpoint().parse().expect("its endpoint must be a service");

    assert_eq!(service.name(), "user-service", "'#3' must not be part of the service name");
    assert_eq!(service.connections(), 3, "'#3' must mean three connections per address");
    let got: Vec<String> =
        service.expand("10.0.0.1:50051").iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["10.0.0.1:50051{idx=0}", "10.0.0.1:50051{idx=1}", "10.0.0.1:50051{idx=2}"],
        "each discovered address must be opened N times, with indices 0..N"
    );
}
