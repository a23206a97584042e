//! The standard `grpc.health.v1.Health` service of instrumented servers, with a status per
//! service name that can change while the server runs (gRFC A17's server side).
//!
//! - [`HealthStatus`] is the cloneable table of statuses: the `SetHealth` admin RPC, the CLI's
//!   `anchorage health`, and the simulation's `unhealthy`/`healthy` faults all change it, and a
//!   server restarted with the same handle keeps the statuses.
//! - `Check` answers the current status, or `NOT_FOUND` for an unknown service.
//! - `Watch` sends the current status at once and then every change, for as long as the client
//!   listens; an unknown service is `SERVICE_UNKNOWN`, as `health.proto` says.
//! - A server built with [`HealthStatus::watch_unimplemented`] answers `Watch` with
//!   `UNIMPLEMENTED` (as servers that predate `Watch` do), which makes clients disable health
//!   checking for their connections to it; its `Check` keeps working.
//!
//! Health RPCs are not recorded against connections: like `Stats`, they are the client's
//! machinery, not its workload, and counting them would skew per-server RPC accounting.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::health_pb::health_check_response::ServingStatus;
use crate::health_pb::health_server::{Health, HealthServer};
use crate::health_pb::{HealthCheckRequest, HealthCheckResponse};
use crate::pb::admin_server::{Admin, AdminServer};
use crate::pb::echo_server::SERVICE_NAME as ECHO_SERVICE;
use crate::pb::{SetHealthRequest, SetHealthResponse};

/// The method path of the streaming health watch (gRFC A17).
pub const HEALTH_WATCH_METHOD: &str = "/grpc.health.v1.Health/Watch";

/// The most services a server's health table holds: `SetHealth` for a new name beyond it is
/// refused, so a client cannot grow the table without limit.
pub const MAX_HEALTH_SERVICES: usize = 1024;

/// The longest service name `SetHealth` takes, in bytes.
pub const MAX_HEALTH_SERVICE_NAME: usize = 1024;

/// A server's health statuses by service name, changeable at run time. Clones share the table.
///
/// A new table knows two services, both with the initial status: the whole server (the empty
/// name) and the `Echo` service (`anchorage.echo.v1.Echo`).
///
/// ```
/// use anchorage::health_pb::health_check_response::ServingStatus;
/// use anchorage::server::HealthStatus;
///
/// let health = HealthStatus::new(ServingStatus::Serving);
/// let previous = health.set("", ServingStatus::NotServing);
/// assert_eq!(previous, ServingStatus::Serving);
/// assert_eq!(health.get(""), Some(ServingStatus::NotServing));
/// assert_eq!(health.get("other.Service"), None);
/// ```
#[derive(Debug, Clone)]
pub struct HealthStatus {
    table: Arc<Table>,
    watch_unimplemented: Arc<AtomicBool>,
}

/// The statuses and the wake-up of their watchers. `Notify` wakes its waiters in the order
/// they registered, so a simulated server answers its Watch streams in an order its seed
/// decides (`tokio::sync::watch` spreads waiters over shards chosen at random).
#[derive(Debug)]
struct Table {
    statuses: std::sync::Mutex<BTreeMap<String, ServingStatus>>,
    changed: Notify,
}

impl Table {
    /// Changes the statuses with `change`, which returns whether anything changed; watchers are
    /// woken if so.
    fn modify(&self, change: impl FnOnce(&mut BTreeMap<String, ServingStatus>) -> bool) {
        let changed = change(&mut crate::sync::lock(&self.statuses));
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn get(&self, service: &str) -> Option<ServingStatus> {
        crate::sync::lock(&self.statuses).get(service).copied()
    }
}

impl Default for HealthStatus {
    /// Everything SERVING.
    fn default() -> Self {
        Self::new(ServingStatus::Serving)
    }
}

impl HealthStatus {
    /// A table where the whole server and the `Echo` service start with `initial`.
    pub fn new(initial: ServingStatus) -> Self {
        let statuses =
            BTreeMap::from([(String::new(), initial), (ECHO_SERVICE.to_owned(), initial)]);
        Self {
            table: Arc::new(Table {
                statuses: std::sync::Mutex::new(statuses),
                changed: Notify::new(),
            }),
            watch_unimplemented: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Makes `Watch` answer `UNIMPLEMENTED` (or answer again, with `false`) for the streams
    /// opened from now on.
    ///
    /// Default: `false`.
    #[must_use]
    pub fn watch_unimplemented(self, unimplemented: bool) -> Self {
        self.watch_unimplemented.store(unimplemented, Ordering::SeqCst);
        self
    }

    /// Whether `Watch` answers `UNIMPLEMENTED`.
    pub fn is_watch_unimplemented(&self) -> bool {
        self.watch_unimplemented.load(Ordering::SeqCst)
    }

    /// Sets the status of `service` (adding it if new) and returns the one it had
    /// (`SERVICE_UNKNOWN` when it was new). Open `Watch` streams for it see the change at once.
    pub fn set(&self, service: &str, status: ServingStatus) -> ServingStatus {
        let mut previous = ServingStatus::ServiceUnknown;
        self.table.modify(|statuses| {
            let old = statuses.insert(service.to_owned(), status);
            previous = old.unwrap_or(ServingStatus::ServiceUnknown);
            old != Some(status)
        });
        previous
    }

    /// Sets the status of every service the table knows, in one change.
    pub fn set_all(&self, status: ServingStatus) {
        self.table.modify(|statuses| {
            let mut changed = false;
            for old in statuses.values_mut() {
                changed |= *old != status;
                *old = status;
            }
            changed
        });
    }

    /// The status of `service`, `None` when the server does not know it.
    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.table.get(service)
    }

    /// The service wrapped for a tonic server.
    pub(crate) fn into_server(self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService { health: self })
    }

    /// The `Admin` service that changes this table, wrapped for a tonic server.
    pub(crate) fn into_admin_server(self, server: String) -> AdminServer<AdminService> {
        AdminServer::new(AdminService { health: self, server })
    }
}

/// The `anchorage.echo.v1.Admin` handlers: `SetHealth` changes a [`HealthStatus`].
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    health: HealthStatus,
    /// The server's name, for the log.
    server: String,
}

#[tonic::async_trait]
impl Admin for AdminService {
    /// # Errors
    /// `InvalidArgument` when `status` is not a `grpc.health.v1` serving status number or the
    /// name is longer than [`MAX_HEALTH_SERVICE_NAME`]; `ResourceExhausted` for a new name when
    /// the table holds [`MAX_HEALTH_SERVICES`] already.
    async fn set_health(
        &self,
        request: Request<SetHealthRequest>,
    ) -> Result<Response<SetHealthResponse>, Status> {
        let SetHealthRequest { service, status } = request.into_inner();
        let Ok(status) = ServingStatus::try_from(status) else {
            return Err(Status::invalid_argument(format!(
                "set health: status {status} is not a grpc.health.v1 serving status"
            )));
        };
        if service.len() > MAX_HEALTH_SERVICE_NAME {
            return Err(Status::invalid_argument(format!(
                "set health: service name of {} bytes; at most {MAX_HEALTH_SERVICE_NAME}",
                service.len()
            )));
        }
        let full = {
            let statuses = crate::sync::lock(&self.health.table.statuses);
            !statuses.contains_key(&service) && statuses.len() >= MAX_HEALTH_SERVICES
        };
        if full {
            return Err(Status::resource_exhausted(format!(
                "set health: the server already knows {MAX_HEALTH_SERVICES} services; \
                 {service:?} is not one of them"
            )));
        }
        let previous = self.health.set(&service, status);
        tracing::info!(server = %self.server, service, status = status.as_str_name(), "health set");
        Ok(Response::new(SetHealthResponse { previous: previous.into() }))
    }
}

/// The `grpc.health.v1.Health` handlers over a [`HealthStatus`].
#[derive(Debug, Clone)]
pub(crate) struct HealthService {
    health: HealthStatus,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.health.get(&service) {
            Some(status) => Ok(Response::new(HealthCheckResponse { status: status.into() })),
            None => Err(Status::not_found(format!("health: unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.health.is_watch_unimplemented() {
            return Err(Status::unimplemented("health: this server does not implement Watch"));
        }
        let service = request.into_inner().service;
        let stream =
            ServiceWatch { table: self.health.table.clone(), service, last: None, next: None };
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The replies of one `Watch`: the service's status now, then each change, read in the
/// handler's own task. No task is spawned for it: a spawned task would be dropped with its
/// host in an order the simulation does not control (DESIGN §3), and it ends when the client
/// goes away.
struct ServiceWatch {
    table: Arc<Table>,
    service: String,
    /// The status last sent.
    last: Option<ServingStatus>,
    /// The wait for a status other than `last`.
    next: Option<Pin<Box<dyn Future<Output = ServingStatus> + Send>>>,
}

/// The first status of `service` in `table` that is not `last`: now, or after a change.
async fn next_status(
    table: Arc<Table>,
    service: String,
    last: Option<ServingStatus>,
) -> ServingStatus {
    loop {
        // Registered before reading, so a change between the read and the wait is not missed.
        let changed = table.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let status = table.get(&service).unwrap_or(ServingStatus::ServiceUnknown);
        if last != Some(status) {
            return status;
        }
        changed.await;
    }
}

impl Stream for ServiceWatch {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.next.get_or_insert_with(|| {
            Box::pin(next_status(this.table.clone(), this.service.clone(), this.last))
        });
        let status = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        this.last = Some(status);
        Poll::Ready(Some(Ok(HealthCheckResponse { status: status.into() })))
    }
}

/// A health status name that is not one of `grpc.health.v1`'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health status: {0:?} is not one of SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN")]
pub struct UnknownServingStatus(pub String);

/// Parses a status as a user writes it: `SERVING`, `NOT_SERVING`, `UNKNOWN`,
/// `SERVICE_UNKNOWN`, in any case.
///
/// # Errors
/// [`UnknownServingStatus`] naming the input.
pub fn parse_serving_status(text: &str) -> Result<ServingStatus, UnknownServingStatus> {
    ServingStatus::from_str_name(&text.to_ascii_uppercase())
        .ok_or_else(|| UnknownServingStatus(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// Regression: every `SetHealth` with a new name added it for good, so any client could
    /// grow the server's table without limit.
    #[tokio::test]
    async fn set_health_refuses_new_names_beyond_the_table_bound_and_overlong_names() {
        let health = HealthStatus::default();
        let admin = AdminService { health: health.clone(), server: "s".into() };
        let set = |service: String| {
            let admin = admin.clone();
            async move {
                let status = ServingStatus::NotServing.into();
                admin.set_health(Request::new(SetHealthRequest { service, status })).await
            }
        };
        let mut refused = 0;
        for i in 0..MAX_HEALTH_SERVICES + 10 {
            if let Err(status) = set(format!("svc{i}")).await {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
        let held = crate::sync::lock(&health.table.statuses).len();
        assert_eq!(held, MAX_HEALTH_SERVICES, "the table must stop at its bound");
        assert!(refused >= 10, "names beyond the bound must be refused");
        assert!(set("svc0".into()).await.is_ok(), "a known name can still be changed");
        let long = set("x".repeat(MAX_HEALTH_SERVICE_NAME + 1)).await.unwrap_err();
        assert_eq!(long.code(), tonic::Code::InvalidArgument, "{long:?}");
    }

    fn service(health: &HealthStatus) -> HealthService {
        HealthService { health: health.clone() }
    }

    async fn watch(health: &HealthStatus, name: &str) -> WatchStream {
        let request = Request::new(HealthCheckRequest { service: name.to_owned() });
        service(health).watch(request).await.expect("Watch must be implemented").into_inner()
    }

    async fn next(stream: &mut WatchStream) -> ServingStatus {
        let reply = stream.next().await.expect("a reply").expect("an OK reply");
        ServingStatus::try_from(reply.status).expect("a known status")
    }

    #[tokio::test]
    async fn watch_sends_the_current_status_then_every_change() {
        let health = HealthStatus::default();
        let mut stream = watch(&health, "").await;
        assert_eq!(next(&mut stream).await, ServingStatus::Serving, "the first reply is now");
        health.set("", ServingStatus::NotServing);
        assert_eq!(next(&mut stream).await, ServingStatus::NotServing, "a change is sent");
        health.set("", ServingStatus::Serving);
        assert_eq!(next(&mut stream).await, ServingStatus::Serving, "and the change back");
    }

    #[tokio::test]
    async fn watch_reports_an_unknown_service_as_service_unknown_until_it_is_set() {
        let health = HealthStatus::default();
        let mut stream = watch(&health, "other").await;
        assert_eq!(next(&mut stream).await, ServingStatus::ServiceUnknown);
        health.set("other", ServingStatus::Serving);
        assert_eq!(next(&mut stream).await, ServingStatus::Serving);
    }

    #[tokio::test]
    async fn check_answers_not_found_for_an_unknown_service() {
        let health = HealthStatus::default();
        let request = Request::new(HealthCheckRequest { service: "other".into() });
        let error = service(&health).check(request).await.expect_err("unknown service");
        assert_eq!(error.code(), tonic::Code::NotFound, "health.proto: NOT_FOUND for Check");
    }

    #[tokio::test]
    async fn a_server_without_watch_answers_unimplemented_and_still_checks() {
        let health = HealthStatus::default().watch_unimplemented(true);
        let request = Request::new(HealthCheckRequest::default());
        let error = service(&health).watch(request).await.err().expect("Watch must fail");
        assert_eq!(error.code(), tonic::Code::Unimplemented);
        let request = Request::new(HealthCheckRequest::default());
        let reply = service(&health).check(request).await.expect("Check still answers");
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    }

    #[test]
    fn serving_status_names_parse_in_any_case_and_others_are_errors() {
        assert_eq!(parse_serving_status("not_serving"), Ok(ServingStatus::NotServing));
        assert_eq!(parse_serving_status("SERVING"), Ok(ServingStatus::Serving));
        let error = parse_serving_status("up").expect_err("not a status").to_string();
        assert!(error.starts_with("health status: \"up\""), "{error}");
    }
}
