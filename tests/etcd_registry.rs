//! Registration in etcd against a real etcd (ignored unless etcd is installed) and against the
//! in-memory etcd, with the same case bodies; restarts of etcd use the in-memory etcd only.

#[macro_use]
mod etcd_cases;

use std::time::Duration;

use anchorage::etcd::memory::MemoryEtcd;
use anchorage::etcd::naming::encode_endpoint;
use anchorage::registry::{EtcdRegistrar, Registration, RegistrationState, RegistryError};
use etcd_cases::*;
use serde_json::json;

fn lease_of(registration: &Registration) -> i64 {
    match registration.state() {
        RegistrationState::Registered { lease } => lease,
        other => panic!("expected a registered state, got {other:?}"),
    }
}

/// Waits until the registration is registered under a lease other than `old`.
async fn registered_again(registration: &Registration, old: i64) -> i64 {
    let mut states = registration.subscribe();
    let state = tokio::time::timeout(
        WAIT,
        states.wait_for(|s| matches!(s, RegistrationState::Registered { lease } if *lease != old)),
    )
    .await
    .expect("the registration must register again with a new lease")
    .unwrap()
    .clone();
    match state {
        RegistrationState::Registered { lease } => lease,
        _ => unreachable!("waited for a registered state"),
    }
}

// ---- cases shared by the real and the in-memory etcd ----

async fn registration_writes_the_go_value_under_a_lease_and_deregistration_deletes_it(etcd: Etcd) {
    let client = etcd.client();
    let metadata = json!({"zone": "a"});
    let registration = EtcdRegistrar::new(client.clone(), "reg/svc", "127.0.0.1:50051")
        .unwrap()
        .ttl(5)
        .metadata(metadata.clone())
        .register()
        .await
        .unwrap();
    assert_eq!(registration.key(), "reg/svc/127.0.0.1:50051");
    let lease = lease_of(&registration);
    let kv = client.get("reg/svc/127.0.0.1:50051").await.unwrap().expect("the key is written");
    assert_eq!(kv.value, encode_endpoint("127.0.0.1:50051", &metadata), "Go's JSON value");
    assert_eq!(kv.lease, lease, "the key must be attached to the registration's lease");
    assert_eq!(client.time_to_live(lease).await.unwrap().map(|ttl| ttl > 0), Some(true));

    registration.deregister().await.expect("deregistration succeeds while etcd is up");
    assert_eq!(client.get("reg/svc/127.0.0.1:50051").await.unwrap(), None, "revoked: key gone");
    assert_eq!(client.time_to_live(lease).await.unwrap(), None, "the lease is revoked");
}

async fn a_lost_lease_is_registered_again(etcd: Etcd) {
    let client = etcd.client();
    let registration = EtcdRegistrar::new(client.clone(), "lost", "127.0.0.1:1")
        .unwrap()
        .ttl(2)
        .retry_backoff(fast_backoff())
        .register()
        .await
        .unwrap();
    let old = lease_of(&registration);
    // Someone else revokes the lease (or it expired while the server could not reach etcd).
    client.revoke(old).await.unwrap();
    assert_eq!(client.get("lost/127.0.0.1:1").await.unwrap(), None);
    let new = registered_again(&registration, old).await;
    let kv = client.get("lost/127.0.0.1:1").await.unwrap().expect("the key is written again");
    assert_eq!(kv.lease, new, "the key must be under the new lease");
}

async fn the_lease_is_kept_alive_past_its_ttl(etcd: Etcd) {
    let client = etcd.client();
    let registration = EtcdRegistrar::new(client.clone(), "kept", "127.0.0.1:2")
        .unwrap()
        .ttl(2)
        .register()
        .await
        .unwrap();
    let lease = lease_of(&registration);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kv = client.get("kept/127.0.0.1:2").await.unwrap();
    assert_eq!(kv.map(|kv| kv.lease), Some(lease), "renewals must keep the same lease alive");
    assert_eq!(registration.state(), RegistrationState::Registered { lease });
}

#[tokio::test]
async fn registration_fails_when_etcd_cannot_be_reached() {
    let unreachable = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let client = client_builder(&unreachable).build().unwrap();
    let err =
        EtcdRegistrar::new(client, "svc", "127.0.0.1:3").unwrap().register().await.unwrap_err();
    assert!(matches!(err, RegistryError::Etcd { .. }), "got {err:?}");
}

both!(
    registration_writes_the_go_value_under_a_lease_and_deregistration_deletes_it,
    a_lost_lease_is_registered_again,
    the_lease_is_kept_alive_past_its_ttl,
);

// ---- the in-memory etcd only ----

/// The in-memory etcd on a loopback port and a registration of `service` in it.
async fn registered_in_memory(service: &str, ttl: i64) -> (MemoryServer, Registration) {
    let server = MemoryServer::start(MemoryEtcd::new(), "127.0.0.1:0".parse().unwrap()).await;
    let client = client_builder(&server.addr.to_string()).build().unwrap();
    let registration = EtcdRegistrar::new(client, service, "127.0.0.1:4")
        .unwrap()
        .ttl(ttl)
        .retry_backoff(fast_backoff())
        .register()
        .await
        .unwrap();
    (server, registration)
}

#[tokio::test]
async fn a_registration_keeps_its_lease_across_an_etcd_restart() {
    let (mut server, registration) = registered_in_memory("restart", 2).await;
    let lease = lease_of(&registration);
    server.crash().await;
    tokio::time::sleep(Duration::from_secs(3)).await; // longer than the lease's TTL
    server.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.etcd.get_prefix("restart/").len(),
        1,
        "a restarted etcd gives leases their TTL again, so the key must survive the outage"
    );
    let mut states = registration.subscribe();
    tokio::time::timeout(WAIT, states.wait_for(|s| *s == RegistrationState::Registered { lease }))
        .await
        .expect("renewals must resume on the same lease")
        .unwrap();
}

#[tokio::test]
async fn a_forced_lease_expiry_is_repaired() {
    let (server, registration) = registered_in_memory("forced", 3).await;
    let old = lease_of(&registration);
    assert!(server.etcd.expire_lease(old), "the lease exists");
    assert!(server.etcd.get_prefix("forced/").is_empty());
    registered_again(&registration, old).await;
    assert_eq!(server.etcd.get_prefix("forced/").len(), 1);
}

#[test]
fn registration_refuses_names_a_target_could_not_name() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let client = anchorage::etcd::EtcdClient::connect("127.0.0.1:2379").unwrap();
    for (service, addr) in [("", "a:1"), ("svc#2", "a:1"), ("a,b", "a:1"), ("s v", "a:1")] {
        let err = EtcdRegistrar::new(client.clone(), service, addr).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidService { .. }), "{service:?}: {err}");
    }
    for addr in ["", "a 1", "a\n1"] {
        let err = EtcdRegistrar::new(client.clone(), "svc", addr).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidAddr { .. }), "{addr:?}: {err}");
    }
}
