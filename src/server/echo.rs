//! The `Echo` service handlers, which answer from and write to a [`ServerRecorder`].

use tonic::{Request, Response, Status};

use super::{ConnectionInfo, ServerRecorder};
use crate::pb::echo_server::{Echo, EchoServer};
use crate::pb::{EchoRequest, EchoResponse, StatsRequest, StatsResponse};

/// The method path of the `Echo` RPC, as recorded per connection.
pub const ECHO_METHOD: &str = "/anchorage.echo.v1.Echo/Echo";

/// The instrumented `Echo` service: echoes each message with the server's name and the id of the
/// connection that carried it, and counts the RPC against that connection.
///
/// `Stats` calls are not counted: reading the record does not change it, so a test can check
/// the counts over the same connections it measures.
#[derive(Debug, Clone)]
pub struct EchoService {
    recorder: ServerRecorder,
}

impl EchoService {
    /// A service that records into `recorder`.
    pub fn new(recorder: ServerRecorder) -> Self {
        Self { recorder }
    }

    /// The service wrapped for a tonic server.
    pub fn into_server(self) -> EchoServer<Self> {
        EchoServer::new(self)
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    /// # Errors
    /// The status `fail_with_code` asks for, when it is non-zero (the RPC is still recorded).
    /// `Internal` when the request did not come through a connection made by
    /// [`ServerRecorder::accept`], which is a wiring mistake in the server, not the client's.
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let Some(connection) = ConnectionInfo::of(&request) else {
            return Err(Status::internal(format!(
                "echo server {:?}: request carries no connection info; \
                 serve it through anchorage::server",
                self.recorder.name()
            )));
        };
        self.recorder.record_rpc(connection.id, ECHO_METHOD);
        let request = request.into_inner();
        if request.fail_with_code != 0 {
            let code = tonic::Code::from_i32(request.fail_with_code);
            let message = format!("echo server {:?}: failing as asked", self.recorder.name());
            return Err(Status::new(code, message));
        }
        Ok(Response::new(EchoResponse {
            message: request.message,
            server: self.recorder.name().to_owned(),
            connection: connection.id,
        }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(StatsResponse::from(&self.recorder.stats())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::echo_server::SERVICE_NAME;

    #[test]
    fn echo_method_path_names_the_generated_service() {
        assert_eq!(ECHO_METHOD, format!("/{SERVICE_NAME}/Echo"));
    }
}
