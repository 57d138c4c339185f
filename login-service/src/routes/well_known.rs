//! The public, unauthenticated key documents: `GET /.well-known/jwks.json` (the public halves of
//! the signing keys, so a verifier needs no secret) and a minimal
//! `GET /.well-known/openid-configuration` pointing at it.
//!
//! Why cacheable: verifiers poll these; `Cache-Control: public, max-age=JWKS_MAX_AGE` lets
//! caches absorb that. HMAC secrets are never published ([`auth_token::Keyring::public_jwks`]),
//! so an HS256-only setup serves `{"keys":[]}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

fn json_document(state: &AppState, body: Vec<u8>) -> Response {
    let max_age = state.settings.well_known.max_age.as_secs();
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        ],
        body,
    )
        .into_response()
}

/// `GET /.well-known/jwks.json`: the JWK set of the keyring's public keys.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::to_vec(&state.settings.keys.public_jwks())
        .expect("a JWK set always serializes");
    json_document(&state, body)
}

/// `GET /.well-known/openid-configuration`: `issuer` (JWT_ISSUER), `jwks_uri` (from PUBLIC_URL)
/// and the signing algorithms of the published keys. 404 unless both are configured: a
/// discovery document without them would point clients nowhere.
pub async fn openid_configuration(
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    let (Some(issuer), Some(base)) = (&s.issuer.issuer, &s.well_known.public_url) else {
        return Err(ApiError::NotFound);
    };
    let mut algs: Vec<String> = s
        .keys
        .public_jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_algorithm.map(|a| a.to_string()))
        .collect();
    algs.sort_unstable();
    algs.dedup();
    let body = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": algs,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    });
    Ok(json_document(&state, body.to_string().into_bytes()))
}
