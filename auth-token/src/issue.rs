//! Issuing access tokens: what login-service does after a successful password check.

use std::time::Duration;

use jsonwebtoken::Header;

use crate::claims::Claims;
use crate::keys::Key;

/// Why a token could not be signed: a public (verify-only) key, or a signing failure (in
/// practice never, with a valid [`Key`]).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The key is a public key; [`crate::Keyring::signing_key`] refuses it at load time.
    #[error("key {0:?} is a public key and cannot sign")]
    PublicKey(String),
    /// The signature could not be computed.
    #[error("cannot sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A freshly signed token and what the HTTP response reports about it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The compact JWS.
    pub token: String,
    /// The claims inside it (for logs: `sub`, `jti`; never the token).
    pub claims: Claims,
    /// Seconds until expiry, for the OAuth-style `expires_in`.
    pub expires_in: u64,
}

/// Issues tokens with a fixed lifetime and optional `iss`/`aud`.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Lifetime of a token (`exp - iat`).
    pub ttl: Duration,
    /// Written as `iss` when set.
    pub issuer: Option<String>,
    /// Written as `aud` when set.
    pub audience: Option<String>,
}

impl Issuer {
    /// Signs a token for user `sub` with `key` (HS256 for an HMAC secret, EdDSA for an Ed25519
    /// private key: the key's type decides), valid from `now` (Unix seconds) for `ttl`.
    pub fn issue(
        &self,
        key: &Key,
        sub: &str,
        email: &str,
        roles: &[String],
        now: u64,
    ) -> Result<Issued, IssueError> {
        let ttl = self.ttl.as_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            roles: roles.to_vec(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let encoding = key
            .encoding()
            .ok_or_else(|| IssueError::PublicKey(key.kid().to_owned()))?;
        let mut header = Header::new(key.algorithm());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, encoding)?;
        Ok(Issued {
            token,
            claims,
            expires_in: ttl,
        })
    }
}
