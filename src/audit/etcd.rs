//! Discovery properties of an `etcd`-style resolver, checked against an in-memory etcd served
//! on a loopback port, with generated services, addresses and counts.
//!
//! | property | what must hold |
//! |---|---|
//! | `etcd-counts` | k addresses registered under `svc/` and a target `svc#N` give k×N addresses |
//! | `etcd-order` | addresses in key order, `idx` 0..N within each |
//! | `etcd-prefix` | keys of a service whose name extends `svc` (`svcfoo/…`) are never taken |
//! | `etcd-skips-malformed` | a value that is not Go's naming JSON is skipped, the rest kept |
//! | `etcd-watch` | an address registered after the first update shows up in a later one |
//! | `etcd-rejects-bad-count` | `svc#0`, `svc#abc`, `svc#` are errors, not a silent 1 |
//!
//! # Determinism
//! Cases come from a ChaCha generator seeded with the given seed; each case uses its own
//! service name, so cases never see each other's keys.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::{Just, Strategy, prop_oneof};
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::syntax::{PropertyResult, result, runner};
use crate::address::Address;
use crate::etcd::memory::MemoryEtcd;
use crate::etcd::naming::{encode_endpoint, endpoint_key};
use crate::resolver::{ResolverBuilder, ResolverState, UpdateSink};
use crate::target::Target;

/// One generated case: `count` connections per address, `addresses` registered.
#[derive(Debug, Clone)]
struct Case {
    count: u32,
    addresses: Vec<String>,
}

fn case() -> impl Strategy<Value = Case> {
    let addr = (1u8..=254, 1u16..=65535).prop_map(|(h, p)| format!("10.1.0.{h}:{p}"));
    (1u32..=4, proptest::collection::btree_set(addr, 1..5))
        .prop_map(|(count, addresses)| Case { count, addresses: addresses.into_iter().collect() })
}

/// The etcd the checks run against, and a counter that gives each case its own service.
struct Fixture<'a> {
    builder: &'a dyn ResolverBuilder,
    runtime: &'a tokio::runtime::Runtime,
    etcd: MemoryEtcd,
    addr: SocketAddr,
    next: Cell<u32>,
}

impl Fixture<'_> {
    fn service(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("audit/svc{n}")
    }

    fn register(&self, service: &str, addr: &str) {
        self.etcd.put(endpoint_key(service, addr), encode_endpoint(addr, &Value::Null));
    }

    /// Builds the resolver for `service#count` and returns its updates (the first within 2 s).
    fn resolve(
        &self,
        endpoint: &str,
    ) -> Result<(Box<dyn crate::resolver::Resolver>, Receiver), String> {
        let text = format!("{}://{}/{endpoint}", self.builder.scheme(), self.addr);
        let target =
            Target::parse(&text, |s| s == self.builder.scheme()).map_err(|e| e.to_string())?;
        let _entered = self.runtime.enter();
        let (sink, rx) = UpdateSink::pair();
        let resolver = self.builder.build(&target, sink).map_err(|e| e.to_string())?;
        Ok((resolver, Receiver(rx)))
    }

    fn next_state(&self, rx: &mut Receiver) -> Result<ResolverState, TestCaseError> {
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), rx.0.next()).await });
        match next {
            Ok(Some(Ok(state))) => Ok(state),
            Ok(Some(Err(e))) => Err(TestCaseError::fail(format!("resolver error: {e}"))),
            Ok(None) | Err(_) => Err(TestCaseError::fail("no update within 2 s")),
        }
    }

    /// Registers `case` under a fresh service (plus `extra` keys) and returns the first update.
    fn first_update(
        &self,
        case: &Case,
        extra: impl Fn(&str),
    ) -> Result<Vec<Address>, TestCaseError> {
        let service = self.service();
        for addr in &case.addresses {
            self.register(&service, addr);
        }
        extra(&service);
        let (resolver, mut rx) =
            self.resolve(&format!("{service}#{}", case.count)).map_err(TestCaseError::fail)?;
        let state = self.next_state(&mut rx);
        drop(resolver);
        Ok(state?.addresses)
    }
}

/// The resolver's update channel.
struct Receiver(crate::resolver::Updates);

fn expected(case: &Case) -> Vec<(String, Option<u32>)> {
    case.addresses.iter().flat_map(|a| (0..case.count).map(move |i| (a.clone(), Some(i)))).collect()
}

fn shown(list: &[Address]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// Checks every property of the module table against `builder` (an `etcd`-style resolver whose
/// target authority names the etcd endpoint), with `cases` cases per property from `seed`.
pub fn check(builder: &dyn ResolverBuilder, seed: u64, cases: u32) -> Vec<PropertyResult> {
    let failed = |property: &str, detail: String| {
        vec![PropertyResult {
            property: property.into(),
            pass: false,
            not_applicable: false,
            detail,
        }]
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return failed("etcd-counts", format!("cannot start a runtime: {e}")),
        };
    let etcd = MemoryEtcd::new();
    let listener = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(listener) => listener,
        Err(e) => return failed("etcd-counts", format!("cannot bind a loopback port: {e}")),
    };
    let Ok(addr) = listener.local_addr() else {
        return failed("etcd-counts", "cannot read the bound address".into());
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(etcd.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let fixture = Fixture { builder, runtime: &runtime, etcd, addr, next: Cell::new(0) };
    let f = &fixture;

    let counts = runner(seed, cases).run(&case(), |case| {
        let got = f.first_update(&case, |_| {})?.len();
        let want = case.addresses.len() * case.count as usize;
        if got == want {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!("{got} addresses, expected {want}")))
        }
    });
    let order = runner(seed, cases).run(&case(), |case| {
        let got = f.first_update(&case, |_| {})?;
        let pairs: Vec<(String, Option<u32>)> =
            got.iter().map(|a| (a.addr.clone(), a.connection_index())).collect();
        if pairs == expected(&case) {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!("got [{}]", shown(&got))))
        }
    });
    let prefix = runner(seed, cases).run(&case(), |case| {
        let got =
            f.first_update(&case, |service| f.register(&format!("{service}foo"), "10.9.9.9:9"))?;
        match got.iter().find(|a| a.addr == "10.9.9.9:9") {
            None => Ok(()),
            Some(_) => Err(TestCaseError::fail("took an address of the service \"<svc>foo\"")),
        }
    });
    let malformed = runner(seed, cases).run(&case(), |case| {
        let got = f.first_update(&case, |service| {
            f.etcd.put(format!("{service}/zz-broken"), b"not json".to_vec());
        })?;
        let want = case.addresses.len() * case.count as usize;
        if got.len() == want {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{} addresses with a malformed value present, expected {want}",
                got.len()
            )))
        }
    });
    let watch = runner(seed, cases.min(16)).run(&case(), |case| {
        let service = f.service();
        let (first, rest) = case.addresses.split_first().expect("at least one address");
        f.register(&service, first);
        let (resolver, mut rx) =
            f.resolve(&format!("{service}#{}", case.count)).map_err(TestCaseError::fail)?;
        f.next_state(&mut rx)?;
        let late = rest.first().cloned().unwrap_or_else(|| "10.2.0.1:1".into());
        f.register(&service, &late);
        let state = f.next_state(&mut rx)?;
        drop(resolver);
        if state.addresses.iter().any(|a| a.addr == late) {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{late} registered late is missing from [{}]",
                shown(&state.addresses)
            )))
        }
    });
    let bad = prop_oneof![Just("#0"), Just("#abc"), Just("#"), Just("#-1"), Just("#1025")];
    let rejects = runner(seed, cases).run(&bad, |bad| {
        let endpoint = format!("{}{bad}", f.service());
        match f.resolve(&endpoint) {
            Err(_) => Ok(()),
            Ok(_) => Err(TestCaseError::fail("accepted")),
        }
    });

    // No graceful drain: the resolvers are gone and nothing here reads the etcd again.
    let _ = stop.send(());
    server.abort();
    drop(fixture);
    runtime.shutdown_background();
    let text = |c: &Case| format!("#{} over {:?}", c.count, c.addresses);
    vec![
        result("etcd-counts", cases, counts, text),
        result("etcd-order", cases, order, text),
        result("etcd-prefix", cases, prefix, text),
        result("etcd-skips-malformed", cases, malformed, text),
        result("etcd-watch", cases.min(16), watch, text),
        result("etcd-rejects-bad-count", cases, rejects, |b: &&str| format!("<svc>{b}")),
    ]
}
