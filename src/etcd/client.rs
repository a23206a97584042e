//! [`EtcdClient`]: the etcd v3 operations anchorage needs, over one [`Channel`].
//!
//! # Failover
//! The client's channel targets `pass:///<endpoint>,<endpoint>,…`, resolved by a registry that
//! holds the `pass` resolver alone (never the `etcd` one), with the default `pick_first`
//! policy: it connects to the first endpoint that answers and sends every RPC there. When that
//! connection is lost (the member crashed, or HTTP/2 keep-alive declared it dead) `pick_first`
//! starts again from the top of the list and the next RPC goes to the first endpoint that
//! accepts a connection. RPCs in flight on the lost connection fail with `UNAVAILABLE`; the
//! resolver and the registration loops retry them with backoff. This is the same rule etcd's
//! Go client follows (one connection, move on when it fails), built from our own parts so it
//! runs over any [`Connector`], including the simulated network.
//!
//! # Timeouts
//! Every unary RPC carries a deadline ([`EtcdClientBuilder::request_timeout`]). Streams carry
//! none; a stream over a connection that silently died is ended by HTTP/2 keep-alive
//! ([`EtcdClientBuilder::keepalive`], on by default).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::balancer::subchannel::KeepAlive;
use crate::channel::Channel;
use crate::connector::{ConnectFuture, Connector, TcpConnector};
use crate::resolver::Registry;
use crate::resolver::pass::PassBuilder;
use crate::tls::TlsConfig;

use super::EtcdError;
use super::endpoints::Endpoints;
use super::naming::prefix_range_end;
use super::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, TxnRequest, TxnResponse, kv_client::KvClient,
    lease_client::LeaseClient, watch_client::WatchClient,
};
use super::pb::mvccpb::KeyValue;
use super::stream::{KeepAliveStream, WatchOptions, Watcher};

/// Configures an [`EtcdClient`]. Cheap to clone: a resolver builder keeps one as a template.
#[derive(Debug, Clone)]
pub struct EtcdClientBuilder {
    endpoints: Endpoints,
    connector: SharedConnector,
    request_timeout: Duration,
    dial_timeout: Duration,
    backoff: BackoffConfig,
    keepalive: Option<KeepAlive>,
    seed: Option<u64>,
    tls: Option<TlsConfig>,
}

impl Default for EtcdClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::default(),
            connector: SharedConnector(Arc::new(TcpConnector)),
            request_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(5),
            backoff: BackoffConfig {
                initial: Duration::from_millis(500),
                multiplier: 1.6,
                jitter: 0.2,
                max: Duration::from_secs(5),
            },
            keepalive: Some(KeepAlive {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                while_idle: true,
            }),
            seed: None,
            tls: None,
        }
    }
}

impl EtcdClientBuilder {
    /// Sets the etcd endpoints. Default: [`DEFAULT_ENDPOINT`](super::DEFAULT_ENDPOINT) alone.
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// The endpoints configured.
    pub fn configured_endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Sets how the client dials. Default: [`TcpConnector`].
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = SharedConnector(Arc::new(connector));
        self
    }

    /// Speaks TLS to the endpoints with `config`, verifying each endpoint's own host
    /// ([`TlsConfig::verify_dialed_host`]) unless `config` names a server name. Default: TLS
    /// trusting the webpki roots when the endpoints are `https://` ([`Endpoints::is_tls`]),
    /// plaintext otherwise.
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets the deadline of each unary RPC. Default: 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the least time a connection attempt to an endpoint is given. Default: 5 s.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets the reconnect backoff of the client's connections. Default: 0.5 s, ×1.6, ±20 %, at
    /// most 5 s — short, so discovery resumes soon after an etcd outage ends.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets HTTP/2 keep-alive; `None` turns it off. Default: PING every 10 s, 5 s to answer,
    /// also while idle, so watches and keep-alive streams over a dead connection end.
    pub fn keepalive(mut self, keepalive: Option<KeepAlive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Seeds the channel's random number generator (backoff jitter). Default: drawn from the
    /// operating system and logged, as for any [`Channel`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the client. Connecting starts at once, in the background; nothing waits for it.
    ///
    /// # Errors
    /// [`EtcdError::Channel`] outside a tokio runtime.
    pub fn build(&self) -> Result<EtcdClient, EtcdError> {
        let target = format!("pass:///{}", self.endpoints);
        let mut builder = Channel::builder(target)
            .registry(endpoint_resolvers())
            .connector(self.connector.clone())
            .backoff(self.backoff.clone())
            .min_connect_timeout(self.dial_timeout);
        if let Some(keepalive) = &self.keepalive {
            builder = builder.keepalive(keepalive.clone());
        }
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        let tls = match &self.tls {
            Some(config) => Some(config.clone()),
            None if self.endpoints.is_tls() => Some(TlsConfig::with_webpki_roots()),
            None => None,
        };
        if let Some(tls) = tls {
            builder = builder.tls(tls.for_endpoints());
        }
        let channel = builder.build()?;
        Ok(EtcdClient {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
            endpoints: self.endpoints.clone(),
            request_timeout: self.request_timeout,
        })
    }
}

/// The resolvers a client's channel may use: `pass` alone, for the `pass:///` endpoint list it
/// targets (the connector looks host names up). Not [`Registry::default`]: that one holds the
/// `etcd` resolver, which is built on etcd clients, and resolving through it would close the
/// loop channel → registry → etcd resolver → etcd client → channel.
fn endpoint_resolvers() -> Registry {
    let mut registry = Registry::empty();
    registry.register(Arc::new(PassBuilder));
    registry
}

/// A [`Connector`] shared by every client a builder builds.
#[derive(Debug, Clone)]
struct SharedConnector(Arc<dyn Connector>);

impl Connector for SharedConnector {
    fn connect(&self, addr: &str) -> ConnectFuture {
        self.0.connect(addr)
    }

    fn min_keepalive_interval(&self) -> Duration {
        self.0.min_keepalive_interval()
    }
}

/// A thin etcd v3 client: KV, lease and watch operations over one [`Channel`] to a list of
/// endpoints (see the [module docs](crate::etcd) for failover and timeouts).
///
/// Cheap to clone; clones share the channel, which closes when the last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), anchorage::etcd::EtcdError> {
/// use anchorage::etcd::EtcdClient;
/// let client = EtcdClient::connect("127.0.0.1:2379")?;
/// let lease = client.grant(10).await?;
/// client.put("svc/10.0.0.1:50051", r#"{"Op":0,"Addr":"10.0.0.1:50051"}"#, Some(lease.id)).await?;
/// let read = client.range_prefix("svc/").await?;
/// assert_eq!(read.kvs.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
    endpoints: Endpoints,
    request_timeout: Duration,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient").field("endpoints", &self.endpoints.to_string()).finish()
    }
}

/// The result of a range read.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResult {
    /// The store's revision the read saw; watch from `revision + 1` to miss nothing after it.
    pub revision: i64,
    /// The keys read, in key order.
    pub kvs: Vec<KeyValue>,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub id: i64,
    /// The time-to-live the server granted, in seconds (it may raise a small request).
    pub ttl: i64,
}

impl EtcdClient {
    /// Starts configuring a client.
    pub fn builder() -> EtcdClientBuilder {
        EtcdClientBuilder::default()
    }

    /// A client with default settings for a comma-separated endpoint list (`a:2379,b:2379`).
    ///
    /// # Errors
    /// [`EtcdError::Endpoints`] for a bad list, [`EtcdError::Channel`] outside a tokio runtime.
    pub fn connect(endpoints: &str) -> Result<Self, EtcdError> {
        EtcdClientBuilder::default().endpoints(endpoints.parse()?).build()
    }

    /// The endpoints this client fails over between.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.request_timeout);
        request
    }

    /// Reads every key starting with `prefix`, at the newest revision.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`] when etcd fails or cannot be reached in time.
    pub async fn range_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<RangeResult, EtcdError> {
        let key = prefix.into();
        let range_end = prefix_range_end(&key);
        self.range(RangeRequest { key, range_end, ..Default::default() }).await
    }

    /// Reads one key, at the newest revision.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`] when etcd fails or cannot be reached in time.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, EtcdError> {
        let read = self.range(RangeRequest { key: key.into(), ..Default::default() }).await?;
        Ok(read.kvs.into_iter().next())
    }

    /// Runs any range request.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`]; a read at a compacted revision fails with `OUT_OF_RANGE`.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResult, EtcdError> {
        let response = self.kv.clone().range(self.request(request)).await.map_err(rpc("range"))?;
        let response = response.into_inner();
        let revision = response.header.map_or(0, |h| h.revision);
        Ok(RangeResult { revision, kvs: response.kvs })
    }

    /// Writes `key = value`, attached to `lease` if given; returns the new revision.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`]; an unknown lease fails with `NOT_FOUND`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<i64, EtcdError> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            lease: lease.unwrap_or(0),
            ..Default::default()
        };
        let response = self.kv.clone().put(self.request(request)).await.map_err(rpc("put"))?;
        Ok(response.into_inner().header.map_or(0, |h| h.revision))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    ///
    /// # Errors
    /// [`EtcdError::Rpc`].
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, EtcdError> {
        self.delete_range(DeleteRangeRequest { key: key.into(), ..Default::default() }).await
    }

    /// Deletes every key starting with `prefix`; returns how many were deleted.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`].
    pub async fn delete_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<i64, EtcdError> {
        let key = prefix.into();
        let range_end = prefix_range_end(&key);
        self.delete_range(DeleteRangeRequest { key, range_end, ..Default::default() }).await
    }

    async fn delete_range(&self, request: DeleteRangeRequest) -> Result<i64, EtcdError> {
        let response =
            self.kv.clone().delete_range(self.request(request)).await.map_err(rpc("delete"))?;
        Ok(response.into_inner().deleted)
    }

    /// Runs a transaction.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`].
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, EtcdError> {
        let response = self.kv.clone().txn(self.request(request)).await.map_err(rpc("txn"))?;
        Ok(response.into_inner())
    }

    /// Discards the event history before `revision`; watches from earlier revisions are then
    /// cancelled as compacted.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`]; a revision already compacted or in the future fails with
    /// `OUT_OF_RANGE`.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let request = CompactionRequest { revision, physical: false };
        self.kv.clone().compact(self.request(request)).await.map_err(rpc("compact"))?;
        Ok(())
    }

    /// Grants a lease of `ttl` seconds.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`].
    pub async fn grant(&self, ttl: i64) -> Result<Lease, EtcdError> {
        let request = LeaseGrantRequest { ttl, id: 0 };
        let response =
            self.lease.clone().lease_grant(self.request(request)).await.map_err(rpc("grant"))?;
        let response = response.into_inner();
        Ok(Lease { id: response.id, ttl: response.ttl })
    }

    /// Revokes a lease, deleting every key attached to it.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`]; an unknown lease fails with `NOT_FOUND`.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let request = LeaseRevokeRequest { id };
        self.lease.clone().lease_revoke(self.request(request)).await.map_err(rpc("revoke"))?;
        Ok(())
    }

    /// The remaining time-to-live of a lease in seconds, or `None` when it no longer exists.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`].
    pub async fn time_to_live(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let request = LeaseTimeToLiveRequest { id, keys: false };
        let response = self
            .lease
            .clone()
            .lease_time_to_live(self.request(request))
            .await
            .map_err(rpc("time-to-live"))?;
        let ttl = response.into_inner().ttl;
        Ok((ttl >= 0).then_some(ttl))
    }

    /// Opens a keep-alive stream for lease `id`; each [`KeepAliveStream::keep_alive`] renews it.
    ///
    /// # Errors
    /// [`EtcdError::Rpc`] when the stream cannot be opened.
    pub async fn keep_alive(&self, id: i64) -> Result<KeepAliveStream, EtcdError> {
        KeepAliveStream::open(self.lease.clone(), id, self.request_timeout).await
    }

    /// Creates a watch and waits until etcd confirms it.
    ///
    /// A watch whose start revision is compacted is confirmed and then cancelled: etcd says so
    /// in the message after the confirmation, so [`Watcher::next`] reports
    /// [`EtcdError::Compacted`] (a server that answers in one message makes this call report it).
    ///
    /// # Errors
    /// [`EtcdError::Compacted`] as above; [`EtcdError::Rpc`], [`EtcdError::Timeout`] or
    /// [`EtcdError::WatchCanceled`] when the watch cannot be created.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watcher, EtcdError> {
        Watcher::open(self.watch.clone(), options, self.request_timeout).await
    }
}

/// Maps a failed RPC's status to [`EtcdError::Rpc`].
pub(super) fn rpc(op: &'static str) -> impl Fn(tonic::Status) -> EtcdError {
    move |status| EtcdError::Rpc { op, status }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the client's channel resolved its endpoint list through the default
    /// registry, which holds the `etcd` resolver, itself built on etcd clients: the etcd
    /// client depended on the resolver that depends on it.
    #[test]
    fn the_client_resolves_its_endpoints_with_pass_alone_and_never_through_etcd() {
        let registry = endpoint_resolvers();
        assert!(
            !registry.has_scheme("etcd"),
            "an etcd client must never resolve its own endpoints through the etcd scheme"
        );
        assert_eq!(
            registry.schemes().collect::<Vec<_>>(),
            ["pass"],
            "an etcd client needs only the pass resolver for its endpoint list"
        );
    }
}
