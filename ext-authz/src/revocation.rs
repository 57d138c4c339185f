//! The revocation state every check reads and the feed client writes: the active
//! [`RevocationSet`] behind an [`arc_swap`] and the feed's freshness. ext-authz stays
//! database-free; the feed client (`feed`) fills this, `health` reports it.
//!
//! Checks read the set through [`Revocations::load`] (one atomic load: no lock, no I/O). Writers
//! (feed batches, expiry sweeps) take a mutex among themselves so neither overwrites the other's
//! update; readers never take it.
//!
//! Two questions, two answers (issue #11: a login-service outage must not take the edge down):
//! - "can decide" — [`Revocations::usable`], which the overall gRPC health follows. Fail-open
//!   (default): after the first snapshot always; before it, once `--revocation-startup-wait`
//!   has passed (then it decides with an empty set) — unless the feed answers 401, 403 or 404:
//!   a wrong token or URL that waiting does not fix, so a replica without a snapshot stays
//!   NOT_SERVING until the feed answers correctly. Fail-closed: only while the feed is fresh.
//! - "revocation data is fresh" — [`Revocations::fresh`]: a snapshot was loaded and the feed was
//!   last caught up (an answer with nothing more behind it) within `--revocation-grace`. For alerts, not for
//!   readiness.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::Notify;

use crate::revoked::RevocationSet;

/// The shared revocation state: the active set and the feed's freshness.
#[derive(Debug)]
pub struct Revocations {
    set: ArcSwap<RevocationSet>,
    /// Serialises writers (feed batches, expiry sweeps) so neither overwrites the other's
    /// update; readers never take it.
    writer: Mutex<()>,
    /// Unix milliseconds of the last feed answer that left nothing behind (caught up); 0 before
    /// the first snapshot.
    synced_ms: AtomicU64,
    /// Unix milliseconds of the start (staleness before the first snapshot counts from here).
    started_ms: u64,
    grace_ms: u64,
    /// Fail-open: before the first snapshot, checks wait this long (see [`Revocations::usable`]).
    startup_wait_ms: u64,
    fail_closed: bool,
    leeway: u64,
    /// The HTTP status (401, 403, 404) of the feed's last answer when it was a configuration
    /// error (wrong token, wrong URL); 0 otherwise. See [`Revocations::misconfigured`].
    misconfigured: AtomicU16,
    /// Woken when "can decide" or "fresh" may have changed for a reason other than the clock
    /// (the first snapshot, freshness regained, a configuration error seen or healed), so
    /// `health::watch` reports it at once instead of at its next tick (up to 500 ms later: a
    /// fresh replica's readiness, issue #15 §2).
    changed: Notify,
}

/// Unix milliseconds now: the clock of freshness and lag.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Revocations {
    /// Empty, never synced. `leeway` is the verifier's `exp` leeway (seconds). The startup
    /// wait is the grace until [`Revocations::with_startup_wait`] says otherwise.
    pub fn new(grace: Duration, fail_closed: bool, leeway: u64) -> Self {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        Self {
            set: ArcSwap::from_pointee(RevocationSet::default()),
            writer: Mutex::new(()),
            synced_ms: AtomicU64::new(0),
            started_ms: now_ms(),
            grace_ms,
            startup_wait_ms: grace_ms,
            fail_closed,
            leeway,
            misconfigured: AtomicU16::new(0),
            changed: Notify::new(),
        }
    }

    /// Sets how long, before the first snapshot, a fail-open replica waits before deciding
    /// with an empty set.
    #[must_use]
    pub fn with_startup_wait(mut self, wait: Duration) -> Self {
        self.startup_wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The active set, for one check. Lock-free.
    pub fn load(&self) -> Guard<Arc<RevocationSet>> {
        self.set.load()
    }

    /// Replaces the active set.
    pub fn store(&self, set: RevocationSet) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.set.store(Arc::new(set));
    }

    /// Builds the next set from the active one with `f` (`None`: keep it) and swaps it in, one
    /// writer at a time. Returns the size of the active set afterwards.
    pub fn update(&self, f: impl FnOnce(&RevocationSet) -> Option<RevocationSet>) -> usize {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.set.load_full();
        match f(&current) {
            Some(next) => {
                let len = next.len();
                self.set.store(Arc::new(next));
                len
            }
            None => current.len(),
        }
    }

    /// Records a feed answer that left nothing behind (`more: false`): caught up.
    pub fn mark_synced(&self) {
        let now = now_ms().max(1);
        let before = self.synced_ms.swap(now, Ordering::AcqRel);
        // What readiness follows: the first snapshot, and with fail-closed freshness regained
        // after a stale spell (its grace is above the long poll's wait + 5 s, so this fires at
        // most that often). Not on every response: with a small grace (fail-open allows 0)
        // nearly every answer would wake the watcher; the feed service's freshness, for alerts,
        // waits for the tick (review of issue #15 §2).
        if before == 0 || (self.fail_closed && now.saturating_sub(before) > self.grace_ms) {
            self.changed.notify_one();
        }
    }

    /// Resolves when [`Revocations::mark_synced`] or [`Revocations::set_misconfigured`] changed
    /// what health reports (a wake-up while nobody waits is kept, once).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// True once a complete snapshot was received.
    pub fn ever_synced(&self) -> bool {
        self.synced_ms.load(Ordering::Acquire) != 0
    }

    /// Milliseconds since the feed was last caught up (or since the start).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        let synced = self.synced_ms.load(Ordering::Acquire);
        let since = if synced == 0 { self.started_ms } else { synced };
        now_ms.saturating_sub(since)
    }

    /// Fresh: a snapshot was received and the feed is not older than the grace. Reported by
    /// the feed health service (`edge-auth.revocation-feed`) and the `revocation_feed_fresh`
    /// gauge; readiness does not follow it unless fail-closed.
    pub fn fresh(&self, now_ms: u64) -> bool {
        self.ever_synced() && self.lag_ms(now_ms) <= self.grace_ms
    }

    /// Records the feed's answer: `Some(401 | 403 | 404)` is a configuration error (wrong or
    /// rotated token, wrong URL path) that waiting does not fix; `None` clears it.
    pub fn set_misconfigured(&self, status: Option<u16>) {
        let status = status.unwrap_or(0);
        if self.misconfigured.swap(status, Ordering::AcqRel) != status {
            self.changed.notify_one();
        }
    }

    /// The HTTP status of the feed's configuration error, while it lasts.
    pub fn misconfigured(&self) -> Option<u16> {
        match self.misconfigured.load(Ordering::Acquire) {
            0 => None,
            status => Some(status),
        }
    }

    /// Whether checks may be decided (else they are answered `UNAVAILABLE`):
    /// - fail-open (default): after the first snapshot always (enforcing what is known, however
    ///   stale); before it, once `startup_wait` has passed since the start (with an empty set:
    ///   see [`Revocations::deciding_without_snapshot`]) — unless the feed answers with a
    ///   configuration error ([`Revocations::misconfigured`]): then never without a snapshot;
    /// - fail-closed: only while [`Revocations::fresh`].
    ///
    /// One atomic load (plus a clock read when it matters).
    pub fn usable(&self) -> bool {
        if !self.fail_closed && self.ever_synced() {
            return true;
        }
        self.usable_at(now_ms())
    }

    /// [`Revocations::usable`] at `now_ms`: what gRPC health reports as "can decide".
    pub fn usable_at(&self, now_ms: u64) -> bool {
        if self.fail_closed {
            return self.fresh(now_ms);
        }
        if self.ever_synced() {
            return true;
        }
        // Why: a 401/403/404 does not heal by waiting; deciding blind would accept every
        // revoked token forever while reporting SERVING (security review of issue #11).
        self.misconfigured().is_none()
            && now_ms.saturating_sub(self.started_ms) >= self.startup_wait_ms
    }

    /// True while checks are decided although no snapshot was ever loaded (fail-open after
    /// the startup wait): a token revoked before this replica started is accepted.
    pub fn deciding_without_snapshot(&self, now_ms: u64) -> bool {
        !self.ever_synced() && self.usable_at(now_ms)
    }

    /// The `exp` leeway (seconds) entries are kept for.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Whether checks refuse to decide while the feed is stale (`--revocation-fail-closed`).
    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_and_fail_closed() {
        let r = Revocations::new(Duration::from_secs(30), true, 30);
        let now = now_ms();
        assert!(!r.ever_synced());
        assert!(!r.fresh(now), "not fresh before the first snapshot");
        assert!(!r.usable(), "no decision before the first snapshot");
        assert!(!r.fresh(now + 31_000));
        assert!(
            !r.usable_at(now + 31_000),
            "fail-closed never decides blind"
        );
        r.mark_synced();
        assert!(r.fresh(now_ms()));
        assert!(r.usable());
        assert!(!r.fresh(now_ms() + 31_000), "stale after the grace");
        assert!(
            !r.usable_at(now_ms() + 31_000),
            "fail-closed: stale is UNAVAILABLE"
        );
        let open = Revocations::new(Duration::from_secs(30), false, 30);
        assert!(
            !open.usable(),
            "fail-open waits for the snapshot during the grace"
        );
        assert!(!open.deciding_without_snapshot(now));
        assert!(open.usable_at(now + 31_000) && open.deciding_without_snapshot(now + 31_000));
        let short = Revocations::new(Duration::from_secs(120), false, 30)
            .with_startup_wait(Duration::from_secs(10));
        assert!(!short.usable_at(now + 9_000));
        assert!(
            short.usable_at(now + 10_500),
            "the startup wait, not the grace"
        );
        open.mark_synced();
        assert!(open.usable());
        assert!(
            open.usable_at(now_ms() + 3_600_000),
            "fail-open decides with what is known, however stale"
        );
        assert!(!open.deciding_without_snapshot(now_ms() + 3_600_000));
        // A zero grace (and startup wait) is over as soon as it starts: no clock has to move.
        let open = Revocations::new(Duration::ZERO, false, 30);
        assert!(
            open.usable(),
            "fail-open: decides with nothing known after the grace"
        );
        let wrong = Revocations::new(Duration::from_secs(30), false, 30)
            .with_startup_wait(Duration::from_secs(1));
        wrong.set_misconfigured(Some(401));
        assert!(
            !wrong.usable_at(now + 3_600_000),
            "a feed refusing our token never lets a replica decide blind"
        );
        assert!(!wrong.deciding_without_snapshot(now + 3_600_000));
        wrong.set_misconfigured(None);
        assert!(wrong.usable_at(now + 3_600_000), "fixed: back to fail-open");
        wrong.mark_synced();
        wrong.set_misconfigured(Some(404));
        assert!(
            wrong.usable(),
            "with a snapshot, fail-open keeps enforcing what is known"
        );
        let closed = Revocations::new(Duration::ZERO, true, 30);
        closed.mark_synced();
        // A millisecond after the sync, past a zero grace (a point in time, not a sleep).
        let later = now_ms() + 1;
        assert!(
            !closed.usable_at(later),
            "fail-closed and stale: UNAVAILABLE"
        );
    }
}
