//! Lockout under concurrency: a burst of guesses sent at once, all of which pass the lock check
//! before any of them has failed, must not all be evaluated. Found by the e2e brute-force suite
//! (`e2e/tests/e2e/attacks.rs`): before the fix, every request of a burst that had read the row
//! while it was unlocked was answered from its password check after the lock was set — a 401
//! for a wrong guess, a token for the right one — so a concurrent attacker got unbounded guesses
//! per lock window and a correct guess during a lock logged in (and cleared the lock).

use crate::helpers::{TestDb, db_test, spawn_app_with};

async fn burst_of_guesses_is_bounded_by_the_lock(db: TestDb) {
    // Account-wide threshold 10 (30 addresses: the per-address threshold never trips), two
    // hashes at a time: the lock is written while most of the burst waits for the hasher. An
    // e-mail without an account gets exactly the same.
    let app = spawn_app_with(db, |s| s.hash_concurrency = 2).await;
    app.add_user("burst@example.com", "right", false).await;
    let threshold = app.state.settings.lockout.account.threshold as usize;
    for email in ["burst@example.com", "nobody@example.com"] {
        burst(&app, email, threshold).await;
    }
    // And the account is locked: the right password is refused.
    let r = app
        .login("burst@example.com", "right", "198.51.100.200")
        .await;
    assert_eq!(r.status(), 429);
}
db_test!(burst_of_guesses_is_bounded_by_the_lock);

async fn burst(app: &crate::helpers::TestApp, email: &str, threshold: usize) {
    let burst = 30;
    let requests = (0..burst)
        .map(|i| {
            app.client
                .post(app.url("/login"))
                .header(
                    "authorization",
                    crate::helpers::basic(format!("{email}:wrong-{i}").as_bytes()),
                )
                .header("x-envoy-external-address", format!("198.51.100.{}", i + 1))
        })
        .collect();
    let statuses = crate::helpers::concurrent_statuses(requests).await;
    let evaluated = statuses.get(&401).copied().unwrap_or(0);
    assert_eq!(
        evaluated + statuses.get(&429).copied().unwrap_or(0),
        burst,
        "{statuses:?}"
    );
    // Exactly the threshold: counting a failure and checking the lock are one atomic step
    // (`lockout::record_failure`), so guesses still being hashed when the lock was written find
    // it.
    assert_eq!(
        evaluated, threshold,
        "{email}: {evaluated} of {burst} concurrent guesses were answered from the password \
         check: {statuses:?}"
    );
}
