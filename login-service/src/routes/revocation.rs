//! `POST /logout` (revoke the caller's token, or all of its user's) and `GET /revocations`, the
//! feed every ext-authz replica long-polls. The rows and their rules are
//! [`crate::revocations`]; this file reads the request, checks the bearer token and shapes the
//! answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_token::bearer::BearerError;
use auth_token::{FeedPage, FeedQuery};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tracing::{info, instrument};

use crate::config::user_revocation_ttl;
use crate::error::ApiError;
use crate::refresh;
use crate::revocations::{
    LogoutOutcome, TokenRef, logout_all, newest_id, now_secs, page, revoke_token,
};
use crate::state::AppState;

/// How often a waiting long-poll looks for new rows.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// Query of `POST /logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutQuery {
    /// `true`: sign out everywhere (every token of the user issued until now).
    #[serde(default)]
    pub all: bool,
}

/// The bearer token of the request, read by the one RFC 6750 parser both services use
/// ([`auth_token::bearer::parse`]): no header or another scheme is `missing_token`; a malformed
/// value — no token, characters outside `b64token`, a value that is not visible ASCII, or
/// several `Authorization` headers — is `invalid_token`, the answer a wrong token gets.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next();
    // Why: a second header is refused, not ignored, as a merged `Bearer a,Bearer b` is.
    if values.next().is_some() {
        return Err(ApiError::InvalidToken);
    }
    let value = value
        .map(|v| v.to_str().map_err(|_| ApiError::InvalidToken))
        .transpose()?;
    auth_token::bearer::parse(value).map_err(|e| match e {
        BearerError::Missing => ApiError::MissingToken,
        BearerError::Malformed => ApiError::InvalidToken,
    })
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
    let token = bearer(&headers)?;
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
            let outcome = if all {
                logout_all(c, &token, now_secs, ttl)?
            } else {
                revoke_token(c, &token, now_secs, max_per_user, ttl)?
            };
            // Why also when already revoked: logout ends the session (the refresh family the
            // token came with), and a repeated logout must still end it.
            // Every session ended (logout-all, or the per-user bound): every family too.
            // Why the family's other access tokens too (review M2): a thief who refreshed
            // earlier holds one, and once the family is ended its reuse can no longer be seen.
            match (outcome, claims.sub.parse::<i32>()) {
                (LogoutOutcome::AllSessions, Ok(id)) => {
                    refresh::end_user(c, id, now_secs())?;
                }
                _ if !all => {
                    refresh::end_family_of_access(c, &claims.jti, max_per_user, ttl)?;
                }
                _ => {}
            }
            Ok(outcome)
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

/// `GET /revocations?since=&wait=&limit=`: the feed (see [`crate::revocations`] and the README).
/// A `since` beyond the newest row answers 409 `cursor_ahead` (the database was replaced).
pub async fn feed(
    State(state): State<Arc<AppState>>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    if let Some(expected) = &s.revocation.feed_token {
        let given = bearer(&headers)?;
        if !bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
            return Err(ApiError::InvalidToken);
        }
    }
    let since = query.bounded_since();
    let limit = query.bounded_limit();
    // Why: the whole request must end before `--request-timeout` turns it into a 408.
    let wait = query
        .bounded_wait()
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
        fn code(h: &HeaderMap) -> Result<&str, &'static str> {
            bearer(h).map_err(|e| e.parts().1)
        }
        let mut h = HeaderMap::new();
        assert_eq!(code(&h), Err("missing_token"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(code(&h), Err("missing_token"));
        h.insert(header::AUTHORIZATION, "bearer  tok ".parse().unwrap());
        assert_eq!(code(&h), Ok("tok"));
        // Malformed (RFC 6750 `b64token`): the answer a wrong token gets.
        for bad in [
            "Bearer",
            "Bearer a b",
            "Bearer a,Bearer b",
            "Bearer \"tok\"",
        ] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(code(&h), Err("invalid_token"), "{bad:?}");
        }
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(code(&h), Err("invalid_token"), "two headers");
    }
}
