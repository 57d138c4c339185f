//! The key flags both binaries accept, defined once so their names and env vars cannot drift.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::keys::{DEFAULT_KID, KeyError, Keyring};

/// Where the HMAC keys come from: exactly one of `JWT_SECRET` or `KEYS_DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Single HS256 key (≥ 32 bytes), kid "default". Prefer --keys-dir in production.
    #[arg(
        long,
        env = "JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "keys_dir"
    )]
    pub jwt_secret: Option<SecretString>,
    /// Directory with one key file per kid (a mounted Kubernetes Secret); watched for changes.
    #[arg(long, env = "KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Key used for tokens without a `kid` header; defaults to the only key when there is one.
    #[arg(long, env = "JWT_DEFAULT_KID")]
    pub default_kid: Option<String>,
}

/// Startup failure of [`KeyArgs::load`].
#[derive(Debug, thiserror::Error)]
pub enum KeyArgsError {
    /// Neither source given.
    #[error("no signing keys: set JWT_SECRET or --keys-dir")]
    Missing,
    /// The source was given but is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl KeyArgs {
    /// Loads the keyring from whichever source is configured.
    pub fn load(&self) -> Result<Keyring, KeyArgsError> {
        match (&self.jwt_secret, &self.keys_dir) {
            (_, Some(dir)) => Ok(Keyring::from_dir(dir, self.default_kid.as_deref())?),
            (Some(secret), None) => {
                let ring = Keyring::single(DEFAULT_KID, secret.expose_secret().as_bytes())?;
                match self.default_kid.as_deref() {
                    Some(kid) if kid != DEFAULT_KID => {
                        Err(KeyError::UnknownDefault(kid.to_owned()).into())
                    }
                    _ => Ok(ring),
                }
            }
            (None, None) => Err(KeyArgsError::Missing),
        }
    }
}
