//! `bench`: the Rust side of `make bench` (driven by `scripts/bench.sh`).
//!
//! - `bench grpc`: open-loop gRPC load generator calling `Authorization/Check` directly over
//!   several HTTP/2 connections, at fixed request rates and then flat out ("max"). Latency is
//!   measured from each request's *intended* send time (no coordinated omission), into an HDR
//!   histogram; the server's CPU time per check comes from `/proc/<pid>/stat`.
//! - `bench argon2`: the time of one argon2id verification with login-service's parameters
//!   (m=19456 KiB, t=2, p=1), alone and on every core at once: the ceiling of `/login`.
//!
//! Every subcommand prints one JSON object per line on stdout (read by `bench/report.py`).

mod argon;
mod grpc;
mod proc_stat;

use std::process::ExitCode;

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
#[command(name = "bench", about = "Benchmark tools for the edge-auth workspace")]
enum Cli {
    /// Open-loop gRPC load generator for ext-authz's Check.
    Grpc(grpc::Args),
    /// Time argon2id verification with login-service's parameters.
    Argon2(argon::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse() {
        Cli::Grpc(args) => grpc::run(&args),
        Cli::Argon2(args) => argon::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
