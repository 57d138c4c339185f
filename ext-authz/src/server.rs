//! Wiring, the top layer: gRPC (Authorization + grpc.health.v1) on TCP and optionally a Unix
//! socket, the metrics HTTP server, the background tasks (key reloader, revocation feed
//! follower and health watcher, none of which can fail: they run until shutdown), and graceful
//! shutdown. Nothing below imports this module; [`ServerError`] is about listeners only.
//!
//! Shutdown sequence (on SIGTERM/SIGINT or [`Running::shutdown`]): health flips to NOT_SERVING,
//! the listeners stop accepting, connections get an HTTP/2 GOAWAY and in-flight checks finish;
//! whatever is still running after `--shutdown-timeout` is dropped. The Unix socket file is
//! removed on the way out.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auth_token::{Keyring, Verifier};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::check::Settings;
use crate::config::Config;
use crate::external::{OwnJwks, TrustedIssuer};
use crate::feed;
use crate::health::{self, FEED_HEALTH_SERVICE, report_health};
use crate::jwks::JwksStore;
use crate::jwks_fetch::{self, JwksClient};
use crate::keys::{self, KeyStore};
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::service::{AuthzService, CheckServer};
use crate::shutdown::{self, ShutdownSignal, ShutdownTrigger};
use crate::token_cache::TokenCache;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TCP address could not be bound.
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        /// Which listener (`grpc` or `metrics`).
        what: &'static str,
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The Unix socket could not be created.
    #[error("cannot listen on unix socket {path}: {source}")]
    Uds {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The metrics server failed.
    #[error("metrics server failed: {0}")]
    Metrics(#[source] io::Error),
    /// A listener stopped although no shutdown was requested.
    #[error("a listener stopped unexpectedly")]
    Stopped,
    /// The HTTP client of external issuers could not be built.
    #[error("cannot build the JWKS client: {0}")]
    Jwks(#[source] crate::jwks_fetch::FetchError),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started server: its bound addresses and the handle to stop and await it.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC TCP address (the real port when configured with port 0).
    pub grpc_addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: SocketAddr,
    /// The Unix socket path, when serving on one.
    pub grpc_uds: Option<PathBuf>,
    trigger: ShutdownTrigger,
    supervisor: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Starts the graceful shutdown; [`Running::wait`] returns when it is done.
    pub fn shutdown(&self) {
        self.trigger.trigger();
    }

    /// A handle that can start the shutdown from elsewhere (a signal handler).
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Waits until the server stopped: after a shutdown and drain, or a server failure.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.supervisor.await?
    }
}

/// Binds every listener and starts serving with `ring`; returns once all listeners are bound.
///
/// Port 0 in `config` binds a free port; read the real one from [`Running`].
pub async fn start(config: &Config, ring: Keyring) -> Result<Running, ServerError> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_keys_loaded(ring.len());
    let store = Arc::new(KeyStore::new(ring));
    let store_files = Arc::clone(&store);
    let settings = Settings {
        verifier: Verifier::new(&config.verifier_config()),
        realm: config.realm.clone(),
        dry_run: config.dry_run,
        token_cache: TokenCache::new(config.token_cache_bytes, metrics.token_cache_stats())
            .map(Arc::new),
    };
    let mut service = AuthzService::new(
        Arc::clone(&store),
        settings,
        Arc::clone(&metrics),
        config.strip_authorization,
    );
    let feed = config.feed_config();
    let revocations = feed.as_ref().map(|feed| {
        Arc::new(
            Revocations::new(feed.grace, feed.fail_closed, config.leeway_secs)
                .with_startup_wait(feed.startup_wait),
        )
    });
    if let Some(revocations) = &revocations {
        service = service.with_revocations(Arc::clone(revocations));
    }
    // Checked by `Config::validate`; read again here (startup only).
    let issuers = config.external_issuers().unwrap_or_default();
    let own_urls = config.own_jwks_urls().unwrap_or_default();
    let jwks = (!issuers.is_empty() || !own_urls.is_empty()).then(|| {
        let trusted = issuers
            .into_iter()
            .map(|i| TrustedIssuer::new(i, config.leeway_secs, config.max_token_bytes))
            .collect();
        let own: Vec<OwnJwks> = own_urls
            .iter()
            .enumerate()
            .map(|(n, url)| OwnJwks::new(n, url))
            .collect();
        for o in &own {
            if o.url.starts_with("http:") {
                // Why allowed at all: login-service in the same cluster, reached by Service
                // name (issue #12); whoever can alter that traffic can substitute our keys.
                tracing::warn!(url = %o.url, "--jwks-url over plain http: only for in-cluster traffic you trust (keys fetched from it verify our tokens)");
            }
        }
        let store = JwksStore::with_own(trusted, own, config.jwks_startup_wait);
        for slot in 0..store.load().slots() {
            if let Some((_, label)) = store.load().source(slot) {
                metrics.register_issuer(&label);
            }
        }
        Arc::new(store)
    });
    if let Some(jwks) = &jwks {
        service = service.with_external_issuers(Arc::clone(jwks));
    }

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let grpc_tcp = bind("grpc", config.grpc_addr).await?;
    let grpc_addr = local_addr(&grpc_tcp, "grpc", config.grpc_addr)?;
    let metrics_tcp = bind("metrics", config.metrics_addr).await?;
    let metrics_addr = local_addr(&metrics_tcp, "metrics", config.metrics_addr)?;
    let uds_listener = config.grpc_uds.as_deref().map(bind_uds).transpose()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Keys are loaded (start takes a ring): can decide — unless revocations are followed, then
    // `health::watch` reports (after the first snapshot or the startup wait).
    // Why: right after a restart, a revoked token would be allowed.
    // Why external issuers too: until their first JWKS, their tokens would all be refused.
    report_health(&health_reporter, revocations.is_none() && jwks.is_none()).await;
    if revocations.is_some() {
        health_reporter
            .set_service_status(FEED_HEALTH_SERVICE, ServingStatus::NotServing)
            .await;
    }

    // `outer` is what callers pull; `stop` tells the listeners, after health flipped.
    let (trigger, outer) = shutdown::channel();
    let (stop_trigger, stop) = shutdown::channel();
    let mut tasks: JoinSet<Result<(), ServerError>> = JoinSet::new();

    let grpc = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(CheckServer::new(service));
    if let Some(listener) = uds_listener {
        let incoming = UnixListenerStream::new(listener);
        let (grpc, stop) = (grpc.clone(), stop.clone());
        tasks.spawn(async move {
            grpc.serve_with_incoming_shutdown(incoming, stopped(stop))
                .await
                .map_err(ServerError::from)
        });
    }
    let incoming = TcpIncoming::from(grpc_tcp).with_nodelay(Some(true));
    let grpc_stop = stop.clone();
    tasks.spawn(async move {
        grpc.serve_with_incoming_shutdown(incoming, stopped(grpc_stop))
            .await
            .map_err(ServerError::from)
    });

    let app = metrics_router(Arc::clone(&metrics));
    let metrics_stop = stop.clone();
    tasks.spawn(async move {
        axum::serve(metrics_tcp, app)
            .with_graceful_shutdown(stopped(metrics_stop))
            .await
            .map_err(ServerError::Metrics)
    });

    // Why a task only for a keys dir: every task in the set must run until shutdown; one that
    // ends early is taken as a failure (see `supervise`).
    if config.keys.keys_dir.is_some() {
        let reload = keys::reload_loop(
            store,
            config.keys.clone(),
            config.keys_reload_interval,
            Arc::clone(&metrics),
            stop.clone(),
        );
        tasks.spawn(async move {
            reload.await;
            Ok(())
        });
    }

    if let Some(store) = &jwks {
        // Checked by `Config::validate`; read again here (startup only).
        let ca = config.issuer_ca_pem().ok().flatten();
        let client =
            JwksClient::with_ca(config.fetch_limits(), ca.as_deref()).map_err(ServerError::Jwks)?;
        let own_from = store.load().own_slot(0);
        for slot in 0..store.load().slots() {
            let follow = jwks_fetch::follow_slot(
                slot,
                Arc::clone(store),
                client.clone(),
                Arc::clone(&metrics),
                config.refresh_config(),
                (slot >= own_from).then(|| Arc::clone(&store_files)),
                stop.clone(),
            );
            tasks.spawn(async move {
                follow.await;
                Ok(())
            });
        }
        // Without the feed, `health::watch` does not run: this task reports "can decide".
        let watch = jwks_fetch::watch_startup(
            Arc::clone(store),
            revocations.is_none().then(|| health_reporter.clone()),
            outer.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            watch.await;
            Ok(())
        });
    }

    if let (Some(revocations), Some(feed)) = (revocations, feed) {
        let follow = feed::follow(
            Arc::clone(&revocations),
            feed,
            Arc::clone(&metrics),
            stop.clone(),
        );
        tasks.spawn(async move {
            follow.await;
            Ok(())
        });
        let watch = health::watch(
            revocations,
            jwks.clone(),
            Arc::clone(&metrics),
            health_reporter.clone(),
            outer.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            watch.await;
            Ok(())
        });
    }

    let uds_path = config.grpc_uds.clone();
    let supervisor = tokio::spawn(supervise(
        tasks,
        outer,
        stop_trigger,
        health_reporter,
        config.shutdown_timeout,
        uds_path.clone(),
    ));
    Ok(Running {
        grpc_addr,
        metrics_addr,
        grpc_uds: uds_path,
        trigger,
        supervisor,
    })
}

/// Serves until SIGTERM/SIGINT, then drains: what `main` runs.
pub async fn run(config: &Config, ring: Keyring) -> Result<(), ServerError> {
    let running = start(config, ring).await?;
    tracing::info!(
        grpc_addr = %running.grpc_addr,
        grpc_uds = ?running.grpc_uds,
        metrics_addr = %running.metrics_addr,
        dry_run = config.dry_run,
        "ext-authz serving"
    );
    let trigger = running.trigger();
    tokio::spawn(async move {
        let signal = edge_process::shutdown_signal().await;
        tracing::info!(signal, "shutting down");
        trigger.trigger();
    });
    running.wait().await
}

/// Waits for the shutdown (or a failing server), flips health, stops listeners, drains.
async fn supervise(
    mut tasks: JoinSet<Result<(), ServerError>>,
    mut outer: ShutdownSignal,
    stop: ShutdownTrigger,
    health: tonic_health::server::HealthReporter,
    deadline: std::time::Duration,
    uds_path: Option<PathBuf>,
) -> Result<(), ServerError> {
    let mut result = Ok(());
    tokio::select! {
        () = outer.wait() => {}
        Some(early) = tasks.join_next() => {
            // A listener ended on its own: a failure even without an error. Shut the rest down.
            result = match early.map_err(ServerError::from).and_then(|r| r) {
                Ok(()) => Err(ServerError::Stopped),
                Err(e) => Err(e),
            };
        }
    }
    // Why: probes and Envoy health checks must see NOT_SERVING before connections go away.
    report_health(&health, false).await;
    stop.trigger();
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "server error while draining"),
                Err(e) => tracing::warn!(error = %e, "server task failed while draining"),
            }
        }
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!(
            timeout = ?deadline,
            "shutdown deadline passed; closing remaining connections"
        );
        tasks.abort_all();
    } else {
        tracing::info!("drained");
    }
    if let Some(path) = uds_path {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn stopped(mut stop: ShutdownSignal) {
    stop.wait().await;
}

fn local_addr(
    listener: &TcpListener,
    what: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Binds the Unix socket at `path`, replacing a stale socket file (never another kind of
/// file), and makes it group-accessible (0660) so Envoy in the same pod can connect.
fn bind_uds(path: &Path) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| ServerError::Uds {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

fn metrics_router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    )
}
