//! The active keyring, swapped atomically, and the task that reloads it from `--keys-dir`.
//!
//! Checks read the ring with [`KeyStore::load`] ([`arc_swap`]: no lock, no reference-count
//! contention). The reloader polls the directory every `--keys-reload-interval`, builds a fresh
//! ring and swaps it in only when [`Keyring::fingerprint`] changed. A Kubernetes Secret update
//! (new `..<timestamp>` dir, atomic rename of the `..data` symlink) is seen whole or not at all;
//! a half-updated directory (a dangling symlink, a short key) fails the load, which keeps the
//! previous ring, logs the error (kids and paths, never key bytes) and counts a failure — the
//! next poll picks up the finished update.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use auth_token::Keyring;
use auth_token::cli::{KeyArgs, KeyArgsError};

use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// The keyring every check reads. Always holds one: the server starts only with keys loaded,
/// and a failed reload keeps the active ring.
#[derive(Debug)]
pub struct KeyStore {
    ring: ArcSwap<Keyring>,
}

/// Outcome of one [`KeyStore::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// Same content as the active ring: nothing swapped.
    Unchanged,
    /// A new ring is active; its kids (not secret).
    Swapped(Vec<String>),
}

impl KeyStore {
    /// A store holding `ring`.
    pub fn new(ring: Keyring) -> Self {
        Self {
            ring: ArcSwap::from_pointee(ring),
        }
    }

    /// The active ring, for the duration of one check. Lock-free.
    pub fn load(&self) -> Guard<Arc<Keyring>> {
        self.ring.load()
    }

    /// Loads keys from `args` and swaps them in when they differ from the active ring.
    ///
    /// On error the active ring is kept. The error names kids and paths, never key bytes.
    pub fn reload(&self, args: &KeyArgs) -> Result<Reloaded, KeyArgsError> {
        let fresh = args.load()?;
        if self.ring.load().fingerprint() == fresh.fingerprint() {
            return Ok(Reloaded::Unchanged);
        }
        let kids = fresh.kids().into_iter().map(str::to_owned).collect();
        self.ring.store(Arc::new(fresh));
        Ok(Reloaded::Swapped(kids))
    }
}

/// Polls `args.keys_dir` every `interval` until `shutdown`, swapping in changed keyrings.
///
/// Returns at once for `JWT_SECRET` (an env var cannot change under a running process).
pub async fn reload_loop(
    store: Arc<KeyStore>,
    args: KeyArgs,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) {
    if args.keys_dir.is_none() {
        return;
    }
    let args = Arc::new(args);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate; the keys were just loaded.
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        let (store2, args2) = (Arc::clone(&store), Arc::clone(&args));
        // Directory reads are blocking I/O: keep them off the workers serving checks.
        let outcome = tokio::task::spawn_blocking(move || store2.reload(&args2)).await;
        match outcome {
            Ok(Ok(Reloaded::Unchanged)) => last_error = None,
            Ok(Ok(Reloaded::Swapped(kids))) => {
                last_error = None;
                metrics.record_reload();
                metrics.set_keys_loaded(kids.len());
                tracing::info!(kids = %kids.join(","), "keys reloaded");
            }
            Ok(Err(e)) => {
                metrics.record_reload_failure();
                let message = e.to_string();
                // Log each distinct failure once; the counter shows how long it lasts.
                if last_error.as_deref() != Some(&message) {
                    tracing::warn!(error = %message, "key reload failed; keeping the previous keys");
                    last_error = Some(message);
                }
            }
            Err(join) => {
                metrics.record_reload_failure();
                tracing::error!(error = %join, "key reload task failed; keeping the previous keys");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{OTHER_SECRET, SECRET};

    fn args(dir: &std::path::Path) -> KeyArgs {
        KeyArgs {
            jwt_secret: None,
            keys_dir: Some(dir.to_path_buf()),
            default_kid: None,
        }
    }

    #[test]
    fn reload_swaps_only_on_change_and_keeps_old_ring_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1"), SECRET).unwrap();
        let args = args(dir.path());
        let store = KeyStore::new(args.load().unwrap());
        assert_eq!(store.reload(&args).unwrap(), Reloaded::Unchanged);

        std::fs::write(dir.path().join("k2"), OTHER_SECRET).unwrap();
        assert_eq!(
            store.reload(&args).unwrap(),
            Reloaded::Swapped(vec!["k1".into(), "k2".into()])
        );
        assert_eq!(store.load().len(), 2);

        // A short key fails the load; the two-key ring stays active; no secret in the error.
        std::fs::write(dir.path().join("k3"), b"short-secret").unwrap();
        let err = store.reload(&args).unwrap_err().to_string();
        assert!(!err.contains("short-secret"), "{err}");
        assert_eq!(store.load().kids(), ["k1", "k2"]);
    }
}
