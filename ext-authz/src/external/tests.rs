use std::collections::HashMap;
use std::sync::Arc;

use auth_token::test_keys::{EC_PUBLIC_PEM, RSA_PUBLIC_PEM};
use auth_token::{Key, VerifyError};
use serde_json::{Value, json};

use super::*;
use crate::check::{Decision, Reason, decide_with_external};
use crate::issuers::{RolesClaim, RolesFormat};
use crate::policy::Policy;
use crate::revoked::RevocationSet;
use crate::test_support::{ring, settings};

const ISS: &str = "https://kc.example/realms/edge";

/// Signs `payload` with the fixed RSA (RS256) or P-256 (ES256) test key, header `kid`; `extra`
/// header members are added (jku, x5u...).
fn sign(alg: &str, kid: &str, payload: &Value, extra: &[(&str, &str)]) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    for (k, v) in extra {
        header[*k] = json!(v);
    }
    auth_token::testing::sign_with_test_key(&header, payload)
}

fn jwk(kid: &str, pem: &str) -> Value {
    serde_json::to_value(
        Key::public_pem(kid, pem.as_bytes())
            .unwrap()
            .public_jwk()
            .unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    auth_token::now_unix()
}

fn payload(extra: Value) -> Value {
    let mut p = json!({
        "iss": ISS, "aud": ["edge", "account"], "sub": "u-1", "email": "a@kc.example",
        "realm_access": {"roles": ["admin"]}, "scope": "openid profile",
        "iat": now(), "exp": now() + 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// One Keycloak-like issuer with the RSA key `r1` and the EC key `e1`.
fn issuers() -> ExternalIssuers {
    let settings = IssuerSettings {
        audience: Some("edge".into()),
        roles_claims: vec![
            RolesClaim {
                path: "realm_access.roles".into(),
                format: RolesFormat::Array,
            },
            RolesClaim {
                path: "scope".into(),
                format: RolesFormat::SpaceSeparated,
            },
        ],
        ..IssuerSettings::new("keycloak", ISS)
    };
    let set = ExternalIssuers::new(vec![TrustedIssuer::new(settings, 30, 8192)]);
    let (ring, skipped) = keys_from_jwks(&[
        jwk("r1", RSA_PUBLIC_PEM),
        jwk("e1", EC_PUBLIC_PEM),
        json!({"kty": "RSA", "use": "enc", "kid": "enc1", "n": "AQAB", "e": "AQAB"}),
    ]);
    assert_eq!(
        skipped,
        ["enc1"],
        "an encryption key is skipped, the rest kept"
    );
    set.with_keys(0, Arc::new(ring.unwrap()))
}

fn check(
    token: &str,
    policy: &Policy<'_>,
    set: &ExternalIssuers,
    revoked: Option<&RevocationSet>,
) -> Decision {
    let headers = HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    decide_with_external(
        &headers,
        policy,
        &ring(),
        set,
        revoked,
        &settings(false),
        now(),
    )
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Deny(denial) => Some(denial.reason),
        _ => None,
    }
}

const KC: Policy<'static> = Policy::NONE;

#[test]
fn rs256_and_es256_tokens_pass_with_mapped_roles_on_a_route_that_accepts_the_issuer() {
    let set = issuers();
    let policy = KC.with_issuers("local,keycloak");
    for (alg, kid) in [("RS256", "r1"), ("ES256", "e1")] {
        let token = sign(alg, kid, &payload(json!({})), &[]);
        match check(&token, &policy, &set, None) {
            Decision::Allow { claims, .. } => {
                assert_eq!(claims.sub, "keycloak:u-1");
                assert_eq!(claims.email, "a@kc.example");
                assert_eq!(claims.roles, ["admin", "openid", "profile"]);
            }
            other => panic!("{alg}: {other:?}"),
        }
        let admin = Policy::require_roles("admin").with_issuers("keycloak");
        assert!(matches!(
            check(&token, &admin, &set, None),
            Decision::Allow { .. }
        ));
        let ops = Policy::require_roles("ops").with_issuers("keycloak");
        assert_eq!(
            reason(&check(&token, &ops, &set, None)),
            Some(Reason::InsufficientScope)
        );
    }
}

/// A route that did not opt in (no `issuers` key: our own tokens only) refuses the token.
#[test]
fn a_route_that_did_not_opt_in_refuses_external_tokens() {
    let set = issuers();
    let token = sign("RS256", "r1", &payload(json!({})), &[]);
    assert_eq!(
        reason(&check(&token, &Policy::NONE, &set, None)),
        Some(Reason::Invalid(VerifyError::WrongIssuer))
    );
    // And a route open only to keycloak refuses our own tokens.
    let local = auth_token::testing::mint(
        &Key::new("k1", crate::test_support::SECRET).unwrap(),
        "7",
        "u@x",
        &[],
        now(),
        std::time::Duration::from_secs(60),
    );
    let kc_only = KC.with_issuers("keycloak");
    assert_eq!(
        reason(&check(&local, &kc_only, &set, None)),
        Some(Reason::Invalid(VerifyError::WrongIssuer))
    );
    assert!(matches!(
        check(&local, &Policy::NONE, &set, None),
        Decision::Allow { .. }
    ));
}

#[test]
fn wrong_audience_unknown_kid_and_tampering_are_refused() {
    let set = issuers();
    let policy = KC.with_issuers("keycloak");
    let cases = [
        (
            sign("RS256", "r1", &payload(json!({"aud": "other"})), &[]),
            VerifyError::WrongAudience,
        ),
        (
            sign("RS256", "r9", &payload(json!({})), &[]),
            VerifyError::UnknownKey,
        ),
        (
            sign("RS256", "r1", &payload(json!({"exp": now() - 100})), &[]),
            VerifyError::Expired,
        ),
        // A JWKS key's algorithm is fixed: the RSA key does not verify an ES256 header.
        (
            sign("ES256", "r1", &payload(json!({})), &[]),
            VerifyError::KeyAlgorithmMismatch,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(
            reason(&check(&token, &policy, &set, None)),
            Some(Reason::Invalid(want))
        );
    }
    // Claims edited after signing: the signature fails.
    let token = sign("RS256", "r1", &payload(json!({})), &[]);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload(json!({"sub": "root"}))).unwrap());
    let forged = parts.join(".");
    assert_eq!(
        reason(&check(&forged, &policy, &set, None)),
        Some(Reason::Invalid(VerifyError::BadSignature))
    );
}

/// A token whose `iss` is not a configured issuer takes our own path (and fails there); a
/// wrong `iss` can never select another issuer's keys.
#[test]
fn wrong_issuer_takes_our_own_path_and_fails() {
    let set = issuers();
    let policy = KC.with_issuers("local,keycloak");
    let token = sign(
        "RS256",
        "r1",
        &payload(json!({"iss": "https://evil.example"})),
        &[],
    );
    assert!(matches!(
        check(&token, &policy, &set, None),
        Decision::Deny(_)
    ));
    assert_eq!(set.route(&token), None);
}

/// `jku`/`x5u` in the header are ignored (never fetched: nothing here can fetch); the token
/// verifies with the configured JWKS only, and `alg: none` is refused.
#[test]
fn jku_and_x5u_are_ignored_and_alg_none_refused() {
    let set = issuers();
    let policy = KC.with_issuers("keycloak");
    let token = sign(
        "RS256",
        "r1",
        &payload(json!({})),
        &[("jku", "https://evil/jwks"), ("x5u", "https://evil/x5")],
    );
    assert!(matches!(
        check(&token, &policy, &set, None),
        Decision::Allow { .. }
    ));
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "r1"})),
        b64(&payload(json!({})))
    );
    assert!(matches!(
        check(&none, &policy, &set, None),
        Decision::Deny(_)
    ));
}

/// Revocations are our own tokens': a foreign token whose `sub`/`jti` equal a revoked local
/// user's/token's is not refused by them (its subject is `keycloak:7`, never `7`), and a
/// local user-wide cut cannot be reached from a foreign token.
#[test]
fn revocations_never_collide_with_foreign_subjects() {
    let set = issuers();
    let policy = KC.with_issuers("keycloak");
    let revoked = RevocationSet::default().with(&[entry(1, None), entry(2, Some("j-1"))], 0, 30);
    let token = sign(
        "RS256",
        "r1",
        &payload(json!({"sub": "7", "jti": "j-1"})),
        &[],
    );
    match check(&token, &policy, &set, Some(&revoked)) {
        Decision::Allow { claims, .. } => assert_eq!(claims.sub, "keycloak:7"),
        other => panic!("{other:?}"),
    }
}

fn entry(id: i64, jti: Option<&str>) -> auth_token::FeedEntry {
    let far = i64::try_from(now()).unwrap() + 3600;
    serde_json::from_value(json!({
        "id": id, "sub": "7", "jti": jti, "revoked_at": far, "expires_at": far,
    }))
    .unwrap()
}

/// Before its first JWKS an issuer refuses its tokens (unknown key), without I/O.
#[test]
fn issuer_without_keys_refuses() {
    let set = ExternalIssuers::new(vec![TrustedIssuer::new(
        IssuerSettings::new("keycloak", ISS),
        30,
        8192,
    )]);
    let token = sign("RS256", "r1", &payload(json!({})), &[]);
    assert_eq!(
        reason(&check(&token, &KC.with_issuers("keycloak"), &set, None)),
        Some(Reason::Invalid(VerifyError::UnknownKey))
    );
}

/// A key removed from the JWKS stops verifying once the new set is swapped in.
#[test]
fn removed_keys_stop_verifying() {
    let set = issuers();
    let policy = KC.with_issuers("keycloak");
    let token = sign("RS256", "r1", &payload(json!({})), &[]);
    assert!(matches!(
        check(&token, &policy, &set, None),
        Decision::Allow { .. }
    ));
    let (ring, _) = keys_from_jwks(&[jwk("r2", RSA_PUBLIC_PEM), jwk("e1", EC_PUBLIC_PEM)]);
    let set = set.with_keys(0, Arc::new(ring.unwrap()));
    assert_eq!(
        reason(&check(&token, &policy, &set, None)),
        Some(Reason::Invalid(VerifyError::UnknownKey))
    );
    assert_eq!(
        keys_from_jwks(&[json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"})])
            .0
            .map(|r| r.len()),
        None
    );
}

/// Our own tokens: the keys directory and the own JWKS side by side, picked by kid; a kid in
/// two sources with different keys verifies with neither; the same key twice is no conflict.
#[test]
fn own_jwks_keys_sit_beside_the_file_ring() {
    use crate::test_support::{SECRET, issue};
    let ed = |kid: &str| {
        let (private, public) = auth_token::testing::ed25519_pem_pair();
        (
            Key::ed25519_private_pem(kid, private.as_bytes()).unwrap(),
            public,
        )
    };
    let public = |kid: &str, pem: &str| Key::public_pem(kid, pem.as_bytes()).unwrap();
    let mint = |key: &Key| {
        auth_token::testing::mint(
            key,
            "7",
            "e",
            &[],
            now(),
            std::time::Duration::from_secs(60),
        )
    };
    let (ed1, ed1_pem) = ed("ed1");
    let (ed2, ed2_pem) = ed("ed2");
    let (other, other_pem) = ed("ed2");
    let files = ring(); // HS256 k1 and k2
    let hs = issue("k1", SECRET, &[]);
    let jwks =
        Keyring::from_keys(vec![public("ed1", &ed1_pem), public("ed2", &ed2_pem)], None).unwrap();
    let set = ExternalIssuers::with_own(Vec::new(), vec![OwnJwks::new(0, "http://ls/jwks")]);

    // No keys fetched yet: everything goes to the files ring.
    assert!(std::ptr::eq(
        set.own_ring(&mint(&ed1), &files).unwrap(),
        &files
    ));
    let set = set.with_keys(set.own_slot(0), Arc::new(jwks));
    assert_eq!(set.fetched(0).unwrap().generation(), 1);
    let verifier = settings(false).verifier;
    for token in [mint(&ed1), mint(&ed2), hs] {
        let ring = set.own_ring(&token, &files).unwrap();
        verifier.verify(&token, ring, now()).unwrap();
    }
    assert!(set.own_conflicts(&files).is_empty());

    // ed2 in the files too, with another key: refused whichever signed; named for the log.
    // ed1 in the files with the same key: no conflict, verifies.
    let files2 = Keyring::from_keys(
        vec![
            Key::new("k1", SECRET).unwrap(),
            public("ed2", &other_pem),
            public("ed1", &ed1_pem),
        ],
        Some("k1"),
    )
    .unwrap();
    for token in [mint(&ed2), mint(&other)] {
        assert_eq!(
            set.own_ring(&token, &files2).err(),
            Some(VerifyError::UnknownKey)
        );
    }
    assert_eq!(set.own_conflicts(&files2), ["ed2"]);
    let token = mint(&ed1);
    verifier
        .verify(&token, set.own_ring(&token, &files2).unwrap(), now())
        .unwrap();
    // An HMAC key under a JWKS kid is always a conflict (it has no public form).
    let files3 = Keyring::from_keys(vec![Key::new("ed1", SECRET).unwrap()], None).unwrap();
    assert_eq!(set.own_conflicts(&files3), ["ed1"]);
}
