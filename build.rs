//! Generates the gRPC code from `proto/` with `protox`, so a machine with only `cargo` builds
//! the crate: no system `protoc` is needed.
//!
//! - `proto/echo.proto`: the instrumented test service.
//! - `proto/grpc/health/v1/health.proto`: the standard health service, vendored rather than
//!   taken from `tonic-health` so the subchannel's Watch stream and the instrumented servers'
//!   `Health` service come from one generated copy built the same way as the rest.
//! - `proto/etcd/`: the subset of etcd's v3 API that the etcd client, the `etcd` resolver,
//!   registration and the in-memory etcd use (client and server code both).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/echo.proto",
        "proto/grpc/health/v1/health.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
    ];
    let imported = ["proto/etcd/mvccpb/kv.proto"];
    for proto in protos.iter().chain(&imported) {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
