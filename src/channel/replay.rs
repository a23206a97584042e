//! A request body that can be sent more than once, for retries (gRFC A6's retry buffer).
//!
//! Every frame pulled from the caller's body is recorded, so a retry replays what the previous
//! attempt already sent and then continues pulling from the source. Streaming request bodies keep
//! streaming: nothing is collected up front. Recording stops for good at the commit point (gRFC
//! A6): when the call commits (response headers arrived, or no further attempt is possible) or
//! once more than the buffer limit has been pulled. The recording is then dropped, so a
//! long-lived stream costs no memory past that point, and no further attempt can be made. Only
//! the latest attempt pulls from the source: a superseded attempt's body ends with an error, so
//! its stream is reset instead of stealing frames. tonic and tower offer no replayable streaming
//! body, hence this small type.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::sync::lock;

/// The default per-RPC retry buffer: 256 KiB.
pub(crate) const DEFAULT_LIMIT: usize = 256 * 1024;

/// The shared source and recording; one per RPC.
#[derive(Debug, Clone)]
pub(crate) struct Replay(Arc<Mutex<Recording>>);

#[derive(Debug)]
struct Recording {
    source: tonic::body::Body,
    /// The recorded frames, from frame number `dropped` on.
    frames: VecDeque<Bytes>,
    /// Frames no longer kept (after the commit point, once the current attempt sent them).
    dropped: usize,
    /// Frames pulled from the source so far.
    pulled: usize,
    /// Frames the current attempt has sent so far.
    position: usize,
    buffered: usize,
    limit: usize,
    committed: bool,
    aborted: bool,
    finished: bool,
    /// The attempt allowed to pull from the source (the latest one).
    current: u64,
    /// The task waiting on the source, woken by [`Replay::abort`].
    waker: Option<Waker>,
}

impl Replay {
    pub(crate) fn new(source: tonic::body::Body, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Recording {
            source,
            frames: VecDeque::new(),
            dropped: 0,
            pulled: 0,
            position: 0,
            buffered: 0,
            limit,
            committed: false,
            aborted: false,
            finished: false,
            current: 0,
            waker: None,
        })))
    }

    /// A body for the next attempt: replays what was pulled so far, then pulls the source.
    /// Earlier attempts' bodies stop pulling.
    pub(crate) fn attempt(&self) -> tonic::body::Body {
        let mut rec = lock(&self.0);
        rec.current += 1;
        rec.position = 0;
        let body = ReplayBody { recording: self.0.clone(), attempt: rec.current };
        tonic::body::Body::new(body)
    }

    /// Whether another attempt could still replay the request: not committed, not aborted.
    pub(crate) fn replayable(&self) -> bool {
        let rec = lock(&self.0);
        !rec.committed && !rec.aborted
    }

    /// Commits the RPC (gRFC A6): records nothing more and drops what the current attempt has
    /// sent; frames it has yet to replay are dropped as it sends them. It keeps streaming from
    /// the source.
    pub(crate) fn commit(&self) {
        lock(&self.0).commit();
    }

    /// Ends the request body of every attempt with an error (the RPC is over: its deadline
    /// passed), dropping the caller's body so its producer sees the RPC end.
    pub(crate) fn abort(&self) {
        let mut rec = lock(&self.0);
        rec.aborted = true;
        rec.frames = VecDeque::new();
        rec.source = tonic::body::Body::empty();
        if let Some(waker) = rec.waker.take() {
            waker.wake();
        }
    }

    /// The bytes currently held for replay.
    #[cfg(test)]
    fn recorded_bytes(&self) -> usize {
        lock(&self.0).frames.iter().map(Bytes::len).sum()
    }
}

impl Recording {
    fn commit(&mut self) {
        self.committed = true;
        while self.dropped < self.position {
            self.frames.pop_front();
            self.dropped += 1;
        }
        self.buffered = self.frames.iter().map(Bytes::len).sum();
    }

    /// The recorded frame number `index`, taken out of the recording once committed.
    fn replay(&mut self, index: usize) -> Option<Bytes> {
        let offset = index.checked_sub(self.dropped)?;
        if self.committed && offset == 0 {
            self.dropped += 1;
            return self.frames.pop_front();
        }
        self.frames.get(offset).cloned()
    }
}

struct ReplayBody {
    recording: Arc<Mutex<Recording>>,
    attempt: u64,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let recording = self.recording.clone();
        let mut rec = lock(&recording);
        if rec.aborted {
            let reason = "channel: the RPC ended before its request body was sent";
            return Poll::Ready(Some(Err(tonic::Status::cancelled(reason))));
        }
        if rec.current != self.attempt {
            let reason = "channel: this attempt was superseded by a retry";
            return Poll::Ready(Some(Err(tonic::Status::cancelled(reason))));
        }
        if rec.position < rec.pulled {
            let position = rec.position;
            let Some(frame) = rec.replay(position) else {
                let reason = "request body exceeded the retry buffer and cannot be replayed";
                return Poll::Ready(Some(Err(tonic::Status::internal(reason))));
            };
            rec.position += 1;
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
                    rec.position += 1;
                    if rec.committed {
                        rec.dropped += 1;
                    } else if rec.buffered + data.len() > rec.limit {
                        // Past the limit the RPC commits: nothing more is kept.
                        rec.frames.push_back(data.clone());
                        rec.commit();
                    } else {
                        rec.buffered += data.len();
                        rec.frames.push_back(data.clone());
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
            Poll::Pending => {
                rec.waker = Some(cx.waker().clone());
                Poll::Pending
            }
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
        assert!(replay.replayable());
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
        assert!(!replay.replayable(), "more than the limit pulled must commit the RPC");
        assert_eq!(replay.recorded_bytes(), 0, "a committed RPC must not keep its recording");
    }

    /// Regression: the recording was kept for the whole RPC, so a long-lived request stream
    /// without retries grew it until the buffer limit and held it past the response headers.
    #[tokio::test]
    async fn a_streaming_request_past_the_commit_point_does_not_grow_the_recording() {
        let replay = Replay::new(body_of(&["ab", "cd", "ef", "gh"]), 1024);
        let mut body = replay.attempt();
        body.frame().await.unwrap().unwrap();
        assert_eq!(replay.recorded_bytes(), 2, "before the commit point frames are kept");
        replay.commit();
        assert_eq!(replay.recorded_bytes(), 0, "committing must drop the recording");
        assert_eq!(collect(body).await, b"cdefgh", "the committed attempt keeps streaming");
        assert_eq!(replay.recorded_bytes(), 0, "frames pulled after the commit must not be kept");
        assert!(!replay.replayable(), "a committed RPC cannot be replayed");
    }

    #[tokio::test]
    async fn a_retry_committed_before_it_starts_replays_the_earlier_frames_then_drops_them() {
        let replay = Replay::new(body_of(&["ab", "cd", "ef"]), 1024);
        let mut first = replay.attempt();
        first.frame().await.unwrap().unwrap();
        first.frame().await.unwrap().unwrap();
        let mut last = replay.attempt();
        replay.commit();
        assert_eq!(replay.recorded_bytes(), 4, "the last attempt still has to replay ab and cd");
        assert_eq!(last.frame().await.unwrap().unwrap().into_data().unwrap(), "ab");
        assert_eq!(replay.recorded_bytes(), 2, "a replayed frame is dropped once committed");
        assert_eq!(collect(last).await, b"cdef");
        assert_eq!(replay.recorded_bytes(), 0, "nothing is kept after the commit point");
    }

    #[tokio::test]
    async fn a_superseded_attempt_stops_pulling_so_the_retry_sees_every_frame() {
        let replay = Replay::new(body_of(&["ab", "cd"]), 1024);
        let mut first = replay.attempt();
        let mut second = replay.attempt();
        assert!(first.frame().await.unwrap().is_err(), "the superseded attempt must end in error");
        assert_eq!(second.frame().await.unwrap().unwrap().into_data().unwrap(), "ab");
        assert_eq!(collect(second).await, b"cd");
    }

    #[tokio::test]
    async fn aborting_ends_a_body_waiting_on_its_source() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(1);
        let source =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let replay = Replay::new(tonic::body::Body::new(source), 1024);
        let mut body = replay.attempt();
        let waiting = tokio::spawn(async move { body.frame().await.map(|f| f.is_err()) });
        tokio::task::yield_now().await;
        replay.abort();
        assert_eq!(waiting.await.unwrap(), Some(true), "an aborted body must end with an error");
        assert!(tx.is_closed(), "aborting must drop the caller's body");
    }
}
