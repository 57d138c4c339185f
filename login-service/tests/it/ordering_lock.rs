//! README, "Ordering guarantee": on MySQL every revocation insert holds
//! `GET_LOCK('login_service_revocation')`; "if that lock cannot be had within 10 s the
//! revocation fails (503 for `/logout`, exit 69 for the CLI) rather than being inserted out of
//! order", and the CLI "exits 69 and says to run `user revoke`" (issue #20). Forced by holding
//! the named lock from another MariaDB session.

use std::time::{Duration, Instant};

use diesel::mysql::MysqlConnection;
use diesel::{Connection as _, RunQueryDsl as _};
use login_service::revocations;
use serde_json::json;

use crate::helpers::{TestApp, TestDb, run_cli, spawn_app};

/// The named lock, held by a session of its own until dropped or released.
struct HeldLock(MysqlConnection);

impl HeldLock {
    fn take(db: &TestDb) -> Self {
        let mut c = MysqlConnection::establish(&db.url).unwrap();
        #[derive(diesel::QueryableByName)]
        struct Got {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
            got: Option<i64>,
        }
        let got = diesel::sql_query(
            "SELECT CAST(GET_LOCK('login_service_revocation', 5) AS SIGNED) AS got",
        )
        .get_result::<Got>(&mut c)
        .unwrap();
        assert_eq!(got.got, Some(1), "could not take the lock");
        Self(c)
    }

    fn release(mut self) {
        diesel::sql_query("DO RELEASE_LOCK('login_service_revocation')")
            .execute(&mut self.0)
            .unwrap();
    }
}

async fn revocation_rows(app: &TestApp) -> usize {
    app.state
        .db
        .run(|c| revocations::page(c, 0, 0, 1_000_000))
        .await
        .unwrap()
        .len()
}

const HINT: &str = "were NOT revoked; retry with `login-service user revoke`";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_lock_timeout_is_503_and_cli_exit_69_mysql() {
    let db = TestDb::mysql();
    let cli_db = db.alias();
    let lock_db = db.alias();
    let app = spawn_app(db).await;
    app.add_user("held@example.com", "pw", false).await;
    let r = app.login("held@example.com", "pw", "192.0.2.90").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(revocation_rows(&app).await, 0);

    let lock = HeldLock::take(&lock_db);
    // The CLI (`user passwd`, which revokes after changing the password, then `user revoke`)
    // and `POST /logout` all wait for the lock at the same time.
    let cli = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let passwd = run_cli(
            &cli_db,
            &[],
            &["user", "passwd", "held@example.com", "--password-stdin"],
            Some("new pw\n"),
        );
        let revoke = run_cli(&cli_db, &[], &["user", "revoke", "held@example.com"], None);
        (passwd, revoke, started.elapsed(), cli_db)
    });
    let started = Instant::now();
    let r = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "database_unavailable", "message": "the credential store is unavailable; retry later"})
    );
    // It failed because of the lock's 10 s timeout, not sooner for another reason.
    assert!(waited >= Duration::from_secs(9), "503 after {waited:?}");

    let (passwd, revoke, cli_waited, cli_db) = cli.await.unwrap();
    for (name, o) in [("passwd", &passwd), ("revoke", &revoke)] {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(69), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("the tokens of held@example.com {HINT}")),
            "{name}: {stderr}"
        );
    }
    assert!(cli_waited >= Duration::from_secs(18), "{cli_waited:?}");
    // The password was changed before the revocation was tried (README: "changes the account
    // first and revokes second"), and nothing was inserted without the lock.
    assert_eq!(
        app.login("held@example.com", "new pw", "192.0.2.90")
            .await
            .status(),
        200
    );
    assert_eq!(revocation_rows(&app).await, 0);

    // Once the lock is free, the same requests succeed.
    lock.release();
    let r = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let o = tokio::task::spawn_blocking(move || {
        let o = run_cli(&cli_db, &[], &["user", "revoke", "held@example.com"], None);
        drop(cli_db);
        o
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(revocation_rows(&app).await, 2);
}
