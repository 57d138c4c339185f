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
//! (fields a follower does not need, `reason` and `more`, may be absent). A follower reads a page
//! as [`FeedPageRef`]: the same JSON, its strings borrowed from the body.

use std::borrow::Cow;
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

/// A [`FeedPage`] as a follower reads it (issue #15 §2): `sub` and `jti` borrowed from the
/// body where they hold no JSON escape, `reason` not read at all. Why: a 1M-entry snapshot is
/// 1M entries of three strings each; allocating and freeing 3M small strings that are only
/// read once (into compact keys) was about a third of a replica's parse time (measured: 0.68–0.94
/// s → 0.50–0.59 s per 1M entries on this VM). Accepts every body [`FeedPage`] accepts, and a
/// `reason` of any JSON type (followers ignore it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FeedPageRef<'a> {
    /// As [`FeedPage::cursor`].
    pub cursor: i64,
    /// As [`FeedPage::more`].
    #[serde(default)]
    pub more: bool,
    /// As [`FeedPage::revocations`].
    #[serde(borrow)]
    pub revocations: Vec<FeedEntryRef<'a>>,
}

/// A [`FeedEntry`] as a follower reads it (see [`FeedPageRef`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FeedEntryRef<'a> {
    /// As [`FeedEntry::id`].
    pub id: i64,
    /// As [`FeedEntry::sub`].
    #[serde(borrow)]
    pub sub: FeedText<'a>,
    /// As [`FeedEntry::jti`].
    #[serde(borrow, default)]
    pub jti: Option<FeedText<'a>>,
    /// As [`FeedEntry::revoked_at`].
    pub revoked_at: i64,
    /// As [`FeedEntry::expires_at`].
    pub expires_at: i64,
}

impl FeedEntry {
    /// This entry as a follower reads it, borrowed.
    pub fn as_ref(&self) -> FeedEntryRef<'_> {
        FeedEntryRef {
            id: self.id,
            sub: FeedText(Cow::Borrowed(&self.sub)),
            jti: self.jti.as_deref().map(|j| FeedText(Cow::Borrowed(j))),
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
        }
    }
}

/// A string of a feed page: borrowed from the body unless it held a JSON escape. Why not
/// `Cow<str>`: serde borrows a `Cow` only as a direct field, not inside `Option` (`jti`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedText<'a>(pub Cow<'a, str>);

impl std::ops::Deref for FeedText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for FeedText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = FeedText<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(FeedText(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FeedText(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(FeedText(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
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
    use proptest::prelude::any;

    use super::*;

    proptest::proptest! {
        /// Any page login-service can write (any strings: quotes, backslashes, control
        /// characters, non-ASCII) reads the same owned and borrowed.
        #[test]
        fn any_page_reads_the_same_borrowed(
            entries in proptest::collection::vec(
                (any::<i64>(), "\\PC*|[\"\\\\\u{0}-\u{1f}a]*", proptest::option::of("\\PC*"), any::<i64>(), any::<i64>(), "\\PC*"),
                0..8,
            ),
            cursor in any::<i64>(),
            more in any::<bool>(),
        ) {
            let page = FeedPage {
                cursor,
                more,
                revocations: entries
                    .into_iter()
                    .map(|(id, sub, jti, revoked_at, expires_at, reason)| FeedEntry {
                        id, sub, jti, revoked_at, expires_at, reason,
                    })
                    .collect(),
            };
            let body = serde_json::to_vec(&page).unwrap();
            let read: FeedPageRef<'_> = serde_json::from_slice(&body).unwrap();
            proptest::prop_assert_eq!((read.cursor, read.more), (page.cursor, page.more));
            let expected: Vec<_> = page.revocations.iter().map(FeedEntry::as_ref).collect();
            proptest::prop_assert_eq!(read.revocations, expected);
        }
    }

    /// A follower reads every page exactly as the owned types do: the same values, borrowed
    /// when the JSON string has no escape, owned when it has one; `reason` of any type or
    /// absent; and it refuses what they refuse in the fields it reads.
    #[test]
    fn a_page_reads_the_same_borrowed() {
        let page = FeedPage {
            cursor: 9,
            more: true,
            revocations: vec![
                FeedEntry {
                    id: 8,
                    sub: "42".into(),
                    jti: Some("0123456789abcdef0123456789abcdef".into()),
                    revoked_at: 1,
                    expires_at: 2,
                    reason: "logout".into(),
                },
                FeedEntry {
                    id: 9,
                    sub: "a\"b\u{e9}\n".into(),
                    jti: None,
                    revoked_at: 3,
                    expires_at: 4,
                    reason: String::new(),
                },
            ],
        };
        let body = serde_json::to_vec(&page).unwrap();
        let read: FeedPageRef<'_> = serde_json::from_slice(&body).unwrap();
        assert_eq!((read.cursor, read.more), (9, true));
        let expected: Vec<_> = page.revocations.iter().map(FeedEntry::as_ref).collect();
        assert_eq!(read.revocations, expected);
        assert!(matches!(read.revocations[0].sub.0, Cow::Borrowed(_)));
        assert!(matches!(
            read.revocations[0].jti.as_ref().map(|j| &j.0),
            Some(Cow::Borrowed(_))
        ));
        assert!(
            matches!(read.revocations[1].sub.0, Cow::Owned(_)),
            "escaped"
        );

        // Written by another JSON writer: `\u` escapes (a surrogate pair too), `\/`, spaces.
        let other = br#"{ "revocations" : [ {"id":1, "sub":"\u0034\u0032", "jti":"0123456789\u0061bcdef0123456789abcdef",
            "revoked_at":1, "expires_at":2, "reason":"a\/b"}, {"id":2, "sub":"\ud83d\ude00\/x", "jti":null,
            "revoked_at":3, "expires_at":4} ], "cursor" : 2 }"#;
        let owned: FeedPage = serde_json::from_slice(other).unwrap();
        let read: FeedPageRef<'_> = serde_json::from_slice(other).unwrap();
        let expected: Vec<_> = owned.revocations.iter().map(FeedEntry::as_ref).collect();
        assert_eq!(read.revocations, expected);
        assert_eq!(&*read.revocations[0].sub, "42");
        assert_eq!(&*read.revocations[1].sub, "\u{1f600}/x");
        assert!(
            matches!(
                read.revocations[0].jti.as_ref().map(|j| &j.0),
                Some(Cow::Owned(_))
            ),
            "an escaped jti is unescaped"
        );

        let odd = br#"{"cursor":1,"revocations":[{"id":1,"sub":"7","jti":null,"revoked_at":1,"expires_at":2,"reason":{"x":[1]}}]}"#;
        let read: FeedPageRef<'_> = serde_json::from_slice(odd).unwrap();
        assert!(!read.more);
        assert_eq!(read.revocations[0].jti, None);
        for bad in [
            &br#"{"cursor":1,"revocations":[{"id":1,"sub":7,"revoked_at":1,"expires_at":2}]}"#[..],
            br#"{"cursor":1,"revocations":[{"id":1,"sub":"7","jti":5,"revoked_at":1,"expires_at":2}]}"#,
            br#"{"cursor":1,"revocations":[{"id":1,"sub":"7","revoked_at":1}]}"#,
            br#"{"revocations":[]}"#,
        ] {
            assert!(serde_json::from_slice::<FeedPage>(bad).is_err());
            assert!(serde_json::from_slice::<FeedPageRef<'_>>(bad).is_err());
        }
    }

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
