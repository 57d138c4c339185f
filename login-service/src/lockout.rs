//! Brute-force protection: the lockout policy and counters (pure arithmetic), and the
//! `login_throttle` table that holds the counters for every replica.
//!
//! Every failed login is counted under three keys, all in the database (shared by replicas):
//! - **account** — the e-mail as typed (normalised), whether or not an account has it: locks
//!   after [`Policies::account`]`.threshold` failures (default 50) from anywhere;
//! - **account + source** — that e-mail from one client address (an IPv6 address counts as its
//!   /64): locks after [`Policies::account_source`]`.threshold` failures (default 5);
//! - **source** — the client address, across e-mails: [`Policies::source`] (default 20), 429
//!   `rate_limited`.
//!
//! Why this split (issue #11): a lock keyed by the account alone let anyone who knows an e-mail
//! keep that account locked for everybody with one wrong guess per lock window; now a single
//! address only locks itself out of that account (and is rate limited after 20 failures), and
//! only a distributed attacker (≥ 10 addresses — an IPv6 address is its /64 — with the
//! defaults) reaches the account-wide threshold, which still bounds the guesses on one account
//! from any number of addresses.
//! Known and unknown e-mails go through the same statements on the same table, so neither the
//! answer, nor `Retry-After`, nor the round trips tell whether an account exists.
//!
//! From the threshold on, each failure locks its key for `base * 2^(failures - threshold)`,
//! capped at `max`; a quiet period of `reset_after` (no failure, not locked) starts from zero;
//! a success clears the account and account + source keys (never the source key). While any of
//! the three keys is locked the answer is 429 whatever the password — also for a lock written
//! while the password was being hashed: success and failure run the same locking transaction
//! over all three keys and answer a lock alike (review finding A). A disabled account's right
//! password counts as a failure (review finding D).

use std::net::IpAddr;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use sha2::{Digest as _, Sha256};

use crate::db::DbConn;
use crate::schema::login_throttle;

/// When failures lead to a lock, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures before the first lock (≥ 1).
    pub threshold: u32,
    /// Length of the first lock.
    pub base: Duration,
    /// Longest lock.
    pub max: Duration,
    /// A failure count older than this (no new failure, not locked) starts again from zero.
    pub reset_after: Duration,
}

impl Policy {
    /// Lock length after `failures` consecutive failures; `None` below the threshold.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        let threshold = self.threshold.max(1);
        if failures < threshold {
            return None;
        }
        let exp = (failures - threshold).min(31);
        let secs = self.base.as_secs().saturating_mul(1u64 << exp);
        Some(Duration::from_secs(secs).min(self.max))
    }
}

/// The three policies a failed login is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    /// Per e-mail, from any address (high threshold).
    pub account: Policy,
    /// Per e-mail and client address.
    pub account_source: Policy,
    /// Per client address, across e-mails.
    pub source: Policy,
}

impl Policies {
    /// The longest quiet period after which a counter is forgotten (the cleanup's horizon).
    pub fn longest_reset(&self) -> Duration {
        self.account
            .reset_after
            .max(self.account_source.reset_after)
            .max(self.source.reset_after)
    }
}

/// Whole seconds to announce in `Retry-After` for a remaining `d` (rounded up, at least 1).
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Longest user-id (the e-mail part of the Basic credentials) looked at, in bytes: longer ones
/// are refused with 400 before any hashing or database access (issue #11, item 4b).
pub const MAX_USER_ID_BYTES: usize = 255;

/// One key's counter, as stored (times in Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Consecutive failures.
    pub failures: u32,
    /// Locked until then.
    pub locked_until: Option<i64>,
    /// Last counted failure, or when the row was created (ms).
    pub last_failure: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Counter {
    /// Remaining lock at `now` (ms), if locked.
    pub fn remaining(&self, now: i64) -> Option<Duration> {
        let until = self.locked_until?;
        (until > now).then(|| Duration::from_millis(u64::try_from(until - now).unwrap_or(0)))
    }

    /// The counter after one more failure at `now` (ms) under `policy`.
    pub fn after_failure(&self, policy: &Policy, now: i64) -> Self {
        let quiet = now.saturating_sub(self.last_failure) >= millis(policy.reset_after);
        let base = if self.remaining(now).is_none() && quiet {
            0
        } else {
            self.failures
        };
        let failures = base.saturating_add(1);
        Self {
            failures,
            locked_until: policy
                .lock_for(failures)
                .map(|d| now.saturating_add(millis(d))),
            last_failure: now,
        }
    }
}

/// Which key a lock is on: decides the 429's `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The e-mail, or the e-mail from this address: `account_locked`.
    Account,
    /// The client address: `rate_limited`.
    Source,
}

/// The hashed keys of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Per e-mail.
    pub account: String,
    /// Per e-mail and source.
    pub account_source: String,
    /// Per source.
    pub source: String,
}

/// The part of `ip` that identifies a client: an IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 of an IPv6 address (one subscriber usually holds a whole /64).
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// SHA-256 hex of `kind` and `parts`, NUL-separated: a fixed 64 bytes whatever the input.
fn digest(kind: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Keys {
    /// The keys for user-id `user` (normalised e-mail, or the trimmed lower-cased input when it
    /// is no valid e-mail) from client address `ip`.
    pub fn new(user: &str, ip: IpAddr) -> Self {
        let source = source_prefix(ip).to_string();
        Self {
            account: digest("account", &[user.as_bytes()]),
            account_source: digest("account+source", &[user.as_bytes(), source.as_bytes()]),
            source: digest("source", &[source.as_bytes()]),
        }
    }

    /// (key, policy, kind) for each key, in key order (the lock order of the failure write).
    fn with_policies<'a>(&'a self, p: &'a Policies) -> [(&'a str, &'a Policy, Kind); 3] {
        let mut all = [
            (self.account.as_str(), &p.account, Kind::Account),
            (
                self.account_source.as_str(),
                &p.account_source,
                Kind::Account,
            ),
            (self.source.as_str(), &p.source, Kind::Source),
        ];
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }
}

/// The longest lock among `counters` at `now`, source locks first (they answer
/// `rate_limited`).
pub fn lock_among(counters: &[(Kind, Counter)], now: i64) -> Option<(Kind, Duration)> {
    let longest = |kind: Kind| {
        counters
            .iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, c)| c.remaining(now))
            .max()
    };
    longest(Kind::Source)
        .map(|d| (Kind::Source, d))
        .or_else(|| longest(Kind::Account).map(|d| (Kind::Account, d)))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    key_hash: String,
    #[diesel(sql_type = Integer)]
    failures: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    locked_until: Option<i64>,
    #[diesel(sql_type = BigInt)]
    last_failure: i64,
}

impl Row {
    fn counter(&self) -> Counter {
        Counter {
            failures: u32::try_from(self.failures).unwrap_or(0),
            locked_until: self.locked_until,
            last_failure: self.last_failure,
        }
    }
}

/// The counter of each of `keys` (absent rows: zero).
fn read(conn: &mut DbConn, keys: [&str; 3], for_update: bool) -> QueryResult<[Counter; 3]> {
    let sql = "SELECT key_hash, failures, locked_until, last_failure FROM login_throttle \
               WHERE key_hash IN (?, ?, ?) ORDER BY key_hash";
    let rows: Vec<Row> = match conn {
        // Why FOR UPDATE: the rows stay locked (InnoDB, in key order) until the counting
        // transaction commits, so concurrent failures on any replica are counted one after the
        // other and none is lost; SQLite's single writer gives the same.
        DbConn::Mysql(c) => diesel::sql_query(if for_update {
            format!("{sql} FOR UPDATE")
        } else {
            sql.to_owned()
        })
        .bind::<Text, _>(keys[0])
        .bind::<Text, _>(keys[1])
        .bind::<Text, _>(keys[2])
        .load(c)?,
        DbConn::Sqlite(c) => diesel::sql_query(sql)
            .bind::<Text, _>(keys[0])
            .bind::<Text, _>(keys[1])
            .bind::<Text, _>(keys[2])
            .load(c)?,
    };
    Ok(keys.map(|k| {
        rows.iter()
            .find(|r| r.key_hash == k)
            .map(Row::counter)
            .unwrap_or_default()
    }))
}

/// Creates the rows of `keys` that do not exist yet: zero failures, dated `now` so that the
/// cleanup cannot delete them before the counting transaction has locked them (a zero count
/// behaves the same whatever its date).
fn ensure(conn: &mut DbConn, keys: [&str; 3], now: i64) -> QueryResult<()> {
    let sql = |verb: &str| {
        format!(
            "{verb} INTO login_throttle (key_hash, failures, locked_until, last_failure) \
             VALUES (?, 0, NULL, ?), (?, 0, NULL, ?), (?, 0, NULL, ?)"
        )
    };
    // The same statement on either backend; only the spelling of "insert unless present" differs.
    macro_rules! insert_missing {
        ($c:expr, $verb:literal) => {
            diesel::sql_query(sql($verb))
                .bind::<Text, _>(keys[0])
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(keys[1])
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(keys[2])
                .bind::<BigInt, _>(now)
                .execute($c)?
        };
    }
    match conn {
        DbConn::Mysql(c) => insert_missing!(c, "INSERT IGNORE"),
        DbConn::Sqlite(c) => insert_missing!(c, "INSERT OR IGNORE"),
    };
    Ok(())
}

/// The lock in force on `keys` at `now`, if any (the check before the password is hashed).
pub fn check(
    conn: &mut DbConn,
    keys: &Keys,
    policies: &Policies,
    now: i64,
) -> QueryResult<Option<(Kind, Duration)>> {
    let ordered = keys.with_policies(policies);
    let counters = read(conn, ordered.map(|(k, _, _)| k), false)?;
    let kinds: Vec<(Kind, Counter)> = ordered
        .iter()
        .zip(counters)
        .map(|((_, _, kind), c)| (*kind, c))
        .collect();
    Ok(lock_among(&kinds, now))
}

/// What [`record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted under every key.
    Counted,
    /// A key was already locked (a concurrent failure, on any replica, locked it while this
    /// password was being hashed): nothing counted; the caller answers 429.
    AlreadyLocked(Kind, Duration),
}

/// What the password check found, for [`record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failure,
    Success,
}

/// A failed login under `keys` at `now` (ms): unless one of them is locked, counts it under all
/// three in one transaction. A disabled account's right password is a failure like any other.
///
/// Why one transaction that locks the rows: "is it locked?" and "count it" must be a single
/// atomic step, or a burst of concurrent wrong guesses that all saw the keys unlocked would each
/// be answered 401 (more guesses than the policy allows). Exactly `threshold` failures are
/// counted before a lock, and every later one finds it.
pub fn record_failure(
    conn: &mut DbConn,
    keys: &Keys,
    policies: &Policies,
    now: i64,
) -> QueryResult<Failure> {
    Ok(match record(conn, keys, policies, now, Outcome::Failure)? {
        Some((kind, wait)) => Failure::AlreadyLocked(kind, wait),
        None => Failure::Counted,
    })
}

/// A successful login under `keys` at `now` (ms): unless one of the three keys is locked,
/// clears the account and account + source counters (never the source one). Returns the lock,
/// if any: the caller answers 429, no token, exactly as [`record_failure`]'s `AlreadyLocked`.
///
/// Why all three keys and the failure's transaction (review finding A, issue #11): a lock
/// written while this password was being hashed — on the address too — must stop the right
/// password as it stops the wrong ones (same status, `error`, `Retry-After`), or an attacker
/// who locks their own address first gets every in-flight wrong guess answered 429 uncounted
/// and the right one answered 200. Same statements as a failure, so neither path answers sooner.
pub fn record_success(
    conn: &mut DbConn,
    keys: &Keys,
    policies: &Policies,
    now: i64,
) -> QueryResult<Option<(Kind, Duration)>> {
    record(conn, keys, policies, now, Outcome::Success)
}

/// The shared write of [`record_failure`] and [`record_success`]: creates the rows, locks and
/// reads them, and unless one is locked, counts a failure or clears the account keys.
fn record(
    conn: &mut DbConn,
    keys: &Keys,
    policies: &Policies,
    now: i64,
    outcome: Outcome,
) -> QueryResult<Option<(Kind, Duration)>> {
    let ordered = keys.with_policies(policies);
    let names = ordered.map(|(k, _, _)| k);
    if matches!(conn, DbConn::Mysql(_)) {
        // Why outside the transaction: an `INSERT IGNORE` that meets an existing row takes a
        // shared lock on it, and two transactions upgrading shared locks deadlock.
        ensure(conn, names, now)?;
    }
    conn.transaction(|conn| {
        if matches!(conn, DbConn::Sqlite(_)) {
            // Why first: a write statement takes SQLite's write lock at once (waiting under
            // busy_timeout); a read first would fail with SQLITE_BUSY when upgrading.
            ensure(conn, names, now)?;
        }
        let counters = read(conn, names, true)?;
        let kinds: Vec<(Kind, Counter)> = ordered
            .iter()
            .zip(counters)
            .map(|((_, _, kind), c)| (*kind, c))
            .collect();
        if let Some(lock) = lock_among(&kinds, now) {
            return Ok(Some(lock));
        }
        for ((key, policy, kind), old) in ordered.iter().zip(counters) {
            let new = match (outcome, kind) {
                (Outcome::Failure, _) => old.after_failure(policy, now),
                // Why the source key keeps its count: one valid account must not let an
                // attacker clear their address's count between guesses.
                (Outcome::Success, Kind::Source) => old,
                (Outcome::Success, Kind::Account) => Counter {
                    last_failure: now,
                    ..Counter::default()
                },
            };
            diesel::update(login_throttle::table.find(*key))
                .set((
                    login_throttle::failures.eq(i32::try_from(new.failures).unwrap_or(i32::MAX)),
                    login_throttle::locked_until.eq(new.locked_until),
                    login_throttle::last_failure.eq(new.last_failure),
                ))
                .execute(conn)?;
        }
        Ok(None)
    })
}

/// Forgets the account-wide counter of `user` (an admin set a new password).
pub fn clear_account(conn: &mut DbConn, user: &str) -> QueryResult<usize> {
    let key = digest("account", &[user.as_bytes()]);
    diesel::delete(login_throttle::table.find(key)).execute(conn)
}

/// The account-wide lock end (ms) of `user`, if any row exists (`user list`).
pub fn account_lock_end(conn: &mut DbConn, user: &str) -> QueryResult<Option<i64>> {
    let key = digest("account", &[user.as_bytes()]);
    login_throttle::table
        .find(key)
        .select(login_throttle::locked_until)
        .first::<Option<i64>>(conn)
        .optional()
        .map(Option::flatten)
}

/// The counter stored under `key` (tests and diagnostics).
pub fn counter(conn: &mut DbConn, key: &str) -> QueryResult<Option<Counter>> {
    login_throttle::table
        .find(key)
        .select((
            login_throttle::failures,
            login_throttle::locked_until,
            login_throttle::last_failure,
        ))
        .first::<(i32, Option<i64>, i64)>(conn)
        .optional()
        .map(|r| {
            r.map(|(f, l, t)| Counter {
                failures: u32::try_from(f).unwrap_or(0),
                locked_until: l,
                last_failure: t,
            })
        })
}

/// Rows one [`cleanup`] statement deletes at most.
pub const CLEANUP_BATCH: i64 = 500;

/// Deletes counters that no longer decide anything: not locked at `now` and without a failure
/// for `horizon` (the longest reset window), in batches of [`CLEANUP_BATCH`] keys, each its own
/// short statement. Returns the rows deleted.
pub fn cleanup(conn: &mut DbConn, now: i64, horizon: Duration) -> QueryResult<usize> {
    let cutoff = now.saturating_sub(millis(horizon));
    let mut deleted = 0;
    loop {
        // Why batches: one `DELETE … WHERE last_failure <= X` over a table an attacker grew
        // holds its row and gap locks (InnoDB) until it ends, and concurrent failed logins'
        // `INSERT IGNORE` of new keys then wait into lock-wait timeouts (1205, a 503).
        let keys: Vec<String> = login_throttle::table
            .filter(
                login_throttle::locked_until
                    .is_null()
                    .or(login_throttle::locked_until.le(now)),
            )
            .filter(login_throttle::last_failure.le(cutoff))
            .select(login_throttle::key_hash)
            .limit(CLEANUP_BATCH)
            .load(conn)?;
        // The staleness test again: a key that failed or locked since the select stays.
        deleted += diesel::delete(
            login_throttle::table
                .filter(login_throttle::key_hash.eq_any(&keys))
                .filter(
                    login_throttle::locked_until
                        .is_null()
                        .or(login_throttle::locked_until.le(now)),
                )
                .filter(login_throttle::last_failure.le(cutoff)),
        )
        .execute(conn)?;
        if i64::try_from(keys.len()).unwrap_or(i64::MAX) < CLEANUP_BATCH {
            return Ok(deleted);
        }
    }
}

/// Every `interval`, deletes the counters that decide nothing any more ([`cleanup`]), so the
/// table holds only the keys seen within the longest reset window.
pub async fn cleanup_loop(db: crate::db::Db, policies: Policies, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate: start cleaning after one interval.
    let horizon = policies.longest_reset();
    loop {
        ticker.tick().await;
        match db.run(move |c| cleanup(c, now_ms(), horizon)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "stale login counters deleted"),
            Err(e) => tracing::warn!(error = %e, "login counter cleanup failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            threshold: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(100),
        }
    }

    #[test]
    fn growing_capped_delays() {
        let p = policy();
        assert_eq!(p.lock_for(2), None);
        assert_eq!(p.lock_for(3), Some(Duration::from_secs(10)));
        assert_eq!(p.lock_for(4), Some(Duration::from_secs(20)));
        assert_eq!(p.lock_for(5), Some(Duration::from_secs(40)));
        assert_eq!(p.lock_for(6), Some(Duration::from_secs(60)));
        assert_eq!(p.lock_for(u32::MAX), Some(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn counter_locks_with_millisecond_precision() {
        let p = policy();
        let t = 1_000_000_123;
        let c = Counter::default().after_failure(&p, t);
        let c = c.after_failure(&p, t);
        assert_eq!(c.remaining(t), None);
        let c = c.after_failure(&p, t);
        assert_eq!(c.failures, 3);
        assert_eq!(c.remaining(t + 4_000), Some(Duration::from_secs(6)));
        assert_eq!(c.remaining(t + 9_999), Some(Duration::from_millis(1)));
        assert_eq!(c.remaining(t + 10_000), None);
        // After the lock, the next failure locks for twice as long.
        let c = c.after_failure(&p, t + 10_000);
        assert_eq!(c.remaining(t + 10_000), Some(Duration::from_secs(20)));
    }

    #[test]
    fn quiet_period_forgets_failures() {
        let p = policy();
        let c = Counter::default().after_failure(&p, 0).after_failure(&p, 0);
        assert_eq!(c.after_failure(&p, 100_000).failures, 1);
        assert_eq!(c.after_failure(&p, 99_999).failures, 3);
    }

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let long = "a".repeat(10_000);
        for user in ["a@b.c", long.as_str()] {
            let k = Keys::new(user, ip);
            for h in [&k.account, &k.account_source, &k.source] {
                assert_eq!(h.len(), 64);
            }
            assert_ne!(k.account, k.account_source);
        }
        assert_ne!(
            Keys::new("a@b.c", ip).account_source,
            Keys::new("a@b.c", "192.0.2.2".parse().unwrap()).account_source
        );
        assert_eq!(
            Keys::new("a@b.c", ip).account,
            Keys::new("a@b.c", "192.0.2.2".parse().unwrap()).account
        );
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(source_prefix(a), source_prefix(b));
        assert_eq!(
            source_prefix("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn source_locks_answer_first() {
        let locked = |ms| Counter {
            failures: 9,
            locked_until: Some(ms),
            last_failure: 0,
        };
        let all = [
            (Kind::Account, locked(5_000)),
            (Kind::Source, locked(2_000)),
            (Kind::Account, Counter::default()),
        ];
        assert_eq!(
            lock_among(&all, 1_000),
            Some((Kind::Source, Duration::from_secs(1)))
        );
        assert_eq!(
            lock_among(&all, 2_000),
            Some((Kind::Account, Duration::from_secs(3)))
        );
        assert_eq!(lock_among(&all, 5_000), None);
    }
}
