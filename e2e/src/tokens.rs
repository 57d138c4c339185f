//! Tokens as the tests need them: signed with any key as login-service would sign them, and
//! read back without verification (a test only reads what login-service issued).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Unix seconds now.
pub fn now() -> u64 {
    auth_token::now_unix()
}

/// Signs a token with an arbitrary key (`kid`, secret), as login-service would.
pub fn sign_with(
    kid: &str,
    secret: &str,
    sub: &str,
    email: &str,
    roles: &[&str],
    iat: u64,
    ttl: Duration,
) -> String {
    let key = auth_token::Key::new(kid, secret.as_bytes()).expect("test key");
    let issuer = auth_token::Issuer {
        ttl,
        issuer: None,
        audience: None,
    };
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    issuer
        .issue(&key, sub, email, &roles, iat)
        .expect("sign")
        .token
}

/// The claims inside a token (no verification: the test only reads what login-service issued).
pub fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
