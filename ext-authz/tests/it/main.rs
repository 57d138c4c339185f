//! Integration tests: the real server (library `server::start` and the built binary) called with
//! tonic clients over TCP and a Unix socket.

mod binary;
mod documented_metrics;
mod feed_protocol;
mod grpc;
mod jwks_fetch;
mod jwks_tls;
mod oidc;
mod own_jwks;
mod revocation;
mod rotation;
mod support;
