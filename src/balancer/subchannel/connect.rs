//! One connect attempt: dial, HTTP/2 handshake, and the wait for the server's preface; then the
//! watch for the server's GOAWAY.
//!
//! hyper's `handshake` returns once our client preface is written; it says nothing about the
//! server. A TCP peer that accepts and never speaks HTTP/2 would look connected and swallow every
//! RPC sent to it. So the attempt is READY only when the server's first frame has been read, and
//! RFC 9113 §3.4 requires that frame to be a SETTINGS frame on stream 0. Nor does hyper say when
//! a GOAWAY arrives: it only fails new streams, and ends the connection once the streams in
//! flight are done, which may be the whole grace of a MAX_CONNECTION_AGE later. gRPC stops using
//! a connection for new RPCs as soon as its GOAWAY is *received* (grpc-go's `handleGoAway`
//! closes the transport's `goAway` channel and the `addrConn` goes IDLE at once).
//!
//! hyper offers no hook for either, so [`FrameWatch`] wraps the connector's stream, watches the
//! bytes hyper reads, and follows the frame boundaries ([`FrameScanner`]): it parses each 9-byte
//! frame header and skips the payload, keeping only the first bytes of a GOAWAY's. It reports
//! the verdict on the first frame header, and the first GOAWAY. hyper still reads and handles
//! every byte itself; the wrapper only looks.

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

/// A READY connection: its sender, the task that drives it until it ends, and the first GOAWAY
/// the server sends on it.
pub(super) struct Connected {
    pub(super) sender: SendRequest<tonic::body::Body>,
    pub(super) driver: JoinHandle<Ended>,
    /// Resolves with the server's first GOAWAY; closed (an error) if the connection ends
    /// without one.
    pub(super) goaway: oneshot::Receiver<GoAway>,
}

/// A GOAWAY frame the server sent (RFC 9113 §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GoAway {
    /// The last stream the server may have processed; ours above it were not.
    pub(super) last_stream_id: u32,
    /// The error code (0: NO_ERROR, a graceful shutdown).
    pub(super) error_code: u32,
    /// ENHANCE_YOUR_CALM with the debug data `too_many_pings` (gRFC A8).
    pub(super) too_many_pings: bool,
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
    let (io, preface, goaway) = FrameWatch::new(io);
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
        Ok(Ok(Ok(()))) => Ok(Connected { sender, driver: driver.disarm(), goaway }),
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
/// The GOAWAY frame type (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;
/// The SETTINGS ACK flag.
const ACK: u8 = 0x1;
/// ENHANCE_YOUR_CALM (RFC 9113 §7).
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The debug data of grpc-go's GOAWAY for a client that PINGs too often (gRFC A8).
const TOO_MANY_PINGS: &[u8] = b"too_many_pings";
/// How much of a GOAWAY payload is kept: last-stream-id, error code, and enough debug data to
/// tell `too_many_pings` from anything that only starts with it. The rest is skipped.
const GOAWAY_KEPT: usize = 8 + TOO_MANY_PINGS.len() + 1;

/// What the scanner saw in the server's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The verdict on the first frame header.
    Preface(PrefaceVerdict),
    /// A complete GOAWAY frame on stream 0.
    GoAway(GoAway),
}

/// Follows HTTP/2 frame boundaries in the bytes a server sends: parses each frame header and
/// skips its payload, keeping only the first [`GOAWAY_KEPT`] bytes of a GOAWAY's. Constant
/// memory; the bytes may arrive split anywhere.
#[derive(Debug, Default)]
struct FrameScanner {
    header: [u8; FRAME_HEADER_LEN],
    /// Bytes of the current header read so far; the payload follows once it is complete.
    seen: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The start of the current GOAWAY's payload.
    kept: Vec<u8>,
    /// Frame headers completed so far.
    frames: u64,
}

impl FrameScanner {
    /// Takes in bytes just read and reports what they complete, in order.
    fn feed(&mut self, mut bytes: &[u8], seen: &mut impl FnMut(Seen)) {
        while !bytes.is_empty() {
            if self.seen < FRAME_HEADER_LEN {
                let take = bytes.len().min(FRAME_HEADER_LEN - self.seen);
                self.header[self.seen..self.seen + take].copy_from_slice(&bytes[..take]);
                self.seen += take;
                bytes = &bytes[take..];
                if self.seen < FRAME_HEADER_LEN {
                    return;
                }
                if self.frames == 0 {
                    seen(Seen::Preface(check_first_frame(&self.header)));
                }
                self.frames += 1;
                self.payload_left =
                    u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]])
                        as usize;
                self.kept.clear();
            } else {
                let take = bytes.len().min(self.payload_left);
                if self.is_goaway() {
                    let keep = take.min(GOAWAY_KEPT - self.kept.len());
                    self.kept.extend_from_slice(&bytes[..keep]);
                }
                self.payload_left -= take;
                bytes = &bytes[take..];
            }
            if self.payload_left == 0 {
                self.end_frame(seen);
            }
        }
    }

    /// `reason`, with a hint when the server's first bytes are a TLS record.
    fn with_tls_hint(&self, reason: String) -> String {
        if self.frames == 0 && self.seen >= 2 { tls_hint(&self.header, reason) } else { reason }
    }

    /// Whether the current frame is a GOAWAY on stream 0 (the only place it is valid).
    fn is_goaway(&self) -> bool {
        self.header[3] == GOAWAY && self.header[5..9] == [0, 0, 0, 0]
    }

    /// The current frame is complete: reports a GOAWAY, and starts the next header.
    fn end_frame(&mut self, seen: &mut impl FnMut(Seen)) {
        if self.is_goaway() && self.kept.len() >= 8 {
            let word = |at: usize| {
                u32::from_be_bytes([
                    self.kept[at],
                    self.kept[at + 1],
                    self.kept[at + 2],
                    self.kept[at + 3],
                ])
            };
            let (last_stream_id, error_code) = (word(0) & 0x7fff_ffff, word(4));
            let too_many_pings =
                error_code == ENHANCE_YOUR_CALM && &self.kept[8..] == TOO_MANY_PINGS;
            seen(Seen::GoAway(GoAway { last_stream_id, error_code, too_many_pings }));
        }
        self.seen = 0;
    }
}

/// A stream that watches the frames the server sends, as hyper reads them: it reports whether
/// the first frame header is the SETTINGS frame that must open the server's preface, and the
/// first GOAWAY. It never changes a byte.
struct FrameWatch {
    inner: BoxedIo,
    scanner: FrameScanner,
    verdict: Option<oneshot::Sender<PrefaceVerdict>>,
    goaway: Option<oneshot::Sender<GoAway>>,
}

impl FrameWatch {
    fn new(inner: BoxedIo) -> (Self, oneshot::Receiver<PrefaceVerdict>, oneshot::Receiver<GoAway>) {
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let (goaway_tx, goaway_rx) = oneshot::channel();
        let watch = Self {
            inner,
            scanner: FrameScanner::default(),
            verdict: Some(verdict_tx),
            goaway: Some(goaway_tx),
        };
        (watch, verdict_rx, goaway_rx)
    }

    fn decide(&mut self, verdict: PrefaceVerdict) {
        let verdict = verdict.map_err(|reason| self.scanner.with_tls_hint(reason));
        if let Some(tx) = self.verdict.take() {
            let _ = tx.send(verdict);
        }
    }

    /// Scans bytes just read; returns the reason to stop if the first frame is not HTTP/2's.
    fn observe(&mut self, bytes: &[u8]) -> Option<String> {
        let mut rejected = None;
        let (verdict, goaway) = (&mut self.verdict, &mut self.goaway);
        self.scanner.feed(bytes, &mut |seen| match seen {
            Seen::Preface(result) => {
                if let Err(reason) = &result {
                    rejected = Some(reason.clone());
                }
                if let Some(tx) = verdict.take() {
                    let _ = tx.send(result);
                }
            }
            Seen::GoAway(frame) => {
                if let Some(tx) = goaway.take() {
                    let _ = tx.send(frame);
                }
            }
        });
        rejected
    }
}

/// `reason`, with a hint when `first` (the server's first bytes) starts as a TLS record does: a
/// handshake (0x16) or alert (0x15) record of TLS 1.x (RFC 8446 §5.1). A TLS server that gets
/// HTTP/2 in the clear answers so.
fn tls_hint(first: &[u8], reason: String) -> String {
    match first {
        [0x15 | 0x16, 0x03, ..] => format!(
            "{reason}; the server answered with a TLS record: it speaks TLS, so the channel \
             needs TLS too (ChannelBuilder::tls, probe --tls or --ca)"
        ),
        _ => reason,
    }
}

/// Checks the server's first frame header (RFC 9113 §3.4: the server preface is a SETTINGS
/// frame; §6.5: on stream 0, not an ACK, a payload of 6-byte entries).
fn check_first_frame(header: &[u8; FRAME_HEADER_LEN]) -> PrefaceVerdict {
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let (kind, flags) = (header[3], header[4]);
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    if kind != SETTINGS {
        let reason = format!(
            "the server's first frame is not SETTINGS (type {kind:#04x}); is it an HTTP/2 server?"
        );
        return Err(tls_hint(header, reason));
    }
    if stream != 0 || flags & ACK != 0 || !length.is_multiple_of(6) {
        return Err(format!(
            "the server's first SETTINGS frame is malformed (stream {stream}, flags {flags:#04x}, \
             length {length})"
        ));
    }
    Ok(())
}

impl Drop for FrameWatch {
    fn drop(&mut self) {
        self.decide(Err("the connection ended before the server's preface".to_owned()));
    }
}

impl AsyncRead for FrameWatch {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.verdict.is_none() && this.goaway.is_none() {
            return result;
        }
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                this.decide(Err("the server closed the connection before its preface".into()));
            }
            Poll::Ready(Ok(())) => {
                if let Some(reason) = this.observe(&buf.filled()[before..]) {
                    // Stop hyper from reading on as if this were HTTP/2.
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
            }
            Poll::Ready(Err(error)) => {
                this.decide(Err(format!("reading the server's preface failed: {error}")));
            }
            Poll::Pending => {}
        }
        result
    }
}

impl AsyncWrite for FrameWatch {
    crate::io::forward_async_write!(inner, write_failed);
}

impl FrameWatch {
    /// Before the server's preface, a failed write is the attempt's reason to fail: hyper may
    /// give up on it without reading again.
    fn write_failed(&mut self, error: io::Error, _: &mut Context<'_>) -> io::Error {
        self.decide(Err(format!("sending to the server failed: {error}")));
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_record_where_the_preface_should_be_is_named_as_tls() {
        let handshake = [0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76];
        let error = check_first_frame(&handshake).unwrap_err();
        assert!(error.contains("speaks TLS"), "a TLS handshake record must be named: {error}");
        let mut scanner = FrameScanner::default();
        scanner.feed(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46], &mut |_| {});
        let closed = scanner.with_tls_hint("closed before its preface".to_owned());
        assert!(closed.contains("speaks TLS"), "a TLS alert then EOF must be named: {closed}");
        let http1 = check_first_frame(b"HTTP/1.1 ").unwrap_err();
        assert!(!http1.contains("TLS"), "an HTTP/1 reply is not TLS: {http1}");
    }

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

    /// Feeds `bytes` to a new scanner in pieces of `chunk` bytes; returns what it saw.
    fn scan(bytes: &[u8], chunk: usize) -> Vec<Seen> {
        let mut scanner = FrameScanner::default();
        let mut seen = Vec::new();
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece, &mut |s| seen.push(s));
        }
        seen
    }

    /// A frame: header for `kind` on `stream` with `payload`.
    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![length[1], length[2], length[3], kind, 0];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn goaway_payload(last_stream_id: u32, error_code: u32, debug: &[u8]) -> Vec<u8> {
        let mut payload = last_stream_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&error_code.to_be_bytes());
        payload.extend_from_slice(debug);
        payload
    }

    #[test]
    fn the_header_is_recognised_when_it_arrives_a_byte_at_a_time() {
        let header = [0u8, 0, 0, SETTINGS, 0, 0, 0, 0, 0];
        assert_eq!(scan(&header[..8], 1), [], "no verdict before 9 bytes");
        assert_eq!(scan(&header, 1), [Seen::Preface(Ok(()))]);
    }

    #[test]
    fn a_goaway_after_other_frames_is_reported_however_the_bytes_are_split() {
        let mut bytes = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]);
        bytes.extend(frame(0x0, 1, &[7; 300])); // DATA, skipped
        bytes.extend(frame(0x6, 0, &[1; 8])); // PING, skipped
        bytes.extend(frame(GOAWAY, 0, &goaway_payload(0x7fff_ffff, 0, b"")));
        bytes.extend(frame(GOAWAY, 0, &goaway_payload(5, 0, b"graceful")));
        let expected = [
            Seen::Preface(Ok(())),
            Seen::GoAway(GoAway {
                last_stream_id: 0x7fff_ffff,
                error_code: 0,
                too_many_pings: false,
            }),
            Seen::GoAway(GoAway { last_stream_id: 5, error_code: 0, too_many_pings: false }),
        ];
        for chunk in [1, 2, 9, 10, 64, bytes.len()] {
            assert_eq!(
                scan(&bytes, chunk),
                expected,
                "GOAWAY frames must be found when reads split the bytes every {chunk} bytes"
            );
        }
    }

    #[test]
    fn a_goaway_with_too_many_pings_is_recognised_and_long_debug_data_is_skipped() {
        let mut bytes = frame(SETTINGS, 0, &[]);
        let calm = goaway_payload(3, ENHANCE_YOUR_CALM, TOO_MANY_PINGS);
        bytes.extend(frame(GOAWAY, 0, &calm));
        let long = goaway_payload(3, ENHANCE_YOUR_CALM, &[b'x'; 5000]);
        bytes.extend(frame(GOAWAY, 0, &long));
        let seen = scan(&bytes, 1);
        assert_eq!(
            seen[1],
            Seen::GoAway(GoAway {
                last_stream_id: 3,
                error_code: ENHANCE_YOUR_CALM,
                too_many_pings: true
            }),
            "gRFC A8: ENHANCE_YOUR_CALM with too_many_pings must be recognised"
        );
        assert!(
            matches!(&seen[2], Seen::GoAway(GoAway { too_many_pings: false, .. })),
            "other debug data is not too_many_pings"
        );
        let longer = goaway_payload(3, ENHANCE_YOUR_CALM, b"too_many_pings_and_more");
        let seen = scan(&[frame(SETTINGS, 0, &[]), frame(GOAWAY, 0, &longer)].concat(), 1);
        assert!(
            matches!(&seen[1], Seen::GoAway(GoAway { too_many_pings: false, .. })),
            "debug data that only starts with too_many_pings is not it (grpc-go compares it whole)"
        );
        let on_stream = frame(GOAWAY, 1, &goaway_payload(3, 0, b""));
        assert_eq!(
            scan(&[frame(SETTINGS, 0, &[]), on_stream].concat(), 3).len(),
            1,
            "GOAWAY belongs on stream 0"
        );
    }
}
