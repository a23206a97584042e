//! One RPC's way through the channel: deadline, pick (or queue), send, retry.
//!
//! - The deadline is the earlier of the request's `grpc-timeout` and the method config's
//!   `timeout`. It covers the whole RPC: picking, every attempt and backoff, and the response
//!   body up to its trailers. When it passes, the RPC ends with `DEADLINE_EXCEEDED` and the
//!   stream is reset (`RST_STREAM(CANCEL)`). The remaining time is sent to the server on every
//!   attempt as `grpc-timeout`, in the finest unit that fits its 8 digits.
//! - Picking waits for a new picker while the current one queues, or fails when it fails and the
//!   RPC is not wait-for-ready.
//! - Transparent retry (gRFC A6), not counted as an attempt: a request that never left the client
//!   (its connection closed before it was written) is sent again on a fresh pick, as often as
//!   needed; a stream the server refused (`REFUSED_STREAM`) or never processed (above a
//!   GOAWAY's last-stream-id) is sent again once.
//! - Configured retries (gRFC A6): a response whose `grpc-status` arrives in the headers
//!   (trailers-only) with a retryable code, or a transport failure mapped to `UNAVAILABLE`, is
//!   retried after `random(0, min(initialBackoff × multiplier^(n-1), maxBackoff))`, up to
//!   `maxAttempts`, honouring `grpc-retry-pushback-ms` and `retryThrottling`, unless the RPC
//!   committed. Attempts after the first carry `grpc-previous-rpc-attempts`.
//! - Commit (gRFC A6): when response headers arrive, when the request body outgrows the retry
//!   buffer, or as soon as no further attempt is possible, the request body is no longer kept.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame};
use hyper::client::conn::http2::SendRequest;
use rand::Rng;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};

use super::replay::Replay;
use super::throttle::Throttle;
use super::{ServedBy, Shared, WaitForReady};
use crate::balancer::{PickInfo, PickResult, Subchannel, SubchannelId};
use crate::mutant::{self, Mutant};
use crate::service_config::{MethodConfig, RetryPolicy};
use crate::sync::lock;

/// The header that tells the server how many attempts came before this one (gRFC A6).
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

pub(super) async fn run(
    shared: Arc<Shared>,
    request: Request<tonic::body::Body>,
) -> Result<Response<tonic::body::Body>, Status> {
    // A clone of the caller's path shares its bytes (tonic's generated clients give a static
    // one), so naming the method costs no allocation per RPC.
    let path =
        request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let config = shared.config.load_full();
    let (service, method) = split_path(path.path());
    let no_method_config = MethodConfig::default();
    let method_config = config.method_config(service, method).unwrap_or(&no_method_config);
    let deadline = deadline(&request, method_config);
    let wait_for_ready = request
        .extensions()
        .get::<WaitForReady>()
        .map(|w| w.0)
        .or(method_config.wait_for_ready)
        .unwrap_or(false);
    let (parts, body) = request.into_parts();
    let replay = Replay::new(body, shared.retry_buffer);
    let call = Call {
        shared: &shared,
        path: &path,
        wait_for_ready,
        retry: method_config.retry_policy.as_ref(),
        throttle: shared.throttles.bucket(config.retry_throttling()),
        deadline,
        replay: &replay,
    };
    let attempts = call.attempts(&parts);
    match deadline {
        None => attempts.await,
        Some(deadline) => match tokio::time::timeout_at(deadline, attempts).await {
            Ok(result) => result,
            Err(_) => {
                replay.abort();
                Err(deadline_exceeded(path.path()))
            }
        },
    }
}

fn deadline_exceeded(path: &str) -> Status {
    Status::deadline_exceeded(format!("deadline exceeded for {path}"))
}

struct Call<'a> {
    shared: &'a Shared,
    path: &'a PathAndQuery,
    wait_for_ready: bool,
    retry: Option<&'a RetryPolicy>,
    throttle: Option<Arc<Throttle>>,
    deadline: Option<Instant>,
    replay: &'a Replay,
}

/// Subchannels not to pick again for this RPC, and the picker under which they were found
/// unusable: the list holds only while that picker is current.
#[derive(Debug, Default)]
pub(super) struct Skip {
    version: Option<u64>,
    ids: Vec<SubchannelId>,
}

/// How one attempt ended.
enum Attempt {
    /// A response to hand back or retry.
    Response(Response<hyper::body::Incoming>),
    /// The request never left the client: retry it transparently, as it is.
    NotSent(Request<tonic::body::Body>),
    /// The server refused the stream or never processed it: one transparent retry is allowed.
    Unprocessed {
        /// What the RPC fails with if it cannot be retried.
        status: Status,
        /// `REFUSED_STREAM` (the connection is fine) rather than GOAWAY (it is going away).
        refused: bool,
    },
    /// The transport failed after the request may have been processed.
    Failed(Status),
}

impl Call<'_> {
    async fn attempts(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Response<tonic::body::Body>, Status> {
        let mut attempt = 1;
        let mut transparent_retry_left = true;
        let mut skip = Skip::default();
        let mut unsent = None;
        loop {
            let (sc, sender) = self.pick(&mut skip).await?;
            let request = unsent.take().unwrap_or_else(|| self.request(parts, attempt));
            if !transparent_retry_left && !self.may_retry(attempt) {
                // Nothing could replay the request after this attempt: commit now rather than
                // at the response headers.
                self.replay.commit();
            }
            let status = match send(sender, request).await {
                Attempt::NotSent(request) => {
                    skip.ids.push(sc.id());
                    unsent = Some(request);
                    continue;
                }
                Attempt::Unprocessed { status, refused } => {
                    if transparent_retry_left && self.replay.replayable() {
                        transparent_retry_left = false;
                        if !refused {
                            skip.ids.push(sc.id());
                        }
                        continue;
                    }
                    status
                }
                Attempt::Response(response) => {
                    let Some(status) = trailers_only_status(&response) else {
                        return Ok(self.finish(response, &sc));
                    };
                    if !self.should_retry(&status, attempt, Some(&response)).await {
                        return Ok(self.finish(response, &sc));
                    }
                    attempt += 1;
                    continue;
                }
                Attempt::Failed(status) => {
                    // Mutant DropOneRpcPerCrash: the first RPC failed by a lost connection
                    // is not retried.
                    if mutant::is(self.shared.mutant, Mutant::DropOneRpcPerCrash)
                        && self.drop_first_on(&sc)
                    {
                        return Err(status);
                    }
                    status
                }
            };
            if !self.should_retry(&status, attempt, None).await {
                return Err(status);
            }
            attempt += 1;
        }
    }

    /// The request for attempt number `attempt` (1 for the first; transparent retries reuse the
    /// number): the caller's method, path and headers, addressed to the channel's authority, with
    /// the remaining deadline and, after the first, the number of previous attempts.
    fn request(&self, parts: &http::request::Parts, attempt: u32) -> Request<tonic::body::Body> {
        let mut request =
            attempt_request(parts, &self.shared.origin, self.replay.attempt(), self.deadline);
        request.headers_mut().remove(PREVIOUS_ATTEMPTS);
        if attempt > 1 {
            request.headers_mut().insert(PREVIOUS_ATTEMPTS, HeaderValue::from(attempt - 1));
        }
        request
    }

    /// The response handed to the caller: the RPC is committed, and its body is bounded by the
    /// deadline and counted for retry throttling.
    fn finish(
        &self,
        response: Response<hyper::body::Incoming>,
        sc: &Subchannel,
    ) -> Response<tonic::body::Body> {
        self.replay.commit();
        if let Some(throttle) = &self.throttle
            && status_header(response.headers()) == Some(Code::Ok)
        {
            throttle.success();
        }
        let mut response = response.map(|body| {
            tonic::body::Body::new(ResponseBody {
                inner: Some(body),
                // Mutant DeadlineIgnoredAfterHeaders: no deadline on the body.
                deadline: self
                    .deadline
                    .filter(|_| {
                        !mutant::is(self.shared.mutant, Mutant::DeadlineIgnoredAfterHeaders)
                    })
                    .map(|d| Box::pin(tokio::time::sleep_until(d))),
                path: self.path.clone(),
                throttle: self.throttle.clone(),
                replay: self.replay.clone(),
            })
        });
        let served = ServedBy { subchannel: sc.id(), address: sc.shared_address() };
        response.extensions_mut().insert(served);
        response
    }

    /// Mutant DropOneRpcPerCrash: whether this is the first RPC to fail on `sc` at this
    /// instant. A lost connection fails every stream on it at once, so this is one per lost
    /// connection.
    fn drop_first_on(&self, sc: &Subchannel) -> bool {
        let now = Instant::now();
        lock(&self.shared.dropped).insert(sc.id(), now) != Some(now)
    }

    /// Picks a READY subchannel, waiting for new pickers while the current one queues (or
    /// fails, for wait-for-ready RPCs). `skip` holds subchannels whose connection turned out to
    /// be gone under the picker it names; it is cleared whenever that picker is no longer the
    /// current one.
    async fn pick(
        &self,
        skip: &mut Skip,
    ) -> Result<(Subchannel, SendRequest<tonic::body::Body>), Status> {
        loop {
            match pick_now(self.shared, self.path.path(), skip, self.wait_for_ready) {
                Picked::Ready(sc, sender) => return Ok((sc, sender)),
                Picked::Failed(status) => return Err(status),
                Picked::Wait(version) => {
                    if !self.shared.picker.changed(version).await {
                        return Err(Status::unavailable("channel: closed"));
                    }
                }
            }
        }
    }

    /// Whether a retry policy could still allow attempt `attempt + 1`.
    fn may_retry(&self, attempt: u32) -> bool {
        self.retry.is_some_and(|retry| attempt < retry.max_attempts) && self.replay.replayable()
    }

    /// Decides whether attempt `attempt`, which failed with `status`, is retried (gRFC A6, in
    /// grpc-go's order), and if so waits: the server's pushback if it sent one, else backoff.
    async fn should_retry(
        &self,
        status: &Status,
        attempt: u32,
        response: Option<&Response<hyper::body::Incoming>>,
    ) -> bool {
        let pushback = response.and_then(|r| r.headers().get("grpc-retry-pushback-ms"));
        let pushback = match pushback {
            None => None,
            Some(value) => match value.to_str().ok().and_then(|v| u64::from_str(v).ok()) {
                Some(ms) => Some(Duration::from_millis(ms)),
                None => {
                    // A negative or malformed pushback means "do not retry"; it counts as a
                    // failure for throttling.
                    if let Some(throttle) = &self.throttle {
                        throttle.failure();
                    }
                    return false;
                }
            },
        };
        let Some(retry) = self.retry else { return false };
        if !retry.is_retryable(status.code()) {
            return false;
        }
        // Only failures with a retryable code take a token.
        if self.throttle.as_ref().is_some_and(|throttle| !throttle.failure()) {
            return false;
        }
        if !self.may_retry(attempt) {
            return false;
        }
        let delay = match pushback {
            Some(delay) => delay,
            None => {
                let jitter: f64 = lock(&self.shared.rng).random();
                retry.backoff(attempt, jitter)
            }
        };
        tokio::time::sleep(delay).await;
        true
    }
}

/// What one look at the current picker gave.
pub(super) enum Picked {
    /// A READY subchannel and the sender of its connection.
    Ready(Subchannel, SendRequest<tonic::body::Body>),
    /// The RPC fails.
    Failed(Status),
    /// Nothing usable under the picker of this version: wait for a newer one.
    Wait(u64),
}

/// Asks the current picker for a READY subchannel for an RPC to `path`, without waiting.
/// Subchannels in `skip` (or found without a connection, which join it) are passed over while
/// the picker it names is current; a newer picker clears it.
pub(super) fn pick_now(
    shared: &Shared,
    path: &str,
    skip: &mut Skip,
    wait_for_ready: bool,
) -> Picked {
    let current = shared.picker.current();
    let version = current.version;
    if skip.version != Some(version) {
        // A newer picker may list a skipped subchannel again, on a new connection (after a
        // GOAWAY it is back within a round trip).
        skip.ids.clear();
        skip.version = Some(version);
    }
    loop {
        match current.update.picker.pick(&PickInfo { method: path }) {
            PickResult::Pick(sc) if !skip.ids.contains(&sc.id()) => match sc.sender() {
                Some(sender) => return Picked::Ready(sc, sender),
                None => skip.ids.push(sc.id()),
            },
            PickResult::Fail(reason) if !wait_for_ready => {
                return Picked::Failed(Status::unavailable(reason.to_string()));
            }
            _ => return Picked::Wait(version),
        }
    }
}

/// Sends one attempt on a READY connection.
async fn send(
    mut sender: SendRequest<tonic::body::Body>,
    request: Request<tonic::body::Body>,
) -> Attempt {
    if sender.ready().await.is_err() {
        return Attempt::NotSent(request);
    }
    match sender.try_send_request(request).await {
        Ok(response) => Attempt::Response(response),
        Err(mut error) => match error.take_message() {
            Some(request) => Attempt::NotSent(request),
            None => {
                let error = error.into_error();
                let status = Status::unavailable(format!(
                    "channel: transport failed: {}",
                    with_sources(&error)
                ));
                match unprocessed(&error) {
                    Some(refused) => Attempt::Unprocessed { status, refused },
                    None => Attempt::Failed(status),
                }
            }
        },
    }
}

/// `error` and each of its sources, as `error: source: source`: hyper's own message for a
/// failed stream ("connection error") says nothing without the cause below it.
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a failed attempt's stream was never processed by the server, per the HTTP/2 error in
/// `error`'s source chain: `Some(true)` for `REFUSED_STREAM`, `Some(false)` for a stream above a
/// GOAWAY's last-stream-id (h2 fails exactly those, and streams opened after the GOAWAY, with a
/// remote GOAWAY error; streams the server did process fail with other errors).
fn unprocessed(error: &(dyn std::error::Error + 'static)) -> Option<bool> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(true);
            }
            return (h2.is_go_away() && h2.is_remote()).then_some(false);
        }
        source = error.source();
    }
    None
}

/// The response body as the caller reads it.
///
/// - The deadline covers it: when it passes, the body ends with `DEADLINE_EXCEEDED` and the
///   HTTP/2 stream is dropped, which resets it (`RST_STREAM(CANCEL)`), and the request body ends.
/// - A transport failure while it is read (the connection died mid-response) becomes
///   `UNAVAILABLE`, as in grpc-go, rather than tonic's `UNKNOWN` for an opaque body error.
/// - Trailers with `grpc-status: 0` count as a success for retry throttling.
struct ResponseBody {
    inner: Option<hyper::body::Incoming>,
    deadline: Option<Pin<Box<Sleep>>>,
    path: PathAndQuery,
    throttle: Option<Arc<Throttle>>,
    replay: Replay,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(inner) = &mut this.inner else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let ok = frame.trailers_ref().is_some_and(|t| status_header(t) == Some(Code::Ok));
                if let (true, Some(throttle)) = (ok, &this.throttle) {
                    throttle.success();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner = None;
                let message =
                    format!("channel: connection lost while reading the response: {error}");
                return Poll::Ready(Some(Err(Status::unavailable(message))));
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.deadline = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            // Dropping the stream resets it; aborting ends a request still streaming.
            this.inner = None;
            this.deadline = None;
            this.replay.abort();
            return Poll::Ready(Some(Err(deadline_exceeded(this.path.path()))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}

/// The request for one attempt: the caller's method, path and headers, addressed to
/// `origin`'s scheme and authority, with the remaining deadline.
fn attempt_request(
    parts: &http::request::Parts,
    origin: &super::Origin,
    body: tonic::body::Body,
    deadline: Option<Instant>,
) -> Request<tonic::body::Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.headers_mut() = parts.headers.clone();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(origin.scheme.clone());
    uri.authority = Some(origin.authority.clone());
    uri.path_and_query =
        Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    *request.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| parts.uri.clone());
    if let Some(deadline) = deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // The header takes the encoded string's buffer as it is: one allocation, not two.
        let encoded = Bytes::from(encode_grpc_timeout(remaining));
        if let Ok(value) = HeaderValue::from_maybe_shared(encoded) {
            request.headers_mut().insert("grpc-timeout", value);
        }
    }
    request
}

/// The `grpc-status` in `headers` (or trailers), if any.
fn status_header(headers: &http::HeaderMap) -> Option<Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(code))
}

/// The status of a trailers-only response (`grpc-status` in the headers), if not OK.
fn trailers_only_status<B>(response: &Response<B>) -> Option<Status> {
    let code = status_header(response.headers())?;
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

    /// Regression: a stream killed by a reset connection failed with hyper's bare "connection
    /// error", which hid the cause ("Connection reset") below it.
    #[test]
    fn a_transport_failure_names_every_cause_below_it_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("connection error")]
        struct Outer(#[source] std::io::Error);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "Connection reset");
        assert_eq!(with_sources(&Outer(reset)), "connection error: Connection reset");
        #[derive(Debug, thiserror::Error)]
        #[error("read failed: Connection reset")]
        struct Repeats(#[source] std::io::Error);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "Connection reset");
        assert_eq!(
            with_sources(&Repeats(reset)),
            "read failed: Connection reset",
            "a cause the message already ends with is not repeated"
        );
    }

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
