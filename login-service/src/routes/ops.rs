//! The operator's endpoints: `GET /healthz` (process alive), `GET /readyz` (database
//! reachable), `GET /metrics` (Prometheus).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: always 200 while the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 with the backend when `SELECT 1` succeeds, else 503.
pub async fn readyz(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.ping().await?;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "database": state.db.url().backend(),
    })))
}

/// `GET /metrics`: the OpenMetrics text of [`crate::metrics::Metrics`].
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state
        .metrics
        .observe_hasher(state.hasher.waiting(), state.hasher.verify_time());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.db.state()),
    )
}
