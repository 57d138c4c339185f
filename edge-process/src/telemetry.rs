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

/// Longest `x-request-id` put into a log line (Envoy's are 36-byte UUIDs).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The `x-request-id` header value to log as `request_id`, or `""`: every service logs the id
/// Envoy assigned, so one request greps out of Envoy's access log and every service's lines.
/// Why bounded and visible ASCII only: a client that reaches a service directly chooses the
/// header, and must not forge log lines or fill the log with it.
pub fn request_id(value: Option<&[u8]>) -> &str {
    value
        .filter(|v| v.len() <= MAX_REQUEST_ID_LEN && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_kept_only_when_short_and_printable() {
        let uuid = "3f0c2a1e-9b7d-4c55-8e21-0a6b1c2d3e4f";
        assert_eq!(request_id(Some(uuid.as_bytes())), uuid);
        assert_eq!(request_id(None), "");
        assert_eq!(request_id(Some(b"a\nlevel=ERROR forged")), "");
        assert_eq!(request_id(Some(b"with space")), "");
        assert_eq!(request_id(Some("é".as_bytes())), "");
        let max = "x".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id(Some(max.as_bytes())), max);
        assert_eq!(request_id(Some(format!("{max}x").as_bytes())), "");
    }
}
