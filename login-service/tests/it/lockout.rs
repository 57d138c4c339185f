//! Lockout (issue #11, items 7, 8, 4b): counters per e-mail + address, per e-mail and per
//! address, all in the database (shared by replicas), identical for known and unknown e-mails;
//! the client address from Envoy's x-envoy-external-address only behind a trusted proxy; absurd user-ids refused.

use login_service::lockout::{self, Counter};
use serde_json::json;

use crate::helpers::{
    TestApp, TestDb, account_locked, answer, basic, db_test, held_login, invalid, keys, spawn_app,
    spawn_app_with,
};

/// Moves the lock of `key` into the past.
async fn expire(app: &TestApp, key: &str) {
    use diesel::prelude::*;
    use login_service::schema::login_throttle;
    let k = key.to_owned();
    app.state
        .db
        .run(move |c| {
            diesel::update(login_throttle::table.find(k))
                .set(login_throttle::locked_until.eq(Some(lockout::now_ms() - 1)))
                .execute(c)
        })
        .await
        .unwrap();
}

async fn one_address_locks_only_itself_out_and_unknown_emails_answer_alike(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("lock@example.com", "right", false).await;
    // Threshold 3 per e-mail and address (test settings): the same answers, byte for byte, for
    // an account and for an e-mail without one.
    for email in ["lock@example.com", "ghost@example.com"] {
        for _ in 0..3 {
            let r = app.login(email, "wrong", "203.0.113.1").await;
            assert_eq!(answer(r).await, invalid(), "{email}");
        }
        // Locked for this address: 429 whatever the password, Retry-After = the whole base lock
        // (60 s, rounded up from milliseconds for both).
        let r = app.login(email, "right", "203.0.113.1").await;
        assert_eq!(answer(r).await, account_locked(60), "{email}");
        let k = keys(email, "203.0.113.1");
        let c = app.counter(&k.account_source).await.unwrap();
        assert_eq!(c.failures, 3);
        assert_eq!(app.counter(&k.account).await.unwrap().failures, 3);
    }
    // Another address is not locked out: the owner logs in (item 8).
    let r = app.login("lock@example.com", "right", "203.0.113.2").await;
    assert_eq!(r.status(), 200);
    // …which clears the account-wide count, not the locked address's lock.
    let cleared = Counter {
        failures: 0,
        locked_until: None,
        ..app
            .counter(&keys("lock@example.com", "203.0.113.2").account)
            .await
            .unwrap()
    };
    assert_eq!(
        app.counter(&keys("lock@example.com", "203.0.113.2").account)
            .await,
        Some(cleared)
    );
    let r = app.login("lock@example.com", "right", "203.0.113.1").await;
    assert_eq!(r.status(), 429);

    // The lock expires; the next failure from that address locks for twice as long.
    let k = keys("lock@example.com", "203.0.113.1");
    expire(&app, &k.account_source).await;
    let r = app.login("lock@example.com", "wrong", "203.0.113.1").await;
    assert_eq!(answer(r).await, invalid());
    let r = app.login("lock@example.com", "right", "203.0.113.1").await;
    assert_eq!(answer(r).await, account_locked(120));
    // After it expires, a success from there resets it.
    expire(&app, &k.account_source).await;
    let r = app.login("lock@example.com", "right", "203.0.113.1").await;
    assert_eq!(r.status(), 200);
    let c = app.counter(&k.account_source).await.unwrap();
    assert_eq!((c.failures, c.locked_until), (0, None));
}
db_test!(one_address_locks_only_itself_out_and_unknown_emails_answer_alike);

async fn many_addresses_lock_the_account_everywhere_known_or_not(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("wide@example.com", "right", false).await;
    // Threshold 10 per e-mail from all addresses together (test settings); two guesses from
    // each of five addresses stay under the per-address threshold of 3.
    for email in ["wide@example.com", "nobody@example.com"] {
        for i in 0..10 {
            let r = app
                .login(email, "wrong", &format!("198.18.1.{}", i / 2))
                .await;
            assert_eq!(answer(r).await, invalid(), "{email} #{i}");
        }
        let r = app.login(email, "right", "198.18.2.1").await;
        assert_eq!(answer(r).await, account_locked(60), "{email}");
    }
    // `user list` shows the account locked.
    let all = app.state.db.run(login_service::users::list).await.unwrap();
    let now = chrono::Utc::now().naive_utc();
    assert!(
        all.iter()
            .any(|u| u.email == "wide@example.com" && u.locked_at(now))
    );
    // `user passwd` ends the account-wide lock.
    app.set_password("wide@example.com", "fresh").await;
    let r = app.login("wide@example.com", "fresh", "198.18.2.1").await;
    assert_eq!(r.status(), 200);
}
db_test!(many_addresses_lock_the_account_everywhere_known_or_not);

async fn counters_are_shared_between_replicas_known_or_not(db: TestDb) {
    let b_db = db.alias();
    let a = spawn_app(db).await;
    a.add_user("shared@example.com", "right", false).await;
    // Replica B: same database, nothing of its own in memory.
    let b = spawn_app_with(b_db, |s| s.migrate = false).await;
    for email in ["shared@example.com", "unknown@example.com"] {
        for app in [&a, &a, &b] {
            let r = app.login(email, "wrong", "203.0.113.80").await;
            assert_eq!(answer(r).await, invalid(), "{email}");
        }
        // The 4th attempt, on either replica: locked, identically for both e-mails.
        for app in [&b, &a] {
            let r = app.login(email, "right", "203.0.113.80").await;
            assert_eq!(answer(r).await, account_locked(60), "{email}");
        }
    }
}
db_test!(counters_are_shared_between_replicas_known_or_not);

async fn per_address_limit_is_shared_and_trusts_only_the_proxy(db: TestDb) {
    let b_db = db.alias();
    let a = spawn_app_with(db, |s| s.lockout.source.threshold = 4).await;
    let b = spawn_app_with(b_db, |s| {
        s.migrate = false;
        s.lockout.source.threshold = 4;
    })
    .await;
    // Different (unknown) e-mails, same address, both replicas: the address limit trips.
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app
            .login(&format!("probe{i}@example.com"), "x", "198.18.0.1")
            .await;
        assert_eq!(r.status(), 401);
    }
    let rate_limited = json!({"error": "rate_limited", "message": "too many failed logins from this address; retry later"});
    for app in [&a, &b] {
        let r = app.login("probe9@example.com", "x", "198.18.0.1").await;
        assert_eq!(answer(r).await, (429, Some(60), rate_limited.clone()));
    }
    // The address Envoy determined is the client: an X-Forwarded-For naming another address
    // does not help, nor does a list in Envoy's header (not an address Envoy sets: the proxy
    // itself is counted)…
    let r = a
        .client
        .post(a.url("/login"))
        .header("authorization", basic(b"probe9@example.com:x"))
        .header("x-envoy-external-address", "198.18.0.1")
        .header("x-forwarded-for", "198.18.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = a
        .login("probe9@example.com", "x", "198.18.0.2, 198.18.0.1")
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        a.counter(&keys("probe9@example.com", "127.0.0.1").source)
            .await
            .unwrap()
            .failures,
        1
    );
    // …and another address is unaffected.
    let r = a.login("probe9@example.com", "x", "198.18.0.2").await;
    assert_eq!(r.status(), 401);
}
db_test!(per_address_limit_is_shared_and_trusts_only_the_proxy);

async fn direct_clients_cannot_choose_their_address(db: TestDb) {
    // The default: no trusted proxy, so the TCP peer (127.0.0.1) is the client whatever
    // X-Forwarded-For says.
    let app = spawn_app_with(db, |s| {
        s.trusted_proxies.clear();
        s.lockout.source.threshold = 3;
    })
    .await;
    for i in 0..3 {
        let r = app
            .login(&format!("p{i}@example.com"), "x", &format!("198.18.3.{i}"))
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = app.login("p9@example.com", "x", "198.18.3.99").await;
    assert_eq!(r.status(), 429);
    assert_eq!(answer(r).await.2["error"], "rate_limited");
    assert_eq!(
        app.counter(&keys("p0@example.com", "127.0.0.1").source)
            .await
            .unwrap()
            .failures,
        3
    );
}
db_test!(direct_clients_cannot_choose_their_address);

async fn absurd_user_ids_are_refused_before_any_work(db: TestDb) {
    let app = spawn_app(db).await;
    let long = format!("{}@example.com", "a".repeat(256 - 12));
    assert_eq!(long.len(), 256);
    let r = app
        .login_raw(&basic(format!("{long}:pw").as_bytes()), "192.0.2.1")
        .await;
    assert_eq!(
        answer(r).await,
        (
            400,
            None,
            json!({"error": "user_id_too_long", "message": "the user-id (e-mail) is longer than 255 bytes"})
        )
    );
    // No counter was written for it; 255 bytes is still an ordinary (unknown) e-mail.
    assert_eq!(app.counter(&keys(&long, "192.0.2.1").source).await, None);
    let r = app.login(&long[1..], "pw", "192.0.2.1").await;
    assert_eq!(answer(r).await, invalid());
}
db_test!(absurd_user_ids_are_refused_before_any_work);

async fn cleanup_deletes_only_counters_that_decide_nothing(db: TestDb) {
    let app = spawn_app(db).await;
    // Two unknown e-mails from one address: 3 failures lock the first (e-mail + address), one
    // failure leaves the second unlocked.
    for _ in 0..3 {
        app.login("locked@example.com", "x", "192.0.2.40").await;
    }
    app.login("quiet@example.com", "x", "192.0.2.40").await;
    let (locked, quiet) = (
        keys("locked@example.com", "192.0.2.40"),
        keys("quiet@example.com", "192.0.2.40"),
    );
    let horizon = app.state.settings.lockout.longest_reset();
    // Now, nothing is stale.
    let run = |at: i64| {
        let db = app.state.db.clone();
        async move {
            db.run(move |c| lockout::cleanup(c, at, horizon))
                .await
                .unwrap()
        }
    };
    assert_eq!(run(lockout::now_ms() + 1_000).await, 0);
    assert!(app.counter(&quiet.account_source).await.is_some());
    // Past the reset window but with the lock moved far into the future: only the lock stays.
    {
        use diesel::prelude::*;
        use login_service::schema::login_throttle;
        let k = locked.account_source.clone();
        app.state
            .db
            .run(move |c| {
                diesel::update(login_throttle::table.find(k))
                    .set(login_throttle::locked_until.eq(Some(i64::MAX / 2)))
                    .execute(c)
            })
            .await
            .unwrap();
    }
    let later = lockout::now_ms() + i64::try_from(horizon.as_millis()).unwrap() + 1_000;
    // 5 rows: account and account + source for each e-mail, the shared source; all but the
    // locked one go.
    assert_eq!(run(later).await, 4);
    assert!(app.counter(&locked.account_source).await.is_some());
    assert_eq!(app.counter(&quiet.account_source).await, None);
    assert_eq!(app.counter(&quiet.source).await, None);
}
db_test!(cleanup_deletes_only_counters_that_decide_nothing);

/// Review finding A (High): lock your own address, then guess in flight. Guesses for the
/// target that passed the pre-hash check before the address was locked used to be answered
/// 429 `rate_limited` (uncounted) when wrong but 200 with a token when right, because the
/// success write ignored the address lock: unlimited guesses on one account per burst.
/// Deterministic: every login is held after its password check and released in order.
async fn address_lock_written_in_flight_stops_the_right_password_too(db: TestDb) {
    let app = spawn_app_with(db, |s| s.lockout.source.threshold = 4).await;
    app.add_user("target@example.com", "right", false).await;
    let ip = "198.18.7.1";
    // Three junk failures from the attacker's address: one short of its limit.
    for i in 0..3 {
        let r = app.login(&format!("junk{i}@example.com"), "x", ip).await;
        assert_eq!(answer(r).await, invalid());
    }
    // The 4th junk login, then guesses for the target (the right one among wrong ones), all
    // past the pre-check (nothing locked yet) and hashed, held before their counter write.
    let pause = app.pause_logins();
    let junk = held_login(&app, &pause, "junk3@example.com", "x", ip).await;
    let mut guesses = Vec::new();
    for pw in ["wrong1", "right", "wrong2"] {
        guesses.push(held_login(&app, &pause, "target@example.com", pw, ip).await);
    }
    // The junk finishes first and locks the address…
    pause.resume.add_permits(1);
    assert_eq!(junk.await.unwrap(), invalid());
    // …then the target's guesses: the right password gets no token and the very answer the
    // wrong ones get (status, body, Retry-After).
    pause.resume.add_permits(guesses.len());
    let rate_limited = (
        429,
        Some(60),
        json!({"error": "rate_limited", "message": "too many failed logins from this address; retry later"}),
    );
    for (pw, g) in ["wrong1", "right", "wrong2"].into_iter().zip(guesses) {
        assert_eq!(g.await.unwrap(), rate_limited, "{pw}");
    }
    // Nothing cleared or counted on the target's keys: no guess was told apart.
    let k = keys("target@example.com", ip);
    assert_eq!(app.counter(&k.account).await.map_or(0, |c| c.failures), 0);
    assert_eq!(
        app.counter(&k.account_source)
            .await
            .map_or(0, |c| c.failures),
        0
    );
}
db_test!(address_lock_written_in_flight_stops_the_right_password_too);

/// Review finding A, the other key: an account lock written while the right password was being
/// hashed answers it exactly like the wrong guess held beside it.
async fn account_lock_written_in_flight_answers_right_and_wrong_alike(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("acct@example.com", "right", false).await;
    let ip = "198.18.7.3";
    // Two failures: one short of the per e-mail + address threshold (3).
    for _ in 0..2 {
        let r = app.login("acct@example.com", "wrong0", ip).await;
        assert_eq!(answer(r).await, invalid());
    }
    let pause = app.pause_logins();
    let third = held_login(&app, &pause, "acct@example.com", "wrong3", ip).await;
    let right = held_login(&app, &pause, "acct@example.com", "right", ip).await;
    let wrong = held_login(&app, &pause, "acct@example.com", "wrong4", ip).await;
    pause.resume.add_permits(1);
    assert_eq!(third.await.unwrap(), invalid());
    pause.resume.add_permits(2);
    assert_eq!(right.await.unwrap(), account_locked(60));
    assert_eq!(wrong.await.unwrap(), account_locked(60));
    let k = keys("acct@example.com", ip);
    assert_eq!(app.counter(&k.account_source).await.unwrap().failures, 3);
}
db_test!(account_lock_written_in_flight_answers_right_and_wrong_alike);

/// A wrong guess for a new account `email` from `ip`, held after its password check, whose
/// client then hangs up; the server is given the time to see the closed connection (it drops
/// what it was serving on it). The returned pause lets the guess go on.
async fn hung_up_guess(
    app: &TestApp,
    email: &str,
    ip: &str,
) -> std::sync::Arc<login_service::login::LoginPause> {
    app.add_user(email, "right", false).await;
    let pause = app.pause_logins();
    let guess = held_login(app, &pause, email, "wrong", ip).await;
    guess.abort();
    assert!(guess.await.unwrap_err().is_cancelled());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    pause
}

/// Attack review of issue #15 §3 (medium): a client that hung up after its login was admitted
/// dropped the request with it, so the hash ran but the failure was never counted: guesses that
/// disconnect before the answer were free of every lockout counter (and held hashing permits
/// that real logins were shed for). The login now runs to its end whoever waits for it.
async fn a_guess_whose_client_hangs_up_is_counted_all_the_same(db: TestDb) {
    let app = spawn_app(db).await;
    let ip = "198.18.7.9";
    let pause = hung_up_guess(&app, "hangup@example.com", ip).await;
    pause.resume.add_permits(1);
    let k = keys("hangup@example.com", ip);
    let counted = crate::helpers::poll(std::time::Duration::from_secs(10), || async {
        app.counter(&k.account_source)
            .await
            .filter(|c| c.failures == 1)
    })
    .await;
    assert!(counted.is_some(), "the hung-up guess was not counted");
    assert_eq!(app.counter(&k.account).await.map(|c| c.failures), Some(1));
    assert_eq!(app.counter(&k.source).await.map(|c| c.failures), Some(1));
}
db_test!(a_guess_whose_client_hangs_up_is_counted_all_the_same);

/// The same hang-up when the process is told to stop: `serve` waits for the login the client
/// left (within the drain time), so a SIGTERM between the hang-up and the counter write does
/// not lose the failure.
async fn shutdown_waits_for_a_guess_whose_client_hung_up(db: TestDb) {
    let mut app = spawn_app_with(db, |s| {
        s.shutdown_timeout = std::time::Duration::from_secs(20);
    })
    .await;
    let ip = "198.18.7.10";
    let pause = hung_up_guess(&app, "sigterm@example.com", ip).await;
    app.stop();
    // No connection is left open, yet the server waits for the held login.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !app.serving.is_finished(),
        "serve returned while a login was still running"
    );
    pause.resume.add_permits(1);
    let ended = crate::helpers::poll(std::time::Duration::from_secs(10), || {
        std::future::ready(app.serving.is_finished().then_some(()))
    })
    .await;
    assert!(ended.is_some(), "serve did not return once the login ended");
    let k = keys("sigterm@example.com", ip);
    assert_eq!(
        app.counter(&k.account_source).await.map(|c| c.failures),
        Some(1)
    );
}
db_test!(shutdown_waits_for_a_guess_whose_client_hung_up);

/// Review finding D: a disabled account's right password used to be left uncounted, so the
/// address counter told it apart (19 junk failures, the candidate, then one more junk: 401
/// meant "that was the password"). Now it counts as a failure like any other.
async fn disabled_accounts_right_password_counts_like_a_wrong_one(db: TestDb) {
    let app = spawn_app_with(db, |s| s.lockout.source.threshold = 3).await;
    app.add_user("off@example.com", "right", false).await;
    app.state
        .db
        .run(|c| login_service::users::set_disabled(c, "off@example.com", true))
        .await
        .unwrap();
    let rate_limited = (
        429,
        Some(60),
        json!({"error": "rate_limited", "message": "too many failed logins from this address; retry later"}),
    );
    // The same sequence with the right and with a wrong candidate, from two addresses.
    for (ip, candidate) in [("198.18.8.1", "right"), ("198.18.8.2", "wrong")] {
        for i in 0..2 {
            let r = app.login(&format!("junk{i}@example.com"), "x", ip).await;
            assert_eq!(answer(r).await, invalid(), "{candidate}");
        }
        let r = app.login("off@example.com", candidate, ip).await;
        assert_eq!(answer(r).await, invalid(), "{candidate}");
        let r = app.login("junk9@example.com", "x", ip).await;
        assert_eq!(answer(r).await, rate_limited, "{candidate}");
        let k = keys("off@example.com", ip);
        assert_eq!(app.counter(&k.account_source).await.unwrap().failures, 1);
    }
}
db_test!(disabled_accounts_right_password_counts_like_a_wrong_one);

/// Review finding F of issue #11: the cleanup deletes in batches of `CLEANUP_BATCH` keys (one
/// long DELETE stalled concurrent failed logins on MariaDB); over more than two batches it
/// still deletes exactly the stale rows and keeps locked and recent ones.
async fn cleanup_in_batches_deletes_exactly_the_stale_rows(db: TestDb) {
    use diesel::prelude::*;
    use login_service::schema::login_throttle::dsl::*;
    let app = spawn_app(db).await;
    let horizon = std::time::Duration::from_secs(3600);
    let now = lockout::now_ms();
    let old = now - 3_600_000 - 1;
    let stale = usize::try_from(2 * lockout::CLEANUP_BATCH).unwrap() + 7;
    let mut rows: Vec<_> = (0..stale)
        .map(|i| {
            (
                key_hash.eq(format!("stale{i:05}")),
                failures.eq(1),
                locked_until.eq(if i % 2 == 0 { None } else { Some(now - 1) }),
                last_failure.eq(old),
            )
        })
        .collect();
    // Locked (a failure long ago, the lock still running) and recent rows stay.
    for i in 0..5 {
        rows.push((
            key_hash.eq(format!("locked{i}")),
            failures.eq(9),
            locked_until.eq(Some(now + 60_000)),
            last_failure.eq(old),
        ));
        rows.push((
            key_hash.eq(format!("recent{i}")),
            failures.eq(1),
            locked_until.eq(None),
            last_failure.eq(now - 1_000),
        ));
    }
    app.state
        .db
        .run(move |c| {
            c.transaction(|c| {
                for row in rows {
                    diesel::insert_into(login_throttle).values(row).execute(c)?;
                }
                Ok(())
            })
        })
        .await
        .unwrap();
    let deleted = app
        .state
        .db
        .run(move |c| lockout::cleanup(c, now, horizon))
        .await
        .unwrap();
    assert_eq!(deleted, stale);
    let mut left: Vec<String> = app
        .state
        .db
        .run(|c| login_throttle.select(key_hash).load(c))
        .await
        .unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            "locked0", "locked1", "locked2", "locked3", "locked4", "recent0", "recent1", "recent2",
            "recent3", "recent4"
        ]
    );
}
db_test!(cleanup_in_batches_deletes_exactly_the_stale_rows);
