//! Logins under overload (issue #15 §3): the hashing queue is bounded in time; a login that
//! would wait longer gets 503 `overloaded` with `Retry-After`, runs no hash, counts nothing
//! against the account or the address, and answers the same for known and unknown e-mails;
//! `POST /token` (no hash) is never shed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use login_service::password;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, answer, basic, db_test, keys, spawn_app_with};

/// The documented 503 of a shed login, without its `Retry-After` (checked apart: it follows the
/// queue).
fn overloaded_body() -> Value {
    json!({"error": "overloaded", "message": "too many logins at once; retry later"})
}

/// Argon2id with five times OWASP's work (the largest a stored hash may ask for): a hash slow
/// enough that a burst surely overlaps it, also on a fast machine.
fn slow_params() -> argon2::Params {
    argon2::Params::new(65_536, 3, 1, None).unwrap()
}

/// Stores `email` with a slow hash of `pw`.
async fn add_slow_user(app: &TestApp, email: &str, pw: &str) {
    let hash = password::hash_with(pw.as_bytes(), slow_params()).unwrap();
    app.insert_raw(email, &hash, false).await;
}

/// Waits (tightly: the hash lasts a fraction of a second) until a hash holds the only permit.
async fn until_hashing(app: &TestApp) {
    let end = Instant::now() + Duration::from_secs(20);
    while app.state.hasher.hashing() == 0 {
        assert!(Instant::now() < end, "no hash started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The value of `login_attempts_total{outcome="..."}`.
async fn attempts(app: &TestApp, outcome: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let prefix = format!("login_attempts_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn burst_over_the_bound_is_shed_and_accepted_logins_wait_at_most_the_bound(db: TestDb) {
    let bound = Duration::from_secs(1);
    let app = Arc::new(
        spawn_app_with(db, |s| {
            s.hash_concurrency = 1;
            s.hash_params = slow_params();
            s.max_queue_wait = Some(bound);
        })
        .await,
    );
    add_slow_user(&app, "right@example.com", "pw").await;
    add_slow_user(&app, "wrong@example.com", "pw").await;
    // 40 logins at once, one permit: right passwords, wrong passwords and an unknown e-mail,
    // each from its own address (below every lockout threshold that could answer first).
    let cases: Vec<(&str, &str, String)> = (0..40)
        .map(|i| {
            let (email, pw) = match i % 4 {
                0 | 1 => ("right@example.com", "pw"),
                2 => ("wrong@example.com", "nope"),
                _ => ("ghost@example.com", "nope"),
            };
            (email, pw, format!("198.51.100.{}", i + 1))
        })
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(cases.len()));
    let tasks: Vec<_> = cases
        .iter()
        .cloned()
        .map(|(email, pw, ip)| {
            let (app, start) = (app.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                let r = app.login(email, pw, &ip).await;
                let took = sent.elapsed();
                (email, ip, answer(r).await, took)
            })
        })
        .collect();
    let mut shed = 0;
    let mut counted: std::collections::HashMap<&str, u32> = Default::default();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (email, ip, (status, retry, body), took) = t.await.unwrap();
        if status == 503 {
            shed += 1;
            assert_eq!(body, overloaded_body(), "{email}");
            let retry = retry.expect("Retry-After on a shed login");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            // Nothing counted for a shed login: not the e-mail from this address, not the
            // address.
            let k = keys(email, &ip);
            assert_eq!(app.counter(&k.account_source).await, None, "{email} {ip}");
            assert_eq!(app.counter(&k.source).await, None, "{ip}");
            continue;
        }
        slowest = slowest.max(took);
        match email {
            "right@example.com" => assert_eq!(status, 200, "{body}"),
            _ => {
                assert_eq!(status, 401, "{body}");
                *counted.entry(email).or_default() += 1;
            }
        }
    }
    let verify = app.state.hasher.verify_time();
    println!(
        "burst of 40, 1 permit, bound {bound:?}, verify {verify:?}: {shed} shed, slowest accepted {slowest:?}"
    );
    assert!(shed >= 20, "only {shed} of 40 shed with room for a few");
    // An accepted login waited at most the bound, then hashed once (plus a rehash-free
    // database round trip): never the ~40 verifications of an unbounded queue.
    assert!(
        slowest < bound + verify * 3 + Duration::from_secs(1),
        "an accepted login took {slowest:?} (bound {bound:?}, verify {verify:?})"
    );
    // The account-wide counters hold exactly the answered failures.
    for email in ["wrong@example.com", "ghost@example.com"] {
        let failures = app
            .counter(&keys(email, "198.51.100.1").account)
            .await
            .map_or(0, |c| c.failures);
        assert_eq!(
            failures,
            counted.get(email).copied().unwrap_or(0),
            "{email}"
        );
    }
    assert_eq!(attempts(&app, "overloaded").await, shed);
    // The queue drained: a correct login afterwards works.
    let r = app.login("right@example.com", "pw", "198.51.100.200").await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.state.hasher.waiting(), 0);
}
db_test!(burst_over_the_bound_is_shed_and_accepted_logins_wait_at_most_the_bound);

async fn shed_login_is_the_same_for_every_user_counts_nothing_and_refresh_is_never_shed(
    db: TestDb,
) {
    let app = spawn_app_with(db, |s| {
        s.hash_concurrency = 1;
        s.max_queue_wait = Some(Duration::ZERO);
    })
    .await;
    app.add_user("a@example.com", "pw", false).await;
    add_slow_user(&app, "slow@example.com", "pw").await;
    let r = app
        .login_query("?refresh=true", "a@example.com", "pw", None)
        .await;
    assert_eq!(r.status(), 200);
    let refresh_token = r.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // One slow login holds the only permit; with a bound of 0 nothing may wait behind it.
    let holder = {
        let (client, url) = (app.client.clone(), app.url("/login"));
        tokio::spawn(async move {
            client
                .post(url)
                .header("authorization", basic(b"slow@example.com:pw"))
                .header("x-envoy-external-address", "192.0.2.1")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    until_hashing(&app).await;
    // The right password, a wrong one, an unknown e-mail: one answer, byte for byte.
    let mut answers = Vec::new();
    for (email, pw, ip) in [
        ("a@example.com", "pw", "192.0.2.2"),
        ("a@example.com", "wrong", "192.0.2.3"),
        ("nobody@example.com", "wrong", "192.0.2.4"),
    ] {
        let k = keys(email, ip);
        let mut before = Vec::new();
        for key in [&k.account, &k.account_source, &k.source] {
            before.push(app.counter(key).await);
        }
        let (status, retry, body) = answer(app.login(email, pw, ip).await).await;
        answers.push((status, body));
        assert_eq!(retry, Some(1), "{email}");
        for (key, before) in [&k.account, &k.account_source, &k.source]
            .into_iter()
            .zip(before)
        {
            assert_eq!(app.counter(key).await, before, "{email} {key}");
        }
    }
    assert!(
        answers.iter().all(|a| a == &(503, overloaded_body())),
        "{answers:?}"
    );
    // POST /token hashes nothing: answered while the hasher is full.
    assert_eq!(app.state.hasher.hashing(), 1, "the slow hash still runs");
    let r = app
        .client
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={refresh_token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(holder.await.unwrap(), 200);
    // Once the permit is free, the right password logs in (no lock was left behind).
    let r = app.login("a@example.com", "pw", "192.0.2.3").await;
    assert_eq!(r.status(), 200);
}
db_test!(shed_login_is_the_same_for_every_user_counts_nothing_and_refresh_is_never_shed);
