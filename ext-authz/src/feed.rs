//! The client of login-service's revocation feed (the contract is [`auth_token::feed`]): it
//! fills [`Revocations`] and never decides anything itself.
//!
//! [`follow`]: `GET <url>?since=0&wait=0` pages through the snapshot (collected into a fresh
//! set, swapped in whole), then long-polls `?since=<cursor>&wait=<--revocation-feed-wait>`
//! (409 `cursor_ahead`: the feed's database was replaced, take a new snapshot). Errors back off
//! (250 ms → 5 s), are counted and logged once per distinct message; 401/403/404 are recorded
//! as a configuration error ([`Revocations::set_misconfigured`]).

use std::sync::Arc;
use std::time::Duration;

use auth_token::feed::{DEFAULT_LIMIT, FeedPage, FeedQuery};
use secrecy::{ExposeSecret as _, SecretString};

use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::revoked::RevocationSet;
use crate::shutdown::ShutdownSignal;

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
) -> Result<FeedPage, FeedError> {
    let mut request = client
        .get(&config.url)
        .query(&FeedQuery {
            since,
            wait: wait.as_secs(),
            limit: Some(DEFAULT_LIMIT),
        })
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
    Ok(response.json::<FeedPage>().await?)
}

/// Follows the feed until `shutdown`: snapshot, then long polls (see the module docs).
pub async fn follow(
    state: Arc<Revocations>,
    config: FeedConfig,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) {
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
            () = shutdown.wait() => return,
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
                    () = shutdown.wait() => return,
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
