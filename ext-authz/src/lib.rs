//! Envoy's external authorization service for the edge: validates HS256 access tokens.
//!
//! Envoy's `ext_authz` filter calls `envoy.service.auth.v3.Authorization/Check` for every request;
//! this crate answers from the bearer token alone (no database), in microseconds.
//!
//! Layout (the logic is pure, tonic is a thin shell around it):
//! - [`check`]: the decision — [`check::decide`] turns request headers, a per-route
//!   [`policy::Policy`] and a keyring into a [`check::Decision`]; no tonic types.
//! - [`service`]: the tonic `Authorization` impl converting `CheckRequest` → decision →
//!   `CheckResponse`, with metrics and the decision log line.
//! - [`keys`]: the lock-free ([`arc_swap`]) keyring and its reloader.
//! - [`revocation`]: the in-memory set of revoked tokens (lock-free, like the keyring) and the
//!   client of login-service's revocation feed; still no database.
//! - [`server`]: binds TCP, the optional Unix socket and the metrics port, serves gRPC
//!   health, and drains on shutdown.
//! - [`config`], [`metrics`], [`shutdown`], [`policy`]: what their names say. Logging setup,
//!   the OS signals and duration flags come from the shared `edge_process` crate.
//!
//! Invariants: tokens and key bytes are never logged or put in errors; a deny is a
//! `CheckResponse` with a non-OK status, a gRPC error only means "cannot decide".

pub mod check;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod service;
pub mod shutdown;

pub use check::{Decision, Denial, Reason, Settings, decide, decide_with_revocations};
pub use config::Config;
pub use policy::Policy;

#[cfg(test)]
mod test_support;
