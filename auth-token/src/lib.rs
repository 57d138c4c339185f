//! The token format that ext-authz and login-service agree on.
//!
//! login-service is the only issuer and ext-authz the only verifier; both link this crate so the
//! claims, the key rules (minimum length, `kid` syntax, keys-dir layout) and the validation rules
//! cannot drift apart. Nothing here does I/O except [`Keyring::from_dir`], and nothing here logs.

pub mod claims;
#[cfg(feature = "cli")]
pub mod cli;
pub mod feed;
pub mod issue;
pub mod keys;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use claims::Claims;
pub use feed::{FeedTokenError, MIN_FEED_TOKEN_CHARS, feed_token};
pub use issue::{IssueError, Issued, Issuer};
pub use keys::{Key, KeyError, Keyring, MIN_KEY_LEN};
pub use verify::{Verifier, VerifierConfig, VerifyError};

/// Seconds since the Unix epoch; the unit of every time claim.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
