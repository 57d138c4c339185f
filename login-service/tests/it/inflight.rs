//! Logins in flight while an admin changes the account (issue #11, item 1): a login whose
//! credentials or account state changed between its lookup and its token issues no token, and
//! a token issued just before a CLI change is covered by that change's user-wide revocation.
//!
//! The deterministic tests hold a login between its password check and its success write
//! ([`login_service::state::AppState::pause_after_verify`]), run the real CLI binary, then let
//! the login go on. The concurrent test is the issue's reproduction: parallel login loops while
//! `user disable` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use login_service::revocations;
use serde_json::Value;

use crate::helpers::{TestDb, db_test, held_login, invalid, run_cli_ok, spawn_app, spawn_app_with};

fn iat(token: &str) -> i64 {
    auth_token::testing::claims_json(token)["iat"]
        .as_i64()
        .unwrap()
}

/// Runs the CLI `args` against `db` (on the blocking pool); returns `db` back.
async fn cli(db: TestDb, args: &'static [&'static str], stdin: Option<&'static str>) -> TestDb {
    tokio::task::spawn_blocking(move || {
        run_cli_ok(&db, &[], args, stdin);
        db
    })
    .await
    .unwrap()
}

fn assert_refused(answer: &(u16, Option<u64>, Value)) {
    assert_eq!(
        answer,
        &invalid(),
        "a login in flight across the account change got a token"
    );
}

async fn login_in_flight_during_disable_remove_or_revoke_issues_no_token(db: TestDb) {
    let mut alias = db.alias();
    let app = spawn_app(db).await;
    let pause = app.pause_logins();
    for (email, args) in [
        ("d@example.com", &["user", "disable", "d@example.com"][..]),
        ("r@example.com", &["user", "remove", "r@example.com"][..]),
        ("v@example.com", &["user", "revoke", "v@example.com"][..]),
    ] {
        app.add_user(email, "pw", false).await;
        let pending = held_login(&app, &pause, email, "pw", "192.0.2.90").await;
        let args: &'static [&'static str] = Box::leak(args.to_vec().into_boxed_slice());
        alias = cli(alias, args, None).await;
        pause.resume.add_permits(1);
        assert_refused(&pending.await.unwrap());
    }
    // `revoke` leaves the account usable: the next login works.
    pause.resume.add_permits(1);
    let r = app.login("v@example.com", "pw", "192.0.2.91").await;
    assert_eq!(r.status(), 200);
}
db_test!(login_in_flight_during_disable_remove_or_revoke_issues_no_token);

async fn login_in_flight_during_passwd_neither_logs_in_nor_restores_the_old_password(db: TestDb) {
    let alias = db.alias();
    let app = spawn_app(db).await;
    // A hash with weaker parameters than the service's: a login with it rehashes.
    let weak = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
    let hash = login_service::password::hash_with(b"old-password", weak).unwrap();
    app.insert_raw("p@example.com", &hash, false).await;
    let pause = app.pause_logins();
    let pending = held_login(&app, &pause, "p@example.com", "old-password", "192.0.2.90").await;
    let _alias = cli(
        alias,
        &["user", "passwd", "p@example.com", "--password-stdin"],
        Some("new-password\n"),
    )
    .await;
    pause.resume.add_permits(1);
    assert_refused(&pending.await.unwrap());
    // The stored hash is the new password's, not a rehash of the old one.
    pause.resume.add_permits(2);
    assert_eq!(
        app.login("p@example.com", "old-password", "192.0.2.92")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login("p@example.com", "new-password", "192.0.2.93")
            .await
            .status(),
        200
    );
}
db_test!(login_in_flight_during_passwd_neither_logs_in_nor_restores_the_old_password);

async fn parallel_logins_during_disable_leave_no_live_token(db: TestDb) {
    let alias = db.alias();
    let app = Arc::new(spawn_app_with(db, |s| s.hash_concurrency = 2).await);
    app.add_user("race@example.com", "pw", false).await;
    let sub = app.user("race@example.com").await.unwrap().id.to_string();
    let done = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for t in 0..8 {
        let (app, done, issued) = (app.clone(), done.clone(), issued.clone());
        loops.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            let mut refused_after_disable = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let r = app
                    .login("race@example.com", "pw", &format!("192.0.2.{}", 100 + t))
                    .await;
                match r.status().as_u16() {
                    200 => {
                        let body: Value = r.json().await.unwrap();
                        tokens.push(body["access_token"].as_str().unwrap().to_owned());
                        issued.fetch_add(1, Ordering::SeqCst);
                        assert!(!finished, "a login that began after the disable succeeded");
                    }
                    // Why 429 too: a disabled account's right password counts as a failure
                    // (review finding D), so the loops lock the account after the disable.
                    401 | 429 if finished => refused_after_disable += 1,
                    401 => {}
                    other => panic!("login answered {other}"),
                }
                if refused_after_disable >= 2 {
                    return tokens;
                }
            }
        }));
    }
    // Let the loops issue some tokens, then disable the account under them.
    let ready = crate::helpers::poll(Duration::from_secs(30), || {
        let n = issued.load(Ordering::SeqCst);
        async move { (n >= 16).then_some(()) }
    })
    .await;
    assert!(ready.is_some(), "fewer than 16 logins succeeded");
    let _alias = cli(alias, &["user", "disable", "race@example.com"], None).await;
    done.store(true, Ordering::SeqCst);
    let mut tokens = Vec::new();
    for l in loops {
        tokens.extend(l.await.unwrap());
    }
    let now = revocations::now_secs();
    let cutoff = app
        .state
        .db
        .run(move |c| revocations::user_cutoff(c, &sub, now))
        .await
        .unwrap()
        .expect("disable wrote a user-wide revocation");
    let live: Vec<i64> = tokens
        .iter()
        .map(|t| iat(t))
        .filter(|i| *i > cutoff)
        .collect();
    println!(
        "parallel logins during disable: {} tokens issued, {} outlive the cut at {cutoff}",
        tokens.len(),
        live.len()
    );
    assert!(!tokens.is_empty());
    assert!(
        live.is_empty(),
        "tokens with iat {live:?} survive the disable (cut {cutoff})"
    );
}
db_test!(parallel_logins_during_disable_leave_no_live_token);
