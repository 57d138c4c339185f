//! End-to-end tests of the edge-authentication stack.
//!
//! This crate has no library code: the tests in `tests/e2e/` start the workspace's real binaries
//! (`ext-authz`, `login-service`, `demo-upstream`) and a real Envoy running the shipped
//! `envoy/*.yaml` unchanged, and talk to Envoy's port 8080 only. Build the binaries first:
//! `cargo build --workspace --bins && cargo test -p e2e`.
