//! `POST /login`: Basic credentials and the client address out of the request, the decision
//! in [`crate::login::authenticate`], the token (JSON, or text on `Accept: text/plain`) or the
//! refusal back, counted in the metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tracing::{Span, field, info, instrument};

use crate::credentials::parse_basic;
use crate::error::ApiError;
use crate::login::authenticate;
use crate::state::AppState;

/// `POST /login` with `Authorization: Basic base64(email:password)`: 200 with a token, else the
/// refusal as JSON ([`ApiError`]).
#[instrument(skip_all, fields(client = field::Empty, user_id = field::Empty, outcome = field::Empty))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.login_started();
    let result = decide(&state, &headers, peer.ip()).await;
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

/// The request → [`authenticate`] → [`ApiError`] translation.
async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<auth_token::Issued, ApiError> {
    let creds = parse_basic(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )?;
    let client = client_ip(headers, peer, &state.settings.trusted_proxies);
    Ok(authenticate(&state.login_context(), creds, client).await?)
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
