//! Queries on the `user` table. Every function takes a [`DbConn`] and is meant to run inside
//! [`crate::db::Db::run`]; lookups return `QueryResult<Option<_>>` (`.optional()`), so a database
//! failure can never be mistaken for "no such user".

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::db::DbConn;
use crate::lockout::Policy;
use crate::schema::user;

/// Longest e-mail accepted (the column is `VARCHAR(255)`).
pub const MAX_EMAIL_BYTES: usize = 255;

/// One account row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user)]
pub struct User {
    /// Primary key; the token's `sub`.
    pub id: i32,
    /// Normalised e-mail.
    pub email: String,
    /// PHC string (or a seed plaintext, which never verifies). Never log it.
    pub password: String,
    /// Grants `roles: ["admin"]`.
    pub is_admin: bool,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// Consecutive failures.
    pub failed_logins: i32,
    /// Locked until this UTC time.
    pub locked_until: Option<NaiveDateTime>,
    /// UTC creation time.
    pub created_at: NaiveDateTime,
    /// UTC time of the last change.
    pub updated_at: NaiveDateTime,
    /// UTC time of the last password change.
    pub password_changed_at: Option<NaiveDateTime>,
}

impl User {
    /// Token roles: `["admin"]` for admins, else none.
    pub fn roles(&self) -> Vec<String> {
        if self.is_admin {
            vec!["admin".to_owned()]
        } else {
            Vec::new()
        }
    }

    /// True when `locked_until` is after `now`.
    pub fn locked_at(&self, now: NaiveDateTime) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

/// Why an e-mail was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Empty after trimming.
    #[error("e-mail is empty")]
    Empty,
    /// Longer than [`MAX_EMAIL_BYTES`].
    #[error("e-mail is longer than 255 bytes")]
    TooLong,
    /// Not exactly one `@` with something on both sides, or contains whitespace/control chars.
    #[error("e-mail must contain exactly one '@' with a non-empty local part and domain")]
    Invalid,
}

/// Trims and lower-cases `raw`, then checks: one `@`, non-empty parts, no whitespace or control
/// characters, at most 255 bytes. Accounts are unique on the result.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(EmailError::TooLong);
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EmailError::Invalid);
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(EmailError::Invalid),
    }
}

fn now() -> NaiveDateTime {
    // Whole seconds: DATETIME columns have no fraction, keep both backends identical.
    let n = Utc::now().naive_utc();
    n.with_nanosecond(0).unwrap_or(n)
}

use chrono::Timelike as _;

/// The account with this (normalised) e-mail.
pub fn find_by_email(conn: &mut DbConn, email: &str) -> QueryResult<Option<User>> {
    user::table
        .filter(user::email.eq(email))
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// Creates an account; a duplicate e-mail is `DatabaseError(UniqueViolation, _)`.
pub fn insert(
    conn: &mut DbConn,
    email: &str,
    password_hash: &str,
    is_admin: bool,
) -> QueryResult<()> {
    let t = now();
    diesel::insert_into(user::table)
        .values((
            user::email.eq(email),
            user::password.eq(password_hash),
            user::is_admin.eq(is_admin),
            user::disabled.eq(false),
            user::failed_logins.eq(0),
            user::created_at.eq(t),
            user::updated_at.eq(t),
            user::password_changed_at.eq(Some(t)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Sets a new password hash and clears any lock; returns rows changed (0: no such user).
pub fn set_password(conn: &mut DbConn, email: &str, password_hash: &str) -> QueryResult<usize> {
    let t = now();
    diesel::update(user::table.filter(user::email.eq(email)))
        .set((
            user::password.eq(password_hash),
            user::password_changed_at.eq(Some(t)),
            user::updated_at.eq(t),
            user::failed_logins.eq(0),
            user::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
}

/// Replaces the hash of `id` after a parameter upgrade (the password itself is unchanged) —
/// only while the row still holds `verified_hash`, the hash the password was checked against.
///
/// Why conditional: a `user passwd` committed while the login was rehashing must not be
/// overwritten by a hash of the old password. Returns rows changed (0: the password changed).
pub fn upgrade_hash(
    conn: &mut DbConn,
    id: i32,
    verified_hash: &str,
    password_hash: &str,
) -> QueryResult<usize> {
    diesel::update(
        user::table
            .find(id)
            .filter(user::password.eq(verified_hash)),
    )
    .set((user::password.eq(password_hash), user::updated_at.eq(now())))
    .execute(conn)
}

/// Enables or disables; returns rows matched (0: no such user).
pub fn set_disabled(conn: &mut DbConn, email: &str, disabled: bool) -> QueryResult<usize> {
    diesel::update(user::table.filter(user::email.eq(email)))
        .set((user::disabled.eq(disabled), user::updated_at.eq(now())))
        .execute(conn)
}

/// Deletes; returns rows deleted (0: no such user).
pub fn remove(conn: &mut DbConn, email: &str) -> QueryResult<usize> {
    diesel::delete(user::table.filter(user::email.eq(email))).execute(conn)
}

/// All accounts, by id.
pub fn list(conn: &mut DbConn) -> QueryResult<Vec<User>> {
    user::table
        .order(user::id.asc())
        .select(User::as_select())
        .load(conn)
}

/// What [`record_success`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// The row is the one the password was verified against, enabled and unlocked: failures
    /// cleared, the login may issue its token.
    Recorded,
    /// Locked by a concurrent failure (on any replica) while the password was being hashed.
    Locked(Option<NaiveDateTime>),
    /// Removed, disabled or given another password since it was read: no token.
    Changed,
}

/// A successful login: clears the failure count and lock — only if the row still holds
/// `verified_hash` (the hash the password was checked against), is enabled and is not locked
/// at this moment.
///
/// Why one conditional `UPDATE` (the twin of [`record_failure`]): a separate "is it locked?"
/// read followed by this write left one round trip in which a right guess inside a burst of
/// wrong ones could log in during the lock and clear it; and a login that read the row before a
/// `user disable`/`passwd`/`remove` committed must not issue a token after it (issue #11). The
/// count is of rows *matched* (SQLite, and diesel's MySQL connection with `CLIENT_FOUND_ROWS`),
/// so a clean row that needs no change still counts; `updated_at` is left alone, a login changes
/// nothing of the account.
pub fn record_success(conn: &mut DbConn, id: i32, verified_hash: &str) -> QueryResult<Success> {
    let t = now();
    let cleared = diesel::update(
        user::table
            .find(id)
            .filter(user::password.eq(verified_hash))
            .filter(user::disabled.eq(false))
            .filter(user::locked_until.is_null().or(user::locked_until.le(t))),
    )
    .set((
        user::failed_logins.eq(0),
        user::locked_until.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?;
    if cleared == 1 {
        return Ok(Success::Recorded);
    }
    let row = user::table
        .find(id)
        .select((user::password, user::disabled, user::locked_until))
        .first::<(String, bool, Option<NaiveDateTime>)>(conn)
        .optional()?;
    Ok(match row {
        Some((hash, false, Some(until))) if hash == verified_hash && until > t => {
            Success::Locked(Some(until))
        }
        _ => Success::Changed,
    })
}

/// The current `locked_until` of account `id` (`None` when unset or there is no such row): the
/// login handler reads it again after the password check, when a concurrent failure may have
/// locked the account.
pub fn lock_end(conn: &mut DbConn, id: i32) -> QueryResult<Option<NaiveDateTime>> {
    user::table
        .find(id)
        .select(user::locked_until)
        .first::<Option<NaiveDateTime>>(conn)
        .optional()
        .map(Option::flatten)
}

/// An id no row has (AUTO_INCREMENT starts at 1): [`record_failure`] with it runs the same
/// statements as for a real account and changes nothing, so a failed login costs the same
/// database round trips whether or not the account exists.
pub const NO_ACCOUNT_ID: i32 = -1;

/// What [`record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The failure was counted; `Some(until)` when it locked the account.
    Counted(Option<NaiveDateTime>),
    /// A concurrent failure (on any replica) had locked the account first: not counted, and the
    /// caller answers as for a locked account.
    AlreadyLocked(NaiveDateTime),
    /// No such account (the [`NO_ACCOUNT_ID`] timing twin).
    NoAccount,
}

/// A failed login for account `id`: forgets stale failures, then counts this one and locks the
/// account per `policy` — unless it is already locked.
///
/// Why one conditional `UPDATE`: "not locked?" and "count it" must be a single atomic step, or a
/// burst of concurrent wrong guesses that all saw the account unlocked would each be answered
/// 401 (more guesses than the policy allows). The row lock of the `UPDATE` (InnoDB) or the
/// database write lock (SQLite) serialises the burst: exactly `threshold` failures are counted
/// before the lock, and every later one finds it.
pub fn record_failure(conn: &mut DbConn, id: i32, policy: &Policy) -> QueryResult<Failure> {
    let t = now();
    let reset_after =
        chrono::Duration::from_std(policy.reset_after).unwrap_or(chrono::Duration::MAX);
    let stale_before = t
        .checked_sub_signed(reset_after)
        .unwrap_or(NaiveDateTime::MIN);
    let unlocked = || user::locked_until.is_null().or(user::locked_until.le(t));
    conn.transaction(|conn| {
        diesel::update(
            user::table
                .find(id)
                .filter(user::updated_at.lt(stale_before))
                .filter(unlocked()),
        )
        .set(user::failed_logins.eq(0))
        .execute(conn)?;
        let counted = diesel::update(user::table.find(id).filter(unlocked()))
            .set((
                user::failed_logins.eq(user::failed_logins + 1),
                user::updated_at.eq(t),
            ))
            .execute(conn)?;
        let Some((failures, locked_until)) = user::table
            .find(id)
            .select((user::failed_logins, user::locked_until))
            .first::<(i32, Option<NaiveDateTime>)>(conn)
            .optional()?
        else {
            return Ok(Failure::NoAccount);
        };
        if counted == 0 {
            // The filter failed on an existing row: it is locked until a time after `t`.
            return Ok(Failure::AlreadyLocked(locked_until.unwrap_or(t)));
        }
        let lock = policy
            .lock_for(u32::try_from(failures).unwrap_or(0))
            .map(|d| {
                let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365));
                t.checked_add_signed(d).unwrap_or(t)
            });
        if let Some(until) = lock {
            diesel::update(user::table.find(id))
                .set(user::locked_until.eq(Some(until)))
                .execute(conn)?;
        }
        Ok(Failure::Counted(lock))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert_eq!(normalize_email("").unwrap_err(), EmailError::Empty);
        assert_eq!(normalize_email("   ").unwrap_err(), EmailError::Empty);
        assert_eq!(normalize_email("no-at").unwrap_err(), EmailError::Invalid);
        assert_eq!(normalize_email("@x").unwrap_err(), EmailError::Invalid);
        assert_eq!(normalize_email("x@").unwrap_err(), EmailError::Invalid);
        assert_eq!(normalize_email("a@b@c").unwrap_err(), EmailError::Invalid);
        assert_eq!(normalize_email("a b@c").unwrap_err(), EmailError::Invalid);
        assert_eq!(
            normalize_email("' OR 1=1 --").unwrap_err(),
            EmailError::Invalid
        );
        let long = format!("{}@x.io", "a".repeat(251));
        assert_eq!(normalize_email(&long).unwrap_err(), EmailError::TooLong);
        assert!(normalize_email("jürgen@exämple.de").is_ok());
    }
}
