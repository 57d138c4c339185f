//! The token format that ext-authz and login-service agree on.
//!
//! login-service is the only issuer and ext-authz the only verifier; both link this crate so the
//! claims, the key rules (minimum length, `kid` syntax, keys-dir layout) and the validation rules
//! cannot drift apart. The same goes for the contract between the two services: the revocation
//! feed's wire types ([`feed`]) and the one `Authorization: Bearer` parser ([`bearer`]). A key's algorithm is fixed by its type (HS256 secret, Ed25519, RSA, P-256;
//! see [`keys`]); login-service signs with whichever its active key is. Nothing here does I/O
//! except [`Keyring::from_dir`] (and it never fetches a URL), and nothing here logs.

pub mod bearer;
pub mod claims;
#[cfg(feature = "cli")]
pub mod cli;
pub mod feed;
pub mod issue;
pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod test_keys;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use bearer::BearerError;
pub use claims::Claims;
pub use feed::{
    FeedEntry, FeedEntryRef, FeedPage, FeedPageRef, FeedQuery, FeedTokenError,
    MIN_FEED_TOKEN_CHARS, feed_token,
};
pub use issue::{IssueError, Issued, Issuer};
pub use jsonwebtoken::Algorithm;
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use keys::{Key, KeyError, Keyring, MIN_KEY_LEN};
pub use verify::{HeaderPolicy, Verifier, VerifierConfig, VerifyError};

/// Seconds since the Unix epoch; the unit of every time claim.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
