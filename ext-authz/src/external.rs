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
//!
//! The same snapshot holds the keys of our *own* issuer fetched from `--jwks-url`s
//! ([`OwnJwks`]): they sit beside the `--keys-dir` ring, never merged into it (a reload of one
//! source can then neither drop nor delay the other's keys), and [`ExternalIssuers::own_ring`]
//! picks, per token `kid`, the one source holding it. A kid held by two sources with different
//! key material verifies with neither ([`VerifyError::UnknownKey`]): which key is "ours" would
//! otherwise depend on lookup order.

use std::sync::Arc;

use auth_token::{Claims, HeaderPolicy, Jwk, Key, Keyring, Verifier, VerifierConfig, VerifyError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::issuers::{IssuerSettings, map_claims};

/// Longest token whose payload is peeked at for routing (the verifier's own limit applies after).
const MAX_PEEK_LEN: usize = 64 * 1024;

/// Longest token header (base64url) read by [`ExternalIssuers::own_ring`] to find its `kid`.
const MAX_HEADER_PEEK_LEN: usize = 4096;

/// The keys of one JWKS source's last good fetch, and how many fetches replaced them.
///
/// The generation lets a refresh request say which keys it was refused by: a request made
/// against keys that were replaced since is already answered ([`crate::jwks::JwksStore`]).
#[derive(Debug, Clone, Default)]
pub struct FetchedKeys {
    keys: Option<Arc<Keyring>>,
    generation: u64,
}

impl FetchedKeys {
    /// The keys, if a fetch ever succeeded.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// 0 before the first successful fetch, then one more per successful fetch.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn replaced(&self, keys: Arc<Keyring>) -> Self {
        Self {
            keys: Some(keys),
            generation: self.generation.saturating_add(1),
        }
    }
}

/// Where one JWKS slot's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// An external issuer: discovery, then its `jwks_uri` (https, or http on loopback).
    Discover(IssuerSettings),
    /// A `--jwks-url` of our own issuer, fetched as given (plain http allowed, warned about).
    Url(String),
}

/// One `--jwks-url`: keys of our own issuer (login-service's `/.well-known/jwks.json`).
#[derive(Debug, Clone)]
pub struct OwnJwks {
    /// The URL as configured.
    pub url: String,
    /// Its metric label and log name: `local`, then `local.2`, `local.3`... (`.` cannot occur
    /// in an issuer name, so no external issuer shares a label).
    pub label: String,
    fetched: FetchedKeys,
}

impl OwnJwks {
    /// The `n`-th (0-based) `--jwks-url`, without keys yet.
    pub fn new(n: usize, url: &str) -> Self {
        let label = if n == 0 {
            crate::issuers::LOCAL.to_owned()
        } else {
            format!("{}.{}", crate::issuers::LOCAL, n + 1)
        };
        Self {
            url: url.to_owned(),
            label,
            fetched: FetchedKeys::default(),
        }
    }

    /// The keys of its last good fetch.
    pub fn keys(&self) -> Option<&Keyring> {
        self.fetched.keys()
    }
}

/// One trusted issuer: its settings, its verifier (`iss` and `aud` fixed, lenient header) and
/// the keys of its last good JWKS (`None` until the first successful fetch).
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// What was configured.
    pub settings: IssuerSettings,
    verifier: Verifier,
    fetched: FetchedKeys,
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
            fetched: FetchedKeys::default(),
        }
    }

    /// The keys in use, if any were ever fetched.
    pub fn keys(&self) -> Option<&Keyring> {
        self.fetched.keys()
    }

    /// Verifies `token` with this issuer's keys and maps its claims. An issuer without keys
    /// yet refuses every token ([`VerifyError::UnknownKey`]).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, VerifyError> {
        let keys = self.fetched.keys().ok_or(VerifyError::UnknownKey)?;
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

/// Every configured external issuer and `--jwks-url`, immutable: a refresh builds a new
/// snapshot ([`ExternalIssuers::with_keys`]) and swaps it in.
///
/// Its JWKS *slots* are numbered issuers first (`0..issuers`), then the own JWKS URLs; each
/// slot has one refresh task.
#[derive(Debug, Clone, Default)]
pub struct ExternalIssuers {
    issuers: Vec<Arc<TrustedIssuer>>,
    own: Vec<Arc<OwnJwks>>,
}

impl ExternalIssuers {
    /// No external issuer, no JWKS URL.
    pub const EMPTY: ExternalIssuers = ExternalIssuers {
        issuers: Vec::new(),
        own: Vec::new(),
    };

    /// The snapshot of `issuers`, none with keys yet.
    pub fn new(issuers: Vec<TrustedIssuer>) -> Self {
        Self::with_own(issuers, Vec::new())
    }

    /// The snapshot of `issuers` and of our own JWKS URLs `own`, none with keys yet.
    pub fn with_own(issuers: Vec<TrustedIssuer>, own: Vec<OwnJwks>) -> Self {
        Self {
            issuers: issuers.into_iter().map(Arc::new).collect(),
            own: own.into_iter().map(Arc::new).collect(),
        }
    }

    /// True when no external issuer is configured (then routing costs nothing).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Number of JWKS slots (issuers, then own JWKS URLs).
    pub fn slots(&self) -> usize {
        self.issuers.len() + self.own.len()
    }

    /// The slot of the `n`-th own JWKS URL.
    pub fn own_slot(&self, n: usize) -> usize {
        self.issuers.len() + n
    }

    /// The own JWKS URLs, in configuration order.
    pub fn own(&self) -> impl Iterator<Item = &OwnJwks> {
        self.own.iter().map(|o| &**o)
    }

    /// What slot `slot` fetches and its metric/log label.
    pub fn source(&self, slot: usize) -> Option<(JwksSource, String)> {
        match self.issuers.get(slot) {
            Some(i) => Some((
                JwksSource::Discover(i.settings.clone()),
                i.settings.name.clone(),
            )),
            None => self
                .own
                .get(slot - self.issuers.len())
                .map(|o| (JwksSource::Url(o.url.clone()), o.label.clone())),
        }
    }

    /// The keys of slot `slot` and their generation.
    pub fn fetched(&self, slot: usize) -> Option<&FetchedKeys> {
        match self.issuers.get(slot) {
            Some(i) => Some(&i.fetched),
            None => self.own.get(slot - self.issuers.len()).map(|o| &o.fetched),
        }
    }

    /// Labels of every slot still without keys.
    pub fn missing(&self) -> Vec<String> {
        (0..self.slots())
            .filter(|&s| self.fetched(s).is_none_or(|f| f.keys().is_none()))
            .filter_map(|s| self.source(s).map(|(_, label)| label))
            .collect()
    }

    /// The ring that verifies our own `token`: `files` (the `--keys-dir`/`JWT_SECRET` ring)
    /// or the own JWKS holding the token's `kid`. Without own JWKS URLs, always `files`
    /// (no header is read). A token without a `kid`, or with one no source holds, goes to
    /// `files` (whose rules then refuse it as before). A `kid` held by several sources with
    /// different key material is [`VerifyError::UnknownKey`]: refused, never guessed.
    pub fn own_ring<'a>(
        &'a self,
        token: &str,
        files: &'a Keyring,
    ) -> Result<&'a Keyring, VerifyError> {
        if self.own.is_empty() {
            return Ok(files);
        }
        let Some(kid) = peek_kid(token) else {
            return Ok(files);
        };
        let mut found: Option<&'a Keyring> = files.get(Some(&kid)).map(|_| files);
        for ring in self.own.iter().filter_map(|o| o.fetched.keys()) {
            let Some(key) = ring.get(Some(&kid)) else {
                continue;
            };
            match found {
                None => found = Some(ring),
                Some(first) => {
                    let held = first.get(Some(&kid)).ok_or(VerifyError::UnknownKey)?;
                    if !same_key(held, key) {
                        return Err(VerifyError::UnknownKey);
                    }
                }
            }
        }
        Ok(found.unwrap_or(files))
    }

    /// Kids that two sources (`files` and the own JWKS) hold with different key material:
    /// tokens with them are refused ([`ExternalIssuers::own_ring`]). Sorted, for the log.
    pub fn own_conflicts(&self, files: &Keyring) -> Vec<String> {
        let mut conflicts = Vec::new();
        let rings: Vec<&Keyring> = std::iter::once(files)
            .chain(self.own.iter().filter_map(|o| o.fetched.keys()))
            .collect();
        for (i, ring) in rings.iter().enumerate() {
            for kid in ring.kids() {
                let Some(key) = ring.get(Some(kid)) else {
                    continue;
                };
                let clash = rings[i + 1..]
                    .iter()
                    .filter_map(|other| other.get(Some(kid)))
                    .any(|other| !same_key(key, other));
                if clash && !conflicts.iter().any(|c| c == kid) {
                    conflicts.push(kid.to_owned());
                }
            }
        }
        conflicts.sort_unstable();
        conflicts
    }

    /// The issuers, in configuration order (their index is stable).
    pub fn iter(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.issuers.iter().map(|i| &**i)
    }

    /// The issuer at `index`.
    pub fn get(&self, index: usize) -> Option<&TrustedIssuer> {
        self.issuers.get(index).map(|i| &**i)
    }

    /// A copy in which slot `slot` (an issuer, or an own JWKS URL) verifies with `keys`, one
    /// generation later (the others are shared).
    pub fn with_keys(&self, slot: usize, keys: Arc<Keyring>) -> Self {
        let mut next = self.clone();
        let issuers = next.issuers.len();
        if let Some(entry) = next.issuers.get_mut(slot) {
            let mut issuer = TrustedIssuer::clone(entry);
            issuer.fetched = issuer.fetched.replaced(keys);
            *entry = Arc::new(issuer);
        } else if let Some(entry) = next.own.get_mut(slot - issuers) {
            let mut own = OwnJwks::clone(entry);
            own.fetched = own.fetched.replaced(keys);
            *entry = Arc::new(own);
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

/// The unverified `kid` of a compact JWS header, if it has a well-formed one (only used to pick
/// a ring; the verifier reads the header again under its own rules).
fn peek_kid(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Kid {
        kid: Option<String>,
    }
    let header = token.split('.').next()?;
    if header.len() > MAX_HEADER_PEEK_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice::<Kid>(&bytes).ok()?.kid
}

/// Same algorithm and same public key material. An HMAC key has no public form: never the
/// same as anything (its kid beside a JWKS key is always a conflict).
fn same_key(a: &Key, b: &Key) -> bool {
    a.algorithm() == b.algorithm()
        && match (a.public_jwk(), b.public_jwk()) {
            (Some(x), Some(y)) => x.algorithm == y.algorithm,
            _ => false,
        }
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
