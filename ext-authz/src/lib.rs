//! Envoy's external authorization service for the edge: validates HS256 access tokens.
//!
//! Envoy's `ext_authz` filter calls `envoy.service.auth.v3.Authorization/Check` for every request;
//! this crate answers from the bearer token alone (no database), in microseconds.
//!
//! Layers, in the order of this list: a module imports only modules named before it (a lower
//! layer, or earlier in its own), so no import runs back up and none forms a circle.
//! 1. The pure decision, no I/O (no tokio, reqwest, metrics or server): [`issuers`] (external
//!    issuers' settings and claim mapping), [`jwks_refresh`] (when to fetch a JWKS again),
//!    [`policy`], [`revoked`] (the [`revoked::RevocationSet`]), [`token_cache`] (the
//!    byte-bounded cache of verified tokens, keyed by a salted SHA-256), [`external`] (the external
//!    issuers and their keys, verification of their tokens), [`check`] ([`check::decide`]:
//!    request headers, a per-route [`policy::Policy`], the keyring and the revoked set → a
//!    [`check::Decision`]; [`check::decide_with_external`] with external issuers; no tonic
//!    types). The feed's wire types and the bearer parser are
//!    `auth-token`'s.
//! 2. Shared state and its instruments: [`shutdown`], [`revocation`] (the active set behind an
//!    `ArcSwap` and the feed's freshness: "can decide?"), [`metrics`] (Prometheus), [`keys`]
//!    (the lock-free keyring and its `--keys-dir` reloader), [`jwks`] (external issuers' keys,
//!    lock-free, and their refresh requests).
//! 3. Around it: [`answer`] (a check's answer, and an allow's `CheckResponse` written by hand
//!    without building the generated message), [`wire`] (the `CheckRequest` as read off the
//!    wire: the strings a check reads, none copied, and its gRPC codec), [`service`] (the tonic `Authorization` service:
//!    `CheckRequest` → decision → `CheckResponse`, metrics and the decision log line), [`feed`] (the client of
//!    login-service's revocation feed, filling [`revocation`]), [`health`] (gRPC health and the
//!    watcher that drives it from [`revocation`]), [`jwks_fetch`] (the discovery/JWKS client
//!    and one refresh task per external issuer). Background tasks cannot fail; their errors
//!    (a feed request, a key reload) are their own, logged and counted where they happen.
//! 4. Wiring: [`config`] (flags; builds each module's settings, e.g. [`feed::FeedConfig`];
//!    log format, durations and signals come from the shared `edge_process` crate), [`server`] (binds TCP, the optional Unix socket and the
//!    metrics port, starts the tasks, drains on shutdown); `main` parses the config and calls
//!    it.
//!
//! Invariants: tokens and key bytes are never logged or put in errors; a deny is a
//! `CheckResponse` with a non-OK status, a gRPC error only means "cannot decide".

pub mod answer;
pub mod check;
pub mod config;
pub mod external;
pub mod feed;
pub mod health;
pub mod issuers;
pub mod jwks;
pub mod jwks_fetch;
pub mod jwks_refresh;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod revoked;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod token_cache;
pub mod wire;

pub use check::{Decision, Denial, Reason, Settings, decide};
pub use config::Config;
pub use policy::Policy;

#[cfg(test)]
mod test_support;
