//! Fixtures for ext-authz's unit tests: its keyring, settings and request headers. Minting,
//! forging and `CheckRequest` building come from `auth_token::testing`, the one home of token
//! fixtures for every crate.

use std::collections::HashMap;
use std::time::Duration;

use auth_token::{Claims, Key, Keyring, Verifier, VerifierConfig};

pub(crate) use auth_token::testing::{b64, check_request};

use crate::check::Settings;

pub(crate) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
pub(crate) const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

/// Ring with kid `k1` (default) and `k2`.
pub(crate) fn ring() -> Keyring {
    Keyring::from_keys(
        vec![
            Key::new("k1", SECRET).unwrap(),
            Key::new("k2", OTHER_SECRET).unwrap(),
        ],
        Some("k1"),
    )
    .unwrap()
}

/// Ring with kid `k1` and `k2` and no default key.
pub(crate) fn ring_without_default() -> Keyring {
    Keyring::from_keys(
        vec![
            Key::new("k1", SECRET).unwrap(),
            Key::new("k2", OTHER_SECRET).unwrap(),
        ],
        None,
    )
    .unwrap()
}

pub(crate) fn settings(dry_run: bool) -> Settings {
    Settings {
        verifier: Verifier::new(&VerifierConfig::default()),
        realm: "edge".into(),
        dry_run,
        token_cache: None,
    }
}

pub(crate) fn now() -> u64 {
    auth_token::now_unix()
}

/// A genuine token from login-service's issuer: user `42`, valid now for five minutes.
pub(crate) fn issue(kid: &str, secret: &[u8], roles: &[&str]) -> String {
    let key = Key::new(kid, secret).unwrap();
    auth_token::testing::mint(
        &key,
        "42",
        "user@example.com",
        roles,
        now(),
        Duration::from_secs(300),
    )
}

/// Claims of user `1` with `roles`; times zero, jti `j`: for code that reads only roles.
pub(crate) fn claims_with_roles(roles: &[&str]) -> Claims {
    Claims {
        sub: "1".into(),
        email: "a@example.com".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        iat: 0,
        nbf: 0,
        exp: 0,
        jti: "j".into(),
        iss: None,
        aud: None,
    }
}

/// [`auth_token::testing::forge`] over JSON text: a token with arbitrary header and payload,
/// HMAC-SHA256-signed with `secret`.
pub(crate) fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
    auth_token::testing::forge(header, payload, secret)
}

/// Claims JSON of user `42` with role `admin`, with `iat`/`nbf`/`exp` offsets in seconds from
/// now (see [`auth_token::testing::claims_payload`] for its exact spelling).
pub(crate) fn payload(iat: i64, nbf: i64, exp: i64) -> String {
    let at = |d: i64| now().saturating_add_signed(d);
    auth_token::testing::claims_payload("42", &["admin"], at(iat), at(nbf), at(exp))
}

pub(crate) fn headers(authorization: &str) -> HashMap<String, String> {
    HashMap::from([
        ("authorization".to_owned(), authorization.to_owned()),
        (":path".to_owned(), "/".to_owned()),
        ("x-request-id".to_owned(), "req-1".to_owned()),
    ])
}

/// The issuer URL of [`issuers_with`].
pub(crate) const EXTERNAL_ISS: &str = "https://kc.example/realms/edge";

/// One external issuer `keycloak` (audience `edge`) whose JWKS holds the fixed RSA test key
/// under each of `kids`.
pub(crate) fn issuers_with(kids: &[&str]) -> crate::external::ExternalIssuers {
    use crate::external::{ExternalIssuers, TrustedIssuer, keys_from_jwks};
    use crate::issuers::IssuerSettings;
    let settings = IssuerSettings {
        audience: Some("edge".into()),
        ..IssuerSettings::new("keycloak", EXTERNAL_ISS)
    };
    let jwks: Vec<serde_json::Value> = kids
        .iter()
        .map(|kid| {
            let key = Key::public_pem(kid, auth_token::test_keys::RSA_PUBLIC_PEM.as_bytes());
            serde_json::to_value(key.unwrap().public_jwk().unwrap()).unwrap()
        })
        .collect();
    let ring = keys_from_jwks(&jwks).0.unwrap();
    ExternalIssuers::new(vec![TrustedIssuer::new(settings, 30, 8192)])
        .with_keys(0, std::sync::Arc::new(ring))
}

/// An RS256 token of [`issuers_with`]'s issuer, signed with the fixed RSA test key as `kid`.
pub(crate) fn rs256_token(kid: &str) -> String {
    let now = now();
    auth_token::testing::sign_with_test_key(
        &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        &serde_json::json!({
            "iss": EXTERNAL_ISS, "aud": "edge", "sub": "u-1", "iat": now, "exp": now + 300,
        }),
    )
}

/// What `service` answers for the health of `name` (`Unknown` when it does not know `name`).
pub(crate) async fn health_status(
    service: &tonic_health::server::HealthService,
    name: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    use tonic_health::pb::health_server::Health as _;
    let request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: name.to_owned(),
    });
    let answer = service
        .check(request)
        .await
        .map(tonic::Response::into_inner);
    answer.map_or(
        tonic_health::pb::health_check_response::ServingStatus::Unknown,
        |a| a.status(),
    )
}
