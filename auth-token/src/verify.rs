//! Verification of access tokens: the rules ext-authz enforces on every request.
//!
//! Order matters for cost and safety: the size limit comes before any parsing; the header is
//! parsed strictly (only the parameters login-service writes: `alg`, `typ`, `kid`) so `jku`, `x5u`,
//! `jwk` and `crit` smuggling is refused outright; `alg` must be one of the algorithms the
//! keyring's keys use (an HS256-only ring accepts exactly `HS256`), which rules out `none` before
//! a key is even chosen; then the key named by `kid` must have exactly that algorithm — a key's
//! algorithm is fixed by its type ([`crate::keys`]), so an HS256 token "signed" with an Ed25519
//! or RSA public key as the HMAC secret is refused ([`VerifyError::KeyAlgorithmMismatch`]); then
//! the signature and the time claims are checked by `jsonwebtoken`.
//!
//! Header strictness ([`HeaderPolicy`]) is chosen by whoever builds the [`Verifier`]: `Strict`
//! (the default of [`Verifier::new`]) for our own tokens; `Lenient`, via
//! [`Verifier::with_header_policy`], for an external issuer whose tokens carry `x5t`, `jku`,
//! `x5u`...: those parameters are then ignored and NEVER fetched (keys only ever come from the
//! keyring the caller passes), and `crit` is still refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::claims::Claims;
use crate::keys::{Key, Keyring};

/// Default limit on the token's length; real tokens are a few hundred bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The algorithms a key can have, by the `alg` spelling of RFC 7518 (exact, case-sensitive).
const SUPPORTED: [(&str, Algorithm); 5] = [
    ("HS256", Algorithm::HS256),
    ("EdDSA", Algorithm::EdDSA),
    ("RS256", Algorithm::RS256),
    ("PS256", Algorithm::PS256),
    ("ES256", Algorithm::ES256),
];

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
    /// An `alg` no key of the keyring uses (including `none`).
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
    /// The header's `alg` is not the algorithm of the key its `kid` names: algorithm confusion
    /// (e.g. HS256 with an EdDSA or RSA key's public bytes as the HMAC secret).
    #[error("algorithm does not match the key")]
    KeyAlgorithmMismatch,
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
            Self::KeyAlgorithmMismatch => "alg_key_mismatch",
        }
    }

    /// Every variant, for exhaustive tests and pre-registered metric labels.
    pub const ALL: [VerifyError; 13] = [
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
        Self::KeyAlgorithmMismatch,
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

/// Which JWS header parameters a [`Verifier`] tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderPolicy {
    /// Only `alg`, `typ`, `kid` (what login-service writes); anything else is
    /// [`VerifyError::UnsupportedHeader`]. For our own tokens.
    #[default]
    Strict,
    /// Other parameters (`x5t`, `jku`, `x5u`, `jwk`...) are ignored, never fetched nor used;
    /// `crit` is still refused (we understand no extension). For external issuers.
    Lenient,
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

/// An external issuer's header: the parameters we use, `crit` noticed, the rest ignored.
#[derive(Deserialize)]
struct LenientHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Longest base64url header we parse; ours is about 60 characters.
const MAX_HEADER_B64_LEN: usize = 512;

/// Validates tokens against a [`Keyring`]. Cheap to share: immutable after construction.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// For [`Verifier::verify`] (our [`Claims`]), one per entry of `SUPPORTED`: `jsonwebtoken`
    /// wants the validation's algorithms to be of the key's family.
    own: Vec<Validation>,
    /// For [`Verifier::verify_claims`]: only `exp` (and a configured `iss`/`aud`) required.
    foreign: Vec<Validation>,
    leeway_secs: u64,
    max_token_len: usize,
    header_policy: HeaderPolicy,
}

impl Verifier {
    /// Builds a verifier with the [`HeaderPolicy::Strict`] header; `exp`, `nbf`, `iat` and `sub`
    /// are always required by [`Verifier::verify`], `iss`/`aud` when configured.
    pub fn new(config: &VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Why: jsonwebtoken compares `iss`/`aud` only when the token carries them; a configured
        // one must also be a required claim, or a token without it would be accepted.
        let mut required = vec!["exp", "nbf", "iat", "sub"];
        let mut foreign_required = vec!["exp"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
                foreign_required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
            foreign_required.push("iss");
        }
        let mut foreign = validation.clone();
        validation.set_required_spec_claims(&required);
        foreign.set_required_spec_claims(&foreign_required);
        let per_alg = |base: &Validation| {
            SUPPORTED
                .iter()
                .map(|&(_, alg)| {
                    let mut v = base.clone();
                    v.algorithms = vec![alg];
                    v
                })
                .collect()
        };
        Self {
            own: per_alg(&validation),
            foreign: per_alg(&foreign),
            leeway_secs: config.leeway_secs,
            max_token_len: config.max_token_len,
            header_policy: HeaderPolicy::Strict,
        }
    }

    /// The same verifier with another header policy (see the module docs for when to use which).
    pub fn with_header_policy(mut self, policy: HeaderPolicy) -> Self {
        self.header_policy = policy;
        self
    }

    /// The clock-skew allowance (seconds) for `exp`, `nbf` and `iat`.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Tokens longer than this are refused before any parsing ([`VerifyError::TooLarge`]).
    pub fn max_token_len(&self) -> usize {
        self.max_token_len
    }

    /// Verifies `token` and returns its claims; `now` (Unix seconds) is used for the `iat` check.
    pub fn verify(&self, token: &str, keys: &Keyring, now: u64) -> Result<Claims, VerifyError> {
        let (key, index) = self.select_key(token, keys)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key.decoding(), &self.own[index])
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;
        if claims.iat > now.saturating_add(self.leeway_secs) {
            return Err(VerifyError::IssuedInFuture);
        }
        Ok(claims)
    }

    /// Verifies a token whose claims are not our [`Claims`] (an external issuer's), with the same
    /// header, key, signature, `exp`/`nbf`/`iss`/`aud` rules; `exp` is required, `nbf` and `iat`
    /// are checked when present. The claims are returned as `T` (a `serde_json::Map` to map them
    /// by hand); claims that do not fit `T` are [`VerifyError::Malformed`].
    pub fn verify_claims<T: DeserializeOwned>(
        &self,
        token: &str,
        keys: &Keyring,
        now: u64,
    ) -> Result<T, VerifyError> {
        let (key, index) = self.select_key(token, keys)?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key.decoding(),
            &self.foreign[index],
        )
        .map_err(|e| map_jwt_error(e.kind()))?
        .claims;
        match claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_u64() {
                Some(iat) if iat > now.saturating_add(self.leeway_secs) => {
                    return Err(VerifyError::IssuedInFuture);
                }
                Some(_) => {}
                None => return Err(VerifyError::Malformed),
            },
        }
        serde_json::from_value(serde_json::Value::Object(claims))
            .map_err(|_| VerifyError::Malformed)
    }

    /// Size, shape, header, algorithm and key checks, before any signature work: the key to
    /// verify with and the index of its algorithm in `SUPPORTED`.
    fn select_key<'k>(
        &self,
        token: &str,
        keys: &'k Keyring,
    ) -> Result<(&'k Key, usize), VerifyError> {
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
        let (alg, kid) = match self.header_policy {
            HeaderPolicy::Strict => match serde_json::from_slice::<Header<'_>>(&header_json) {
                Ok(h) => (h.alg, h.kid),
                Err(e) if e.is_data() && e.to_string().starts_with("unknown field") => {
                    return Err(VerifyError::UnsupportedHeader);
                }
                Err(_) => return Err(VerifyError::Malformed),
            },
            HeaderPolicy::Lenient => {
                match serde_json::from_slice::<LenientHeader<'_>>(&header_json) {
                    Ok(h) if h.crit.is_some() => return Err(VerifyError::UnsupportedHeader),
                    Ok(h) => (h.alg, h.kid),
                    Err(_) => return Err(VerifyError::Malformed),
                }
            }
        };
        let (index, alg) = SUPPORTED
            .iter()
            .enumerate()
            .find(|(_, (name, _))| *name == alg)
            .map(|(i, &(_, alg))| (i, alg))
            .ok_or(VerifyError::UnsupportedAlgorithm)?;
        if !keys.uses_algorithm(alg) {
            return Err(VerifyError::UnsupportedAlgorithm);
        }
        let key = keys.get(kid.as_deref()).ok_or(VerifyError::UnknownKey)?;
        // Why: the algorithm is the key's, never the token's choice (RFC 8725 §3.1).
        if key.algorithm() != alg {
            return Err(VerifyError::KeyAlgorithmMismatch);
        }
        Ok((key, index))
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
            jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding().unwrap(), Algorithm::HS256)
                .unwrap();
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

        /// Any segment of a valid token re-encoded with or without padding and in either
        /// alphabet: accepted exactly when the text is still the canonical token (unpadded
        /// base64url), refused otherwise. `pad` 0 (no padding, the case JWS requires) is a third
        /// of the cases; unpadded AND base64url (the canonical token itself, which must pass) a
        /// sixth, and padded ones two thirds (each segment a third of those).
        #[test]
        fn non_canonical_segments_are_refused(segment in 0usize..3, pad in 0usize..3, std_alphabet in any::<bool>()) {
            let now = crate::now_unix();
            let token = sign(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, &payload(now, "1"), SECRET);
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[segment].push_str(&"=".repeat(pad));
            if std_alphabet {
                parts[segment] = parts[segment].replace('-', "+").replace('_', "/");
            }
            let respelled = parts.join(".");
            let got = Verifier::new(&VerifierConfig::default()).verify(&respelled, &ring(), now);
            prop_assert_eq!(got.is_ok(), respelled == token, "{:?}", got);
        }
    }
}

/// Every algorithm and key type: a token verifies only with a key of its own algorithm, and the
/// classic confusions are refused before any signature work.
#[cfg(test)]
mod algorithm_tests {
    use super::*;
    use crate::issue::Issuer;
    use crate::keys::{Key, Keyring};
    use crate::test_keys::{
        EC_PRIVATE_PKCS8_B64, EC_PUBLIC_PEM, RSA_PRIVATE_PKCS1_B64, RSA_PUBLIC_PEM,
    };
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::EncodingKey;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ed_private() -> (String, String) {
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    fn issuer() -> Issuer {
        Issuer {
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        }
    }

    fn claims(now: u64) -> serde_json::Value {
        serde_json::json!({
            "sub": "7", "email": "e@example.com", "roles": [], "iat": now, "nbf": now,
            "exp": now + 600, "jti": "j"
        })
    }

    fn sign_with(alg: Algorithm, kid: &str, key: &EncodingKey, now: u64) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims(now), key).unwrap()
    }

    fn rsa_signer() -> EncodingKey {
        EncodingKey::from_rsa_der(&STANDARD.decode(RSA_PRIVATE_PKCS1_B64).unwrap())
    }

    fn ec_signer() -> EncodingKey {
        EncodingKey::from_ec_der(&STANDARD.decode(EC_PRIVATE_PKCS8_B64).unwrap())
    }

    /// A ring holding one key of every type, as a rotation or a mixed gateway would.
    fn mixed_ring() -> Keyring {
        let (private, _) = ed_private();
        let mut ps = serde_json::to_value(
            Key::public_pem("x", RSA_PUBLIC_PEM.as_bytes())
                .unwrap()
                .public_jwk()
                .unwrap(),
        )
        .unwrap();
        ps["alg"] = "PS256".into();
        ps["kid"] = "ps".into();
        Keyring::from_keys(
            vec![
                Key::new("hs", SECRET).unwrap(),
                Key::ed25519_private_pem("ed", private.as_bytes()).unwrap(),
                Key::public_pem("rs", RSA_PUBLIC_PEM.as_bytes()).unwrap(),
                Key::from_jwk(&serde_json::from_value(ps).unwrap()).unwrap(),
                Key::public_pem("es", EC_PUBLIC_PEM.as_bytes()).unwrap(),
            ],
            None,
        )
        .unwrap()
    }

    #[test]
    fn each_algorithm_verifies_with_its_key_only() {
        let now = crate::now_unix();
        let ring = mixed_ring();
        let v = Verifier::new(&VerifierConfig::default());
        let ed = ring.get(Some("ed")).unwrap();
        let tokens = [
            (
                "hs",
                issuer()
                    .issue(ring.get(Some("hs")).unwrap(), "7", "e", &[], now)
                    .unwrap()
                    .token,
            ),
            ("ed", issuer().issue(ed, "7", "e", &[], now).unwrap().token),
            ("rs", sign_with(Algorithm::RS256, "rs", &rsa_signer(), now)),
            ("ps", sign_with(Algorithm::PS256, "ps", &rsa_signer(), now)),
            ("es", sign_with(Algorithm::ES256, "es", &ec_signer(), now)),
        ];
        for (kid, token) in &tokens {
            let claims = v
                .verify(token, &ring, now)
                .unwrap_or_else(|e| panic!("{kid}: {e}"));
            assert_eq!(claims.sub, "7");
            // The same token presented under every other kid: refused before the signature.
            let header: serde_json::Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            for (other, _) in &tokens {
                if other == kid {
                    continue;
                }
                let mut h = header.clone();
                h["kid"] = (*other).into();
                let rest = token.split_once('.').unwrap().1;
                let moved = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h.to_string()));
                let got = v.verify(&moved, &ring, now);
                // RS256 and PS256 share a key type but not an algorithm.
                assert_eq!(
                    got,
                    Err(VerifyError::KeyAlgorithmMismatch),
                    "{kid} as {other}"
                );
            }
        }
        // The EdDSA token verifies with the public half alone.
        let public_only = Keyring::from_keys(
            vec![Key::public_pem("ed", ed_private().1.as_bytes()).unwrap()],
            None,
        )
        .unwrap();
        assert!(v.verify(&tokens[1].1, &public_only, now).is_ok());
        assert_eq!(
            tokens[1]
                .1
                .split('.')
                .next()
                .map(|h| URL_SAFE_NO_PAD.decode(h).unwrap()),
            Some(br#"{"typ":"JWT","alg":"EdDSA","kid":"ed"}"#.to_vec())
        );
    }

    /// RS256→HS256 / "public key as HMAC secret": an HS256 token whose HMAC key is the public
    /// key's bytes (PEM or raw), under the asymmetric key's kid.
    #[test]
    fn public_key_as_hmac_secret_is_refused() {
        let now = crate::now_unix();
        let ring = mixed_ring();
        let v = Verifier::new(&VerifierConfig::default());
        let ed_pub_pem = ed_private().1;
        let ed_raw = ed25519_dalek::SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .to_bytes();
        for (kid, secret) in [
            ("ed", ed_pub_pem.as_bytes().to_vec()),
            ("ed", ed_raw.repeat(2)),
            ("rs", RSA_PUBLIC_PEM.as_bytes().to_vec()),
            ("es", EC_PUBLIC_PEM.as_bytes().to_vec()),
        ] {
            let token = sign_with(
                Algorithm::HS256,
                kid,
                &EncodingKey::from_secret(&secret),
                now,
            );
            assert_eq!(
                v.verify(&token, &ring, now),
                Err(VerifyError::KeyAlgorithmMismatch),
                "{kid}"
            );
        }
        // With only public keys in the ring, HS256 is not even an algorithm the ring uses.
        let public_only = Keyring::from_keys(
            vec![Key::public_pem("ed", ed_pub_pem.as_bytes()).unwrap()],
            None,
        )
        .unwrap();
        let token = sign_with(
            Algorithm::HS256,
            "ed",
            &EncodingKey::from_secret(ed_pub_pem.as_bytes()),
            now,
        );
        assert_eq!(
            v.verify(&token, &public_only, now),
            Err(VerifyError::UnsupportedAlgorithm)
        );
        // EdDSA header naming an HS256 kid.
        let ed = ring.get(Some("ed")).unwrap();
        let token = sign_with(Algorithm::EdDSA, "hs", ed.encoding().unwrap(), now);
        assert_eq!(
            v.verify(&token, &ring, now),
            Err(VerifyError::KeyAlgorithmMismatch)
        );
        // alg none, with or without a signature.
        let rest = token.split_once('.').unwrap().1;
        for alg in [
            "none", "None", "eddsa", "EDDSA", "Ed25519", "ES384", "RS512",
        ] {
            let forged = format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"ed"}}"#))
            );
            assert_eq!(
                v.verify(&forged, &ring, now),
                Err(VerifyError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn public_key_cannot_issue() {
        let ring = mixed_ring();
        let err = issuer()
            .issue(ring.get(Some("rs")).unwrap(), "7", "e", &[], 0)
            .unwrap_err();
        assert!(matches!(err, crate::IssueError::PublicKey(k) if k == "rs"));
    }

    /// Strict for our tokens, lenient (ignored, never fetched) for external issuers; `crit`
    /// refused by both.
    #[test]
    fn header_policy() {
        let now = crate::now_unix();
        let ring = mixed_ring();
        let strict = Verifier::new(&VerifierConfig::default());
        let lenient = strict.clone().with_header_policy(HeaderPolicy::Lenient);
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("es".into());
        header.jku = Some("http://127.0.0.1:1/jwks.json".into());
        header.x5u = Some("http://127.0.0.1:1/cert".into());
        header.x5t = Some("abc".into());
        let token = jsonwebtoken::encode(&header, &claims(now), &ec_signer()).unwrap();
        assert_eq!(
            strict.verify(&token, &ring, now),
            Err(VerifyError::UnsupportedHeader)
        );
        assert!(lenient.verify(&token, &ring, now).is_ok());
        header.crit = Some(vec!["exp".into()]);
        let token = jsonwebtoken::encode(&header, &claims(now), &ec_signer()).unwrap();
        assert_eq!(
            lenient.verify(&token, &ring, now),
            Err(VerifyError::UnsupportedHeader)
        );
        // Duplicate alg is malformed in both.
        let rest = token.split_once('.').unwrap().1;
        let dup = format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","alg":"HS256","kid":"es"}"#)
        );
        assert_eq!(
            lenient.verify(&dup, &ring, now),
            Err(VerifyError::Malformed)
        );
    }

    /// Foreign claims: only `exp` required; time, `iss` and `aud` checked as for our own.
    #[test]
    fn verify_claims_of_an_external_issuer() {
        let now = crate::now_unix();
        let ring = mixed_ring();
        let v = Verifier::new(&VerifierConfig {
            issuer: Some("https://idp.example".into()),
            audience: Some("edge".into()),
            ..VerifierConfig::default()
        })
        .with_header_policy(HeaderPolicy::Lenient);
        let sign = |c: serde_json::Value| {
            let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
            header.kid = Some("rs".into());
            jsonwebtoken::encode(&header, &c, &rsa_signer()).unwrap()
        };
        let good = serde_json::json!({
            "iss": "https://idp.example", "aud": ["edge", "other"], "exp": now + 60,
            "preferred_username": "ann", "groups": ["g"]
        });
        let map: serde_json::Map<String, serde_json::Value> =
            v.verify_claims(&sign(good.clone()), &ring, now).unwrap();
        assert_eq!(map["preferred_username"], "ann");
        #[derive(Deserialize)]
        struct Mine {
            preferred_username: String,
        }
        let mine: Mine = v.verify_claims(&sign(good.clone()), &ring, now).unwrap();
        assert_eq!(mine.preferred_username, "ann");
        // Our Claims need sub etc: not present in this token.
        assert_eq!(
            v.verify_claims::<Claims>(&sign(good.clone()), &ring, now)
                .map(|_| ()),
            Err(VerifyError::Malformed)
        );
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good.clone();
            if val.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = val;
            }
            v.verify_claims::<serde_json::Value>(&sign(c), &ring, now)
                .map(|_| ())
        };
        assert_eq!(
            with("exp", serde_json::Value::Null),
            Err(VerifyError::MissingClaim)
        );
        assert_eq!(with("exp", (now - 600).into()), Err(VerifyError::Expired));
        assert_eq!(
            with("nbf", (now + 600).into()),
            Err(VerifyError::NotYetValid)
        );
        assert_eq!(
            with("iat", (now + 600).into()),
            Err(VerifyError::IssuedInFuture)
        );
        assert_eq!(with("iat", "soon".into()), Err(VerifyError::Malformed));
        assert_eq!(
            with("iss", "https://evil".into()),
            Err(VerifyError::WrongIssuer)
        );
        assert_eq!(
            with("iss", serde_json::Value::Null),
            Err(VerifyError::MissingClaim)
        );
        assert_eq!(with("aud", "other".into()), Err(VerifyError::WrongAudience));
        assert_eq!(with("nbf", now.into()), Ok(()));
    }
}
