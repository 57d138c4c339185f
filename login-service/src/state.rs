//! [`AppState`], what the HTTP handlers share: built by [`crate::server`], read by
//! [`crate::routes`]. The domain modules never see it: they take the pieces they need
//! ([`AppState::login_context`] lends them to [`crate::login`]).

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::db::Db;
use crate::feed::{FeedWatch, POLL_INTERVAL};
use crate::login::{self, LoginPause};
use crate::metrics::Metrics;
use crate::password::{Hasher, PasswordError};

/// Most logins decided at once in their own tasks (`POST /login` runs each in one, so a client
/// that hangs up cannot stop it half-way). Far above what the hashing queue admits
/// ([`crate::password::MAX_WAITING`] waiting plus the permits): only a flood reaches it, and
/// each task holds at most its credentials (bounded by `MAX_HEADER_BYTES`).
pub const MAX_LOGINS_IN_FLIGHT: usize = 2048;

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    /// Database pool.
    pub db: Db,
    /// Password hashing front end.
    pub hasher: Hasher,
    /// Validated settings (keys, issuer, policies, limits).
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// The revocation feed's watcher state (its task runs in [`crate::server::serve`]).
    pub feed: Arc<FeedWatch>,
    /// One permit per login task running ([`MAX_LOGINS_IN_FLIGHT`]); shutdown waits until it
    /// holds them all again.
    pub logins: Arc<Semaphore>,
    /// Test hook, unset in production: holds every login between its password check and its
    /// success write, so an integration test can change the account inside that window.
    #[doc(hidden)]
    pub pause_after_verify: OnceLock<Arc<LoginPause>>,
}

impl AppState {
    /// State for `settings` over `db` (computes the dummy hash).
    pub fn new(settings: Settings, db: Db) -> Result<Self, PasswordError> {
        let feed = Arc::new(FeedWatch::new(
            settings.revocation.feed_max_waiters,
            settings.revocation.feed_max_waiters_per_peer,
            POLL_INTERVAL,
        ));
        let hasher = Hasher::new(settings.hash_params.clone(), settings.hash_concurrency)?
            .with_max_queue_wait(settings.max_queue_wait);
        Ok(Self {
            db,
            feed,
            hasher,
            metrics: Metrics::new(),
            logins: Arc::new(Semaphore::new(MAX_LOGINS_IN_FLIGHT)),
            pause_after_verify: OnceLock::new(),
            settings,
        })
    }

    /// What [`login::authenticate`] reads, borrowed from this state.
    pub fn login_context(&self) -> login::Context<'_> {
        let s = &self.settings;
        login::Context {
            db: &self.db,
            hasher: &self.hasher,
            lockout: &s.lockout,
            keys: &s.keys,
            signing_kid: &s.signing_kid,
            issuer: &s.issuer,
            pause: self.pause_after_verify.get().map(Arc::as_ref),
        }
    }
}
