//! `POST /login`: Basic credentials and the client address out of the request, the decision
//! in [`crate::login::authenticate`], the token (JSON, or text on `Accept: text/plain`) or the
//! refusal back, counted in the metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tracing::{Instrument as _, Span, error, field, info, instrument};

use crate::credentials::{Credentials, parse_basic};
use crate::error::ApiError;
use crate::login::{Session, authenticate_session};
use crate::state::AppState;

/// Query of `POST /login`.
#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    /// `refresh=true` (or `1`, `yes`, `on`): also return a refresh token (JSON answers only).
    #[serde(default)]
    pub refresh: Option<String>,
}

impl LoginQuery {
    /// Whether the client asked for a refresh token; an unknown value is a 400.
    fn wants_refresh(&self) -> Result<bool, ApiError> {
        match self
            .refresh
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("0" | "false" | "no" | "off") => Ok(false),
            Some("" | "1" | "true" | "yes" | "on") => Ok(true),
            Some(_) => Err(ApiError::InvalidRequest),
        }
    }
}

/// `POST /login[?refresh=true]` with `Authorization: Basic base64(email:password)`: 200 with a
/// token (and a refresh token when asked for or `REFRESH_TOKENS=on`, JSON answers only), else
/// the refusal as JSON ([`ApiError`]).
#[instrument(skip_all, fields(client = field::Empty, user_id = field::Empty, outcome = field::Empty))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    // Why not for text/plain: that answer is the bare access token (the tutorial's clients),
    // which has no room for a refresh token; a session nobody receives is not started.
    let text = wants_text(&headers);
    let result = match LoginRequest::read(&state, &query, &headers, peer.ip(), text) {
        Ok(request) => decide_detached(&state, request, started).await,
        Err(e) => finish(&state, Err(e), started),
    };
    match result {
        Ok(Session { access, refresh }) => {
            info!("login succeeded");
            let mut resp = if text {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    access.token,
                )
                    .into_response()
            } else {
                let mut body = serde_json::json!({
                    "access_token": access.token,
                    "token_type": "Bearer",
                    "expires_in": access.expires_in,
                });
                if let Some(r) = refresh {
                    body["refresh_token"] = r.expose().into();
                }
                Json(body).into_response()
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

/// What a login needs of its request, read in the handler so that the detached task holds
/// only this (bounded by the header limit), not the whole request.
struct LoginRequest {
    creds: Credentials,
    client: IpAddr,
    refresh: bool,
}

impl LoginRequest {
    fn read(
        state: &AppState,
        query: &LoginQuery,
        headers: &HeaderMap,
        peer: IpAddr,
        text: bool,
    ) -> Result<Self, ApiError> {
        let asked = query.wants_refresh()?;
        let refresh = !text && (asked || state.settings.refresh.always);
        let creds = parse_basic(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )?;
        let client = client_ip(headers, peer, &state.settings.trusted_proxies);
        Ok(Self {
            creds,
            client,
            refresh,
        })
    }
}

/// Runs the login in a task of its own and awaits it.
///
/// Why: a client that hangs up (or the request timeout) drops the handler's future, and with
/// it a login between its hash and its counter write: guesses that disconnect before the
/// answer would be free of the lockout (attack review of issue #15 §3). The task runs the
/// login to its end whoever waits for it. Such tasks are bounded in number
/// ([`crate::state::MAX_LOGINS_IN_FLIGHT`]: one more is answered 503 `overloaded` at once, for
/// every user alike, counting nothing) and each holds only its [`LoginRequest`]; shutdown
/// waits for them ([`crate::server::serve`]).
async fn decide_detached(
    state: &Arc<AppState>,
    request: LoginRequest,
    started: Instant,
) -> Result<Session, ApiError> {
    let Ok(slot) = state.logins.clone().try_acquire_owned() else {
        let full = Err(ApiError::Overloaded { retry_after: 1 });
        return finish(state, full, started);
    };
    let task = tokio::spawn(
        {
            let state = state.clone();
            async move {
                let _slot = slot;
                let _in_flight = state.metrics.login_started();
                let result = decide(&state, request).await;
                finish(&state, result, started)
            }
        }
        .in_current_span(),
    );
    task.await.unwrap_or_else(|e| {
        // Only whether it panicked is logged: a panic's message is not ours to vouch for.
        error!(
            panicked = e.is_panic(),
            "login task ended without an answer"
        );
        finish(state, Err(ApiError::Internal), started)
    })
}

/// Records a login's outcome (span and metrics) and passes its result on.
fn finish(
    state: &AppState,
    result: Result<Session, ApiError>,
    started: Instant,
) -> Result<Session, ApiError> {
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => e.outcome(),
    };
    Span::current().record("outcome", outcome);
    state.metrics.observe_login(outcome, started.elapsed());
    result
}

/// [`authenticate_session`] for a read request, its error as an [`ApiError`]. With `refresh`,
/// the access token lives `ACCESS_TOKEN_TTL` and a refresh family is started.
async fn decide(state: &AppState, request: LoginRequest) -> Result<Session, ApiError> {
    let LoginRequest {
        creds,
        client,
        refresh,
    } = request;
    let mut cx = state.login_context();
    let lifetimes = if refresh {
        cx.issuer = &state.settings.refresh.issuer;
        Some(state.settings.refresh.lifetimes)
    } else {
        None
    };
    Ok(authenticate_session(&cx, creds, client, lifetimes).await?)
}

/// The header in which Envoy hands over the client address it determined: with
/// `use_remote_address: true` it overwrites a client's copy with its *trusted client address*
/// (the TCP peer, or the `xff_num_trusted_hops`-th `X-Forwarded-For` entry from the right when
/// a trusted load balancer is in front), so the value never depends on what the client sent.
pub const ENVOY_CLIENT_HEADER: &str = "x-envoy-external-address";

/// The client address: the TCP peer, unless the peer is a trusted proxy (Envoy); then the
/// address Envoy determined, [`ENVOY_CLIENT_HEADER`]. `X-Forwarded-For` is never read: its
/// rightmost entry is the load balancer's address as soon as Envoy trusts one hop, and the
/// rest is whatever the client wrote.
///
/// Why not trust every peer: a client that reaches the service directly would choose its own
/// address, and with it its own rate-limit and lockout keys. A trusted peer that sends no
/// address, an unparsable one or several is counted as itself (all such clients share one
/// key: stricter, never spoofable).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let mut values = headers.get_all(ENVOY_CLIENT_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map_or(peer, |ip| ip.to_canonical()),
        _ => peer,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoys_address_only_from_trusted_proxies() {
        let envoy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = [crate::config::parse_proxy("10.0.0.0/24").unwrap()];
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(&h, envoy, &trusted), envoy);
        h.insert(ENVOY_CLIENT_HEADER, " 4.4.4.4 ".parse().unwrap());
        assert_eq!(
            client_ip(&h, envoy, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
        // X-Forwarded-For is never read, whatever its rightmost entry says.
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        assert_eq!(
            client_ip(&h, envoy, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
        let mut xff_only = HeaderMap::new();
        xff_only.insert("x-forwarded-for", "2.2.2.2".parse().unwrap());
        assert_eq!(client_ip(&xff_only, envoy, &trusted), envoy);
        // Nobody trusted (the default), or a peer outside the list: the peer is the client.
        assert_eq!(client_ip(&h, envoy, &[]), envoy);
        let direct: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(&h, direct, &trusted), direct);
        // Garbage, a list, or two copies: not an address Envoy set; the peer counts.
        for bad in ["garbage", "1.1.1.1, 2.2.2.2", ""] {
            let mut b = HeaderMap::new();
            b.insert(ENVOY_CLIENT_HEADER, bad.parse().unwrap());
            assert_eq!(client_ip(&b, envoy, &trusted), envoy, "{bad:?}");
        }
        let mut two = HeaderMap::new();
        two.append(ENVOY_CLIENT_HEADER, "1.1.1.1".parse().unwrap());
        two.append(ENVOY_CLIENT_HEADER, "2.2.2.2".parse().unwrap());
        assert_eq!(client_ip(&two, envoy, &trusted), envoy);
        // An IPv4-mapped peer matches an IPv4 entry; an IPv4-mapped value is the IPv4 client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&h, mapped, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
        let mut m = HeaderMap::new();
        m.insert(ENVOY_CLIENT_HEADER, "::ffff:4.4.4.4".parse().unwrap());
        assert_eq!(
            client_ip(&m, envoy, &trusted),
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
