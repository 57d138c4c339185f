//! When to fetch a JWKS again, as pure functions over durations and instants passed in: the
//! `Cache-Control: max-age` rule and the unknown-kid throttle. No clock, no I/O (the refresh
//! task in `jwks_fetch` asks these and sleeps).

use std::time::Duration;

/// The refresh bounds (`--jwks-refresh-min`, `--jwks-refresh-max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBounds {
    /// Never refresh more often than this, whatever the issuer asks (`max-age=0`, `no-store`).
    pub min: Duration,
    /// Never keep keys longer than this without asking again (no header, a huge `max-age`).
    pub max: Duration,
}

/// Seconds of `max-age` in a `Cache-Control` header value, when present and well formed.
/// `no-cache`/`no-store` read as 0 (refresh as soon as the bounds allow).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // RFC 9111 §1.2.2: delta-seconds is digits; an overflow is "a very long time".
            let value = value.trim().trim_matches('"');
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            found = Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
        }
    }
    found
}

/// How long to wait before the next scheduled refresh after a successful fetch whose response
/// carried `cache_control`: its `max-age` clamped to `bounds`, or `bounds.max` without one.
pub fn next_refresh(cache_control: Option<&str>, bounds: RefreshBounds) -> Duration {
    cache_control
        .and_then(max_age)
        .unwrap_or(bounds.max)
        .clamp(bounds.min, bounds.max)
}

/// After a failed fetch: retry sooner than the schedule, doubling from `bounds.min` with each
/// consecutive failure (`failures` ≥ 1), capped at `bounds.max`.
pub fn retry_after(failures: u32, bounds: RefreshBounds) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    bounds.min.saturating_mul(factor).min(bounds.max)
}

/// At most one unknown-kid refresh per issuer per `interval` (`--jwks-unknown-kid-interval`):
/// garbage kids cannot turn into a fetch storm. One per issuer: its size is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidThrottle {
    interval: Duration,
    /// When the last refresh was granted (time since an arbitrary origin), if ever.
    last: Option<Duration>,
}

impl KidThrottle {
    /// A throttle granting one refresh per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Asks for a refresh at `now` (time since the same origin as every call): true, and the
    /// window restarts, when none was granted in the last `interval`.
    pub fn grant(&mut self, now: Duration) -> bool {
        match self.last {
            Some(last) if now.saturating_sub(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: RefreshBounds = RefreshBounds {
        min: Duration::from_secs(30),
        max: Duration::from_secs(3600),
    };

    #[test]
    fn cache_control_max_age_is_clamped() {
        let s = Duration::from_secs;
        assert_eq!(max_age("public, max-age=600"), Some(s(600)));
        assert_eq!(max_age("MAX-AGE = 5 , must-revalidate"), Some(s(5)));
        assert_eq!(max_age("max-age=\"7\""), Some(s(7)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("max-age=-1"), None);
        assert_eq!(max_age("max-age=1e3"), None);
        assert_eq!(max_age("public"), None);
        assert_eq!(
            max_age("max-age=99999999999999999999999"),
            Some(s(u64::MAX))
        );

        assert_eq!(next_refresh(Some("max-age=600"), B), s(600));
        assert_eq!(next_refresh(Some("max-age=1"), B), B.min);
        assert_eq!(next_refresh(Some("no-cache"), B), B.min);
        assert_eq!(next_refresh(Some("max-age=86400"), B), B.max);
        assert_eq!(next_refresh(Some("private"), B), B.max);
        assert_eq!(next_refresh(None, B), B.max);
    }

    #[test]
    fn failures_back_off_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(retry_after(1, B), s(30));
        assert_eq!(retry_after(2, B), s(60));
        assert_eq!(retry_after(3, B), s(120));
        assert_eq!(retry_after(10, B), B.max);
        assert_eq!(retry_after(u32::MAX, B), B.max);
    }

    #[test]
    fn unknown_kid_refreshes_once_per_interval() {
        let s = Duration::from_secs;
        let mut t = KidThrottle::new(s(10));
        assert!(t.grant(s(100)));
        assert!(!t.grant(s(100)));
        assert!(!t.grant(s(109)));
        assert!(t.grant(s(110)));
        assert!(!t.grant(s(111)));
        // A clock that went backwards grants nothing early.
        assert!(!t.grant(s(50)));
    }
}
