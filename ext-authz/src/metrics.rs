//! Prometheus metrics, served as OpenMetrics text on `--metrics-addr` `/metrics`.
//!
//! Names (all prefixed `ext_authz_`):
//! - `ext_authz_checks_total{decision,reason}`: decision `allow|deny|dry_run_allow`, reason
//!   `ok|missing_token|insufficient_scope|` + every [`auth_token::VerifyError::reason`] label.
//! - `ext_authz_check_errors_total`: checks answered with a gRPC error (revocations followed but
//!   not usable).
//! - `ext_authz_check_duration_seconds`: histogram of the check handler's latency.
//! - `ext_authz_keys_loaded`: keys in the active keyring.
//! - `ext_authz_key_reloads_total`, `ext_authz_key_reload_failures_total`.
//! - `ext_authz_revocations_known`: entries in the in-memory revocation set.
//! - `ext_authz_revocation_feed_lag_seconds`: time since the feed was last caught up.
//! - `ext_authz_revocation_feed_errors_total`: failed feed requests.
//! - `ext_authz_revocation_feed_fresh`: 1 while a snapshot is loaded and the feed answered
//!   within `--revocation-grace` (the feed health service's SERVING), else 0.
//! - `ext_authz_revocation_deciding_without_snapshot`: 1 while checks are decided although no
//!   revocation snapshot was ever loaded (fail-open after the startup wait).
//! - `ext_authz_revocation_feed_misconfigured`: 1 while the feed answers 401, 403 or 404 (wrong
//!   token or URL: waiting does not fix it), else 0.
//! - Per external issuer (`issuer` = its configured name): `ext_authz_jwks_keys_loaded`,
//!   `ext_authz_jwks_last_success_timestamp_seconds` (0 before the first success),
//!   `ext_authz_jwks_refreshes_total`, `ext_authz_jwks_refresh_failures_total` (the last good
//!   keys stay in use) and `ext_authz_jwks_unknown_kid_refreshes_total` (early refreshes a
//!   token with an unknown `kid` triggered; at most one per `--jwks-unknown-kid-interval`).
//! - The verified-token cache ([`crate::token_cache`]): `ext_authz_token_cache_hits_total`,
//!   `ext_authz_token_cache_misses_total` (absent or stale), `ext_authz_token_cache_evictions_total`,
//!   `ext_authz_token_cache_bytes` (estimated) and `ext_authz_token_cache_entries`; read from the
//!   cache's own atomics at scrape time, so a check pays one atomic add for them.
//!
//! Hot path: every `(decision, reason)` counter is created at startup and indexed by
//! [`Reason::index`] (`allow` has the one reason [`ALLOW_LABEL`]), and the latency histogram is a fixed array of atomics; recording a check
//! takes no lock and allocates nothing.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::check::{ALLOW_LABEL, Decision, Reason};
use crate::token_cache::CacheStats;

/// Labels of `ext_authz_checks_total`; static strings so no label is built per check.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
}

/// The label of the per-issuer JWKS metrics: the issuer's configured name (bounded by
/// `issuers::MAX_ISSUERS`; never a value from a token).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

/// The denying decision kinds, in counter-table order after the one `allow` counter.
const DENYING: [&str; 2] = ["deny", "dry_run_allow"];

/// All metrics of the service; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `allow/ok`, then `DENYING.len() * Reason::COUNT` handles.
    checks: Vec<Counter>,
    check_errors: Counter,
    latency: LatencyHistogram,
    keys_loaded: Gauge,
    key_reloads: Counter,
    key_reload_failures: Counter,
    revocations_known: Gauge,
    feed_lag: Gauge<f64, AtomicU64>,
    feed_errors: Counter,
    feed_fresh: Gauge,
    deciding_without_snapshot: Gauge,
    feed_misconfigured: Gauge,
    jwks_keys: Family<IssuerLabel, Gauge>,
    jwks_last_success: Family<IssuerLabel, Gauge>,
    jwks_refreshes: Family<IssuerLabel, Counter>,
    jwks_failures: Family<IssuerLabel, Counter>,
    jwks_unknown_kid: Family<IssuerLabel, Counter>,
    token_cache: Arc<CacheStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric and pre-creates every meaningful `(decision, reason)` series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ext_authz");
        let family = Family::<CheckLabels, Counter>::default();
        let mut checks = Vec::with_capacity(1 + DENYING.len() * Reason::COUNT);
        checks.push(
            family
                .get_or_create(&CheckLabels {
                    decision: "allow",
                    reason: ALLOW_LABEL,
                })
                .clone(),
        );
        for decision in DENYING {
            for reason in Reason::all() {
                checks.push(
                    family
                        .get_or_create(&CheckLabels {
                            decision,
                            reason: reason.label(),
                        })
                        .clone(),
                );
            }
        }
        registry.register(
            "checks",
            "Authorization checks by decision and reason",
            family,
        );
        let check_errors = Counter::default();
        registry.register(
            "check_errors",
            "Checks answered with a gRPC error because no decision was possible",
            check_errors.clone(),
        );
        let latency = LatencyHistogram::default();
        registry.register(
            "check_duration_seconds",
            "Time spent handling a check",
            latency.clone(),
        );
        let keys_loaded = Gauge::default();
        registry.register(
            "keys_loaded",
            "Keys in the active keyring",
            keys_loaded.clone(),
        );
        let key_reloads = Counter::default();
        registry.register(
            "key_reloads",
            "Keyring reloads that changed the active keys",
            key_reloads.clone(),
        );
        let key_reload_failures = Counter::default();
        registry.register(
            "key_reload_failures",
            "Keyring reloads that failed (the previous keys stay active)",
            key_reload_failures.clone(),
        );
        let revocations_known = Gauge::default();
        registry.register(
            "revocations_known",
            "Entries in the in-memory revocation set (tokens and user-wide cuts)",
            revocations_known.clone(),
        );
        let feed_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "revocation_feed_lag_seconds",
            "Seconds since the last successful revocation feed response (since the start before the first)",
            feed_lag.clone(),
        );
        let feed_errors = Counter::default();
        registry.register(
            "revocation_feed_errors",
            "Revocation feed requests that failed",
            feed_errors.clone(),
        );
        let feed_fresh = Gauge::default();
        registry.register(
            "revocation_feed_fresh",
            "1 while a revocation snapshot is loaded and the feed answered within the grace, else 0",
            feed_fresh.clone(),
        );
        let deciding_without_snapshot = Gauge::default();
        registry.register(
            "revocation_deciding_without_snapshot",
            "1 while checks are decided although no revocation snapshot was ever loaded (revoked tokens pass)",
            deciding_without_snapshot.clone(),
        );
        let feed_misconfigured = Gauge::default();
        registry.register(
            "revocation_feed_misconfigured",
            "1 while the revocation feed answers 401, 403 or 404 (wrong token or URL), else 0",
            feed_misconfigured.clone(),
        );
        let jwks_keys = Family::<IssuerLabel, Gauge>::default();
        registry.register(
            "jwks_keys_loaded",
            "Verifying keys from the issuer's last good JWKS",
            jwks_keys.clone(),
        );
        let jwks_last_success = Family::<IssuerLabel, Gauge>::default();
        registry.register(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the issuer's last successful JWKS fetch (0: never)",
            jwks_last_success.clone(),
        );
        let jwks_refreshes = Family::<IssuerLabel, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Successful JWKS fetches (discovery + keys) per issuer",
            jwks_refreshes.clone(),
        );
        let jwks_failures = Family::<IssuerLabel, Counter>::default();
        registry.register(
            "jwks_refresh_failures",
            "Failed JWKS fetches per issuer (the last good keys stay in use)",
            jwks_failures.clone(),
        );
        let jwks_unknown_kid = Family::<IssuerLabel, Counter>::default();
        registry.register(
            "jwks_unknown_kid_refreshes",
            "Early JWKS fetches triggered by a token with an unknown kid (throttled per issuer)",
            jwks_unknown_kid.clone(),
        );
        let token_cache = Arc::new(CacheStats::default());
        for (name, help, kind, read) in CACHE_STATS {
            registry.register(
                name,
                help,
                CacheStat {
                    stats: Arc::clone(&token_cache),
                    kind,
                    read,
                },
            );
        }
        Self {
            token_cache,
            jwks_keys,
            jwks_last_success,
            jwks_refreshes,
            jwks_failures,
            jwks_unknown_kid,
            registry,
            feed_fresh,
            feed_misconfigured,
            deciding_without_snapshot,
            revocations_known,
            feed_lag,
            feed_errors,
            checks,
            check_errors,
            latency,
            keys_loaded,
            key_reloads,
            key_reload_failures,
        }
    }

    /// Counts one decision and its latency. Lock-free, allocation-free.
    pub fn record_check(&self, decision: &Decision, elapsed: Duration) {
        let slot = match decision {
            Decision::Allow { .. } => 0,
            Decision::Deny(d) => 1 + d.reason.index(),
            Decision::DryRunAllow { denial, .. } => 1 + Reason::COUNT + denial.reason.index(),
        };
        self.checks[slot].inc();
        self.latency.observe(elapsed);
    }

    /// Counts a check that could not be decided (answered with a gRPC error).
    pub fn record_check_error(&self, elapsed: Duration) {
        self.check_errors.inc();
        self.latency.observe(elapsed);
    }

    /// Sets the number of keys in the active keyring.
    pub fn set_keys_loaded(&self, n: usize) {
        self.keys_loaded.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a reload that swapped in a new keyring.
    pub fn record_reload(&self) {
        self.key_reloads.inc();
    }

    /// Counts a reload that failed.
    pub fn record_reload_failure(&self) {
        self.key_reload_failures.inc();
    }

    /// Sets the number of entries in the revocation set.
    pub fn set_revocations_known(&self, n: usize) {
        self.revocations_known
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the time since the feed was last caught up.
    pub fn set_feed_lag(&self, lag: Duration) {
        self.feed_lag.set(lag.as_secs_f64());
    }

    /// Sets whether the revocation data is fresh.
    pub fn set_feed_fresh(&self, fresh: bool) {
        self.feed_fresh.set(i64::from(fresh));
    }

    /// Sets whether checks are decided without any revocation snapshot.
    pub fn set_deciding_without_snapshot(&self, blind: bool) {
        self.deciding_without_snapshot.set(i64::from(blind));
    }

    /// Sets whether the feed refuses this replica (401/403/404).
    pub fn set_feed_misconfigured(&self, misconfigured: bool) {
        self.feed_misconfigured.set(i64::from(misconfigured));
    }

    /// Counts a failed feed request.
    pub fn record_feed_error(&self) {
        self.feed_errors.inc();
    }

    /// Creates the series of issuer `name` (so they exist, at 0, before its first fetch).
    pub fn register_issuer(&self, name: &str) {
        let label = IssuerLabel {
            issuer: name.to_owned(),
        };
        drop(self.jwks_keys.get_or_create(&label));
        drop(self.jwks_last_success.get_or_create(&label));
        drop(self.jwks_refreshes.get_or_create(&label));
        drop(self.jwks_failures.get_or_create(&label));
        drop(self.jwks_unknown_kid.get_or_create(&label));
    }

    /// A successful JWKS fetch of issuer `name`: `keys` loaded, at Unix second `now`.
    pub fn record_jwks_success(&self, name: &str, keys: usize, now: u64) {
        let label = IssuerLabel {
            issuer: name.to_owned(),
        };
        self.jwks_keys
            .get_or_create(&label)
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.jwks_last_success
            .get_or_create(&label)
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        self.jwks_refreshes.get_or_create(&label).inc();
    }

    /// A failed JWKS fetch of issuer `name`.
    pub fn record_jwks_failure(&self, name: &str) {
        self.jwks_failures
            .get_or_create(&IssuerLabel {
                issuer: name.to_owned(),
            })
            .inc();
    }

    /// An early fetch of issuer `name` granted to a token with an unknown kid.
    pub fn record_jwks_unknown_kid(&self, name: &str) {
        self.jwks_unknown_kid
            .get_or_create(&IssuerLabel {
                issuer: name.to_owned(),
            })
            .inc();
    }

    /// The counters the token cache writes (the cache is built with them, so its metrics exist,
    /// at 0, even when it is disabled).
    pub fn token_cache_stats(&self) -> Arc<CacheStats> {
        Arc::clone(&self.token_cache)
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The token cache's series: name, help, type, and how to read the value.
type CacheRead = fn(&CacheStats) -> u64;
const CACHE_STATS: [(&str, &str, MetricType, CacheRead); 5] = [
    (
        "token_cache_hits",
        "Checks whose token was answered from the verified-token cache",
        MetricType::Counter,
        |s| s.hits.load(Ordering::Relaxed),
    ),
    (
        "token_cache_misses",
        "Cache lookups that found no usable entry (absent, or its key changed) and verified in full",
        MetricType::Counter,
        |s| s.misses.load(Ordering::Relaxed),
    ),
    (
        "token_cache_evictions",
        "Entries evicted to keep the token cache within --token-cache-bytes",
        MetricType::Counter,
        |s| s.evictions.load(Ordering::Relaxed),
    ),
    (
        "token_cache_bytes",
        "Estimated bytes held by the token cache",
        MetricType::Gauge,
        |s| s.bytes.load(Ordering::Relaxed),
    ),
    (
        "token_cache_entries",
        "Tokens held by the token cache",
        MetricType::Gauge,
        |s| s.entries.load(Ordering::Relaxed),
    ),
];

/// One token-cache series, read from [`CacheStats`] when scraped (nothing to update per check).
#[derive(Debug)]
struct CacheStat {
    stats: Arc<CacheStats>,
    kind: MetricType,
    read: CacheRead,
}

impl EncodeMetric for CacheStat {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        let value = (self.read)(&self.stats);
        match self.kind {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&value, None),
            _ => encoder.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX)),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// Upper bounds (seconds) of the latency buckets: 5 µs … 100 ms.
const BUCKETS: [f64; 14] = [
    5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3,
    100e-3,
];

/// A histogram of atomics (prometheus-client's own takes a lock per observation).
#[derive(Clone, Default)]
struct LatencyHistogram {
    inner: std::sync::Arc<HistogramInner>,
}

#[derive(Default)]
struct HistogramInner {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.inner.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.inner.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        let mut buckets = [(0.0, 0); BUCKETS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            // prometheus-client renders f64::MAX as `+Inf`, like its own histogram.
            let bound = BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            *slot = (bound, self.inner.buckets[i].load(Ordering::Relaxed));
        }
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let count = self.inner.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Denial, DenyStatus};
    use crate::test_support::claims_with_roles;

    #[test]
    fn exposition_has_every_series_and_counts() {
        let m = Metrics::new();
        m.set_keys_loaded(2);
        m.record_reload();
        m.record_reload_failure();
        let claims = claims_with_roles(&[]);
        m.record_check(
            &Decision::Allow {
                claims: Arc::new(claims),
                kid: None,
            },
            Duration::from_micros(7),
        );
        let denial = Denial {
            status: DenyStatus::Unauthorized,
            reason: Reason::MissingToken,
            www_authenticate: String::new(),
            body: String::new(),
        };
        m.record_check(&Decision::Deny(denial.clone()), Duration::from_millis(3));
        m.record_check(
            &Decision::DryRunAllow {
                claims: None,
                kid: None,
                denial,
            },
            Duration::from_secs(1),
        );
        m.record_check_error(Duration::from_micros(1));
        // The token cache's series read its counters when scraped.
        let stats = m.token_cache_stats();
        stats.hits.store(3, Ordering::Relaxed);
        stats.bytes.store(2048, Ordering::Relaxed);
        let text = m.encode();
        for line in [
            r#"ext_authz_checks_total{decision="allow",reason="ok"} 1"#,
            r#"ext_authz_checks_total{decision="deny",reason="missing_token"} 1"#,
            r#"ext_authz_checks_total{decision="dry_run_allow",reason="missing_token"} 1"#,
            r#"ext_authz_checks_total{decision="deny",reason="expired"} 0"#,
            r#"ext_authz_check_errors_total 1"#,
            r#"ext_authz_keys_loaded 2"#,
            r#"ext_authz_key_reloads_total 1"#,
            r#"ext_authz_key_reload_failures_total 1"#,
            r#"ext_authz_revocation_feed_fresh 0"#,
            r#"ext_authz_revocation_deciding_without_snapshot 0"#,
            r#"ext_authz_revocation_feed_misconfigured 0"#,
            r#"ext_authz_check_duration_seconds_count 4"#,
            r#"ext_authz_check_duration_seconds_bucket{le="0.00001"} 2"#,
            r#"ext_authz_check_duration_seconds_bucket{le="+Inf"} 4"#,
            r#"ext_authz_token_cache_hits_total 3"#,
            r#"ext_authz_token_cache_misses_total 0"#,
            r#"ext_authz_token_cache_evictions_total 0"#,
            r#"ext_authz_token_cache_bytes 2048"#,
            r#"ext_authz_token_cache_entries 0"#,
            "# TYPE ext_authz_token_cache_hits counter",
            "# TYPE ext_authz_token_cache_bytes gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Impossible pairs are not exported.
        assert!(!text.contains(r#"decision="allow",reason="expired""#));
        assert!(!text.contains(r#"decision="deny",reason="ok""#));
    }
}
