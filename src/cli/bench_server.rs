//! The neutral server of `anchorage bench`: a plain tonic `Echo` server (the generated
//! `EchoServer`, not the instrumented one) in a separate process, started by re-executing the
//! running binary with the hidden `bench-server` subcommand.
//!
//! Protocol: the server binds two loopback listeners on free ports, the Echo service and a
//! counter, and prints `<echo port> <counter port>` as its first stdout line. Each connection to
//! the counter port receives one line, `<accepted> <open>`: the Echo connections accepted so
//! far and those still open, and is closed; a reader takes the difference of two readings to
//! count the connections made between them. The server exits when its stdin closes, so it never outlives the bench that started it.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anchorage::pb::echo_server::{Echo, EchoServer};
use anchorage::pb::{EchoRequest, EchoResponse, StatsRequest, StatsResponse};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Connected;

use super::common::print_line;

/// How long the bench waits for the server's first line, and for one counter reading.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of the hidden `anchorage bench-server`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {}

/// An `Echo` that answers with the request's message and nothing else.
#[derive(Debug)]
struct PlainEcho;

#[tonic::async_trait]
impl Echo for PlainEcho {
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
        Err(tonic::Status::unimplemented("stats: the bench server keeps no statistics"))
    }
}

/// Runs the server until stdin closes.
pub(crate) fn run_server(_: ServerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(serve());
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let bind = |what: &'static str| async move {
        TcpListener::bind(loopback).await.map_err(|e| format!("{what} listener: {e}"))
    };
    let (echo, counter) = (bind("echo").await?, bind("counter").await?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
    print_line(&format!("{} {}", port(&echo)?, port(&counter)?))?;

    let counts = Arc::new(Counts::default());
    let counted = counts.clone();
    let incoming = TcpListenerStream::new(echo).filter_map(move |stream| {
        // A failed accept (out of descriptors, say) is skipped, not fatal: the bench sees the
        // missing connection in the count.
        let stream = stream.ok()?;
        let _ = stream.set_nodelay(true);
        Some(Ok::<_, std::io::Error>(CountedStream::new(stream, counted.clone())))
    });
    let server = tonic::transport::Server::builder()
        .add_service(EchoServer::new(PlainEcho))
        .serve_with_incoming(incoming);
    let counting = async move {
        while let Ok((mut stream, _)) = counter.accept().await {
            let accepted = counts.accepted.load(Ordering::Relaxed);
            let line = format!("{accepted} {}\n", counts.open.load(Ordering::Relaxed));
            let _ = stream.write_all(line.as_bytes()).await;
        }
    };
    let stdin_closed = async {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut sink).await;
    };
    tokio::select! {
        biased;
        () = stdin_closed => Ok(()),
        served = server => served.map_err(|e| format!("echo server: {e}")),
        () = counting => Err("counter listener failed".to_owned()),
    }
}

/// The running server process; dropping it closes the server's stdin and reaps it.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The Echo service's port on 127.0.0.1.
    pub(crate) port: u16,
    /// The counter's port on 127.0.0.1.
    pub(crate) counter_port: u16,
}

impl ServerProcess {
    /// Starts `<this binary> bench-server` and reads its ports.
    ///
    /// # Errors
    /// A message starting with `server:` when the binary cannot be found or started, or prints
    /// no ports within 10 s.
    pub(crate) fn spawn() -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("server: no path to myself: {e}"))?;
        let mut child = Command::new(&exe)
            .arg("bench-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("server: cannot start {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        // Built now so that every early return below stops the child.
        let mut process = Self { child, stdin, port: 0, counter_port: 0 };
        let stdout = stdout.ok_or("server: its stdout was not captured")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match rx.recv_timeout(SERVER_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("server: cannot read its ports: {e}")),
            Err(_) => return Err("server: printed no ports within 10 s".to_owned()),
        };
        let ports: Vec<u16> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [port, counter_port] = ports[..] else {
            return Err(format!("server: expected two ports, got {:?}", line.trim()));
        };
        (process.port, process.counter_port) = (port, counter_port);
        Ok(process)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..50 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads how many Echo connections the server on `counter_port` has accepted so far.
///
/// # Errors
/// A message starting with `server counter:` when it cannot be reached or read in 10 s.
pub(crate) async fn accepted(counter_port: u16) -> Result<u64, String> {
    counts(counter_port).await.map(|(accepted, _)| accepted)
}

/// Reads how many Echo connections the server on `counter_port` has accepted so far, and how
/// many of them are still open.
///
/// # Errors
/// A message starting with `server counter:` when it cannot be reached or read in 10 s.
pub(crate) async fn counts(counter_port: u16) -> Result<(u64, u64), String> {
    let read = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, counter_port)).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(SERVER_TIMEOUT, read)
        .await
        .map_err(|_| "server counter: no answer within 10 s".to_owned())?
        .map_err(|e| format!("server counter: {e}"))?;
    let numbers: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match numbers[..] {
        [accepted, open] => Ok((accepted, open)),
        _ => Err(format!("server counter: not two counts: {:?}", text.trim())),
    }
}

/// The server's connection counts.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    open: AtomicU64,
}

/// An accepted connection that counts itself open until the server drops it.
#[derive(Debug)]
struct CountedStream {
    stream: TcpStream,
    counts: Arc<Counts>,
}

impl CountedStream {
    fn new(stream: TcpStream, counts: Arc<Counts>) -> Self {
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        Self { stream, counts }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for CountedStream {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
