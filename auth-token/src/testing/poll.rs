//! Readiness polling with a deadline, the one loop every suite uses instead of fixed sleeps:
//! unit and integration tests (async, on tokio) and the e2e harness (blocking threads).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is re-checked: short next to every deadline in the suites, long
/// enough that polling a process over HTTP is not load of its own.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// Calls `f` until it returns `Some` (that value) or `deadline` has passed since the first call
/// (`None`). `f` runs at least once, and its last call is at or after the deadline.
pub fn wait_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(INTERVAL);
    }
}

/// [`wait_until`] for a condition: true once `ready` held, false when it never did.
pub fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    wait_until(deadline, || ready().then_some(())).is_some()
}

/// The async [`wait_until`]: sleeps on tokio's timer between calls.
pub async fn poll<T, F, Fut>(deadline: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// [`poll`] that panics with `what` when the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(deadline, f)
        .await
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_and_gives_up_after_the_deadline() {
        let mut calls = 0;
        assert_eq!(
            wait_until(Duration::from_secs(5), || {
                calls += 1;
                (calls == 3).then_some(calls)
            }),
            Some(3)
        );
        let mut calls = 0;
        assert!(!wait_for(Duration::ZERO, || {
            calls += 1;
            false
        }));
        // A zero deadline has passed by the first answer: one call.
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn async_poll_returns_the_value_or_none() {
        let mut calls = 0;
        let got = poll(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 2).then_some(n) }
        })
        .await;
        assert_eq!(got, Some(2));
        assert_eq!(poll(Duration::ZERO, || async { None::<()> }).await, None);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn eventually_names_what_it_waited_for() {
        eventually("the impossible", Duration::ZERO, || async { None::<()> }).await;
    }
}
