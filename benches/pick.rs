//! The per-RPC cost of the channel, without a network.
//!
//! - `pick/round_robin/N`: one pick (the current picker, round_robin's choice, the READY
//!   connection's sender) over N READY subchannels, on one thread.
//! - `pick_2_threads/round_robin/N`: the same with two threads picking at once; the time is per
//!   pick per thread, so equal numbers mean the threads do not slow each other down.
//! - `rpc/*`: one unary Echo RPC end to end through an in-process server: anchorage pick_first
//!   over one connection and round_robin over four, against tonic's `Channel` over the same
//!   in-process connection.
//!
//! Run with `cargo bench --bench pick`.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anchorage::channel::Channel;
use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "support/inproc.rs"]
mod inproc;

const METHOD: &str = "/anchorage.echo.v1.Echo/Echo";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A round_robin channel over `n` in-process connections, returned once all `n` are READY
/// (every one of them is picked).
fn ready_round_robin(rt: &tokio::runtime::Runtime, n: usize) -> Channel {
    rt.block_on(async {
        let server = inproc::InProcess::start();
        let channel = inproc::anchorage(&server, n, true);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let picked: BTreeSet<_> =
                (0..2 * n).filter_map(|_| channel.pick_for_benchmark(METHOD)).collect();
            if picked.len() == n {
                return channel;
            }
            assert!(Instant::now() < deadline, "only {} of {n} subchannels READY", picked.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn pick(c: &mut Criterion) {
    let rt = runtime();
    let mut one = c.benchmark_group("pick/round_robin");
    let channels: Vec<_> = [1, 4, 64, 1024].map(|n| (n, ready_round_robin(&rt, n))).into();
    for (n, channel) in &channels {
        one.bench_with_input(BenchmarkId::from_parameter(n), channel, |b, channel| {
            b.iter(|| channel.pick_for_benchmark(METHOD).expect("a READY subchannel"))
        });
    }
    one.finish();
    let mut two = c.benchmark_group("pick_2_threads/round_robin");
    for (n, channel) in &channels {
        two.bench_with_input(BenchmarkId::from_parameter(n), channel, |b, channel| {
            b.iter_custom(|iters| contended(channel, iters))
        });
    }
    two.finish();
}

/// Two threads each pick `iters` times at once; the wall time of the slower one.
fn contended(channel: &Channel, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(2));
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let start = start.clone();
                scope.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(channel.pick_for_benchmark(METHOD));
                    }
                    began.elapsed()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("picking thread")).max().unwrap_or_default()
    })
}

fn rpc(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rpc");
    let (tonic, pick_first, round_robin) = rt.block_on(async {
        let server = inproc::InProcess::start();
        let tonic = inproc::tonic(&server).await;
        let pick_first = inproc::anchorage(&server, 1, false);
        let round_robin = inproc::anchorage(&server, 4, true);
        (EchoClient::new(tonic), EchoClient::new(pick_first), EchoClient::new(round_robin))
    });
    group.bench_function("tonic-1", |b| b.iter_custom(|iters| unary(&rt, &tonic, iters)));
    group.bench_function("anchorage-pf-1", |b| {
        b.iter_custom(|iters| unary(&rt, &pick_first, iters))
    });
    group.bench_function("anchorage-rr-4", |b| {
        b.iter_custom(|iters| unary(&rt, &round_robin, iters))
    });
    group.finish();
}

/// `iters` unary RPCs one after another.
fn unary<T>(rt: &tokio::runtime::Runtime, client: &EchoClient<T>, iters: u64) -> Duration
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut client = client.clone();
    rt.block_on(async move {
        let began = Instant::now();
        for _ in 0..iters {
            let request = EchoRequest { message: "ping".into(), ..Default::default() };
            client.echo(request).await.expect("echo");
        }
        began.elapsed()
    })
}

criterion_group!(benches, pick, rpc);
criterion_main!(benches);
