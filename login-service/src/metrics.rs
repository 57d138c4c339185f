//! Prometheus metrics served at `/metrics`: logins and refresh-token grants by outcome, their
//! latency, pool state, the hashing queue (a login shed by its bound is
//! `login_attempts_total{outcome="overloaded"}`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of `login_attempts_total`.
type OutcomeLabels = Vec<(&'static str, &'static str)>;

/// The service's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    logins: Family<OutcomeLabels, Counter>,
    latency: Histogram,
    pool_connections: Gauge,
    pool_idle: Gauge,
    in_flight: Gauge,
    grants: Family<OutcomeLabels, Counter>,
    grant_latency: Histogram,
    hash_waiting: Gauge,
    hash_verify: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers all metrics under the `login` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("login");
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "attempts",
            "POST /login requests by outcome (success, invalid_credentials, account_locked, ...)",
            logins.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "duration_seconds",
            "Time to answer POST /login",
            latency.clone(),
        );
        let pool_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_connections.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            pool_idle.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "POST /login decisions running (waiting for the database or a hashing permit, or hashing), also those whose client has gone",
            in_flight.clone(),
        );
        let grants = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_requests",
            "POST /token requests by outcome (issued, reuse_detected, invalid_grant, invalid_request, ...)",
            grants.clone(),
        );
        // Why other buckets than /login's: a rotation is a few database round trips, no hash.
        let grant_latency = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        registry.register(
            "token_duration_seconds",
            "Time to answer POST /token",
            grant_latency.clone(),
        );
        let hash_waiting = Gauge::default();
        registry.register(
            "hash_waiting",
            "Logins waiting for a password-hashing permit (bounded by LOGIN_MAX_QUEUE_WAIT)",
            hash_waiting.clone(),
        );
        let hash_verify = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "hash_verify_seconds",
            "Moving average of one password verification: the unit of the hashing queue bound",
            hash_verify.clone(),
        );
        Self {
            hash_waiting,
            hash_verify,
            registry,
            logins,
            latency,
            pool_connections,
            pool_idle,
            in_flight,
            grants,
            grant_latency,
        }
    }

    /// Counts one login in `login_in_flight` until the returned guard is dropped (when its
    /// decision ends, also after the client has gone), so a drain or a queue behind the hashing
    /// permits is visible.
    pub fn login_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records one answered login.
    pub fn observe_login(&self, outcome: &'static str, elapsed: Duration) {
        self.logins.get_or_create(&vec![("outcome", outcome)]).inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records one answered `POST /token`; `outcome` is one of a fixed set of labels
    /// (`issued`, `reuse_detected`, or an [`crate::error::ApiError`] code), never client text.
    pub fn observe_grant(&self, outcome: &'static str, elapsed: Duration) {
        self.grants.get_or_create(&vec![("outcome", outcome)]).inc();
        self.grant_latency.observe(elapsed.as_secs_f64());
    }

    /// Sets the hashing-queue gauges: requests waiting for a permit, the average verification.
    pub fn observe_hasher(&self, waiting: usize, verify: Duration) {
        self.hash_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.hash_verify.set(verify.as_secs_f64());
    }

    /// Text exposition, after setting the pool gauges to `(connections, idle)`.
    pub fn render(&self, pool: (u32, u32)) -> String {
        self.pool_connections.set(i64::from(pool.0));
        self.pool_idle.set(i64::from(pool.1));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One login counted in `login_in_flight`; decrements it when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = Metrics::new();
        m.observe_login("success", Duration::from_millis(20));
        let text = m.render((3, 1));
        assert!(
            text.contains("login_attempts_total{outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("login_db_pool_connections 3"), "{text}");
        assert!(text.contains("login_duration_seconds_bucket"), "{text}");
        assert!(text.contains("login_in_flight 0"), "{text}");
        m.observe_hasher(3, Duration::from_millis(25));
        let text = m.render((0, 0));
        assert!(text.contains("login_hash_waiting 3"), "{text}");
        assert!(text.contains("login_hash_verify_seconds 0.025"), "{text}");
        let guard = m.login_started();
        assert!(m.render((0, 0)).contains("login_in_flight 1"));
        drop(guard);
        assert!(m.render((0, 0)).contains("login_in_flight 0"));
        m.observe_grant("reuse_detected", Duration::from_millis(3));
        let text = m.render((0, 0));
        assert!(
            text.contains("login_token_requests_total{outcome=\"reuse_detected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("login_token_duration_seconds_bucket{le=\"0.004\"} 1"),
            "{text}"
        );
        // A refresh is not a login: the login series did not move.
        assert!(
            text.contains("login_attempts_total{outcome=\"success\"} 1"),
            "{text}"
        );
    }
}
