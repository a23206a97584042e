//! gRPC target strings (DESIGN §2.1).
