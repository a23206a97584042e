//! One RPC's way through the channel: deadline, pick (or queue), send, retry.
//!
//! - The deadline is the earlier of the request's `grpc-timeout` and the method config's
//!   `timeout`; the remaining time is sent to the server on every attempt.
//! - Picking waits for a new picker while the current one queues, or fails when it fails and the
//!   RPC is not wait-for-ready.
//! - Transparent retry (gRFC A6): an attempt that never left the client — its subchannel's
//!   connection closed before the request was written — is sent again on a fresh pick without
//!   counting as an attempt.
//! - Configured retries (gRFC A6): a response whose `grpc-status` arrives in the headers
//!   (trailers-only) with a retryable code, or a transport failure mapped to `UNAVAILABLE`, is
//!   retried after `random(0, min(initialBackoff × multiplier^(n-1), maxBackoff))`, up to
//!   `maxAttempts`, honouring `grpc-retry-pushback-ms`, unless the request body outgrew the retry
//!   buffer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use rand::Rng;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::replay::Replay;
use super::{ServedBy, Shared, WaitForReady};
use crate::balancer::subchannel::lock;
use crate::balancer::{PickInfo, PickResult, Subchannel, SubchannelId};
use crate::service_config::{MethodConfig, RetryPolicy};

pub(super) async fn run(
    shared: Arc<Shared>,
    request: Request<tonic::body::Body>,
) -> Result<Response<tonic::body::Body>, Status> {
    let path = request.uri().path().to_owned();
    let config = shared.config.borrow().clone();
    let (service, method) = split_path(&path);
    let method_config = config.method_config(service, method).cloned().unwrap_or_default();
    let deadline = deadline(&request, &method_config);
    let wait_for_ready = request
        .extensions()
        .get::<WaitForReady>()
        .map(|w| w.0)
        .or(method_config.wait_for_ready)
        .unwrap_or(false);
    let call = Call {
        shared: &shared,
        path: &path,
        wait_for_ready,
        retry: method_config.retry_policy.as_ref(),
    };
    let attempts = call.attempts(request, deadline);
    match deadline {
        None => attempts.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, attempts).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!("deadline exceeded for {path}"))),
        },
    }
}

struct Call<'a> {
    shared: &'a Shared,
    path: &'a str,
    wait_for_ready: bool,
    retry: Option<&'a RetryPolicy>,
}

/// How one attempt ended.
enum Attempt {
    /// A response to hand back or retry.
    Response(Response<hyper::body::Incoming>),
    /// The request never left the client: retry transparently.
    NotSent,
    /// The transport failed after the request may have been sent.
    Failed(Status),
}

impl Call<'_> {
    async fn attempts(
        &self,
        request: Request<tonic::body::Body>,
        deadline: Option<Instant>,
    ) -> Result<Response<tonic::body::Body>, Status> {
        let (parts, body) = request.into_parts();
        let replay = Replay::new(body, self.shared.retry_buffer);
        let mut attempt = 1;
        let mut skip = Vec::new();
        loop {
            let (sc, sender) = self.pick(&mut skip).await?;
            let request = attempt_request(&parts, &sc, replay.attempt(), deadline);
            let status = match send(sender, request).await {
                Attempt::NotSent => {
                    skip.push(sc.id());
                    continue;
                }
                Attempt::Response(response) => match trailers_only_status(&response) {
                    Some(status) if self.retryable(&status, attempt, &replay) => {
                        self.pause(attempt, &response).await?;
                        attempt += 1;
                        continue;
                    }
                    _ => {
                        let mut response = response.map(response_body);
                        let served =
                            ServedBy { subchannel: sc.id(), address: sc.address().clone() };
                        response.extensions_mut().insert(served);
                        return Ok(response);
                    }
                },
                Attempt::Failed(status) => status,
            };
            if !self.retryable(&status, attempt, &replay) {
                return Err(status);
            }
            self.backoff(attempt).await;
            attempt += 1;
        }
    }

    /// Picks a READY subchannel, waiting for new pickers while the current one queues (or
    /// fails, for wait-for-ready RPCs). `skip` holds subchannels whose connection turned out to
    /// be gone under the current picker; it is cleared when a new picker arrives.
    async fn pick(
        &self,
        skip: &mut Vec<SubchannelId>,
    ) -> Result<(Subchannel, SendRequest<tonic::body::Body>), Status> {
        loop {
            let (version, update) = self.shared.picker.current();
            loop {
                match update.picker.pick(&PickInfo { method: self.path }) {
                    PickResult::Pick(sc) if !skip.contains(&sc.id()) => match sc.sender() {
                        Some(sender) => return Ok((sc, sender)),
                        None => skip.push(sc.id()),
                    },
                    PickResult::Fail(reason) if !self.wait_for_ready => {
                        return Err(Status::unavailable(reason.to_string()));
                    }
                    _ => break,
                }
            }
            if !self.shared.picker.changed(version).await {
                return Err(Status::unavailable("channel: closed"));
            }
            skip.clear();
        }
    }

    fn retryable(&self, status: &Status, attempt: u32, replay: &Replay) -> bool {
        self.retry.is_some_and(|retry| {
            attempt < retry.max_attempts
                && retry.retryable_status_codes.contains(&status.code())
                && !replay.committed()
        })
    }

    /// Waits before attempt `attempt + 1`: the server's pushback if it sent one, else backoff.
    /// A negative or malformed pushback means "do not retry" (gRFC A6).
    async fn pause(
        &self,
        attempt: u32,
        response: &Response<hyper::body::Incoming>,
    ) -> Result<(), Status> {
        match response.headers().get("grpc-retry-pushback-ms") {
            None => self.backoff(attempt).await,
            Some(value) => match value.to_str().ok().and_then(|v| u64::from_str(v).ok()) {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => {
                    let status = trailers_only_status(response)
                        .unwrap_or_else(|| Status::unavailable("server asked not to retry"));
                    return Err(status);
                }
            },
        }
        Ok(())
    }

    async fn backoff(&self, attempt: u32) {
        let Some(retry) = self.retry else { return };
        let jitter: f64 = lock(&self.shared.rng).random();
        tokio::time::sleep(retry.backoff(attempt, jitter)).await;
    }
}

/// Sends one attempt on a READY connection.
async fn send(
    mut sender: SendRequest<tonic::body::Body>,
    request: Request<tonic::body::Body>,
) -> Attempt {
    if sender.ready().await.is_err() {
        return Attempt::NotSent;
    }
    match sender.try_send_request(request).await {
        Ok(response) => Attempt::Response(response),
        Err(mut error) => match error.take_message() {
            Some(_) => Attempt::NotSent,
            None => Attempt::Failed(Status::unavailable(format!(
                "channel: transport failed: {}",
                error.into_error()
            ))),
        },
    }
}

/// The response body as tonic reads it. A transport failure while the body is being read (the
/// connection died mid-response) becomes `UNAVAILABLE`, as in grpc-go, rather than tonic's
/// `UNKNOWN` for an opaque body error.
fn response_body(body: hyper::body::Incoming) -> tonic::body::Body {
    tonic::body::Body::new(body.map_err(|e| {
        Status::unavailable(format!("channel: connection lost while reading the response: {e}"))
    }))
}

/// The request for one attempt: the caller's method, path and headers, addressed to the
/// subchannel, with the remaining deadline.
fn attempt_request(
    parts: &http::request::Parts,
    sc: &Subchannel,
    body: tonic::body::Body,
    deadline: Option<Instant>,
) -> Request<tonic::body::Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.headers_mut() = parts.headers.clone();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = sc.authority().cloned();
    uri.path_and_query =
        Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    *request.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| parts.uri.clone());
    if let Some(deadline) = deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(value) = HeaderValue::from_str(&encode_grpc_timeout(remaining)) {
            request.headers_mut().insert("grpc-timeout", value);
        }
    }
    request
}

/// The status of a trailers-only response (`grpc-status` in the headers), if not OK.
fn trailers_only_status<B>(response: &Response<B>) -> Option<Status> {
    let code = response.headers().get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    let code = Code::from_i32(code);
    if code == Code::Ok {
        return None;
    }
    let message = response
        .headers()
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some(Status::new(code, message))
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// The earlier of the request's `grpc-timeout` and the method's configured timeout.
fn deadline(request: &Request<tonic::body::Body>, config: &MethodConfig) -> Option<Instant> {
    let header = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let timeout = match (header, config.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    timeout.map(|t| Instant::now() + t)
}

/// Encodes a `grpc-timeout` header value per gRPC's HTTP/2 protocol doc: at most 8 digits, in the
/// finest unit (`n u m S M H`) in which the timeout fits, rounded up so the server never sees a
/// shorter deadline than the client's (grpc-go's `encodeTimeout`). Timeouts beyond 99,999,999
/// hours (about 11,000 years) are sent as that.
fn encode_grpc_timeout(timeout: Duration) -> String {
    const MAX_VALUE: u128 = 99_999_999;
    const UNITS: [(u128, char); 5] =
        [(1, 'n'), (1_000, 'u'), (1_000_000, 'm'), (1_000_000_000, 'S'), (60_000_000_000, 'M')];
    let nanos = timeout.as_nanos();
    for (unit_nanos, unit) in UNITS {
        let value = nanos.div_ceil(unit_nanos);
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    let hours = nanos.div_ceil(3_600_000_000_000).min(MAX_VALUE);
    format!("{hours}H")
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H M S m u n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "10", "1x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?} must be rejected");
        }
    }

    /// Regression: the header was always whole milliseconds, so deadlines over ~27.8 h became a
    /// 9-digit value that grpc-go servers reject.
    #[test]
    fn grpc_timeout_headers_use_the_finest_unit_that_fits_in_eight_digits_rounding_up() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_000), "100000u"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_micros(99_999_999), "99999999u"),
            (Duration::from_micros(100_000_000), "100000m"),
            (Duration::from_millis(99_999_999), "99999999m"),
            (Duration::from_millis(99_999_999) + Duration::from_nanos(1), "100000S"),
            (Duration::from_secs(28 * 3600), "100800S"),
            (Duration::from_secs(99_999_999), "99999999S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(99_999_999 * 60), "99999999M"),
            (Duration::from_secs(99_999_999 * 60 + 1), "1666667H"),
            (Duration::from_secs(99_999_999 * 3600), "99999999H"),
            (Duration::MAX, "99999999H"),
        ];
        for (timeout, expected) in cases {
            let encoded = encode_grpc_timeout(timeout);
            assert_eq!(encoded, expected, "{timeout:?} must encode as {expected}");
            assert!(encoded.len() <= 9, "grpc-timeout allows at most 8 digits, got {encoded}");
            let decoded = parse_grpc_timeout(&encoded).expect("an encoded timeout must parse");
            assert!(
                decoded >= timeout.min(Duration::from_secs(99_999_999 * 3600)),
                "encoding {timeout:?} must round up, not down (got {encoded})"
            );
        }
    }

    #[test]
    fn method_paths_split_into_service_and_method() {
        assert_eq!(split_path("/pkg.Echo/Echo"), ("pkg.Echo", "Echo"));
        assert_eq!(split_path("/odd"), ("odd", ""));
    }
}
