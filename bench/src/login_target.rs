//! The login-service a login-side measurement talks to: the arguments `bench refresh` and
//! `bench login-overload` share, and the account's password.

use anyhow::Context as _;

/// login-service reached directly (not through Envoy), the account, and the process whose CPU
/// time is read.
#[derive(Debug, clap::Args)]
pub struct LoginTarget {
    /// login-service's base URL (directly, not through Envoy).
    #[arg(long)]
    pub url: String,
    /// The account to log in with; its password comes from `BENCH_PASSWORD`.
    #[arg(long)]
    pub email: String,
    /// login-service's pid, for its CPU time.
    #[arg(long)]
    pub server_pid: u32,
}

/// The bench account's password: from `BENCH_PASSWORD`, never a flag (it would show in `ps`).
pub fn password() -> anyhow::Result<String> {
    std::env::var("BENCH_PASSWORD").context("BENCH_PASSWORD is not set")
}
