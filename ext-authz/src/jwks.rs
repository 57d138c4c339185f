//! The JWKS-fetched keys as checks see them (layer 2, shared state): the [`ExternalIssuers`]
//! snapshot (external issuers and our own `--jwks-url`s) behind an `ArcSwap` (one atomic load
//! per check, no lock), and one wake-up per JWKS slot through which a check that met an unknown
//! `kid` asks the refresh task for an early fetch. Asking is a flag set, not I/O: the task
//! decides (once per `--jwks-unknown-kid-interval` at most, [`crate::jwks_refresh::KidThrottle`]),
//! so garbage kids cannot cause a fetch storm. Bounded: one snapshot, one flag per slot.
//!
//! A request names the key generation it was refused by ([`FetchedKeys::generation`]); the
//! task ignores one whose keys were replaced since ([`JwksStore::take_request`]): that fetch
//! already answered it. Without this, a check refused during a fetch (the startup fetch, a
//! scheduled one, a granted one) left a wake-up behind that spent the throttle's one early
//! refresh right after the fetch had completed, and the next real rotation waited a window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use auth_token::Keyring;
use tokio::sync::{Notify, watch};

use crate::external::{ExternalIssuers, FetchedKeys, OwnJwks, TrustedIssuer};

/// One slot's refresh requests: the wake-up, and 1 + the newest key generation a request was
/// refused by (0: none pending).
#[derive(Debug, Default)]
struct Requests {
    wake: Notify,
    asked: AtomicU64,
}

/// Keys of every JWKS slot, and the refresh requests.
#[derive(Debug)]
pub struct JwksStore {
    set: ArcSwap<ExternalIssuers>,
    requests: Vec<Requests>,
    /// Until then, "can decide" waits for every slot's first fetch (`--jwks-startup-wait`).
    startup_deadline: Instant,
    /// Bumped on every [`JwksStore::set_keys`]: the health watchers report a first fetch at
    /// once instead of at their next tick. A `watch`, not a `Notify`: two watchers wait on it.
    keys_set: watch::Sender<()>,
}

impl JwksStore {
    /// A store for `issuers`, none with keys yet.
    /// `startup_wait` bounds how long [`JwksStore::usable`] waits for the first fetches.
    pub fn new(issuers: Vec<TrustedIssuer>, startup_wait: Duration) -> Self {
        Self::with_own(issuers, Vec::new(), startup_wait)
    }

    /// A store for `issuers` and our own JWKS URLs `own`, none with keys yet.
    pub fn with_own(
        issuers: Vec<TrustedIssuer>,
        own: Vec<OwnJwks>,
        startup_wait: Duration,
    ) -> Self {
        let set = ExternalIssuers::with_own(issuers, own);
        let requests = (0..set.slots()).map(|_| Requests::default()).collect();
        Self {
            set: ArcSwap::from_pointee(set),
            requests,
            startup_deadline: Instant::now() + startup_wait,
            keys_set: watch::Sender::new(()),
        }
    }

    /// The snapshot, for one check. Lock-free.
    pub fn load(&self) -> Guard<Arc<ExternalIssuers>> {
        self.set.load()
    }

    /// Slot `slot` now verifies with `keys` (a refresh succeeded). Only the refresh task of
    /// that slot calls this; `rcu` keeps concurrent updates of other slots.
    pub fn set_keys(&self, slot: usize, keys: Keyring) {
        let keys = Arc::new(keys);
        self.set.rcu(|set| set.with_keys(slot, Arc::clone(&keys)));
        self.keys_set.send_replace(());
    }

    /// Sees every later [`JwksStore::set_keys`] (`changed()` resolves once per batch of them).
    pub fn keys_set(&self) -> watch::Receiver<()> {
        self.keys_set.subscribe()
    }

    /// True when every slot has keys (the gRPC health gate at startup).
    pub fn all_loaded(&self) -> bool {
        let set = self.set.load();
        (0..set.slots()).all(|s| set.fetched(s).is_some_and(|f| f.keys().is_some()))
    }

    /// "Can decide" as far as fetched keys go: every slot has keys, or the startup wait is
    /// over (then tokens of a slot still without keys are refused as `unknown_key`, and the
    /// startup watcher has logged it at ERROR). Same rule as the revocation feed's startup wait.
    pub fn usable(&self) -> bool {
        self.all_loaded() || Instant::now() >= self.startup_deadline
    }

    /// True once the startup wait is over.
    pub fn startup_wait_over(&self) -> bool {
        Instant::now() >= self.startup_deadline
    }

    /// A check met an unknown kid in a token of slot `slot`, refused by keys of generation
    /// `seen` ([`FetchedKeys::generation`] in the snapshot it used): wake its refresh task
    /// (which may ignore it, see the module docs). Never blocks.
    pub fn request_refresh(&self, slot: usize, seen: u64) {
        if let Some(r) = self.requests.get(slot) {
            r.asked.fetch_max(seen.saturating_add(1), Ordering::AcqRel);
            r.wake.notify_one();
        }
    }

    /// `token` was refused with an unknown kid by snapshot `set`: ask for a refresh of its
    /// external issuer's JWKS, or, for one of our own tokens, of every own `--jwks-url`.
    pub fn request_refresh_for(&self, set: &ExternalIssuers, token: &str) {
        let seen = |slot: usize| set.fetched(slot).map_or(0, FetchedKeys::generation);
        match set.route(token) {
            Some(slot) => self.request_refresh(slot, seen(slot)),
            None => {
                for slot in (0..set.own().count()).map(|n| set.own_slot(n)) {
                    self.request_refresh(slot, seen(slot));
                }
            }
        }
    }

    /// Resolves when [`JwksStore::request_refresh`] was called for `slot` (a call made while
    /// nobody waited is kept, once). Then ask [`JwksStore::take_request`] whether it still
    /// stands.
    pub async fn refresh_requested(&self, slot: usize) {
        match self.requests.get(slot) {
            Some(r) => r.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// True when a pending request of `slot` was refused by the keys in use now (not by keys
    /// a fetch has replaced since: that fetch answered it); clears the pending request.
    pub fn take_request(&self, slot: usize) -> bool {
        let Some(r) = self.requests.get(slot) else {
            return false;
        };
        let asked = r.asked.swap(0, Ordering::AcqRel);
        let current = self
            .set
            .load()
            .fetched(slot)
            .map_or(0, FetchedKeys::generation);
        asked > current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ring;

    fn store() -> JwksStore {
        JwksStore::with_own(
            Vec::new(),
            vec![OwnJwks::new(
                0,
                "http://login-service:5000/.well-known/jwks.json",
            )],
            Duration::ZERO,
        )
    }

    /// The stale wake-up of issue #12 item 3: a check refused while a fetch was in flight (by
    /// generation 0, no keys yet) must not count once that fetch has stored keys; a check
    /// refused by the current keys must.
    #[test]
    fn a_request_answered_by_a_later_fetch_is_dropped() {
        let s = store();
        assert!(!s.take_request(0), "nothing asked");
        s.request_refresh(0, 0); // refused during the startup fetch
        s.set_keys(0, ring()); // the startup fetch completes: generation 1
        assert!(
            !s.take_request(0),
            "answered by the fetch that completed after it"
        );

        s.request_refresh(0, 1); // refused by the keys in use
        assert!(s.take_request(0));
        assert!(!s.take_request(0), "taken once");

        // A stale and a current request together: the current one stands.
        s.request_refresh(0, 0);
        s.request_refresh(0, 1);
        assert!(s.take_request(0));
        assert!(!s.take_request(7), "no such slot");
    }
}
