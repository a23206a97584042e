//! `dns`: host names resolved with the system resolver, re-resolved on request at a bounded
//! rate (DESIGN §2.1, §2.4).
//!
//! `dns:///example.com:50051` resolves `example.com` and connects to every address it returns
//! on port 50051; without a port, 443. IPv6 literals need brackets when a port is given
//! (`dns:///[::1]:50051`). A re-resolution request (a lost connection, a failed connect) is
//! honoured at most once per [`DnsBuilder::min_interval`] (30 s by default, as in grpc-go) after
//! the previous lookup. Custom DNS servers in the authority are not supported.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{
    Resolver, ResolverBuilder, ResolverError, ResolverState, UpdateSink, reject_authority,
};
use crate::address::Address;
use crate::target::Target;

/// The default port for `dns` targets without one.
pub const DEFAULT_PORT: u16 = 443;

/// Builds `dns` resolvers.
#[derive(Debug, Clone)]
pub struct DnsBuilder {
    min_interval: Duration,
}

impl Default for DnsBuilder {
    fn default() -> Self {
        Self { min_interval: Duration::from_secs(30) }
    }
}

impl DnsBuilder {
    /// Sets the least time between two lookups caused by re-resolution requests. Default 30 s.
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
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
        reject_authority(target)?;
        let (host, port) = split_host_port(target.endpoint())?;
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(resolve_loop(host, port, self.min_interval, updates, wake.clone()));
        Ok(Box::new(DnsResolver { wake, task }))
    }

    /// The endpoint's `host:port`, with the default port filled in and IPv6 in brackets.
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
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Resolver for DnsResolver {
    fn resolve_now(&mut self) {
        self.wake.notify_one();
    }
}

impl Drop for DnsResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn resolve_loop(
    host: String,
    port: u16,
    min_interval: Duration,
    updates: UpdateSink,
    wake: Arc<Notify>,
) {
    loop {
        let started = tokio::time::Instant::now();
        let sent = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let addresses = addrs.map(|a| Address::new(a.to_string())).collect();
                updates.update(ResolverState::from_addresses(addresses))
            }
            Err(e) => updates
                .error(ResolverError::DnsLookup { host: host.clone(), reason: e.to_string() }),
        };
        if !sent {
            return;
        }
        wake.notified().await;
        tokio::time::sleep_until(started + min_interval).await;
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

    #[tokio::test]
    async fn dns_resolves_localhost_and_reresolves_no_sooner_than_the_interval() {
        tokio::time::pause();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let target = Target::parse("dns:///localhost:50051", |s| s == "dns").unwrap();
        let builder = DnsBuilder::default().min_interval(Duration::from_secs(30));
        let mut resolver = builder.build(&target, UpdateSink::new(tx)).unwrap();
        let first = rx.recv().await.unwrap().expect("localhost must resolve");
        assert!(first.addresses.iter().all(|a| a.addr.ends_with(":50051")));
        let asked = tokio::time::Instant::now();
        resolver.resolve_now();
        rx.recv().await.unwrap().expect("localhost must resolve again");
        assert!(
            asked.elapsed() >= Duration::from_secs(29),
            "re-resolution must wait out the minimum interval"
        );
    }
}
