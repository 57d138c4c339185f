//! login-service: `POST /login` turns Basic credentials (e-mail + password, checked against
//! argon2id hashes in MySQL or SQLite) into the access tokens ext-authz accepts, with account
//! lockout and per-address rate limiting; `POST /token` rotates refresh tokens; the same binary
//! administers accounts.
//!
//! Entry points: [`cli::run`] (process), [`server::build_state`] + [`server::serve`] (tests and
//! embedding), [`routes::router`] (the HTTP API), [`login::authenticate`] (the login decision
//! without HTTP).
//!
//! Layers, each importing only the ones below it (no module imports a higher one):
//! 1. [`cli`], the process: runs the [`config::Task`] the command line resolves to;
//! 2. [`server`] (state, listener, drain) over [`routes`] (HTTP only: request in, domain call,
//!    response out), [`state`] (what handlers share) and [`error`] (each failure mapped once to
//!    an HTTP answer);
//! 3. [`login`], the login decision, and [`config`], flags and environment validated into
//!    settings;
//! 4. queries and rules: [`refresh`] (refresh-token families, over [`revocations`]),
//!    [`users`], [`revocations`] (with [`feed`], the feed's watcher), [`lockout`], [`password`],
//!    [`credentials`], [`metrics`], over [`db`] and [`schema`].
//!
//! Log setup, signals, duration flags and the exit code of a bad command line come from the
//! shared `edge_process` crate.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod feed;
pub mod lockout;
pub mod login;
pub mod metrics;
pub mod password;
pub mod refresh;
pub mod revocations;
pub mod routes;
pub mod schema;
pub mod server;
pub mod state;
pub mod users;
