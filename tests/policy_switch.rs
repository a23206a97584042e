//! Switching load-balancing policy through the resolver's service config is graceful (DESIGN
//! §2.4, grpc-go's `gracefulswitch`): the old policy keeps serving with its picker until the new
//! one is READY, so RPCs never see the channel leave READY.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage::address::Address;
use anchorage::balancer::ConnectivityState;
use anchorage::channel::{Channel, ChannelEvent};
use anchorage::pb::echo_client::EchoClient;
use anchorage::resolver::ResolverState;
use anchorage::resolver::manual::ManualResolver;
use anchorage::service_config::ServiceConfig;
use support::*;

/// Regression: a policy switch dropped the old policy and its connections at once, and the new
/// one published CONNECTING, so RPCs queued (or failed) while it connected.
#[tokio::test]
async fn switching_to_round_robin_keeps_the_channel_ready_until_the_new_policy_is_ready() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let addresses = vec![Address::new(a.addr.to_string()), Address::new(b.addr.to_string())];
    let manual = ManualResolver::new("manual");
    manual.update_addresses(addresses.clone());
    let pickers = Arc::new(Mutex::new(Vec::new()));
    let seen = pickers.clone();
    let channel = Channel::builder("manual:///svc")
        .resolver(manual.clone())
        .seed(1)
        .on_event(move |event| {
            if let ChannelEvent::Picker { state } = event {
                seen.lock().unwrap().push(*state);
            }
        })
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    assert_eq!(echo(&mut client).await.unwrap(), "a", "pick_first serves from a first");
    pickers.lock().unwrap().clear();

    let round_robin = ServiceConfig::parse(ROUND_ROBIN).unwrap();
    manual.update(ResolverState { addresses, service_config: Some(Ok(round_robin)) });
    let both = async {
        while b.stats().rpcs == 0 {
            echo(&mut client).await.expect("no RPC may fail during the switch");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("round_robin must take over and send RPCs to b within 10 s");

    let published = pickers.lock().unwrap().clone();
    assert!(
        published.iter().all(|s| *s == ConnectivityState::Ready),
        "the channel must stay READY through the switch, published {published:?}"
    );
    assert!(!published.is_empty(), "the new policy's picker must have been published");
    assert_eq!(channel.state(), ConnectivityState::Ready);
}
