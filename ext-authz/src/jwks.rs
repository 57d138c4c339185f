//! The external issuers' keys as checks see them (layer 2, shared state): the
//! [`ExternalIssuers`] snapshot behind an `ArcSwap` (one atomic load per check, no lock), and one
//! wake-up per issuer through which a check that met an unknown `kid` asks the refresh task for
//! an early fetch. Asking is a flag set, not I/O: the task decides (once per
//! `--jwks-unknown-kid-interval` at most, [`crate::jwks_refresh::KidThrottle`]), so garbage kids
//! cannot cause a fetch storm. Bounded: one snapshot, one flag per configured issuer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use auth_token::Keyring;
use tokio::sync::Notify;

use crate::external::{ExternalIssuers, TrustedIssuer};

/// Keys of every external issuer, and the refresh requests.
#[derive(Debug)]
pub struct JwksStore {
    set: ArcSwap<ExternalIssuers>,
    wake: Vec<Notify>,
    /// Until then, "can decide" waits for every issuer's first fetch (`--jwks-startup-wait`).
    startup_deadline: Instant,
}

impl JwksStore {
    /// A store for `issuers`, none with keys yet.
    /// `startup_wait` bounds how long [`JwksStore::usable`] waits for the first fetches.
    pub fn new(issuers: Vec<TrustedIssuer>, startup_wait: Duration) -> Self {
        let wake = issuers.iter().map(|_| Notify::new()).collect();
        Self {
            set: ArcSwap::from_pointee(ExternalIssuers::new(issuers)),
            wake,
            startup_deadline: Instant::now() + startup_wait,
        }
    }

    /// The snapshot, for one check. Lock-free.
    pub fn load(&self) -> Guard<Arc<ExternalIssuers>> {
        self.set.load()
    }

    /// Issuer `index` now verifies with `keys` (a refresh succeeded). Only the refresh task of
    /// that issuer calls this; `rcu` keeps concurrent updates of other issuers.
    pub fn set_keys(&self, index: usize, keys: Keyring) {
        let keys = Arc::new(keys);
        self.set.rcu(|set| set.with_keys(index, Arc::clone(&keys)));
    }

    /// True when every issuer has keys (the gRPC health gate at startup).
    pub fn all_loaded(&self) -> bool {
        self.set.load().iter().all(|i| i.keys().is_some())
    }

    /// "Can decide" as far as external keys go: every issuer has keys, or the startup wait is
    /// over (then tokens of an issuer still without keys are refused as `unknown_key`, and the
    /// startup watcher has logged it at ERROR). Same rule as the revocation feed's startup wait.
    pub fn usable(&self) -> bool {
        self.all_loaded() || Instant::now() >= self.startup_deadline
    }

    /// True once the startup wait is over.
    pub fn startup_wait_over(&self) -> bool {
        Instant::now() >= self.startup_deadline
    }

    /// A check met an unknown kid in a token of issuer `index`: wake its refresh task (which
    /// may ignore it, see the module docs). Never blocks.
    pub fn request_refresh(&self, index: usize) {
        if let Some(n) = self.wake.get(index) {
            n.notify_one();
        }
    }

    /// Resolves when [`JwksStore::request_refresh`] was called for `index` (a call made while
    /// nobody waited is kept, once).
    pub async fn refresh_requested(&self, index: usize) {
        match self.wake.get(index) {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }
}
