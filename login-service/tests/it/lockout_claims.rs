//! The lockout promises of login-service/README.md ("Lockout policy") that no other test pins
//! (issue #20): `LOCKOUT_RESET_AFTER` forgets quiet counters on every key, a successful login
//! never clears the address counter, and the real CLI's `user passwd` ends the account-wide lock.

use std::time::Duration;

use diesel::prelude::*;
use login_service::lockout::{self, Counter};
use login_service::schema::login_throttle;

use crate::helpers::{
    TestApp, TestDb, account_locked, answer, db_test, invalid, keys, rate_limited, run_cli,
    run_cli_ok, spawn_app_with,
};

/// Dates the last failure of every counter `ago` back (what waiting that long would do).
async fn age_all_counters(app: &TestApp, ago: Duration) {
    let at = lockout::now_ms() - i64::try_from(ago.as_millis()).unwrap();
    app.state
        .db
        .run(move |c| {
            diesel::update(login_throttle::table)
                .set(login_throttle::last_failure.eq(at))
                .execute(c)
        })
        .await
        .unwrap();
}

/// `LOCKOUT_RESET_AFTER` (README: "failures are forgotten after this long without a new one
/// (accounts, e-mails, addresses)"): with a 10-minute window, failures 9m50s old still count and
/// lock on the threshold, failures 10m01s old start over from one — on all three keys.
async fn quiet_counters_start_over_after_reset_after(db: TestDb) {
    let window = Duration::from_secs(600);
    let app = spawn_app_with(db, |s| {
        s.lockout.account.reset_after = window;
        s.lockout.account_source.reset_after = window;
        s.lockout.source.threshold = 3;
        s.lockout.source.reset_after = window;
    })
    .await;
    app.add_user("quiet@example.com", "right", false).await;
    let ip = "203.0.113.60";
    let k = keys("quiet@example.com", ip);
    let failures = |c: Option<Counter>| c.map(|c| c.failures);

    // Two failures (threshold 3 per e-mail + address and per address), then a quiet period just
    // short of the window: the third failure still counts and locks.
    for _ in 0..2 {
        let r = app.login("quiet@example.com", "wrong", ip).await;
        assert_eq!(answer(r).await, invalid());
    }
    age_all_counters(&app, window - Duration::from_secs(10)).await;
    let r = app.login("quiet@example.com", "wrong", ip).await;
    assert_eq!(answer(r).await, invalid());
    for key in [&k.account, &k.account_source, &k.source] {
        assert_eq!(failures(app.counter(key).await), Some(3));
    }
    let r = app.login("quiet@example.com", "right", ip).await;
    assert_eq!(answer(r).await, rate_limited(60));

    // Once the lock has run out and the counters have been quiet for longer than the window,
    // the next failure is the first again on every key: no lock, and two more are allowed.
    app.state
        .db
        .run(|c| {
            diesel::update(login_throttle::table)
                .set(login_throttle::locked_until.eq(Some(lockout::now_ms() - 1)))
                .execute(c)
        })
        .await
        .unwrap();
    age_all_counters(&app, window + Duration::from_secs(1)).await;
    let r = app.login("quiet@example.com", "wrong", ip).await;
    assert_eq!(answer(r).await, invalid());
    for key in [&k.account, &k.account_source, &k.source] {
        let c = app.counter(key).await.unwrap();
        assert_eq!((c.failures, c.locked_until), (1, None), "{key}");
    }
    let r = app.login("quiet@example.com", "wrong", ip).await;
    assert_eq!(answer(r).await, invalid());
    let r = app.login("quiet@example.com", "right", ip).await;
    assert_eq!(r.status(), 200);
}
db_test!(quiet_counters_start_over_after_reset_after);

/// README: "a successful login clears the e-mail and e-mail + address counters (never the
/// address counter, or one valid account would let an attacker reset it between guesses)".
async fn success_never_clears_the_address_counter(db: TestDb) {
    let app = spawn_app_with(db, |s| s.lockout.source.threshold = 4).await;
    app.add_user("valid@example.com", "right", false).await;
    let ip = "198.51.100.61";
    // Three failures from one address: two probes of other e-mails, one wrong guess for the
    // attacker's own valid account.
    for email in [
        "probe1@example.com",
        "probe2@example.com",
        "valid@example.com",
    ] {
        let r = app.login(email, "wrong", ip).await;
        assert_eq!(answer(r).await, invalid(), "{email}");
    }
    let k = keys("valid@example.com", ip);
    assert_eq!(app.counter(&k.account_source).await.unwrap().failures, 1);
    // The valid account logs in from there: its e-mail counters are cleared…
    let r = app.login("valid@example.com", "right", ip).await;
    assert_eq!(r.status(), 200);
    for key in [&k.account, &k.account_source] {
        let c = app.counter(key).await.unwrap();
        assert_eq!((c.failures, c.locked_until), (0, None));
    }
    // …the address counter is not.
    let src = app.counter(&k.source).await.unwrap();
    assert_eq!((src.failures, src.locked_until), (3, None));
    // So the fourth failure from that address locks it (not the first of a fresh count), and
    // then even the valid account's right password is refused from there.
    let r = app.login("probe3@example.com", "wrong", ip).await;
    assert_eq!(answer(r).await, invalid());
    assert_eq!(app.counter(&k.source).await.unwrap().failures, 4);
    let r = app.login("probe4@example.com", "wrong", ip).await;
    assert_eq!(answer(r).await, rate_limited(60));
    let r = app.login("valid@example.com", "right", ip).await;
    assert_eq!(answer(r).await, rate_limited(60));
}
db_test!(success_never_clears_the_address_counter);

/// README: "`user passwd` clears the account-wide counter", through the real binary: an account
/// locked everywhere (and shown `locked yes` by `user list`) logs in with the new password at
/// once; the per-address counters are left to run out by themselves.
async fn cli_passwd_ends_the_account_wide_lock(db: TestDb) {
    let cli_db = db.alias();
    let app = spawn_app_with(db, |s| s.lockout.account.threshold = 4).await;
    app.add_user("owner@example.com", "old", false).await;
    // Two failures from each of two addresses: under the per-address threshold (3), at the
    // account-wide one (4).
    for ip in ["198.18.7.1", "198.18.7.1", "198.18.7.2", "198.18.7.2"] {
        let r = app.login("owner@example.com", "wrong", ip).await;
        assert_eq!(answer(r).await, invalid(), "{ip}");
    }
    let r = app.login("owner@example.com", "old", "198.18.7.3").await;
    assert_eq!(answer(r).await, account_locked(60));

    let list_row = |out: String| {
        out.lines()
            .find(|l| l.contains("owner@example.com"))
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap()
    };
    let cli_db = tokio::task::spawn_blocking(move || {
        let before = list_row(run_cli_ok(&cli_db, &[], &["user", "list"], None));
        assert_eq!(before[1..], ["owner@example.com", "no", "no", "yes"]);
        let o = run_cli(
            &cli_db,
            &[],
            &["user", "passwd", "owner@example.com", "--password-stdin"],
            Some("new\n"),
        );
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let after = list_row(run_cli_ok(&cli_db, &[], &["user", "list"], None));
        assert_eq!(after[1..], ["owner@example.com", "no", "no", "no"]);
        cli_db
    })
    .await
    .unwrap();
    drop(cli_db);

    let k = keys("owner@example.com", "198.18.7.1");
    assert_eq!(app.counter(&k.account).await, None);
    assert_eq!(app.counter(&k.account_source).await.unwrap().failures, 2);
    let r = app.login("owner@example.com", "old", "198.18.7.3").await;
    assert_eq!(answer(r).await, invalid());
    let r = app.login("owner@example.com", "new", "198.18.7.3").await;
    assert_eq!(r.status(), 200);
}
db_test!(cli_passwd_ends_the_account_wide_lock);
