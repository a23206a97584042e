//! `dns`: host names resolved with the system resolver, re-resolved on request at a bounded
//! rate, and retried with backoff after a failure (DESIGN §2.1, §2.4).
//!
//! `dns:///example.com:50051` resolves `example.com` and connects to every address it returns
//! on port 50051; without a port, 443. IPv6 literals need brackets when a port is given
//! (`dns:///[::1]:50051`). Custom DNS servers in the authority are not supported.
//!
//! # When it looks up
//! - At once when the channel is built.
//! - After a successful lookup whose addresses the policy took, only when the channel asks
//!   (`resolve_now`: a lost connection, a failed pass), and at most once per
//!   [`DnsBuilder::min_interval`] (30 s by default, as in grpc-go).
//! - After a failed lookup, or a list the policy rejected (an empty one), again by itself after
//!   an exponential backoff ([`DnsBuilder::backoff`]; gRPC's connection backoff by default: 1 s,
//!   ×1.6, ±20 %, at most 120 s), as grpc-go's DNS resolver does. Nobody has to ask: a name that
//!   starts resolving later is picked up within one backoff.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Resolver, ResolverBuilder, ResolverError, ResolverState, UpdateError, UpdateSink,
    reject_authority,
};
use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig};
use crate::target::Target;

/// The default port for `dns` targets without one.
pub const DEFAULT_PORT: u16 = 443;

/// What a [`Lookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// How the `dns` resolver turns a host and port into socket addresses.
///
/// # Contract
/// Called from the resolver's own task, one lookup at a time. It may take as long as it needs;
/// an error is reported to the channel and retried with backoff.
pub trait Lookup: Send + Sync + fmt::Debug + 'static {
    /// Looks `host` up, returning addresses with `port`.
    fn lookup(&self, host: &str, port: u16) -> LookupFuture;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Builds `dns` resolvers.
#[derive(Debug, Clone)]
pub struct DnsBuilder {
    min_interval: Duration,
    backoff: BackoffConfig,
    seed: Option<u64>,
    lookup: Arc<dyn Lookup>,
}

impl Default for DnsBuilder {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            seed: None,
            lookup: Arc::new(SystemLookup),
        }
    }
}

impl DnsBuilder {
    /// Sets the least time between two lookups caused by re-resolution requests. Default 30 s.
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// Sets the backoff between retries after a failed or rejected lookup. Default:
    /// [`BackoffConfig::default`] (1 s, ×1.6, ±20 %, at most 120 s).
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the retry jitter. Default: a seed drawn from the operating system per resolver.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Replaces the system resolver, e.g. with a simulated DNS. Default: [`SystemLookup`].
    pub fn lookup(mut self, lookup: impl Lookup) -> Self {
        self.lookup = Arc::new(lookup);
        self
    }
}

impl ResolverBuilder for DnsBuilder {
    fn scheme(&self) -> &str {
        "dns"
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        self.validate(target)?;
        let (host, port) = split_host_port(target.endpoint())?;
        // One pending request is enough: more while one waits say nothing new.
        let (wake, requests) = mpsc::channel(1);
        let seed = self.seed.unwrap_or_else(rand::random);
        let backoff = Backoff::new(self.backoff.clone(), ChaCha8Rng::seed_from_u64(seed));
        let task = Watcher {
            host,
            port,
            min_interval: self.min_interval,
            backoff,
            lookup: self.lookup.clone(),
            updates,
            requests,
        };
        Ok(Box::new(DnsResolver { wake, task: tokio::spawn(task.run()) }))
    }

    /// The endpoint's `host:port`, with the default port filled in and IPv6 in brackets.
    fn validate(&self, target: &Target) -> Result<(), ResolverError> {
        reject_authority(target)?;
        split_host_port(target.endpoint())?;
        Ok(())
    }

    fn default_authority(&self, target: &Target) -> String {
        match split_host_port(target.endpoint()) {
            Ok((host, port)) if host.contains(':') => format!("[{host}]:{port}"),
            Ok((host, port)) => format!("{host}:{port}"),
            Err(_) => target.endpoint().to_owned(),
        }
    }
}

#[derive(Debug)]
struct DnsResolver {
    wake: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Resolver for DnsResolver {
    fn resolve_now(&mut self) {
        // Full means a request is already pending.
        let _ = self.wake.try_send(());
    }
}

impl Drop for DnsResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resolver's task.
struct Watcher {
    host: String,
    port: u16,
    min_interval: Duration,
    backoff: Backoff,
    lookup: Arc<dyn Lookup>,
    updates: UpdateSink,
    requests: mpsc::Receiver<()>,
}

/// How one lookup ended.
enum Outcome {
    /// The policy took the addresses.
    Taken,
    /// The lookup failed, or the policy rejected its list: retry after a backoff.
    Retry,
    /// The channel is gone.
    Closed,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            // Requests made before this lookup are answered by it.
            while self.requests.try_recv().is_ok() {}
            let started = tokio::time::Instant::now();
            match self.resolve().await {
                Outcome::Closed => return,
                Outcome::Retry => {
                    // resolve_now does not cut the backoff short (grpc-go behaves the same).
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
                Outcome::Taken => {
                    self.backoff.reset();
                    if self.requests.recv().await.is_none() {
                        return;
                    }
                    tokio::time::sleep_until(started + self.min_interval).await;
                }
            }
        }
    }

    async fn resolve(&mut self) -> Outcome {
        match self.lookup.lookup(&self.host, self.port).await {
            Ok(addrs) => {
                let addresses = addrs.iter().map(|a| Address::new(a.to_string())).collect();
                match self.updates.apply(ResolverState::from_addresses(addresses)).await {
                    Ok(()) => Outcome::Taken,
                    Err(UpdateError::Closed) => Outcome::Closed,
                    Err(error) => {
                        tracing::debug!(%error, host = %self.host, "dns resolver: retrying after backoff");
                        Outcome::Retry
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                let error = ResolverError::DnsLookup { host: self.host.clone(), reason };
                tracing::debug!(%error, "dns resolver: retrying after backoff");
                if self.updates.error(error) { Outcome::Retry } else { Outcome::Closed }
            }
        }
    }
}

/// Splits a `dns` endpoint into host and port (default [`DEFAULT_PORT`]).
fn split_host_port(endpoint: &str) -> Result<(String, u16), ResolverError> {
    let bad = |reason| ResolverError::DnsEndpoint { endpoint: endpoint.to_owned(), reason };
    if endpoint.is_empty() {
        return Err(ResolverError::EmptyEndpoint { scheme: "dns".into() });
    }
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(bad("unclosed '['"))?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad("not an IPv6 address inside '[]'"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(bad("expected ':' after ']'"))?)),
        }
    } else if endpoint.parse::<IpAddr>().is_ok() {
        (endpoint, None) // a bare IPv4 or IPv6 literal
    } else {
        match endpoint.rsplit_once(':') {
            Some((_, _)) if endpoint.matches(':').count() > 1 => {
                return Err(bad("IPv6 addresses need brackets when a port is given"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (endpoint, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("the port must be 1..=65535")),
            Ok(port) => port,
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_endpoints_default_to_port_443_and_accept_bracketed_ipv6() {
        let ok = |e: &str| split_host_port(e).unwrap();
        assert_eq!(ok("example.com"), ("example.com".into(), 443));
        assert_eq!(ok("example.com:50051"), ("example.com".into(), 50051));
        assert_eq!(ok("[::1]:50051"), ("::1".into(), 50051));
        assert_eq!(ok("[::1]"), ("::1".into(), 443));
        assert_eq!(ok("::1"), ("::1".into(), 443));
        assert_eq!(ok("10.0.0.1:80"), ("10.0.0.1".into(), 80));
    }

    #[test]
    fn dns_endpoints_that_are_not_host_port_are_errors() {
        for bad in
            ["", ":80", "host:", "host:0", "host:x", "[::1", "[::1]80", "[zz]:1", "fe80::zz:80"]
        {
            assert!(split_host_port(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    /// A lookup that fails its first `failures` calls and then returns `127.0.0.1:port`, or
    /// nothing at all when `empty`; it records when each call happened.
    #[derive(Debug, Clone, Default)]
    struct Scripted {
        failures: usize,
        empty: bool,
        calls: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Lookup for Scripted {
        fn lookup(&self, _: &str, port: u16) -> LookupFuture {
            let mut calls = self.calls.lock().unwrap();
            calls.push(tokio::time::Instant::now());
            let result = if calls.len() <= self.failures {
                Err(io::Error::other("no such host"))
            } else if self.empty {
                Ok(Vec::new())
            } else {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            };
            Box::pin(async move { result })
        }
    }

    fn build(lookup: Scripted) -> (Box<dyn Resolver>, crate::resolver::Updates) {
        let target = Target::parse("dns:///svc.test:50051", |s| s == "dns").unwrap();
        let (sink, updates) = UpdateSink::pair();
        let builder = DnsBuilder::default()
            .lookup(lookup)
            .seed(1)
            .backoff(BackoffConfig { jitter: 0.0, ..BackoffConfig::default() });
        (builder.build(&target, sink).unwrap(), updates)
    }

    /// Regression: after a failed lookup the resolver waited for `resolve_now`, which nothing
    /// sent, so a name that started resolving later was never picked up.
    #[tokio::test(start_paused = true)]
    async fn dns_retries_a_failed_lookup_with_backoff_without_being_asked() {
        let lookup = Scripted { failures: 3, ..Scripted::default() };
        let (_resolver, mut updates) = build(lookup.clone());
        for _ in 0..3 {
            let event = updates.next().await.unwrap();
            assert!(event.is_err(), "a failed lookup must be reported, got {event:?}");
        }
        let state = updates.next().await.unwrap().expect("the fourth lookup succeeds");
        assert_eq!(state.addresses, [Address::new("127.0.0.1:50051")]);
        let calls = lookup.calls.lock().unwrap().clone();
        let gaps: Vec<u128> = calls.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, [1000, 1600, 2560], "retries must back off exponentially (1 s, ×1.6)");
    }

    #[tokio::test(start_paused = true)]
    async fn dns_retries_with_backoff_when_the_policy_rejects_its_list() {
        let lookup = Scripted { empty: true, ..Scripted::default() };
        let (_resolver, mut updates) = build(lookup.clone());
        for _ in 0..2 {
            let mut events = updates.recv().await;
            let (event, verdict) = events.remove(0);
            assert!(event.unwrap().addresses.is_empty());
            let rejected = crate::balancer::BadResolverState("empty".into());
            verdict.expect("apply waits for a verdict").send(Err(rejected)).unwrap();
        }
        let calls = lookup.calls.lock().unwrap().clone();
        assert_eq!(
            (calls[1] - calls[0]).as_millis(),
            1000,
            "a rejected list must be looked up again after the backoff"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dns_reresolves_on_request_no_sooner_than_the_interval_and_not_unasked() {
        let lookup = Scripted::default();
        let (mut resolver, mut updates) = build(lookup.clone());
        updates.next().await.unwrap().expect("the lookup succeeds");
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(lookup.calls.lock().unwrap().len(), 1, "a taken list is not looked up unasked");
        let asked = tokio::time::Instant::now();
        resolver.resolve_now();
        resolver.resolve_now();
        updates.next().await.unwrap().expect("the lookup succeeds again");
        assert!(asked.elapsed() < Duration::from_secs(1), "the interval has long passed");
        resolver.resolve_now();
        updates.next().await.unwrap().unwrap();
        assert!(
            asked.elapsed() >= Duration::from_secs(30),
            "re-resolution must wait out the minimum interval"
        );
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(lookup.calls.lock().unwrap().len(), 3, "two requests at once are one lookup");
    }

    #[tokio::test]
    async fn dns_resolves_localhost_with_the_system_resolver() {
        let (_resolver, mut updates) = {
            let target = Target::parse("dns:///localhost:50051", |s| s == "dns").unwrap();
            let (sink, updates) = UpdateSink::pair();
            (DnsBuilder::default().build(&target, sink).unwrap(), updates)
        };
        let first = updates.next().await.unwrap().expect("localhost must resolve");
        assert!(first.addresses.iter().all(|a| a.addr.ends_with(":50051")));
    }
}
