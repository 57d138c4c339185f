//! Argon2id password hashing: PHC strings, OWASP parameters, a dummy hash for unknown users, and
//! hash upgrades. The async entry points run the work on the blocking pool under a semaphore, so a
//! burst of logins can neither stall the runtime nor allocate unbounded memory (each hash takes
//! `m_cost` KiB).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// OWASP's argon2id recommendation: 19 MiB.
pub const OWASP_M_COST: u32 = 19_456;
/// OWASP's argon2id recommendation: 2 iterations.
pub const OWASP_T_COST: u32 = 2;
/// OWASP's argon2id recommendation: 1 lane.
pub const OWASP_P_COST: u32 = 1;

/// Hashing or task failure (never "wrong password", which is [`Verification::Mismatch`]).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 crate refused (bad parameters; out of memory).
    #[error("argon2: {0}")]
    Hash(argon2::password_hash::Error),
    /// The blocking task panicked or was cancelled.
    #[error("hashing task failed")]
    Task,
}

/// Outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches.
    Match {
        /// The stored hash uses other parameters than the current ones: store a new hash.
        needs_rehash: bool,
    },
    /// Wrong password, no such user, or a stored value that is not a PHC string.
    Mismatch,
}

/// The current hashing parameters.
pub fn owasp_params() -> Params {
    Params::new(OWASP_M_COST, OWASP_T_COST, OWASP_P_COST, None).expect("OWASP params are valid")
}

/// Hashes `password` into an argon2id PHC string with `params` and a fresh random salt.
pub fn hash_with(password: &[u8], params: Params) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(PasswordError::Hash)?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

/// Checks `password` against `stored`; a value that is not an argon2 PHC string never matches,
/// and costs the same as a real check because `dummy` is verified instead.
pub fn verify_with(
    stored: Option<&str>,
    dummy: &str,
    password: &[u8],
    current: &Params,
) -> Verification {
    let parsed = stored
        .and_then(|s| PasswordHash::new(s).ok())
        .filter(|h| h.algorithm.as_str().starts_with("argon2"));
    match parsed {
        Some(hash) => {
            if Argon2::default().verify_password(password, &hash).is_ok() {
                Verification::Match {
                    needs_rehash: needs_rehash(&hash, current),
                }
            } else {
                Verification::Mismatch
            }
        }
        None => {
            // Why: same cost as a real check, so response time does not reveal whether the
            // e-mail exists (or holds a seed plaintext password).
            if let Ok(hash) = PasswordHash::new(dummy) {
                let _ = Argon2::default().verify_password(password, &hash);
            }
            Verification::Mismatch
        }
    }
}

/// True when `hash` is not argon2id v0x13 with exactly `current`'s m, t, p.
pub fn needs_rehash(hash: &PasswordHash<'_>, current: &Params) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return true;
    }
    match Params::try_from(hash) {
        Ok(p) => {
            p.m_cost() != current.m_cost()
                || p.t_cost() != current.t_cost()
                || p.p_cost() != current.p_cost()
        }
        Err(_) => true,
    }
}

/// Async front end: bounded concurrency, blocking pool, tracing span carried across.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("available_permits", &self.permits.available_permits())
            .finish()
    }
}

impl Hasher {
    /// A hasher with `params`, at most `concurrency` (≥ 1) hashes at a time. Computes the dummy
    /// hash (one argon2 run).
    pub fn new(params: Params, concurrency: usize) -> Result<Self, PasswordError> {
        let dummy_pw: [u8; 32] = rand::random();
        let dummy = hash_with(&dummy_pw, params.clone())?;
        Ok(Self {
            params,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> &Params {
        &self.params
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .instrument(tracing::debug_span!("hash_permit"))
            .await
            .map_err(|_| PasswordError::Task)?;
        let span = tracing::Span::current();
        // Why: the permit moves into the blocking task, so a request that times out (and drops
        // this future) still counts against the bound until its hash really finishes.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(f)
        })
        .await
        .map_err(|_| PasswordError::Task)
    }

    /// Verifies `password` against `stored` (`None`: unknown user → dummy hash).
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: Arc<SecretString>,
    ) -> Result<Verification, PasswordError> {
        let dummy = self.dummy.clone();
        let params = self.params.clone();
        self.blocking(move || {
            verify_with(
                stored.as_deref(),
                &dummy,
                password.expose_secret().as_bytes(),
                &params,
            )
        })
        .await
    }

    /// Hashes `password` with the current parameters.
    pub async fn hash(&self, password: Arc<SecretString>) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.blocking(move || hash_with(password.expose_secret().as_bytes(), params))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    #[test]
    fn roundtrip_and_mismatch() {
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        let h = hash_with("pässwörd:x".as_bytes(), p.clone()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert_eq!(
            verify_with(Some(&h), &dummy, "pässwörd:x".as_bytes(), &p),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            verify_with(Some(&h), &dummy, b"nope", &p),
            Verification::Mismatch
        );
    }

    #[test]
    fn plaintext_and_unknown_never_match() {
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        // A seed row: plaintext "secret" stored as is.
        assert_eq!(
            verify_with(Some("secret"), &dummy, b"secret", &p),
            Verification::Mismatch
        );
        assert_eq!(
            verify_with(None, &dummy, b"dummy", &p),
            Verification::Mismatch
        );
    }

    #[test]
    fn other_params_need_rehash() {
        let h = hash_with(b"pw", weak()).unwrap();
        let dummy = hash_with(b"dummy", weak()).unwrap();
        assert_eq!(
            verify_with(Some(&h), &dummy, b"pw", &owasp_params()),
            Verification::Match { needs_rehash: true }
        );
    }
}
