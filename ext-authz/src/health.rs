//! gRPC health (`grpc.health.v1`) of a running ext-authz, and the watcher that drives it from
//! the revocation state. Two questions, two answers (see [`crate::revocation`]):
//! - "can decide": the overall `""` service and `envoy.service.auth.v3.Authorization`, which
//!   readiness probes and Envoy health checks follow ([`report_health`], one status for both);
//! - "revocation data is fresh": the named service [`FEED_HEALTH_SERVICE`].
//!
//! [`watch`] runs every 500 ms while the feed is followed, and at once when the revocation state
//! or the JWKS store say readiness may have changed ([`Revocations::changed`],
//! [`JwksStore::keys_set`]): it updates the lag and freshness
//! gauges, drops expired entries from the set, reports both answers when they change, and
//! repeats an ERROR line every minute while checks are decided without a snapshot
//! (`ext_authz_revocation_deciding_without_snapshot 1`) or the feed refuses this replica
//! (`ext_authz_revocation_feed_misconfigured 1`).

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;

use crate::jwks::JwksStore;
use crate::metrics::Metrics;
use crate::revocation::{Revocations, now_ms};
use crate::service::CheckServer;
use crate::shutdown::ShutdownSignal;

/// The gRPC health service name that reports whether the revocation data is fresh (SERVING)
/// or stale (NOT_SERVING). Not "can decide": that is the overall `""` service.
pub const FEED_HEALTH_SERVICE: &str = "edge-auth.revocation-feed";

/// Sets the overall (`""`) status and the Authorization service's together: a kubelet probe
/// asks for the first, an Envoy health check may name the second, and they must never disagree.
pub async fn report_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(<CheckServer as tonic::server::NamedService>::NAME, status)
        .await;
}

/// Resolves when `keys` (the JWKS store's, if any) saw new keys: see [`JwksStore::keys_set`].
/// Never when there is no store or it is gone.
pub(crate) async fn keys_changed(keys: Option<&mut tokio::sync::watch::Receiver<()>>) {
    let changed = match keys {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// While deciding without a snapshot, or while the feed refuses this replica, the ERROR line
/// is repeated this often (a single line scrolls away; the condition does not heal by itself).
const ALARM_REPEAT_MS: u64 = 60_000;

/// Every 500 ms (and at once on [`Revocations::changed`] or new JWKS keys) until `stop`: lag
/// and freshness gauges, expiry, and gRPC health ("can decide" on `""`/Authorization —
/// revocations usable and, with `jwks`, external keys usable — "fresh" on
/// [`FEED_HEALTH_SERVICE`]). `outer` is the shutdown request: once it fired, health is left
/// NOT_SERVING.
pub async fn watch(
    state: Arc<Revocations>,
    jwks: Option<Arc<JwksStore>>,
    metrics: Arc<Metrics>,
    health: tonic_health::server::HealthReporter,
    outer: ShutdownSignal,
    mut stop: ShutdownSignal,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keys_set = jwks.as_deref().map(JwksStore::keys_set);
    let mut serving: Option<bool> = None;
    let mut was_fresh: Option<bool> = None;
    // Unix ms of the last alarm (blind or misconfigured) logged; repeated every minute.
    let mut alarmed_ms: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Why: readiness as soon as the snapshot is in, not at the next tick (issue #15 §2).
            () = state.changed() => {}
            () = keys_changed(keys_set.as_mut()) => {}
            () = stop.wait() => return,
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
        // External issuers' first JWKS fetches gate "can decide" too (bounded by their own
        // startup wait; `jwks_fetch::watch_startup` logs when it runs out).
        let can_decide = state.usable_at(now) && jwks.as_deref().is_none_or(JwksStore::usable);
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
            } else if serving.is_some() && state.fail_closed() {
                tracing::warn!(
                    lag_ms = state.lag_ms(now),
                    "fail-closed and the revocation feed is stale: reporting NOT_SERVING, checks answer UNAVAILABLE"
                );
            }
            report_health(&health, can_decide).await;
            serving = Some(can_decide);
        }
        if was_fresh != Some(fresh) {
            if fresh {
                tracing::info!("revocation feed fresh: {FEED_HEALTH_SERVICE} SERVING");
            } else if was_fresh.is_some() {
                tracing::warn!(
                    lag_ms = state.lag_ms(now),
                    fail_closed = state.fail_closed(),
                    "revocation feed stale: {FEED_HEALTH_SERVICE} NOT_SERVING; revocations made meanwhile are not seen"
                );
            }
            health
                .set_service_status(
                    FEED_HEALTH_SERVICE,
                    if fresh {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    },
                )
                .await;
            was_fresh = Some(fresh);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::server::{HealthReporter, HealthService};

    use super::*;
    use crate::revoked::RevocationSet;
    use crate::shutdown;
    use crate::test_support::health_status as status;

    /// A watcher of `state` (no JWKS), the health service it reports to, and its stop: the
    /// future that shuts it down and waits for it to end.
    fn start_watching(state: &Arc<Revocations>) -> (HealthService, impl Future<Output = ()>) {
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let (trigger, signal) = shutdown::channel();
        let watcher = tokio::spawn(watch(
            Arc::clone(state),
            None,
            Arc::new(Metrics::new()),
            reporter,
            signal.clone(),
            signal,
        ));
        let stop = async move {
            trigger.trigger();
            watcher.await.expect("the watcher ends at the shutdown");
        };
        (service, stop)
    }

    /// Readiness follows the first snapshot at once, not at the watcher's next tick (issue #15
    /// §2: up to 500 ms of a fresh replica's time to SERVING). Time is paused: it only moves
    /// by the sleeps below, so "before the next tick" is exact, not a timing.
    #[tokio::test(start_paused = true)]
    async fn the_first_snapshot_is_reported_serving_before_the_next_tick() {
        let state = Arc::new(
            Revocations::new(Duration::from_secs(30), false, 30)
                .with_startup_wait(Duration::from_secs(600)),
        );
        let (service, stop) = start_watching(&state);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status(&service, "").await, Status::NotServing);
        assert_eq!(
            status(&service, FEED_HEALTH_SERVICE).await,
            Status::NotServing
        );

        // As the feed client does when the snapshot is complete; 10 ms later (490 ms before
        // the next tick) both services answer SERVING.
        state.store(RevocationSet::default());
        state.mark_synced();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status(&service, "").await, Status::Serving);
        assert_eq!(status(&service, FEED_HEALTH_SERVICE).await, Status::Serving);

        stop.await;
    }

    /// A configuration error (401/403/404 from the feed) takes "can decide" away from a replica
    /// without a snapshot: reported at once, not at the next tick (paused time, as above).
    #[tokio::test(start_paused = true)]
    async fn a_feed_configuration_error_is_reported_not_serving_before_the_next_tick() {
        // Fail-open with no startup wait: deciding (blind) from the first tick.
        let state = Arc::new(
            Revocations::new(Duration::from_secs(30), false, 30).with_startup_wait(Duration::ZERO),
        );
        let (service, stop) = start_watching(&state);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status(&service, "").await, Status::Serving);

        state.set_misconfigured(Some(401));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status(&service, "").await, Status::NotServing);

        stop.await;
    }
}
