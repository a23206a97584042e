//! Deadlines on accepted connections that do not get going: one for the HTTP/2 handshake, one
//! for the first request.
//!
//! Neither tonic's server builder nor hyper's HTTP/2 server bounds how long a connection may
//! sit before it speaks, so a client that connects and sends nothing (or a slowloris that
//! trickles bytes) holds a socket forever. [`DeadlineIo`] wraps the accepted stream and watches
//! the bytes the client sends: the 24-byte client connection preface (RFC 9113 §3.4) must
//! arrive within the handshake timeout, and a HEADERS frame (a request) within the idle
//! timeout, both counted from the accept. When a deadline passes first, reads fail with
//! [`io::ErrorKind::TimedOut`] and the HTTP/2 server closes the connection. Once a request has
//! arrived the wrapper only forwards bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The frame type of HEADERS (RFC 9113 §6.2): the frame that opens a request.
const HEADERS: u8 = 0x1;

/// The length of an HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;

/// How far the client has got, from the bytes it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// This many bytes of the preface have arrived.
    Preface(usize),
    /// The preface is complete; inside the frame stream, `header` bytes of the current frame
    /// header have arrived (`buf` holds them), or `payload` bytes of its payload remain.
    Frames { header: usize, buf: [u8; FRAME_HEADER_LEN], payload: usize },
    /// A HEADERS frame arrived: the connection is in use.
    Requested,
    /// The client sent something that is not HTTP/2; the server will close the connection.
    NotHttp2,
}

impl Progress {
    fn start() -> Self {
        Progress::Preface(0)
    }

    /// Advances over `bytes`, the next bytes the client sent.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self {
                Progress::Preface(seen) => {
                    let take = (PREFACE.len() - *seen).min(bytes.len());
                    if bytes[..take] != PREFACE[*seen..*seen + take] {
                        *self = Progress::NotHttp2;
                        return;
                    }
                    *seen += take;
                    bytes = &bytes[take..];
                    if *seen == PREFACE.len() {
                        *self =
                            Progress::Frames { header: 0, buf: [0; FRAME_HEADER_LEN], payload: 0 };
                    }
                }
                Progress::Frames { header, buf, payload } => {
                    if *payload > 0 {
                        let skip = (*payload).min(bytes.len());
                        *payload -= skip;
                        bytes = &bytes[skip..];
                        continue;
                    }
                    let take = (FRAME_HEADER_LEN - *header).min(bytes.len());
                    buf[*header..*header + take].copy_from_slice(&bytes[..take]);
                    *header += take;
                    bytes = &bytes[take..];
                    if *header == FRAME_HEADER_LEN {
                        if buf[3] == HEADERS {
                            *self = Progress::Requested;
                            return;
                        }
                        *payload = usize::from(buf[0]) << 16
                            | usize::from(buf[1]) << 8
                            | usize::from(buf[2]);
                        *header = 0;
                    }
                }
                Progress::Requested | Progress::NotHttp2 => return,
            }
        }
    }
}

/// An accepted stream whose reads fail once a handshake or first-request deadline passes; see
/// the module docs.
#[derive(Debug)]
pub(super) struct DeadlineIo<Io> {
    io: Io,
    progress: Progress,
    accepted: Instant,
    handshake_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// Armed for the earliest deadline still pending; `None` once none is.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<Io> DeadlineIo<Io> {
    /// Wraps a stream accepted just now. `None` turns a deadline off.
    pub(super) fn new(
        io: Io,
        handshake_timeout: Option<Duration>,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let mut this = Self {
            io,
            progress: Progress::start(),
            accepted: Instant::now(),
            handshake_timeout,
            idle_timeout,
            timer: None,
        };
        this.arm();
        this
    }

    /// The deadline still pending, and what it waits for.
    fn pending(&self) -> Option<(Instant, &'static str)> {
        let handshake = match self.progress {
            Progress::Preface(_) => self.handshake_timeout.map(|t| (t, "the HTTP/2 preface")),
            _ => None,
        };
        let request = match self.progress {
            Progress::Requested => None,
            _ => self.idle_timeout.map(|t| (t, "a first request")),
        };
        [handshake, request]
            .into_iter()
            .flatten()
            .map(|(timeout, what)| (self.accepted + timeout, what))
            .min_by_key(|(at, _)| *at)
    }

    fn arm(&mut self) {
        match self.pending() {
            None => self.timer = None,
            Some((at, _)) => match self.timer.as_mut() {
                Some(timer) if timer.deadline() == at => {}
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            },
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for DeadlineIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            let what = this.pending().map_or("the client", |(_, what)| what);
            let message = format!("connection closed: no {what} in time");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.timer.is_some() && matches!(read, Poll::Ready(Ok(()))) {
            this.progress.observe(&buf.filled()[before..]);
            this.arm();
        }
        read
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<Io> {
    crate::io::forward_async_write!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(payload);
        bytes
    }

    fn after(chunks: &[&[u8]]) -> Progress {
        let mut progress = Progress::start();
        for chunk in chunks {
            progress.observe(chunk);
        }
        progress
    }

    #[test]
    fn a_request_is_seen_after_the_preface_and_other_frames_split_anywhere() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, &[0; 12])); // SETTINGS
        bytes.extend(frame(0x8, &[0, 0, 1, 0])); // WINDOW_UPDATE
        bytes.extend(frame(HEADERS, &[0x82]));
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(after(&[a, b]), Progress::Requested, "split at {split}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(after(&one_by_one), Progress::Requested);
    }

    #[test]
    fn a_preface_and_settings_alone_are_not_a_request() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, &[0; 6]));
        bytes.extend(frame(0x6, &[0; 8])); // PING
        assert!(matches!(after(&[&bytes]), Progress::Frames { .. }));
        assert_eq!(after(&[&PREFACE[..10]]), Progress::Preface(10));
    }

    #[test]
    fn bytes_that_are_not_the_preface_are_not_http2() {
        assert_eq!(after(&[b"GET / HTTP/1.1\r\n"]), Progress::NotHttp2);
    }
}
