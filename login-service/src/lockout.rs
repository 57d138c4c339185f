//! Brute-force protection: the lockout policy (pure arithmetic) and a bounded in-memory failure
//! tracker.
//!
//! Two mechanisms, both answering 429 with `Retry-After`:
//! - **Per account**: failures are counted on the user row (`failed_logins`, `locked_until`) so
//!   every replica sees them. From the `threshold`-th consecutive failure on, the account is
//!   locked for `base * 2^(failures - threshold)`, capped at `max`. A success resets the count;
//!   so does a quiet period of `reset_after` without failures.
//! - **Per unknown e-mail**: the same policy, in memory ([`Tracker`]), so an e-mail without an
//!   account gets locked after exactly as many failures as one with an account; 429 therefore
//!   does not reveal whether an account exists.
//! - **Per client address**: a separate [`Tracker`] with its own (looser) policy.
//!
//! While locked, requests are answered 429 before the password is checked, whatever the
//! password: a correct guess during the lock yields no token and no signal.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Whole seconds to announce in `Retry-After` for a remaining `d` (rounded up, at least 1).
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

impl Entry {
    fn expired(&self, policy: &Policy, now: Instant) -> bool {
        let unlocked = self.locked_until.is_none_or(|t| t <= now);
        unlocked && now.saturating_duration_since(self.last_failure) >= policy.reset_after
    }
}

/// Failure counts per key (client address, unknown e-mail), bounded to `max_entries`.
///
/// When full, expired entries are pruned; if it is still full, the entry with the oldest failure
/// is evicted (an attacker filling the map only forgets their own oldest keys first).
#[derive(Debug)]
pub struct Tracker<K> {
    policy: Policy,
    max_entries: usize,
    map: Mutex<HashMap<K, Entry>>,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    /// An empty tracker.
    pub fn new(policy: Policy, max_entries: usize) -> Self {
        Self {
            policy,
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The policy this tracker applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remaining lock for `key`, if it is locked at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Option<Duration> {
        let map = self.lock();
        let until = map.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure for `key`; returns the lock it now has, if any.
    pub fn record_failure(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut map = self.lock();
        if !map.contains_key(key) && map.len() >= self.max_entries {
            let policy = self.policy;
            map.retain(|_, e| !e.expired(&policy, now));
            if map.len() >= self.max_entries
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(key.clone()).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last_failure: now,
        });
        if entry.expired(&self.policy, now) {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let lock = self.policy.lock_for(entry.failures);
        entry.locked_until = lock.map(|d| now + d);
        lock
    }

    /// Forgets `key` (after a success).
    pub fn reset(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn tracker_locks_and_resets() {
        let t = Tracker::new(policy(), 10);
        let now = Instant::now();
        assert_eq!(t.record_failure(&"a", now), None);
        assert_eq!(t.record_failure(&"a", now), None);
        assert_eq!(t.record_failure(&"a", now), Some(Duration::from_secs(10)));
        assert_eq!(
            t.check(&"a", now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(t.check(&"a", now + Duration::from_secs(10)), None);
        assert_eq!(t.check(&"b", now), None);
        t.reset(&"a");
        assert!(t.is_empty());
    }

    #[test]
    fn quiet_period_forgets_failures() {
        let t = Tracker::new(policy(), 10);
        let now = Instant::now();
        t.record_failure(&"a", now);
        t.record_failure(&"a", now);
        assert_eq!(t.record_failure(&"a", now + Duration::from_secs(500)), None);
    }

    #[test]
    fn bounded() {
        let t = Tracker::new(policy(), 3);
        let now = Instant::now();
        for i in 0..10u32 {
            t.record_failure(&i, now + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(t.len(), 3);
        // The newest keys survive.
        t.record_failure(&9, now + Duration::from_secs(20));
        assert_eq!(t.len(), 3);
    }
}
