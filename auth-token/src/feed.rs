//! The revocation feed: login-service's internal `GET /revocations`, which every ext-authz
//! replica follows. Both sides link these definitions, so the wire format, the cursor rules and
//! the shared bearer token cannot drift apart.
//!
//! - Request: [`FeedQuery`] (`?since=<cursor>&wait=<seconds>&limit=<n>`), bounded by
//!   [`MAX_WAIT`], [`DEFAULT_LIMIT`] and [`MAX_LIMIT`].
//! - Answer: a [`FeedPage`] of [`FeedEntry`] in cursor (row id) order; `cursor` is the `since`
//!   of the next request. A `since` beyond the feed's newest entry is answered 409
//!   `cursor_ahead` (its database was replaced): the follower takes a new snapshot.
//! - Authentication: [`feed_token`], sent as `Authorization: Bearer`.
//! - Headers [`CURSOR_HEADER`] and [`MORE_HEADER`] repeat the page's `cursor` and `more`, so a
//!   follower reading the snapshot can ask for the next page before this one's body is read.
//!
//! Serde derives only: the JSON is exactly what login-service serves and ext-authz accepts
//! (fields a follower does not need, `reason` and `more`, may be absent).

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

/// Shortest feed token accepted (gen-secrets and `make run` write 64 hex characters).
pub const MIN_FEED_TOKEN_CHARS: usize = 32;

/// A feed token that would never match or cannot travel in a bearer header (the value is never
/// included in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "at least {MIN_FEED_TOKEN_CHARS} characters of A-Z a-z 0-9 - . _ ~ + / with optional trailing = (an RFC 6750 b64token; surrounding whitespace is trimmed)"
)]
pub struct FeedTokenError;

/// The configured token as used on the wire: surrounding whitespace trimmed (a secret file's
/// trailing newline goes verbatim into the environment), `None` when empty (unset); an error
/// when it is short or is not a `b64token`: login-service reads the header with
/// [`crate::bearer::parse`], so any other character would make every feed request a 401.
pub fn feed_token(raw: Option<&SecretString>) -> Result<Option<SecretString>, FeedTokenError> {
    let Some(token) = raw
        .map(|t| t.expose_secret().trim())
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    if token.chars().count() < MIN_FEED_TOKEN_CHARS || !crate::bearer::is_b64token(token) {
        return Err(FeedTokenError);
    }
    Ok(Some(token.to_owned().into()))
}

/// Response header repeating the page's `cursor` (decimal). Why (issue #15 §2): a follower
/// loading a 1M-entry snapshot asks for the next page as soon as this header arrives, so
/// login-service reads and encodes page k + 1 while the follower parses page k. A follower must
/// check the body's `cursor` against it, and must not rely on it (an older login-service does
/// not send it).
pub const CURSOR_HEADER: &str = "feed-cursor";
/// Response header repeating the page's `more` (`true` or `false`), as [`CURSOR_HEADER`].
pub const MORE_HEADER: &str = "feed-more";

/// Longest long poll the feed grants (a larger `wait` is cut to this).
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Entries per page when the query does not say.
pub const DEFAULT_LIMIT: i64 = 1000;
/// Most entries per page (a larger `limit` is cut to this; below 1 means 1).
pub const MAX_LIMIT: i64 = 10_000;

/// One revocation, as login-service stores it and serves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedEntry {
    /// Feed cursor (the row id): only grows, never reused.
    pub id: i64,
    /// User id (`sub`).
    pub sub: String,
    /// One token; `None` (served as `null`): every token of `sub` with `iat <= revoked_at`.
    #[serde(default)]
    pub jti: Option<String>,
    /// Unix seconds of the revocation; for a user-wide one, the cut.
    pub revoked_at: i64,
    /// Unix seconds after which the entry covers no valid token.
    pub expires_at: i64,
    /// Why it was made (`logout`, `logout_all`, `password`, ...): for people reading the feed;
    /// followers ignore it, and accept its absence.
    #[serde(default)]
    pub reason: String,
}

/// The body of one `GET /revocations` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedPage {
    /// Pass as `since` next time: the last id returned (or `since` when none).
    pub cursor: i64,
    /// More entries are waiting: ask again at once (absent means `false`).
    #[serde(default)]
    pub more: bool,
    /// The entries, in id order.
    pub revocations: Vec<FeedEntry>,
}

/// The query of `GET /revocations`. Every field may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedQuery {
    /// Cursor: entries with a larger id are returned; `0` = snapshot of everything unexpired.
    #[serde(default)]
    pub since: i64,
    /// Seconds to wait for a new entry when there is none (long poll); `0` answers at once
    /// (a follower's first request, the snapshot, uses `since=0&wait=0`).
    #[serde(default)]
    pub wait: u64,
    /// Most entries in this response ([`DEFAULT_LIMIT`] when absent, at most [`MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

impl FeedQuery {
    /// The cursor to read after: a negative `since` means the snapshot (`0`).
    pub fn bounded_since(&self) -> i64 {
        self.since.max(0)
    }

    /// The long-poll wait the feed grants: at most [`MAX_WAIT`] (the server may cut it further
    /// to end before its own request timeout).
    pub fn bounded_wait(&self) -> Duration {
        Duration::from_secs(self.wait).min(MAX_WAIT)
    }

    /// Entries per page: [`DEFAULT_LIMIT`] when absent, within `1..=MAX_LIMIT`.
    pub fn bounded_limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
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
        // Every token accepted here must pass the bearer parser that reads it on the other side.
        for bad in ['!', '#', '"', ',', ';', '%', '='] {
            let mid = format!("{}{bad}{}", &token[..16], &token[16..]);
            assert_eq!(check(&mid), Err(FeedTokenError), "{mid:?}");
        }
        let b64 = format!("{}-._~+/AZaz09==", "x".repeat(MIN_FEED_TOKEN_CHARS));
        assert_eq!(check(&b64), Ok(Some(b64.clone())));
        assert_eq!(
            crate::bearer::parse(Some(&format!("Bearer {b64}"))),
            Ok(b64.as_str())
        );
    }

    #[test]
    fn entry_json_is_the_served_shape_and_optional_fields_may_be_absent() {
        let entry = FeedEntry {
            id: 7,
            sub: "42".into(),
            jti: None,
            revoked_at: 1_000,
            expires_at: 2_000,
            reason: "password".into(),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"sub":"42","jti":null,"revoked_at":1000,"expires_at":2000,"reason":"password"}"#
        );
        assert_eq!(serde_json::from_str::<FeedEntry>(&json).unwrap(), entry);
        let bare: FeedEntry =
            serde_json::from_str(r#"{"id":1,"sub":"7","revoked_at":5,"expires_at":9}"#).unwrap();
        assert_eq!((bare.jti, bare.reason.as_str()), (None, ""));
        let page: FeedPage = serde_json::from_str(r#"{"cursor":3,"revocations":[]}"#).unwrap();
        assert!(!page.more);
        assert_eq!(
            serde_json::to_string(&FeedPage {
                cursor: 3,
                more: true,
                revocations: vec![]
            })
            .unwrap(),
            r#"{"cursor":3,"more":true,"revocations":[]}"#
        );
    }

    #[test]
    fn query_bounds() {
        let q = FeedQuery::default();
        assert_eq!(
            (q.bounded_since(), q.bounded_wait(), q.bounded_limit()),
            (0, Duration::ZERO, DEFAULT_LIMIT)
        );
        let q = FeedQuery {
            since: -5,
            wait: 3_600,
            limit: Some(1_000_000),
        };
        assert_eq!(
            (q.bounded_since(), q.bounded_wait(), q.bounded_limit()),
            (0, MAX_WAIT, MAX_LIMIT)
        );
        let q = FeedQuery {
            since: 9,
            wait: 5,
            limit: Some(0),
        };
        assert_eq!(
            (q.bounded_since(), q.bounded_wait(), q.bounded_limit()),
            (9, Duration::from_secs(5), 1)
        );
    }
}
