//! The end-to-end harness of the edge-authentication stack: one way to start the workspace's real
//! binaries (`ext-authz`, `login-service`, `demo-upstream`) behind a real Envoy running the
//! shipped `envoy/envoy.yaml` (or `envoy/envoy-uds.yaml`) unchanged, and to drive it from a
//! client's side of Envoy's port 8080.
//!
//! Used by the e2e tests (`tests/e2e/`), the soak driver (`examples/soak.rs`, `make soak`) and the
//! bench tool (`bench`, for [`procfs`]). Layers, each using only those above it in this list:
//!
//! - [`process`]: binaries, child processes with log files, readiness polling, SIGTERM;
//!   [`ports`]: the shipped config's fixed addresses; [`procfs`]: CPU and memory from `/proc`.
//!   The tests mint, forge and read tokens with `auth_token::testing` (a dev-dependency only:
//!   see [`stack::Stack::sign_issued`]).
//! - [`client`]: HTTP through Envoy and the assertions on what comes back.
//! - [`otlp`]: a test OpenTelemetry collector (OTLP/gRPC) receiving the stack's spans.
//! - [`stack`]: the four processes, login-service's database (`database`), the users and keys.
//! - [`variant`]: a second Envoy running a rendered variant of the shipped config, in front of a
//!   stack's services.
//! - `oidc_issuer` (feature `oidc-issuer`, on for the tests): the test OIDC issuer, discovery +
//!   JWKS on loopback, shared with ext-authz's integration tests.
//!
//! The shipped config has fixed ports, so one process runs one [`stack::Stack`] at a time (a
//! process-wide lock) and a stack refuses to start while a port is taken (for example by
//! `make run`); separate processes (test binaries, `make soak`) serialize with
//! `flock /tmp/edge-e2e.lock`. Binaries come from the target directory the running program was
//! built into: `cargo build --workspace --bins` first (`make test` does).
//!
//! Everything here panics with a clear message (and the failing process's log) rather than
//! returning errors: it is test machinery, and a failed start is a failed test.

pub mod client;
mod database;
#[cfg(feature = "oidc-issuer")]
pub mod oidc_issuer;
pub mod otlp;
pub mod ports;
pub mod process;
pub mod procfs;
pub mod stack;
pub mod variant;
