//! Every accept/deny rule of [`decide`], including attack tokens.

use std::collections::HashMap;

use auth_token::{FeedEntry, Verifier, VerifierConfig, VerifyError};
use proptest::prelude::*;

use super::*;
use crate::test_support::*;

const H_K1: &str = r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;

/// [`super::decide`] without revocations: most rules do not involve them.
fn decide(
    headers: &HashMap<String, String>,
    policy: &Policy<'_>,
    keys: &Keyring,
    settings: &Settings,
    now: u64,
) -> Decision {
    super::decide(headers, policy, keys, None, settings, now)
}

/// Test-only views of a [`Decision`] (production code matches on the variants).
impl Decision {
    /// Why the request was (or, in a dry run, would have been) denied; `None` when allowed.
    fn reason(&self) -> Option<Reason> {
        match self {
            Self::Allow { .. } => None,
            Self::Deny(d) | Self::DryRunAllow { denial: d, .. } => Some(d.reason),
        }
    }

    /// `allow`, `deny` or `dry_run_allow`: the decision label of metrics and log lines.
    fn label(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::Deny(_) => "deny",
            Self::DryRunAllow { .. } => "dry_run_allow",
        }
    }
}

/// What `decide` makes of an `Authorization` value before verifying the token.
fn bearer_token(value: Option<&str>) -> Result<&str, Reason> {
    auth_token::bearer::parse(value).map_err(bearer_reason)
}

fn run(authorization: &str) -> Decision {
    decide(
        &headers(authorization),
        &Policy::NONE,
        &ring(),
        &settings(false),
        now(),
    )
}

fn denied(authorization: &str) -> Denial {
    match run(authorization) {
        Decision::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn invalid(authorization: &str) -> VerifyError {
    match denied(authorization).reason {
        Reason::Invalid(e) => e,
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

#[test]
fn valid_token_is_allowed_with_claims() {
    let token = issue("k1", SECRET, &["admin", "ops"]);
    let Decision::Allow { claims, kid } = run(&format!("Bearer {token}")) else {
        panic!("not allowed");
    };
    assert_eq!(
        kid.as_deref(),
        Some("k1"),
        "the verifying key's kid, for the decision log"
    );
    assert_eq!(claims.sub, "42");
    assert_eq!(claims.email, "user@example.com");
    assert_eq!(claims.roles, ["admin", "ops"]);
    // The second key of the ring works by kid too.
    let token = issue("k2", OTHER_SECRET, &[]);
    assert!(matches!(
        run(&format!("Bearer {token}")),
        Decision::Allow { .. }
    ));
}

#[test]
fn missing_token_exact_response() {
    let expected = Denial {
        status: DenyStatus::Unauthorized,
        reason: Reason::MissingToken,
        www_authenticate: r#"Bearer realm="edge""#.into(),
        body: r#"{"error":"missing_token","message":"missing bearer token"}"#.into(),
    };
    let no_header = decide(
        &HashMap::new(),
        &Policy::NONE,
        &ring(),
        &settings(false),
        now(),
    );
    assert_eq!(no_header, Decision::Deny(expected.clone()));
    for value in [
        "",
        "   ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearerabc",
        "Digest x",
    ] {
        assert_eq!(denied(value), expected, "{value:?}");
    }
    assert_eq!(expected.status.http_code(), 401);
    assert_eq!(expected.status.grpc_code(), 16);
}

#[test]
fn invalid_token_exact_response() {
    let token = forge(H_K1, &payload(-600, -600, -300), SECRET);
    let d = denied(&format!("Bearer {token}"));
    assert_eq!(
        d,
        Denial {
            status: DenyStatus::Unauthorized,
            reason: Reason::Invalid(VerifyError::Expired),
            www_authenticate:
                r#"Bearer realm="edge", error="invalid_token", error_description="token expired""#
                    .into(),
            body: r#"{"error":"invalid_token","message":"token expired"}"#.into(),
        }
    );
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[test]
fn descriptions_match_verify_error_display_and_indexes_are_dense() {
    for e in VerifyError::ALL {
        assert_eq!(description(e), e.to_string());
    }
    let all: Vec<Reason> = Reason::all().collect();
    assert_eq!(all.len(), Reason::COUNT);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?}");
    }
    let mut labels: Vec<&str> = all.iter().map(|r| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Reason::COUNT);
}

#[test]
fn authorization_header_whitespace_and_case() {
    let token = issue("k1", SECRET, &[]);
    // Accepted: case-insensitive scheme, 1*SP separator (RFC 6750 grammar), trimmed OWS.
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer  {token}"),
        format!("  Bearer {token}  "),
        format!("Bearer {token}\t"),
    ] {
        assert!(matches!(run(&value), Decision::Allow { .. }), "{value:?}");
    }
    // Refused as malformed: tab separator, merged duplicates, inner spaces, no token.
    for value in [
        format!("Bearer\t{token}"),
        format!("Bearer {token}, Bearer {token}"),
        format!("Bearer {token},Bearer {token}"),
        format!("Bearer {token},{token}"),
        format!("Bearer {token} {token}"),
        format!("Bearer \"{token}\""),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer =".to_owned(),
    ] {
        assert_eq!(invalid(&value), VerifyError::Malformed, "{value:?}");
    }
    // A merged header whose first value is another scheme is simply not a bearer token.
    assert_eq!(
        denied(&format!("Basic abc,Bearer {token}")).reason,
        Reason::MissingToken
    );
}

#[test]
fn bearer_token_extraction() {
    assert_eq!(bearer_token(Some("Bearer a.b.c")), Ok("a.b.c"));
    assert_eq!(bearer_token(Some("bEaReR   a.b.c")), Ok("a.b.c"));
    assert_eq!(bearer_token(Some("Bearer abc==")), Ok("abc=="));
    assert_eq!(bearer_token(None), Err(Reason::MissingToken));
    assert_eq!(
        bearer_token(Some("Bearer a=b")),
        Err(Reason::Invalid(VerifyError::Malformed))
    );
    // Multi-byte characters never panic the scheme slice.
    assert_eq!(bearer_token(Some("Béarer x")), Err(Reason::MissingToken));
    assert_eq!(bearer_token(Some("ééé")), Err(Reason::MissingToken));
}

#[test]
fn algorithm_attacks() {
    let p = payload(0, 0, 300);
    for header in [
        r#"{"alg":"none","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"None","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"NONE","typ":"JWT"}"#,
        r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"hs256","typ":"JWT","kid":"k1"}"#,
    ] {
        let token = forge(header, &p, SECRET);
        assert_eq!(
            invalid(&format!("Bearer {token}")),
            VerifyError::UnsupportedAlgorithm,
            "{header}"
        );
    }
    // alg none with an empty signature.
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(p.as_bytes()));
    assert_eq!(
        invalid(&format!("Bearer {unsigned}")),
        VerifyError::UnsupportedAlgorithm
    );
    // A missing alg is malformed.
    let token = forge(r#"{"typ":"JWT","kid":"k1"}"#, &p, SECRET);
    assert_eq!(invalid(&format!("Bearer {token}")), VerifyError::Malformed);
}

#[test]
fn header_smuggling() {
    let p = payload(0, 0, 300);
    for header in [
        r#"{"alg":"HS256","kid":"k1","jku":"https://evil.example/jwks"}"#,
        r#"{"alg":"HS256","kid":"k1","jwk":{"kty":"oct","k":"AAAA"}}"#,
        r#"{"alg":"HS256","kid":"k1","x5u":"https://evil.example/cert"}"#,
        r#"{"alg":"HS256","kid":"k1","crit":["exp"]}"#,
    ] {
        let token = forge(header, &p, SECRET);
        assert_eq!(
            invalid(&format!("Bearer {token}")),
            VerifyError::UnsupportedHeader,
            "{header}"
        );
    }
    // Duplicate alg is refused by the strict parser.
    let token = forge(r#"{"alg":"none","alg":"HS256","kid":"k1"}"#, &p, SECRET);
    assert!(matches!(
        invalid(&format!("Bearer {token}")),
        VerifyError::Malformed | VerifyError::UnsupportedAlgorithm
    ));
}

#[test]
fn kid_rules() {
    let p = payload(0, 0, 300);
    // Path characters in kid: no such key (and never a file lookup).
    for kid in ["../../etc/passwd", "/etc/passwd", "k1/../k1", "K1", ""] {
        let token = forge(
            &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
            &p,
            SECRET,
        );
        assert_eq!(
            invalid(&format!("Bearer {token}")),
            VerifyError::UnknownKey,
            "{kid}"
        );
    }
    // No kid: the default key only.
    let no_kid = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &p, SECRET);
    assert!(matches!(
        run(&format!("Bearer {no_kid}")),
        Decision::Allow { .. }
    ));
    // No kid signed with a non-default key: bad signature.
    let no_kid_other = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &p, OTHER_SECRET);
    assert_eq!(
        invalid(&format!("Bearer {no_kid_other}")),
        VerifyError::BadSignature
    );
    // No kid and no default key: refused.
    let d = decide(
        &headers(&format!("Bearer {no_kid}")),
        &Policy::NONE,
        &ring_without_default(),
        &settings(false),
        now(),
    );
    assert_eq!(d.reason(), Some(Reason::Invalid(VerifyError::UnknownKey)));
}

#[test]
fn signature_attacks() {
    let token = issue("k1", SECRET, &["user"]);
    // Wrong key under a valid kid.
    let wrong = issue("k1", OTHER_SECRET, &["user"]);
    assert_eq!(
        invalid(&format!("Bearer {wrong}")),
        VerifyError::BadSignature
    );
    // Tampered payload: roles escalated, signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let tampered_payload = payload(0, 0, 300).replace(r#"["admin"]"#, r#"["admin","root"]"#);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(tampered_payload.as_bytes()),
        parts[2]
    );
    assert_eq!(
        invalid(&format!("Bearer {tampered}")),
        VerifyError::BadSignature
    );
    // Altered signature (a character in the middle flipped).
    let mut sig = parts[2].to_owned().into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    assert_eq!(
        invalid(&format!("Bearer {altered}")),
        VerifyError::BadSignature
    );
    // Truncated signature: not even a valid HMAC encoding.
    let cut = &token[..token.len() - 2];
    assert!(matches!(
        invalid(&format!("Bearer {cut}")),
        VerifyError::BadSignature | VerifyError::Malformed
    ));
    // Signature stripped.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert!(matches!(
        invalid(&format!("Bearer {stripped}")),
        VerifyError::BadSignature | VerifyError::Malformed
    ));
}

#[test]
fn time_claims() {
    let leeway = 30;
    // Expired beyond the leeway; within the leeway still valid.
    let expired = forge(H_K1, &payload(-600, -600, -(leeway + 5)), SECRET);
    assert_eq!(invalid(&format!("Bearer {expired}")), VerifyError::Expired);
    let just_expired = forge(H_K1, &payload(-600, -600, -(leeway - 10)), SECRET);
    assert!(matches!(
        run(&format!("Bearer {just_expired}")),
        Decision::Allow { .. }
    ));
    // Not yet valid.
    let future_nbf = forge(H_K1, &payload(0, leeway + 60, 600), SECRET);
    assert_eq!(
        invalid(&format!("Bearer {future_nbf}")),
        VerifyError::NotYetValid
    );
    // iat in the future (nbf fine).
    let future_iat = forge(H_K1, &payload(leeway + 60, 0, 600), SECRET);
    assert_eq!(
        invalid(&format!("Bearer {future_iat}")),
        VerifyError::IssuedInFuture
    );
    // exp required.
    let no_exp = forge(
        H_K1,
        &format!(
            r#"{{"sub":"42","email":"e","roles":[],"iat":{n},"nbf":{n},"jti":"j"}}"#,
            n = now()
        ),
        SECRET,
    );
    assert!(matches!(
        invalid(&format!("Bearer {no_exp}")),
        VerifyError::MissingClaim | VerifyError::Malformed
    ));
}

#[test]
fn issuer_and_audience_when_configured() {
    let settings = Settings {
        verifier: Verifier::new(&VerifierConfig {
            issuer: Some("login".into()),
            audience: Some("edge".into()),
            ..VerifierConfig::default()
        }),
        realm: "edge".into(),
        dry_run: false,
        token_cache: None,
    };
    let with = |iss: &str, aud: &str| {
        let p = payload(0, 0, 300).replace(
            r#""jti":"j1""#,
            &format!(r#""jti":"j1","iss":"{iss}","aud":"{aud}""#),
        );
        let token = forge(H_K1, &p, SECRET);
        decide(
            &headers(&format!("Bearer {token}")),
            &Policy::NONE,
            &ring(),
            &settings,
            now(),
        )
    };
    assert!(matches!(with("login", "edge"), Decision::Allow { .. }));
    assert_eq!(
        with("evil", "edge").reason(),
        Some(Reason::Invalid(VerifyError::WrongIssuer))
    );
    assert_eq!(
        with("login", "other").reason(),
        Some(Reason::Invalid(VerifyError::WrongAudience))
    );
    // A configured issuer/audience is required: a token without the claim is refused.
    let claims_without = |extra: &str| {
        let p = payload(0, 0, 300).replace(r#""jti":"j1""#, &format!(r#""jti":"j1"{extra}"#));
        let token = forge(H_K1, &p, SECRET);
        decide(
            &headers(&format!("Bearer {token}")),
            &Policy::NONE,
            &ring(),
            &settings,
            now(),
        )
    };
    for extra in ["", r#","iss":"login""#, r#","aud":"edge""#] {
        let Decision::Deny(denial) = claims_without(extra) else {
            panic!("allowed without iss/aud: {extra:?}");
        };
        assert_eq!(denial.reason, Reason::Invalid(VerifyError::MissingClaim));
        assert_eq!(denial.status.http_code(), 401);
        assert_eq!(
            denial.body,
            r#"{"error":"invalid_token","message":"missing claim"}"#
        );
    }
}

#[test]
fn size_limit_and_garbage() {
    let huge = "a".repeat(9000);
    assert_eq!(invalid(&format!("Bearer {huge}")), VerifyError::TooLarge);
    let huge_jwt = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(500)
    );
    assert_eq!(
        invalid(&format!("Bearer {huge_jwt}")),
        VerifyError::TooLarge
    );
    for garbage in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        "....",
        "e30.e30.e30",
        "e30.e30.",
    ] {
        let r = run(&format!("Bearer {garbage}")).reason();
        assert!(
            matches!(
                r,
                Some(Reason::Invalid(
                    VerifyError::Malformed | VerifyError::UnsupportedAlgorithm
                ))
            ),
            "{garbage}: {r:?}"
        );
    }
    // Valid base64 header that is not JSON.
    let not_json = format!("{}.{}.sig", b64(b"hello"), b64(b"world"));
    assert_eq!(
        invalid(&format!("Bearer {not_json}")),
        VerifyError::Malformed
    );
    // Garbage payload under a valid signature.
    let token = forge(H_K1, "not json", SECRET);
    assert_eq!(invalid(&format!("Bearer {token}")), VerifyError::Malformed);
}

#[test]
fn control_characters_in_claims_never_become_headers() {
    let p = payload(0, 0, 300).replace(r#""sub":"42""#, r#""sub":"42\r\nx-auth-roles: admin""#);
    let token = forge(H_K1, &p, SECRET);
    assert_eq!(invalid(&format!("Bearer {token}")), VerifyError::Malformed);
}

/// Roles are joined with ',' into `x-auth-roles`: a role holding one would read upstream as two
/// (`"user,admin"` as `user` and `admin`). Refused as the external issuers' path refuses it
/// (attack review of the hand-written answer, L8).
#[test]
fn a_role_holding_a_comma_never_becomes_two() {
    let token = issue("k1", SECRET, &["user,admin"]);
    assert_eq!(invalid(&format!("Bearer {token}")), VerifyError::Malformed);
    let token = issue("k1", SECRET, &["user", "admin"]);
    assert!(matches!(
        run(&format!("Bearer {token}")),
        Decision::Allow { .. }
    ));
}

#[test]
fn require_roles() {
    let token = issue("k1", SECRET, &["admin", "ops"]);
    let h = headers(&format!("Bearer {token}"));
    let check = |roles: &str| {
        decide(
            &h,
            &Policy::require_roles(roles),
            &ring(),
            &settings(false),
            now(),
        )
    };
    assert!(matches!(check("admin"), Decision::Allow { .. }));
    assert!(matches!(check(" admin , ops ,"), Decision::Allow { .. }));
    assert!(matches!(check(""), Decision::Allow { .. }));
    let Decision::Deny(d) = check("admin, billing") else {
        panic!("allowed without billing");
    };
    assert_eq!(
        d,
        Denial {
            status: DenyStatus::Forbidden,
            reason: Reason::InsufficientScope,
            www_authenticate: r#"Bearer realm="edge", error="insufficient_scope", error_description="missing required role", scope="admin billing""#.into(),
            body: r#"{"error":"insufficient_scope","message":"missing required role"}"#.into(),
        }
    );
    assert_eq!(d.status.http_code(), 403);
    assert_eq!(d.status.grpc_code(), 7);
    // A role name that is not a valid scope-token is left out of the challenge.
    let Decision::Deny(d) = check("we\"ird") else {
        panic!("allowed");
    };
    assert!(
        !d.www_authenticate.contains("scope=\""),
        "{}",
        d.www_authenticate
    );
    // Invalid tokens are 401 even on a role-protected route.
    let d = decide(
        &headers("Bearer x.y.z"),
        &Policy::require_roles("admin"),
        &ring(),
        &settings(false),
        now(),
    );
    assert!(matches!(
        d,
        Decision::Deny(Denial {
            status: DenyStatus::Unauthorized,
            ..
        })
    ));
}

#[test]
fn dry_run_allows_but_reports() {
    let s = settings(true);
    let d = decide(&HashMap::new(), &Policy::NONE, &ring(), &s, now());
    let Decision::DryRunAllow {
        claims: None,
        kid: None,
        denial,
    } = &d
    else {
        panic!("{d:?}");
    };
    assert_eq!(denial.reason, Reason::MissingToken);
    assert_eq!(d.label(), "dry_run_allow");

    // Valid token lacking a role: claims kept so identity headers are still set.
    let token = issue("k1", SECRET, &["user"]);
    let d = decide(
        &headers(&format!("Bearer {token}")),
        &Policy::require_roles("admin"),
        &ring(),
        &s,
        now(),
    );
    let Decision::DryRunAllow {
        claims: Some(c),
        kid: Some(kid),
        denial,
    } = &d
    else {
        panic!("{d:?}");
    };
    assert_eq!(c.sub, "42");
    assert_eq!(&**kid, "k1");
    assert_eq!(denial.reason, Reason::InsufficientScope);

    // Invalid token: no claims.
    let wrong = issue("k1", OTHER_SECRET, &[]);
    let d = decide(
        &headers(&format!("Bearer {wrong}")),
        &Policy::NONE,
        &ring(),
        &s,
        now(),
    );
    assert!(matches!(d, Decision::DryRunAllow { claims: None, .. }));
    assert_eq!(d.reason(), Some(Reason::Invalid(VerifyError::BadSignature)));

    // Valid token: a plain allow, even in dry-run.
    let d = decide(
        &headers(&format!("Bearer {token}")),
        &Policy::NONE,
        &ring(),
        &s,
        now(),
    );
    assert!(matches!(d, Decision::Allow { .. }));
    assert_eq!(d.label(), "allow");
}

fn valid_token() -> String {
    issue("k1", SECRET, &["admin"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary header values never panic and are never allowed.
    #[test]
    fn arbitrary_authorization_is_never_allowed(value in ".{0,300}") {
        let d = run(&value);
        prop_assert!(!matches!(d, Decision::Allow { .. }), "allowed: {:?}", d);
    }

    /// Arbitrary header maps (including random names) never panic or allow. Biased: a name is
    /// `authorization` with weight 1 in 4 (about 2 in 3 maps of 4+ entries hold one) and a
    /// value starts with `Bearer ` half the time; random names alone never spelled it.
    #[test]
    fn arbitrary_headers_never_allowed(
        map in proptest::collection::hash_map(
            prop_oneof![1 => Just("authorization".to_owned()), 3 => "[a-z:-]{0,20}"],
            prop_oneof!["Bearer [A-Za-z0-9._-]{0,100}", ".{0,100}"],
            0..8,
        ),
    ) {
        let d = decide(&map, &Policy::NONE, &ring(), &settings(false), now());
        prop_assert!(!matches!(d, Decision::Allow { .. }), "allowed: {:?}", d);
    }

    /// Bearer + random b64token-shaped strings with two dots: never allowed. Biased: half the
    /// headers are the real HS256 `k1` header (random text never decoded to one), so the
    /// payload and signature checks are reached.
    #[test]
    fn random_jwt_shapes_never_allowed(
        a in prop_oneof![
            Just(base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, H_K1)),
            "[A-Za-z0-9_-]{0,80}",
        ],
        b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,60}",
    ) {
        let d = run(&format!("Bearer {a}.{b}.{c}"));
        prop_assert!(!matches!(d, Decision::Allow { .. }), "allowed: {:?}", d);
    }

    /// Flipping, inserting or deleting any byte of a valid token never yields an allow unless
    /// the result is the original token.
    #[test]
    fn mutated_valid_tokens_never_allowed(pos in any::<prop::sample::Index>(), byte in any::<u8>(), op in 0u8..3) {
        let token = valid_token();
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => { bytes.remove(i); }
        }
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        let d = run(&format!("Bearer {mutated}"));
        if let Decision::Allow { .. } = d {
            // Base64 has slack bits in the last character of a segment: a mutation that
            // decodes to the same bytes is the same token, so it is fine to accept it.
            let same = |s: &str| -> Vec<Vec<u8>> {
                s.split('.').map(|p| {
                    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).unwrap_or_default()
                }).collect()
            };
            prop_assert_eq!(same(&mutated), same(&token), "allowed a different token");
        }
    }

    /// Arbitrary `require_roles` values never panic, and a valid token is allowed exactly when
    /// it carries every listed role.
    #[test]
    fn arbitrary_policies(list in ".{0,60}") {
        let token = valid_token(); // roles: ["admin"]
        let policy = Policy::require_roles(&list);
        let d = decide(&headers(&format!("Bearer {token}")), &policy, &ring(), &settings(false), now());
        let satisfied = policy.required_roles().all(|r| r == "admin");
        prop_assert_eq!(matches!(d, Decision::Allow { .. }), satisfied);
    }

    /// Tokens with random payloads signed by a key outside the ring are never allowed. Biased:
    /// each role is `admin` half the time (about half the tokens carry it; random roles never did).
    #[test]
    fn foreign_key_never_allowed(
        sub in "[a-z0-9]{1,10}",
        roles in proptest::collection::vec(prop_oneof![Just("admin".to_owned()), "[a-z]{1,6}"], 0..4),
    ) {
        let p = payload(0, 0, 300)
            .replace(r#""sub":"42""#, &format!(r#""sub":"{sub}""#))
            .replace(r#"["admin"]"#, &serde_json::to_string(&roles).unwrap());
        let token = forge(H_K1, &p, b"an-attacker-key-of-at-least-32-bytes!!");
        let d = run(&format!("Bearer {token}"));
        prop_assert!(!matches!(d, Decision::Allow { .. }), "allowed: {:?}", d);
    }
}

#[test]
fn decide_refuses_a_revoked_token_with_401_token_revoked() {
    let token = issue("k1", SECRET, &["admin"]);
    let h = headers(&format!("Bearer {token}"));
    let c = settings(false)
        .verifier
        .verify(&token, &ring(), now())
        .unwrap();
    let entry = FeedEntry {
        id: 1,
        sub: c.sub.clone(),
        jti: Some(c.jti.clone()),
        revoked_at: 0,
        expires_at: i64::try_from(c.exp).unwrap(),
        reason: "logout".into(),
    };
    let set = RevocationSet::default().with(&[entry], now(), 30);
    let decide = |set: Option<&RevocationSet>, dry_run: bool| {
        super::decide(&h, &Policy::NONE, &ring(), set, &settings(dry_run), now())
    };
    match decide(Some(&set), false) {
        Decision::Deny(d) => {
            assert_eq!(d.status.http_code(), 401);
            assert_eq!(d.reason, Reason::Revoked);
            assert_eq!(d.reason.label(), "revoked");
            assert_eq!(
                d.www_authenticate,
                r#"Bearer realm="edge", error="invalid_token", error_description="token revoked""#
            );
            assert_eq!(
                d.body,
                r#"{"error":"invalid_token","message":"token revoked"}"#
            );
        }
        other => panic!("{other:?}"),
    }
    // Dry run: let through, without identity.
    assert!(matches!(
        decide(Some(&set), true),
        Decision::DryRunAllow { claims: None, denial, .. } if denial.reason == Reason::Revoked
    ));
    // Without the set, or with another token revoked: allowed.
    assert!(matches!(decide(None, false), Decision::Allow { .. }));
    let other = RevocationSet::default().with(&[token_entry_for_other()], now(), 30);
    assert!(matches!(
        decide(Some(&other), false),
        Decision::Allow { .. }
    ));
}

fn token_entry_for_other() -> FeedEntry {
    let exp = i64::try_from(now()).unwrap() + 600;
    FeedEntry {
        id: 9,
        sub: "42".into(),
        jti: Some("someone-else".into()),
        revoked_at: exp - 600,
        expires_at: exp,
        reason: "logout".into(),
    }
}
