//! Token minting and forging for unit tests.

use std::collections::HashMap;
use std::time::Duration;

use auth_token::{Claims, Issuer, Key, Keyring, Verifier, VerifierConfig};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
    }
}

pub(crate) fn now() -> u64 {
    auth_token::now_unix()
}

/// A genuine token from login-service's issuer.
pub(crate) fn issue(kid: &str, secret: &[u8], roles: &[&str]) -> String {
    let key = Key::new(kid, secret).unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    Issuer {
        ttl: Duration::from_secs(300),
        issuer: None,
        audience: None,
    }
    .issue(&key, "42", "user@example.com", &roles, now())
    .unwrap()
    .token
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

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with arbitrary header and payload JSON, HMAC-SHA256-signed with `secret`.
pub(crate) fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Claims JSON valid now, with `iat`/`nbf`/`exp` offsets in seconds from now.
pub(crate) fn payload(iat: i64, nbf: i64, exp: i64) -> String {
    let at = |d: i64| now().saturating_add_signed(d);
    format!(
        r#"{{"sub":"42","email":"user@example.com","roles":["admin"],"iat":{},"nbf":{},"exp":{},"jti":"j1"}}"#,
        at(iat),
        at(nbf),
        at(exp)
    )
}

pub(crate) fn headers(authorization: &str) -> HashMap<String, String> {
    HashMap::from([
        ("authorization".to_owned(), authorization.to_owned()),
        (":path".to_owned(), "/".to_owned()),
        ("x-request-id".to_owned(), "req-1".to_owned()),
    ])
}
