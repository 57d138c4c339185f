//! `POST /logout` (revoke the caller's token, or all of its user's) and `GET /revocations`, the
//! feed every ext-authz replica long-polls. The rows and their rules are
//! [`crate::revocations`]; this file reads the request, checks the bearer token and shapes the
//! answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tracing::{info, instrument};

use crate::config::user_revocation_ttl;
use crate::error::ApiError;
use crate::revocations::{
    LogoutOutcome, Revocation, TokenRef, logout_all, newest_id, now_secs, page, revoke_token,
};
use crate::state::AppState;

/// Longest long-poll the feed grants (also capped below `--request-timeout`).
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting long-poll looks for new rows.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Entries per feed response when the client does not say.
pub const DEFAULT_LIMIT: i64 = 1000;
/// Most entries per feed response.
pub const MAX_LIMIT: i64 = 10_000;

/// Query of `POST /logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutQuery {
    /// `true`: sign out everywhere (every token of the user issued until now).
    #[serde(default)]
    pub all: bool,
}

/// The bearer token of an `Authorization` value (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `POST /logout[?all=true]` with `Authorization: Bearer <token>`: revokes that token (or every
/// token of its user issued until now). 204 on success; 401 `missing_token`/`invalid_token`.
#[instrument(skip_all, fields(user_id = tracing::field::Empty, all = query.all))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Query(query): Query<LogoutQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    let token = bearer(&headers).ok_or(ApiError::MissingToken)?;
    let verifier = auth_token::Verifier::new(&auth_token::VerifierConfig {
        issuer: s.issuer.issuer.clone(),
        audience: s.issuer.audience.clone(),
        ..auth_token::VerifierConfig::default()
    });
    let claims = verifier
        .verify(token, &s.keys, auth_token::now_unix())
        .map_err(|e| {
            info!(reason = e.reason(), "logout refused");
            ApiError::InvalidToken
        })?;
    tracing::Span::current().record("user_id", claims.sub.as_str());
    let ttl = user_revocation_ttl(s.revocation.user_ttl, s.issuer.ttl);
    let all = query.all;
    let max_per_user = s.revocation.max_revoked_per_user;
    let outcome = state
        .db
        .run(move |c| {
            let token = TokenRef {
                sub: &claims.sub,
                jti: &claims.jti,
                iat: i64::try_from(claims.iat).unwrap_or(i64::MAX),
                exp: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            };
            if all {
                logout_all(c, &token, now_secs, ttl)
            } else {
                revoke_token(c, &token, now_secs, max_per_user, ttl)
            }
        })
        .await?;
    match outcome {
        // Why: Envoy's ext_authz refuses revoked tokens only while its feed is fresh; the
        // service itself must not let a stolen revoked token sign the victim out everywhere.
        LogoutOutcome::AlreadyRevoked if all => {
            info!("logout refused: token revoked");
            return Err(ApiError::RevokedToken);
        }
        // A plain logout stays idempotent (README): the token is revoked either way.
        LogoutOutcome::AlreadyRevoked => info!("logged out: token already revoked"),
        LogoutOutcome::AllSessions if !all => info!(
            max_per_user,
            "logged out: too many revoked tokens, every session of the user ended"
        ),
        _ => info!("logged out"),
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Query of `GET /revocations`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Cursor: entries with a larger id are returned; `0` = snapshot of everything unexpired.
    #[serde(default)]
    pub since: i64,
    /// Seconds to wait for a new entry when there is none (long poll); `0` answers at once
    /// (a follower's first request, the snapshot, uses `since=0&wait=0`).
    #[serde(default)]
    pub wait: u64,
    /// Most entries in this response (default 1000, at most 10000).
    pub limit: Option<i64>,
}

/// Body of `GET /revocations`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedPage {
    /// Pass as `since` next time: the last id returned (or `since` when none).
    pub cursor: i64,
    /// More entries are waiting: ask again at once.
    pub more: bool,
    /// The entries, in id order.
    pub revocations: Vec<Revocation>,
}

/// `GET /revocations?since=&wait=&limit=`: the feed (see [`crate::revocations`] and the README).
/// A `since` beyond the newest row answers 409 `cursor_ahead` (the database was replaced).
pub async fn feed(
    State(state): State<Arc<AppState>>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    if let Some(expected) = &s.revocation.feed_token {
        let given = bearer(&headers).ok_or(ApiError::MissingToken)?;
        if !bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
            return Err(ApiError::InvalidToken);
        }
    }
    let since = query.since.max(0);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    // Why: the whole request must end before `--request-timeout` turns it into a 408.
    let wait = Duration::from_secs(query.wait)
        .min(MAX_WAIT)
        .min(s.request_timeout.saturating_sub(Duration::from_secs(1)));
    if since > 0 {
        // Why: rows are never deleted down to nothing (the newest stays), so a cursor past the
        // newest id means the database was replaced; the follower must take a new snapshot.
        let newest = state.db.run(newest_id).await?;
        if newest.unwrap_or(0) < since {
            return Err(ApiError::CursorAhead);
        }
    }
    let deadline = Instant::now() + wait;
    loop {
        let now = now_secs();
        let mut rows = state
            .db
            .run(move |c| page(c, since, now, limit + 1))
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !rows.is_empty() || left.is_zero() {
            let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let cursor = rows.last().map_or(since, |r| r.id);
            let mut resp = Json(FeedPage {
                cursor,
                more,
                revocations: rows,
            })
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(resp);
        }
        tokio::time::sleep(left.min(POLL_INTERVAL)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer  tok ".parse().unwrap());
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
