//! Answers for every method the `Echo` service does not define, so clients written against any
//! proto can be audited (their RPCs are recorded like `Echo`'s):
//!
//! - `grpc.health.v1.Health/Check` answers `SERVING`;
//! - any other method answers one empty message, which decodes as the default value of any
//!   protobuf response type, and status OK.
//!
//! tonic routes only the services it generated; this is the router's fallback for the rest.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use prost::Message;

use super::{ConnectionInfo, ServerRecorder};

/// The method path of the standard health check.
pub const HEALTH_CHECK_METHOD: &str = "/grpc.health.v1.Health/Check";

/// The largest request body the fallback reads; a larger one gets `RESOURCE_EXHAUSTED`.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// `grpc.health.v1.HealthCheckResponse`, declared here rather than generated: one field.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    /// `ServingStatus`: 1 is `SERVING`.
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

/// The fallback service: records the RPC against its connection and answers as described in
/// the module docs.
#[derive(Debug, Clone)]
pub(super) struct Fallback {
    recorder: ServerRecorder,
}

impl Fallback {
    pub(super) fn new(recorder: ServerRecorder) -> Self {
        Self { recorder }
    }
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tonic::Status>;

impl<B> tower::Service<Request<B>> for Fallback
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let recorder = self.recorder.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let Some(connection) = request.extensions().get::<ConnectionInfo>().copied() else {
                let status = tonic::Status::internal("request carries no connection info");
                return Ok(status_response(&status));
            };
            recorder.record_rpc(connection.id, &path);
            // Read the whole request so the client's stream ends cleanly.
            if let Err(e) = Limited::new(request.into_body(), MAX_REQUEST_BYTES).collect().await {
                let status = tonic::Status::resource_exhausted(format!("request body: {e}"));
                return Ok(status_response(&status));
            }
            let message = if path == HEALTH_CHECK_METHOD {
                HealthCheckResponse { status: SERVING }.encode_to_vec()
            } else {
                Vec::new()
            };
            Ok(message_response(&message))
        })
    }
}

/// A gRPC response carrying one message and status OK in the trailers.
fn message_response(message: &[u8]) -> Response<BoxBody> {
    // The gRPC length-prefixed framing: a zero "compressed" flag, the length, the message.
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [Ok(Frame::data(frame.freeze())), Ok(Frame::trailers(trailers))];
    let body = StreamBody::new(tokio_stream::iter(frames));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// A trailers-only gRPC error response.
fn status_response(status: &tonic::Status) -> Response<BoxBody> {
    let (parts, ()) = status.clone().into_http::<()>().into_parts();
    let body = http_body_util::Empty::new().map_err(|never: Infallible| match never {});
    Response::from_parts(parts, BodyExt::boxed_unsync(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_response_encodes_serving() {
        let bytes = HealthCheckResponse { status: SERVING }.encode_to_vec();
        assert_eq!(bytes, [0x08, 0x01], "field 1 (status), varint SERVING = 1");
    }

    #[tokio::test]
    async fn an_empty_message_is_framed_with_a_zero_length_and_status_ok() {
        let response = message_response(&[]);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(collected.to_bytes().as_ref(), [0, 0, 0, 0, 0]);
    }
}
