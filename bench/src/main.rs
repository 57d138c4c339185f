//! `bench`: the Rust side of `make bench` (driven by `scripts/bench.sh`).
//!
//! - `bench grpc`: open-loop gRPC load generator calling `Authorization/Check` directly over
//!   several HTTP/2 connections, at fixed request rates and then flat out ("max"). Latency is
//!   measured from each request's *intended* send time (no coordinated omission), into an HDR
//!   histogram; the server's CPU time per check comes from `/proc/<pid>/stat`.
//! - `bench measure -- wrk ...`: runs one wrk measurement and adds the CPU time of chosen
//!   processes and the busy share of chosen cores while it ran.
//! - `bench argon2`: the time of one argon2id verification with login-service's parameters
//!   (m=19456 KiB, t=2, p=1), alone and on every core at once: the ceiling of `/login`.
//! - `bench criterion`: the estimates of criterion benchmarks already run.
//! - `bench otlp-sink`: an OTLP/gRPC trace collector that keeps what it gets, for measuring
//!   ext-authz with traces on (`scripts/bench-traces.sh`, issue #14).
//! - `bench mint`: one token signed with a key file (HS256, EdDSA, RS256), for the token-cache
//!   steps of `scripts/bench-cache.sh`.
//! - `bench feed-followers`: K long polls following login-service's revocation feed: the
//!   database statements and login-service CPU while idle, and logout → seen by the K-th follower
//!   (issue #15 §2b).
//! - `bench refresh`: closed-loop `POST /token` refreshes (issue #17) and login-service's CPU
//!   per refresh (no password hash on that path).
//! - `bench login-overload`: the sustainable `/login` rate, then twice it open-loop (issue #15
//!   §3): offered vs accepted rate, accepted latency, logins shed with 503, time-outs.
//! - `bench footprint`: a service's time from exec to ready and its idle RSS (issue #15 §5).
//! - `bench revocation-scale`: ext-authz replicas following a feed with 1M entries: SERVING
//!   time, RSS, logout → refusal, the check against no revocations (issue #15 §2).
//!
//! Every subcommand prints one JSON object per line on stdout (read by `bench/report.py`);
//! `/proc` is read through the e2e library's `procfs`, as the soak driver reads it.

mod argon;
mod criterion;
mod feed;
mod footprint;
mod grpc;
mod login_overload;
mod login_target;
mod measure;
mod mint;
mod otlp_sink;
mod refresh;
mod scale;

use std::process::ExitCode;

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
#[command(name = "bench", about = "Benchmark tools for the edge-auth workspace")]
enum Cli {
    /// Open-loop gRPC load generator for ext-authz's Check.
    Grpc(grpc::Args),
    /// Time argon2id verification with login-service's parameters.
    Argon2(argon::Args),
    /// Run one wrk measurement and add the CPU that processes and cores spent meanwhile.
    Measure(measure::Args),
    /// Print the estimates of criterion benchmarks already run.
    Criterion(criterion::Args),
    /// An OTLP/gRPC trace collector on a kernel-chosen port (printed as JSON), until killed.
    OtlpSink(otlp_sink::Args),
    /// Closed-loop `POST /token` refreshes against login-service, with its CPU per refresh.
    Refresh(refresh::Args),
    /// K followers of the revocation feed: idle database and CPU cost, logout → K-th follower.
    FeedFollowers(feed::Args),
    /// The sustainable `POST /login` rate, then that rate × `--factor` open-loop.
    LoginOverload(login_overload::Args),
    /// Print one access token signed with a key file (HS256, EdDSA or RS256).
    Mint(mint::Args),
    /// A service's time from exec to ready, and its idle RSS.
    Footprint(footprint::Args),
    /// ext-authz replicas on a feed with many revocations: SERVING, RSS, logout, check.
    RevocationScale(scale::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse() {
        Cli::Grpc(args) => grpc::run(&args),
        Cli::Argon2(args) => argon::run(&args),
        Cli::Measure(args) => measure::run(&args),
        Cli::Criterion(args) => criterion::run(&args),
        Cli::Refresh(args) => refresh::run(&args),
        Cli::OtlpSink(args) => otlp_sink::run(&args),
        Cli::Mint(args) => mint::run(&args),
        Cli::FeedFollowers(args) => feed::run(&args),
        Cli::LoginOverload(args) => login_overload::run(&args),
        Cli::Footprint(args) => footprint::run(&args),
        Cli::RevocationScale(args) => scale::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
