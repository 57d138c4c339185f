//! A tiny upstream for the local stack and the end-to-end tests.
//!
//! Every request on the main address — any method, any path — is answered `200` with a JSON echo
//! of what arrived ([`Echo`]), so a user can see the identity headers ext-authz added
//! (`x-auth-user-id`, `x-auth-email`, `x-auth-roles`) and Envoy's `x-request-id` and
//! `x-forwarded-for`. Because the main address echoes *everything*, the request counter lives on a
//! separate admin address (`GET /stats`), never reachable through Envoy: the e2e tests use it to
//! prove that requests denied at the edge never reached the upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Json;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "demo-upstream", version, about)]
pub struct Config {
    /// Address of the echo server (what Envoy routes to).
    #[arg(long, env = "ADDR", default_value = "0.0.0.0:8000")]
    pub addr: SocketAddr,
    /// Optional admin address serving `GET /stats` (`{"requests": N}`); keep it on loopback.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Log format, as the services: `text` or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = edge_process::LogFormat::Text)]
    pub log_format: edge_process::LogFormat,
}

/// Requests served so far by the echo endpoint (the admin endpoint does not count).
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
}

impl Stats {
    /// Number of echo responses produced since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The JSON body of every echo response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Echo {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string without `?`; `null` when there is none.
    pub query: Option<String>,
    /// Request headers by lower-case name; repeated headers are joined with `", "`; values that
    /// are not valid UTF-8 are replaced lossily.
    pub headers: BTreeMap<String, String>,
}

impl Echo {
    /// Builds the echo of a request's head.
    pub fn of(method: &str, uri: &axum::http::Uri, headers: &HeaderMap) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            map.entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        Self {
            method: method.to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: map,
        }
    }
}

/// The echo application: every method and path answers [`Echo`] and counts in `stats`.
pub fn app(stats: Arc<Stats>) -> Router {
    Router::new().fallback(echo).with_state(stats)
}

/// The admin application: `GET /stats` answers `{"requests": N}`.
pub fn admin_app(stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/stats", get(stats_handler))
        .with_state(stats)
}

async fn echo(State(stats): State<Arc<Stats>>, request: Request) -> Json<Echo> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    // One line per request with Envoy's request id (never the query). Why debug: `make bench`
    // and `make soak` push thousands of requests a second through this echo.
    tracing::debug!(
        request_id = edge_process::telemetry::request_id(
            request.headers().get("x-request-id").map(|v| v.as_bytes())
        ),
        method = request.method().as_str(),
        path = request.uri().path(),
        "echo"
    );
    Json(Echo::of(
        request.method().as_str(),
        request.uri(),
        request.headers(),
    ))
}

async fn stats_handler(State(stats): State<Arc<Stats>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "requests": stats.requests() }))
}

/// Binds the configured addresses and serves until `shutdown` resolves, then drains in-flight
/// requests. Fails when an address cannot be bound.
pub async fn serve(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = Arc::new(Stats::default());
    let listener = TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "echo server listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin = match config.admin_addr {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %admin_listener.local_addr()?, "admin server listening");
            let mut rx = stop_rx.clone();
            let app = admin_app(stats.clone());
            Some(tokio::spawn(async move {
                axum::serve(admin_listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await
            }))
        }
        None => None,
    };

    let mut rx = stop_rx;
    let main = axum::serve(listener, app(stats)).with_graceful_shutdown(async move {
        let _ = rx.wait_for(|stop| *stop).await;
    });
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    main.await?;
    if let Some(admin) = admin {
        admin.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(router: Router, request: axum::http::Request<Body>) -> serde_json::Value {
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn echoes_any_method_and_path_and_counts() {
        let stats = Arc::new(Stats::default());
        let request = axum::http::Request::builder()
            .method("DELETE")
            .uri("/a/b?x=1&y=2")
            .header("x-auth-email", "demo@example.com")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .body(Body::empty())
            .unwrap();
        let body = call(app(stats.clone()), request).await;
        assert_eq!(
            body,
            serde_json::json!({
                "method": "DELETE",
                "path": "/a/b",
                "query": "x=1&y=2",
                "headers": {"x-auth-email": "demo@example.com", "x-multi": "one, two"},
            })
        );
        assert_eq!(stats.requests(), 1);

        let request = axum::http::Request::builder()
            .uri("/")
            .body(Body::empty())
            .unwrap();
        let body = call(app(stats.clone()), request).await;
        assert_eq!(body["query"], serde_json::Value::Null);
        assert_eq!(stats.requests(), 2);
    }

    #[tokio::test]
    async fn admin_stats_report_the_count_without_counting_themselves() {
        let stats = Arc::new(Stats::default());
        stats.requests.fetch_add(3, Ordering::Relaxed);
        let request = axum::http::Request::builder()
            .uri("/stats")
            .body(Body::empty())
            .unwrap();
        let body = call(admin_app(stats.clone()), request).await;
        assert_eq!(body, serde_json::json!({ "requests": 3 }));
        assert_eq!(stats.requests(), 3);
    }
}
