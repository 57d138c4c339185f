//! `POST /logout` (revoke the caller's token, or all of its user's) and `GET /revocations`, the
//! feed every ext-authz replica long-polls. The rows and their rules are
//! [`crate::revocations`]; this file reads the request, checks the bearer token and shapes the
//! answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auth_token::bearer::BearerError;
use auth_token::{FeedEntry, FeedPage, FeedQuery, feed};
use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tracing::{info, instrument};

use crate::config::user_revocation_ttl;
use crate::error::ApiError;
use crate::feed::Newest;
use crate::refresh;
use crate::revocations::{
    LogoutOutcome, TokenRef, logout_all, newest_id, now_secs, page, revoke_token,
};
use crate::state::AppState;

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
    // Followers waiting on this process see the row at once, not at the watcher's next read.
    state.feed.nudge();
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
///
/// A long poll (`wait > 0`) does not query the database while it waits: it subscribes to the
/// process's watcher ([`crate::feed`]) and, when the newest id passes what it has seen, reads the
/// page the polls woken by that id share ([`crate::feed::FeedWatch::shared_page`]: one query
/// for all of them); a poll at the newest id costs no query at all. A stale published id never makes a
/// wrong answer: 409 is only answered from a database read, and a poll trusting a stale newest id
/// (equal to its cursor) merely waits for the watcher's next read.
pub async fn feed(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    if wait.is_zero() {
        // A snapshot page or a plain read: as it always was, straight from the database.
        if since > 0 {
            cursor_check(&state, since).await?;
        }
        let rows = read_page(&state, since, limit).await?;
        return Ok(answer(rows, since, limit));
    }
    let deadline = tokio::time::Instant::now() + wait;
    // Why registered before the cursor check: the watcher starts reading now, so its first
    // value is on its way while this request checks the cursor.
    let mut waiting = state.feed.try_wait(peer.ip()).ok_or(ApiError::FeedBusy)?;
    let newest = *waiting.newest.borrow_and_update();
    // Why only below the cursor: a published id at or past the cursor proves the cursor is not
    // ahead (ids only grow within one database); below it, or unknown, the database decides.
    if since > 0 && !matches!(newest, Newest::Id(n) if n >= since) {
        cursor_check(&state, since).await?;
    }
    // Rows up to `seen` are known to hold nothing to serve (none, or only expired ones).
    let mut seen = since;
    let mut newest = *waiting.newest.borrow_and_update();
    loop {
        match newest {
            Newest::Id(n) if n <= seen => {
                // The database was replaced under a waiting poll: tell it now, not after `wait`.
                if n < since {
                    cursor_check(&state, since).await?;
                }
            }
            // New rows: one page query, shared with every poll woken by the same row.
            Newest::Id(n) => {
                let shared = state.feed.shared_page(since, limit, n);
                let rows = shared
                    .get_or_try_init(|| async {
                        let rows = read_page(&state, since, limit).await?;
                        Ok::<_, ApiError>(Arc::new(rows))
                    })
                    .await?;
                if !rows.is_empty() {
                    return Ok(answer(rows.as_ref().clone(), since, limit));
                }
                seen = seen.max(n);
            }
            // An unknown state: a page query of its own.
            Newest::Unknown | Newest::Failed => {
                let rows = read_page(&state, since, limit).await?;
                if !rows.is_empty() {
                    return Ok(answer(rows, since, limit));
                }
            }
        }
        let stopping = waiting.stopping();
        tokio::select! {
            changed = waiting.newest.changed() => {
                if changed.is_err() {
                    // The watcher's state is gone (shutting down): answer what is known.
                    return Ok(answer(Vec::new(), since, limit));
                }
                newest = *waiting.newest.borrow_and_update();
            }
            // The end of the wait, brought forward by a shutdown (review F4).
            () = async {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = stopping => {}
                }
            } => {
                // A newest id published as the wait ended is served, not answered "nothing new"
                // (review of F4: at a shutdown every poll ends at once).
                if waiting.newest.has_changed().unwrap_or(false) {
                    newest = *waiting.newest.borrow_and_update();
                    continue;
                }
                // "Nothing new" from memory only if the watcher was seen alive meanwhile
                // (review F1); else the database answers, as before the watcher existed.
                if waiting.watcher_read_since() {
                    return Ok(answer(Vec::new(), since, limit));
                }
                let rows = read_page(&state, since, limit).await?;
                return Ok(answer(rows, since, limit));
            }
        }
    }
}

/// Unexpired rows after `since`, one more than `limit` (the extra one says `more`).
async fn read_page(state: &AppState, since: i64, limit: i64) -> Result<Vec<FeedEntry>, ApiError> {
    Ok(state
        .db
        .run(move |c| page(c, since, now_secs(), limit + 1))
        .await?)
}

/// 409 `cursor_ahead` when `since` is beyond the newest row, read from the database (never from
/// the watcher's possibly stale value); the value read is shared with the watcher's waiters.
async fn cursor_check(state: &AppState, since: i64) -> Result<(), ApiError> {
    // Why: rows are never deleted down to nothing (the newest stays), so a cursor past the
    // newest id means the database was replaced; the follower must take a new snapshot.
    let newest = state.db.run(newest_id).await?.unwrap_or(0);
    state.feed.observe(newest);
    if newest < since {
        return Err(ApiError::CursorAhead);
    }
    Ok(())
}

/// One feed page from `rows` (at most `limit + 1` of them: one more says `more`).
fn answer(mut rows: Vec<FeedEntry>, since: i64, limit: i64) -> Response {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let cursor = rows.last().map_or(since, |r| r.id);
    let mut resp = Json(FeedPage {
        cursor,
        more,
        revocations: rows,
    })
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The body's cursor and `more` again, readable before the body (auth_token::feed).
    headers.insert(feed::CURSOR_HEADER, HeaderValue::from(cursor));
    headers.insert(
        feed::MORE_HEADER,
        HeaderValue::from_static(if more { "true" } else { "false" }),
    );
    resp
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
