//! The instrumented server answers clients of any proto: the health check says SERVING, any
//! other unary method gets an empty message, and every such RPC is recorded by method.

mod support;

use anchorage::server::HEALTH_CHECK_METHOD;
use http::uri::PathAndQuery;
use support::TestServer;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// A response type of some other service the server knows nothing about.
#[derive(Clone, PartialEq, prost::Message)]
struct TagList {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(int32, tag = "2")]
    total: i32,
}

async fn call<Req, Resp>(addr: std::net::SocketAddr, path: &'static str, request: Req) -> Resp
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the test server");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec)
        .await
        .unwrap_or_else(|status| panic!("{path} must succeed, got {status:?}"))
        .into_inner()
}

#[tokio::test]
async fn the_health_check_answers_serving() {
    let server = TestServer::start("a").await;
    let request = HealthCheckRequest { service: String::new() };
    let reply: HealthCheckResponse = call(server.addr, HEALTH_CHECK_METHOD, request).await;
    assert_eq!(reply.status, 1, "the health check must answer SERVING (1)");
}

#[tokio::test]
async fn any_other_unary_method_answers_an_empty_message_and_is_recorded_by_name() {
    let server = TestServer::start("a").await;
    for _ in 0..2 {
        let reply: TagList = call(server.addr, "/api.TagService/All", TagList::default()).await;
        assert_eq!(reply, TagList::default(), "the reply must decode as the default message");
    }
    let stats = server.stats();
    let methods: Vec<_> = stats.connections.iter().flat_map(|c| c.methods.clone()).collect();
    assert_eq!(
        methods,
        [("/api.TagService/All".to_owned(), 1), ("/api.TagService/All".to_owned(), 1)]
    );
    assert_eq!(stats.rpcs, 2, "fallback RPCs must count like Echo's");
}
