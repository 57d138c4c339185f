//! Account lockout (database, shared by replicas), unknown-e-mail parity, per-address limit.

use serde_json::Value;

use crate::helpers::{TestDb, db_test, spawn_app, spawn_app_with};

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn account_locks_after_threshold(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("lock@example.com", "right", false).await;
    // Threshold 3 in test settings; each failure from a different address.
    for i in 0..3 {
        let r = app
            .login("lock@example.com", "wrong", &format!("203.0.113.{i}"))
            .await;
        assert_eq!(r.status(), 401);
    }
    let row = app.user("lock@example.com").await.unwrap();
    assert_eq!(row.failed_logins, 3);
    assert!(row.locked_until.is_some());

    // Locked: 429 even with the right password, with Retry-After ≈ base (60 s).
    let r = app.login("lock@example.com", "right", "203.0.113.50").await;
    assert_eq!(r.status(), 429);
    let secs = retry_after(&r);
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "account_locked");

    // An unknown e-mail behaves the same: 3 × 401, then 429 (no account enumeration).
    for _ in 0..3 {
        let r = app
            .login("ghost@example.com", "wrong", "203.0.113.60")
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = app
        .login("ghost@example.com", "wrong", "203.0.113.61")
        .await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "account_locked");

    // The lock expires (simulated by moving locked_until into the past); the next failure locks
    // for twice as long.
    expire_lock(&app, "lock@example.com").await;
    let r = app.login("lock@example.com", "wrong", "203.0.113.70").await;
    assert_eq!(r.status(), 401);
    let r = app.login("lock@example.com", "right", "203.0.113.71").await;
    assert_eq!(r.status(), 429);
    assert!(retry_after(&r) > 60, "second lock doubles");

    // After it expires, a success resets the counter.
    expire_lock(&app, "lock@example.com").await;
    let r = app.login("lock@example.com", "right", "203.0.113.72").await;
    assert_eq!(r.status(), 200);
    let row = app.user("lock@example.com").await.unwrap();
    assert_eq!(row.failed_logins, 0);
    assert!(row.locked_until.is_none());
}
db_test!(account_locks_after_threshold);

async fn expire_lock(app: &crate::helpers::TestApp, email: &str) {
    use diesel::prelude::*;
    use login_service::schema::user;
    let e = email.to_owned();
    app.state
        .db
        .run(move |c| {
            let past = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
            diesel::update(user::table.filter(user::email.eq(e)))
                .set(user::locked_until.eq(Some(past)))
                .execute(c)
        })
        .await
        .unwrap();
}

async fn lock_is_shared_between_replicas(db: TestDb) {
    let b_db = db.alias();
    let a = spawn_app(db).await;
    a.add_user("shared@example.com", "right", false).await;
    // Replica B: same database, its own in-memory state.
    let b = spawn_app_with(b_db, |s| s.migrate = false).await;
    for ip in ["203.0.113.80", "203.0.113.81"] {
        assert_eq!(
            a.login("shared@example.com", "wrong", ip).await.status(),
            401
        );
    }
    assert_eq!(
        b.login("shared@example.com", "wrong", "203.0.113.82")
            .await
            .status(),
        401
    );
    assert_eq!(
        b.login("shared@example.com", "right", "203.0.113.83")
            .await
            .status(),
        429
    );
    assert_eq!(
        a.login("shared@example.com", "right", "203.0.113.84")
            .await
            .status(),
        429
    );
}
db_test!(lock_is_shared_between_replicas);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_rate_limit() {
    let app = spawn_app_with(TestDb::sqlite(), |s| s.ip_policy.threshold = 4).await;
    // Different (unknown) e-mails, same address: the address limit trips, not the account one.
    for i in 0..4 {
        let r = app
            .login(&format!("probe{i}@example.com"), "x", "198.18.0.1")
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = app.login("probe9@example.com", "x", "198.18.0.1").await;
    assert_eq!(r.status(), 429);
    assert!(retry_after(&r) >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Rightmost X-Forwarded-For entry is the client: a spoofed left part does not help…
    let r = app
        .login("probe9@example.com", "x", "1.2.3.4, 198.18.0.1")
        .await;
    assert_eq!(r.status(), 429);
    // …and another address is unaffected.
    let r = app.login("probe9@example.com", "x", "198.18.0.2").await;
    assert_eq!(r.status(), 401);
}
