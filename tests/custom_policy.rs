//! A load-balancing policy written outside the crate, registered by name and selected by the
//! service config, exactly as a user would (grpc-go's `balancer.Register`, gRFC A24): real RPCs
//! over loopback go where the policy puts them.

mod support;

use anchorage::address::Address;
use anchorage::balancer::registry::{
    PolicyBuilder, PolicyConfig, PolicyConfigError, RegisterError, register, registered_names,
};
use anchorage::balancer::{
    BadResolverState, ChannelController, ConnectivityState, LbPolicy, PickInfo, PickResult, Picker,
    PickerUpdate, Subchannel, SubchannelState,
};
use anchorage::channel::{Channel, ChannelError};
use anchorage::pb::echo_client::EchoClient;
use anchorage::resolver::ResolverError;
use anchorage::service_config::{ServiceConfig, ServiceConfigErrorKind};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use support::*;

// ---- the policy: every RPC goes to the LAST READY subchannel (or `fromEnd` before it) ----

/// `first_ready_last`'s config: `{"fromEnd": n}` picks the READY subchannel `n` places before
/// the last one (clamped to the first). Default 0.
#[derive(Debug, Clone, PartialEq)]
struct LastReadyConfig {
    from_end: usize,
}

impl PolicyConfig for LastReadyConfig {
    fn to_json(&self) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("fromEnd".into(), self.from_end.into());
        object
    }
}

struct LastReadyBuilder;

impl PolicyBuilder for LastReadyBuilder {
    type Config = LastReadyConfig;

    fn name(&self) -> &'static str {
        "first_ready_last"
    }

    fn parse_config(
        &self,
        config: &Map<String, Value>,
    ) -> Result<LastReadyConfig, PolicyConfigError> {
        let from_end = match config.get("fromEnd") {
            None | Some(Value::Null) => 0,
            Some(value) => {
                value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
                    PolicyConfigError::at("fromEnd", "must be a non-negative integer")
                })?
            }
        };
        Ok(LastReadyConfig { from_end })
    }

    fn build(&self, config: &LastReadyConfig) -> Box<dyn LbPolicy> {
        Box::new(LastReady { from_end: config.from_end, subchannels: Vec::new() })
    }
}

#[derive(Debug)]
struct LastReady {
    from_end: usize,
    subchannels: Vec<(Subchannel, ConnectivityState)>,
}

impl LastReady {
    fn publish(&self, controller: &mut dyn ChannelController) {
        let ready: Vec<&Subchannel> = self
            .subchannels
            .iter()
            .filter(|(_, state)| *state == ConnectivityState::Ready)
            .map(|(sc, _)| sc)
            .collect();
        let update = match ready.len().checked_sub(1 + self.from_end).or(ready.len().checked_sub(1))
        {
            Some(index) => PickerUpdate {
                state: ConnectivityState::Ready,
                picker: Arc::new(Always(ready[index].clone())),
            },
            None if self
                .subchannels
                .iter()
                .all(|(_, state)| *state == ConnectivityState::TransientFailure) =>
            {
                PickerUpdate::failing("first_ready_last: every subchannel failed")
            }
            None => PickerUpdate::connecting(),
        };
        controller.update_picker(update);
    }
}

impl LbPolicy for LastReady {
    fn resolver_update(
        &mut self,
        addresses: &[Address],
        controller: &mut dyn ChannelController,
    ) -> Result<(), BadResolverState> {
        if addresses.is_empty() {
            controller.update_picker(PickerUpdate::failing("first_ready_last: no addresses"));
            controller.request_resolution();
            return Err(BadResolverState("first_ready_last: no addresses".into()));
        }
        let mut old = std::mem::take(&mut self.subchannels);
        for address in addresses {
            if self.subchannels.iter().any(|(sc, _)| sc.address() == address) {
                continue;
            }
            match old.iter().position(|(sc, _)| sc.address() == address) {
                Some(kept) => self.subchannels.push(old.remove(kept)),
                None => {
                    let sc = controller.new_subchannel(address);
                    sc.connect();
                    self.subchannels.push((sc, ConnectivityState::Idle));
                }
            }
        }
        self.publish(controller);
        Ok(())
    }

    fn resolver_error(&mut self, error: &ResolverError, controller: &mut dyn ChannelController) {
        if self.subchannels.is_empty() {
            controller.update_picker(PickerUpdate::failing(error.to_string()));
        }
        controller.request_resolution();
    }

    fn subchannel_update(
        &mut self,
        subchannel: &Subchannel,
        state: &SubchannelState,
        controller: &mut dyn ChannelController,
    ) {
        let Some(entry) = self.subchannels.iter_mut().find(|(sc, _)| sc == subchannel) else {
            return;
        };
        entry.1 = state.state;
        if state.state == ConnectivityState::Idle {
            subchannel.connect();
            controller.request_resolution();
        }
        self.publish(controller);
    }
}

/// Sends every RPC to one subchannel.
#[derive(Debug)]
struct Always(Subchannel);

impl Picker for Always {
    fn pick(&self, _: &PickInfo<'_>) -> PickResult {
        PickResult::Pick(self.0.clone())
    }
}

fn registered() {
    register(LastReadyBuilder).expect("first_ready_last is a valid, non-built-in name");
}

fn with_policy(entries: Value) -> String {
    json!({ "loadBalancingConfig": entries }).to_string()
}

// ---- tests ----

#[tokio::test]
async fn a_registered_policy_chosen_by_the_service_config_routes_real_rpcs() {
    registered();
    let (a, b, c) =
        (TestServer::start("a").await, TestServer::start("b").await, TestServer::start("c").await);
    let builder = Channel::builder(pass_target(&[(&a, 1), (&b, 1), (&c, 1)]))
        .default_service_config(&with_policy(json!([{ "first_ready_last": {} }])))
        .expect("a config naming a registered policy is valid")
        .seed(1);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(3).await;
    let mut client = EchoClient::new(channel);
    for _ in 0..20 {
        let server = echo(&mut client).await.expect("every RPC must succeed");
        assert_eq!(server, "c", "first_ready_last must send every RPC to the last READY address");
    }
    assert_eq!(c.stats().rpcs, 20, "the last server must have served all 20 RPCs");
    assert_eq!((a.stats().rpcs, b.stats().rpcs), (0, 0), "the other servers must serve none");
    assert_eq!(
        (a.stats().connections_accepted, b.stats().connections_accepted),
        (1, 1),
        "the policy connects to every address even though it uses one"
    );
}

#[tokio::test]
async fn unknown_policies_are_skipped_and_the_first_registered_one_wins_with_its_config() {
    registered();
    let json = with_policy(json!([
        { "grpclb": {} },
        { "First_Ready_Last": { "fromEnd": 1 } },
        { "round_robin": {} }
    ]));
    let config = ServiceConfig::parse(&json).expect("the list names a registered policy");
    let chosen = config.load_balancing();
    assert_eq!(chosen.name(), "first_ready_last", "the first registered entry must win");
    let registered = match chosen {
        anchorage::service_config::LoadBalancingConfig::Registered(registered) => registered,
        other => panic!("a custom policy must be carried as Registered, got {other:?}"),
    };
    assert_eq!(
        registered.config::<LastReadyConfig>(),
        Some(&LastReadyConfig { from_end: 1 }),
        "the chosen policy must carry the config its builder parsed"
    );

    let (a, b, c) =
        (TestServer::start("a").await, TestServer::start("b").await, TestServer::start("c").await);
    let builder = Channel::builder(pass_target(&[(&a, 1), (&b, 1), (&c, 1)]))
        .default_service_config(&json)
        .expect("the config is valid")
        .seed(1);
    let (channel, ready) = build_counting_ready(builder);
    ready.wait_for(3).await;
    let mut client = EchoClient::new(channel);
    for _ in 0..10 {
        let server = echo(&mut client).await.expect("every RPC must succeed");
        assert_eq!(server, "b", "fromEnd 1 must send every RPC to the second-to-last server");
    }
}

#[test]
fn a_config_the_custom_builder_rejects_is_a_service_config_error_naming_the_policy() {
    registered();
    let json = with_policy(json!([{ "grpclb": {} }, { "first_ready_last": { "fromEnd": -1 } }]));
    let error = ServiceConfig::parse(&json).expect_err("fromEnd -1 must be rejected");
    assert_eq!(
        error.path(),
        "loadBalancingConfig[1].first_ready_last.fromEnd",
        "the error must point at the field the builder named"
    );
    assert_eq!(
        error.kind(),
        &ServiceConfigErrorKind::InvalidPolicyConfig {
            policy: "first_ready_last".into(),
            reason: "must be a non-negative integer".into(),
        },
        "the error must name the policy and carry the builder's reason"
    );
    assert!(
        error.to_string().contains("first_ready_last"),
        "the message must name the policy: {error}"
    );
    let built = Channel::builder("pass:///127.0.0.1:1").default_service_config(&json);
    assert!(
        matches!(built, Err(ChannelError::ServiceConfig(ref e)) if *e == error),
        "the channel builder must refuse the same config with the same error"
    );
}

#[test]
fn a_custom_policy_config_round_trips_through_the_canonical_json() {
    registered();
    let json = with_policy(json!([{ "first_ready_last": { "fromEnd": 2 } }]));
    let config = ServiceConfig::parse(&json).expect("valid");
    let canonical: Value = serde_json::from_str(&config.to_string()).expect("Display is JSON");
    assert_eq!(
        canonical["loadBalancingConfig"],
        json!([{ "first_ready_last": { "fromEnd": 2 } }]),
        "the custom config must serialise back to its JSON"
    );
    let again = ServiceConfig::parse(&config.to_string()).expect("the canonical form parses");
    assert_eq!(again, config, "the canonical form must parse back to an equal config");
    let other = ServiceConfig::parse(&with_policy(json!([{ "first_ready_last": {} }]))).unwrap();
    assert_ne!(other, config, "configs with different policy settings must differ");
}

#[test]
fn built_in_names_cannot_be_replaced_and_every_registered_name_is_listed_as_supported() {
    registered();
    struct Impostor;
    impl PolicyBuilder for Impostor {
        type Config = LastReadyConfig;
        fn name(&self) -> &'static str {
            "Round_Robin"
        }
        fn parse_config(
            &self,
            _: &Map<String, Value>,
        ) -> Result<LastReadyConfig, PolicyConfigError> {
            Ok(LastReadyConfig { from_end: 0 })
        }
        fn build(&self, config: &LastReadyConfig) -> Box<dyn LbPolicy> {
            LastReadyBuilder.build(config)
        }
    }
    assert_eq!(
        register(Impostor),
        Err(RegisterError::BuiltIn { name: "Round_Robin".into() }),
        "the built-in round_robin must not be replaceable"
    );
    let config = ServiceConfig::parse(&with_policy(json!([{ "round_robin": {} }]))).unwrap();
    assert_eq!(
        *config.load_balancing(),
        anchorage::service_config::LoadBalancingConfig::RoundRobin,
        "round_robin must still be the built-in"
    );

    let names = registered_names();
    for name in ["first_ready_last", "pick_first", "round_robin"] {
        assert!(names.iter().any(|n| n == name), "{name} must be registered, got {names:?}");
    }
    let error = ServiceConfig::parse(&with_policy(json!([{ "grpclb": {} }]))).unwrap_err();
    match error.kind() {
        ServiceConfigErrorKind::NoSupportedPolicy { names, supported } => {
            assert_eq!(names, &["grpclb"], "the error must list the names tried");
            assert_eq!(supported, &registered_names(), "supported must be the registry's names");
        }
        other => panic!("no registered policy must be NoSupportedPolicy, got {other:?}"),
    }
    assert!(
        error.to_string().contains("first_ready_last"),
        "the message must list registered policies: {error}"
    );
}
