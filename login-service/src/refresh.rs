//! Refresh tokens (issue #17): the rows behind `POST /token` and their rules. No HTTP here.
//!
//! **The token.** 32 bytes from `rand`'s thread generator (ChaCha12, a CSPRNG seeded and
//! reseeded from the OS), base64url without padding: 43 characters, 256 bits. Only its SHA-256
//! is stored (`token_hash`, unique index): a fast hash is right for a value with 256 bits of
//! entropy (nothing to brute-force), and a database dump gives no usable token.
//!
//! **Families.** A login that asks for a refresh token starts a family (random `family_id`,
//! generation 0, `auth_time` = the login's `iat`, `session_expires_at` = `auth_time` +
//! `SESSION_MAX_AGE`). [`rotate`] uses a token up and issues the next one of the same family,
//! in one transaction:
//!
//! 1. `UPDATE … SET used_at = now WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS
//!    NULL AND expires_at > now` — the database decides: of two concurrent refreshes with the
//!    same token, on any replica, exactly one changes the row (affected rows = 1);
//! 2. the account is read: gone, disabled, password changed after the login, or a user-wide
//!    revocation at or after the login (`user revoke`, logout-all, passwd, disable, remove)
//!    ends the family;
//! 3. the access token is signed (`iat` = now, after any cut seen in step 2) and the next row
//!    inserted (generation + 1, `expires_at` = min(now + `REFRESH_TOKEN_TTL`, session end)).
//!
//! **Reuse.** A token that is already used, presented again, is the signature of a stolen
//! token (RFC 6819 §5.2.2.3, OAuth 2.0 Security BCP §4.14): either the thief or the client has
//! rotated it already. [`revoke_family`] ends the whole family (`revoked_at` on every row) and
//! revokes, through the existing revocation feed, the access tokens issued with it that
//! verifiers may still accept — as **per-`jti` entries** (`reason = refresh_reuse`), not a
//! user-wide cut: a cut would also end the user's other sessions (other devices), which did
//! nothing wrong. The per-user bound of the feed still holds (`MAX_REVOKED_PER_USER`: beyond it
//! one user-wide cut, `revocations::revoke_batch`). Both commit together, so an ended
//! family needs nothing more: the cost of a reuse does not grow with the family, and a repeated
//! one does no revocation work. `POST /logout` ends its family the same way
//! ([`end_family_of_access`]). A concurrent loser is a reuse too (no grace period): clients must
//! not refresh the same token twice at once. A refused rotation (account, exhausted) leaves the
//! token unused, so a retry is refused again, never taken for a reuse.
//!
//! **Races with account changes.** The CLI commits its account change, stores the user-wide
//! cut, then ends the user's families ([`end_user`]). A rotation holds the row it used up
//! locked until it commits (InnoDB row lock; SQLite's single writer), and [`end_user`] updates
//! that row too: if the rotation commits first, [`end_user`] also ends the new row; if
//! [`end_user`] commits first, step 1 finds the row revoked. A login's family starts with the
//! same ordering ([`start`] runs after the conditional success write and before the final cut
//! check, `crate::login`).
//!
//! **Bounds.** Nothing is held in memory. Rows per family: at most `REFRESH_MAX_ROTATIONS` + 1
//! (a rotation past it is refused: log in again); families per user: `REFRESH_MAX_SESSIONS`
//! (a login deletes the user's ended families and the least recently refreshed beyond it,
//! [`start`]); rows are deleted `RETENTION_SLACK_SECS` after `expires_at` or after their family
//! ended by [`cleanup`], in batches of [`CLEANUP_BATCH`].
//!
//! **Known limit (MySQL).** A rotation does not take the revocation writers' lock: one racing a
//! user-wide cut can read the cutoff before the cut commits yet sign at a later second than the
//! cut's time (a window of the cut's own insert, milliseconds). The family is still ended by
//! the CLI / logout-all; that one access token lives until its `exp` (`ACCESS_TOKEN_TTL`).

use std::time::Duration;

use base64::Engine as _;
use diesel::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::db::DbConn;
use crate::revocations::{self, Reason, RevokeOne};
use crate::schema::refresh_token;
use crate::users::{self, User};

/// Random bytes in a refresh token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Length of a refresh token as sent: base64url of [`TOKEN_BYTES`] without padding.
pub const TOKEN_CHARS: usize = 43;
/// Rows the cleanup deletes per statement (keeps each delete short on a big table).
pub const CLEANUP_BATCH: i64 = 1000;

/// Lifetimes and bounds of refresh tokens (`REFRESH_TOKEN_TTL`, `SESSION_MAX_AGE`,
/// `REFRESH_MAX_ROTATIONS`, `REFRESH_MAX_SESSIONS`). Rows per user are at most
/// `max_sessions` × (`max_rotations` + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long one refresh token can be used (from its issue).
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a family, from the login: no refresh after it.
    pub session_max_age: Duration,
    /// Rotations one family allows; the next one is refused (bounds its rows).
    pub max_rotations: u32,
    /// Families one user keeps: a login beyond it deletes the least recently refreshed one.
    pub max_sessions: u32,
}

/// Default of [`Lifetimes::max_rotations`]: a refresh every 15 minutes for 90 days is 8 640.
pub const DEFAULT_MAX_ROTATIONS: u32 = 10_000;
/// Default of [`Lifetimes::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: u32 = 10;

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            refresh_ttl: Duration::from_secs(30 * 86_400),
            session_max_age: Duration::from_secs(90 * 86_400),
            max_rotations: DEFAULT_MAX_ROTATIONS,
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

/// A refresh token as handed to the client. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// A new random token.
    pub fn generate() -> Self {
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token text, for the response body only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored: SHA-256 hex.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(…)")
    }
}

/// SHA-256 hex of a presented token.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether `token` has the shape of a token we issue (43 base64url characters): anything else
/// is refused without a database lookup.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The access token issued together with a refresh token.
#[derive(Debug, Clone, Copy)]
pub struct AccessRef<'a> {
    /// Its `jti`.
    pub jti: &'a str,
    /// Its `exp`, Unix seconds.
    pub exp: i64,
}

#[derive(Insertable)]
#[diesel(table_name = refresh_token)]
struct NewRow<'a> {
    token_hash: &'a str,
    family_id: &'a str,
    user_id: i32,
    generation: i32,
    auth_time: i64,
    session_expires_at: i64,
    issued_at: i64,
    expires_at: i64,
    access_jti: &'a str,
    access_exp: i64,
}

/// One stored row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_token)]
pub struct Row {
    /// Row id.
    pub id: i64,
    /// The family.
    pub family_id: String,
    /// The account.
    pub user_id: i32,
    /// 0 at login, +1 per rotation.
    pub generation: i32,
    /// The login's time.
    pub auth_time: i64,
    /// Absolute end of the family.
    pub session_expires_at: i64,
    /// Issue time.
    pub issued_at: i64,
    /// End of this token.
    pub expires_at: i64,
    /// When it was rotated.
    pub used_at: Option<i64>,
    /// When its family was ended.
    pub revoked_at: Option<i64>,
    /// The access token issued with it.
    pub access_jti: String,
    /// That access token's `exp`.
    pub access_exp: i64,
}

/// Starts a family for user `user_id` at login time `auth_time` (the access token's `iat`):
/// stores the hash of a new token (generation 0) and returns the token.
pub fn start(
    conn: &mut DbConn,
    user_id: i32,
    auth_time: i64,
    access: AccessRef<'_>,
    lifetimes: &Lifetimes,
) -> QueryResult<RefreshToken> {
    let token = RefreshToken::generate();
    let family: [u8; 16] = rand::random();
    let family_id = family
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let session_expires_at = auth_time.saturating_add(secs(lifetimes.session_max_age));
    diesel::insert_into(refresh_token::table)
        .values(NewRow {
            token_hash: &token.hash(),
            family_id: &family_id,
            user_id,
            generation: 0,
            auth_time,
            session_expires_at,
            issued_at: auth_time,
            expires_at: auth_time
                .saturating_add(secs(lifetimes.refresh_ttl))
                .min(session_expires_at),
            access_jti: access.jti,
            access_exp: access.exp,
        })
        .execute(conn)?;
    match prune_user(conn, user_id, lifetimes.max_sessions) {
        // Why not fail the login: a deadlock with a concurrent refresh of the same user (MySQL)
        // rolled back only that statement; the next login prunes.
        Err(e) if is_retryable(&e) => {
            tracing::warn!(error = %e, "refresh sessions not pruned; the next login will");
        }
        r => r?,
    }
    Ok(token)
}

/// Keeps at most `max_sessions` families of `user_id` (issue #17 review, M1): deletes the rows
/// of its ended families (nothing needs them: their access tokens were sent to the feed when
/// they ended, or a user-wide cut covers them), then every row of its live families beyond
/// the `max_sessions` most recently refreshed. A deleted family's refresh token is refused
/// (`unknown`); its last access token lives until its `exp`. Runs after the insert, so two
/// concurrent logins both end within the bound.
fn prune_user(conn: &mut DbConn, user_id: i32, max_sessions: u32) -> QueryResult<()> {
    diesel::delete(
        refresh_token::table
            .filter(refresh_token::user_id.eq(user_id))
            .filter(refresh_token::revoked_at.is_not_null()),
    )
    .execute(conn)?;
    // Why the unused rows: each live family has exactly one (its newest token), so they name
    // the families in order of their last refresh (`refresh_token_user_tip` index).
    let evicted: Vec<String> = refresh_token::table
        .filter(refresh_token::user_id.eq(user_id))
        .filter(refresh_token::used_at.is_null())
        .order(refresh_token::id.desc())
        .offset(i64::from(max_sessions.max(1)))
        .limit(CLEANUP_BATCH)
        .select(refresh_token::family_id)
        .load(conn)?;
    if !evicted.is_empty() {
        diesel::delete(refresh_token::table.filter(refresh_token::family_id.eq_any(&evicted)))
            .execute(conn)?;
    }
    Ok(())
}

/// Why a refresh token was refused (all answered `invalid_grant`; the variant is for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such token (never issued, or deleted by the cleanup).
    Unknown,
    /// Past its `expires_at` (its own TTL or the session's end).
    Expired,
    /// Its family was ended (logout, account change, an earlier reuse).
    Revoked,
    /// The account is gone, disabled, its password changed, or it was revoked since the login.
    Account,
    /// The family reached `REFRESH_MAX_ROTATIONS` (the token stays unused: a retry is refused
    /// the same way, never taken for a reuse).
    Exhausted,
}

impl Refused {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Account => "account",
            Self::Exhausted => "exhausted",
        }
    }
}

/// What [`rotate`] decided.
#[derive(Debug)]
pub enum Rotation<T> {
    /// The token was used up; `access` was signed and `refresh` is the family's next token.
    Rotated {
        /// What the signer returned.
        access: T,
        /// The new refresh token.
        refresh: RefreshToken,
        /// The account.
        user_id: i32,
    },
    /// A used token presented again: the caller must [`revoke_family`] unless `ended`
    /// (outside this transaction: the revocation feed has its own writers' lock).
    Reused {
        /// The family to end.
        family_id: String,
        /// Its account.
        user_id: i32,
        /// The family was already ended, with its access tokens in the feed (or covered by a
        /// user-wide cut): nothing is left to do.
        ended: bool,
    },
    /// Refused; nothing issued.
    Refused(Refused),
}

/// A failure inside [`rotate`]'s transaction: the database, or the signer (then the
/// transaction is rolled back and the token stays usable).
#[derive(Debug, thiserror::Error)]
pub enum RotateError<E> {
    /// The database failed; nothing was decided.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// Signing the access token failed.
    #[error("signing failed")]
    Sign(E),
}

/// The signer [`rotate`] calls inside its transaction: the account and the `iat` in, the signed
/// access token and its `jti`/`exp` out.
pub type Signed<T> = (T, String, i64);

/// Uses the token whose hash is `token_hash` up and issues the family's next one (the module
/// docs give the steps). `sign(user, iat)` signs the access token.
pub fn rotate<T, E>(
    conn: &mut DbConn,
    token_hash: &str,
    now: i64,
    lifetimes: &Lifetimes,
    sign: impl FnOnce(&User, i64) -> Result<Signed<T>, E>,
) -> Result<Rotation<T>, RotateError<E>> {
    // Why by primary key: MariaDB takes next-key locks for the UPDATE through the unique hash
    // index, and a loser waiting there blocks the winner's insert of the next hash into that
    // gap (a deadlock, found by the concurrency test). A primary-key equality locks the record
    // only.
    let Some(id) = refresh_token::table
        .filter(refresh_token::token_hash.eq(token_hash))
        .select(refresh_token::id)
        .first::<i64>(conn)
        .optional()?
    else {
        return Ok(Rotation::Refused(Refused::Unknown));
    };
    let decided = conn.transaction::<_, RotateError<E>, _>(|c| {
        // Why first, and a write: the row lock (InnoDB) or the writer lock (SQLite) is taken
        // before anything is read, and "exactly one wins" is the affected-row count.
        let won = diesel::update(
            refresh_token::table
                .find(id)
                .filter(refresh_token::used_at.is_null())
                .filter(refresh_token::revoked_at.is_null())
                .filter(refresh_token::expires_at.gt(now)),
        )
        .set(refresh_token::used_at.eq(Some(now)))
        .execute(c)?;
        if won != 1 {
            return Ok(None);
        }
        let row = refresh_token::table
            .find(id)
            .select(Row::as_select())
            .first::<Row>(c)?;
        let user = users::find_by_id(c, row.user_id)?;
        let cutoff = revocations::user_cutoff(c, &row.user_id.to_string(), now)?;
        let account_ok = user.as_ref().is_some_and(|u| {
            !u.disabled
                && u.password_changed_at
                    .is_none_or(|t| t.and_utc().timestamp() <= row.auth_time)
        }) && cutoff.is_none_or(|cut| cut < row.auth_time);
        let refused = if !account_ok {
            Some(Refused::Account)
        } else if u32::try_from(row.generation).unwrap_or(u32::MAX) >= lifetimes.max_rotations {
            Some(Refused::Exhausted)
        } else {
            None
        };
        if let Some(why) = refused {
            // Why undo `used_at` (review L4): a refused token was not used; if it stayed used,
            // the client's retry would be taken for a reuse and revoke the session's access
            // tokens (or cut every token of the user).
            diesel::update(refresh_token::table.find(id))
                .set(refresh_token::used_at.eq(None::<i64>))
                .execute(c)?;
            if why == Refused::Account {
                end_family(c, &row.family_id, now)?;
            }
            return Ok(Some(Rotation::Refused(why)));
        }
        let Some(user) = user else {
            return Ok(Some(Rotation::Refused(Refused::Account)));
        };
        // Why `iat` = now: it is after `auth_time`, hence after every cut seen above; a cut
        // stored after this read is at a later second or covers `iat` (same clock).
        let (access, jti, exp) = sign(&user, now).map_err(RotateError::Sign)?;
        let token = RefreshToken::generate();
        diesel::insert_into(refresh_token::table)
            .values(NewRow {
                token_hash: &token.hash(),
                family_id: &row.family_id,
                user_id: row.user_id,
                generation: row.generation.saturating_add(1),
                auth_time: row.auth_time,
                session_expires_at: row.session_expires_at,
                issued_at: now,
                expires_at: now
                    .saturating_add(secs(lifetimes.refresh_ttl))
                    .min(row.session_expires_at),
                access_jti: &jti,
                access_exp: exp,
            })
            .execute(c)?;
        Ok(Some(Rotation::Rotated {
            access,
            refresh: token,
            user_id: row.user_id,
        }))
    })?;
    if let Some(rotation) = decided {
        return Ok(rotation);
    }
    // Lost (or never usable): read the row again, outside the transaction, so the answer is
    // what the winner committed (a transaction's snapshot could predate it).
    // Why `used_at` before `revoked_at`: a used token of an ended family is still a reuse (and
    // logged as one), but ending a family and sending its access tokens to the feed commit
    // together ([`revoke_family`]), so an ended family needs nothing more: a reuse repeated
    // over and over costs no more than this read (review H1).
    let row = refresh_token::table
        .find(id)
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?;
    Ok(match row {
        None => Rotation::Refused(Refused::Unknown),
        Some(row) if row.used_at.is_some() => Rotation::Reused {
            ended: row.revoked_at.is_some(),
            family_id: row.family_id,
            user_id: row.user_id,
        },
        Some(row) if row.revoked_at.is_some() => Rotation::Refused(Refused::Revoked),
        Some(_) => Rotation::Refused(Refused::Expired),
    })
}

/// Attempts of a refresh's database work when it meets [`is_retryable`] failures.
pub const ATTEMPTS: u32 = 3;

/// Whether `e` is a deadlock or serialization failure: the transaction was rolled back and
/// running it again is safe (MySQL error 1213; the rotation's and the family revocation's
/// statements can meet an account change's in opposite orders).
pub fn is_retryable(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(kind, info) => {
            matches!(
                kind,
                diesel::result::DatabaseErrorKind::SerializationFailure
            ) || info.message().contains("Deadlock")
        }
        _ => false,
    }
}

/// Ends family `family_id` (every row gets `revoked_at`); returns rows changed.
pub fn end_family(conn: &mut DbConn, family_id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(
        refresh_token::table
            .filter(refresh_token::family_id.eq(family_id))
            .filter(refresh_token::revoked_at.is_null()),
    )
    .set(refresh_token::revoked_at.eq(Some(now)))
    .execute(conn)
}

/// Ends every family of user `user_id` (`user revoke`/`passwd`/`disable`/`remove`,
/// `POST /logout?all=true`); returns rows changed.
pub fn end_user(conn: &mut DbConn, user_id: i32, now: i64) -> QueryResult<usize> {
    diesel::update(
        refresh_token::table
            .filter(refresh_token::user_id.eq(user_id))
            .filter(refresh_token::revoked_at.is_null()),
    )
    .set(refresh_token::revoked_at.eq(Some(now)))
    .execute(conn)
}

/// What [`revoke_family`] and [`end_family_of_access`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyEnd {
    /// No family (the access token came without a refresh token).
    NoFamily,
    /// The family was already ended: nothing done.
    AlreadyEnded,
    /// Ended now; its live access tokens went to the feed as this.
    Ended(revocations::BatchOutcome),
}

/// Ends the family the access token `jti` of user `sub` was issued with, if any, and revokes
/// the family's live access tokens as [`revoke_family`] does (`POST /logout`, review M2: a
/// thief who rotated earlier holds another access token of the session). Logout ends the
/// session, not only the access token.
pub fn end_family_of_access(
    conn: &mut DbConn,
    jti: &str,
    max_per_user: u32,
    cut_ttl: Duration,
) -> QueryResult<FamilyEnd> {
    let family = refresh_token::table
        .filter(refresh_token::access_jti.eq(jti))
        .select((refresh_token::family_id, refresh_token::user_id))
        .first::<(String, i32)>(conn)
        .optional()?;
    match family {
        Some((f, user_id)) => {
            revoke_family(conn, &f, user_id, max_per_user, cut_ttl, Reason::Logout)
        }
        None => Ok(FamilyEnd::NoFamily),
    }
}

/// Reuse detected (or logout): ends family `family_id` of `user_id` and revokes its access
/// tokens that verifiers may still accept (per-`jti` entries with `reason`; `exp` within
/// [`revocations::RETENTION_SLACK_SECS`] of now: ext-authz accepts `exp` plus its leeway, 30 s
/// by default), in one transaction under the revocation writers' lock. The cost does not grow
/// with the family (review H1): a family already ended is left alone (one `UPDATE` that changes
/// nothing), at most `max_per_user` + 1 access tokens are read, and more than the per-user
/// bound allows become one user-wide cut (`revocations::revoke_batch`).
pub fn revoke_family(
    conn: &mut DbConn,
    family_id: &str,
    user_id: i32,
    max_per_user: u32,
    cut_ttl: Duration,
    reason: Reason,
) -> QueryResult<FamilyEnd> {
    revocations::locked(conn, |c| {
        let now = revocations::now_secs();
        // Why this is the flag: every path that ends a family either sends its access tokens
        // to the feed in the same transaction (here) or follows a user-wide cut covering them
        // (the CLI's account changes, logout-all, a rotation refused after such a change; an
        // account edited in the database behind the CLI's back has no cut, and no reuse of
        // its ended family revokes anything).
        if end_family(c, family_id, now)? == 0 {
            return Ok(FamilyEnd::AlreadyEnded);
        }
        let live: Vec<(String, i64, i64)> = refresh_token::table
            .filter(refresh_token::family_id.eq(family_id))
            .filter(refresh_token::access_exp.gt(now - revocations::RETENTION_SLACK_SECS))
            .order(refresh_token::id.desc())
            .limit(i64::from(max_per_user).saturating_add(1))
            .select((
                refresh_token::access_jti,
                refresh_token::issued_at,
                refresh_token::access_exp,
            ))
            .load(c)?;
        let tokens: Vec<RevokeOne> = live
            .into_iter()
            .map(|(jti, iat, exp)| RevokeOne { jti, iat, exp })
            .collect();
        let sub = user_id.to_string();
        revocations::revoke_batch(c, &sub, &tokens, now, max_per_user, cut_ttl, reason)
            .map(FamilyEnd::Ended)
    })
}

/// The row of a presented token, by hash (tests and diagnostics).
pub fn find(conn: &mut DbConn, token_hash: &str) -> QueryResult<Option<Row>> {
    refresh_token::table
        .filter(refresh_token::token_hash.eq(token_hash))
        .select(Row::as_select())
        .first(conn)
        .optional()
}

/// Deletes at most [`CLEANUP_BATCH`] rows expired, or of a family ended, for longer than
/// [`revocations::RETENTION_SLACK_SECS`]; returns the rows deleted. A used row of a live family
/// is kept until then so that its reuse is still detected.
pub fn cleanup(conn: &mut DbConn, now: i64) -> QueryResult<usize> {
    let old = now - revocations::RETENTION_SLACK_SECS;
    // Why two queries: each walks its own index (`expires_at`, `revoked_at`); one `OR` would
    // scan the table.
    let mut ids: Vec<i64> = refresh_token::table
        .filter(refresh_token::expires_at.le(old))
        .order(refresh_token::id.asc())
        .limit(CLEANUP_BATCH)
        .select(refresh_token::id)
        .load(conn)?;
    let room = CLEANUP_BATCH - i64::try_from(ids.len()).unwrap_or(CLEANUP_BATCH);
    if room > 0 {
        let ended: Vec<i64> = refresh_token::table
            .filter(refresh_token::revoked_at.le(old))
            .filter(refresh_token::expires_at.gt(old))
            .order(refresh_token::revoked_at.asc())
            .limit(room)
            .select(refresh_token::id)
            .load(conn)?;
        ids.extend(ended);
    }
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::delete(refresh_token::table.filter(refresh_token::id.eq_any(ids))).execute(conn)
}

/// Deletes expired rows every `interval` (one batch per tick, more while batches are full).
pub async fn cleanup_loop(db: crate::db::Db, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        loop {
            let now = revocations::now_secs();
            match db.run(move |c| cleanup(c, now)).await {
                Ok(n) if usize::try_from(CLEANUP_BATCH).is_ok_and(|b| n >= b) => {
                    tracing::info!(deleted = n, "expired refresh tokens deleted; more to go");
                }
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(deleted = n, "expired refresh tokens deleted");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refresh token cleanup failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_hashed() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert!(well_formed(a.expose()));
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a.expose())
            .unwrap();
        assert_eq!(decoded.len(), TOKEN_BYTES);
        assert_eq!(a.hash().len(), 64);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn shape_check() {
        assert!(!well_formed(""));
        assert!(!well_formed(&"a".repeat(44)));
        assert!(!well_formed(&format!("{}=", "a".repeat(42))));
        assert!(!well_formed(&format!("{}+", "a".repeat(42))));
        assert!(well_formed(&format!("{}-_", "a".repeat(41))));
    }
}
