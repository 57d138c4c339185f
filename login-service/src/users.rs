//! Queries on the `user` table. Every function takes a [`DbConn`] and is meant to run inside
//! [`crate::db::Db::run`]; lookups return `QueryResult<Option<_>>` (`.optional()`), so a database
//! failure can never be mistaken for "no such user".

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::db::DbConn;
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
    /// Unused since the `login_throttle` table (kept for old rows; always 0 for new ones).
    pub failed_logins: i32,
    /// Unused in the row since the `login_throttle` table; [`list`] fills in the account-wide
    /// lock from there.
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

/// The account with this id (a refresh token's `user_id`).
pub fn find_by_id(conn: &mut DbConn, id: i32) -> QueryResult<Option<User>> {
    user::table
        .find(id)
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
    let changed = diesel::update(user::table.filter(user::email.eq(email)))
        .set((
            user::password.eq(password_hash),
            user::password_changed_at.eq(Some(t)),
            user::updated_at.eq(t),
            user::failed_logins.eq(0),
            user::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    // A new password also ends the account-wide lock (per-address locks run out by themselves).
    crate::lockout::clear_account(conn, email)?;
    Ok(changed)
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
    let mut all = user::table
        .order(user::id.asc())
        .select(User::as_select())
        .load(conn)?;
    // The lock that decides logins is the account-wide counter in `login_throttle`.
    for u in &mut all {
        let end = crate::lockout::account_lock_end(conn, &u.email)?
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.naive_utc());
        u.locked_until = u.locked_until.max(end);
    }
    Ok(all)
}

/// A successful login: true only if the row still holds `verified_hash` (the hash the password
/// was checked against) and is enabled.
///
/// Why conditional: a login that read the row before a `user disable`/`passwd`/`remove`
/// committed must not issue a token after it (issue #11). Together with the token's `iat` being
/// fixed before this statement, a CLI change committed before the token always wins (see
/// [`crate::revocations`], "Logins in flight"). Rows are counted as *matched* (SQLite, and
/// diesel's MySQL connection with `CLIENT_FOUND_ROWS`); `updated_at` is left alone, a login
/// changes nothing of the account.
pub fn record_success(conn: &mut DbConn, id: i32, verified_hash: &str) -> QueryResult<bool> {
    let matched = diesel::update(
        user::table
            .find(id)
            .filter(user::password.eq(verified_hash))
            .filter(user::disabled.eq(false)),
    )
    .set(user::failed_logins.eq(0))
    .execute(conn)?;
    Ok(matched == 1)
}

/// An id no row has (AUTO_INCREMENT starts at 1): stands in for an unknown e-mail where a
/// query needs an account id, so unknown e-mails run the same statements as accounts.
pub const NO_ACCOUNT_ID: i32 = -1;

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
