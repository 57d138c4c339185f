//! Verification of access tokens: the rules ext-authz enforces on every request.
//!
//! Order matters for cost and safety: the size limit comes before any parsing; the header is
//! parsed strictly (only the parameters login-service writes: `alg`, `typ`, `kid`) so `jku`, `x5u`,
//! `jwk` and `crit` smuggling is refused outright; `alg` must be exactly `HS256`, which rules out
//! `none` and RS/ES/PS key confusion before a key is even chosen; then the signature and the time
//! claims are checked by `jsonwebtoken`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::keys::Keyring;

/// Default limit on the token's length; real tokens are a few hundred bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Why a token was refused. Each variant maps to one metric label ([`VerifyError::reason`]) and
/// one RFC 6750 `error_description`; none carries token bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than the configured limit; refused before parsing.
    #[error("token too large")]
    TooLarge,
    /// Not three base64url segments, or a header/payload that is not the JSON we issue.
    #[error("malformed token")]
    Malformed,
    /// A header parameter we never issue (`jku`, `x5u`, `jwk`, `crit`, ...).
    #[error("unsupported token header")]
    UnsupportedHeader,
    /// Any `alg` other than `HS256` (including `none`).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `kid` not in the keyring, or no `kid` and no default key.
    #[error("unknown signing key")]
    UnknownKey,
    /// The HMAC does not match.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` does not match the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not match the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim")]
    MissingClaim,
}

impl VerifyError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::UnsupportedHeader => "unsupported_header",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
        }
    }

    /// Every variant, for exhaustive tests and pre-registered metric labels.
    pub const ALL: [VerifyError; 12] = [
        Self::TooLarge,
        Self::Malformed,
        Self::UnsupportedHeader,
        Self::UnsupportedAlgorithm,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInFuture,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::MissingClaim,
    ];
}

/// What a deployment may tune about validation.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Clock-skew allowance in seconds for `exp`, `nbf`, `iat`.
    pub leeway_secs: u64,
    /// Tokens longer than this are refused unparsed.
    pub max_token_len: usize,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            issuer: None,
            audience: None,
        }
    }
}

/// The header parameters login-service writes; anything else is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, rename = "typ")]
    _typ: Option<std::borrow::Cow<'a, str>>,
}

/// Longest base64url header we parse; ours is about 60 characters.
const MAX_HEADER_B64_LEN: usize = 512;

/// Validates tokens against a [`Keyring`]. Cheap to share: immutable after construction.
#[derive(Debug, Clone)]
pub struct Verifier {
    validation: Validation,
    leeway_secs: u64,
    max_token_len: usize,
}

impl Verifier {
    /// Builds a verifier; `exp`, `nbf`, `iat` and `sub` are always required, `iss`/`aud` when
    /// configured.
    pub fn new(config: &VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Why: jsonwebtoken compares `iss`/`aud` only when the token carries them; a configured
        // one must also be a required claim, or a token without it would be accepted.
        let mut required = vec!["exp", "nbf", "iat", "sub"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            validation,
            leeway_secs: config.leeway_secs,
            max_token_len: config.max_token_len,
        }
    }

    /// Verifies `token` and returns its claims; `now` (Unix seconds) is used for the `iat` check.
    pub fn verify(&self, token: &str, keys: &Keyring, now: u64) -> Result<Claims, VerifyError> {
        if token.len() > self.max_token_len {
            return Err(VerifyError::TooLarge);
        }
        let header_b64 = token.split('.').next().unwrap_or_default();
        if token.bytes().filter(|&b| b == b'.').count() != 2
            || header_b64.len() > MAX_HEADER_B64_LEN
        {
            return Err(VerifyError::Malformed);
        }
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| VerifyError::Malformed)?;
        let header: Header<'_> = match serde_json::from_slice(&header_json) {
            Ok(h) => h,
            Err(e) if e.is_data() && e.to_string().starts_with("unknown field") => {
                return Err(VerifyError::UnsupportedHeader);
            }
            Err(_) => return Err(VerifyError::Malformed),
        };
        if header.alg != "HS256" {
            return Err(VerifyError::UnsupportedAlgorithm);
        }
        let key = keys
            .get(header.kid.as_deref())
            .ok_or(VerifyError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key.decoding(), &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;
        if claims.iat > now.saturating_add(self.leeway_secs) {
            return Err(VerifyError::IssuedInFuture);
        }
        Ok(claims)
    }
}

fn map_jwt_error(kind: &ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => VerifyError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            VerifyError::UnsupportedAlgorithm
        }
        _ => VerifyError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::Issuer;
    use crate::keys::Keyring;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ring() -> Keyring {
        Keyring::single("k1", SECRET).unwrap()
    }

    fn issuer() -> Issuer {
        Issuer {
            ttl: Duration::from_secs(600),
            issuer: Some("login".into()),
            audience: Some("edge".into()),
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(&VerifierConfig {
            issuer: Some("login".into()),
            audience: Some("edge".into()),
            ..VerifierConfig::default()
        })
    }

    fn token_at(now: u64) -> String {
        let ring = ring();
        let key = ring.get(None).unwrap();
        issuer()
            .issue(key, "42", "a@example.com", &["admin".into()], now)
            .unwrap()
            .token
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn issued_token_round_trips() {
        let now = crate::now_unix();
        let claims = verifier().verify(&token_at(now), &ring(), now).unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.email, "a@example.com");
        assert!(claims.has_role("admin"));
        assert_eq!(claims.exp - claims.iat, 600);
        assert_eq!(claims.jti.len(), 32);
    }

    #[test]
    fn time_claims_are_enforced_with_leeway() {
        let now = crate::now_unix();
        let v = verifier();
        // Expired 10 minutes ago.
        let old = token_at(now - 1200);
        assert_eq!(v.verify(&old, &ring(), now), Err(VerifyError::Expired));
        // Issued 10 s in the future: within the 30 s leeway.
        assert!(v.verify(&token_at(now + 10), &ring(), now).is_ok());
        // Issued 5 minutes in the future: nbf is checked first.
        assert_eq!(
            v.verify(&token_at(now + 300), &ring(), now),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn wrong_issuer_audience_and_key() {
        let now = crate::now_unix();
        let token = token_at(now);
        let other_iss = Verifier::new(&VerifierConfig {
            issuer: Some("someone-else".into()),
            ..VerifierConfig::default()
        });
        assert_eq!(
            other_iss.verify(&token, &ring(), now),
            Err(VerifyError::WrongIssuer)
        );
        let other_aud = Verifier::new(&VerifierConfig {
            audience: Some("other".into()),
            ..VerifierConfig::default()
        });
        assert_eq!(
            other_aud.verify(&token, &ring(), now),
            Err(VerifyError::WrongAudience)
        );
        let other_key = Keyring::single("k1", &[b'x'; 32]).unwrap();
        assert_eq!(
            verifier().verify(&token, &other_key, now),
            Err(VerifyError::BadSignature)
        );
        let other_kid = Keyring::single("k2", SECRET).unwrap();
        assert_eq!(
            verifier().verify(&token, &other_kid, now),
            Err(VerifyError::UnknownKey)
        );
    }

    /// jsonwebtoken checks `iss`/`aud` only when the token carries them: a configured issuer or
    /// audience must also make the claim required, or a token without it would pass.
    #[test]
    fn configured_issuer_and_audience_are_required() {
        let now = crate::now_unix();
        let ring = ring();
        let key = ring.get(None).unwrap();
        let issue = |issuer: Option<&str>, audience: Option<&str>| {
            Issuer {
                ttl: Duration::from_secs(600),
                issuer: issuer.map(str::to_owned),
                audience: audience.map(str::to_owned),
            }
            .issue(key, "42", "a@example.com", &["admin".into()], now)
            .unwrap()
            .token
        };
        let both = verifier();
        let iss_only = Verifier::new(&VerifierConfig {
            issuer: Some("login".into()),
            ..VerifierConfig::default()
        });
        let aud_only = Verifier::new(&VerifierConfig {
            audience: Some("edge".into()),
            ..VerifierConfig::default()
        });
        let cases = [
            (&both, None, None, Err(VerifyError::MissingClaim)),
            (&both, Some("login"), None, Err(VerifyError::MissingClaim)),
            (&both, None, Some("edge"), Err(VerifyError::MissingClaim)),
            (&both, Some("login"), Some("edge"), Ok(())),
            (&iss_only, None, None, Err(VerifyError::MissingClaim)),
            (
                &iss_only,
                None,
                Some("edge"),
                Err(VerifyError::MissingClaim),
            ),
            (&iss_only, Some("login"), None, Ok(())),
            (&aud_only, None, None, Err(VerifyError::MissingClaim)),
            (
                &aud_only,
                Some("login"),
                None,
                Err(VerifyError::MissingClaim),
            ),
            (&aud_only, None, Some("edge"), Ok(())),
        ];
        for (verifier, iss, aud, want) in cases {
            let got = verifier.verify(&issue(iss, aud), &ring, now).map(|_| ());
            assert_eq!(got, want, "iss {iss:?} aud {aud:?}");
        }
        // Without configuration neither claim is required (and one present is not checked).
        let open = Verifier::new(&VerifierConfig::default());
        assert!(open.verify(&issue(None, None), &ring, now).is_ok());
        assert!(
            open.verify(&issue(Some("x"), Some("y")), &ring, now)
                .is_ok()
        );
    }

    #[test]
    fn hostile_headers_are_refused_before_key_lookup() {
        let now = crate::now_unix();
        let token = token_at(now);
        let rest = token.split_once('.').unwrap().1;
        let cases = [
            (
                r#"{"alg":"none","typ":"JWT"}"#,
                VerifyError::UnsupportedAlgorithm,
            ),
            (r#"{"alg":"None"}"#, VerifyError::UnsupportedAlgorithm),
            (
                r#"{"alg":"HS512","kid":"k1"}"#,
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":"RS256","kid":"k1"}"#,
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":"HS256","kid":"k1","jku":"https://x"}"#,
                VerifyError::UnsupportedHeader,
            ),
            (
                r#"{"alg":"HS256","kid":"k1","crit":["exp"]}"#,
                VerifyError::UnsupportedHeader,
            ),
            (
                r#"{"alg":"HS256","kid":"../../etc/passwd"}"#,
                VerifyError::UnknownKey,
            ),
            (
                r#"{"alg":"HS256","alg":"HS256","kid":"k1"}"#,
                VerifyError::Malformed,
            ),
            (r#"["HS256"]"#, VerifyError::Malformed),
        ];
        for (header, want) in cases {
            let forged = format!("{}.{rest}", b64(header));
            assert_eq!(
                verifier().verify(&forged, &ring(), now),
                Err(want),
                "{header}"
            );
        }
    }

    #[test]
    fn shape_and_size() {
        let now = crate::now_unix();
        let v = verifier();
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            "..",
            &token_at(now).replace('.', ""),
        ] {
            assert_eq!(
                v.verify(bad, &ring(), now),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
        let huge = format!("{}.{}.x", b64(r#"{"alg":"HS256"}"#), "A".repeat(9000));
        assert_eq!(v.verify(&huge, &ring(), now), Err(VerifyError::TooLarge));
    }

    #[test]
    fn tampered_payload_or_signature() {
        let now = crate::now_unix();
        let token = token_at(now);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = b64(&payload.replace("\"42\"", "\"1\""));
        assert_eq!(
            verifier().verify(&parts.join("."), &ring(), now),
            Err(VerifyError::BadSignature)
        );
        let mut sig = token.clone().into_bytes();
        let last = sig.len() - 2;
        sig[last] = if sig[last] == b'A' { b'B' } else { b'A' };
        let sig = String::from_utf8(sig).unwrap();
        assert!(verifier().verify(&sig, &ring(), now).is_err());
    }

    #[test]
    fn reasons_are_distinct() {
        let mut reasons: Vec<_> = VerifyError::ALL.iter().map(|e| e.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), VerifyError::ALL.len());
    }
}

/// Property tests: "never `Ok` without the right key" and "no input panics".
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::keys::{Key, Keyring};
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ring() -> Keyring {
        Keyring::single("k1", SECRET).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A correctly HMAC-signed token over arbitrary header and payload JSON text.
    fn sign(header: &str, payload: &str, secret: &[u8]) -> String {
        let key = Key::new("k1", secret).unwrap();
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding(), Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    }

    fn payload(now: u64, sub: &str) -> String {
        serde_json::json!({
            "sub": sub, "email": "p@example.com", "roles": ["admin"],
            "iat": now, "nbf": now, "exp": now + 600, "jti": "j",
        })
        .to_string()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A token signed with any other key (≥ 32 bytes, different from ours) is never valid,
        /// whatever kid it names.
        #[test]
        fn never_ok_without_the_right_key(
            secret in proptest::collection::vec(any::<u8>(), 32..80),
            kid in proptest::option::of("k1|k2|default|[a-z0-9._-]{1,20}"),
            sub in "[a-z0-9]{1,12}",
        ) {
            prop_assume!(secret != SECRET);
            let now = crate::now_unix();
            let header = match &kid {
                Some(kid) => serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            };
            let token = sign(&header.to_string(), &payload(now, &sub), &secret);
            let got = Verifier::new(&VerifierConfig::default()).verify(&token, &ring(), now);
            prop_assert!(
                matches!(got, Err(VerifyError::BadSignature | VerifyError::UnknownKey)),
                "{:?}", got
            );
        }

        /// Signed with the right key, only `alg` exactly `HS256` and only `alg`/`typ`/`kid`
        /// are accepted: case variants, `none`, RS/ES/PS and extra parameters never are.
        #[test]
        fn only_hs256_with_our_parameters(
            alg in "HS256|none|None|NONE|nOnE|hs256|HS384|HS512|RS256|ES256|PS256|[A-Za-z0-9]{0,8}",
            extra in proptest::option::of("jku|x5u|jwk|crit|x5c|cty|b64|zip|[a-z]{1,6}"),
        ) {
            let now = crate::now_unix();
            let mut header = serde_json::json!({"alg": alg, "kid": "k1"});
            if let Some(name) = &extra {
                header[name] = serde_json::json!("x");
            }
            let token = sign(&header.to_string(), &payload(now, "1"), SECRET);
            let got = Verifier::new(&VerifierConfig::default()).verify(&token, &ring(), now);
            let extra_ok = extra.as_deref().is_none_or(|n| n == "typ" || n == "kid" || n == "alg");
            prop_assert_eq!(got.is_ok(), alg == "HS256" && extra_ok, "{:?}", got);
        }

        /// Arbitrary strings (including three-segment shapes) never panic and are never valid.
        /// Biased: half the shaped first segments are a real HS256 `k1` header (random text
        /// never decoded to one), so the payload and signature checks are reached.
        #[test]
        fn arbitrary_text_is_never_valid(
            a in prop_oneof![
                Just(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                    r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
                )),
                "[A-Za-z0-9_=+/-]{0,80}",
            ],
            b in "[A-Za-z0-9_=+/-]{0,160}",
            c in "[A-Za-z0-9_=+/-]{0,60}", raw in ".{0,200}",
        ) {
            let now = crate::now_unix();
            let v = Verifier::new(&VerifierConfig::default());
            let shaped = format!("{a}.{b}.{c}");
            prop_assert!(v.verify(&shaped, &ring(), now).is_err());
            prop_assert!(v.verify(&raw, &ring(), now).is_err());
        }

        /// Re-encoding any segment of a valid token in a non-canonical form (padding, the
        /// `+`/`/` alphabet) is refused unless it decodes to the very same bytes.
        #[test]
        fn non_canonical_segments_are_refused(segment in 0usize..3, pad in 1usize..3, std_alphabet in any::<bool>()) {
            let now = crate::now_unix();
            let token = sign(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, &payload(now, "1"), SECRET);
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[segment].push_str(&"=".repeat(pad));
            if std_alphabet {
                parts[segment] = parts[segment].replace('-', "+").replace('_', "/");
            }
            let got = Verifier::new(&VerifierConfig::default()).verify(&parts.join("."), &ring(), now);
            prop_assert!(got.is_err(), "{:?}", got);
        }
    }
}
