//! Target-syntax properties of a `pass`-style resolver, checked on generated endpoints with
//! proptest; a failure carries proptest's minimal counterexample.
//!
//! | property | what must hold |
//! |---|---|
//! | `no-panic` | building the resolver never panics, whatever the endpoint |
//! | `counts` | a valid anchor list resolves to exactly ΣN addresses |
//! | `order` | the addresses follow the target: item by item, `idx` 0..N within each |
//! | `distinct` | the addresses are pairwise distinct, so a policy opens ΣN connections |
//! | `own-count` | an item without `#N` gets one connection, whatever the item before it asked for |
//! | `rejects-bad-count` | `#0`, `#abc`, `#-1` or a bare `#` is an error, not a silent 1 |
//! | `rejects-missing-port` | an item without a port is an error |
//! | `rejects-empty-item` | an empty item (`a:1,,b:1`) is an error |
//! | `rejects-duplicate` | the same address twice is an error |
//! | `rejects-whitespace` | stray whitespace is an error |
//!
//! # Determinism
//! Cases are drawn from a ChaCha generator seeded with the given seed, so a report is the same
//! on every run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use proptest::prelude::{Just, Strategy, any, prop, prop_oneof};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde::Serialize;

use crate::address::{Address, dedup};
use crate::resolver::{ResolverBuilder, UpdateSink};
use crate::target::Target;

/// One property's outcome for one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PropertyResult {
    /// The property's name (see the module table).
    pub property: String,
    /// Whether it held on every case.
    pub pass: bool,
    /// Whether it does not apply to the subject (a property of anchorage's channel internals,
    /// judged on a tonic client): then `pass` is false, and it is not a failure either.
    pub not_applicable: bool,
    /// The number of cases checked, or the minimal counterexample and what went wrong.
    pub detail: String,
}

impl PropertyResult {
    /// Whether it failed: it applies and did not hold.
    pub fn failed(&self) -> bool {
        !self.pass && !self.not_applicable
    }
}

/// What building a resolver for one endpoint gave.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Addresses(Vec<Address>),
    Rejected(String),
    Panicked(String),
}

/// Builds `builder` for `endpoint` and returns its first update (or error, or panic).
fn resolve(
    builder: &dyn ResolverBuilder,
    runtime: &tokio::runtime::Runtime,
    endpoint: &str,
) -> Outcome {
    let text = format!("{}:///{}", builder.scheme(), endpoint.replace('%', "%25"));
    let target = match Target::parse(&text, |s| s == builder.scheme()) {
        Ok(target) => target,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };
    let _entered = runtime.enter();
    let (sink, mut rx) = UpdateSink::pair();
    let built = catch_unwind(AssertUnwindSafe(|| builder.build(&target, sink)));
    let resolver = match built {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Outcome::Panicked(message);
        }
        Ok(Err(e)) => return Outcome::Rejected(e.to_string()),
        Ok(Ok(resolver)) => resolver,
    };
    let first = runtime.block_on(tokio::time::timeout(Duration::from_secs(1), rx.next()));
    drop(resolver);
    match first {
        Ok(Some(Ok(state))) => Outcome::Addresses(state.addresses),
        Ok(Some(Err(e))) => Outcome::Rejected(e.to_string()),
        Ok(None) | Err(_) => Outcome::Rejected("no update within 1 s".into()),
    }
}

/// A valid item: (text, addr, N).
fn item() -> impl Strategy<Value = (String, String, u32)> {
    let host = prop_oneof![
        "[a-z][a-z0-9-]{0,6}".prop_map(|h| h),
        (1u8..=254, 0u8..=255).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
    ];
    (host, 1u16..=65535, proptest::option::of(1u32..=4)).prop_map(|(host, port, n)| {
        let addr = format!("{host}:{port}");
        match n {
            Some(n) => (format!("{addr}#{n}"), addr, n),
            None => (addr.clone(), addr, 1),
        }
    })
}

/// A valid anchor list: items with distinct addresses.
fn list() -> impl Strategy<Value = Vec<(String, String, u32)>> {
    proptest::collection::vec(item(), 1..6).prop_map(|items| {
        let mut seen = std::collections::BTreeSet::new();
        items.into_iter().filter(|(_, addr, _)| seen.insert(addr.clone())).collect()
    })
}

fn join(items: &[(String, String, u32)]) -> String {
    items.iter().map(|(text, _, _)| text.as_str()).collect::<Vec<_>>().join(",")
}

/// How a valid list is broken for the `rejects-*` properties.
#[derive(Debug, Clone, Copy)]
enum Break {
    /// `#0`, `#abc`, `#-1` or a bare `#` after an item's address.
    BadCount,
    /// An item without its port.
    MissingPort,
    /// An empty item (two commas in a row).
    EmptyItem,
    /// An item's address repeated at the end.
    Duplicate,
    /// A space inside the list.
    Whitespace,
}

/// A valid list broken at one generated position in the way `how` says.
fn broken_list(how: Break) -> impl Strategy<Value = String> {
    let count = prop_oneof![Just("#0"), Just("#abc"), Just("#-1"), Just("#")];
    (list(), any::<prop::sample::Index>(), count).prop_map(move |(items, at, count)| {
        let mut texts: Vec<String> = items.iter().map(|(text, _, _)| text.clone()).collect();
        let i = at.index(texts.len());
        let addr = items[i].1.clone();
        match how {
            Break::BadCount => texts[i] = format!("{addr}{count}"),
            Break::MissingPort => {
                texts[i] = addr.rsplit_once(':').map_or(addr.clone(), |(h, _)| h.into())
            }
            Break::EmptyItem => texts.insert(i, String::new()),
            Break::Duplicate => texts.push(addr),
            Break::Whitespace => texts[i] = format!(" {}", texts[i]),
        }
        texts.join(",")
    })
}

/// Two items: the first with `#k` (k ≥ 2), the second without a count.
fn carry_over_pair() -> impl Strategy<Value = (String, String, u32)> {
    (item(), item(), 2u32..=4).prop_filter_map("distinct addresses", |(a, b, k)| {
        (a.1 != b.1).then(|| (format!("{}#{k},{}", a.1, b.1), b.1, k))
    })
}

pub(super) fn runner(seed: u64, cases: u32) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    // Shrinking that stops early is reported by proptest on stderr; the inputs here are small,
    // so allow enough steps to reach the minimal counterexample.
    let config =
        Config { cases, failure_persistence: None, max_shrink_iters: 512, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

pub(super) fn result<T>(
    property: &str,
    cases: u32,
    run: Result<(), TestError<T>>,
    show: impl Fn(&T) -> String,
) -> PropertyResult {
    let (pass, detail) = match run {
        Ok(()) => (true, format!("{cases} cases")),
        Err(TestError::Fail(reason, value)) => {
            (false, format!("counterexample {:?}: {}", show(&value), reason.message()))
        }
        Err(TestError::Abort(reason)) => (false, format!("aborted: {}", reason.message())),
    };
    PropertyResult { property: property.to_owned(), pass, not_applicable: false, detail }
}

/// Checks every property of the module table against `builder`, with `cases` generated
/// endpoints per property drawn from `seed`.
pub fn check(builder: &dyn ResolverBuilder, seed: u64, cases: u32) -> Vec<PropertyResult> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let detail = format!("cannot start a runtime: {e}");
            return vec![PropertyResult {
                property: "no-panic".into(),
                pass: false,
                not_applicable: false,
                detail,
            }];
        }
    };
    let resolve = |endpoint: &str| resolve(builder, &runtime, endpoint);
    let addresses = |endpoint: &str| match resolve(endpoint) {
        Outcome::Addresses(list) => Ok(list),
        Outcome::Rejected(error) => Err(TestCaseError::fail(format!("rejected: {error}"))),
        Outcome::Panicked(message) => Err(TestCaseError::fail(format!("panicked: {message}"))),
    };

    let no_panic =
        runner(seed, cases).run(
            &"[a-z0-9:#,\\[\\]%. -]{0,24}|\\PC{0,24}",
            |endpoint| match resolve(&endpoint) {
                Outcome::Panicked(message) => {
                    Err(TestCaseError::fail(format!("panicked: {message}")))
                }
                _ => Ok(()),
            },
        );
    let counts = runner(seed, cases).run(&list(), |items| {
        let got = addresses(&join(&items))?.len();
        let want: u32 = items.iter().map(|(_, _, n)| n).sum();
        if got == want as usize {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!("{got} addresses, expected {want}")))
        }
    });
    let order = runner(seed, cases).run(&list(), |items| {
        let show = |list: &[(String, Option<u32>)]| {
            let shown: Vec<String> = list
                .iter()
                .map(|(addr, idx)| match idx {
                    Some(i) => format!("{addr}{{idx={i}}}"),
                    None => addr.clone(),
                })
                .collect();
            shown.join(" ")
        };
        let got: Vec<(String, Option<u32>)> = addresses(&join(&items))?
            .into_iter()
            .map(|a| (a.addr.clone(), a.connection_index()))
            .collect();
        let want: Vec<(String, Option<u32>)> = items
            .iter()
            .flat_map(|(_, addr, n)| (0..*n).map(move |i| (addr.clone(), Some(i))))
            .collect();
        if got == want {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!("got [{}], expected [{}]", show(&got), show(&want))))
        }
    });
    let distinct = runner(seed, cases).run(&list(), |items| {
        let got = addresses(&join(&items))?;
        let unique = dedup(got.clone()).len();
        if unique == got.len() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!("{unique} distinct of {} addresses", got.len())))
        }
    });
    let rejects = |how| {
        runner(seed, cases).run(&broken_list(how), |endpoint| match resolve(&endpoint) {
            Outcome::Rejected(_) => Ok(()),
            Outcome::Addresses(list) => {
                let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
                Err(TestCaseError::fail(format!("accepted as [{}]", shown.join(" "))))
            }
            Outcome::Panicked(message) => Err(TestCaseError::fail(format!("panicked: {message}"))),
        })
    };
    let own_count = runner(seed, cases).run(&carry_over_pair(), |(endpoint, second, k)| {
        let got = addresses(&endpoint)?.iter().filter(|a| a.addr == second).count();
        if got == 1 {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{second} got {got} connections, not 1 (the first item has #{k})"
            )))
        }
    });
    let text = |endpoint: &String| endpoint.clone();
    let items = |items: &Vec<(String, String, u32)>| join(items);
    vec![
        result("no-panic", cases, no_panic, text),
        result("counts", cases, counts, items),
        result("order", cases, order, items),
        result("distinct", cases, distinct, items),
        result("own-count", cases, own_count, |(endpoint, _, _)| endpoint.clone()),
        result("rejects-bad-count", cases, rejects(Break::BadCount), text),
        result("rejects-missing-port", cases, rejects(Break::MissingPort), text),
        result("rejects-empty-item", cases, rejects(Break::EmptyItem), text),
        result("rejects-duplicate", cases, rejects(Break::Duplicate), text),
        result("rejects-whitespace", cases, rejects(Break::Whitespace), text),
    ]
}
