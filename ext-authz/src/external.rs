//! Tokens of trusted external OIDC issuers, verified without I/O (layer 1): an immutable
//! snapshot of every configured issuer and the keys last fetched for it
//! ([`ExternalIssuers`], swapped whole by `jwks::JwksStore` after each refresh), the routing of a
//! token to its issuer by its `iss`, and the verification + claim mapping into [`Claims`].
//!
//! Routing reads `iss` from the payload *before* the signature is checked; that is safe because
//! the issuer it selects only decides which keys may verify the token: a token claiming issuer X
//! verifies with X's JWKS keys or not at all, and the verifier then requires `iss == X` (and the
//! configured `aud`) on the signed claims. A token whose `iss` is no configured external issuer
//! takes our own path, unchanged. Header parameters other than `alg`/`kid`/`typ` (`jku`, `x5u`,
//! `jwk`, `x5c`...) are ignored by the lenient verifier and never fetched.

use std::sync::Arc;

use auth_token::{Claims, HeaderPolicy, Jwk, Key, Keyring, Verifier, VerifierConfig, VerifyError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::issuers::{IssuerSettings, map_claims};

/// Longest token whose payload is peeked at for routing (the verifier's own limit applies after).
const MAX_PEEK_LEN: usize = 64 * 1024;

/// One trusted issuer: its settings, its verifier (`iss` and `aud` fixed, lenient header) and
/// the keys of its last good JWKS (`None` until the first successful fetch).
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// What was configured.
    pub settings: IssuerSettings,
    verifier: Verifier,
    keys: Option<Arc<Keyring>>,
}

impl TrustedIssuer {
    /// An issuer without keys yet; time rules (leeway, size) as for our own tokens.
    pub fn new(settings: IssuerSettings, leeway_secs: u64, max_token_len: usize) -> Self {
        let verifier = Verifier::new(&VerifierConfig {
            leeway_secs,
            max_token_len,
            issuer: Some(settings.issuer.clone()),
            audience: settings.audience.clone(),
        })
        .with_header_policy(HeaderPolicy::Lenient);
        Self {
            settings,
            verifier,
            keys: None,
        }
    }

    /// The keys in use, if any were ever fetched.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// Verifies `token` with this issuer's keys and maps its claims. An issuer without keys
    /// yet refuses every token ([`VerifyError::UnknownKey`]).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, VerifyError> {
        let keys = self.keys.as_deref().ok_or(VerifyError::UnknownKey)?;
        let payload: Value = self.verifier.verify_claims(token, keys, now)?;
        let identity = map_claims(&payload, &self.settings).map_err(|e| match e {
            crate::issuers::MappingError::MissingSubject => VerifyError::MissingClaim,
            crate::issuers::MappingError::Malformed => VerifyError::Malformed,
        })?;
        let number = |name: &str| payload.get(name).and_then(Value::as_u64).unwrap_or(0);
        Ok(Claims {
            sub: identity.sub,
            email: identity.email,
            roles: identity.roles,
            iat: number("iat"),
            nbf: number("nbf"),
            exp: number("exp"),
            jti: payload
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            iss: Some(self.settings.issuer.clone()),
            aud: None,
        })
    }
}

/// Every configured external issuer, immutable: a refresh builds a new snapshot
/// ([`ExternalIssuers::with_keys`]) and swaps it in.
#[derive(Debug, Clone, Default)]
pub struct ExternalIssuers {
    issuers: Vec<Arc<TrustedIssuer>>,
}

impl ExternalIssuers {
    /// No external issuer.
    pub const EMPTY: ExternalIssuers = ExternalIssuers {
        issuers: Vec::new(),
    };

    /// The snapshot of `issuers`, none with keys yet.
    pub fn new(issuers: Vec<TrustedIssuer>) -> Self {
        Self {
            issuers: issuers.into_iter().map(Arc::new).collect(),
        }
    }

    /// True when no external issuer is configured (then routing costs nothing).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The issuers, in configuration order (their index is stable).
    pub fn iter(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.issuers.iter().map(|i| &**i)
    }

    /// The issuer at `index`.
    pub fn get(&self, index: usize) -> Option<&TrustedIssuer> {
        self.issuers.get(index).map(|i| &**i)
    }

    /// A copy in which issuer `index` verifies with `keys` (the others are shared).
    pub fn with_keys(&self, index: usize, keys: Arc<Keyring>) -> Self {
        let mut next = self.clone();
        if let Some(slot) = next.issuers.get_mut(index) {
            let mut issuer = TrustedIssuer::clone(slot);
            issuer.keys = Some(keys);
            *slot = Arc::new(issuer);
        }
        next
    }

    /// The index of the external issuer `token` claims (`iss` read without verification, see
    /// the module docs), or `None`: not an external token, take our own path.
    pub fn route(&self, token: &str) -> Option<usize> {
        if self.issuers.is_empty() {
            return None;
        }
        let iss = peek_issuer(token)?;
        self.issuers.iter().position(|i| i.settings.issuer == iss)
    }
}

/// The unverified `iss` claim of a compact JWS, if it has one.
fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    if token.len() > MAX_PEEK_LEN {
        return None;
    }
    let mut parts = token.split('.');
    let payload = parts.nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// The verifying keys of a fetched JWKS: each member that `Key::from_jwk` accepts (RS256,
/// PS256, ES256, EdDSA signature keys; an `alg` that contradicts the key type is refused by it),
/// and the kids of those skipped (encryption keys, other curves, malformed), which are logged.
/// `None` when no key is usable: the caller keeps the last good keys.
pub fn keys_from_jwks(members: &[Value]) -> (Option<Keyring>, Vec<String>) {
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for member in members {
        let kid = || {
            member
                .get("kid")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .chars()
                .take(64)
                .collect::<String>()
        };
        match serde_json::from_value::<Jwk>(member.clone())
            .ok()
            .and_then(|jwk| Key::from_jwk(&jwk).ok())
        {
            Some(key) if !keys.iter().any(|k: &Key| k.kid() == key.kid()) => keys.push(key),
            _ => skipped.push(kid()),
        }
    }
    if keys.is_empty() {
        return (None, skipped);
    }
    (Keyring::from_keys(keys, None).ok(), skipped)
}

#[cfg(test)]
mod tests;
