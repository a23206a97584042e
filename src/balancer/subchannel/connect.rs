//! One connect attempt: dial, HTTP/2 handshake, and the wait for the server's preface.
//!
//! hyper's `handshake` returns once our client preface is written; it says nothing about the
//! server. A TCP peer that accepts and never speaks HTTP/2 would look connected and swallow every
//! RPC sent to it. So the attempt is READY only when the server's first frame has been read, and
//! RFC 9113 §3.4 requires that frame to be a SETTINGS frame on stream 0. hyper offers no hook for
//! this, so [`PrefaceWatch`] wraps the connector's stream, watches the bytes hyper reads, and
//! reports once the first 9-byte frame header has gone by. hyper still reads and handles every
//! byte itself; the wrapper only looks.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ConnectionError;
use super::config::{KeepAlive, MAX_SETTING_DURATION};
use crate::connector::{BoxedIo, Connector};

/// How a READY connection ended.
#[derive(Debug)]
pub(super) struct Ended {
    /// hyper's error, or `closed` for a clean end.
    pub(super) reason: String,
    /// The server sent GOAWAY with ENHANCE_YOUR_CALM and the debug data `too_many_pings`
    /// (gRFC A8): our keep-alive PINGs came too often for it.
    pub(super) too_many_pings: bool,
}

/// A READY connection: its sender, and the task that drives it until it ends.
pub(super) struct Connected {
    pub(super) sender: SendRequest<tonic::body::Body>,
    pub(super) driver: JoinHandle<Ended>,
}

/// Dials `addr`, performs the HTTP/2 handshake and waits for the server's preface, all within
/// `timeout` (at most [`MAX_SETTING_DURATION`]). The connection is driven by its own task from the handshake on (hyper reads the
/// server's preface only while driven); if the attempt fails or is dropped, that task is
/// aborted and the socket closed.
pub(super) async fn connect(
    connector: Arc<dyn Connector>,
    addr: String,
    keepalive: Option<KeepAlive>,
    timeout: Duration,
) -> Result<Connected, ConnectionError> {
    let timeout = timeout.min(MAX_SETTING_DURATION);
    let deadline = Instant::now() + timeout;
    let io = match tokio::time::timeout_at(deadline, connector.connect(&addr)).await {
        Err(_) => return Err(ConnectionError::Timeout { addr, timeout }),
        Ok(Err(e)) => return Err(ConnectionError::Connect { addr, reason: e.to_string() }),
        Ok(Ok(io)) => io,
    };
    let handshake_error =
        |reason: String| ConnectionError::Handshake { addr: addr.clone(), reason };
    let (io, preface) = PrefaceWatch::new(io);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    if let Some(keepalive) = &keepalive {
        builder
            .keep_alive_interval(keepalive.interval)
            .keep_alive_timeout(keepalive.timeout)
            .keep_alive_while_idle(keepalive.while_idle);
    }
    let (sender, connection) =
        match tokio::time::timeout_at(deadline, builder.handshake(TokioIo::new(io))).await {
            Err(_) => return Err(handshake_error("our preface was not written in time".into())),
            Ok(Err(e)) => return Err(handshake_error(e.to_string())),
            Ok(Ok(handshake)) => handshake,
        };
    let driver = AbortOnDrop(Some(tokio::spawn(drive(connection))));
    match tokio::time::timeout_at(deadline, preface).await {
        Err(_) => Err(handshake_error(format!(
            "the server sent no HTTP/2 preface (SETTINGS) within {timeout:?}"
        ))),
        Ok(Err(_)) => {
            Err(handshake_error("the connection ended before the server's preface".into()))
        }
        Ok(Ok(Err(reason))) => Err(handshake_error(reason)),
        Ok(Ok(Ok(()))) => Ok(Connected { sender, driver: driver.disarm() }),
    }
}

/// Drives the connection to its end and says how it ended.
async fn drive<F>(connection: F) -> Ended
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    match connection.await {
        Ok(()) => Ended { reason: "closed".to_owned(), too_many_pings: false },
        Err(error) => {
            Ended { too_many_pings: is_too_many_pings(&error), reason: error.to_string() }
        }
    }
}

/// Whether `error` is the server's GOAWAY with ENHANCE_YOUR_CALM and debug data
/// `too_many_pings` (gRFC A8). hyper keeps h2's error in its source chain; h2 exposes the
/// reason and the side that sent it, and shows the debug data only in its message.
pub(super) fn is_too_many_pings(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
                && h2.to_string().contains("too_many_pings");
        }
        next = error.source();
    }
    false
}

/// Aborts the connection task unless the attempt succeeded.
struct AbortOnDrop(Option<JoinHandle<Ended>>);

impl AbortOnDrop {
    fn disarm(mut self) -> JoinHandle<Ended> {
        self.0.take().expect("disarmed once")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The verdict on the server's preface: `Ok` once a SETTINGS frame header has been read, `Err`
/// with the reason otherwise.
type PrefaceVerdict = Result<(), String>;

/// HTTP/2's frame header length (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// The SETTINGS frame type (RFC 9113 §6.5).
const SETTINGS: u8 = 0x4;
/// The SETTINGS ACK flag.
const ACK: u8 = 0x1;

/// A stream that reports whether the server's first frame header, as hyper reads it, is the
/// SETTINGS frame that must open the server's preface. After the verdict it only forwards.
struct PrefaceWatch {
    inner: BoxedIo,
    header: [u8; FRAME_HEADER_LEN],
    seen: usize,
    verdict: Option<oneshot::Sender<PrefaceVerdict>>,
}

impl PrefaceWatch {
    fn new(inner: BoxedIo) -> (Self, oneshot::Receiver<PrefaceVerdict>) {
        let (tx, rx) = oneshot::channel();
        let watch = Self { inner, header: [0; FRAME_HEADER_LEN], seen: 0, verdict: Some(tx) };
        (watch, rx)
    }

    fn decide(&mut self, verdict: PrefaceVerdict) {
        if let Some(tx) = self.verdict.take() {
            let _ = tx.send(verdict);
        }
    }

    /// Takes in bytes just read; returns the verdict once the header is complete.
    fn observe(&mut self, bytes: &[u8]) -> Option<PrefaceVerdict> {
        let take = bytes.len().min(FRAME_HEADER_LEN - self.seen);
        self.header[self.seen..self.seen + take].copy_from_slice(&bytes[..take]);
        self.seen += take;
        (self.seen == FRAME_HEADER_LEN).then(|| check_first_frame(&self.header))
    }
}

/// Checks the server's first frame header (RFC 9113 §3.4: the server preface is a SETTINGS
/// frame; §6.5: on stream 0, not an ACK, a payload of 6-byte entries).
fn check_first_frame(header: &[u8; FRAME_HEADER_LEN]) -> PrefaceVerdict {
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let (kind, flags) = (header[3], header[4]);
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    if kind != SETTINGS {
        return Err(format!(
            "the server's first frame is not SETTINGS (type {kind:#04x}); is it an HTTP/2 server?"
        ));
    }
    if stream != 0 || flags & ACK != 0 || !length.is_multiple_of(6) {
        return Err(format!(
            "the server's first SETTINGS frame is malformed (stream {stream}, flags {flags:#04x}, \
             length {length})"
        ));
    }
    Ok(())
}

impl Drop for PrefaceWatch {
    fn drop(&mut self) {
        self.decide(Err("the connection ended before the server's preface".to_owned()));
    }
}

impl AsyncRead for PrefaceWatch {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.verdict.is_none() {
            return result;
        }
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                this.decide(Err("the server closed the connection before its preface".into()));
            }
            Poll::Ready(Ok(())) => match this.observe(&buf.filled()[before..]) {
                None => {}
                Some(Ok(())) => this.decide(Ok(())),
                Some(Err(reason)) => {
                    this.decide(Err(reason.clone()));
                    // Stop hyper from reading on as if this were HTTP/2.
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
            },
            Poll::Ready(Err(error)) => {
                this.decide(Err(format!("reading the server's preface failed: {error}")));
            }
            Poll::Pending => {}
        }
        result
    }
}

impl AsyncWrite for PrefaceWatch {
    crate::io::forward_async_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_must_be_a_settings_frame_on_stream_zero() {
        let settings = [0, 0, 6, SETTINGS, 0, 0, 0, 0, 0];
        assert_eq!(check_first_frame(&settings), Ok(()), "a SETTINGS frame opens the preface");
        let ack = [0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0];
        assert!(check_first_frame(&ack).is_err(), "a SETTINGS ACK cannot open the preface");
        let on_stream = [0, 0, 0, SETTINGS, 0, 0, 0, 0, 1];
        assert!(check_first_frame(&on_stream).is_err(), "SETTINGS must be on stream 0");
        let http1 = *b"HTTP/1.1 ";
        let error = check_first_frame(&http1).unwrap_err();
        assert!(error.contains("not SETTINGS"), "an HTTP/1 reply must be named as such: {error}");
    }

    #[test]
    fn the_header_is_recognised_when_it_arrives_a_byte_at_a_time() {
        let (mut watch, _) = PrefaceWatch::new(Box::new(tokio::io::duplex(64).0));
        let header = [0u8, 0, 0, SETTINGS, 0, 0, 0, 0, 0];
        for byte in &header[..8] {
            assert_eq!(watch.observe(&[*byte]), None, "no verdict before 9 bytes");
        }
        assert_eq!(watch.observe(&header[8..]), Some(Ok(())));
    }
}
