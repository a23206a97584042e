//! The balancer behind `tonic-p2c` and `tonic-balance-list` (see the parent module for how it
//! relates to `Channel::balance_channel`), and the turmoil connector every tonic client dials
//! through.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change as TowerChange;
use tower::load::Load;
use tower::util::{BoxCloneService, BoxService};

use crate::connector::{BoxedIo, Connector};
use crate::sim::net::TurmoilConnector;

/// A `tower::Service<Uri>` that dials the turmoil network ([`TurmoilConnector`]) for tonic's
/// `Endpoint::connect_with_connector*`, optionally counting the connections it opened that are
/// still open.
#[derive(Debug, Clone, Default)]
pub(super) struct TonicConnector {
    open: Option<Arc<AtomicUsize>>,
}

type Dialing = Pin<Box<dyn Future<Output = io::Result<TokioIo<Counted>>> + Send>>;

impl Service<Uri> for TonicConnector {
    type Response = TokioIo<Counted>;
    type Error = io::Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Dialing {
        let Some(host) = uri.host() else {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tonic connector: uri {uri} has no host"),
            );
            return Box::pin(async move { Err(error) });
        };
        let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let (dialing, open) = (TurmoilConnector.connect(&addr), self.open.clone());
        Box::pin(async move {
            let io = dialing.await?;
            if let Some(open) = &open {
                open.fetch_add(1, Ordering::Relaxed);
            }
            Ok(TokioIo::new(Counted { io, open }))
        })
    }
}

/// A connection's byte stream that, when hyper drops it (the connection ended: closed by the
/// peer, killed by keep-alive, or ended after a GOAWAY), takes itself off its count.
pub(super) struct Counted {
    io: BoxedIo,
    open: Option<Arc<AtomicUsize>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type Connecting = Pin<
    Box<dyn Future<Output = Result<(Channel, Arc<AtomicUsize>), tonic::transport::Error>> + Send>,
>;
type Responding = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// Where one endpoint of the balancer stands: tonic's per-endpoint `Reconnect` states.
enum Link {
    /// No connection and no attempt: the next `poll_ready` starts one.
    Idle,
    /// An attempt in flight: not ready.
    Connecting(Connecting),
    /// Connected, through a tonic `Channel` made by `Endpoint::connect_with_connector`, with
    /// the count of its open connections.
    Connected(Channel, Arc<AtomicUsize>),
    /// The last attempt failed: ready, and the next call fails with this error.
    Failed(tonic::transport::Error),
}

/// One endpoint of the balancer, with the readiness of tonic's internal per-endpoint service
/// (its lazy `Reconnect`): not ready while connecting; ready after a failed attempt, the next
/// call failing with its error; a lost connection noticed when p2c next polls it, which starts
/// a new attempt. Each connection is a tonic `Channel` of its own; its load is 0, as tonic's.
struct P2cEndpoint {
    endpoint: Endpoint,
    link: Link,
}

impl P2cEndpoint {
    fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, link: Link::Idle }
    }
}

impl Service<http::Request<Body>> for P2cEndpoint {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Responding;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match &mut self.link {
                Link::Idle => {
                    let open = Arc::new(AtomicUsize::new(0));
                    let connector = TonicConnector { open: Some(open.clone()) };
                    let endpoint = self.endpoint.clone();
                    self.link = Link::Connecting(Box::pin(async move {
                        endpoint.connect_with_connector(connector).await.map(|c| (c, open))
                    }));
                }
                Link::Connecting(attempt) => match attempt.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((channel, open))) => self.link = Link::Connected(channel, open),
                    Poll::Ready(Err(error)) => {
                        self.link = Link::Failed(error);
                        return Poll::Ready(Ok(()));
                    }
                },
                Link::Connected(_, open) if open.load(Ordering::Relaxed) == 0 => {
                    self.link = Link::Idle;
                }
                Link::Connected(channel, _) => return channel.poll_ready(cx).map_err(Into::into),
                Link::Failed(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Responding {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Failed(error) => Box::pin(async move { Err(error.into()) }),
            Link::Connected(mut channel, open) => {
                let responding = channel.call(request);
                self.link = Link::Connected(channel, open);
                Box::pin(async move { responding.await.map_err(Into::into) })
            }
            other => {
                self.link = other;
                let error = "tonic endpoint: called before it was ready";
                Box::pin(async move { Err(error.into()) })
            }
        }
    }
}

impl Load for P2cEndpoint {
    type Metric = usize;

    fn load(&self) -> usize {
        0
    }
}

/// tonic's `Change`s as tower's discovery stream, building each endpoint's `Channel` as
/// tonic's own discovery stream builds its connections (and, like it, never ending).
struct Discovered {
    changes: mpsc::Receiver<Change<String, Endpoint>>,
}

impl tokio_stream::Stream for Discovered {
    type Item = Result<TowerChange<String, P2cEndpoint>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.changes.poll_recv(cx) {
                Poll::Pending | Poll::Ready(None) => Poll::Pending,
                Poll::Ready(Some(Change::Insert(key, endpoint))) => {
                    Poll::Ready(Some(Ok(TowerChange::Insert(key, P2cEndpoint::new(endpoint)))))
                }
                Poll::Ready(Some(Change::Remove(key))) => {
                    Poll::Ready(Some(Ok(TowerChange::Remove(key))))
                }
                // `Change` is non-exhaustive; a kind added later is skipped.
                #[allow(unreachable_patterns)]
                Poll::Ready(Some(_)) => continue,
            };
        }
    }
}

/// tower's `Rng` over a seeded ChaCha generator.
struct SeededRng(ChaCha8Rng);

impl tower::util::rng::Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type Svc = BoxCloneService<http::Request<Body>, http::Response<Body>, BoxError>;

/// The balancer behind a `Buffer`, as `balance_channel` builds it, and the sender of its
/// changes.
pub(super) fn balancer(seed: u64) -> (Svc, mpsc::Sender<Change<String, Endpoint>>) {
    let (changes, rx) = mpsc::channel(1024);
    let discover = Discovered { changes: rx };
    let rng = make_rng(seed);
    let balance: Balance<Discovered, http::Request<Body>> = match rng {
        Some(rng) => Balance::from_rng(discover, rng),
        None => Balance::new(discover),
    };
    let buffered = Buffer::new(BoxService::new(balance), 1024);
    (BoxCloneService::new(buffered), changes)
}

#[cfg(not(test))]
fn make_rng(seed: u64) -> Option<SeededRng> {
    Some(SeededRng(ChaCha8Rng::seed_from_u64(seed)))
}

/// In unit tests, `UNSEEDED` can switch to tower's per-process generator, to show
/// that the determinism test catches it.
#[cfg(test)]
fn make_rng(seed: u64) -> Option<SeededRng> {
    (!super::tests::UNSEEDED.get()).then(|| SeededRng(ChaCha8Rng::seed_from_u64(seed)))
}
