//! The revocation feed's shared bearer token, as both services read it from their settings.
//!
//! login-service requires it on `GET /revocations` and ext-authz sends it; one rule here so the
//! two cannot disagree about what the same secret file means.

use secrecy::{ExposeSecret as _, SecretString};

/// Shortest feed token accepted (gen-secrets and `make run` write 64 hex characters).
pub const MIN_FEED_TOKEN_CHARS: usize = 32;

/// A feed token that would never match or cannot travel in a header (the value is never
/// included in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "at least {MIN_FEED_TOKEN_CHARS} characters without whitespace or control characters (surrounding whitespace is trimmed)"
)]
pub struct FeedTokenError;

/// The configured token as used on the wire: surrounding whitespace trimmed (a secret file's
/// trailing newline goes verbatim into the environment), `None` when empty (unset); an error
/// when it is short or has whitespace or control characters inside.
pub fn feed_token(raw: Option<&SecretString>) -> Result<Option<SecretString>, FeedTokenError> {
    let Some(token) = raw
        .map(|t| t.expose_secret().trim())
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    if token.chars().count() < MIN_FEED_TOKEN_CHARS
        || token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(FeedTokenError);
    }
    Ok(Some(token.to_owned().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<Option<String>, FeedTokenError> {
        feed_token(Some(&raw.to_owned().into())).map(|t| t.map(|t| t.expose_secret().to_owned()))
    }

    #[test]
    fn trims_refuses_and_treats_empty_as_unset() {
        let token = "a".repeat(MIN_FEED_TOKEN_CHARS);
        assert_eq!(check(&format!(" {token}\n")), Ok(Some(token.clone())));
        assert_eq!(check("  \n"), Ok(None));
        assert_eq!(feed_token(None).map(|t| t.is_some()), Ok(false));
        assert_eq!(check(&token[1..]), Err(FeedTokenError));
        assert_eq!(
            check(&format!("{}\t{}", &token[..16], &token[16..])),
            Err(FeedTokenError)
        );
        assert_eq!(
            check(&format!("{}\u{7}{}", &token[..16], &token[16..])),
            Err(FeedTokenError)
        );
    }
}
