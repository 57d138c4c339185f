//! Revoked tokens, known in memory and followed from login-service's feed: ext-authz stays
//! database-free.
//!
//! - [`RevocationSet`]: an immutable set — `jti → exp` for single tokens, `sub → cut` for
//!   user-wide revocations (every token of that user with `iat <= cut`). Checks read it through
//!   [`Revocations::load`] (one [`arc_swap`] load: no lock, no I/O) and do at most two hash
//!   lookups. A batch from the feed builds a new set (copy + insert + drop expired) and swaps it
//!   in (writers — feed and expiry sweep — take a mutex among themselves; readers never); batches are rare (a logout, a password change), so copying beats a concurrent map on
//!   the read side, which is the one that must stay flat (`benches/check.rs` measures both: the
//!   check with 100k revocations, and rebuilding a 100k set).
//! - Entries are dropped once they cannot matter: `expires_at` plus the verifier's leeway has
//!   passed (after that the verifier refuses the token by itself). The set is therefore bounded
//!   by the revocations in force, and login-service bounds those per user
//!   (`MAX_REVOKED_PER_USER` + 1). Measured: ≈ 100 B resident per entry, ≈ 200 B while a batch
//!   is applied (old and new set both alive); `tests::bytes_per_*` reproduce it.
//! - [`follow`]: the feed client. `GET <url>?since=0&wait=0` pages through the snapshot, then
//!   long-polls `?since=<cursor>&wait=<--revocation-feed-wait>` (409 `cursor_ahead`: the feed's
//!   database was replaced, take a new snapshot); errors back off (250 ms → 5 s),
//!   are counted and logged once per distinct message.
//! - [`watch`]: every 500 ms, updates the lag and freshness gauges, drops expired entries, and
//!   drives gRPC health. Two questions, two answers (issue #11: a login-service outage must not
//!   take the edge down):
//!   - "can decide" — the overall `""` and `envoy.service.auth.v3.Authorization` services, which
//!     readiness probes follow: [`Revocations::usable`]. Fail-open (default): after the first
//!     snapshot always; before it, once `--revocation-startup-wait` has passed (then it decides
//!     with an empty set: an ERROR line every minute and
//!     `ext_authz_revocation_deciding_without_snapshot 1`) — unless the feed answers 401, 403 or
//!     404: a wrong token or URL that waiting does not fix, so a replica without a snapshot
//!     stays NOT_SERVING (ERROR every minute, `ext_authz_revocation_feed_misconfigured 1`)
//!     until the feed answers correctly. Fail-closed: only while the feed is fresh.
//!   - "revocation data is fresh" — the named service [`FEED_HEALTH_SERVICE`] and the
//!     `ext_authz_revocation_feed_fresh` gauge: a snapshot was loaded and the last successful
//!     feed response is not older than `--revocation-grace`. For alerts, not for readiness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use auth_token::Claims;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// One entry of the feed (login-service's `revocation` row).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// Feed cursor.
    pub id: i64,
    /// User id (`sub`).
    pub sub: String,
    /// One token; `None`: every token of `sub` with `iat <= revoked_at`.
    #[serde(default)]
    pub jti: Option<String>,
    /// Unix seconds of the revocation.
    pub revoked_at: i64,
    /// Unix seconds after which the entry covers no valid token.
    pub expires_at: i64,
}

/// A page of the feed.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// The cursor to ask from next time.
    pub cursor: i64,
    /// More entries wait: ask again at once.
    #[serde(default)]
    pub more: bool,
    /// Entries in cursor order.
    pub revocations: Vec<Entry>,
}

/// A user-wide revocation: tokens with `iat <= cut` are revoked until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserCut {
    cut: u64,
    expires_at: u64,
}

/// The revoked tokens known at one point: immutable, replaced whole.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    tokens: HashMap<Box<str>, u64>,
    users: HashMap<Box<str>, UserCut>,
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl RevocationSet {
    /// True when `claims` (a token that verified) is revoked: its `jti` is listed, or its user
    /// has a cut at or after its `iat`.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        if !self.users.is_empty()
            && let Some(user) = self.users.get(claims.sub.as_str())
            && claims.iat <= user.cut
        {
            return true;
        }
        !self.tokens.is_empty() && self.tokens.contains_key(claims.jti.as_str())
    }

    /// Entries held (tokens + users).
    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entries`, skipping those already expired at `now` (with `leeway` seconds).
    pub fn insert(&mut self, entries: &[Entry], now: u64, leeway: u64) {
        for e in entries {
            let expires_at = unsigned(e.expires_at);
            if expires_at.saturating_add(leeway) < now {
                continue;
            }
            match &e.jti {
                Some(jti) => {
                    let exp = self.tokens.entry(jti.as_str().into()).or_insert(0);
                    *exp = (*exp).max(expires_at);
                }
                None => {
                    let cut = unsigned(e.revoked_at);
                    let user = self
                        .users
                        .entry(e.sub.as_str().into())
                        .or_insert(UserCut { cut, expires_at });
                    user.cut = user.cut.max(cut);
                    user.expires_at = user.expires_at.max(expires_at);
                }
            }
        }
    }

    /// A copy with `entries` added and expired entries dropped.
    pub fn with(&self, entries: &[Entry], now: u64, leeway: u64) -> Self {
        let mut next = self.clone();
        next.prune(now, leeway);
        next.insert(entries, now, leeway);
        next
    }

    /// True when some entry expired (so [`RevocationSet::prune`] would drop something).
    pub fn has_expired(&self, now: u64, leeway: u64) -> bool {
        let gone = |exp: u64| exp.saturating_add(leeway) < now;
        self.tokens.values().any(|&e| gone(e)) || self.users.values().any(|u| gone(u.expires_at))
    }

    /// Drops entries whose `expires_at + leeway` is before `now`.
    pub fn prune(&mut self, now: u64, leeway: u64) {
        let keep = |exp: u64| exp.saturating_add(leeway) >= now;
        self.tokens.retain(|_, &mut e| keep(e));
        self.users.retain(|_, u| keep(u.expires_at));
    }
}

/// How to follow the feed (`--revocation-*` flags).
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// `GET` endpoint, e.g. `http://login-service:5000/revocations`.
    pub url: String,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<SecretString>,
    /// Long-poll wait asked of the server.
    pub wait: Duration,
    /// Without a successful feed response for this long the feed is stale: the feed health
    /// service turns NOT_SERVING (and, when `fail_closed`, checks fail with UNAVAILABLE).
    pub grace: Duration,
    /// Fail-open only: how long checks wait for the first snapshot (UNAVAILABLE meanwhile)
    /// before deciding with an empty set.
    pub startup_wait: Duration,
    /// Refuse to decide (gRPC UNAVAILABLE → Envoy's 503) when the feed is stale.
    pub fail_closed: bool,
    /// Entries per page.
    pub limit: u32,
}

/// The gRPC health service name that reports whether the revocation data is fresh (SERVING)
/// or stale (NOT_SERVING). Not "can decide": that is the overall `""` service.
pub const FEED_HEALTH_SERVICE: &str = "edge-auth.revocation-feed";

/// The shared revocation state: the active set and the feed's freshness.
#[derive(Debug)]
pub struct Revocations {
    set: ArcSwap<RevocationSet>,
    /// Serialises writers (feed batches, expiry sweeps) so neither overwrites the other's
    /// update; readers never take it.
    writer: Mutex<()>,
    /// Unix milliseconds of the last successful feed response; 0 before the first snapshot.
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
}

fn now_ms() -> u64 {
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

    /// Records a successful feed response.
    pub fn mark_synced(&self) {
        self.synced_ms.store(now_ms().max(1), Ordering::Release);
    }

    /// True once a complete snapshot was received.
    pub fn ever_synced(&self) -> bool {
        self.synced_ms.load(Ordering::Acquire) != 0
    }

    /// Milliseconds since the last successful feed response (or since the start).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        let synced = self.synced_ms.load(Ordering::Acquire);
        let since = if synced == 0 { self.started_ms } else { synced };
        now_ms.saturating_sub(since)
    }

    /// Fresh: a snapshot was received and the feed is not older than the grace. Reported by
    /// [`FEED_HEALTH_SERVICE`] and the `revocation_feed_fresh` gauge; readiness does not follow
    /// it unless fail-closed.
    pub fn fresh(&self, now_ms: u64) -> bool {
        self.ever_synced() && self.lag_ms(now_ms) <= self.grace_ms
    }

    /// Records the feed's answer: `Some(401 | 403 | 404)` is a configuration error (wrong or
    /// rotated token, wrong URL path) that waiting does not fix; `None` clears it.
    pub fn set_misconfigured(&self, status: Option<u16>) {
        self.misconfigured
            .store(status.unwrap_or(0), Ordering::Release);
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
}

/// Why one feed request failed.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("feed request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("feed answered HTTP {0}")]
    Status(u16),
    /// 401/403 (token wrong, missing or rotated) or 404 (wrong URL path): waiting won't help.
    #[error(
        "feed answered HTTP {0}: check REVOCATION_FEED_TOKEN (the same on both sides) and REVOCATION_FEED_URL"
    )]
    Misconfigured(u16),
    /// 409: our cursor is beyond the feed's newest entry (its database was replaced).
    #[error("feed cursor is ahead of the feed (database replaced?): taking a new snapshot")]
    CursorAhead,
}

async fn fetch(
    client: &reqwest::Client,
    config: &FeedConfig,
    since: i64,
    wait: Duration,
) -> Result<Page, FeedError> {
    let mut request = client
        .get(&config.url)
        .query(&[
            ("since", since.to_string()),
            ("wait", wait.as_secs().to_string()),
            ("limit", config.limit.to_string()),
        ])
        // Why: the server holds a long poll for `wait`; allow for that plus a slow answer.
        .timeout(wait + Duration::from_secs(5));
    if let Some(token) = &config.token {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request.send().await?;
    if response.status() == reqwest::StatusCode::CONFLICT {
        return Err(FeedError::CursorAhead);
    }
    let status = response.status().as_u16();
    if matches!(status, 401 | 403 | 404) {
        return Err(FeedError::Misconfigured(status));
    }
    if !response.status().is_success() {
        return Err(FeedError::Status(status));
    }
    Ok(response.json::<Page>().await?)
}

/// Follows the feed until `shutdown`: snapshot, then long polls (see the module docs).
pub async fn follow(
    state: Arc<Revocations>,
    config: FeedConfig,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) -> Result<(), crate::server::ServerError> {
    let client = reqwest::Client::builder()
        // Why: the feed is cluster-internal; an HTTP(S)_PROXY meant for egress must not apply.
        .no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    let mut backoff = Duration::from_millis(250);
    let mut last_error: Option<String> = None;
    // `None` until the snapshot is complete: pages are collected into a fresh set first.
    let mut snapshot: Option<RevocationSet> = Some(RevocationSet::default());
    let mut cursor = 0_i64;
    loop {
        let wait = if snapshot.is_some() {
            Duration::ZERO
        } else {
            config.wait
        };
        let result = tokio::select! {
            r = fetch(&client, &config, cursor, wait) => r,
            () = shutdown.wait() => return Ok(()),
        };
        let page = match result {
            Ok(page) => page,
            Err(FeedError::CursorAhead) => {
                metrics.record_feed_error();
                tracing::warn!(cursor, "{}", FeedError::CursorAhead);
                snapshot = Some(RevocationSet::default());
                cursor = 0;
                continue;
            }
            Err(e) => {
                metrics.record_feed_error();
                if let FeedError::Misconfigured(status) = e {
                    state.set_misconfigured(Some(status));
                }
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    if matches!(e, FeedError::Misconfigured(_)) {
                        // `watch` repeats it every minute while it lasts.
                        tracing::error!(error = %message, "revocation feed refuses this replica: configuration error");
                    } else {
                        tracing::warn!(error = %message, "revocation feed failed; keeping what is known");
                    }
                    last_error = Some(message);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.wait() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        state.set_misconfigured(None);
        if last_error.take().is_some() {
            tracing::info!("revocation feed recovered");
        }
        backoff = Duration::from_millis(250);
        let now = auth_token::now_unix();
        cursor = page.cursor.max(cursor);
        match snapshot.as_mut() {
            Some(set) => {
                set.insert(&page.revocations, now, state.leeway());
                if !page.more {
                    let set = snapshot.take().unwrap_or_default();
                    tracing::info!(
                        revocations = set.len(),
                        cursor,
                        "revocation snapshot loaded"
                    );
                    metrics.set_revocations_known(set.len());
                    state.store(set);
                }
            }
            None if !page.revocations.is_empty() => {
                let leeway = state.leeway();
                let len = state.update(|set| Some(set.with(&page.revocations, now, leeway)));
                metrics.set_revocations_known(len);
                tracing::info!(new = page.revocations.len(), cursor, "revocations received");
            }
            None => {}
        }
        if snapshot.is_none() {
            state.mark_synced();
        }
    }
}

/// While deciding without a snapshot, or while the feed refuses this replica, the ERROR line
/// is repeated this often (a single line scrolls away; the condition does not heal by itself).
const ALARM_REPEAT_MS: u64 = 60_000;

/// Every 500 ms until `stop`: lag and freshness gauges, expiry, and gRPC health ("can decide"
/// on `""`/Authorization, "fresh" on [`FEED_HEALTH_SERVICE`]). `outer` is the shutdown
/// request: once it fired, health is left NOT_SERVING.
pub async fn watch(
    state: Arc<Revocations>,
    metrics: Arc<Metrics>,
    health: tonic_health::server::HealthReporter,
    outer: ShutdownSignal,
    mut stop: ShutdownSignal,
) -> Result<(), crate::server::ServerError> {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving: Option<bool> = None;
    let mut was_fresh: Option<bool> = None;
    // Unix ms of the last alarm (blind or misconfigured) logged; repeated every minute.
    let mut alarmed_ms: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.wait() => return Ok(()),
        }
        let now = now_ms();
        metrics.set_feed_lag(Duration::from_millis(state.lag_ms(now)));
        let (secs, leeway) = (now / 1000, state.leeway());
        if state.load().has_expired(secs, leeway) {
            let len = state.update(|set| {
                set.has_expired(secs, leeway).then(|| {
                    let mut next = set.clone();
                    next.prune(secs, leeway);
                    next
                })
            });
            metrics.set_revocations_known(len);
        }
        let fresh = state.fresh(now);
        let can_decide = state.usable_at(now);
        let blind = state.deciding_without_snapshot(now);
        metrics.set_feed_fresh(fresh);
        let misconfigured = state.misconfigured();
        metrics.set_deciding_without_snapshot(blind);
        metrics.set_feed_misconfigured(misconfigured.is_some());
        if !blind && misconfigured.is_none() {
            alarmed_ms = None;
        } else if alarmed_ms.is_none_or(|at| now.saturating_sub(at) >= ALARM_REPEAT_MS) {
            alarmed_ms = Some(now);
            match misconfigured {
                Some(status) if state.ever_synced() => tracing::error!(
                    status,
                    lag_ms = state.lag_ms(now),
                    "revocation feed refuses this replica (configuration error: REVOCATION_FEED_TOKEN or REVOCATION_FEED_URL): deciding with the revocations known so far, which no longer update"
                ),
                Some(status) => tracing::error!(
                    status,
                    lag_ms = state.lag_ms(now),
                    "revocation feed refuses this replica (configuration error: REVOCATION_FEED_TOKEN or REVOCATION_FEED_URL) and no snapshot was loaded: NOT_SERVING, checks answer UNAVAILABLE until the feed answers"
                ),
                None => tracing::error!(
                    lag_ms = state.lag_ms(now),
                    "no revocation snapshot after the startup wait: deciding WITHOUT revocation data (revoked tokens are accepted until the feed answers)"
                ),
            }
        }
        // Why this order: whoever sees the feed service change also sees this tick's "can
        // decide" answer (the outage tests rely on it).
        if serving != Some(can_decide) && !outer.is_triggered() {
            if can_decide {
                tracing::info!("can decide: reporting SERVING");
            } else if serving.is_some() && state.fail_closed {
                tracing::warn!(
                    lag_ms = state.lag_ms(now),
                    "fail-closed and the revocation feed is stale: reporting NOT_SERVING, checks answer UNAVAILABLE"
                );
            }
            crate::server::report_health(&health, can_decide).await;
            serving = Some(can_decide);
        }
        if was_fresh != Some(fresh) {
            if fresh {
                tracing::info!("revocation feed fresh: {FEED_HEALTH_SERVICE} SERVING");
            } else if was_fresh.is_some() {
                tracing::warn!(
                    lag_ms = state.lag_ms(now),
                    fail_closed = state.fail_closed,
                    "revocation feed stale: {FEED_HEALTH_SERVICE} NOT_SERVING; revocations made meanwhile are not seen"
                );
            }
            health
                .set_service_status(
                    FEED_HEALTH_SERVICE,
                    if fresh {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    },
                )
                .await;
            was_fresh = Some(fresh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: u64) -> Claims {
        Claims {
            sub: sub.into(),
            email: "e@example.com".into(),
            roles: vec![],
            iat,
            nbf: iat,
            exp: iat + 600,
            jti: jti.into(),
            iss: None,
            aud: None,
        }
    }

    fn token(id: i64, sub: &str, jti: &str, exp: i64) -> Entry {
        Entry {
            id,
            sub: sub.into(),
            jti: Some(jti.into()),
            revoked_at: exp - 600,
            expires_at: exp,
        }
    }

    fn user(id: i64, sub: &str, cut: i64, expires_at: i64) -> Entry {
        Entry {
            id,
            sub: sub.into(),
            jti: None,
            revoked_at: cut,
            expires_at,
        }
    }

    #[test]
    fn token_revocation_matches_the_jti_only() {
        let set = RevocationSet::default().with(&[token(1, "7", "j1", 2_000)], 1_000, 30);
        assert!(set.is_revoked(&claims("7", "j1", 900)));
        assert!(!set.is_revoked(&claims("7", "j2", 900)));
        // The jti decides, whoever the user.
        assert!(set.is_revoked(&claims("8", "j1", 900)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn user_cut_edge_iat_equal_is_revoked_next_second_is_not() {
        let t = 1_000;
        let set = RevocationSet::default().with(&[user(1, "7", t, t + 86_400)], 1_000, 30);
        let t = u64::try_from(t).unwrap();
        assert!(set.is_revoked(&claims("7", "a", t - 100)));
        assert!(set.is_revoked(&claims("7", "b", t)), "iat == T is revoked");
        assert!(
            !set.is_revoked(&claims("7", "c", t + 1)),
            "iat == T + 1 (login-service's next token) lives"
        );
        assert!(
            !set.is_revoked(&claims("8", "d", t - 100)),
            "other users live"
        );
    }

    #[test]
    fn later_cut_wins_and_an_earlier_one_does_not_shrink_it() {
        let set = RevocationSet::default().with(
            &[user(1, "7", 2_000, 90_000), user(2, "7", 1_000, 80_000)],
            1_000,
            30,
        );
        assert!(set.is_revoked(&claims("7", "a", 1_500)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn expired_entries_are_skipped_and_dropped_so_the_set_is_bounded() {
        let now = 10_000;
        let mut set = RevocationSet::default();
        // Already expired beyond the leeway on arrival: never stored.
        set.insert(&[token(1, "7", "old", 9_000)], now, 30);
        assert!(set.is_empty());
        // Expired, but within the leeway: kept (the verifier still accepts that token).
        set.insert(&[token(2, "7", "recent", 9_980)], now, 30);
        assert_eq!(set.len(), 1);
        set.insert(
            &[token(3, "7", "live", 20_000), user(4, "8", 9_000, 10_500)],
            now,
            30,
        );
        assert_eq!(set.len(), 3);
        assert!(!set.has_expired(now, 30));
        // Later: the leeway passed for "recent", then for the user cut.
        assert!(set.has_expired(10_011, 30));
        set.prune(10_011, 30);
        assert_eq!(set.len(), 2);
        let next = set.with(&[], 10_531, 30);
        assert_eq!(next.len(), 1);
        assert!(next.is_revoked(&claims("x", "live", 1)));
        // Bounded: after every expiry, nothing is left however many entries went in.
        let many: Vec<Entry> = (0..10_000)
            .map(|i| token(i, "7", &format!("j{i}"), 11_000))
            .collect();
        let big = next.with(&many, now, 30);
        assert_eq!(big.len(), 10_001);
        assert_eq!(big.with(&[], 21_000, 30).len(), 0);
    }

    #[test]
    fn decide_refuses_a_revoked_token_with_401_token_revoked() {
        use crate::check::{Decision, Reason, decide_with_revocations};
        use crate::policy::Policy;
        use crate::test_support::{SECRET, headers, issue, now, ring, settings};
        let token = issue("k1", SECRET, &["admin"]);
        let h = headers(&format!("Bearer {token}"));
        let c = settings(false)
            .verifier
            .verify(&token, &ring(), now())
            .unwrap();
        let entry = Entry {
            id: 1,
            sub: c.sub.clone(),
            jti: Some(c.jti.clone()),
            revoked_at: 0,
            expires_at: i64::try_from(c.exp).unwrap(),
        };
        let set = RevocationSet::default().with(&[entry], now(), 30);
        let decide = |set: Option<&RevocationSet>, dry_run: bool| {
            decide_with_revocations(&h, &Policy::NONE, &ring(), set, &settings(dry_run), now())
        };
        match decide(Some(&set), false) {
            Decision::Deny(d) => {
                assert_eq!(d.status.http_code(), 401);
                assert_eq!(d.reason, Reason::Revoked);
                assert_eq!(d.reason.label(), "revoked");
                assert_eq!(
                    d.www_authenticate,
                    r#"Bearer realm="edge", error="invalid_token", error_description="token revoked""#
                );
                assert_eq!(
                    d.body,
                    r#"{"error":"invalid_token","message":"token revoked"}"#
                );
            }
            other => panic!("{other:?}"),
        }
        // Dry run: let through, without identity.
        assert!(matches!(
            decide(Some(&set), true),
            Decision::DryRunAllow { claims: None, denial } if denial.reason == Reason::Revoked
        ));
        // Without the set, or with another token revoked: allowed.
        assert!(matches!(decide(None, false), Decision::Allow { .. }));
        let other = RevocationSet::default().with(&[token_entry_for_other()], now(), 30);
        assert!(matches!(
            decide(Some(&other), false),
            Decision::Allow { .. }
        ));
    }

    fn token_entry_for_other() -> Entry {
        let exp = i64::try_from(crate::test_support::now()).unwrap() + 600;
        token(9, "42", "someone-else", exp)
    }

    /// Resident KiB of this process (`VmRSS`).
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Measurement, not a check (issue #11 item 5): resident bytes per revocation entry with
    /// login-service's real shapes (32-hex-digit `jti`, numeric `sub`), and the peak while a
    /// feed batch is applied (the set is copied, then swapped). One shape per process, so freed
    /// memory of another measurement is not reused: run each test on its own, e.g.
    /// `cargo test -p ext-authz --lib -- --ignored --exact --nocapture
    /// revocation::tests::bytes_per_jti_entry_1m`.
    fn measure_bytes_per_entry(n: i64, per_token: bool) {
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                if per_token {
                    token(
                        i,
                        &(i % 50_000).to_string(),
                        &format!("{i:032x}"),
                        4_000_000_000,
                    )
                } else {
                    user(i, &(1_000_000 + i).to_string(), 1_000, 4_000_000_000)
                }
            })
            .collect();
        let before = rss_kib();
        let mut set = RevocationSet::default();
        set.insert(&entries, 1_000, 30);
        let held = rss_kib();
        let copy = set.with(&[], 1_000, 30);
        let peak = rss_kib();
        assert_eq!(copy.len(), usize::try_from(n).unwrap());
        let per = |kib: u64| kib as f64 * 1024.0 / n as f64;
        println!(
            "{n} {} entries: {:.1} MiB resident = {:.0} B/entry; while a batch is applied: \
             {:.0} B/entry",
            if per_token { "jti" } else { "sub" },
            (held - before) as f64 / 1024.0,
            per(held - before),
            per(peak - before),
        );
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_jti_entry_100k() {
        measure_bytes_per_entry(100_000, true);
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_jti_entry_1m() {
        measure_bytes_per_entry(1_000_000, true);
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_sub_entry_1m() {
        measure_bytes_per_entry(1_000_000, false);
    }

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
        let open = Revocations::new(Duration::ZERO, false, 30);
        std::thread::sleep(Duration::from_millis(5));
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
        std::thread::sleep(Duration::from_millis(5));
        assert!(!closed.usable(), "fail-closed and stale: UNAVAILABLE");
    }
}
