//! Failed resolutions are retried without anyone asking (DESIGN §2.4): a `dns` name that starts
//! resolving after the channel was built is picked up, and a wait-for-ready RPC sent before
//! then succeeds.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anchorage::channel::{Channel, WaitForReady};
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use anchorage::resolver::dns::{DnsBuilder, Lookup, LookupFuture};
use support::*;

/// A name that does not resolve until `present` is set, then resolves to loopback.
#[derive(Debug, Clone, Default)]
struct AppearsLater {
    present: Arc<AtomicBool>,
}

impl Lookup for AppearsLater {
    fn lookup(&self, _: &str, port: u16) -> LookupFuture {
        let result = match self.present.load(Ordering::SeqCst) {
            true => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
            false => Err(io::Error::other("no such host")),
        };
        Box::pin(async move { result })
    }
}

/// Regression: after a failed lookup the `dns` resolver waited for a re-resolution request
/// that no policy sent, so the channel stayed in TRANSIENT_FAILURE for good.
#[tokio::test]
async fn a_dns_name_that_starts_resolving_later_is_picked_up_by_a_wait_for_ready_rpc() {
    let server = TestServer::start("a").await;
    let lookup = AppearsLater::default();
    let dns = DnsBuilder::default().lookup(lookup.clone()).seed(1);
    let target = format!("dns:///later.test:{}", server.addr.port());
    let channel = Channel::builder(target).resolver(dns).seed(1).build().unwrap();
    let mut client = EchoClient::new(channel);

    let failed = echo(&mut client).await.expect_err("nothing resolves yet");
    assert!(
        failed.message().contains("no such host"),
        "a fail-fast RPC must name the resolver error, got {failed:?}"
    );
    let flip = lookup.present.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        flip.store(true, Ordering::SeqCst);
    });
    let mut request = tonic::Request::new(EchoRequest::default());
    request.set_timeout(Duration::from_secs(20));
    request.extensions_mut().insert(WaitForReady(true));
    let served = client.echo(request).await.expect("the RPC must succeed once the name resolves");
    assert_eq!(served.into_inner().server, "a");
}
