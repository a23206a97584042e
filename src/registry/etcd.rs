//! Registration in etcd under a lease with keep-alive (DESIGN §2.7).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use anchorage::etcd::EtcdClient;
//! use anchorage::registry::EtcdRegistrar;
//!
//! let client = EtcdClient::connect("127.0.0.1:2379")?;
//! let registration = EtcdRegistrar::new(client, "my-service", "10.0.0.1:50051")?
//!     .ttl(10)
//!     .register()
//!     .await?;
//! // … serve; `etcd:///my-service` resolvers now list 10.0.0.1:50051 …
//! registration.deregister().await?; // revokes the lease: the key is gone at once
//! # Ok(()) }
//! ```
//!
//! # Lifecycle
//! 1. [`EtcdRegistrar::register`] grants a lease of the requested time-to-live and writes
//!    `<service>/<addr>` = `{"Op":0,"Addr":"<addr>","Metadata":…}` under it. It fails if etcd
//!    cannot be reached: the caller decides whether to start without being discoverable.
//! 2. A background task renews the lease every third of its granted time-to-live over one
//!    keep-alive stream, and opens a new stream (with backoff) when that one fails. While etcd
//!    is unreachable it keeps trying the same lease: etcd does not expire leases while it has no
//!    leader, and a restarted etcd gives every lease its time-to-live again.
//! 3. When etcd answers that the lease is gone (it expired while this server could not reach
//!    etcd, or someone revoked it), the task registers again: a new lease, the key written again.
//! 4. [`Registration::deregister`] stops the task and revokes the lease, which deletes the key.
//!    Dropping a [`Registration`] only stops the task: the key lives until the lease expires, as
//!    when the process dies.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anchor::EtcdService;
use crate::backoff::{Backoff, BackoffConfig};
use crate::etcd::naming::{encode_endpoint, endpoint_key};
use crate::etcd::{EtcdClient, EtcdError, Lease};

/// The default lease time-to-live, in seconds.
pub const DEFAULT_TTL: i64 = 10;

/// Errors of registration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The service name cannot be the prefix of an `etcd:///` target.
    #[error("etcd registration: service {service:?}: {reason}")]
    InvalidService {
        /// The name given.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is empty or contains whitespace or control characters.
    #[error(
        "etcd registration: address {addr:?} must be non-empty, without whitespace or control characters"
    )]
    InvalidAddr {
        /// The address given.
        addr: String,
    },
    /// The time-to-live is not a positive number of seconds.
    #[error("etcd registration: the lease time-to-live must be at least 1 s, got {ttl}")]
    InvalidTtl {
        /// The time-to-live given.
        ttl: i64,
    },
    /// etcd failed or could not be reached.
    #[error("etcd registration of {key:?} failed")]
    Etcd {
        /// The key being registered.
        key: String,
        /// What the etcd client reported.
        #[source]
        source: EtcdError,
    },
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The key is written under `lease`, which was renewed (or granted) last time the task
    /// heard from etcd.
    Registered {
        /// The lease id.
        lease: i64,
    },
    /// The last renewal or registration attempt failed; the task keeps retrying.
    Retrying {
        /// The lease being renewed, or `None` while registering again after losing it.
        lease: Option<i64>,
        /// The last error.
        reason: String,
    },
}

/// Configures the registration of one address of one service.
#[derive(Debug, Clone)]
pub struct EtcdRegistrar {
    client: EtcdClient,
    service: String,
    addr: String,
    ttl: i64,
    metadata: Value,
    retry: BackoffConfig,
    seed: u64,
}

impl EtcdRegistrar {
    /// Registration of `addr` under `service`, with key `<service>/<addr>`.
    ///
    /// # Errors
    /// [`RegistryError::InvalidService`] for a service name that an `etcd:///` target could not
    /// name (empty, with whitespace, control characters, `,` or `#`);
    /// [`RegistryError::InvalidAddr`] for an empty address or one with whitespace or control
    /// characters.
    pub fn new(client: EtcdClient, service: &str, addr: &str) -> Result<Self, RegistryError> {
        let invalid =
            |reason: String| RegistryError::InvalidService { service: service.to_owned(), reason };
        if service.contains('#') || service.contains("%23") {
            return Err(invalid("\"#\" is not allowed (it starts a connection count)".into()));
        }
        service.parse::<EtcdService>().map_err(|err| invalid(err.to_string()))?;
        if addr.is_empty() || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RegistryError::InvalidAddr { addr: addr.to_owned() });
        }
        Ok(Self {
            client,
            service: service.to_owned(),
            addr: addr.to_owned(),
            ttl: DEFAULT_TTL,
            metadata: Value::Null,
            retry: BackoffConfig {
                initial: Duration::from_millis(500),
                multiplier: 1.6,
                jitter: 0.2,
                max: Duration::from_secs(5),
            },
            seed: 0,
        })
    }

    /// Sets the lease time-to-live in seconds (etcd may raise it to its minimum). Default:
    /// [`DEFAULT_TTL`] (10 s).
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
        self
    }

    /// Sets the `Metadata` written with the address. Default: `null`.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the backoff between failed keep-alive and registration attempts. Default: 0.5 s,
    /// ×1.6, ±20 %, at most 5 s.
    pub fn retry_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.retry = backoff;
        self
    }

    /// Seeds the retry jitter. Default: 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The key this registration writes: `<service>/<addr>`.
    pub fn key(&self) -> String {
        endpoint_key(&self.service, &self.addr)
    }

    /// Grants a lease, writes the key under it and starts keeping the lease alive.
    ///
    /// # Errors
    /// [`RegistryError::InvalidTtl`] for a time-to-live below 1 s; [`RegistryError::Etcd`] when
    /// etcd fails or cannot be reached (nothing is left behind but, at worst, a lease that
    /// expires on its own).
    pub async fn register(self) -> Result<Registration, RegistryError> {
        if self.ttl < 1 {
            return Err(RegistryError::InvalidTtl { ttl: self.ttl });
        }
        let keeper = Keeper {
            key: self.key(),
            value: encode_endpoint(&self.addr, &self.metadata),
            ttl: self.ttl,
            backoff: Backoff::new(self.retry, ChaCha8Rng::seed_from_u64(self.seed)),
            client: self.client,
        };
        let key = keeper.key.clone();
        let lease = keeper
            .write()
            .await
            .map_err(|source| RegistryError::Etcd { key: key.clone(), source })?;
        tracing::info!(%key, lease = lease.id, ttl = lease.ttl, "etcd registration: registered");
        let (state_tx, state) = watch::channel(RegistrationState::Registered { lease: lease.id });
        let client = keeper.client.clone();
        let task = tokio::spawn(keeper.run(lease, state_tx));
        Ok(Registration { key, ttl: lease.ttl, client, state, task })
    }
}

/// A live registration. Dropping it stops the keep-alive task and leaves the key to expire
/// with its lease; [`Registration::deregister`] removes it at once.
#[derive(Debug)]
pub struct Registration {
    key: String,
    ttl: i64,
    client: EtcdClient,
    state: watch::Receiver<RegistrationState>,
    task: JoinHandle<()>,
}

impl Registration {
    /// The key written: `<service>/<addr>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The time-to-live etcd granted the first lease, in seconds (it may exceed the request).
    pub fn granted_ttl(&self) -> i64 {
        self.ttl
    }

    /// The lease the key is written under, or `None` while registering again after losing it.
    pub fn lease(&self) -> Option<i64> {
        match &*self.state.borrow() {
            RegistrationState::Registered { lease } => Some(*lease),
            RegistrationState::Retrying { lease, .. } => *lease,
        }
    }

    /// Where the registration stands now.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of [`Registration::state`].
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Stops renewing and revokes the current lease, deleting the key. A lease that is already
    /// gone counts as revoked.
    ///
    /// # Errors
    /// [`RegistryError::Etcd`] when etcd cannot be reached: the key then lives until the lease
    /// expires.
    pub async fn deregister(self) -> Result<(), RegistryError> {
        self.task.abort();
        let Some(lease) = self.lease() else { return Ok(()) };
        match self.client.revoke(lease).await {
            Ok(()) => {}
            Err(EtcdError::Rpc { status, .. }) if status.code() == tonic::Code::NotFound => {}
            Err(source) => return Err(RegistryError::Etcd { key: self.key.clone(), source }),
        }
        tracing::info!(key = %self.key, lease, "etcd registration: deregistered");
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The keep-alive task's state.
struct Keeper {
    client: EtcdClient,
    key: String,
    value: Vec<u8>,
    ttl: i64,
    backoff: Backoff,
}

impl Keeper {
    /// Grants a lease and writes the key under it.
    async fn write(&self) -> Result<Lease, EtcdError> {
        let lease = self.client.grant(self.ttl).await?;
        self.client.put(self.key.clone(), self.value.clone(), Some(lease.id)).await?;
        Ok(lease)
    }

    async fn run(mut self, mut lease: Lease, state: watch::Sender<RegistrationState>) {
        loop {
            self.keep_alive(lease, &state).await;
            tracing::warn!(key = %self.key, lease = lease.id, "etcd registration: lease lost; registering again");
            lease = loop {
                match self.write().await {
                    Ok(lease) => break lease,
                    Err(err) => {
                        let reason = err.to_string();
                        state.send_replace(RegistrationState::Retrying { lease: None, reason });
                        tokio::time::sleep(self.backoff.next_delay()).await;
                    }
                }
            };
            self.backoff.reset();
            tracing::info!(key = %self.key, lease = lease.id, "etcd registration: registered again");
            state.send_replace(RegistrationState::Registered { lease: lease.id });
        }
    }

    /// Renews `lease` until etcd says it is gone.
    async fn keep_alive(&mut self, lease: Lease, state: &watch::Sender<RegistrationState>) {
        let retrying = |err: &EtcdError| RegistrationState::Retrying {
            lease: Some(lease.id),
            reason: err.to_string(),
        };
        loop {
            let mut stream = match self.client.keep_alive(lease.id).await {
                Ok(stream) => stream,
                Err(EtcdError::LeaseExpired { .. }) => return,
                Err(err) => {
                    state.send_replace(retrying(&err));
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    continue;
                }
            };
            self.backoff.reset();
            state.send_replace(RegistrationState::Registered { lease: lease.id });
            loop {
                tokio::time::sleep(renew_interval(stream.ttl())).await;
                match stream.keep_alive().await {
                    Ok(_) => {
                        state.send_if_modified(|current| {
                            let renewed = RegistrationState::Registered { lease: lease.id };
                            let changed = *current != renewed;
                            *current = renewed;
                            changed
                        });
                    }
                    Err(EtcdError::LeaseExpired { .. }) => return,
                    Err(err) => {
                        tracing::warn!(key = %self.key, %err, "etcd registration: keep-alive failed");
                        state.send_replace(retrying(&err));
                        break;
                    }
                }
            }
        }
    }
}

/// A third of the time-to-live, as etcd's Go client renews, and at least 100 ms.
fn renew_interval(ttl: i64) -> Duration {
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    (ttl / 3).max(Duration::from_millis(100))
}
