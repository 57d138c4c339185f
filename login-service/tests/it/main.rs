//! Integration tests: the real HTTP server on a random port, against SQLite (temp file) and
//! MariaDB (a fresh database per test, dropped afterwards), plus the real binary for the CLI.

mod helpers;

mod cli;
mod decision;
mod errors;
mod inflight;
mod lockout;
mod login;
mod memory;
mod outage;
mod races;
mod revocation;
mod token;
