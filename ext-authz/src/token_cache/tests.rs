//! The cache on its own (bound, keys, time rules) and through [`crate::check::decide`]: a hit
//! is refused after a revocation, a key removal or replacement, and expiry; a token differing
//! in one byte misses; refusals are never cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use auth_token::{Claims, FeedEntry, Key, Keyring, VerifyError};

use super::*;
use crate::check::{Decision, Reason, Settings, decide};
use crate::policy::Policy;
use crate::revoked::RevocationSet;
use crate::test_support::{self, SECRET, forge, headers, now, payload};

/// An Ed25519 key pair: the signing key and the public-only key the gateway loads.
fn ed25519(kid: &str) -> (Key, Key) {
    let (private, public) = auth_token::testing::ed25519_pem_pair();
    (
        Key::ed25519_private_pem(kid, private.as_bytes()).unwrap(),
        Key::public_pem(kid, public.as_bytes()).unwrap(),
    )
}

/// A gateway ring: the public key `ed1` and the HMAC key `k1`.
fn gateway_ring(public: Key) -> Keyring {
    Keyring::from_keys(vec![public, Key::new("k1", SECRET).unwrap()], None).unwrap()
}

fn mint(key: &Key, roles: &[&str]) -> String {
    auth_token::testing::mint(
        key,
        "42",
        "user@example.com",
        roles,
        now(),
        Duration::from_secs(300),
    )
}

fn cached_settings(bytes: u64) -> (Settings, Arc<TokenCache>) {
    let cache = Arc::new(TokenCache::new(bytes, Arc::default()).unwrap());
    let settings = Settings {
        token_cache: Some(Arc::clone(&cache)),
        ..test_support::settings(false)
    };
    (settings, cache)
}

fn check(token: &str, ring: &Keyring, revoked: Option<&RevocationSet>, s: &Settings) -> Decision {
    check_at(token, ring, revoked, s, now())
}

fn check_at(
    token: &str,
    ring: &Keyring,
    revoked: Option<&RevocationSet>,
    s: &Settings,
    at: u64,
) -> Decision {
    decide(
        &headers(&format!("Bearer {token}")),
        &Policy::NONE,
        ring,
        revoked,
        s,
        at,
    )
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Allow { .. } => None,
        Decision::Deny(x) | Decision::DryRunAllow { denial: x, .. } => Some(x.reason),
    }
}

fn counts(cache: &TokenCache) -> (u64, u64) {
    let s = cache.stats();
    (
        s.hits.load(Ordering::Relaxed),
        s.misses.load(Ordering::Relaxed),
    )
}

#[test]
fn a_repeated_token_is_a_hit_with_the_same_decision() {
    let (signing, public) = ed25519("ed1");
    let ring = gateway_ring(public);
    let token = mint(&signing, &["admin"]);
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let uncached = check(&token, &ring, None, &test_support::settings(false));
    assert!(matches!(uncached, Decision::Allow { .. }), "{uncached:?}");

    assert_eq!(check(&token, &ring, None, &settings), uncached);
    assert_eq!(counts(&cache), (0, 1));
    assert_eq!(check(&token, &ring, None, &settings), uncached);
    assert_eq!(check(&token, &ring, None, &settings), uncached);
    assert_eq!(counts(&cache), (2, 1));
    let entries = cache.stats().entries.load(Ordering::Relaxed);
    let bytes = cache.stats().bytes.load(Ordering::Relaxed);
    assert_eq!(entries, 1);
    assert!((200..2048).contains(&bytes), "{bytes}");

    // HS256 tokens take the same path (see the README for why).
    let hs = test_support::issue("k1", SECRET, &[]);
    assert!(matches!(
        check(&hs, &ring, None, &settings),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        check(&hs, &ring, None, &settings),
        Decision::Allow { .. }
    ));
    assert_eq!(counts(&cache), (3, 2));
}

#[test]
fn a_token_differing_in_one_byte_misses_and_is_verified() {
    let (signing, public) = ed25519("ed1");
    let ring = gateway_ring(public);
    let token = mint(&signing, &["admin"]);
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    assert!(matches!(
        check(&token, &ring, None, &settings),
        Decision::Allow { .. }
    ));
    // One byte in the middle of the signature, and one in the payload.
    let sig_at = token.rfind('.').unwrap() + 20;
    let payload_at = token.find('.').unwrap() + 10;
    for at in [sig_at, payload_at] {
        let mut bytes = token.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_ne!(cache.key(&tampered).0, cache.key(&token).0);
        let d = check(&tampered, &ring, None, &settings);
        assert!(
            matches!(
                reason(&d),
                Some(Reason::Invalid(
                    VerifyError::BadSignature | VerifyError::Malformed
                ))
            ),
            "{d:?}"
        );
    }
    assert_eq!(counts(&cache), (0, 3));
    // Refusals are not cached: still one entry, and the same refusal again is another miss.
    assert_eq!(cache.stats().entries.load(Ordering::Relaxed), 1);
}

#[test]
fn a_hit_is_refused_once_the_token_is_revoked() {
    let (signing, public) = ed25519("ed1");
    let ring = gateway_ring(public);
    let token = mint(&signing, &[]);
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let Decision::Allow { claims, .. } = check(&token, &ring, None, &settings) else {
        panic!("not allowed");
    };
    let entry = FeedEntry {
        id: 1,
        sub: claims.sub.clone(),
        jti: Some(claims.jti.clone()),
        revoked_at: 0,
        expires_at: i64::try_from(claims.exp).unwrap(),
        reason: "logout".into(),
    };
    let set = RevocationSet::default().with(&[entry], now(), 30);
    assert_eq!(
        reason(&check(&token, &ring, Some(&set), &settings)),
        Some(Reason::Revoked)
    );
    assert_eq!(
        counts(&cache),
        (1, 1),
        "refused from a hit, no invalidation"
    );
}

#[test]
fn a_hit_is_refused_once_its_key_is_removed_or_replaced() {
    let (signing, public) = ed25519("ed1");
    let token = mint(&signing, &[]);
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    assert!(matches!(
        check(&token, &gateway_ring(public), None, &settings),
        Decision::Allow { .. }
    ));

    // A reload without `ed1`: refused at once (the stale entry is dropped, the token verified).
    let without = Keyring::single("k1", SECRET).unwrap();
    assert_eq!(
        reason(&check(&token, &without, None, &settings)),
        Some(Reason::Invalid(VerifyError::UnsupportedAlgorithm))
    );
    assert_eq!(counts(&cache), (0, 2));
    assert_eq!(cache.stats().entries.load(Ordering::Relaxed), 0);

    // `ed1` replaced by another key under the same kid.
    let (signing, public) = ed25519("ed1");
    let token = mint(&signing, &[]);
    assert!(matches!(
        check(&token, &gateway_ring(public), None, &settings),
        Decision::Allow { .. }
    ));
    let (_, other_public) = ed25519("ed1");
    assert_eq!(
        reason(&check(&token, &gateway_ring(other_public), None, &settings)),
        Some(Reason::Invalid(VerifyError::BadSignature))
    );

    // A token without `kid` verified by the default key: another default is another key.
    let hs = forge(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &payload(0, 0, 300),
        SECRET,
    );
    let ring_default = |secret: &[u8]| {
        Keyring::from_keys(vec![Key::new("k1", secret).unwrap()], Some("k1")).unwrap()
    };
    assert!(matches!(
        check(&hs, &ring_default(SECRET), None, &settings),
        Decision::Allow { .. }
    ));
    assert_eq!(
        reason(&check(
            &hs,
            &ring_default(test_support::OTHER_SECRET),
            None,
            &settings
        )),
        Some(Reason::Invalid(VerifyError::BadSignature))
    );
}

#[test]
fn a_hit_is_refused_after_exp_and_before_nbf() {
    let (signing, public) = ed25519("ed1");
    let ring = gateway_ring(public);
    let token = mint(&signing, &[]);
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let Decision::Allow { claims, .. } = check(&token, &ring, None, &settings) else {
        panic!("not allowed");
    };
    let leeway = settings.verifier.leeway_secs();
    // Still inside the leeway: allowed from the cache; one second later: expired.
    assert!(matches!(
        check_at(&token, &ring, None, &settings, claims.exp + leeway),
        Decision::Allow { .. }
    ));
    assert_eq!(
        reason(&check_at(
            &token,
            &ring,
            None,
            &settings,
            claims.exp + leeway + 1
        )),
        Some(Reason::Invalid(VerifyError::Expired))
    );
    // Before nbf (beyond the leeway): the cached claims are not yet valid.
    assert_eq!(
        reason(&check_at(
            &token,
            &ring,
            None,
            &settings,
            claims.nbf - leeway - 1
        )),
        Some(Reason::Invalid(VerifyError::NotYetValid))
    );
    assert_eq!(counts(&cache), (3, 1));
}

/// [`check_times`] agrees with the verifier (the independent oracle: jsonwebtoken's own time
/// checks plus our `iat` rule) on tokens well inside or outside each bound, and holds its exact
/// bounds.
#[test]
fn time_rules_match_the_verifier() {
    let ring = test_support::ring();
    let verifier = test_support::settings(false).verifier;
    let offsets = [-100, -45, -15, 0, 15, 45, 100];
    for iat in offsets {
        for nbf in offsets {
            for exp in offsets {
                let token = forge(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                    &payload(iat, nbf, exp),
                    SECRET,
                );
                let t = now();
                let full = verifier.verify(&token, &ring, t).map(|_| ());
                let claims: Claims =
                    serde_json::from_value(auth_token::testing::claims_json(&token)).unwrap();
                assert_eq!(
                    check_times(&claims, t, verifier.leeway_secs()),
                    full,
                    "iat {iat} nbf {nbf} exp {exp}"
                );
            }
        }
    }
    let at = |iat, nbf, exp| Claims {
        iat,
        nbf,
        exp,
        ..test_support::claims_with_roles(&[])
    };
    assert_eq!(check_times(&at(0, 0, 970), 1000, 30), Ok(()));
    assert_eq!(
        check_times(&at(0, 0, 969), 1000, 30),
        Err(VerifyError::Expired)
    );
    assert_eq!(check_times(&at(1030, 1030, 2000), 1000, 30), Ok(()));
    assert_eq!(
        check_times(&at(0, 1031, 2000), 1000, 30),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(
        check_times(&at(1031, 0, 2000), 1000, 30),
        Err(VerifyError::IssuedInFuture)
    );
}

#[test]
fn refusals_are_not_cached() {
    let ring = test_support::ring();
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let bad = forge(
        r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
        &payload(0, 0, 300),
        b"an-attacker-key-of-at-least-32-bytes!!",
    );
    for _ in 0..3 {
        assert_eq!(
            reason(&check(&bad, &ring, None, &settings)),
            Some(Reason::Invalid(VerifyError::BadSignature))
        );
    }
    assert_eq!(counts(&cache), (0, 3));
    assert_eq!(cache.stats().entries.load(Ordering::Relaxed), 0);
}

/// Far more entries than fit, and one entry larger than the whole cache: the estimated bytes
/// never exceed the bound, and evictions are counted.
#[test]
fn the_cache_is_bounded_in_bytes() {
    const BOUND: u64 = 64 * 1024;
    let cache = TokenCache::new(BOUND, Arc::default()).unwrap();
    let fp = [7u8; 32];
    for i in 0..5_000 {
        let mut claims = test_support::claims_with_roles(&["admin", "ops"]);
        claims.jti = format!("jti-{i}");
        cache.insert(
            cache.key(&format!("token-{i}")),
            Entry::new(Arc::new(claims), Source::Local, Some("k1".into()), fp),
        );
        assert!(cache.stats().bytes.load(Ordering::Relaxed) <= BOUND);
    }
    let s = cache.stats();
    let (entries, evictions) = (
        s.entries.load(Ordering::Relaxed),
        s.evictions.load(Ordering::Relaxed),
    );
    assert!(entries > 50 && entries < 5_000, "{entries}");
    assert!(evictions > 0, "{evictions}");

    let mut huge = test_support::claims_with_roles(&[]);
    huge.roles = vec!["r".repeat(1024); 100];
    let big = Entry::new(Arc::new(huge), Source::Local, Some("k1".into()), fp);
    assert!(big.weight() > BOUND);
    cache.insert(cache.key("huge"), big);
    assert!(cache.stats().bytes.load(Ordering::Relaxed) <= BOUND);
    let ring = test_support::ring();
    assert!(cache.lookup(&cache.key("huge"), |_| Some(&ring)).is_none());
}

#[test]
fn keys_are_salted_per_cache_and_disabled_at_zero() {
    let a = TokenCache::new(1024, Arc::default()).unwrap();
    let b = TokenCache::new(1024, Arc::default()).unwrap();
    assert!(a.key("t") == a.key("t"));
    assert!(a.key("t") != b.key("t"), "a per-process random salt");
    assert!(TokenCache::new(0, Arc::default()).is_none());
    assert!(!format!("{a:?}").contains(&format!("{:?}", a.salt)));
}

/// An external issuer's token from the cache: the route's issuer list still applies, and a key
/// removed by a JWKS refresh stops verifying at once.
#[test]
fn external_hits_follow_the_route_and_the_jwks() {
    use crate::test_support::{issuers_with, rs256_token};
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let set = issuers_with(&["r1"]);
    let token = rs256_token("r1");
    let run = |set: &crate::external::ExternalIssuers, issuers: &str| {
        crate::check::decide_with_external(
            &HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]),
            &Policy::NONE.with_issuers(issuers),
            &test_support::ring(),
            set,
            None,
            &settings,
            now(),
        )
    };
    assert!(matches!(run(&set, "keycloak"), Decision::Allow { .. }));
    assert!(matches!(run(&set, "keycloak"), Decision::Allow { .. }));
    assert_eq!(counts(&cache), (1, 1));
    assert_eq!(
        reason(&run(&set, "local")),
        Some(Reason::Invalid(VerifyError::WrongIssuer))
    );
    // The same RSA key now published as `r2` only: `r1` is gone.
    let refreshed = issuers_with(&["r2"]);
    assert_eq!(
        reason(&run(&refreshed, "keycloak")),
        Some(Reason::Invalid(VerifyError::UnknownKey))
    );
}

/// A token over `--max-token-bytes` is refused unparsed, without being hashed or looked up.
#[test]
fn oversized_tokens_never_reach_the_cache() {
    let (settings, cache) = cached_settings(DEFAULT_BYTES);
    let big = format!("{}.e30.sig", "a".repeat(settings.verifier.max_token_len()));
    assert_eq!(
        reason(&check(&big, &test_support::ring(), None, &settings)),
        Some(Reason::Invalid(VerifyError::TooLarge))
    );
    assert_eq!(counts(&cache), (0, 0));
}
