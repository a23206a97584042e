//! The process-wide registry of load-balancing policies, after grpc-go's `balancer.Register`.
//!
//! A service config's `loadBalancingConfig` names policies; [`ServiceConfig::parse`] looks each
//! name up here, in list order, and the first one found wins (gRFC A24). The built-in
//! `pick_first` and `round_robin` are entries like any other; [`register`] adds more.
//!
//! ## Choices
//! - Names match ignoring ASCII case, as grpc-go's registry does (`Round_Robin` is
//!   `round_robin`). A name must be non-empty and must not contain whitespace.
//! - Registering a name again replaces the earlier builder, as in grpc-go: configs parsed after
//!   that use the new builder; configs already parsed keep the builder that parsed them.
//! - The built-in names `pick_first` and `round_robin` cannot be replaced: [`register`] refuses
//!   them with [`RegisterError::BuiltIn`]. grpc-go lets a registration replace them, which
//!   silently changes every channel in the process, including the default policy the crate's
//!   simulations and audits rely on.
//!
//! [`ServiceConfig::parse`]: crate::service_config::ServiceConfig::parse

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use serde_json::{Map, Value};

use super::LbPolicy;
use crate::service_config::{LoadBalancingConfig, ServiceConfigError};

/// Builds one kind of load-balancing policy: parses its service-config entry and creates
/// instances for channels. Register it with [`register`].
///
/// # Contract
/// - [`parse_config`](Self::parse_config) is called from whatever thread parses a service
///   config (the channel builder, a resolver's task); [`build`](Self::build) from a channel's
///   control task, once per policy instance. Calls may overlap; neither may block.
/// - Both must be deterministic: the same JSON gives an equal config, and the policy gets all
///   randomness from its [`ChannelController::rng`](super::ChannelController::rng).
pub trait PolicyBuilder: Send + Sync + 'static {
    /// The policy's parsed, validated config.
    type Config: PolicyConfig;

    /// The name the policy is registered and selected under, such as `"first_ready_last"`.
    fn name(&self) -> &'static str;

    /// Validates the policy's entry in `loadBalancingConfig` (the object under its name) and
    /// returns the parsed config. Unknown fields should be ignored, as gRPC does.
    ///
    /// # Errors
    /// A [`PolicyConfigError`] naming the bad field and why; the service config is then
    /// rejected with [`ServiceConfigErrorKind::InvalidPolicyConfig`], which names this policy
    /// (an invalid config for the chosen policy is an error, as in grpc-go).
    ///
    /// [`ServiceConfigErrorKind::InvalidPolicyConfig`]: crate::service_config::ServiceConfigErrorKind::InvalidPolicyConfig
    fn parse_config(&self, config: &Map<String, Value>) -> Result<Self::Config, PolicyConfigError>;

    /// A new policy instance for one channel, configured by `config`.
    fn build(&self, config: &Self::Config) -> Box<dyn LbPolicy>;
}

/// A policy's parsed config, as carried in [`LoadBalancingConfig::Registered`].
///
/// Equality decides whether a new service config switches the channel's policy: an equal config
/// keeps the running policy.
pub trait PolicyConfig: fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The canonical JSON form: an object that [`PolicyBuilder::parse_config`] accepts and parses
    /// back to an equal config. It is what [`ServiceConfig`]'s `Display` and `Serialize` print.
    ///
    /// [`ServiceConfig`]: crate::service_config::ServiceConfig
    fn to_json(&self) -> Map<String, Value>;
}

/// Why a policy's builder rejected its config: which field (if one) and why.
///
/// Displays as `field: reason`, or just `reason` when no field is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field_prefix(.field))]
pub struct PolicyConfigError {
    field: Option<String>,
    reason: String,
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map_or_else(String::new, |f| format!("{f}: "))
}

impl PolicyConfigError {
    /// The config as a whole is bad, for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { field: None, reason: reason.into() }
    }

    /// The config's field `field` (a key of the policy's object) is bad, for `reason`.
    pub fn at(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: Some(field.into()), reason: reason.into() }
    }

    /// The bad field, if the error names one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Why the config is bad.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Why [`register`] refused a builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is one of the built-in policies, which cannot be replaced.
    #[error("balancer registry: policy name {name:?} is built in and cannot be replaced")]
    BuiltIn {
        /// The name given.
        name: String,
    },
    /// The name is empty or contains whitespace.
    #[error("balancer registry: policy name {name:?} must be non-empty and without whitespace")]
    InvalidName {
        /// The name given.
        name: String,
    },
}

/// Registers `builder` under its [`name`](PolicyBuilder::name), process-wide, so service configs
/// parsed from now on can select it in `loadBalancingConfig`. Thread-safe.
///
/// Registering a name again replaces the earlier builder (as grpc-go does); see the
/// [module docs](self) for the rules.
///
/// # Errors
/// [`RegisterError::BuiltIn`] for `pick_first` and `round_robin` (in any case),
/// [`RegisterError::InvalidName`] for an empty name or one with whitespace. Nothing changes then.
pub fn register<B: PolicyBuilder>(builder: B) -> Result<(), RegisterError> {
    let name = builder.name();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(RegisterError::InvalidName { name: name.to_owned() });
    }
    let key = name.to_ascii_lowercase();
    if BUILT_INS.iter().any(|built_in| built_in.name() == key) {
        return Err(RegisterError::BuiltIn { name: name.to_owned() });
    }
    let entry: Arc<dyn DynBuilder> = Arc::new(Custom { name, builder: Arc::new(builder) });
    REGISTRY.write().unwrap_or_else(PoisonError::into_inner).insert(key, entry);
    Ok(())
}

/// The registered policy names, built-ins included, sorted ignoring case.
pub fn registered_names() -> Vec<String> {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    registry.values().map(|entry| entry.name().to_owned()).collect()
}

/// Parses `config` for the policy registered as `name` (ignoring ASCII case); `None` when no
/// policy has that name. `path` is the JSON path of `config`, for errors.
pub(crate) fn parse(
    name: &str,
    config: &Map<String, Value>,
    path: &str,
) -> Option<Result<LoadBalancingConfig, ServiceConfigError>> {
    let entry = {
        let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
        registry.get(&name.to_ascii_lowercase()).cloned()
    }?;
    Some(entry.parse(config, path))
}

/// A registered policy with its parsed config: the payload of
/// [`LoadBalancingConfig::Registered`]. Cheap to clone.
///
/// Two are equal when the same registration parsed them and their configs are equal: after the
/// name is registered again, a config the new builder parses differs from every earlier one,
/// so a channel given it switches to the new builder's policy. It keeps the builder that parsed
/// it, so re-registering the name later does not change what it builds.
#[derive(Clone)]
pub struct RegisteredConfig(Arc<dyn DynConfig>);

impl RegisteredConfig {
    /// The policy's registered name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The config's canonical JSON object (see [`PolicyConfig::to_json`]).
    pub fn to_json(&self) -> Map<String, Value> {
        self.0.to_json()
    }

    /// The parsed config, if it is a `C`.
    pub fn config<C: PolicyConfig>(&self) -> Option<&C> {
        self.0.config().downcast_ref()
    }

    /// A new policy instance built from this config.
    pub fn build(&self) -> Box<dyn LbPolicy> {
        self.0.build()
    }
}

impl PartialEq for RegisteredConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.dyn_eq(other.0.as_ref())
    }
}

impl fmt::Debug for RegisteredConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ---- Type erasure. ----

static REGISTRY: LazyLock<RwLock<BTreeMap<String, Arc<dyn DynBuilder>>>> = LazyLock::new(|| {
    let entries =
        BUILT_INS.iter().map(|b| (b.name().to_owned(), Arc::new(*b) as Arc<dyn DynBuilder>));
    RwLock::new(entries.collect())
});

/// A registry entry: parses a `loadBalancingConfig` entry into a [`LoadBalancingConfig`].
trait DynBuilder: Send + Sync {
    fn name(&self) -> &'static str;
    fn parse(
        &self,
        config: &Map<String, Value>,
        path: &str,
    ) -> Result<LoadBalancingConfig, ServiceConfigError>;
}

/// The built-in policies: their configs are [`LoadBalancingConfig`]'s own variants.
#[derive(Debug, Clone, Copy)]
enum BuiltIn {
    PickFirst,
    RoundRobin,
}

const BUILT_INS: [BuiltIn; 2] = [BuiltIn::PickFirst, BuiltIn::RoundRobin];

impl DynBuilder for BuiltIn {
    fn name(&self) -> &'static str {
        match self {
            Self::PickFirst => "pick_first",
            Self::RoundRobin => "round_robin",
        }
    }

    fn parse(
        &self,
        config: &Map<String, Value>,
        path: &str,
    ) -> Result<LoadBalancingConfig, ServiceConfigError> {
        match self {
            Self::PickFirst => crate::service_config::pick_first_config(config, path)
                .map(LoadBalancingConfig::PickFirst),
            Self::RoundRobin => Ok(LoadBalancingConfig::RoundRobin),
        }
    }
}

/// A user's builder, with the name it had when it was registered: the registry never calls
/// user code while it holds its lock, and lists each policy under the name it is found by.
struct Custom<B> {
    name: &'static str,
    builder: Arc<B>,
}

impl<B: PolicyBuilder> DynBuilder for Custom<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(
        &self,
        config: &Map<String, Value>,
        path: &str,
    ) -> Result<LoadBalancingConfig, ServiceConfigError> {
        match self.builder.parse_config(config) {
            Ok(config) => {
                let bound = Bound { name: self.name, builder: self.builder.clone(), config };
                Ok(LoadBalancingConfig::Registered(RegisteredConfig(Arc::new(bound))))
            }
            Err(error) => {
                Err(crate::service_config::invalid_policy_config(self.name, path, &error))
            }
        }
    }
}

/// A user's config with the builder that parsed it.
trait DynConfig: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn to_json(&self) -> Map<String, Value>;
    fn config(&self) -> &dyn Any;
    /// Identifies the [`register`] call whose builder parsed the config.
    fn registration(&self) -> *const ();
    fn dyn_eq(&self, other: &dyn DynConfig) -> bool;
    fn build(&self) -> Box<dyn LbPolicy>;
}

struct Bound<B: PolicyBuilder> {
    name: &'static str,
    /// The registration that parsed the config; configs of different registrations differ.
    builder: Arc<B>,
    config: B::Config,
}

impl<B: PolicyBuilder> fmt::Debug for Bound<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredConfig")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl<B: PolicyBuilder> DynConfig for Bound<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn registration(&self) -> *const () {
        Arc::as_ptr(&self.builder).cast()
    }

    fn to_json(&self) -> Map<String, Value> {
        self.config.to_json()
    }

    fn config(&self) -> &dyn Any {
        &self.config
    }

    fn dyn_eq(&self, other: &dyn DynConfig) -> bool {
        std::ptr::eq(self.registration(), other.registration())
            && other.config().downcast_ref::<B::Config>() == Some(&self.config)
    }

    fn build(&self) -> Box<dyn LbPolicy> {
        self.builder.build(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::round_robin::RoundRobin;
    use crate::service_config::{ServiceConfig, ServiceConfigErrorKind};

    /// A builder whose config records which builder parsed it.
    struct Tagged {
        name: &'static str,
        tag: u32,
    }

    #[derive(Debug, PartialEq)]
    struct Tag(u32);

    impl PolicyConfig for Tag {
        fn to_json(&self) -> Map<String, Value> {
            Map::new()
        }
    }

    impl PolicyBuilder for Tagged {
        type Config = Tag;
        fn name(&self) -> &'static str {
            self.name
        }
        fn parse_config(&self, _: &Map<String, Value>) -> Result<Tag, PolicyConfigError> {
            Ok(Tag(self.tag))
        }
        fn build(&self, _: &Tag) -> Box<dyn LbPolicy> {
            Box::new(RoundRobin::new())
        }
    }

    fn chosen(name: &str) -> LoadBalancingConfig {
        let json = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
        let config = ServiceConfig::parse(&json).expect("the policy is registered");
        config.load_balancing().clone()
    }

    fn tag_of(config: &LoadBalancingConfig) -> Option<u32> {
        match config {
            LoadBalancingConfig::Registered(registered) => registered.config::<Tag>().map(|t| t.0),
            _ => None,
        }
    }

    #[test]
    fn registering_a_name_again_replaces_the_builder_for_configs_parsed_afterwards() {
        register(Tagged { name: "registry_test_replaced", tag: 1 }).unwrap();
        let before = chosen("registry_test_replaced");
        register(Tagged { name: "Registry_Test_Replaced", tag: 2 }).unwrap();
        let after = chosen("REGISTRY_TEST_REPLACED");
        assert_eq!(tag_of(&before), Some(1), "a config keeps the builder that parsed it");
        assert_eq!(
            tag_of(&after),
            Some(2),
            "re-registering (in any case) must replace the builder"
        );
        assert_ne!(before, after, "configs from different builders' settings must differ");
        let names = registered_names();
        let count =
            names.iter().filter(|n| n.eq_ignore_ascii_case("registry_test_replaced")).count();
        assert_eq!(count, 1, "a replaced name must be listed once, got {names:?}");
    }

    /// Regression: configs were equal when their names and values were, whichever
    /// registration parsed them, so a channel whose resolver sent the same JSON after the name
    /// was registered again kept the old builder's policy.
    #[test]
    fn configs_parsed_by_different_registrations_of_a_name_differ_even_with_equal_values() {
        register(Tagged { name: "registry_test_same_value", tag: 7 }).unwrap();
        let first = chosen("registry_test_same_value");
        assert_eq!(first, chosen("registry_test_same_value"), "one registration: equal configs");
        register(Tagged { name: "registry_test_same_value", tag: 7 }).unwrap();
        let second = chosen("registry_test_same_value");
        assert_eq!(tag_of(&first), tag_of(&second), "the two configs' values are equal");
        assert_ne!(first, second, "a new registration's config must differ, so channels switch");
    }

    /// A builder whose `name` registers another policy: listing the names must not call it
    /// under the registry's lock (a re-entrant write would deadlock).
    struct Reentrant;

    impl PolicyBuilder for Reentrant {
        type Config = Tag;
        fn name(&self) -> &'static str {
            let _ = register(Tagged { name: "registry_test_from_name", tag: 0 });
            "registry_test_reentrant"
        }
        fn parse_config(&self, _: &Map<String, Value>) -> Result<Tag, PolicyConfigError> {
            Ok(Tag(0))
        }
        fn build(&self, _: &Tag) -> Box<dyn LbPolicy> {
            Box::new(RoundRobin::new())
        }
    }

    #[test]
    fn listing_names_calls_no_builder_while_holding_the_registry() {
        register(Reentrant).unwrap();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(registered_names());
        });
        let names = wait
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("registered_names must not deadlock on a builder that registers");
        assert!(names.iter().any(|n| n == "registry_test_reentrant"), "{names:?}");
    }

    #[test]
    fn built_in_and_malformed_names_are_refused_and_change_nothing() {
        for name in ["pick_first", "ROUND_ROBIN"] {
            let refused = register(Tagged { name, tag: 0 });
            assert_eq!(refused, Err(RegisterError::BuiltIn { name: name.into() }), "{name}");
        }
        for name in ["", "two words", "tab\tname"] {
            let refused = register(Tagged { name, tag: 0 });
            assert_eq!(refused, Err(RegisterError::InvalidName { name: name.into() }), "{name:?}");
        }
        assert_eq!(chosen("pick_first"), LoadBalancingConfig::default(), "pick_first is built in");
        assert_eq!(
            chosen("round_robin"),
            LoadBalancingConfig::RoundRobin,
            "round_robin is built in"
        );
    }

    #[test]
    fn an_unregistered_name_is_skipped_and_listed_with_the_registered_ones() {
        let json = r#"{"loadBalancingConfig":[{"registry_test_never_registered":{}}]}"#;
        let error = ServiceConfig::parse(json).expect_err("nothing in the list is registered");
        let ServiceConfigErrorKind::NoSupportedPolicy { names, supported } = error.kind() else {
            panic!("an unknown list must be NoSupportedPolicy, got {error}");
        };
        assert_eq!(names, &["registry_test_never_registered"], "the names tried, in order");
        assert!(
            supported.iter().any(|n| n == "pick_first")
                && supported.iter().any(|n| n == "round_robin"),
            "the supported list must come from the registry, got {supported:?}"
        );
    }
}
