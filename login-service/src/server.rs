//! Running the HTTP server: build the state, optionally migrate, serve until a shutdown signal,
//! then drain in-flight requests with a deadline.

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Settings;
use crate::db::Db;
use crate::routes::router;
use crate::state::AppState;

/// Builds the shared state: pool (lazy: the database may be down), migrations when asked for,
/// dummy hash.
pub fn build_state(settings: Settings) -> anyhow::Result<Arc<AppState>> {
    let db = Db::new(settings.db_url.clone(), &settings.pool)?;
    if settings.migrate {
        let applied = db.migrate()?;
        info!(count = applied.len(), ?applied, "migrations applied");
    }
    Ok(Arc::new(AppState::new(settings, db)?))
}

/// Serves on `listener` until `shutdown` completes, then gives in-flight requests, and logins
/// whose client has gone, `settings.shutdown_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let drain = state.settings.shutdown_timeout;
    let cleanup = tokio::spawn(crate::revocations::cleanup_loop(
        state.db.clone(),
        state.settings.revocation.cleanup_interval,
    ));
    let throttle_cleanup = tokio::spawn(crate::lockout::cleanup_loop(
        state.db.clone(),
        state.settings.lockout,
        state.settings.revocation.cleanup_interval,
    ));
    let refresh_cleanup = tokio::spawn(crate::refresh::cleanup_loop(
        state.db.clone(),
        state.settings.revocation.cleanup_interval,
    ));
    // One watcher of the feed's newest id for every waiting long poll (issue #15 §2b).
    let feed_watch = tokio::spawn(state.feed.clone().run(state.db.clone()));
    // Stops the cleanups and the watcher however `serve` ends.
    let _cleanup = (
        AbortOnDrop(cleanup),
        AbortOnDrop(throttle_cleanup),
        AbortOnDrop(refresh_cleanup),
        AbortOnDrop(feed_watch),
    );
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let feed = state.feed.clone();
    let logins = state.logins.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutdown requested; draining");
            // Waiting long polls answer now instead of holding the drain (review F4).
            feed.stop();
            let _ = stopping_tx.send(());
        })
        .into_future();
    // Why after the connections: a login whose client hung up runs on in its own task
    // (`routes::login`), and its failure must still be counted before the process exits.
    let drained = async move {
        server.await?;
        let all = u32::try_from(crate::state::MAX_LOGINS_IN_FLIGHT).unwrap_or(u32::MAX);
        let _ = logins.acquire_many(all).await;
        anyhow::Ok(())
    };
    tokio::select! {
        r = drained => r?,
        () = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(drain).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => warn!(?drain, "drain deadline reached; dropping remaining connections"),
    }
    Ok(())
}

/// `login-service serve`: bind, serve until a signal.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.http_addr;
    let backend = settings.db_url.backend();
    let signing_kid = settings.signing_kid.clone();
    // Migrations and the dummy hash block: keep them off the async workers.
    let state = tokio::task::spawn_blocking(move || build_state(settings)).await??;
    let listener = TcpListener::bind(addr).await?;
    // Why the bound address: with `--http-addr 127.0.0.1:0` (tests, tools) this line is how the
    // caller learns the port, which stays held by this process from the bind on.
    let addr = listener.local_addr()?;
    info!(%addr, backend, signing_kid, "login-service listening");
    let shutdown = async {
        edge_process::shutdown_signal().await;
    };
    serve(listener, state, shutdown).await
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
