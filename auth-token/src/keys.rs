//! Signing and verification keys, and the keyring a token's `kid` selects from.
//!
//! A key's algorithm is fixed by its type, never by the token: an HMAC secret is HS256 only, an
//! Ed25519 key EdDSA, an RSA public key RS256 (PS256 when its JWK says so), a P-256 public key
//! ES256. The verifier refuses a token whose `alg` differs from its key's, which closes the
//! classic "public key used as HMAC secret" confusion.
//!
//! Two sources, the same rules: `JWT_SECRET` (one HMAC key, kid [`DEFAULT_KID`]) or a keys
//! directory with one file per key — exactly how a Kubernetes Secret is mounted (`..data` symlink
//! and dot-entries are skipped):
//! - `KID`: an HMAC secret, the file's bytes without a trailing newline, ≥ [`MIN_KEY_LEN`] bytes;
//! - `KID.pem`: a PKCS#8 Ed25519 private key (signs, and verifies with its public half);
//! - `KID.pub.pem`: an SPKI public key (Ed25519, RSA ≥ 2048 bits, or EC P-256): verifies only.
//!
//! Public keys from a JWKS enter through [`Key::from_jwk`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Shortest accepted HMAC key: RFC 7518 §3.2 requires a key as long as the hash output.
pub const MIN_KEY_LEN: usize = 32;
/// Smallest accepted RSA modulus, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// The kid of the key given as `JWT_SECRET`.
pub const DEFAULT_KID: &str = "default";
/// Longest accepted kid; longer ones cannot be file names we created.
pub const MAX_KID_LEN: usize = 64;
/// File-name suffix of a PKCS#8 private key in a keys directory.
pub const PRIVATE_PEM_SUFFIX: &str = ".pem";
/// File-name suffix of an SPKI public key in a keys directory.
pub const PUBLIC_PEM_SUFFIX: &str = ".pub.pem";

/// Why a key or keyring could not be built. Messages name kids and paths, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// RFC 7518 forbids HS256 keys shorter than the hash.
    #[error("key {kid:?} is {len} bytes; HS256 keys must be at least {MIN_KEY_LEN} bytes")]
    TooShort {
        /// The offending key.
        kid: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A kid that could smuggle path or header characters.
    #[error(
        "invalid key id {0:?}: use 1-{MAX_KID_LEN} characters from A-Z a-z 0-9 . _ -, not starting with '.'"
    )]
    InvalidKid(String),
    /// The directory or one of its files could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A keyring must hold at least one key.
    #[error("no keys found in {0}")]
    Empty(PathBuf),
    /// The configured default kid is not in the keyring.
    #[error("default key id {0:?} is not among the loaded keys")]
    UnknownDefault(String),
    /// A PEM or JWK that is not a key of a supported type (the reason names the expected form).
    #[error("key {kid:?} is not usable: {reason}")]
    BadKey {
        /// The offending key.
        kid: String,
        /// What was wrong, without key bytes.
        reason: &'static str,
    },
    /// A JWK whose `alg` does not match its key type (e.g. an RSA key claiming `HS256`).
    #[error("key {kid:?}: its alg {alg:?} does not match its key type")]
    AlgorithmMismatch {
        /// The offending key.
        kid: String,
        /// The `alg` it announced.
        alg: String,
    },
    /// A JWK meant for something other than signatures (`use` other than `sig`).
    #[error("key {0:?} is not a signature key")]
    NotForSignatures(String),
    /// Two files (or JWKs) give the same kid, e.g. `k1` and `k1.pem`.
    #[error("key id {0:?} is given twice")]
    DuplicateKid(String),
    /// The signing key is a public key: it can verify but never sign.
    #[error("key {0:?} is a public key and cannot sign tokens")]
    CannotSign(String),
}

/// Whether `kid` is acceptable as a key id (and therefore as a file name).
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One key, ready to verify and (HMAC secret or private key) to sign. `Debug` shows the kid and
/// algorithm only.
pub struct Key {
    kid: String,
    alg: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// The public JWK, for asymmetric keys only: an HMAC secret has none, so it can never be
    /// published by [`Keyring::public_jwks`].
    jwk: Option<Jwk>,
    /// SHA-256 over the algorithm and the key material, for [`Keyring::fingerprint`].
    digest: [u8; 32],
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    if valid_kid(kid) {
        Ok(())
    } else {
        Err(KeyError::InvalidKid(kid.to_owned()))
    }
}

fn material_digest(alg: Algorithm, material: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{alg:?}").as_bytes());
    h.update((material.len() as u64).to_be_bytes());
    h.update(material);
    h.finalize().into()
}

fn bad(kid: &str, reason: &'static str) -> KeyError {
    KeyError::BadKey {
        kid: kid.to_owned(),
        reason,
    }
}

fn public_jwk(kid: &str, alg: KeyAlgorithm, params: AlgorithmParameters) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(alg),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm: params,
    }
}

impl Key {
    /// Builds an HMAC (HS256) key, enforcing the kid syntax and [`MIN_KEY_LEN`].
    pub fn new(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                kid: kid.to_owned(),
                len: secret.len(),
            });
        }
        // Why: a public key file mounted under an HMAC name (`ed-1` instead of `ed-1.pub.pem`)
        // would make public bytes, rebuildable from jwks.json, the HS256 secret: anyone could
        // sign with it. No HMAC secret is PEM armour.
        if secret.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(bad(
                kid,
                "PEM text used as an HMAC secret (name a key file KID.pem or KID.pub.pem)",
            ));
        }
        Ok(Self {
            kid: kid.to_owned(),
            alg: Algorithm::HS256,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
            jwk: None,
            digest: material_digest(Algorithm::HS256, secret),
        })
    }

    /// An Ed25519 signing key from a PKCS#8 PEM (`openssl genpkey -algorithm ed25519`); it
    /// verifies with its public half.
    pub fn ed25519_private_pem(kid: &str, pem: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let text = std::str::from_utf8(pem).map_err(|_| bad(kid, "not a PEM text file"))?;
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map_err(|_| bad(kid, "expected a PKCS#8 Ed25519 private key (PEM)"))?;
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| bad(kid, "cannot re-encode the Ed25519 key"))?;
        let public = signing.verifying_key().to_bytes();
        let mut key = Self::ed25519_public(kid, &public);
        key.encoding = Some(EncodingKey::from_ed_der(der.as_bytes()));
        key.digest = material_digest(Algorithm::EdDSA, der.as_bytes());
        Ok(key)
    }

    /// A verify-only key from an SPKI public-key PEM: Ed25519 (EdDSA), RSA (RS256, at least
    /// [`MIN_RSA_BITS`]) or EC P-256 (ES256).
    pub fn public_pem(kid: &str, pem: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let text = std::str::from_utf8(pem).map_err(|_| bad(kid, "not a PEM text file"))?;
        if let Ok(ed) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Ok(Self::ed25519_public(kid, &ed.to_bytes()));
        }
        if let Ok(rsa) = rsa::RsaPublicKey::from_public_key_pem(text) {
            return Self::rsa_public(kid, Algorithm::RS256, &rsa);
        }
        if let Ok(ec) = p256::PublicKey::from_public_key_pem(text) {
            return Ok(Self::p256_public(kid, &ec));
        }
        Err(bad(
            kid,
            "expected an SPKI public key (PEM) of type Ed25519, RSA or EC P-256",
        ))
    }

    /// A verify-only key from one JWK of a JWKS (RFC 7517). The algorithm comes from the key type;
    /// an `alg` that contradicts it, a `use` other than `sig`, a missing `kid`, an HMAC (`oct`)
    /// key and curves other than Ed25519/P-256 are refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let kid = jwk.common.key_id.as_deref().unwrap_or("");
        check_kid(kid)?;
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(_) => return Err(KeyError::NotForSignatures(kid.to_owned())),
        }
        let announced = jwk.common.key_algorithm;
        let mismatch = || KeyError::AlgorithmMismatch {
            kid: kid.to_owned(),
            alg: announced.map(|a| a.to_string()).unwrap_or_default(),
        };
        let b64 = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| bad(kid, "JWK member is not base64url"))
        };
        match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) => {
                if p.curve != EllipticCurve::Ed25519 {
                    return Err(bad(kid, "only the Ed25519 curve is supported for OKP keys"));
                }
                if !matches!(announced, None | Some(KeyAlgorithm::EdDSA)) {
                    return Err(mismatch());
                }
                let x: [u8; 32] = b64(&p.x)?
                    .try_into()
                    .map_err(|_| bad(kid, "an Ed25519 public key is 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| bad(kid, "not a valid Ed25519 point"))?;
                Ok(Self::ed25519_public(kid, &x))
            }
            AlgorithmParameters::RSA(p) => {
                let alg = match announced {
                    None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                    Some(KeyAlgorithm::PS256) => Algorithm::PS256,
                    Some(_) => return Err(mismatch()),
                };
                let n = rsa::BigUint::from_bytes_be(&b64(&p.n)?);
                let e = rsa::BigUint::from_bytes_be(&b64(&p.e)?);
                let public = rsa::RsaPublicKey::new(n, e)
                    .map_err(|_| bad(kid, "not a valid RSA public key"))?;
                Self::rsa_public(kid, alg, &public)
            }
            AlgorithmParameters::EllipticCurve(p) => {
                if p.curve != EllipticCurve::P256 {
                    return Err(bad(kid, "only the P-256 curve is supported for EC keys"));
                }
                if !matches!(announced, None | Some(KeyAlgorithm::ES256)) {
                    return Err(mismatch());
                }
                let (x, y) = (b64(&p.x)?, b64(&p.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad(kid, "P-256 coordinates are 32 bytes"));
                }
                let point = [&[0x04][..], &x, &y].concat();
                let public = p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| bad(kid, "not a valid P-256 point"))?;
                Ok(Self::p256_public(kid, &public))
            }
            // Why: a symmetric key in a JWKS would be a published secret; never trust one.
            AlgorithmParameters::OctetKey(_) => Err(bad(
                kid,
                "symmetric (oct) keys are never accepted from a JWKS",
            )),
            _ => Err(bad(kid, "unsupported key type")),
        }
    }

    fn ed25519_public(kid: &str, public: &[u8; 32]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(public);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: None,
            decoding: DecodingKey::from_ed_components(&x).expect("base64url we just wrote"),
            jwk: Some(public_jwk(
                kid,
                KeyAlgorithm::EdDSA,
                AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x,
                }),
            )),
            digest: material_digest(Algorithm::EdDSA, public),
        }
    }

    fn rsa_public(kid: &str, alg: Algorithm, public: &rsa::RsaPublicKey) -> Result<Self, KeyError> {
        if public.size() * 8 < MIN_RSA_BITS {
            return Err(bad(kid, "RSA keys must have at least 2048 bits"));
        }
        let (n, e) = (public.n().to_bytes_be(), public.e().to_bytes_be());
        let key_alg = if alg == Algorithm::PS256 {
            KeyAlgorithm::PS256
        } else {
            KeyAlgorithm::RS256
        };
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            encoding: None,
            decoding: DecodingKey::from_rsa_raw_components(&n, &e),
            jwk: Some(public_jwk(
                kid,
                key_alg,
                AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: URL_SAFE_NO_PAD.encode(&n),
                    e: URL_SAFE_NO_PAD.encode(&e),
                }),
            )),
            digest: material_digest(alg, &[n, e].concat()),
        })
    }

    fn p256_public(kid: &str, public: &p256::PublicKey) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let point = public.to_encoded_point(false);
        let (x, y) = (
            point.x().map(|x| x.to_vec()).unwrap_or_default(),
            point.y().map(|y| y.to_vec()).unwrap_or_default(),
        );
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: None,
            decoding: DecodingKey::from_ec_der(point.as_bytes()),
            jwk: Some(public_jwk(
                kid,
                KeyAlgorithm::ES256,
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: URL_SAFE_NO_PAD.encode(&x),
                    y: URL_SAFE_NO_PAD.encode(&y),
                }),
            )),
            digest: material_digest(Algorithm::ES256, point.as_bytes()),
        }
    }

    /// The key id put in (and looked up from) the JWT header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key signs and verifies with (fixed by its type).
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// SHA-256 over the algorithm and the key material (not secret-revealing, see
    /// [`Keyring::fingerprint`]): equal fingerprints mean the same key, so a cache of verified
    /// tokens can tell that the key which verified an entry is still the one loaded.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.digest
    }

    /// True for an HMAC secret or a private key; false for a public key.
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    /// The public JWK of an asymmetric key; `None` for an HMAC secret (never published).
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.jwk.as_ref()
    }

    pub(crate) fn encoding(&self) -> Option<&EncodingKey> {
        self.encoding.as_ref()
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.can_sign())
            .finish_non_exhaustive()
    }
}

/// The set of keys a verifier accepts, and the one used for tokens without a `kid`.
pub struct Keyring {
    keys: HashMap<String, Key>,
    default_kid: Option<String>,
    /// The distinct algorithms of the keys: a token whose `alg` no key uses is refused as
    /// unsupported before any key lookup.
    algorithms: Vec<Algorithm>,
}

impl Keyring {
    /// A keyring of one HMAC key (the `JWT_SECRET` case); it is also the default key.
    pub fn single(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        Self::from_keys(vec![Key::new(kid, secret)?], None)
    }

    /// Builds a keyring from keys; `default_kid` must name one of them. Without it, a ring of
    /// exactly one key uses that key as the default, and a larger ring has none (tokens without
    /// `kid` are then refused). Two keys with one kid are refused.
    pub fn from_keys(keys: Vec<Key>, default_kid: Option<&str>) -> Result<Self, KeyError> {
        let mut map: HashMap<String, Key> = HashMap::with_capacity(keys.len());
        let mut algorithms = Vec::new();
        for key in keys {
            if !algorithms.contains(&key.alg) {
                algorithms.push(key.alg);
            }
            if map.contains_key(&key.kid) {
                return Err(KeyError::DuplicateKid(key.kid));
            }
            map.insert(key.kid.clone(), key);
        }
        let default_kid = match default_kid {
            Some(kid) if map.contains_key(kid) => Some(kid.to_owned()),
            Some(kid) => return Err(KeyError::UnknownDefault(kid.to_owned())),
            None if map.len() == 1 => map.keys().next().cloned(),
            None => None,
        };
        Ok(Self {
            keys: map,
            default_kid,
            algorithms,
        })
    }

    /// Loads every key file of `dir` (see the module docs for the layout).
    ///
    /// Dot-entries (`..data`, `..2026_11_27...`) and non-files are skipped; symlinks are followed,
    /// since a mounted Secret's files are symlinks into `..data`. Any unreadable file, bad kid,
    /// short or unparsable key fails the whole load, so a half-written directory never replaces a
    /// good ring.
    pub fn from_dir(dir: &Path, default_kid: Option<&str>) -> Result<Self, KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(KeyError::InvalidKid(name.to_string_lossy().into_owned()));
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(io(&path))?;
            if !meta.is_file() {
                continue;
            }
            let bytes = Zeroizing::new(std::fs::read(&path).map_err(io(&path))?);
            let key = if let Some(kid) = name.strip_suffix(PUBLIC_PEM_SUFFIX) {
                Key::public_pem(kid, &bytes)?
            } else if let Some(kid) = name.strip_suffix(PRIVATE_PEM_SUFFIX) {
                Key::ed25519_private_pem(kid, &bytes)?
            } else {
                Key::new(name, trim_newline(&bytes))?
            };
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(dir.to_path_buf()));
        }
        Self::from_keys(keys, default_kid)
    }

    /// A keyring of the signature keys of a JWKS (verify only). Any unusable key fails the whole
    /// set, like a bad file fails a directory.
    pub fn from_jwks(jwks: &JwkSet) -> Result<Self, KeyError> {
        let keys = jwks
            .keys
            .iter()
            .map(Key::from_jwk)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys(keys, None)
    }

    /// The key for a token header's `kid`; `None` means the default key.
    pub fn get(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None => self.default_kid.as_deref().and_then(|k| self.keys.get(k)),
        }
    }

    /// The key login-service signs with: `kid`, or the default key when `None`. A public key
    /// (which can only verify) is refused, so a misconfiguration fails at load time.
    pub fn signing_key(&self, kid: Option<&str>) -> Result<&Key, KeyError> {
        let key = self.get(kid).ok_or_else(|| {
            KeyError::UnknownDefault(kid.or(self.default_kid.as_deref()).unwrap_or("").to_owned())
        })?;
        if key.can_sign() {
            Ok(key)
        } else {
            Err(KeyError::CannotSign(key.kid.clone()))
        }
    }

    /// Whether some key of the ring uses `alg`.
    pub fn uses_algorithm(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The JWK set of the ring's public keys (asymmetric keys only, private halves never; an
    /// HMAC secret NEVER appears), sorted by kid: what `/.well-known/jwks.json` serves.
    pub fn public_jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .kids()
                .into_iter()
                .filter_map(|kid| self.keys[kid].public_jwk().cloned())
                .collect(),
        }
    }

    /// The kid used for tokens that carry none, if any.
    pub fn default_kid(&self) -> Option<&str> {
        self.default_kid.as_deref()
    }

    /// All kids, sorted (for logs and metrics: kids are not secret).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: an empty keyring cannot be built.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A digest of kids, algorithms, key material and default: equal fingerprints mean an
    /// identical ring, so a reloader can skip swapping (and counting) unchanged content. Not
    /// secret-revealing: SHA-256 over SHA-256 digests of ≥ 32 random bytes.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for kid in self.kids() {
            h.update((kid.len() as u64).to_be_bytes());
            h.update(kid.as_bytes());
            h.update(self.keys[kid].digest);
        }
        h.update(self.default_kid.as_deref().unwrap_or("").as_bytes());
        h.finalize().into()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.kids())
            .field("default_kid", &self.default_kid)
            .finish()
    }
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn pem_text_is_never_an_hmac_secret() {
        // A public key under an HMAC file name: its bytes are public (review finding, #12).
        let pem = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let err = Key::new("ed-1", pem).unwrap_err();
        assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("MCow"), "{err}");
    }

    #[test]
    fn short_key_is_refused_without_revealing_it() {
        let err = Key::new("k1", b"short").unwrap_err();
        assert!(matches!(err, KeyError::TooShort { len: 5, .. }));
        assert!(!err.to_string().contains("short\""));
    }

    #[test]
    fn kid_syntax() {
        for ok in ["k1", "2026-11-27", "a.b_c-d"] {
            assert!(valid_kid(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_kid(bad), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_secret() {
        let ring = Keyring::single("k1", SECRET).unwrap();
        let shown = format!("{ring:?} {:?}", ring.get(None).unwrap());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("k1"));
    }

    #[test]
    fn dir_layout_of_a_mounted_secret() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_27_00_00_00.000");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("k1"), [SECRET, b"\n"].concat()).unwrap();
        std::fs::write(data.join("k2"), SECRET).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/k1", dir.path().join("k1")).unwrap();
            std::os::unix::fs::symlink("..data/k2", dir.path().join("k2")).unwrap();
        }
        let ring = Keyring::from_dir(dir.path(), Some("k2")).unwrap();
        assert_eq!(ring.kids(), ["k1", "k2"]);
        assert_eq!(ring.default_kid(), Some("k2"));
        // The trailing newline is not part of the key.
        assert_eq!(
            ring.fingerprint(),
            Keyring::from_keys(
                vec![
                    Key::new("k1", SECRET).unwrap(),
                    Key::new("k2", SECRET).unwrap()
                ],
                Some("k2")
            )
            .unwrap()
            .fingerprint()
        );
    }

    #[test]
    fn dir_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::Empty(_))
        ));
        std::fs::write(dir.path().join("k1"), b"too short").unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::TooShort { .. })
        ));
        std::fs::write(dir.path().join("k1"), SECRET).unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), Some("nope")),
            Err(KeyError::UnknownDefault(_))
        ));
        assert!(matches!(
            Keyring::from_dir(&dir.path().join("missing"), None),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn default_key_rules() {
        let one = Keyring::from_keys(vec![Key::new("a", SECRET).unwrap()], None).unwrap();
        assert_eq!(one.get(None).map(Key::kid), Some("a"));
        let two = Keyring::from_keys(
            vec![
                Key::new("a", SECRET).unwrap(),
                Key::new("b", SECRET).unwrap(),
            ],
            None,
        )
        .unwrap();
        assert!(two.get(None).is_none());
        assert!(two.get(Some("b")).is_some());
        assert!(two.get(Some("c")).is_none());
    }
}

/// Property tests of the keys-dir loader: whatever the directory holds, a load either fails as a
/// whole or yields exactly its valid key files.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// File names: valid kids, dot-entries, path-ish and non-ASCII names.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
            "\\.\\.?[a-z][a-z0-9._]{0,8}",
            "[a-z]{1,4}[ é%\\\\:*?]{1,3}[a-z]{0,4}",
            "[a-z]{65,70}",
        ]
    }

    /// Contents: short, exactly at the limit, long, with trailing newlines.
    fn content() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 31..34).prop_map(|mut v| {
                v.push(b'\n');
                v
            }),
            proptest::collection::vec(any::<u8>(), 32..64),
        ]
    }

    fn trimmed(bytes: &[u8]) -> &[u8] {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes.strip_suffix(b"\r").unwrap_or(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// `from_dir` succeeds exactly when there is at least one non-dot file and every
        /// non-dot file has a valid kid and a key of at least 32 bytes (after one trailing
        /// newline); then the ring holds exactly those kids, and loading is deterministic.
        #[test]
        fn loads_exactly_the_valid_key_files(
            files in proptest::collection::btree_map(name(), content(), 0..6),
            subdir in proptest::option::of("[a-z]{1,8}"),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for (name, bytes) in &files {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            if let Some(sub) = &subdir {
                // Directories are skipped, whatever their name.
                let _ = std::fs::create_dir(dir.path().join(sub));
            }
            let visible: Vec<(&String, &Vec<u8>)> =
                files.iter().filter(|(n, _)| !n.starts_with('.')).collect();
            let should_load = !visible.is_empty()
                && visible
                    .iter()
                    .all(|(n, b)| valid_kid(n) && trimmed(b).len() >= MIN_KEY_LEN);
            match Keyring::from_dir(dir.path(), None) {
                Ok(ring) => {
                    prop_assert!(should_load, "loaded {:?}", ring.kids());
                    let mut want: Vec<&str> = visible.iter().map(|(n, _)| n.as_str()).collect();
                    want.sort_unstable();
                    prop_assert_eq!(ring.kids(), want);
                    let again = Keyring::from_dir(dir.path(), None).unwrap();
                    prop_assert_eq!(again.fingerprint(), ring.fingerprint());
                }
                Err(e) => {
                    prop_assert!(!should_load, "refused a valid directory: {}", e);
                    // Errors name kids and paths, never key bytes.
                    for (_, bytes) in &visible {
                        if let Ok(text) = std::str::from_utf8(trimmed(bytes))
                            && text.len() >= 8
                        {
                            prop_assert!(!e.to_string().contains(text), "{}", e);
                        }
                    }
                }
            }
        }
    }
}

/// The key model: each key type, its fixed algorithm, loading from files and JWKs.
#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::test_keys::{EC_PUBLIC_PEM, RSA_PUBLIC_PEM};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ed_pair() -> (String, String) {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    #[test]
    fn algorithm_is_fixed_by_key_type() {
        let (private, public) = ed_pair();
        let cases = [
            (Key::new("h", SECRET).unwrap(), Algorithm::HS256, true),
            (
                Key::ed25519_private_pem("e", private.as_bytes()).unwrap(),
                Algorithm::EdDSA,
                true,
            ),
            (
                Key::public_pem("p", public.as_bytes()).unwrap(),
                Algorithm::EdDSA,
                false,
            ),
            (
                Key::public_pem("r", RSA_PUBLIC_PEM.as_bytes()).unwrap(),
                Algorithm::RS256,
                false,
            ),
            (
                Key::public_pem("c", EC_PUBLIC_PEM.as_bytes()).unwrap(),
                Algorithm::ES256,
                false,
            ),
        ];
        for (key, alg, signs) in cases {
            assert_eq!(key.algorithm(), alg, "{key:?}");
            assert_eq!(key.can_sign(), signs, "{key:?}");
            assert_eq!(key.public_jwk().is_some(), alg != Algorithm::HS256);
        }
    }

    #[test]
    fn private_and_public_pem_have_the_same_public_jwk() {
        let (private, public) = ed_pair();
        let a = Key::ed25519_private_pem("k", private.as_bytes()).unwrap();
        let b = Key::public_pem("k", public.as_bytes()).unwrap();
        assert_eq!(a.public_jwk(), b.public_jwk());
        let jwk = serde_json::to_value(a.public_jwk().unwrap()).unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["kid"], "k");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "{jwk}");
        // Round trip through the JWK.
        let c = Key::from_jwk(a.public_jwk().unwrap()).unwrap();
        assert_eq!(c.algorithm(), Algorithm::EdDSA);
        assert!(!c.can_sign());
    }

    #[test]
    fn bad_pem_is_refused_by_kid_without_bytes() {
        let (private, public) = ed_pair();
        for (err, pem) in [
            (Key::public_pem("k", b"not a pem").unwrap_err(), "not a pem"),
            (
                Key::public_pem("k", private.as_bytes()).unwrap_err(),
                private.as_str(),
            ),
            (
                Key::ed25519_private_pem("k", public.as_bytes()).unwrap_err(),
                public.as_str(),
            ),
            (
                Key::ed25519_private_pem("k", RSA_PUBLIC_PEM.as_bytes()).unwrap_err(),
                RSA_PUBLIC_PEM,
            ),
        ] {
            assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains(pem.lines().nth(1).unwrap_or(pem)),
                "{shown}"
            );
        }
    }

    #[test]
    fn jwk_rules() {
        let ed = Key::public_pem("e", ed_pair().1.as_bytes()).unwrap();
        let rsa = Key::public_pem("r", RSA_PUBLIC_PEM.as_bytes()).unwrap();
        let ec = Key::public_pem("c", EC_PUBLIC_PEM.as_bytes()).unwrap();
        for key in [&ed, &rsa, &ec] {
            let jwk = key.public_jwk().unwrap();
            let back = Key::from_jwk(jwk).unwrap();
            assert_eq!(back.algorithm(), key.algorithm());
            assert_eq!(back.digest, key.digest);
        }
        let with = |key: &Key, f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
            f(&mut v);
            Key::from_jwk(&serde_json::from_value(v).unwrap())
        };
        // PS256 announced on an RSA key: allowed, and then the key's only algorithm.
        let ps = with(&rsa, &|v| v["alg"] = "PS256".into()).unwrap();
        assert_eq!(ps.algorithm(), Algorithm::PS256);
        // No alg: the key type decides.
        let none = with(&ed, &|v| {
            v.as_object_mut().unwrap().remove("alg");
        })
        .unwrap();
        assert_eq!(none.algorithm(), Algorithm::EdDSA);
        // An alg that contradicts the key type.
        for (key, alg) in [
            (&ed, "HS256"),
            (&ed, "RS256"),
            (&rsa, "HS256"),
            (&rsa, "ES256"),
            (&rsa, "EdDSA"),
            (&ec, "HS256"),
            (&ec, "RS256"),
        ] {
            let err = with(key, &|v| v["alg"] = alg.into()).unwrap_err();
            assert!(
                matches!(err, KeyError::AlgorithmMismatch { .. }),
                "{alg}: {err}"
            );
        }
        // `use` other than sig; missing or bad kid; a short Ed25519 x.
        let err = with(&ed, &|v| v["use"] = "enc".into()).unwrap_err();
        assert!(matches!(err, KeyError::NotForSignatures(_)), "{err}");
        let err = with(&ed, &|v| {
            v.as_object_mut().unwrap().remove("kid");
        })
        .unwrap_err();
        assert!(matches!(err, KeyError::InvalidKid(_)), "{err}");
        let err = with(&ed, &|v| v["kid"] = "../x".into()).unwrap_err();
        assert!(matches!(err, KeyError::InvalidKid(_)), "{err}");
        let err = with(&ed, &|v| v["x"] = "AAAA".into()).unwrap_err();
        assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
        // A symmetric key is never taken from a JWKS.
        let oct: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "h", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET)
        }))
        .unwrap();
        assert!(matches!(Key::from_jwk(&oct), Err(KeyError::BadKey { .. })));
    }

    #[test]
    fn jwks_never_contains_an_hmac_key() {
        let (private, public) = ed_pair();
        let ring = Keyring::from_keys(
            vec![
                Key::new("hs", SECRET).unwrap(),
                Key::ed25519_private_pem("ed", private.as_bytes()).unwrap(),
                Key::public_pem("edpub", public.as_bytes()).unwrap(),
                Key::public_pem("rsa", RSA_PUBLIC_PEM.as_bytes()).unwrap(),
            ],
            Some("ed"),
        )
        .unwrap();
        let jwks = serde_json::to_string(&ring.public_jwks()).unwrap();
        let kids: Vec<_> = ring
            .public_jwks()
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, ["ed", "edpub", "rsa"]);
        assert!(!jwks.contains("\"hs\""), "{jwks}");
        assert!(!jwks.contains("oct"), "{jwks}");
        assert!(!jwks.contains(&URL_SAFE_NO_PAD.encode(SECRET)), "{jwks}");
        assert!(!jwks.contains("\"d\""), "{jwks}");
        let hs_only = Keyring::single("hs", SECRET).unwrap();
        assert_eq!(
            serde_json::to_string(&hs_only.public_jwks()).unwrap(),
            r#"{"keys":[]}"#
        );
    }

    #[test]
    fn signing_key_must_be_able_to_sign() {
        let (private, public) = ed_pair();
        let ring = Keyring::from_keys(
            vec![
                Key::ed25519_private_pem("ed", private.as_bytes()).unwrap(),
                Key::public_pem("pub", public.as_bytes()).unwrap(),
                Key::new("hs", SECRET).unwrap(),
            ],
            Some("pub"),
        )
        .unwrap();
        assert!(matches!(ring.signing_key(None), Err(KeyError::CannotSign(k)) if k == "pub"));
        assert_eq!(ring.signing_key(Some("ed")).unwrap().kid(), "ed");
        assert_eq!(ring.signing_key(Some("hs")).unwrap().kid(), "hs");
        assert!(matches!(
            ring.signing_key(Some("nope")),
            Err(KeyError::UnknownDefault(_))
        ));
    }

    #[test]
    fn dir_with_every_key_type() {
        let (private, public) = ed_pair();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hs"), SECRET).unwrap();
        std::fs::write(dir.path().join("ed.pem"), &private).unwrap();
        std::fs::write(dir.path().join("old.pub.pem"), &public).unwrap();
        std::fs::write(dir.path().join("rsa.pub.pem"), RSA_PUBLIC_PEM).unwrap();
        std::fs::write(dir.path().join("ec.pub.pem"), EC_PUBLIC_PEM).unwrap();
        let ring = Keyring::from_dir(dir.path(), Some("ed")).unwrap();
        assert_eq!(ring.kids(), ["ec", "ed", "hs", "old", "rsa"]);
        assert_eq!(ring.get(Some("old")).unwrap().algorithm(), Algorithm::EdDSA);
        let before = ring.fingerprint();
        // Reload detection sees a changed public key.
        let other = Key::public_pem("x", ed_pair_other().as_bytes()).unwrap();
        assert_ne!(other.digest, ring.get(Some("old")).unwrap().digest);
        std::fs::write(dir.path().join("old.pub.pem"), ed_pair_other()).unwrap();
        assert_ne!(
            Keyring::from_dir(dir.path(), Some("ed"))
                .unwrap()
                .fingerprint(),
            before
        );
        // The same kid twice is refused, as is a public key where a private one is expected.
        std::fs::write(dir.path().join("hs.pub.pem"), &public).unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::DuplicateKid(k)) if k == "hs"
        ));
        std::fs::remove_file(dir.path().join("hs.pub.pem")).unwrap();
        std::fs::write(dir.path().join("bad.pem"), &public).unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::BadKey { .. })
        ));
    }

    fn ed_pair_other() -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn debug_never_prints_key_material() {
        let (private, _) = ed_pair();
        let key = Key::ed25519_private_pem("ed", private.as_bytes()).unwrap();
        let shown = format!("{key:?}");
        let body = private.lines().nth(1).unwrap();
        assert!(!shown.contains(body), "{shown}");
        assert!(shown.contains("ed") && shown.contains("EdDSA"), "{shown}");
    }
}
