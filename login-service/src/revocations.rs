//! Queries on the `revocation` table: the revocations of `POST /logout` and of the admin CLI,
//! and the pages of the `GET /revocations` feed every ext-authz replica follows (ext-authz never
//! reads the database). Like [`crate::users`], every function takes a [`DbConn`] and is meant
//! to run inside [`crate::db::Db::run`]; the HTTP side is [`crate::routes`].
//!
//! Rows of the `revocation` table are either one token (`jti` set; kept until the token's `exp`)
//! or a user-wide cut (`jti` NULL: every token of `sub` with `iat <= revoked_at`; kept for
//! [`crate::config::RevocationSettings::user_ttl`], the longest token lifetime). Rows stay
//! [`RETENTION_SLACK_SECS`] past `expires_at` (verifiers accept `exp` with a clock-skew leeway),
//! then [`cleanup`] deletes them.
//!
//! **The `iat` rule.** `iat` has one-second resolution, so "tokens issued before T" cannot be
//! told apart from "tokens issued in the same second right after T". A user-wide revocation at
//! Unix second `T` revokes `iat <= T`, and login-service never issues a token for that user with
//! `iat <= T`: a login in the same second waits for the next second
//! ([`crate::login::fresh_iat`], at most one second, and only right after a revocation of that
//! very user). So every earlier token dies and every later login lives.
//!
//! **Logins in flight.** The cutoff a login honours is the one read with the user row, and
//! the `iat` is fixed *before* the login's conditional success write
//! ([`crate::users::record_success`]: same hash, enabled, unlocked). The CLI changes the row
//! first and reads `T` after that commit; so either the login's write came first (then
//! `iat <= T` and the cut revokes the token) or it finds the row changed and issues nothing.
//! A cut newer than the one read at lookup (`user revoke`, logout-all) also stops the login.
//! `T` is read inside the writers' lock, right before the insert: a login that finishes while
//! the cut waits for the lock has `iat <= T`, so the stored cut still revokes it.
//!
//! **The cursor.** `id` (AUTO_INCREMENT / SQLite AUTOINCREMENT) is the feed cursor. A reader
//! must never see id 7 before id 6 is visible, or it would skip 6: on MySQL, inserts are
//! serialised with a named lock (`GET_LOCK`) held until the writer's transaction is committed, so
//! ids become visible in order across replicas; SQLite has a single writer anyway. [`cleanup`]
//! always keeps the newest row, so an id is never handed out twice even by servers that
//! recompute the counter from `MAX(id)` at startup.

use std::time::Duration;

use auth_token::FeedEntry;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use tracing::info;

use crate::db::{Db, DbConn};
use crate::schema::revocation;

/// Seconds a row outlives its `expires_at` (in the feed and the table): more than any verifier
/// leeway on `exp` (ext-authz's default is 30 s).
pub const RETENTION_SLACK_SECS: i64 = 300;
/// Why a revocation was made (stored, and shown in the feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `POST /logout`: one token.
    Logout,
    /// `POST /logout?all=true`: every token of the user.
    LogoutAll,
    /// `user passwd`.
    Password,
    /// `user disable`.
    Disabled,
    /// `user remove`.
    Removed,
    /// `user revoke`.
    Admin,
    /// `POST /logout` of a user who already had `MAX_REVOKED_PER_USER` tokens revoked: every
    /// token of the user instead.
    LogoutLimit,
    /// A used refresh token presented again: the access tokens of its family (issue #17).
    RefreshReuse,
}

impl Reason {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::Password => "password",
            Self::Disabled => "disabled",
            Self::Removed => "removed",
            Self::Admin => "admin",
            Self::LogoutLimit => "logout_limit",
            Self::RefreshReuse => "refresh_reuse",
        }
    }
}

/// One row as stored; read out as the feed's wire type, [`FeedEntry`] (the contract both
/// services share, defined in `auth-token`), field for field.
#[derive(Queryable, Selectable)]
#[diesel(table_name = revocation)]
struct Row {
    id: i64,
    sub: String,
    jti: Option<String>,
    revoked_at: i64,
    expires_at: i64,
    reason: String,
}

impl From<Row> for FeedEntry {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            sub: r.sub,
            jti: r.jti,
            revoked_at: r.revoked_at,
            expires_at: r.expires_at,
            reason: r.reason,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = revocation)]
struct NewRevocation<'a> {
    sub: &'a str,
    jti: Option<&'a str>,
    revoked_at: i64,
    expires_at: i64,
    reason: &'a str,
}

/// Unix seconds now, as the signed type the columns use.
pub fn now_secs() -> i64 {
    i64::try_from(auth_token::now_unix()).unwrap_or(i64::MAX)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The answer of MySQL's `GET_LOCK`: 1 obtained, 0 timed out, NULL error.
#[derive(QueryableByName)]
struct NamedLock {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    got: Option<i64>,
}

/// Runs `f` as one critical section among all writers of the table, so ids become visible in id
/// order (see the module docs) and a count-then-insert ([`revoke_token`]) cannot interleave with
/// another writer's: on MySQL under a named lock (every replica; a 10 s timeout is an error,
/// never an unlocked write), on SQLite in a `BEGIN IMMEDIATE` transaction (the writer lock).
/// On both, `f` is one transaction: all of its writes commit, or none (on MySQL it commits
/// before the named lock is released, so the ordering above holds).
pub(crate) fn locked<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> QueryResult<T>,
) -> QueryResult<T> {
    match conn {
        DbConn::Mysql(c) => {
            // Why: InnoDB hands out AUTO_INCREMENT ids before commit; two replicas inserting at
            // once could commit 7 before 6, and a feed reader at cursor 7 would never see 6.
            // The named lock makes allocate + commit one critical section.
            let got = diesel::sql_query(
                "SELECT CAST(GET_LOCK('login_service_revocation', 10) AS SIGNED) AS got",
            )
            .get_result::<NamedLock>(c)?;
            // Why: inserting without the lock could reopen the ordering gap and hide this
            // revocation from a follower for good; failing (503, the caller retries) is safer.
            if got.got != Some(1) {
                return Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::Unknown,
                    Box::new("timed out waiting for the revocation ordering lock".to_owned()),
                ));
            }
        }
        DbConn::Sqlite(c) => c.batch_execute("BEGIN IMMEDIATE")?,
    }
    let result = match conn {
        // Why a transaction: a family ended without its access tokens in the feed (or the other
        // way round) would stay so for good, since a second reuse no longer redoes the work.
        DbConn::Mysql(_) => conn.transaction(f),
        DbConn::Sqlite(_) => f(conn),
    };
    match conn {
        DbConn::Mysql(c) => {
            let released =
                diesel::sql_query("DO RELEASE_LOCK('login_service_revocation')").execute(c);
            let value = result?;
            released.map(|_| value)
        }
        DbConn::Sqlite(c) => match result {
            Ok(value) => match c.batch_execute("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    let _ = c.batch_execute("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK");
                Err(e)
            }
        },
    }
}

fn insert(conn: &mut DbConn, row: &NewRevocation<'_>) -> QueryResult<()> {
    diesel::insert_into(revocation::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// What `POST /logout` stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// That one token is revoked (or its `jti` already was).
    Token,
    /// The token was already revoked by a user-wide cut (`iat <= cutoff`): nothing stored.
    AlreadyRevoked,
    /// The user already had `max_per_user` unexpired per-token revocations: every token of the
    /// user issued until now is revoked instead ([`Reason::LogoutLimit`]).
    AllSessions,
}

/// Revokes one token until its `exp` (a no-op when that `jti` is already revoked) — unless `sub`
/// already has `max_per_user` unexpired per-token revocations: then a user-wide cut at `now()`
/// (kept for `ttl`) is stored instead, and the user's older logout cuts it supersedes are
/// deleted. So one account holds at most `max_per_user` per-token entries plus one logout cut in
/// the feed and in every ext-authz, however often it logs in and out.
/// A token already covered by a user-wide cut is [`LogoutOutcome::AlreadyRevoked`] (nothing
/// stored). `now` is read inside the lock (pass [`now_secs`]), see [`revoke_user`].
pub fn revoke_token(
    conn: &mut DbConn,
    token: &TokenRef<'_>,
    now: impl FnOnce() -> i64,
    max_per_user: u32,
    ttl: Duration,
) -> QueryResult<LogoutOutcome> {
    locked(conn, |c| {
        let now = now();
        revoke_one(c, token, now, max_per_user, ttl, Reason::Logout)
    })
}

/// [`revoke_token`]'s body, inside [`locked`]: the per-token entry, or the user-wide cut once
/// `sub` holds `max_per_user` unexpired per-token entries.
fn revoke_one(
    c: &mut DbConn,
    token: &TokenRef<'_>,
    now: i64,
    max_per_user: u32,
    ttl: Duration,
    reason: Reason,
) -> QueryResult<LogoutOutcome> {
    let TokenRef { sub, jti, iat, exp } = *token;
    if jti_revoked(c, jti)? {
        return Ok(LogoutOutcome::Token);
    }
    // Why: a revoked (stolen) token must not trigger the per-user collapse below, which
    // would end the victim's newer sessions again and again.
    if cut_covers(c, sub, iat, now)? {
        return Ok(LogoutOutcome::AlreadyRevoked);
    }
    // Why: covered entries still count (they live in every ext-authz until their `exp`),
    // so the bound holds without followers having to drop anything.
    let outstanding = outstanding_tokens(c, sub, now)?;
    if outstanding < i64::from(max_per_user) {
        insert(
            c,
            &NewRevocation {
                sub,
                jti: Some(jti),
                revoked_at: now,
                expires_at: exp,
                reason: reason.as_str(),
            },
        )?;
        return Ok(LogoutOutcome::Token);
    }
    insert_cut(c, sub, now, ttl, Reason::LogoutLimit)?;
    Ok(LogoutOutcome::AllSessions)
}

/// One access token to revoke by `revoke_batch` (a family's, [`crate::refresh::revoke_family`]).
#[derive(Debug, Clone)]
pub struct RevokeOne {
    /// `jti` claim.
    pub jti: String,
    /// `iat` claim, Unix seconds.
    pub iat: i64,
    /// `exp` claim, Unix seconds.
    pub exp: i64,
}

/// What `revoke_batch` stored for a family ([`crate::refresh::revoke_family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Nothing: every token was already revoked (its `jti`, or a user-wide cut).
    Nothing,
    /// One per-token entry for each token not yet revoked.
    Tokens(usize),
    /// One user-wide cut ([`Reason::LogoutLimit`]): the tokens would have taken `sub` past
    /// `max_per_user` per-token entries, or there were more than `max_per_user` of them.
    Cut,
}

/// Revokes `tokens` of `sub` as [`revoke_token`] would, one by one, but at a cost that does not
/// grow with `tokens` (issue #17 review, H1): at most `max_per_user` per-token entries in one
/// insert, else one user-wide cut at `now`. Must run inside [`locked`]. A caller holding more
/// tokens than it passes must pass `max_per_user` + 1 of them (then the answer is a cut, which
/// covers them all: they were issued before `now`).
pub(crate) fn revoke_batch(
    c: &mut DbConn,
    sub: &str,
    tokens: &[RevokeOne],
    now: i64,
    max_per_user: u32,
    ttl: Duration,
    reason: Reason,
) -> QueryResult<BatchOutcome> {
    if tokens.is_empty() {
        return Ok(BatchOutcome::Nothing);
    }
    let max = usize::try_from(max_per_user).unwrap_or(usize::MAX);
    // Why a cut before looking at each token: the per-token checks below cost one query per
    // token; a cut covers every token issued until now in one row.
    if tokens.len() > max {
        insert_cut(c, sub, now, ttl, Reason::LogoutLimit)?;
        return Ok(BatchOutcome::Cut);
    }
    let cut = user_cutoff(c, sub, now)?;
    let candidates: Vec<&RevokeOne> = tokens
        .iter()
        .filter(|t| cut.is_none_or(|cut| t.iat > cut))
        .collect();
    if candidates.is_empty() {
        return Ok(BatchOutcome::Nothing);
    }
    let jtis: Vec<&str> = candidates.iter().map(|t| t.jti.as_str()).collect();
    let already: Vec<String> = revocation::table
        .filter(revocation::jti.eq_any(&jtis))
        .select(revocation::jti.assume_not_null())
        .load(c)?;
    let fresh: Vec<&RevokeOne> = candidates
        .into_iter()
        .filter(|t| !already.contains(&t.jti))
        .collect();
    if fresh.is_empty() {
        return Ok(BatchOutcome::Nothing);
    }
    let outstanding = outstanding_tokens(c, sub, now)?;
    let total = outstanding.saturating_add(i64::try_from(fresh.len()).unwrap_or(i64::MAX));
    if total > i64::from(max_per_user) {
        insert_cut(c, sub, now, ttl, Reason::LogoutLimit)?;
        return Ok(BatchOutcome::Cut);
    }
    let rows: Vec<NewRevocation<'_>> = fresh
        .iter()
        .map(|t| NewRevocation {
            sub,
            jti: Some(t.jti.as_str()),
            revoked_at: now,
            expires_at: t.exp,
            reason: reason.as_str(),
        })
        .collect();
    // Why per backend: diesel's multi-backend connection has no batch insert; SQLite's local
    // inserts are cheap, and at most `max_per_user` of them.
    match c {
        DbConn::Mysql(m) => {
            diesel::insert_into(revocation::table)
                .values(&rows)
                .execute(m)?;
        }
        DbConn::Sqlite(_) => {
            for row in &rows {
                insert(c, row)?;
            }
        }
    }
    Ok(BatchOutcome::Tokens(rows.len()))
}

/// The token a `POST /logout` names, from its verified claims.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a> {
    /// `sub` claim.
    pub sub: &'a str,
    /// `jti` claim.
    pub jti: &'a str,
    /// `iat` claim, Unix seconds.
    pub iat: i64,
    /// `exp` claim, Unix seconds.
    pub exp: i64,
}

fn jti_revoked(c: &mut DbConn, jti: &str) -> QueryResult<bool> {
    Ok(revocation::table
        .filter(revocation::jti.eq(jti))
        .select(revocation::id)
        .first::<i64>(c)
        .optional()?
        .is_some())
}

/// Per-token revocations of `sub` still in force at `now`: what `max_per_user` bounds.
fn outstanding_tokens(c: &mut DbConn, sub: &str, now: i64) -> QueryResult<i64> {
    revocation::table
        .filter(revocation::sub.eq(sub))
        .filter(revocation::jti.is_not_null())
        .filter(revocation::expires_at.gt(now))
        .count()
        .get_result(c)
}

/// Whether a user-wide cut in force revokes a token of `sub` issued at `iat` (`iat <= cut`).
fn cut_covers(c: &mut DbConn, sub: &str, iat: i64, now: i64) -> QueryResult<bool> {
    Ok(user_cutoff(c, sub, now)?.is_some_and(|cut| iat <= cut))
}

/// `POST /logout?all=true`: a user-wide cut at `now()` for `ttl` — unless the token is already
/// revoked (its `jti`, or a cut covering its `iat`): then [`LogoutOutcome::AlreadyRevoked`] and
/// nothing stored, so a stolen revoked token cannot end the victim's newer sessions.
pub fn logout_all(
    conn: &mut DbConn,
    token: &TokenRef<'_>,
    now: impl FnOnce() -> i64,
    ttl: Duration,
) -> QueryResult<LogoutOutcome> {
    locked(conn, |c| {
        let now = now();
        if jti_revoked(c, token.jti)? || cut_covers(c, token.sub, token.iat, now)? {
            return Ok(LogoutOutcome::AlreadyRevoked);
        }
        insert_cut(c, token.sub, now, ttl, Reason::LogoutAll)?;
        Ok(LogoutOutcome::AllSessions)
    })
}

/// Inserts a user-wide cut; a cut the user made (`logout_all`, `logout_limit`) deletes that
/// user's older logout cuts it supersedes (earlier or equal `revoked_at`, no later
/// `expires_at`), so a logout loop leaves one cut. Admin cuts are kept (an audit trail bounded
/// by what admins do). Runs inside [`locked`]: the row just inserted is the newest.
fn insert_cut(
    c: &mut DbConn,
    sub: &str,
    now: i64,
    ttl: Duration,
    reason: Reason,
) -> QueryResult<()> {
    let expires_at = now.saturating_add(secs(ttl));
    insert(
        c,
        &NewRevocation {
            sub,
            jti: None,
            revoked_at: now,
            expires_at,
            reason: reason.as_str(),
        },
    )?;
    if matches!(reason, Reason::LogoutAll | Reason::LogoutLimit) {
        let newest = newest_id(c)?.unwrap_or(0);
        // Why: never the newest row (ids are never reused), and only cuts this one covers
        // entirely, so nothing revoked becomes valid again.
        diesel::delete(
            revocation::table
                .filter(revocation::sub.eq(sub))
                .filter(revocation::jti.is_null())
                .filter(
                    revocation::reason
                        .eq_any([Reason::LogoutAll.as_str(), Reason::LogoutLimit.as_str()]),
                )
                .filter(revocation::revoked_at.le(now))
                .filter(revocation::expires_at.le(expires_at))
                .filter(revocation::id.lt(newest)),
        )
        .execute(c)?;
    }
    Ok(())
}

/// Revokes every token of `sub` issued at or before `now()` (Unix seconds), for `ttl`; returns
/// that cut time. Pass [`now_secs`]: it is read inside the lock, right before the insert.
pub fn revoke_user(
    conn: &mut DbConn,
    sub: &str,
    now: impl FnOnce() -> i64,
    ttl: Duration,
    reason: Reason,
) -> QueryResult<i64> {
    locked(conn, |c| {
        // Why: a time read before the pool and lock waits (up to 13 s) dates the cut before
        // tokens issued during the wait, and a login's final cutoff check cannot see the cut yet,
        // so those tokens would survive it. Read inside the lock, every token issued before the
        // insert commits has `iat <= now` (same clock as `iat`, `now_secs`).
        let now = now();
        insert_cut(c, sub, now, ttl, reason).map(|()| now)
    })
}

/// The latest user-wide revocation time of `sub` still in force, if any.
pub fn user_cutoff(conn: &mut DbConn, sub: &str, now: i64) -> QueryResult<Option<i64>> {
    revocation::table
        .filter(revocation::sub.eq(sub))
        .filter(revocation::jti.is_null())
        .filter(revocation::expires_at.gt(now))
        .select(diesel::dsl::max(revocation::revoked_at))
        .first::<Option<i64>>(conn)
}

/// Unexpired rows after `since`, in id order, at most `limit`.
pub fn page(conn: &mut DbConn, since: i64, now: i64, limit: i64) -> QueryResult<Vec<FeedEntry>> {
    // One query, typed per backend (`as_select` names the backend).
    macro_rules! page_query {
        () => {
            revocation::table
                .filter(revocation::id.gt(since))
                .filter(revocation::expires_at.gt(now - RETENTION_SLACK_SECS))
                .order(revocation::id.asc())
                .limit(limit)
                .select(Row::as_select())
        };
    }
    // Why on the backend's own connection: a snapshot reads 1M rows here, and the rows of the
    // generic `DbConn` reach every field through an enum of both backends (measured for issue
    // #15 §2, see BENCHMARKS.md).
    let rows = match conn {
        DbConn::Mysql(c) => page_query!().load::<Row>(c)?,
        DbConn::Sqlite(c) => page_query!().load::<Row>(c)?,
    };
    Ok(rows.into_iter().map(FeedEntry::from).collect())
}

/// The newest row id, if any.
pub fn newest_id(conn: &mut DbConn) -> QueryResult<Option<i64>> {
    revocation::table
        .select(diesel::dsl::max(revocation::id))
        .first::<Option<i64>>(conn)
}

/// Deletes rows expired for longer than [`RETENTION_SLACK_SECS`], except the newest row (so
/// its id is never reused). Returns the rows deleted.
pub fn cleanup(conn: &mut DbConn, now: i64) -> QueryResult<usize> {
    let Some(newest) = newest_id(conn)? else {
        return Ok(0);
    };
    diesel::delete(
        revocation::table
            .filter(revocation::expires_at.le(now - RETENTION_SLACK_SECS))
            .filter(revocation::id.lt(newest)),
    )
    .execute(conn)
}

/// Deletes expired rows every `interval`, forever (spawned by [`crate::server::serve`]).
pub async fn cleanup_loop(db: Db, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate: start cleaning after one interval.
    loop {
        ticker.tick().await;
        let now = now_secs();
        match db.run(move |c| cleanup(c, now)).await {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, "expired revocations deleted"),
            Err(e) => tracing::warn!(error = %e, "revocation cleanup failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(Reason::LogoutAll.as_str(), "logout_all");
        assert_eq!(Reason::Admin.as_str(), "admin");
    }
}
