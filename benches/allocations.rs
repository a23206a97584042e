//! Heap allocations per unary RPC, client and in-process server together, for tonic's
//! `Channel` and for anchorage's channel over the same in-process server: the difference is
//! what each client adds. Counted on a single-threaded runtime, so the numbers repeat exactly.
//!
//! Run with `cargo bench --bench allocations`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use anchorage::pb::EchoRequest;
use anchorage::pb::echo_client::EchoClient;

#[path = "support/inproc.rs"]
mod inproc;

/// Counts every allocation; the system allocator does the work.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RPCS: u64 = 2_000;

/// Allocations and bytes per RPC over `RPCS` RPCs, after as many to warm up.
async fn per_rpc<T>(mut client: EchoClient<T>) -> (f64, f64)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut run = async |n| {
        for _ in 0..n {
            let request = EchoRequest { message: "ping".into(), ..Default::default() };
            client.echo(request).await.expect("echo");
        }
    };
    run(RPCS).await;
    let (allocations, bytes) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    run(RPCS).await;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let bytes = BYTES.load(Ordering::Relaxed) - bytes;
    (allocations as f64 / RPCS as f64, bytes as f64 / RPCS as f64)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let server = inproc::InProcess::start();
        let tonic = inproc::tonic(&server).await;
        let pick_first = inproc::anchorage(&server, 1, false);
        let round_robin = inproc::anchorage(&server, 4, true);
        println!("allocations per unary RPC, client and in-process server ({RPCS} RPCs)");
        for (name, (allocations, bytes)) in [
            ("tonic-1", per_rpc(EchoClient::new(tonic)).await),
            ("anchorage-pf-1", per_rpc(EchoClient::new(pick_first)).await),
            ("anchorage-rr-4", per_rpc(EchoClient::new(round_robin)).await),
        ] {
            println!("{name:<16} {allocations:>7.1} allocations {bytes:>9.0} bytes");
        }
    });
}
