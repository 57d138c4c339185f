//! `ext-authz`: parse config → init tracing → serve until SIGTERM/SIGINT → drain → exit.
//!
//! Errors policy: `anyhow` only here; the library returns `thiserror` enums. Exit codes:
//! 0 after a clean shutdown or `--check-config`, 64 for bad configuration or keys, 1 when
//! serving fails (e.g. the port is taken).

use std::process::ExitCode;

use anyhow::Context as _;
use ext_authz::config::{self, Config, EXIT_CONFIG};

fn main() -> ExitCode {
    // Bad flags: one line on stderr, exit 64; --help/--version: exit 0.
    let config: Config = edge_process::parse_or_exit();
    let ring = match config.load() {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("ext-authz: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.check_config {
        println!("{}", config::summary(&config, &ring));
        return ExitCode::SUCCESS;
    }
    edge_process::telemetry::init(config.log_format, "ext-authz");
    let served = serve(&config, ring);
    edge_process::telemetry::shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ext-authz failed");
            eprintln!("ext-authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: &Config, ring: auth_token::Keyring) -> anyhow::Result<()> {
    let workers = config.effective_worker_threads();
    // Why: with one worker (a 1-CPU sidecar, or a process pinned to one core) a current-thread
    // runtime serves every connection on the thread that polls the sockets: no run-queue
    // hand-offs or cross-thread wake-ups (see BENCHMARKS.md for the CPU per check of both).
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(ext_authz::server::run(config, ring))?;
    Ok(())
}
