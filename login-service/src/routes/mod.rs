//! The HTTP API, one file per endpoint group: `POST /login` ([`login`]), `POST /token`
//! ([`token`], refresh tokens), `POST /logout` and
//! `GET /revocations` ([`revocation`]), `GET /healthz`, `GET /readyz`, `GET /metrics`
//! ([`ops`]), `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`
//! ([`well_known`]); and here the router with the layers around them (body/header limits, timeout,
//! JSON errors for everything).
//!
//! Handlers only translate HTTP: they extract headers, peer and query, call the domain modules
//! ([`crate::login`], [`crate::revocations`]) and map the outcome to a response through
//! [`ApiError`].

pub mod login;
pub mod ops;
pub mod revocation;
pub mod token;
pub mod well_known;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// The application router with all layers.
pub fn router(state: Arc<AppState>) -> Router {
    let s = &state.settings;
    let max_header_bytes = s.max_header_bytes;
    Router::new()
        .route("/login", post(login::login))
        .route("/token", post(token::token))
        .route("/logout", post(revocation::logout))
        .route("/revocations", get(revocation::feed))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/.well-known/jwks.json", get(well_known::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(well_known::openid_configuration),
        )
        .fallback(|| async { ApiError::NotFound })
        .layer(RequestBodyLimitLayer::new(s.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            s.request_timeout,
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            header_limit(max_header_bytes, req, next)
        }))
        .layer(middleware::from_fn(json_errors))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span every log line of one request is in: method, path (never the query) and Envoy's
/// `x-request-id` (bounded, [`edge_process::telemetry::request_id`]), so one request greps out
/// of Envoy's access log, ext-authz's and these logs.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let request_id = edge_process::telemetry::request_id(
        req.headers().get("x-request-id").map(|v| v.as_bytes()),
    );
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        request_id,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if edge_process::telemetry::tracing_enabled() {
        // Trace attributes (issue #14), recorded only when traces are exported so the log
        // lines stay as they were: the span name is the method (a client's path is
        // unbounded), the kind marks a server span.
        span.record("otel.name", req.method().as_str());
        span.record("otel.kind", "server");
        // Continues Envoy's trace (the W3C `traceparent` Envoy's tracer injected).
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        edge_process::telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    }
    span
}

/// Refuses requests whose headers exceed `limit` bytes in total (431).
async fn header_limit(limit: usize, req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limit {
        return ApiError::HeadersTooLarge.into_response();
    }
    next.run(req).await
}

/// Rewrites error responses that are not JSON yet (axum's 405, tower-http's 413/408, …) into the
/// `{"error","message"}` shape, keeping their other headers (e.g. `Allow`).
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let Some(err) = ApiError::from_status(status) else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    let mut new = err.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (k, v) in new.headers() {
        parts.headers.insert(k.clone(), v.clone());
    }
    parts.status = new.status();
    Response::from_parts(parts, std::mem::replace(new.body_mut(), Body::empty()))
}
