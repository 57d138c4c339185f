//! The client of login-service's revocation feed (the contract is [`auth_token::feed`]): it
//! fills [`Revocations`] and never decides anything itself.
//!
//! [`follow`]: `GET <url>?since=0&wait=0` pages through the snapshot (collected into a fresh
//! set, swapped in whole), then long-polls `?since=<cursor>&wait=<--revocation-feed-wait>`
//! (409 `cursor_ahead`: the feed's database was replaced, take a new snapshot; the active set
//! stays until the new one is complete). Pages hold at most `--revocation-feed-page-limit`
//! entries. Errors back off (a doubling step 250 ms → 5 s, each delay drawn from the upper half
//! of its step, so replicas that failed together do not retry in lockstep), are counted, and
//! logged once per outage (and once more when it turns into a configuration error); 401/403/404
//! are recorded as a configuration error ([`Revocations::set_misconfigured`]).

use std::sync::Arc;
use std::time::Duration;

use auth_token::FeedPageRef;
use auth_token::feed::{self, FeedQuery};
use bytes::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::revoked::SnapshotBuilder;
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
    /// Entries asked per page (`limit`).
    pub page_limit: i64,
    /// Without a caught-up feed answer (nothing more behind it) for this long the feed is
    /// stale: the feed health service turns NOT_SERVING (and, when `fail_closed`, checks fail
    /// with UNAVAILABLE).
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
    /// A 200 whose body is not a page. Why only the kind and place: serde_json's message
    /// quotes the offending value, which a misrouted URL or a rewriting proxy could make a
    /// large blob in every log line and trace (attack review).
    #[error("feed page is not a valid page ({kind} error at line {line}, column {column})")]
    Body {
        kind: &'static str,
        line: usize,
        column: usize,
    },
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
    /// The request sent ahead did not finish (its task was cancelled or panicked).
    #[error("feed request sent ahead was abandoned")]
    Abandoned,
}

/// A feed request sent ahead while a snapshot page is read: its cursor, its span, the task.
type Ahead = (
    i64,
    tracing::Span,
    tokio::task::JoinHandle<Result<Pending, FeedError>>,
);

/// The page at `since`: the request sent ahead for it, if there is one, else a new one. While a
/// snapshot is loading, the page after this one is requested as soon as this one's headers say
/// there is one, before its body is read (issue #15 §2): login-service then reads and encodes
/// page k + 1 while this replica parses and stores page k. One request ahead at most.
async fn next_page(
    client: &reqwest::Client,
    config: &FeedConfig,
    since: i64,
    wait: Duration,
    ahead: &mut Option<Ahead>,
    snapshot: bool,
) -> Result<Fetched, FeedError> {
    let (span, pending) = match ahead.take() {
        Some((cursor, span, task)) if cursor == since => {
            let pending = task.await.map_err(|_| FeedError::Abandoned)?;
            let pending = record(&span, pending)?;
            (span, pending)
        }
        other => {
            // Sent for another cursor (headers that disagreed with their body): dropped,
            // and this one asked afresh.
            if let Some((_, _, task)) = other {
                task.abort();
            }
            let span = fetch_span(since);
            let pending = start(client, config, since, wait)
                .instrument(span.clone())
                .await;
            let pending = record(&span, pending)?;
            (span, pending)
        }
    };
    if snapshot && let Some((next, true)) = pending.next {
        let (client, config, next_span) = (client.clone(), config.clone(), fetch_span(next));
        let task = tokio::spawn(
            async move { start(&client, &config, next, Duration::ZERO).await }
                .instrument(next_span.clone()),
        );
        *ahead = Some((next, next_span, task));
    }
    let next = pending.next;
    let body = pending.response.bytes().instrument(span.clone()).await;
    let body = record(&span, body.map_err(FeedError::from))?;
    Ok(Fetched { body, next, span })
}

impl From<serde_json::Error> for FeedError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Io => "read",
            Category::Syntax => "syntax",
            Category::Data => "data",
            Category::Eof => "unexpected end",
        };
        Self::Body {
            kind,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// A feed answer's body, read but not yet parsed: [`Fetched::page`] parses it borrowed (the
/// entries' strings point into `body`, see [`FeedPageRef`]).
struct Fetched {
    body: Bytes,
    /// The page's `cursor` and `more` from its headers, when login-service sent both.
    next: Option<(i64, bool)>,
    span: tracing::Span,
}

impl Fetched {
    /// The page. Its body decides: headers that contradict it only cost the request sent
    /// ahead on them, which [`next_page`] drops when its cursor is not the body's (attack
    /// review M2: refusing such a page would stop every snapshot behind a rewriting proxy).
    ///
    /// Ends the request's span (it is taken out): the time spent applying the page is not the
    /// request's.
    fn page(&mut self) -> Result<FeedPageRef<'_>, FeedError> {
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        let page = serde_json::from_slice::<FeedPageRef<'_>>(&self.body).map_err(FeedError::from);
        let page = record(&span, page)?;
        span.record("entries", page.revocations.len());
        if self
            .next
            .is_some_and(|next| next != (page.cursor, page.more))
        {
            tracing::debug!(
                next = ?self.next,
                page.cursor,
                page.more,
                "feed headers disagree with the page"
            );
        }
        Ok(page)
    }
}

/// What one feed answer brought, as the loop applies it.
enum Step<'a> {
    /// A page of the snapshot, already appended to the builder.
    Snapshot { cursor: i64, more: bool },
    /// A page of the incremental feed.
    Follow(FeedPageRef<'a>),
}

impl Step<'_> {
    fn cursor(&self) -> i64 {
        match self {
            Self::Snapshot { cursor, .. } => *cursor,
            Self::Follow(page) => page.cursor,
        }
    }

    fn more(&self) -> bool {
        match self {
            Self::Snapshot { more, .. } => *more,
            Self::Follow(page) => page.more,
        }
    }
}

/// Parses a snapshot page and appends it to `builder` on a blocking thread; gives back the
/// builder and the page's cursor and `more` (`None`: the runtime is shutting down). A panic
/// there goes on in this task, as when the page was appended here: the feed task ends and its
/// supervisor stops the process, rather than a replica going on with a half-built set.
///
/// Why not on the runtime's threads: glibc gives each thread its own malloc arena (usually:
/// past its arena limit, or with `MALLOC_ARENA_MAX`, threads share them). Growing the builder's
/// 4,096 shard vectors to a million entries leaves their outgrown buffers as holes between the
/// live ones, and in the arena the checks allocate from, every later check paid for them (perf
/// at 1M entries vs none, issue #15 §2: `_int_malloc`, `_int_free` and `malloc_consolidate`
/// +2.9 % of a check's CPU). On a machine with more than one CPU the checks also go on
/// meanwhile.
async fn append_off_runtime(
    mut builder: SnapshotBuilder,
    mut fetched: Fetched,
    now: u64,
    leeway: u64,
) -> Option<(SnapshotBuilder, Result<(i64, bool), FeedError>)> {
    let appended = tokio::task::spawn_blocking(move || {
        let appended = fetched.page().map(|page| {
            builder.add(&page.revocations, now, leeway);
            (page.cursor, page.more)
        });
        (builder, appended)
    })
    .await;
    match appended {
        Ok(appended) => Some(appended),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// One client span per feed request when traces are exported (issue #14); login-service's
/// request span continues it. A disabled span otherwise (no cost).
fn fetch_span(since: i64) -> tracing::Span {
    if !edge_process::telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "revocation_feed.fetch",
        otel.kind = "client",
        since,
        entries = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

/// Records an error on the request's span.
fn record<T>(span: &tracing::Span, result: Result<T, FeedError>) -> Result<T, FeedError> {
    if let Err(e) = &result {
        span.record("error", tracing::field::display(e));
    }
    result
}

/// A feed answer whose status and headers have arrived; [`next_page`] reads its body.
#[derive(Debug)]
struct Pending {
    response: reqwest::Response,
    /// The page's `cursor` and `more` from its headers, when login-service sent both.
    next: Option<(i64, bool)>,
}

/// Sends one feed request and reads its status and headers.
async fn start(
    client: &reqwest::Client,
    config: &FeedConfig,
    since: i64,
    wait: Duration,
) -> Result<Pending, FeedError> {
    let mut request = client
        .get(&config.url)
        .query(&FeedQuery {
            since,
            wait: wait.as_secs(),
            limit: Some(config.page_limit),
        })
        // Why: the server holds a long poll for `wait`; allow for that plus a slow answer.
        .timeout(wait + Duration::from_secs(5));
    if let Some(token) = &config.token {
        request = request.bearer_auth(token.expose_secret());
    }
    for (name, value) in edge_process::telemetry::trace_headers(&tracing::Span::current()) {
        request = request.header(name, value);
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
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cursor = header(feed::CURSOR_HEADER).and_then(|c| c.parse::<i64>().ok());
    let more = header(feed::MORE_HEADER).and_then(|m| m.parse::<bool>().ok());
    Ok(Pending {
        next: cursor.zip(more),
        response,
    })
}

/// The first retry step after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The largest retry step.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The delay before a retry: within the upper half of `step` ("equal jitter"), `unit` in
/// `[0, 1)` choosing where. Never shorter than half the step, so the doubling still bounds the
/// request rate; spread, so replicas cut off by the same restart come back at different times.
fn jittered(step: Duration, unit: f64) -> Duration {
    step.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A uniform value in `[0, 1)` from the standard library's per-instance random hash keys (no
/// RNG dependency for a jitter).
fn random_unit() -> f64 {
    use std::hash::BuildHasher as _;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0_u8) >> 11;
    // 53 random bits: exact in an f64.
    #[allow(clippy::cast_precision_loss)]
    let unit = bits as f64 / (1_u64 << 53) as f64;
    unit
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
    let mut backoff = FIRST_BACKOFF;
    // The failures of the current outage, and whether it was logged as a configuration error.
    let mut outage: Option<(u64, bool)> = None;
    // `None` until the snapshot is complete: pages are collected into a fresh set first.
    let mut snapshot: Option<SnapshotBuilder> = Some(SnapshotBuilder::default());
    let mut cursor = 0_i64;
    let mut ahead: Option<Ahead> = None;
    loop {
        let wait = if snapshot.is_some() {
            Duration::ZERO
        } else {
            config.wait
        };
        let loading = snapshot.is_some();
        let result = tokio::select! {
            r = next_page(&client, &config, cursor, wait, &mut ahead, loading) => r,
            () = shutdown.wait() => {
                if let Some((_, _, task)) = ahead.take() {
                    task.abort();
                }
                return;
            }
        };
        let mut fetched: Fetched;
        let result = match (result, snapshot.take()) {
            (Ok(f), Some(builder)) => {
                let (now, leeway) = (auth_token::now_unix(), state.leeway());
                let Some((builder, appended)) = append_off_runtime(builder, f, now, leeway).await
                else {
                    return; // the runtime is shutting down
                };
                snapshot = Some(builder);
                appended.map(|(cursor, more)| Step::Snapshot { cursor, more })
            }
            (Ok(f), None) => {
                fetched = f;
                fetched.page().map(Step::Follow)
            }
            (Err(e), builder) => {
                snapshot = builder;
                Err(e)
            }
        };
        if result.is_err()
            && let Some((_, _, task)) = ahead.take()
        {
            // Whatever went wrong, the next request starts from a known cursor.
            task.abort();
        }
        let step = match result {
            Ok(step) => step,
            Err(FeedError::CursorAhead) => {
                metrics.record_feed_error();
                tracing::warn!(cursor, "{}", FeedError::CursorAhead);
                // Why: the active set stays in force until the new snapshot is complete (a
                // half-read snapshot would let revoked tokens through).
                snapshot = Some(SnapshotBuilder::default());
                cursor = 0;
                continue;
            }
            Err(e) => {
                metrics.record_feed_error();
                let misconfigured = matches!(e, FeedError::Misconfigured(_));
                if let FeedError::Misconfigured(status) = e {
                    state.set_misconfigured(Some(status));
                }
                let (failures, logged_misconfigured) = outage.get_or_insert((0, false));
                *failures += 1;
                // Why once per outage: every replica retries several times a second at first;
                // a line per retry (or per alternating message) floods the log for as long as
                // login-service is down. The counter shows how long it lasts.
                if misconfigured && !*logged_misconfigured {
                    *logged_misconfigured = true;
                    // `watch` repeats it every minute while it lasts.
                    tracing::error!(error = %e, "revocation feed refuses this replica: configuration error");
                } else if *failures == 1 {
                    tracing::warn!(error = %e, "revocation feed failed; keeping what is known");
                } else {
                    tracing::debug!(error = %e, failures = *failures, "revocation feed still failing");
                }
                tokio::select! {
                    () = tokio::time::sleep(jittered(backoff, random_unit())) => {}
                    () = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        state.set_misconfigured(None);
        if let Some((failures, _)) = outage.take() {
            tracing::info!(failures, "revocation feed recovered");
        }
        backoff = FIRST_BACKOFF;
        let more = step.more();
        cursor = step.cursor().max(cursor);
        match step {
            Step::Snapshot { more: true, .. } => {}
            Step::Snapshot { more: false, .. } => {
                let builder = snapshot.take().unwrap_or_default();
                // Why a blocking thread: sorting 1M entries would stall the checks of a
                // single-threaded runtime (a sidecar with one CPU) for tens of ms.
                let Ok(set) = tokio::task::spawn_blocking(move || builder.finish()).await else {
                    // Never expected (a panic while sorting): the active set stays in
                    // force and a new snapshot is read, as after a 409.
                    tracing::error!("revocation snapshot could not be built; reading it again");
                    snapshot = Some(SnapshotBuilder::default());
                    cursor = 0;
                    continue;
                };
                tracing::info!(
                    revocations = set.len(),
                    cursor,
                    "revocation snapshot loaded"
                );
                metrics.set_revocations_known(set.len());
                state.store(set);
            }
            Step::Follow(page) if !page.revocations.is_empty() => {
                let (now, leeway) = (auth_token::now_unix(), state.leeway());
                let len = state.update(|set| Some(set.with(&page.revocations, now, leeway)));
                metrics.set_revocations_known(len);
                tracing::info!(new = page.revocations.len(), cursor, "revocations received");
            }
            Step::Follow(_) => {}
        }
        // Synced means caught up: a page with more behind it is not (review of issue #15 §2:
        // with fail-closed, the first page of a catch-up after a stale spell made the replica
        // fresh, and ready, before the revocations of the pages after it were applied).
        if snapshot.is_none() && !more {
            state.mark_synced();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_stay_in_the_upper_half_of_the_step_and_spread() {
        let step = Duration::from_secs(4);
        assert_eq!(jittered(step, 0.0), Duration::from_secs(2));
        assert_eq!(jittered(step, 0.5), Duration::from_secs(3));
        assert!(jittered(step, 0.999_999) < step);
        // Out-of-range units cannot leave the band.
        assert_eq!(jittered(step, -3.0), Duration::from_secs(2));
        assert_eq!(jittered(step, 7.0), step);

        // Ten replicas failing together: their first retries differ (equal delays would put
        // them back in lockstep), and every one is within its band.
        let delays: std::collections::BTreeSet<Duration> = (0..10)
            .map(|_| jittered(FIRST_BACKOFF, random_unit()))
            .collect();
        assert!(delays.len() > 5, "{delays:?}");
        for d in &delays {
            assert!(*d >= FIRST_BACKOFF / 2 && *d < FIRST_BACKOFF, "{d:?}");
        }
        let units: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let low = units.iter().filter(|u| **u < 0.5).count();
        assert!((350..=650).contains(&low), "{low} of 1000 below 0.5");
    }
}
