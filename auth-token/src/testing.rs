//! Test fixtures for every crate that tests tokens: genuine tokens minted by the real
//! [`Issuer`], forged tokens with arbitrary header and payload JSON, an unverified claims
//! decoder and an Envoy `CheckRequest` builder.
//!
//! Behind the `testing` feature, which only dev-dependencies, benches, fuzz targets and the e2e
//! harness enable: no service binary links it. Why here: the token format lives in this crate,
//! so the fixtures that mint and forge it live beside it instead of in four hand-kept copies.
//!
//! The forging half is deliberately independent of the verifier: it signs with the `hmac` crate
//! directly, never through `jsonwebtoken`, so an oracle built on it does not trust the code it
//! checks.
//!
//! Also the suites' shared machinery that is not about tokens: [`poll`] (readiness polling with
//! a deadline, instead of fixed sleeps) and [`SecretDir`] (a kubelet-style mounted Secret).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::{Issuer, Key};

pub mod poll;
mod secret_dir;

pub use secret_dir::SecretDir;

/// A genuine token, as login-service issues it: `key` signs for user `sub`, valid from `iat`
/// (Unix seconds) for `ttl`, with no `iss`/`aud`. Panics if signing fails (a broken fixture).
pub fn mint(key: &Key, sub: &str, email: &str, roles: &[&str], iat: u64, ttl: Duration) -> String {
    let issuer = Issuer {
        ttl,
        issuer: None,
        audience: None,
    };
    mint_with(&issuer, key, sub, email, roles, iat)
}

/// A genuine token from `issuer` (its `iss`, `aud` and lifetime), signed with `key`.
pub fn mint_with(
    issuer: &Issuer,
    key: &Key,
    sub: &str,
    email: &str,
    roles: &[&str],
    iat: u64,
) -> String {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    issuer
        .issue(key, sub, email, &roles, iat)
        .expect("test token signs")
        .token
}

/// Base64url without padding, the way JWS segments are written.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 of `input` under `secret` (any length: an attacker's key need not be valid).
pub fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// A token with arbitrary `header` and `payload` bytes (usually JSON), HMAC-SHA256-signed with
/// `secret` whatever the header claims: the attacker's tool, and the fuzzer's way past the
/// signature into the header and claims rules.
pub fn forge(header: impl AsRef<[u8]>, payload: impl AsRef<[u8]>, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_ref()), b64(payload.as_ref()));
    let signature = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// Claims JSON in the exact shape login-service writes (`sub`, `email` `user@example.com`,
/// `roles`, times, `jti` `j1`; compact, in that order), for forging: tests edit it with
/// `str::replace`, so the spelling is part of this function's contract.
pub fn claims_payload(sub: &str, roles: &[&str], iat: u64, nbf: u64, exp: u64) -> String {
    let sub = serde_json::to_string(sub).expect("a string serializes");
    let roles = serde_json::to_string(roles).expect("strings serialize");
    format!(
        r#"{{"sub":{sub},"email":"user@example.com","roles":{roles},"iat":{iat},"nbf":{nbf},"exp":{exp},"jti":"j1"}}"#
    )
}

/// The claims inside `token` as JSON, WITHOUT verification: for tests that read what was
/// issued (a `jti`, an `iat`). Panics unless the payload segment is base64url JSON.
pub fn claims_json(token: &str) -> serde_json::Value {
    let payload = token
        .split('.')
        .nth(1)
        .expect("a JWS has a payload segment");
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

/// A `CheckRequest` as Envoy sends it for an HTTP request with these (lower-cased) `headers`
/// and the route's `context_extensions`.
pub fn check_request(
    headers: HashMap<String, String>,
    extensions: &[(&str, &str)],
) -> CheckRequest {
    check_request_for(
        HttpRequest {
            headers,
            ..Default::default()
        },
        extensions,
    )
}

/// A `CheckRequest` around a fully described `http` request (method, path, host…), for
/// callers that measure the whole conversion.
pub fn check_request_for(http: HttpRequest, extensions: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// The value of the Prometheus series whose line starts with `series` (the name, with its labels
/// when it has any) in a `/metrics` text, if exported. Shared by the services' integration tests
/// and the e2e tests, which scrape the same exposition format.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A token with exactly this header and payload JSON text, signed by `key` with its own algorithm
/// (EdDSA for an Ed25519 key): for attack tests that need a valid signature under a hostile
/// header (`jku`, `x5u`, a wrong `kid`). Panics when `key` is a public key.
pub fn sign_raw(key: &Key, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let encoding = key.encoding().expect("a key that can sign");
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), encoding, key.algorithm()).expect("signable");
    format!("{input}.{sig}")
}

/// A token with these header and payload JSON values, signed with the fixed test key of the
/// header's `alg` ([`crate::test_keys`]: RSA-2048 for RS256/PS256, P-256 for ES256): an
/// external issuer's token, which login-service never signs. Panics on another `alg`.
pub fn sign_with_test_key(header: &serde_json::Value, payload: &serde_json::Value) -> String {
    use crate::test_keys::{EC_PRIVATE_PKCS8_B64, RSA_PRIVATE_PKCS1_B64};
    let der = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("test key is base64")
    };
    let alg = header["alg"].as_str().expect("header with an alg");
    let key = match alg {
        "RS256" | "PS256" => jsonwebtoken::EncodingKey::from_rsa_der(&der(RSA_PRIVATE_PKCS1_B64)),
        "ES256" => jsonwebtoken::EncodingKey::from_ec_der(&der(EC_PRIVATE_PKCS8_B64)),
        other => panic!("no test key for {other}"),
    };
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).expect("JSON")),
        b64(&serde_json::to_vec(payload).expect("JSON"))
    );
    let alg: jsonwebtoken::Algorithm = alg.parse().expect("a JWS algorithm");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).expect("signable");
    format!("{input}.{sig}")
}

/// A fresh random Ed25519 key pair as (PKCS#8 private PEM, SPKI public PEM): the `KID.pem` and
/// `KID.pub.pem` files of a keys directory.
pub fn ed25519_pem_pair() -> (String, String) {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let seed: [u8; 32] = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat()
    .try_into()
    .expect("two uuids are 32 bytes");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encodable")
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encodable");
    (private, public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keyring, Verifier, VerifierConfig};

    const SECRET: &[u8] = b"testing-module-secret-0123456789abcdef";

    #[test]
    fn minted_tokens_verify_and_decode() {
        let key = Key::new("k1", SECRET).unwrap();
        let now = crate::now_unix();
        let token = mint(
            &key,
            "7",
            "a@example.com",
            &["admin"],
            now,
            Duration::from_secs(60),
        );
        let ring = Keyring::single("k1", SECRET).unwrap();
        let claims = Verifier::new(&VerifierConfig::default())
            .verify(&token, &ring, now)
            .unwrap();
        assert_eq!(claims.sub, "7");
        assert_eq!(claims_json(&token)["roles"], serde_json::json!(["admin"]));
    }

    #[test]
    fn a_forged_token_with_the_issuers_header_and_claims_verifies() {
        let now = crate::now_unix();
        let token = forge(
            r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
            claims_payload("42", &["admin"], now, now, now + 60),
            SECRET,
        );
        let ring = Keyring::single("k1", SECRET).unwrap();
        let claims = Verifier::new(&VerifierConfig::default())
            .verify(&token, &ring, now)
            .unwrap();
        assert_eq!((claims.sub.as_str(), claims.jti.as_str()), ("42", "j1"));
    }

    #[test]
    fn claims_payload_keeps_its_spelling() {
        assert_eq!(
            claims_payload("42", &["admin"], 1, 2, 3),
            r#"{"sub":"42","email":"user@example.com","roles":["admin"],"iat":1,"nbf":2,"exp":3,"jti":"j1"}"#
        );
    }

    #[test]
    fn check_request_carries_headers_and_extensions() {
        let req = check_request(
            HashMap::from([("authorization".to_owned(), "Bearer x".to_owned())]),
            &[("require_roles", "admin")],
        );
        let attributes = req.attributes.unwrap();
        assert_eq!(attributes.context_extensions["require_roles"], "admin");
        let http = attributes.request.unwrap().http.unwrap();
        assert_eq!(http.headers["authorization"], "Bearer x");
    }
}
