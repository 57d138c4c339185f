//! The login decision: parsed credentials and the client address in, a signed token or the
//! reason for refusing out. No HTTP here: [`crate::routes`] extracts the request and maps the
//! [`LoginError`] to a response, so tests can call [`authenticate`] directly.
//!
//! The order is the policy (README, "Lockout policy"): user-id size → hashing queue bound (a 503,
//! nothing counted) → one round trip for the row, the user's revocation cut and the lockout
//! counters → lock → password (the queue bound again: a 503, nothing counted) → the success or
//! failure counted in the database → `iat` fixed → conditional success write → token.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_token::{IssueError, Issued, Issuer, Keyring};
use secrecy::SecretString;
use tracing::{Instrument as _, Span, field, info, info_span, warn};

use crate::credentials::Credentials;
use crate::db::{Db, DbError};
use crate::lockout::{self, Keys, Kind, MAX_USER_ID_BYTES, Policies, retry_after_secs};
use crate::password::{Hasher, PasswordError, Verification};
use crate::refresh::{self, Lifetimes, RefreshToken};
use crate::revocations;
use crate::users::{self, User, normalize_email};

/// What a login reads besides the request: borrowed from the server's state for one call.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The accounts, revocations and lockout counters.
    pub db: &'a Db,
    /// Password verification (bounded, off the async workers).
    pub hasher: &'a Hasher,
    /// Lockout per e-mail, per e-mail and address, per address.
    pub lockout: &'a Policies,
    /// Signing keys.
    pub keys: &'a Keyring,
    /// kid of the key that signs; present in `keys`.
    pub signing_kid: &'a str,
    /// TTL, `iss`, `aud` of the tokens issued.
    pub issuer: &'a Issuer,
    /// Test hook, `None` in production: see [`LoginPause`].
    pub pause: Option<&'a LoginPause>,
}

/// Why a login gave no token. Each variant becomes one HTTP answer in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user-id (e-mail) is longer than [`MAX_USER_ID_BYTES`]: refused before any hashing
    /// or database access.
    #[error("user-id too long")]
    UserIdTooLong,
    /// Unknown e-mail, wrong password, disabled account, or the account changed while the
    /// login was in flight: deliberately one variant.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The e-mail (from anywhere, or from this address) is locked.
    #[error("account temporarily locked")]
    Locked {
        /// Seconds until the lock ends (≥ 1).
        retry_after: u64,
    },
    /// The client address is locked.
    #[error("too many failed attempts from this address")]
    RateLimited {
        /// Seconds until the address may try again (≥ 1).
        retry_after: u64,
    },
    /// The database failed; nothing was decided.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Password verification failed to run (not a wrong password).
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The signing kid is not in the keyring (startup validation prevents it).
    #[error("no signing key")]
    NoSigningKey,
    /// Signing failed (in practice never, with a valid key).
    #[error(transparent)]
    Signing(IssueError),
}

/// Test hook, unset in production: holds every login between its password check and its
/// success write, so an integration test can change the account inside that window. The login
/// signals `reached`, then waits for a permit on `resume`.
#[doc(hidden)]
#[derive(Debug)]
pub struct LoginPause {
    /// Notified (one permit stored) when a login reaches the pause.
    pub reached: tokio::sync::Notify,
    /// One permit lets one paused login go on.
    pub resume: tokio::sync::Semaphore,
}

impl Default for LoginPause {
    fn default() -> Self {
        Self {
            reached: tokio::sync::Notify::new(),
            resume: tokio::sync::Semaphore::new(0),
        }
    }
}

/// A successful login: the access token, and the refresh token when one was asked for.
#[derive(Debug)]
pub struct Session {
    /// The signed access token.
    pub access: Issued,
    /// The first token of a new refresh family ([`crate::refresh`]).
    pub refresh: Option<RefreshToken>,
}

/// Decides the login of `creds` from client address `client`: the token, or why not.
///
/// Records `client` and `user_id` on the current span (the HTTP handler's).
pub async fn authenticate(
    cx: &Context<'_>,
    creds: Credentials,
    client: IpAddr,
) -> Result<Issued, LoginError> {
    Ok(authenticate_session(cx, creds, client, None).await?.access)
}

/// [`authenticate`], and with `refresh` also a refresh token: its family is stored in the same
/// database call as the conditional success write, before the final revocation check, so an
/// account change racing the login either stops the login or ends the new family
/// ([`crate::refresh`], "Races with account changes"). `cx.issuer` sets the access token's TTL
/// (the caller passes `ACCESS_TOKEN_TTL`'s issuer with a refresh token).
pub async fn authenticate_session(
    cx: &Context<'_>,
    creds: Credentials,
    client: IpAddr,
    refresh: Option<Lifetimes>,
) -> Result<Session, LoginError> {
    // Why before anything else: no e-mail is longer than 255 bytes, and an absurd user-id must
    // cost neither a hash nor a database row.
    if creds.email.len() > MAX_USER_ID_BYTES {
        return Err(LoginError::UserIdTooLong);
    }
    Span::current().record("client", field::display(client));
    // Why here, before the database: when the hashing queue is over its bound the request could
    // not be hashed anyway; refusing now costs nothing, counts nothing against the account or
    // the address (no password was tried), and does not depend on who the user is. The same
    // bound is applied again, counted, when the hash is queued (`Hasher::verify`).
    cx.hasher.check_admission()?;

    // An e-mail that cannot be valid cannot have an account: treated exactly like an unknown one,
    // under the same counters.
    let email = normalize_email(&creds.email).ok();
    let keys = Keys::new(
        email
            .as_deref()
            .unwrap_or(&creds.email.trim().to_lowercase()),
        client,
    );
    let policies = *cx.lockout;

    // One round trip for every e-mail, known or not: the row, the user-wide revocation cutoff
    // (a newer one at the success write means the account was revoked while this login was in
    // flight) and the lockout counters.
    let now_s = revocations::now_secs();
    let k = keys.clone();
    let (user, cutoff, lock) = cx
        .db
        .run(move |c| {
            let user = match email {
                Some(e) => users::find_by_email(c, &e)?,
                None => None,
            };
            let sub = user
                .as_ref()
                .map_or(users::NO_ACCOUNT_ID, |u| u.id)
                .to_string();
            let cutoff = revocations::user_cutoff(c, &sub, now_s)?;
            let lock = lockout::check(c, &k, &policies, lockout::now_ms())?;
            Ok((user, cutoff, lock))
        })
        .instrument(info_span!(
            "login.lookup",
            otel.name = "login.database.lookup"
        ))
        .await?;
    if let Some(u) = &user {
        Span::current().record("user_id", u.id);
    }
    // Locked: 429 before looking at the password, for accounts and unknown e-mails alike.
    if let Some(lock) = lock {
        return Err(locked(lock));
    }

    let password = Arc::new(creds.password);
    let verdict = cx
        .hasher
        .verify(user.as_ref().map(|u| u.password.clone()), password.clone())
        .instrument(info_span!(
            "login.hash",
            otel.name = "login.password.verify"
        ))
        .await?;
    if let Some(pause) = cx.pause {
        pause.reached.notify_one();
        if let Ok(permit) = pause.resume.acquire().await {
            permit.forget();
        }
    }

    match (user, verdict) {
        (Some(u), Verification::Match { needs_rehash }) if !u.disabled => {
            // Why first, before the rehash and `fresh_iat`: while any key is locked — including
            // a lock written by a concurrent guess while this one was hashed, on the address
            // too — the right password gets the 429 a wrong one gets, with nothing else done
            // first that would make it answer later (review finding A).
            if let Some(lock) = cx
                .db
                .run(move |c| lockout::record_success(c, &keys, &policies, lockout::now_ms()))
                .await?
            {
                return Err(locked(lock));
            }
            let upgrade = if needs_rehash {
                rehash(cx.hasher, password).await
            } else {
                None
            };
            // Why: the token's `iat` is fixed *before* the success write. A CLI change (disable,
            // passwd, remove) commits its row change and then revokes `iat <= T` with T read
            // after that commit; if our conditional write came first, `iat <= T` and the cut
            // revokes this token; if the change came first, the write finds the row changed and
            // no token is issued. (`fresh_iat` still dates it after a cut seen at lookup.)
            let iat = fresh_iat(cutoff).await;
            // Signed before the write (nothing leaves unless the write succeeds): a refresh
            // family stores its access token's `jti`.
            let access = info_span!("login.issue", otel.name = "login.token.issue")
                .in_scope(|| issue(cx, &u, iat))?;
            let (id, verified) = (u.id, u.password.clone());
            let (jti, exp) = (
                access.claims.jti.clone(),
                i64::try_from(access.claims.exp).unwrap_or(i64::MAX),
            );
            let auth_time = i64::try_from(iat).unwrap_or(i64::MAX);
            let issued = cx
                .db
                .run(move |c| {
                    if !users::record_success(c, id, &verified)? {
                        return Ok(None);
                    }
                    // Why before the cut check: a CLI change ends the user's families after
                    // storing its cut; a family stored after that is caught by the check below.
                    let family = match refresh {
                        Some(l) => Some(refresh::start(
                            c,
                            id,
                            auth_time,
                            refresh::AccessRef { jti: &jti, exp },
                            &l,
                        )?),
                        None => None,
                    };
                    // A user-wide revocation newer than the one seen at lookup: the account
                    // was revoked while this login was in flight (`user revoke`, logout-all).
                    let now = revocations::now_secs();
                    if revocations::user_cutoff(c, &id.to_string(), now)? > cutoff {
                        refresh::end_user(c, id, now)?;
                        return Ok(None);
                    }
                    if let Some(h) = upgrade
                        && users::upgrade_hash(c, id, &verified, &h)? == 1
                    {
                        info!(user_id = id, "password hash upgraded to current parameters");
                    }
                    Ok(Some(family))
                })
                .instrument(info_span!(
                    "login.record",
                    otel.name = "login.database.record_success"
                ))
                .await?;
            let Some(refresh) = issued else {
                info!(user_id = id, "account changed during the login; no token");
                return Err(LoginError::InvalidCredentials);
            };
            Ok(Session { access, refresh })
        }
        // Why one arm for all failures: a wrong password, an unknown e-mail and a disabled
        // account (right password or not) run the same statements on the same table, are
        // counted alike and get the same answer, so neither the body, nor `Retry-After`, nor
        // the timing, nor a later answer from the counters tells them apart (review finding D:
        // an uncounted right password of a disabled account showed in the address count).
        (user, verdict) => {
            let failure = cx
                .db
                .run(move |c| lockout::record_failure(c, &keys, &policies, lockout::now_ms()))
                .await?;
            match failure {
                // Why: a concurrent guess locked a key while this one was being hashed;
                // answering 401 here would grant more guesses than the policy allows.
                lockout::Failure::AlreadyLocked(kind, wait) => Err(locked((kind, wait))),
                lockout::Failure::Counted => {
                    if let Some(u) = user.filter(|_| !matches!(verdict, Verification::Match { .. }))
                    {
                        info!(user_id = u.id, "wrong password");
                    }
                    Err(LoginError::InvalidCredentials)
                }
            }
        }
    }
}

/// The refusal for a lock: `RateLimited` for the client address, `Locked` for the e-mail
/// (from anywhere or from this address).
fn locked((kind, wait): (Kind, Duration)) -> LoginError {
    let retry_after = retry_after_secs(wait);
    match kind {
        Kind::Source => LoginError::RateLimited { retry_after },
        Kind::Account => LoginError::Locked { retry_after },
    }
}

async fn rehash(hasher: &Hasher, password: Arc<SecretString>) -> Option<String> {
    match hasher.hash(password).await {
        Ok(h) => Some(h),
        // Why not an error: the login already succeeded; the upgrade waits for a later login
        // rather than hold this one past the queue bound.
        Err(PasswordError::Overloaded { .. }) => {
            info!("hashing queue full; hash upgrade left for a later login");
            None
        }
        Err(e) => {
            warn!(error = %e, "hash upgrade failed; keeping the old hash");
            None
        }
    }
}

fn issue(cx: &Context<'_>, u: &User, iat: u64) -> Result<Issued, LoginError> {
    let key = cx
        .keys
        .get(Some(cx.signing_kid))
        .ok_or(LoginError::NoSigningKey)?;
    cx.issuer
        .issue(key, &u.id.to_string(), &u.email, &u.roles(), iat)
        .map_err(LoginError::Signing)
}

/// The `iat` for a new token of a user whose latest user-wide revocation is `cutoff`: now, but
/// strictly after `cutoff` (the `iat` rule, see [`crate::revocations`]). Waits for the next
/// second when a revocation happened in this very second; with a clock behind the revoker's by
/// more than that, the token is dated `cutoff + 1` (a verifier's leeway absorbs it).
pub async fn fresh_iat(cutoff: Option<i64>) -> u64 {
    let now = auth_token::now_unix();
    let Some(cutoff) = cutoff.and_then(|c| u64::try_from(c).ok()) else {
        return now;
    };
    if now <= cutoff {
        let next = UNIX_EPOCH + Duration::from_secs(cutoff + 1);
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_millis(1500));
        tokio::time::sleep(wait).await;
    }
    auth_token::now_unix().max(cutoff + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_iat_is_after_the_cutoff() {
        let now = auth_token::now_unix();
        assert!(fresh_iat(None).await >= now);
        let cut = i64::try_from(now).unwrap() - 5;
        assert!(fresh_iat(Some(cut)).await >= now);
        // A revocation in this very second: the token is dated the next second.
        let cut = i64::try_from(auth_token::now_unix()).unwrap();
        let iat = fresh_iat(Some(cut)).await;
        assert_eq!(iat, u64::try_from(cut).unwrap() + 1);
        assert!(auth_token::now_unix() >= iat, "waited for the next second");
    }
}
