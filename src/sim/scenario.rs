//! Scenario files (`sims/*.toml`): what to simulate and what must hold.
//!
//! A scenario names its servers (turmoil hosts), the client's target and service config, the
//! workload, the network, a fault schedule at simulated times and the expectations. Every table
//! rejects unknown keys, so a misspelt key is an error that names the file and the key, never a
//! silently ignored setting. README.md's "Simulation scenarios" section documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod etcd;
#[cfg(test)]
mod limits_tests;
mod locate;
mod validate;
mod write;

pub use etcd::{EtcdSpec, RegisterSpec};
pub use validate::parse_address;
pub use validate::{
    MAX_CONCURRENCY, MAX_CONNECTIONS, MAX_FAULTS, MAX_PORT, MAX_RPCS, MAX_SERVERS,
    MAX_TIME_LIMIT_MS, MAX_TIME_MS, MAX_TTL_S, MIN_MAX_CONNECTION_AGE_MS,
};

/// Errors loading a scenario file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("scenario {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type, …).
    #[error("scenario {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the line and the key.
        message: String,
    },
    /// The file parses but is inconsistent or out of range (a fault names an unknown host, a
    /// time beyond its limit, …).
    #[error("scenario {path}{}: {what}: {reason}", line.map_or_else(String::new, |l| format!(", line {l}")))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the offending key (or of its table), 1-based, when it is written.
        line: Option<usize>,
        /// Which part is wrong (`fault 2`, `server "a"`, …).
        what: String,
        /// Why.
        reason: String,
    },
}

/// One scenario, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file it was read from (not a key in the file).
    #[serde(skip)]
    pub path: PathBuf,
    /// Seeds that once failed: always run first.
    #[serde(default)]
    pub regression_seeds: Vec<u64>,
    /// The simulated time after which a run that has not finished fails. Default 120 s.
    #[serde(default = "default_time_limit_ms")]
    pub time_limit_ms: u64,
    /// The servers, one turmoil host each unless several name the same `host`.
    #[serde(rename = "server")]
    pub servers: Vec<ServerSpec>,
    /// The client: target, service config, connection settings.
    pub client: ClientSpec,
    /// An in-memory etcd on its own host, for `etcd:///` targets and registering servers.
    pub etcd: Option<EtcdSpec>,
    /// The RPCs the client sends.
    #[serde(default)]
    pub workload: Workload,
    /// Latencies.
    #[serde(default)]
    pub network: Network,
    /// Faults at simulated times, in any order (they are applied in time order).
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// What must hold.
    #[serde(default)]
    pub expect: Expect,
}

fn default_time_limit_ms() -> u64 {
    120_000
}

/// A `[[server]]` entry: an instrumented Echo server listening on `0.0.0.0:<port>` of a host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// The server's name, echoed in responses; with `count`, the prefix of `name1..nameN`.
    pub name: String,
    /// The turmoil host it runs on. Default: its name.
    pub host: Option<String>,
    /// The port it listens on.
    pub port: u16,
    /// How many such servers (on hosts `name1..nameN`). Default 1 (just `name`).
    pub count: Option<u32>,
    /// Registers the server in `[etcd]` as `<service>/<host>:<port>` under a lease. Default:
    /// not registered.
    pub register: Option<RegisterSpec>,
    /// Sends each response's headers at once and its body (message and trailers) this many ms
    /// later: a server that commits to an answer, then stalls. Default: no delay.
    pub body_delay_ms: Option<u64>,
    /// MAX_CONNECTION_AGE: each connection is sent GOAWAY once it is this old, ±10 % (seeded
    /// jitter). Default: never.
    pub max_connection_age_ms: Option<u64>,
    /// After a GOAWAY (max age or a `goaway` fault), streams in flight get this long before the
    /// connection closes. Default: as long as they take.
    pub max_connection_age_grace_ms: Option<u64>,
    /// Its `grpc.health.v1` service at boot: `serving` (the default), `not_serving`, or
    /// `unimplemented` (Watch answers UNIMPLEMENTED, so clients do not health-check it).
    pub health: Option<ServerHealth>,
}

/// How a scenario server's health service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerHealth {
    /// Every service SERVING.
    Serving,
    /// Every service NOT_SERVING.
    NotServing,
    /// `Watch` answers UNIMPLEMENTED; `Check` answers SERVING.
    Unimplemented,
}

/// One server after `count` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its etcd registration, if any.
    pub register: Option<RegisterSpec>,
    /// How long it holds back each response's body after the headers, ms.
    pub body_delay_ms: Option<u64>,
    /// Its MAX_CONNECTION_AGE, ms.
    pub max_connection_age_ms: Option<u64>,
    /// Its MAX_CONNECTION_AGE_GRACE, ms.
    pub max_connection_age_grace_ms: Option<u64>,
    /// Its health service at boot (default: serving).
    pub health: Option<ServerHealth>,
}

impl Server {
    /// The address clients dial and registration writes: `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The `[client]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The channel's target, such as `pass:///a:9080#2,b:9090#1` or `manual:///x`.
    pub target: String,
    /// The default service config (JSON). Default: none, which means pick_first.
    pub service_config: Option<String>,
    /// With a `manual:` target: the addresses sent before the channel starts (`"a:9080"`,
    /// `"a:9080{idx=1}"`). Default: nothing is sent until a `resolve` fault.
    pub manual_addresses: Option<Vec<String>>,
    /// The minimum connect timeout, ms. Default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// HTTP/2 keep-alive; on by default in simulations.
    #[serde(default)]
    pub keepalive: KeepAliveSpec,
    /// Reconnect backoff.
    #[serde(default)]
    pub backoff: BackoffSpec,
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

/// `[client.keepalive]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepAliveSpec {
    /// Whether keep-alive is on. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// PING interval, ms. Default 1000.
    #[serde(default = "default_keepalive_ms")]
    pub interval_ms: u64,
    /// PING acknowledgement timeout, ms. Default 1000.
    #[serde(default = "default_keepalive_ms")]
    pub timeout_ms: u64,
}

impl Default for KeepAliveSpec {
    fn default() -> Self {
        Self { enabled: true, interval_ms: 1000, timeout_ms: 1000 }
    }
}

fn yes() -> bool {
    true
}

fn default_keepalive_ms() -> u64 {
    1000
}

/// `[client.backoff]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// First delay, ms. Default 250.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Growth factor. Default 1.6.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Relative jitter. Default 0.2.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Cap, ms. Default 2000.
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        Self { initial_ms: 250, multiplier: 1.6, jitter: 0.2, max_ms: 2000 }
    }
}

fn default_initial_ms() -> u64 {
    250
}
fn default_multiplier() -> f64 {
    1.6
}
fn default_jitter() -> f64 {
    0.2
}
fn default_max_ms() -> u64 {
    2000
}

/// The `[workload]` table: `concurrency` workers share `rpcs` Echo RPCs; each worker sends one,
/// waits for its end, pauses `pacing_ms`, and takes the next.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Total RPCs. Default 100.
    #[serde(default = "default_rpcs")]
    pub rpcs: u32,
    /// Concurrent workers. Default 1.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Per-RPC deadline, ms. Default 1000.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Send every RPC as wait-for-ready. Default false.
    #[serde(default)]
    pub wait_for_ready: bool,
    /// Pause after each RPC, ms. Default 10.
    #[serde(default = "default_pacing_ms")]
    pub pacing_ms: u64,
    /// When the first RPC is sent, ms after the client starts. Default 0.
    #[serde(default)]
    pub start_ms: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            rpcs: 100,
            concurrency: 1,
            deadline_ms: 1000,
            wait_for_ready: false,
            pacing_ms: 10,
            start_ms: 0,
        }
    }
}

fn default_rpcs() -> u32 {
    100
}
fn one() -> u32 {
    1
}
fn default_deadline_ms() -> u64 {
    1000
}
fn default_pacing_ms() -> u64 {
    10
}

/// The `[network]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Least one-way message latency, ms. Default 1.
    #[serde(default = "one_u64")]
    pub min_latency_ms: u64,
    /// Greatest one-way message latency, ms; each message draws from turmoil's seeded RNG.
    /// Default 5.
    #[serde(default = "five")]
    pub max_latency_ms: u64,
    /// Fixed latencies for particular links.
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
}

impl Default for Network {
    fn default() -> Self {
        Self { min_latency_ms: 1, max_latency_ms: 5, links: Vec::new() }
    }
}

fn one_u64() -> u64 {
    1
}
fn five() -> u64 {
    5
}

/// A `[[network.link]]`: a fixed latency between two hosts (both directions).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two hosts (`"client"` is the client).
    #[serde(deserialize_with = "two_hosts")]
    pub between: [String; 2],
    /// The latency, ms.
    pub latency_ms: u64,
}

/// Reads `between`: exactly two host names. (serde's own `[String; 2]` reads the first two of
/// a longer list and ignores the rest.)
fn two_hosts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[String; 2], D::Error> {
    let hosts = Vec::<String>::deserialize(d)?;
    let len = hosts.len();
    <[String; 2]>::try_from(hosts)
        .map_err(|_| serde::de::Error::invalid_length(len, &"`between` with exactly two hosts"))
}

fn some_two_hosts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<[String; 2]>, D::Error> {
    two_hosts(d).map(Some)
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop a host: its sockets close, connects to it hang (turmoil drops them).
    Crash,
    /// Start a crashed host again.
    Restart,
    /// Crash and restart at once.
    Bounce,
    /// Drop every message between two hosts (or one way with `oneway`).
    Partition,
    /// Undo a partition.
    Repair,
    /// Hold messages between two hosts until released.
    Hold,
    /// Deliver held messages.
    Release,
    /// Set a fixed latency between two hosts.
    Latency,
    /// Push a new address list through the manual resolver.
    Resolve,
    /// Register a server in etcd (again, after `deregister`, or before its `at_ms`).
    Register,
    /// Revoke a server's registration; the server keeps serving.
    Deregister,
    /// Expire a server's current lease in etcd now, as if its time-to-live ran out.
    ExpireLease,
    /// Compact etcd's history up to its current revision.
    Compact,
    /// From now on, a server sends each response's headers at once and its body `delay_ms`
    /// later (0: at once again); the delay outlives restarts of its host.
    SlowBody,
    /// A server sends GOAWAY on every open connection now, as at MAX_CONNECTION_AGE; it keeps
    /// serving new ones.
    #[serde(rename = "goaway")]
    GoAway,
    /// A server's health service reports NOT_SERVING for `service` (default: every service it
    /// knows); the status outlives restarts of its host.
    Unhealthy,
    /// A server's health service reports SERVING again for `service` (default: every service).
    Healthy,
}

/// A `[[fault]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in simulated ms from the start.
    pub at_ms: u64,
    /// What.
    pub action: Action,
    /// The host, for `crash`, `restart` and `bounce`.
    pub host: Option<String>,
    /// The two hosts, for `partition`, `repair`, `hold`, `release` and `latency`.
    #[serde(default, deserialize_with = "some_two_hosts")]
    pub between: Option<[String; 2]>,
    /// For `partition` and `repair`: only the direction from `between[0]` to `between[1]`.
    #[serde(default)]
    pub oneway: bool,
    /// For `latency`: the new latency, ms.
    pub latency_ms: Option<u64>,
    /// For `resolve`: the new address list (same syntax as `client.manual_addresses`).
    pub addresses: Option<Vec<String>>,
    /// For `resolve`: `false` only changes what the resolver answers the channel's next
    /// re-resolution request (as a DNS record that changed), without pushing it. Default true.
    pub push: Option<bool>,
    /// The server, for `register`, `deregister`, `expire_lease`, `slow_body`, `goaway`,
    /// `unhealthy` and `healthy`.
    pub server: Option<String>,
    /// For `unhealthy` and `healthy`: the health service name to change (empty: the whole
    /// server). Default: every service the server knows.
    pub service: Option<String>,
    /// For `slow_body`: how long the server holds back each response's body, ms (0: not at
    /// all).
    pub delay_ms: Option<u64>,
}

impl Fault {
    /// Whether this fault takes something away (a crash, a partition, a hold) rather than
    /// giving it back.
    pub fn is_disruption(&self) -> bool {
        matches!(self.action, Action::Crash | Action::Partition | Action::Hold | Action::Bounce)
    }

    /// Whether this fault heals an earlier one.
    pub fn is_heal(&self) -> bool {
        matches!(self.action, Action::Restart | Action::Repair | Action::Release | Action::Bounce)
    }

    /// The hosts it touches.
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self.host.iter().map(String::as_str).collect();
        hosts.extend(self.between.iter().flat_map(|b| b.iter().map(String::as_str)));
        hosts
    }

    /// One line saying what it does, for traces and reports.
    pub fn describe(&self) -> String {
        let what = match self.action {
            Action::Crash => "crash",
            Action::Restart => "restart",
            Action::Bounce => "bounce",
            Action::Partition => "partition",
            Action::Repair => "repair",
            Action::Hold => "hold",
            Action::Release => "release",
            Action::Latency => "latency",
            Action::Resolve => "resolve",
            Action::Register => "register",
            Action::Deregister => "deregister",
            Action::ExpireLease => "expire_lease",
            Action::Compact => "compact etcd",
            Action::SlowBody => "slow_body",
            Action::GoAway => "goaway",
            Action::Unhealthy => "unhealthy",
            Action::Healthy => "healthy",
        };
        let mut line = what.to_owned();
        if let Some(host) = &self.host {
            line.push_str(&format!(" {host}"));
        }
        if let Some(server) = &self.server {
            line.push_str(&format!(" {server}"));
        }
        if let Some([a, b]) = &self.between {
            let arrow = if self.oneway { "->" } else { "<->" };
            line.push_str(&format!(" {a}{arrow}{b}"));
        }
        if let Some(ms) = self.latency_ms {
            line.push_str(&format!(" {ms}ms"));
        }
        if let Some(addresses) = &self.addresses {
            line.push_str(&format!(" [{}]", addresses.join(", ")));
        }
        if self.push == Some(false) {
            line.push_str(" on the next re-resolution");
        }
        if let Some(ms) = self.delay_ms {
            line.push_str(&format!(" body +{ms}ms"));
        }
        if let Some(service) = &self.service {
            line.push_str(&format!(" service {service:?}"));
        }
        line
    }
}

/// The `[expect]` table: each key present turns on one property check.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The policy the channel must behave as: `pick_first` (never more than one connection
    /// open) or `round_robin` (a connection per distinct address, all open at once).
    pub policy: Option<String>,
    /// Connections accepted per server over the whole run, exactly.
    pub connections: Option<BTreeMap<String, u64>>,
    /// Connections accepted by all servers together, exactly.
    pub total_connections: Option<u64>,
    /// Subchannels the channel created, exactly (dedup: equal addresses share one).
    pub subchannels: Option<u64>,
    /// Expected share of successful RPCs per server (any non-negative numbers; normalised),
    /// over the run when there are no faults, else from `settle_ms` after the last one; also
    /// what `recovery_within_ms` checks against.
    pub weights: Option<BTreeMap<String, f64>>,
    /// The split is measured over RPCs that start this long after the last fault (latency
    /// changes aside). Default 0.
    pub settle_ms: Option<u64>,
    /// Allowed absolute difference between observed and expected shares. Default 0.05.
    pub tolerance: Option<f64>,
    /// After each crash or partition, every successful RPC that starts this long after it goes
    /// to a server the fault did not touch (until it heals).
    pub failover_within_ms: Option<u64>,
    /// After each heal, RPCs that start this long after it split per `weights` again.
    pub recovery_within_ms: Option<u64>,
    /// Failed RPCs allowed per fault (those ending between it and the next fault).
    pub lost_per_fault: Option<u64>,
    /// Failed RPCs allowed in the whole run. Default 0 when no other failure expectation is set.
    pub max_failed: Option<u64>,
    /// Every RPC must fail, with this code (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, …).
    pub all_fail_with: Option<String>,
    /// … and with a message containing this text.
    pub fail_message_contains: Option<String>,
    /// After the last heal, every RPC that starts this long after it succeeds, and one does.
    pub liveness_within_ms: Option<u64>,
    /// The channel's state when the workload ends (`READY`, `TRANSIENT_FAILURE`, …).
    pub final_state: Option<String>,
    /// Per server: no RPC that starts at or after this simulated time (ms) is served by it.
    pub no_rpcs_after_ms: Option<BTreeMap<String, u64>>,
    /// After each `unhealthy` fault, no successful RPC that starts this long after it (and
    /// before the server's next `healthy`) is served by that server (gRFC A17).
    pub unhealthy_gets_no_rpcs_after_ms: Option<u64>,
    /// Per server: connections it accepts at or after `connections_after_ms`, exactly.
    pub connections_after: Option<BTreeMap<String, u64>>,
    /// When `connections_after` starts counting, simulated ms. Default 0.
    pub connections_after_ms: Option<u64>,
    /// Per address (`host:port`): it is in no resolver update from this simulated time (ms) on,
    /// and was in an earlier one.
    pub unresolved_by_ms: Option<BTreeMap<String, u64>>,
    /// The distinct `host:port`s of the resolver's last update, in any order.
    pub final_addresses: Option<Vec<String>>,
    /// With an `etcd:///` target: the resolver's watch was cancelled as compacted (and the
    /// resolver read the prefix again) at least this many times.
    pub min_compacted_rereads: Option<u64>,
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// [`ScenarioError::Read`], [`ScenarioError::Parse`] (naming the line and key) or
    /// [`ScenarioError::Invalid`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses and validates scenario text; `path` names it in errors and replay commands.
    ///
    /// # Errors
    /// [`ScenarioError::Parse`] or [`ScenarioError::Invalid`].
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Self, ScenarioError> {
        let path = path.as_ref().to_owned();
        let mut scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { path: path.clone(), message: e.to_string() })?;
        scenario.path = path;
        scenario.validate().map_err(|problem| ScenarioError::Invalid {
            line: locate::line_of(text, &problem.at),
            path: scenario.path.clone(),
            what: problem.what,
            reason: problem.reason,
        })?;
        Ok(scenario)
    }

    /// Validates a scenario built in code (as swarm runs build them), as [`Scenario::parse`]
    /// validates a file; errors name no line.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`].
    pub fn check(&self) -> Result<(), ScenarioError> {
        self.validate().map_err(|problem| ScenarioError::Invalid {
            path: self.path.clone(),
            line: None,
            what: problem.what,
            reason: problem.reason,
        })
    }

    /// The scenario's name: its file name without `.toml`.
    pub fn name(&self) -> String {
        self.path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    }

    /// The servers with `count` expanded, in file order.
    pub fn server_list(&self) -> Vec<Server> {
        let mut servers = Vec::new();
        for spec in &self.servers {
            match spec.count {
                None | Some(1) => servers.push(Server {
                    name: spec.name.clone(),
                    host: spec.host.clone().unwrap_or_else(|| spec.name.clone()),
                    port: spec.port,
                    register: spec.register.clone(),
                    body_delay_ms: spec.body_delay_ms,
                    max_connection_age_ms: spec.max_connection_age_ms,
                    max_connection_age_grace_ms: spec.max_connection_age_grace_ms,
                    health: spec.health,
                }),
                Some(n) => servers.extend((1..=n).map(|i| {
                    let name = format!("{}{i}", spec.name);
                    Server {
                        host: name.clone(),
                        name,
                        port: spec.port,
                        register: spec.register.clone(),
                        body_delay_ms: spec.body_delay_ms,
                        max_connection_age_ms: spec.max_connection_age_ms,
                        max_connection_age_grace_ms: spec.max_connection_age_grace_ms,
                        health: spec.health,
                    }
                })),
            }
        }
        servers
    }

    /// The distinct server hosts, in first-mention order.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for server in self.server_list() {
            if !hosts.contains(&server.host) {
                hosts.push(server.host);
            }
        }
        hosts
    }
}

/// The turmoil host name of the client.
pub const CLIENT_HOST: &str = "client";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;

    const MINIMAL: &str = r#"
        [[server]]
        name = "a"
        port = 9080
        [client]
        target = "pass:///a:9080"
    "#;

    #[test]
    fn a_minimal_scenario_parses_with_documented_defaults() {
        let s = Scenario::parse("x.toml", MINIMAL).unwrap();
        assert_eq!(s.workload.rpcs, 100);
        assert_eq!(s.client.connect_timeout_ms, 1000);
        assert!(s.client.keepalive.enabled, "keep-alive must be on by default in simulations");
        assert_eq!(s.name(), "x");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_file_and_the_key() {
        let text = format!("{MINIMAL}\n[workload]\nrcps = 3\n");
        let err = Scenario::parse("sims/typo.toml", &text).unwrap_err().to_string();
        assert!(err.contains("sims/typo.toml"), "the error must name the file: {err}");
        assert!(err.contains("rcps"), "the error must name the unknown key: {err}");
    }

    #[test]
    fn a_fault_on_an_unknown_host_is_an_error() {
        let text = format!("{MINIMAL}\n[[fault]]\nat_ms = 5\naction = \"crash\"\nhost = \"zz\"\n");
        let err = Scenario::parse("s.toml", &text).unwrap_err().to_string();
        assert!(err.contains("fault 1") && err.contains("\"zz\""), "{err}");
    }

    /// Regression: a NaN, infinite, negative or huge backoff multiplier or jitter loaded
    /// without complaint and panicked inside the backoff arithmetic once the run started.
    #[test]
    fn a_backoff_out_of_range_is_a_load_error_naming_the_file_the_key_and_the_range() {
        let cases = [
            ("multiplier = nan", "client.backoff.multiplier", "1.0..=100.0"),
            ("multiplier = inf", "client.backoff.multiplier", "1.0..=100.0"),
            ("multiplier = -2.0", "client.backoff.multiplier", "1.0..=100.0"),
            ("multiplier = 0.5", "client.backoff.multiplier", "1.0..=100.0"),
            ("multiplier = 1e300", "client.backoff.multiplier", "1.0..=100.0"),
            ("jitter = nan", "client.backoff.jitter", "0.0..=1.0"),
            ("jitter = -inf", "client.backoff.jitter", "0.0..=1.0"),
            ("jitter = -0.1", "client.backoff.jitter", "0.0..=1.0"),
            ("jitter = 5.0", "client.backoff.jitter", "0.0..=1.0"),
            ("max_ms = 18446744073709551615", "client.backoff.max_ms", "1..=86400000"),
            ("max_ms = 0", "client.backoff.max_ms", "1..=86400000"),
            ("initial_ms = 0", "client.backoff.initial_ms", "1..=max_ms"),
            ("initial_ms = 5000\nmax_ms = 100", "client.backoff.initial_ms", "1..=max_ms"),
        ];
        for (body, key, range) in cases {
            let text = format!("{MINIMAL}\n[client.backoff]\n{body}\n");
            let err = Scenario::parse("sims/b.toml", &text)
                .expect_err(&format!("{body} must be rejected"))
                .to_string();
            assert!(
                err.contains("sims/b.toml") && err.contains(key) && err.contains(range),
                "{body}: the error must name the file, {key} and the range {range}: {err}"
            );
        }
        let text = format!("{MINIMAL}\n[client.backoff]\nmultiplier = 1.0\njitter = 1.0\n");
        Scenario::parse("sims/b.toml", &text).expect("the ends of the ranges are allowed");
    }

    #[test]
    fn min_compacted_rereads_of_zero_is_a_load_error() {
        let text = format!("{ETCD}\n[expect]\nmin_compacted_rereads = 0\n");
        let err = Scenario::parse("e.toml", &text).unwrap_err().to_string();
        assert!(err.contains("min_compacted_rereads") && err.contains("at least 1"), "{err}");
    }

    #[test]
    fn count_expands_servers_onto_their_own_hosts() {
        let text = r#"
            [[server]]
            name = "s"
            port = 1
            count = 3
            [client]
            target = "pass:///s1:1"
        "#;
        let s = Scenario::parse("c.toml", text).unwrap();
        let names: Vec<_> = s.server_list().into_iter().map(|s| (s.name, s.host)).collect();
        assert_eq!(
            names,
            [("s1".into(), "s1".into()), ("s2".into(), "s2".into()), ("s3".into(), "s3".into())]
        );
    }

    const ETCD: &str = r#"
        [etcd]
        [[server]]
        name = "a"
        port = 9080
        register = { service = "echo", ttl_s = 2 }
        [[server]]
        name = "b"
        port = 9080
        [client]
        target = "etcd:///echo#2"
    "#;

    #[test]
    fn an_etcd_section_parses_with_documented_defaults() {
        let s = Scenario::parse("e.toml", ETCD).unwrap();
        let etcd = s.etcd.as_ref().expect("[etcd] is read");
        assert_eq!((etcd.host.as_str(), etcd.port, etcd.min_lease_ttl_s), ("etcd", 2379, 2));
        let register = s.server_list()[0].register.clone().expect("a registers");
        assert_eq!((register.service.as_str(), register.ttl_s, register.at_ms), ("echo", 2, 0));
    }

    #[test]
    fn an_unknown_key_in_etcd_or_register_is_an_error() {
        let text = ETCD.replace("[etcd]", "[etcd]\nhots = \"x\"");
        let err = Scenario::parse("e.toml", &text).unwrap_err().to_string();
        assert!(err.contains("hots"), "the error must name the unknown key: {err}");
        let text = ETCD.replace("ttl_s = 2", "ttl = 2");
        let err = Scenario::parse("e.toml", &text).unwrap_err().to_string();
        assert!(err.contains("ttl"), "the error must name the unknown key: {err}");
    }

    #[test]
    fn goaway_and_max_age_keys_are_checked_naming_the_server_and_the_key() {
        let text = MINIMAL.replace("port = 9080", "port = 9080\nmax_connection_age_ms = 500");
        let text = format!("{text}\n[[fault]]\nat_ms = 5\naction = \"goaway\"\nserver = \"a\"\n");
        let scenario = Scenario::parse("g.toml", &text).unwrap();
        assert_eq!(scenario.faults[0].action, Action::GoAway);
        assert_eq!(scenario.server_list()[0].max_connection_age_ms, Some(500));

        let too_young = MINIMAL.replace("port = 9080", "port = 9080\nmax_connection_age_ms = 5");
        let err = Scenario::parse("g.toml", &too_young).unwrap_err().to_string();
        assert!(err.contains("max_connection_age_ms"), "the error must name the key: {err}");
        let grace_alone =
            MINIMAL.replace("port = 9080", "port = 9080\nmax_connection_age_grace_ms = 5");
        let err = Scenario::parse("g.toml", &grace_alone).unwrap_err().to_string();
        assert!(err.contains("needs `max_connection_age_ms`"), "{err}");
        let fault = |body: &str| format!("{MINIMAL}\n[[fault]]\nat_ms = 5\n{body}\n");
        let err = Scenario::parse("g.toml", &fault("action = \"goaway\"")).unwrap_err();
        assert!(err.to_string().contains("needs `server`"), "{err}");
        let err = Scenario::parse("g.toml", &fault("action = \"goaway\"\nserver = \"zz\""));
        assert!(err.unwrap_err().to_string().contains("no server is named \"zz\""));
        let err =
            Scenario::parse("g.toml", &fault("action = \"crash\"\nhost = \"a\"\npush = false"));
        assert!(err.unwrap_err().to_string().contains("`push` goes with resolve only"));
    }

    #[test]
    fn an_etcd_target_or_a_registration_needs_an_etcd_section() {
        let text = ETCD.replace("[etcd]", "");
        let err = Scenario::parse("e.toml", &text).unwrap_err().to_string();
        assert!(err.contains("needs [etcd]"), "{err}");
    }

    #[test]
    fn etcd_faults_name_registering_servers_and_the_etcd_host_is_known() {
        let fault = |body: &str| format!("{ETCD}\n[[fault]]\nat_ms = 5\n{body}\n");
        let ok = fault("action = \"deregister\"\nserver = \"a\"");
        Scenario::parse("e.toml", &ok).unwrap();
        let ok = fault("action = \"partition\"\nbetween = [\"etcd\", \"client\"]");
        Scenario::parse("e.toml", &ok).unwrap();
        let bad = fault("action = \"expire_lease\"\nserver = \"b\"");
        let err = Scenario::parse("e.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("has `register`"), "{err}");
        let bad = fault("action = \"compact\"\nhost = \"a\"");
        assert!(Scenario::parse("e.toml", &bad).is_err(), "compact takes no host");
    }

    #[test]
    fn addresses_parse_with_and_without_attributes() {
        assert_eq!(parse_address("a:1").unwrap(), Address::new("a:1"));
        assert_eq!(
            parse_address("a:1{idx=2}").unwrap(),
            Address::new("a:1").with_connection_index(2)
        );
        assert_eq!(
            parse_address("a:1{zone=\"x\"}").unwrap(),
            Address::new("a:1").with_attribute("zone", "x")
        );
        assert!(parse_address("a:1{idx=2").is_err());
        assert!(parse_address("nope").is_err());
    }
}
