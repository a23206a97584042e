//! An Echo server that answers in-process, and connectors to it for anchorage and tonic: the
//! whole RPC path (pick, HTTP/2 framing, the server's handler) without a network, so the
//! benchmarks and the allocation check measure the client rather than the kernel.

#![allow(dead_code)] // Each including target uses part of it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anchorage::connector::{BoxedIo, ConnectFuture, Connector};
use anchorage::pb::echo_server::{Echo, EchoServer};
use anchorage::pb::{EchoRequest, EchoResponse, StatsRequest, StatsResponse};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes buffered in each direction of an in-process connection.
const PIPE_BYTES: usize = 256 * 1024;

/// The service config that selects round_robin.
pub const ROUND_ROBIN: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// An anchorage channel over `n` connections to `server`: round_robin, or the default
/// pick_first.
pub fn anchorage(server: &InProcess, n: usize, round_robin: bool) -> anchorage::channel::Channel {
    let target =
        if n == 1 { "pass:///inproc:1".to_owned() } else { format!("pass:///inproc:1#{n}") };
    let mut builder = anchorage::channel::Channel::builder(target).connector(server.clone());
    if round_robin {
        builder = builder.default_service_config(ROUND_ROBIN).expect("the round_robin config");
    }
    builder.build().expect("an in-process channel")
}

/// A tonic `Channel` over one connection to `server`.
pub async fn tonic(server: &InProcess) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://inproc:1")
        .connect_with_connector(server.tonic_connector())
        .await
        .expect("a tonic channel")
}

/// An Echo server reached through in-memory pipes; every connect makes a new connection.
#[derive(Debug, Clone)]
pub struct InProcess {
    accept: mpsc::Sender<io::Result<DuplexStream>>,
    connections: Arc<AtomicU64>,
}

impl InProcess {
    /// Starts the server on the current tokio runtime.
    pub fn start() -> Self {
        let (accept, incoming) = mpsc::channel(1024);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(Answer))
                .serve_with_incoming(ReceiverStream::new(incoming))
                .await
        });
        Self { accept, connections: Arc::new(AtomicU64::new(0)) }
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    async fn open(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        self.accept.send(Ok(server)).await.map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "in-process server stopped")
        })?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }

    /// A connector for tonic's `Endpoint::connect_with_connector`.
    pub fn tonic_connector(
        &self,
    ) -> impl tower::Service<
        http::Uri,
        Response = hyper_util::rt::TokioIo<DuplexStream>,
        Error = io::Error,
        Future = impl Future<Output = io::Result<hyper_util::rt::TokioIo<DuplexStream>>> + Send,
    > + Clone
    + Send
    + 'static {
        let server = self.clone();
        tower::service_fn(move |_: http::Uri| {
            let server = server.clone();
            async move { server.open().await.map(hyper_util::rt::TokioIo::new) }
        })
    }
}

impl Connector for InProcess {
    fn connect(&self, _addr: &str) -> ConnectFuture {
        let server = self.clone();
        Box::pin(async move { server.open().await.map(|io| Box::new(io) as BoxedIo) })
    }
}

/// Answers every Echo with its message.
#[derive(Debug)]
struct Answer;

#[tonic::async_trait]
impl Echo for Answer {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let message = request.into_inner().message;
        Ok(tonic::Response::new(EchoResponse { message, ..Default::default() }))
    }

    async fn stats(
        &self,
        _: tonic::Request<StatsRequest>,
    ) -> Result<tonic::Response<StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(StatsResponse::default()))
    }
}
