//! The signals that stop an edge server: SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C).
//! What happens next (draining, deadlines) is each service's own business.

/// Resolves on the first SIGTERM or SIGINT, returning the signal's name for the log line.
///
/// If the SIGTERM handler cannot be installed it falls back to Ctrl-C alone rather than never
/// stopping.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
