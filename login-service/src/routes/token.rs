//! `POST /token` (issue #17): the refresh-token grant of RFC 6749 §6. Reads the form, checks its
//! shape, and hands the token's hash to [`crate::refresh::rotate`]; a reused token ends its
//! family ([`crate::refresh::revoke_family`]). Errors are RFC 6749 §5.2 JSON ([`ApiError`]).
//! The refresh token is never logged, not even its hash.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tracing::{Span, field, info, instrument, warn};

use crate::config::user_revocation_ttl;
use crate::error::ApiError;
use crate::refresh::{self, Refused, RotateError, Rotation};
use crate::revocations::now_secs;
use crate::state::AppState;

/// The one grant `POST /token` serves.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// What a well-formed request carries.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The `refresh_token` parameter, as sent. Never log it.
    pub refresh_token: String,
}

/// Parses a `POST /token` request: `Content-Type: application/x-www-form-urlencoded` (any
/// parameters, e.g. `charset`), `grant_type=refresh_token`, `refresh_token=…`, no parameter
/// twice (RFC 6749 §3.2), other parameters ignored (`scope`, `client_id`: §3.3 allows no
/// wider scope, and our clients are public). The body is already bounded by `MAX_BODY_BYTES`.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::TokenRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut grant_type = None;
    let mut token = None;
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        // Why refuse repeats: two `refresh_token`s (or grant types) would make what is checked
        // and what is used depend on which one each layer picks.
        if seen.iter().any(|n| *n == name) {
            return Err(ApiError::TokenRequest("a parameter is repeated"));
        }
        seen.push(name.to_string());
        match &*name {
            "grant_type" => grant_type = Some(value.into_owned()),
            "refresh_token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        None | Some("") => return Err(ApiError::TokenRequest("grant_type is missing")),
        Some(GRANT_REFRESH_TOKEN) => {}
        Some(_) => return Err(ApiError::UnsupportedGrantType),
    }
    match token {
        Some(t) if !t.is_empty() => Ok(TokenRequest { refresh_token: t }),
        _ => Err(ApiError::TokenRequest("refresh_token is missing")),
    }
}

/// Why `POST /token` issued nothing: a reuse answers like any `invalid_grant`, but is counted
/// apart (`login_token_requests_total{outcome="reuse_detected"}`): it is the signal of a stolen
/// refresh token (or a client that refreshes concurrently).
#[derive(Debug)]
enum Denied {
    Reused,
    Refused(ApiError),
}

impl From<ApiError> for Denied {
    fn from(e: ApiError) -> Self {
        Self::Refused(e)
    }
}

/// `POST /token` with `grant_type=refresh_token`: 200 with a new access token and a new refresh
/// token (the presented one is used up), else 400 `invalid_request` / `unsupported_grant_type`
/// / `invalid_grant`. Counted in `login_token_requests_total` and `login_token_duration_seconds`.
#[instrument(skip_all, fields(user_id = field::Empty, outcome = field::Empty))]
pub async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let (outcome, resp) = match decide(&state, &headers, &body).await {
        Ok(resp) => {
            info!("refresh token rotated");
            ("issued", resp)
        }
        Err(Denied::Reused) => ("reuse_detected", ApiError::InvalidGrant.into_response()),
        Err(Denied::Refused(e)) => (e.outcome(), e.into_response()),
    };
    Span::current().record("outcome", outcome);
    state.metrics.observe_grant(outcome, started.elapsed());
    resp
}

async fn decide(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, Denied> {
    let req = parse(headers, body)?;
    if !refresh::well_formed(&req.refresh_token) {
        info!(reason = "malformed", "refresh refused");
        return Err(ApiError::InvalidGrant.into());
    }
    let token_hash = refresh::hash(&req.refresh_token);
    let s = &state.settings;
    let (keys, kid, issuer) = (
        s.keys.clone(),
        s.signing_kid.clone(),
        s.refresh.issuer.clone(),
    );
    let lifetimes = s.refresh.lifetimes;
    let now = now_secs();
    let rotation: Result<Rotation<auth_token::Issued>, Option<auth_token::IssueError>> = state
        .db
        .run(move |c| {
            let mut attempt = 1;
            let r = loop {
                let r = refresh::rotate(c, &token_hash, now, &lifetimes, |user, iat| {
                    let key = keys.get(Some(&kid)).ok_or(None::<auth_token::IssueError>)?;
                    let issued = issuer
                        .issue(
                            key,
                            &user.id.to_string(),
                            &user.email,
                            &user.roles(),
                            u64::try_from(iat).unwrap_or(0),
                        )
                        .map_err(Some)?;
                    let (jti, exp) = (
                        issued.claims.jti.clone(),
                        i64::try_from(issued.claims.exp).unwrap_or(i64::MAX),
                    );
                    Ok((issued, jti, exp))
                });
                // Why: a deadlock rolled everything back; the same work again is safe.
                match r {
                    Err(RotateError::Db(e))
                        if attempt < refresh::ATTEMPTS && refresh::is_retryable(&e) =>
                    {
                        attempt += 1;
                    }
                    r => break r,
                }
            };
            match r {
                Ok(rotation) => Ok(Ok(rotation)),
                Err(RotateError::Db(e)) => Err(e),
                Err(RotateError::Sign(e)) => Ok(Err(e)),
            }
        })
        .await
        .map_err(ApiError::from)?;
    let rotation = rotation.map_err(|e| {
        match e {
            Some(e) => warn!(error = %e, "token signing failed"),
            None => warn!("no signing key"),
        }
        ApiError::Internal
    })?;
    match rotation {
        Rotation::Rotated {
            access,
            refresh,
            user_id,
        } => {
            Span::current().record("user_id", user_id);
            let mut resp = Json(serde_json::json!({
                "access_token": access.token,
                "token_type": "Bearer",
                "expires_in": access.expires_in,
                "refresh_token": refresh.expose(),
            }))
            .into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            Ok(resp)
        }
        Rotation::Reused {
            family_id,
            user_id,
            ended,
        } => {
            Span::current().record("user_id", user_id);
            // Why no work for an ended family (review H1): its access tokens are in the feed
            // already; redoing it on every presentation would let anyone holding a used token
            // keep the revocation writers' lock busy.
            if ended {
                warn!("refresh token of an ended session reused");
                return Err(Denied::Reused);
            }
            let max = s.revocation.max_revoked_per_user;
            let ttl = user_revocation_ttl(s.revocation.user_ttl, s.refresh.issuer.ttl);
            let ended = state
                .db
                .run(move |c| {
                    let mut attempt = 1;
                    loop {
                        match refresh::revoke_family(
                            c,
                            &family_id,
                            user_id,
                            max,
                            ttl,
                            crate::revocations::Reason::RefreshReuse,
                        ) {
                            Err(e) if attempt < refresh::ATTEMPTS && refresh::is_retryable(&e) => {
                                attempt += 1;
                            }
                            r => break r,
                        }
                    }
                })
                .await
                .map_err(ApiError::from)?;
            warn!(
                revoked = ?ended,
                "refresh token reused: its session is revoked"
            );
            Err(Denied::Reused)
        }
        Rotation::Refused(why) => {
            info!(reason = why.as_str(), "refresh refused");
            if why == Refused::Account {
                info!("the account can no longer refresh; its session is ended");
            }
            Err(ApiError::InvalidGrant.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        h
    }

    fn code(h: &HeaderMap, body: &str) -> Result<String, &'static str> {
        parse(h, body.as_bytes())
            .map(|r| r.refresh_token)
            .map_err(|e| e.parts().1)
    }

    #[test]
    fn grant_parsing() {
        let h = form();
        assert_eq!(
            code(&h, "grant_type=refresh_token&refresh_token=a%2Bb&scope=x"),
            Ok("a+b".to_owned())
        );
        assert_eq!(code(&h, ""), Err("invalid_request"));
        assert_eq!(code(&h, "refresh_token=x"), Err("invalid_request"));
        assert_eq!(code(&h, "grant_type=refresh_token"), Err("invalid_request"));
        assert_eq!(
            code(&h, "grant_type=refresh_token&refresh_token="),
            Err("invalid_request")
        );
        assert_eq!(
            code(&h, "grant_type=password&refresh_token=x"),
            Err("unsupported_grant_type")
        );
        for dup in [
            "grant_type=refresh_token&refresh_token=a&refresh_token=b",
            "grant_type=refresh_token&grant_type=refresh_token&refresh_token=a",
            "grant_type=refresh_token&refresh_token=a&scope=1&scope=2",
        ] {
            assert_eq!(code(&h, dup), Err("invalid_request"), "{dup}");
        }
        for ct in ["application/json", "text/plain", "multipart/form-data"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(
                code(&h, "grant_type=refresh_token&refresh_token=a"),
                Err("invalid_request"),
                "{ct}"
            );
        }
        assert_eq!(
            code(
                &HeaderMap::new(),
                "grant_type=refresh_token&refresh_token=a"
            ),
            Err("invalid_request")
        );
    }
}
