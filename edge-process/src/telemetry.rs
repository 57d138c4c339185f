//! Logging setup for every edge binary: `tracing` to **stderr**, filtered by `RUST_LOG`
//! (default `info`), as text or as one flattened JSON object per line.
//!
//! Why stderr: login-service's CLI writes its data (`user list`) to stdout, so logs must not go
//! there, and one stream for both binaries means one log-shipper rule. Why flattened: log
//! pipelines query `message` and the event's fields at the top level (`request_id`, `sub`…),
//! not under a nested `fields` object.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Output format of the logs (`--log-format` / `LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// Installs the global subscriber writing to stderr; a second call is a no-op (tests may call
/// it repeatedly).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal; files and log collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
