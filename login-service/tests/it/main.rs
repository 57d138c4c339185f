//! Integration tests: the real HTTP server on a random port, against SQLite (temp file) and
//! MariaDB (a fresh database per test, dropped afterwards), plus the real binary for the CLI.

mod helpers;

mod cli;
mod decision;
mod documented_metrics;
mod errors;
mod feed_fanout;
mod inflight;
mod lockout;
mod lockout_claims;
mod log_secrets;
mod login;
mod memory;
mod ordering_lock;
mod outage;
mod overload;
mod races;
mod refresh;
mod refresh_attacks;
mod rehash;
mod revocation;
mod served;
mod token;
mod well_known;
