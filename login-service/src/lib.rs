//! login-service: `POST /login` turns Basic credentials (e-mail + password, checked against
//! argon2id hashes in MySQL or SQLite) into the access tokens ext-authz accepts, with account
//! lockout and per-address rate limiting; the same binary administers accounts.
//!
//! Entry points: [`cli::run`] (process), [`server::build_state`] + [`server::serve`] (tests and
//! embedding), [`routes::router`] (the HTTP API).

pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod lockout;
pub mod metrics;
pub mod password;
pub mod revocations;
pub mod routes;
pub mod schema;
pub mod server;
pub mod users;
