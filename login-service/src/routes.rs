//! The HTTP API: `POST /login`, `POST /logout` and `GET /revocations` (in
//! [`crate::revocations`]), `GET /healthz`, `GET /readyz`, `GET /metrics`, and the layers
//! around them (body/header limits, timeout, JSON errors for everything).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ipnet::IpNet;
use secrecy::SecretString;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{Span, field, info, instrument, warn};

use crate::config::Settings;
use crate::credentials::{CredentialsError, parse_basic};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::lockout::{self, Keys, Kind, MAX_USER_ID_BYTES, retry_after_secs};
use crate::metrics::Metrics;
use crate::password::{Hasher, PasswordError, Verification};
use crate::users::{self, User, normalize_email};

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    /// Database pool.
    pub db: Db,
    /// Password hashing front end.
    pub hasher: Hasher,
    /// Validated settings (keys, issuer, policies, limits).
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// Test hook, unset in production: holds every login between its password check and its
    /// success write, so an integration test can change the account inside that window.
    #[doc(hidden)]
    pub pause_after_verify: OnceLock<Arc<LoginPause>>,
}

/// A rendezvous for [`AppState::pause_after_verify`]: the login signals `reached`, then waits
/// for a permit on `resume`.
#[doc(hidden)]
#[derive(Debug)]
pub struct LoginPause {
    /// Notified (one permit stored) when a login reaches the pause.
    pub reached: tokio::sync::Notify,
    /// One permit lets one paused login go on.
    pub resume: tokio::sync::Semaphore,
}

impl Default for LoginPause {
    fn default() -> Self {
        Self {
            reached: tokio::sync::Notify::new(),
            resume: tokio::sync::Semaphore::new(0),
        }
    }
}

impl AppState {
    /// State for `settings` over `db` (computes the dummy hash).
    pub fn new(settings: Settings, db: Db) -> Result<Self, PasswordError> {
        let hasher = Hasher::new(settings.hash_params.clone(), settings.hash_concurrency)?;
        Ok(Self {
            db,
            hasher,
            metrics: Metrics::new(),
            pause_after_verify: OnceLock::new(),
            settings,
        })
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        warn!(error = %e, "database error");
        ApiError::DatabaseUnavailable
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        warn!(error = %e, "password hashing failed");
        ApiError::Internal
    }
}

/// The application router with all layers.
pub fn router(state: Arc<AppState>) -> Router {
    let s = &state.settings;
    let max_header_bytes = s.max_header_bytes;
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(crate::revocations::logout))
        .route("/revocations", get(crate::revocations::feed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

/// The client address: the TCP peer, unless the peer is a trusted proxy (Envoy); then the
/// rightmost `X-Forwarded-For` entry, the address Envoy saw (it appends it with
/// `use_remote_address: true` and `xff_num_trusted_hops: 0`).
///
/// Why not trust every peer: a client that reaches the service directly would choose its own
/// address, and with it its own rate-limit and lockout keys.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').map(str::trim).find(|s| !s.is_empty()))
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map_or(peer, |ip| ip.to_canonical())
}

fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            let mut text = false;
            for range in accept.split(',') {
                let media = range.split(';').next().unwrap_or("").trim();
                if media.eq_ignore_ascii_case("application/json") {
                    return false;
                }
                text |= media.eq_ignore_ascii_case("text/plain");
            }
            text
        })
}

#[instrument(skip_all, fields(client = field::Empty, user_id = field::Empty, outcome = field::Empty))]
async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.login_started();
    let result = authenticate(&state, &headers, peer.ip()).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => e.outcome(),
    };
    Span::current().record("outcome", outcome);
    state.metrics.observe_login(outcome, started.elapsed());
    match result {
        Ok(issued) => {
            info!("login succeeded");
            let mut resp = if wants_text(&headers) {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    issued.token,
                )
                    .into_response()
            } else {
                Json(serde_json::json!({
                    "access_token": issued.token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                }))
                .into_response()
            };
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            info!("login refused");
            e.into_response()
        }
    }
}

/// The login decision: credentials → user-id size → lookup and counters → lock → password →
/// conditional success write → token.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<auth_token::Issued, ApiError> {
    let s = &state.settings;
    let creds = parse_basic(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
    .map_err(|e| match e {
        CredentialsError::Missing => ApiError::MissingCredentials,
        CredentialsError::Malformed => ApiError::MalformedCredentials,
    })?;
    // Why before anything else: no e-mail is longer than 255 bytes, and an absurd user-id must
    // cost neither a hash nor a database row.
    if creds.email.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::UserIdTooLong);
    }
    let ip = client_ip(headers, peer, &s.trusted_proxies);
    Span::current().record("client", field::display(ip));

    // An e-mail that cannot be valid cannot have an account: treated exactly like an unknown one,
    // under the same counters.
    let email = normalize_email(&creds.email).ok();
    let keys = Keys::new(
        email
            .as_deref()
            .unwrap_or(&creds.email.trim().to_lowercase()),
        ip,
    );
    let policies = s.lockout;

    // One round trip for every e-mail, known or not: the row, the user-wide revocation cutoff
    // (a newer one at the success write means the account was revoked while this login was in
    // flight) and the lockout counters.
    let now_s = crate::revocations::now_secs();
    let k = keys.clone();
    let (user, cutoff, lock) = state
        .db
        .run(move |c| {
            let user = match email {
                Some(e) => users::find_by_email(c, &e)?,
                None => None,
            };
            let sub = user
                .as_ref()
                .map_or(users::NO_ACCOUNT_ID, |u| u.id)
                .to_string();
            let cutoff = crate::revocations::user_cutoff(c, &sub, now_s)?;
            let lock = lockout::check(c, &k, &policies, lockout::now_ms())?;
            Ok((user, cutoff, lock))
        })
        .await?;
    if let Some(u) = &user {
        Span::current().record("user_id", u.id);
    }
    // Locked: 429 before looking at the password, for accounts and unknown e-mails alike.
    if let Some(lock) = lock {
        return Err(locked(lock));
    }

    let password = Arc::new(creds.password);
    let verdict = state
        .hasher
        .verify(user.as_ref().map(|u| u.password.clone()), password.clone())
        .await?;
    if let Some(pause) = state.pause_after_verify.get() {
        pause.reached.notify_one();
        if let Ok(permit) = pause.resume.acquire().await {
            permit.forget();
        }
    }

    match (user, verdict) {
        (Some(u), Verification::Match { needs_rehash }) if !u.disabled => {
            // Why first, before the rehash and `fresh_iat`: while any key is locked — including
            // a lock written by a concurrent guess while this one was hashed, on the address
            // too — the right password gets the 429 a wrong one gets, with nothing else done
            // first that would make it answer later (review finding A).
            if let Some(lock) = state
                .db
                .run(move |c| lockout::record_success(c, &keys, &policies, lockout::now_ms()))
                .await?
            {
                return Err(locked(lock));
            }
            let upgrade = if needs_rehash {
                rehash(state, password).await
            } else {
                None
            };
            // Why: the token's `iat` is fixed *before* the success write. A CLI change (disable,
            // passwd, remove) commits its row change and then revokes `iat <= T` with T read
            // after that commit; if our conditional write came first, `iat <= T` and the cut
            // revokes this token; if the change came first, the write finds the row changed and
            // no token is issued. (`fresh_iat` still dates it after a cut seen at lookup.)
            let iat = crate::revocations::fresh_iat(cutoff).await;
            let (id, verified) = (u.id, u.password.clone());
            let issued = state
                .db
                .run(move |c| {
                    if !users::record_success(c, id, &verified)? {
                        return Ok(false);
                    }
                    // A user-wide revocation newer than the one seen at lookup: the account
                    // was revoked while this login was in flight (`user revoke`, logout-all).
                    let now = crate::revocations::now_secs();
                    if crate::revocations::user_cutoff(c, &id.to_string(), now)? > cutoff {
                        return Ok(false);
                    }
                    if let Some(h) = upgrade
                        && users::upgrade_hash(c, id, &verified, &h)? == 1
                    {
                        info!(user_id = id, "password hash upgraded to current parameters");
                    }
                    Ok(true)
                })
                .await?;
            if !issued {
                info!(user_id = id, "account changed during the login; no token");
                return Err(ApiError::InvalidCredentials);
            }
            issue(s, &u, iat)
        }
        // Why one arm for all failures: a wrong password, an unknown e-mail and a disabled
        // account (right password or not) run the same statements on the same table, are
        // counted alike and get the same answer, so neither the body, nor `Retry-After`, nor
        // the timing, nor a later answer from the counters tells them apart (review finding D:
        // an uncounted right password of a disabled account showed in the address count).
        (user, verdict) => {
            let failure = state
                .db
                .run(move |c| lockout::record_failure(c, &keys, &policies, lockout::now_ms()))
                .await?;
            match failure {
                // Why: a concurrent guess locked a key while this one was being hashed;
                // answering 401 here would grant more guesses than the policy allows.
                lockout::Failure::AlreadyLocked(kind, wait) => Err(locked((kind, wait))),
                lockout::Failure::Counted => {
                    if let Some(u) = user.filter(|_| !matches!(verdict, Verification::Match { .. }))
                    {
                        info!(user_id = u.id, "wrong password");
                    }
                    Err(ApiError::InvalidCredentials)
                }
            }
        }
    }
}

/// The 429 for a lock: `rate_limited` for the client address, `account_locked` for the e-mail
/// (from anywhere or from this address).
fn locked((kind, wait): (Kind, std::time::Duration)) -> ApiError {
    let retry_after = retry_after_secs(wait);
    match kind {
        Kind::Source => ApiError::RateLimited { retry_after },
        Kind::Account => ApiError::Locked { retry_after },
    }
}

async fn rehash(state: &AppState, password: Arc<SecretString>) -> Option<String> {
    match state.hasher.hash(password).await {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "hash upgrade failed; keeping the old hash");
            None
        }
    }
}

fn issue(s: &Settings, u: &User, iat: u64) -> Result<auth_token::Issued, ApiError> {
    let key = s.keys.get(Some(&s.signing_kid)).ok_or(ApiError::Internal)?;
    s.issuer
        .issue(key, &u.id.to_string(), &u.email, &u.roles(), iat)
        .map_err(|e| {
            warn!(error = %e, "token signing failed");
            ApiError::Internal
        })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.ping().await?;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "database": state.db.url().backend(),
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.db.state()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let envoy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = [crate::config::parse_proxy("10.0.0.0/24").unwrap()];
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(&h, envoy, &trusted), envoy);
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        h.append("x-forwarded-for", "3.3.3.3, 4.4.4.4 ".parse().unwrap());
        assert_eq!(
            client_ip(&h, envoy, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
        // Nobody trusted (the default), or a peer outside the list: the peer is the client.
        assert_eq!(client_ip(&h, envoy, &[]), envoy);
        let direct: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(&h, direct, &trusted), direct);
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&bad, envoy, &trusted), envoy);
        // An IPv4-mapped peer matches an IPv4 entry.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&h, mapped, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_text(&h));
        h.insert(header::ACCEPT, "text/plain".parse().unwrap());
        assert!(wants_text(&h));
        h.insert(
            header::ACCEPT,
            "application/json, text/plain".parse().unwrap(),
        );
        assert!(!wants_text(&h));
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!wants_text(&h));
    }
}
