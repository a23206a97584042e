//! A request body that can be sent more than once, for retries (gRFC A6's retry buffer).
//!
//! Every frame pulled from the caller's body is recorded, so a retry replays what the previous
//! attempt already sent and then continues pulling from the source. Streaming request bodies keep
//! streaming: nothing is collected up front. Once more than the buffer limit has been pulled the
//! recording is dropped and the RPC is committed: no further attempt can be made. tonic and
//! tower offer no replayable streaming body, hence this small type.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::balancer::subchannel::lock;

/// The default per-RPC retry buffer: 256 KiB.
pub(crate) const DEFAULT_LIMIT: usize = 256 * 1024;

/// The shared source and recording; one per RPC.
#[derive(Debug, Clone)]
pub(crate) struct Replay(Arc<Mutex<Recording>>);

#[derive(Debug)]
struct Recording {
    source: tonic::body::Body,
    frames: Vec<Bytes>,
    pulled: usize,
    buffered: usize,
    limit: usize,
    overflowed: bool,
    finished: bool,
}

impl Replay {
    pub(crate) fn new(source: tonic::body::Body, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Recording {
            source,
            frames: Vec::new(),
            pulled: 0,
            buffered: 0,
            limit,
            overflowed: false,
            finished: false,
        })))
    }

    /// A body for the next attempt: replays what was pulled so far, then pulls the source.
    pub(crate) fn attempt(&self) -> tonic::body::Body {
        tonic::body::Body::new(ReplayBody { recording: self.0.clone(), position: 0 })
    }

    /// Whether the buffer overflowed, so the request can no longer be replayed.
    pub(crate) fn committed(&self) -> bool {
        lock(&self.0).overflowed
    }
}

struct ReplayBody {
    recording: Arc<Mutex<Recording>>,
    position: usize,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let recording = self.recording.clone();
        let mut rec = lock(&recording);
        if self.position < rec.pulled {
            let Some(frame) = rec.frames.get(self.position).cloned() else {
                let reason = "request body exceeded the retry buffer and cannot be replayed";
                return Poll::Ready(Some(Err(tonic::Status::internal(reason))));
            };
            self.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if rec.finished {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut rec.source).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    rec.pulled += 1;
                    self.position += 1;
                    rec.buffered += data.len();
                    if rec.buffered > rec.limit {
                        rec.overflowed = true;
                    }
                    if rec.overflowed {
                        rec.frames.clear();
                    } else {
                        rec.frames.push(data.clone());
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => {
                rec.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn body_of(chunks: &[&'static str]) -> tonic::body::Body {
        let frames = chunks.iter().map(|c| Ok::<_, tonic::Status>(Frame::data(Bytes::from(*c))));
        tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    async fn collect(body: tonic::body::Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_retry_replays_every_frame_the_first_attempt_sent() {
        let replay = Replay::new(body_of(&["ab", "cd", "ef"]), 1024);
        assert_eq!(collect(replay.attempt()).await, b"abcdef");
        assert_eq!(
            collect(replay.attempt()).await,
            b"abcdef",
            "the retry must resend the same bytes"
        );
        assert!(!replay.committed());
    }

    #[tokio::test]
    async fn a_retry_after_a_partial_attempt_replays_then_continues_the_source() {
        let replay = Replay::new(body_of(&["ab", "cd", "ef"]), 1024);
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        assert_eq!(collect(replay.attempt()).await, b"abcdef");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_limit_commits_the_rpc() {
        let replay = Replay::new(body_of(&["abcd", "efgh"]), 5);
        assert_eq!(collect(replay.attempt()).await, b"abcdefgh", "the first attempt is unaffected");
        assert!(replay.committed(), "more than the limit pulled must commit the RPC");
    }
}
