//! `etcd`: discovery from etcd, interoperable with etcd's Go `naming/endpoints` package
//! (DESIGN §2.7).
//!
//! `etcd:///my-service#N` reads every key under `my-service/` (with the trailing slash, so
//! `foo` never sees `foobar/…`), decodes each value as Go's JSON endpoint
//! ([`crate::etcd::naming`]), and opens N connections to each discovered address: each
//! address becomes N [`Address`]es tagged with connection indices `0..N`. The authority names
//! the etcd endpoints (`etcd://10.0.0.1:2379,10.0.0.2:2379/my-service#2`); an empty authority
//! uses the builder's ([`EtcdBuilder::new`]; `127.0.0.1:2379` by default).
//!
//! # How it follows etcd
//! 1. Range-read the prefix; the read's revision is `R`. Publish the addresses, ordered by key,
//!    each address once even when several keys name it.
//! 2. Watch the prefix from `R + 1` and publish after every batch that changes the addresses.
//! 3. Watch lost (the connection failed, etcd cancelled it): watch again from the revision after
//!    the last event seen, after a backoff, so no event is missed or applied twice.
//! 4. Compacted (the watch's start revision is gone from etcd's history): go back to 1 — a full
//!    read replaces every address, so deletions hidden by the compaction are seen too.
//! 5. etcd unreachable: keep the last published addresses and retry with exponential backoff
//!    and seeded jitter ([`EtcdBuilder::retry_backoff`]). Only before the first successful read
//!    are failures reported to the channel, as resolver errors.
//!
//! Values that do not decode are skipped: the key contributes no address, a warning is logged
//! and [`EtcdResolverStats`] counts it (each time it is read). A value with `"Op":1` also
//! contributes no address.
//!
//! [`Resolver::resolve_now`] asks for a full re-read; it is honoured at most once per
//! [`EtcdBuilder::min_resolve_interval`] after the previous read (30 s by default), since the
//! watch already delivers every change. Dropping the resolver stops its task and closes its
//! etcd client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Resolver, ResolverBuilder, ResolverError, ResolverState, UpdateSink};
use crate::address::Address;
use crate::anchor::{EtcdService, MAX_TOTAL_CONNECTIONS};
use crate::backoff::{Backoff, BackoffConfig};
use crate::etcd::naming::{EndpointUpdate, decode_endpoint, service_prefix};
use crate::etcd::pb::mvccpb::{Event, KeyValue, event::EventType};
use crate::etcd::{Endpoints, EtcdClient, EtcdClientBuilder, EtcdError, WatchOptions};
use crate::target::Target;

/// Builds `etcd` resolvers.
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    client: EtcdClientBuilder,
    retry: BackoffConfig,
    min_resolve_interval: Duration,
    seed: u64,
    stats: EtcdResolverStats,
}

impl Default for EtcdBuilder {
    /// Resolvers with a default client ([`EtcdClientBuilder::default`], endpoint
    /// `127.0.0.1:2379`).
    fn default() -> Self {
        Self::new(EtcdClientBuilder::default())
    }
}

impl EtcdBuilder {
    /// Resolvers whose etcd clients are built from `client`: its endpoints serve targets with an
    /// empty authority; a target's authority replaces them. Its connector, timeouts and
    /// keep-alive apply to every resolver.
    pub fn new(client: EtcdClientBuilder) -> Self {
        Self {
            client,
            retry: BackoffConfig {
                initial: Duration::from_millis(500),
                multiplier: 1.6,
                jitter: 0.2,
                max: Duration::from_secs(10),
            },
            min_resolve_interval: Duration::from_secs(30),
            seed: 0,
            stats: EtcdResolverStats::default(),
        }
    }

    /// Sets the backoff between failed reads and watches. Default: 0.5 s, ×1.6, ±20 %, at most
    /// 10 s.
    pub fn retry_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.retry = backoff;
        self
    }

    /// Sets the least time between full re-reads caused by re-resolution requests. Default 30 s.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.min_resolve_interval = interval;
        self
    }

    /// Seeds the retry jitter of the resolvers it builds. Default: 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Counters shared by every resolver this builder builds (and its clones).
    pub fn stats(&self) -> EtcdResolverStats {
        self.stats.clone()
    }
}

impl ResolverBuilder for EtcdBuilder {
    fn scheme(&self) -> &str {
        "etcd"
    }

    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        target.endpoint().parse::<EtcdService>()?;
        if !target.authority().is_empty() {
            target.authority().parse::<Endpoints>()?;
        }
        Ok(())
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        self.validate(target)?;
        let service: EtcdService = target.endpoint().parse()?;
        let mut client = self.client.clone();
        if !target.authority().is_empty() {
            client = client.endpoints(target.authority().parse::<Endpoints>()?);
        }
        let unavailable = |err: EtcdError| ResolverError::EtcdUnavailable {
            service: service.name().to_owned(),
            endpoints: client.configured_endpoints().to_string(),
            reason: err.to_string(),
        };
        let etcd = client.build().map_err(unavailable)?;
        let wake = Arc::new(Notify::new());
        let discovery = Discovery {
            prefix: service_prefix(service.name()).into_bytes(),
            service,
            client: etcd,
            updates,
            entries: BTreeMap::new(),
            published: None,
            backoff: Backoff::new(self.retry.clone(), ChaCha8Rng::seed_from_u64(self.seed)),
            stats: self.stats.clone(),
            wake: wake.clone(),
            min_interval: self.min_resolve_interval,
            last_read: None,
        };
        let task = tokio::spawn(discovery.run());
        Ok(Box::new(EtcdResolver { wake, task }))
    }

    /// The service name (without `#N`), which names what the channel talks to; characters a
    /// URI authority cannot hold (such as the `/` of `foo/bar/my-service`) become `_`.
    fn default_authority(&self, target: &Target) -> String {
        match target.endpoint().parse::<EtcdService>() {
            Ok(service) => super::sanitize_authority(service.name()),
            Err(_) => target.endpoint().to_owned(),
        }
    }
}

#[derive(Debug)]
struct EtcdResolver {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Resolver for EtcdResolver {
    fn resolve_now(&mut self) {
        self.wake.notify_one();
    }
}

impl Drop for EtcdResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts what the resolvers of one [`EtcdBuilder`] did. Cheap to clone; clones share counts.
#[derive(Debug, Clone, Default)]
pub struct EtcdResolverStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    watches: AtomicU64,
    compactions: AtomicU64,
    malformed: AtomicU64,
    failures: AtomicU64,
}

/// A snapshot of [`EtcdResolverStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EtcdResolverCounts {
    /// Full reads of a service prefix that succeeded.
    pub reads: u64,
    /// Watches created.
    pub watches: u64,
    /// Watches cancelled because their start revision was compacted.
    pub compactions: u64,
    /// Values skipped because they did not decode, counted each time one was read.
    pub malformed_values: u64,
    /// Reads and watches that failed, and watches lost.
    pub failures: u64,
}

impl EtcdResolverStats {
    /// The counts so far.
    pub fn snapshot(&self) -> EtcdResolverCounts {
        let c = &self.0;
        EtcdResolverCounts {
            reads: c.reads.load(Ordering::Relaxed),
            watches: c.watches.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            malformed_values: c.malformed.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How following the watch ended.
enum Follow {
    /// Read the whole prefix again (compaction, or a re-resolution request).
    Reread,
    /// The channel is gone.
    Closed,
}

/// The resolver's task: owns the client and the discovered state.
struct Discovery {
    client: EtcdClient,
    service: EtcdService,
    prefix: Vec<u8>,
    updates: UpdateSink,
    /// Discovered addresses by key.
    entries: BTreeMap<Vec<u8>, String>,
    /// The last list sent to the channel; `None` before the first successful read.
    published: Option<Vec<Address>>,
    backoff: Backoff,
    stats: EtcdResolverStats,
    wake: Arc<Notify>,
    min_interval: Duration,
    last_read: Option<Instant>,
}

impl Discovery {
    async fn run(mut self) {
        loop {
            let revision = loop {
                match self.read().await {
                    Ok(revision) => break revision,
                    Err(err) => {
                        if !self.failed("read", &err) {
                            return;
                        }
                        self.pause().await;
                    }
                }
            };
            if !self.publish() {
                return;
            }
            match self.follow(revision + 1).await {
                Follow::Reread => continue,
                Follow::Closed => return,
            }
        }
    }

    /// Replaces every entry with a fresh read of the prefix; returns the read's revision.
    async fn read(&mut self) -> Result<i64, EtcdError> {
        let read = self.client.range_prefix(self.prefix.clone()).await?;
        EtcdResolverStats::count(&self.stats.0.reads);
        self.last_read = Some(Instant::now());
        self.entries.clear();
        for kv in read.kvs {
            self.apply_put(kv);
        }
        tracing::debug!(service = %self.service, revision = read.revision, "etcd resolver: read");
        Ok(read.revision)
    }

    /// Watches from `next` on, re-watching after losses, until a full re-read is needed.
    async fn follow(&mut self, mut next: i64) -> Follow {
        let wake = self.wake.clone();
        let mut reread_at: Option<Instant> = None;
        loop {
            let options = WatchOptions::prefix(self.prefix.clone()).start_revision(next);
            let mut watcher = match self.client.watch(options).await {
                Ok(watcher) => watcher,
                Err(err) if err.is_compacted() => return self.compacted(&err),
                Err(err) => {
                    if !self.failed("watch", &err) {
                        return Follow::Closed;
                    }
                    self.pause().await;
                    continue;
                }
            };
            EtcdResolverStats::count(&self.stats.0.watches);
            self.backoff.reset();
            loop {
                tokio::select! {
                    biased;
                    batch = watcher.next() => match batch {
                        Ok(batch) => {
                            if let Some(last) = self.apply(batch.events) {
                                next = last + 1;
                            }
                            if !self.publish() {
                                return Follow::Closed;
                            }
                        }
                        Err(err) if err.is_compacted() => return self.compacted(&err),
                        Err(err) => {
                            if !self.failed("watch", &err) {
                                return Follow::Closed;
                            }
                            break;
                        }
                    },
                    () = wake.notified() => {
                        let allowed = self.last_read.map(|at| at + self.min_interval);
                        let now = Instant::now();
                        reread_at = Some(allowed.map_or(now, |at| at.max(now)));
                    }
                    () = sleep_until(reread_at) => return Follow::Reread,
                }
            }
            drop(watcher);
            tracing::info!(service = %self.service, next, "etcd resolver: re-watching");
            self.pause().await;
        }
    }

    fn compacted(&self, err: &EtcdError) -> Follow {
        EtcdResolverStats::count(&self.stats.0.compactions);
        tracing::info!(service = %self.service, %err, "etcd resolver: reading the service again");
        Follow::Reread
    }

    /// Applies watched events; returns the revision of the last one.
    fn apply(&mut self, events: Vec<Event>) -> Option<i64> {
        let mut last = None;
        for event in events {
            let Some(kv) = event.kv else { continue };
            last = Some(kv.mod_revision);
            if event.r#type == EventType::Delete as i32 {
                self.entries.remove(&kv.key);
            } else {
                self.apply_put(kv);
            }
        }
        last
    }

    fn apply_put(&mut self, kv: KeyValue) {
        if !kv.key.starts_with(&self.prefix) {
            return;
        }
        match decode_endpoint(&kv.value) {
            Ok(EndpointUpdate::Add { addr, .. }) => {
                self.entries.insert(kv.key, addr);
            }
            Ok(_) => {
                self.entries.remove(&kv.key);
            }
            Err(err) => {
                EtcdResolverStats::count(&self.stats.0.malformed);
                let key = String::from_utf8_lossy(&kv.key);
                tracing::warn!(service = %self.service, %key, %err, "etcd resolver: skipping value");
                self.entries.remove(&kv.key);
            }
        }
    }

    /// Sends the addresses if they changed (always after the first read). False once the
    /// channel is gone.
    fn publish(&mut self) -> bool {
        let mut seen = BTreeSet::new();
        let distinct: Vec<&String> =
            self.entries.values().filter(|addr| seen.insert(addr.as_str())).collect();
        // At most MAX_TOTAL_CONNECTIONS in all: whole addresses, in key order, past it dropped.
        let fit = (MAX_TOTAL_CONNECTIONS / self.service.connections()) as usize;
        if distinct.len() > fit {
            let dropped = distinct.len() - fit;
            tracing::warn!(
                service = %self.service, dropped,
                "etcd resolver: more addresses than {MAX_TOTAL_CONNECTIONS} connections allow; \
                 using the first {fit}"
            );
        }
        let addresses: Vec<Address> =
            distinct.into_iter().take(fit).flat_map(|addr| self.service.expand(addr)).collect();
        if self.published.as_ref() == Some(&addresses) {
            return !self.updates.is_closed();
        }
        tracing::debug!(service = %self.service, count = addresses.len(), "etcd resolver: update");
        self.published = Some(addresses.clone());
        self.updates.update(ResolverState::from_addresses(addresses))
    }

    /// Logs and counts a failure; before the first successful read, reports it to the channel.
    /// False once the channel is gone.
    fn failed(&self, op: &str, err: &EtcdError) -> bool {
        EtcdResolverStats::count(&self.stats.0.failures);
        tracing::warn!(service = %self.service, op, %err, "etcd resolver: failed; will retry");
        if self.published.is_some() {
            return !self.updates.is_closed();
        }
        self.updates.error(ResolverError::EtcdUnavailable {
            service: self.service.name().to_owned(),
            endpoints: self.client.endpoints().to_string(),
            reason: err.to_string(),
        })
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::etcd::memory::MemoryEtcd;

    fn parse(target: &str) -> Target {
        Target::parse(target, |s| s == "etcd").unwrap()
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    #[tokio::test]
    async fn targets_with_a_bad_service_or_bad_endpoints_are_refused_at_build() {
        let builder = EtcdBuilder::default();
        let build = |target: &str| {
            let (sink, _updates) = UpdateSink::pair();
            builder.build(&parse(target), sink).map(|_| ()).unwrap_err()
        };
        assert!(matches!(build("etcd:///#3"), ResolverError::EtcdService(_)));
        assert!(matches!(build("etcd:///svc#0"), ResolverError::EtcdService(_)));
        assert!(matches!(build("etcd://a:1#2/svc"), ResolverError::EtcdEndpoints(_)));
        assert!(matches!(build("etcd://a/svc"), ResolverError::EtcdEndpoints(_)));
    }

    #[tokio::test]
    async fn resolve_now_rereads_at_most_once_per_interval() {
        let etcd = MemoryEtcd::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoints: Endpoints = listener.local_addr().unwrap().to_string().parse().unwrap();
        let server = tokio::spawn(etcd.serve(listener, std::future::pending()));
        let interval = Duration::from_millis(300);
        let builder = EtcdBuilder::new(EtcdClientBuilder::default().endpoints(endpoints))
            .min_resolve_interval(interval);
        let stats = builder.stats();
        let (sink, mut updates) = UpdateSink::pair();
        let started = Instant::now();
        let mut resolver = builder.build(&parse("etcd:///svc"), sink).unwrap();
        updates.next().await.unwrap().expect("an empty service resolves to no addresses");
        wait_until("the watch is created", || stats.snapshot().watches == 1).await;

        for _ in 0..5 {
            resolver.resolve_now();
        }
        wait_until("a second read", || stats.snapshot().reads == 2).await;
        assert!(
            started.elapsed() >= interval,
            "a re-read must wait until the interval after the previous read has passed"
        );
        tokio::time::sleep(interval * 2).await;
        assert_eq!(stats.snapshot().reads, 2, "five requests within one interval make one read");
        drop(resolver);
        server.abort();
    }
}
