//! End-to-end tests: the workspace's real binaries behind a real Envoy running the shipped
//! `envoy/envoy.yaml` (and `envoy/envoy-uds.yaml`) unchanged, driven through Envoy's port 8080.
//!
//! The stack comes from the `e2e` library ([`e2e::stack::Stack`]): the configs use fixed ports,
//! so tests that start a stack are serialized by a process-wide lock and fail fast when a port is
//! taken (for example by `make run`). Binaries come from the target directory this test binary
//! lives in; `make test` builds them first with `cargo build --workspace --bins`.

mod attacks;
mod config;
mod eddsa;
mod edge_errors;
mod faults;
mod feed;
mod flows;
mod jwks_url;
mod limits;
mod modes;
mod observability;
mod oidc;
mod outage;
mod overload;
mod revocation;
mod sessions;
mod tls;
mod traces;
mod uds;
