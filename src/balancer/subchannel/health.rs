//! Client-side health checking (gRFC A17): the health-filtered state of a READY connection.
//!
//! When a policy asked for it ([`SubchannelOptions::health_check`](super::SubchannelOptions))
//! and the service config has a `healthCheckConfig` at the moment the connection becomes READY,
//! the subchannel task opens `grpc.health.v1.Health/Watch` for the configured service on that
//! connection and reports to the policy, instead of the connection's READY:
//!
//! - CONNECTING while a Watch stream is being opened (the connection is up, health unknown);
//! - READY while the last status received is SERVING;
//! - TRANSIENT_FAILURE for NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN, and when the stream fails;
//!   the connection stays open, and RPCs already on it finish;
//! - a failed or ended stream is opened again after the subchannel's backoff (reset whenever a
//!   status arrives, so a stream that delivered something is retried at once), as grpc-go's
//!   `health/client.go` does;
//! - `UNIMPLEMENTED` disables checking for this connection: logged, reported READY, and no
//!   stream is opened again until the next connection.
//!
//! The stream is the generated `Health` client over the connection's own HTTP/2 sender, not a
//! channel: it must go to this connection and no other.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::client::conn::http2::SendRequest;
use tokio::sync::watch;
use tonic::{Code, Status};

use super::ConnectionError;
use crate::backoff::Backoff;
use crate::balancer::ConnectivityState;
use crate::health_pb::health_check_response::ServingStatus;
use crate::health_pb::health_client::HealthClient;
use crate::health_pb::{HealthCheckRequest, HealthCheckResponse};
use crate::service_config::ServiceConfig;

/// Where a subchannel that asked for health checks learns whether they are configured: the
/// channel's current service config, read each time a connection becomes READY (as grpc-go
/// reads it when its transport is up).
pub(crate) type ConfigWatch = watch::Receiver<Arc<ServiceConfig>>;

/// What a subchannel that asked for health checks is given by its channel: the service config
/// to read, and the `:scheme` and `:authority` the channel's RPCs carry, which its `Watch`
/// carries too (grpc-go's health client runs on the channel's transport, with its authority).
#[derive(Debug, Clone)]
pub(crate) struct HealthSource {
    pub(crate) config: ConfigWatch,
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: http::uri::Authority,
}

/// A state change the checker wants reported to the policy.
pub(crate) type Report = (ConnectivityState, Option<ConnectionError>);

/// What a failed Watch stream means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEnd {
    /// Report TRANSIENT_FAILURE with this error, then open a new stream after the backoff.
    Retry(ConnectionError),
    /// The server does not implement Watch: report READY and stop checking this connection.
    Disable,
}

/// The state a status received from the Watch stream maps to (gRFC A17: only SERVING is
/// healthy).
pub(crate) fn on_status(addr: &str, service: &str, status: i32) -> Report {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => (ConnectivityState::Ready, None),
        other => {
            let status =
                other.map_or_else(|_| format!("status {status}"), |s| s.as_str_name().to_owned());
            let error = ConnectionError::Unhealthy {
                addr: addr.to_owned(),
                service: service.to_owned(),
                status,
            };
            (ConnectivityState::TransientFailure, Some(error))
        }
    }
}

/// The verdict on a Watch stream that failed with `status` (or ended, which is a failure too:
/// Watch never ends on its own).
pub(crate) fn on_stream_error(addr: &str, status: &Status) -> StreamEnd {
    if status.code() == Code::Unimplemented {
        return StreamEnd::Disable;
    }
    StreamEnd::Retry(ConnectionError::HealthStream {
        addr: addr.to_owned(),
        reason: format!("{:?}: {}", status.code(), status.message()),
    })
}

/// Watches one READY connection's health until the future is dropped; `report` is called with
/// each health-filtered state change (same-state repeats are not reported).
pub(crate) struct Checker {
    pub(crate) addr: String,
    /// The `:scheme` and `:authority` of the Watch request.
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: http::uri::Authority,
    pub(crate) service: String,
    pub(crate) sender: SendRequest<tonic::body::Body>,
    pub(crate) backoff: Backoff,
}

impl Checker {
    /// Runs the checker, sending reports to `reports`. Returns only when checking is disabled
    /// (after reporting READY) or `reports` is closed; otherwise it runs until dropped.
    pub(crate) async fn run(mut self, reports: tokio::sync::mpsc::Sender<Report>) {
        // The policy has seen CONNECTING from the connect attempt.
        let mut last = ConnectivityState::Connecting;
        let mut report = async |state: ConnectivityState, error: Option<ConnectionError>| {
            if state == last {
                return true;
            }
            last = state;
            reports.send((state, error)).await.is_ok()
        };
        let mut failed_without_status = false;
        loop {
            if failed_without_status {
                let delay = self.backoff.next_delay();
                tokio::time::sleep(delay).await;
            }
            if !report(ConnectivityState::Connecting, None).await {
                return;
            }
            failed_without_status = true;
            let status = match self.watch().await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(reply)) => {
                            failed_without_status = false;
                            self.backoff.reset();
                            let (state, error) = on_status(&self.addr, &self.service, reply.status);
                            if !report(state, error).await {
                                return;
                            }
                        }
                        Ok(None) => break Status::unavailable("health: Watch stream ended"),
                        Err(status) => break status,
                    }
                },
                Err(status) => status,
            };
            match on_stream_error(&self.addr, &status) {
                StreamEnd::Disable => {
                    tracing::warn!(
                        addr = %self.addr,
                        service = %self.service,
                        "health: server does not implement Watch; health checking disabled for this connection"
                    );
                    let _ = report(ConnectivityState::Ready, None).await;
                    return;
                }
                StreamEnd::Retry(error) => {
                    tracing::debug!(addr = %self.addr, %error, "health: Watch stream failed");
                    if !report(ConnectivityState::TransientFailure, Some(error)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Opens the Watch stream on this connection.
    async fn watch(&self) -> Result<tonic::Streaming<HealthCheckResponse>, Status> {
        let origin = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| {
                Status::internal(format!("health: bad origin {:?}: {e}", self.authority))
            })?;
        let mut client = HealthClient::with_origin(Connection(self.sender.clone()), origin);
        let request = HealthCheckRequest { service: self.service.clone() };
        Ok(client.watch(request).await?.into_inner())
    }
}

/// One HTTP/2 connection's sender as a tower service, so the generated client can use it.
#[derive(Debug, Clone)]
struct Connection(SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectivityState::{Ready, TransientFailure};

    fn state_of((state, _): Report) -> ConnectivityState {
        state
    }

    #[test]
    fn only_serving_is_ready_and_every_other_status_is_transient_failure() {
        let cases = [
            (ServingStatus::Serving, Ready),
            (ServingStatus::NotServing, TransientFailure),
            (ServingStatus::ServiceUnknown, TransientFailure),
            (ServingStatus::Unknown, TransientFailure),
        ];
        for (status, want) in cases {
            let got = state_of(on_status("a:1", "svc", status as i32));
            assert_eq!(got, want, "gRFC A17: {status:?} must be reported as {want}");
        }
        assert_eq!(
            state_of(on_status("a:1", "svc", 99)),
            TransientFailure,
            "a status number the client does not know is not SERVING"
        );
    }

    #[test]
    fn an_unhealthy_status_names_the_address_service_and_status() {
        let (_, Some(error)) = on_status("a:1", "svc", 2) else {
            panic!("NOT_SERVING must carry an error");
        };
        let message = error.to_string();
        assert!(
            message.contains("a:1")
                && message.contains("\"svc\"")
                && message.contains("NOT_SERVING"),
            "the reason must say which address, service and status: {message}"
        );
    }

    #[test]
    fn unimplemented_disables_checking_and_other_stream_errors_retry() {
        assert_eq!(
            on_stream_error("a:1", &Status::unimplemented("no Watch")),
            StreamEnd::Disable,
            "gRFC A17: UNIMPLEMENTED disables health checking"
        );
        for code in [Code::Unavailable, Code::Internal, Code::Cancelled, Code::NotFound] {
            let verdict = on_stream_error("a:1", &Status::new(code, "x"));
            assert!(
                matches!(verdict, StreamEnd::Retry(_)),
                "a stream failing with {code:?} must be retried, got {verdict:?}"
            );
        }
    }
}
