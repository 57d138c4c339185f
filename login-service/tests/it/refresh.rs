//! Refresh tokens (issue #17): `POST /login?refresh=true`, `POST /token` (rotation, reuse →
//! family revoked through the feed, concurrent refreshes, account changes, logout, expiry,
//! the rotation bound, malformed grants), the cleanup and the indexes — on SQLite and MariaDB.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use auth_token::{Verifier, VerifierConfig};
use diesel::prelude::*;
use login_service::refresh::{self, Lifetimes, Rotation};
use login_service::revocations;
use login_service::schema::refresh_token;

use crate::helpers::{
    TestApp, TestDb, concurrent_statuses, db_test, jti, run_cli_ok, spawn_app, spawn_app_with,
};

/// A login with `?refresh=true`: (access token, refresh token, expires_in).
async fn session(app: &TestApp, email: &str) -> (String, String, u64) {
    let r = app.login_query("?refresh=true", email, "pw", None).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        v["expires_in"].as_u64().unwrap(),
    )
}

async fn grant_raw(app: &TestApp, content_type: &str, body: String) -> reqwest::Response {
    app.client
        .post(app.url("/token"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn grant(app: &TestApp, refresh: &str) -> reqwest::Response {
    grant_raw(
        app,
        "application/x-www-form-urlencoded",
        format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await
}

/// Status and JSON body of a refresh.
async fn refresh_answer(app: &TestApp, refresh: &str) -> (u16, serde_json::Value) {
    let r = grant(app, refresh).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn invalid_grant() -> serde_json::Value {
    serde_json::json!({
        "error": "invalid_grant",
        "error_description": "the refresh token is invalid, expired, revoked or already used",
    })
}

async fn row(app: &TestApp, token: &str) -> refresh::Row {
    let h = refresh::hash(token);
    app.state
        .db
        .run(move |c| refresh::find(c, &h))
        .await
        .unwrap()
        .expect("row stored")
}

async fn rotation_and_reuse(db: TestDb) {
    // TOKEN_TTL 1 h; ACCESS_TOKEN_TTL (the settings' default) 15 min.
    let app = spawn_app_with(db, |s| s.issuer.ttl = Duration::from_secs(3600)).await;
    app.add_user("rot@example.com", "pw", false).await;
    let id = app.user("rot@example.com").await.unwrap().id.to_string();

    // The tutorial's login is unchanged: no refresh token, TOKEN_TTL.
    let r = app.login("rot@example.com", "pw", "192.0.2.60").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");

    let (access1, rt1, expires_in) = session(&app, "rot@example.com").await;
    assert_eq!(expires_in, 900, "ACCESS_TOKEN_TTL with a refresh token");
    assert_eq!(rt1.len(), refresh::TOKEN_CHARS);
    // Only the hash is stored.
    let stored = row(&app, &rt1).await;
    assert_eq!(stored.generation, 0);
    assert_eq!(stored.access_jti, jti(&access1));

    // Rotation: a new access token and a new refresh token, not cacheable.
    let r = grant(&app, &rt1).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    let access2 = v["access_token"].as_str().unwrap().to_owned();
    let rt2 = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt2, rt1);
    let claims = Verifier::new(&VerifierConfig::default())
        .verify(&access2, &app.state.settings.keys, auth_token::now_unix())
        .expect("the new access token verifies");
    assert_eq!(claims.sub, id);
    assert_eq!(claims.email, "rot@example.com");
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(row(&app, &rt2).await.generation, 1);
    let (_, rt3) = {
        let v: serde_json::Value = grant(&app, &rt2).await.json().await.unwrap();
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["refresh_token"].as_str().unwrap().to_owned(),
        )
    };

    // Another session of the same user: reuse in the first must not touch it.
    let (other_access, other_rt, _) = session(&app, "rot@example.com").await;
    assert!(app.feed_rows().await.is_empty(), "rotation revokes nothing");

    // Reuse: rt1 (used) again → invalid_grant, and the family is over: rt3 (the live one)
    // fails too, and the family's access tokens are in the feed, one entry per jti.
    assert_eq!(refresh_answer(&app, &rt1).await, (400, invalid_grant()));
    assert_eq!(refresh_answer(&app, &rt3).await, (400, invalid_grant()));
    let feed = app.feed_rows().await;
    let mut revoked: Vec<(String, Option<String>, String)> = feed
        .iter()
        .map(|e| (e.sub.clone(), e.jti.clone(), e.reason.clone()))
        .collect();
    revoked.sort();
    let mut want: Vec<(String, Option<String>, String)> = [&access1, &access2]
        .iter()
        .map(|t| (id.clone(), Some(jti(t)), "refresh_reuse".to_owned()))
        .chain([(
            id.clone(),
            Some(row(&app, &rt3).await.access_jti),
            "refresh_reuse".to_owned(),
        )])
        .collect();
    want.sort();
    assert_eq!(revoked, want);
    assert!(
        !feed
            .iter()
            .any(|e| e.jti.as_deref() == Some(jti(&other_access).as_str()))
    );
    // Reuse again: idempotent (nothing new in the feed).
    assert_eq!(refresh_answer(&app, &rt2).await, (400, invalid_grant()));
    assert_eq!(app.feed_rows().await.len(), 3);
    // The other session still refreshes.
    assert_eq!(refresh_answer(&app, &other_rt).await.0, 200);
}
db_test!(rotation_and_reuse);

async fn refresh_is_only_where_asked_or_configured(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("ask@example.com", "pw", false).await;
    // text/plain stays the bare access token, even when asked (no session is started).
    let r = app
        .login_query("?refresh=true", "ask@example.com", "pw", Some("text/plain"))
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(body.split('.').count(), 3, "{body}");
    let count = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            db.run(|c| refresh_token::table.count().get_result::<i64>(c))
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&app).await, 0);
    // An unknown value is a 400, not a silent "no".
    let r = app
        .login_query("?refresh=maybe", "ask@example.com", "pw", None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );
    // refresh=false: none.
    let r = app
        .login_query("?refresh=false", "ask@example.com", "pw", None)
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v.get("refresh_token").is_none());
    assert_eq!(count(&app).await, 0);
}
db_test!(refresh_is_only_where_asked_or_configured);

async fn refresh_tokens_on_gives_every_json_login_one(db: TestDb) {
    let app = spawn_app_with(db, |s| s.refresh.always = true).await;
    app.add_user("on@example.com", "pw", false).await;
    let v: serde_json::Value = app
        .login("on@example.com", "pw", "192.0.2.61")
        .await
        .json()
        .await
        .unwrap();
    let rt = v["refresh_token"].as_str().expect("REFRESH_TOKENS=on");
    assert_eq!(v["expires_in"], 900);
    assert_eq!(refresh_answer(&app, rt).await.0, 200);
}
db_test!(refresh_tokens_on_gives_every_json_login_one);

/// Real concurrency on the database: 8 threads, each with its own connection, released at once
/// by a barrier, rotate the same token; then 8 HTTP requests across two replicas. Exactly one
/// wins each time; the losers are reuses (no grace period), so the family ends.
async fn concurrent_refresh_exactly_one_wins(db: TestDb) {
    let alias = db.alias();
    let app = spawn_app(db).await;
    let replica = spawn_app(alias).await;
    app.add_user("race@example.com", "pw", false).await;

    let (_, rt, _) = session(&app, "race@example.com").await;
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let hash = refresh::hash(&rt);
    let lifetimes = Lifetimes::default();
    let mut runs = Vec::new();
    for _ in 0..n {
        let (b, h, db) = (barrier.clone(), hash.clone(), app.state.db.clone());
        runs.push(tokio::spawn(async move {
            db.run(move |c| {
                b.wait();
                let r = refresh::rotate(c, &h, revocations::now_secs(), &lifetimes, |u, _| {
                    Ok::<_, ()>((u.id, format!("jti-{}", rand::random::<u64>()), i64::MAX))
                });
                Ok(match r {
                    Ok(Rotation::Rotated { .. }) => "rotated",
                    Ok(Rotation::Reused { .. }) => "reused",
                    Ok(Rotation::Refused(_)) => "refused",
                    Err(e) => panic!("{e}"),
                })
            })
            .await
            .unwrap()
        }));
    }
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for r in runs {
        *outcomes.entry(r.await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([("reused", n - 1), ("rotated", 1)]),
        "exactly one rotation"
    );
    let family = row(&app, &rt).await.family_id;
    let gens: Vec<i32> = app
        .state
        .db
        .run(move |c| {
            refresh_token::table
                .filter(refresh_token::family_id.eq(family))
                .select(refresh_token::generation)
                .order(refresh_token::generation.asc())
                .load(c)
        })
        .await
        .unwrap();
    assert_eq!(gens, [0, 1], "one successor stored");

    // The same through HTTP, half on each replica.
    let (_, rt, _) = session(&app, "race@example.com").await;
    let requests = (0..n)
        .map(|i| {
            let target = if i % 2 == 0 { &app } else { &replica };
            target
                .client
                .post(target.url("/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=refresh_token&refresh_token={rt}"))
        })
        .collect();
    let statuses = concurrent_statuses(requests).await;
    assert_eq!(statuses, BTreeMap::from([(200, 1), (400, n - 1)]));
}
db_test!(concurrent_refresh_exactly_one_wins);

/// Each account change ends the sessions: `user disable`, `passwd`, `remove`, `revoke` (the real
/// CLI), `POST /logout` (the session's access token) and `/logout?all=true`.
async fn account_changes_end_refresh(db: TestDb) {
    let alias = Arc::new(db.alias());
    let app = spawn_app(db).await;
    for (i, change) in [
        "disable",
        "passwd",
        "remove",
        "revoke",
        "logout",
        "logout_all",
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("acct{i}@example.com");
        app.add_user(&email, "pw", false).await;
        let (access, rt, _) = session(&app, &email).await;
        // A live session refreshes before the change.
        let v = refresh_answer(&app, &rt).await;
        assert_eq!(v.0, 200, "{change}");
        let rt = v.1["refresh_token"].as_str().unwrap().to_owned();
        let access = v.1["access_token"].as_str().map_or(access, str::to_owned);
        match change {
            "logout" | "logout_all" => {
                let q = if change == "logout" { "" } else { "?all=true" };
                let r = app
                    .client
                    .post(app.url(&format!("/logout{q}")))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
            cmd => {
                let (alias, email) = (alias.clone(), email.clone());
                tokio::task::spawn_blocking(move || {
                    let stdin = (cmd == "passwd").then_some("new-password\n");
                    let mut args = vec!["user", cmd, email.as_str()];
                    if cmd == "passwd" {
                        args.push("--password-stdin");
                    }
                    run_cli_ok(&alias, &[], &args, stdin);
                })
                .await
                .unwrap();
            }
        }
        assert_eq!(
            refresh_answer(&app, &rt).await,
            (400, invalid_grant()),
            "{change}"
        );
    }
}
db_test!(account_changes_end_refresh);

/// A disabled-then-enabled account, or one whose row was changed behind the CLI's back (no
/// family ended): the rotation itself reads the account.
async fn rotation_reads_the_account(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("direct@example.com", "pw", false).await;
    let (_, rt, _) = session(&app, "direct@example.com").await;
    app.state
        .db
        .run(|c| login_service::users::set_disabled(c, "direct@example.com", true))
        .await
        .unwrap();
    assert_eq!(refresh_answer(&app, &rt).await, (400, invalid_grant()));

    app.add_user("pw@example.com", "pw", false).await;
    let (_, rt, _) = session(&app, "pw@example.com").await;
    // A password set one second after the login (the column has whole seconds).
    let later = chrono::DateTime::from_timestamp(row(&app, &rt).await.auth_time + 1, 0)
        .unwrap()
        .naive_utc();
    app.state
        .db
        .run(move |c| {
            diesel::update(
                login_service::schema::user::table
                    .filter(login_service::schema::user::email.eq("pw@example.com")),
            )
            .set(login_service::schema::user::password_changed_at.eq(Some(later)))
            .execute(c)
        })
        .await
        .unwrap();
    assert_eq!(refresh_answer(&app, &rt).await, (400, invalid_grant()));
}
db_test!(rotation_reads_the_account);

async fn expiry_session_end_and_rotation_bound(db: TestDb) {
    let app = spawn_app_with(db, |s| {
        s.refresh.lifetimes = Lifetimes {
            refresh_ttl: Duration::from_secs(1000),
            session_max_age: Duration::from_secs(100),
            max_rotations: 2,
            ..Lifetimes::default()
        };
    })
    .await;
    app.add_user("exp@example.com", "pw", false).await;
    let (_, rt, _) = session(&app, "exp@example.com").await;
    let first = row(&app, &rt).await;
    // The session's end caps the token's.
    assert_eq!(first.session_expires_at, first.auth_time + 100);
    assert_eq!(first.expires_at, first.session_expires_at);
    // Two rotations allowed, the third is refused.
    let (s, v) = refresh_answer(&app, &rt).await;
    assert_eq!(s, 200);
    let rt = v["refresh_token"].as_str().unwrap().to_owned();
    let second = row(&app, &rt).await;
    assert_eq!(second.session_expires_at, first.session_expires_at);
    assert!(second.expires_at <= second.session_expires_at);
    let (s, v) = refresh_answer(&app, &rt).await;
    assert_eq!(s, 200);
    let rt = v["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(row(&app, &rt).await.generation, 2);
    assert_eq!(refresh_answer(&app, &rt).await, (400, invalid_grant()));

    // Expiry: a token past its `expires_at` (moved into the past) is refused.
    let (_, rt, _) = session(&app, "exp@example.com").await;
    let h = refresh::hash(&rt);
    let past = revocations::now_secs() - 1;
    app.state
        .db
        .run(move |c| {
            diesel::update(refresh_token::table.filter(refresh_token::token_hash.eq(h)))
                .set(refresh_token::expires_at.eq(past))
                .execute(c)
        })
        .await
        .unwrap();
    assert_eq!(refresh_answer(&app, &rt).await, (400, invalid_grant()));
    // An expired token is not a reuse: nothing in the feed.
    assert!(app.feed_rows().await.is_empty());

    // The cleanup deletes rows expired for longer than the slack, in bounded batches.
    let old = past - revocations::RETENTION_SLACK_SECS - 1;
    app.state
        .db
        .run(move |c| {
            diesel::update(refresh_token::table)
                .set(refresh_token::expires_at.eq(old))
                .execute(c)
        })
        .await
        .unwrap();
    let total = app
        .state
        .db
        .run(|c| refresh_token::table.count().get_result::<i64>(c))
        .await
        .unwrap();
    assert!(total >= 4, "{total}");
    let now = revocations::now_secs();
    let deleted = app
        .state
        .db
        .run(move |c| refresh::cleanup(c, now))
        .await
        .unwrap();
    assert_eq!(i64::try_from(deleted).unwrap(), total);
    assert_eq!(refresh_answer(&app, &rt).await, (400, invalid_grant()));
}
db_test!(expiry_session_end_and_rotation_bound);

async fn malformed_grants(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("bad@example.com", "pw", false).await;
    let (_, rt, _) = session(&app, "bad@example.com").await;
    let form = "application/x-www-form-urlencoded";
    let ok_body = format!("grant_type=refresh_token&refresh_token={rt}");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "application/json",
            format!(r#"{{"grant_type":"refresh_token","refresh_token":"{rt}"}}"#),
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ),
        (
            form,
            format!("refresh_token={rt}"),
            "invalid_request",
            "grant_type is missing",
        ),
        (
            form,
            "grant_type=refresh_token".into(),
            "invalid_request",
            "refresh_token is missing",
        ),
        (
            form,
            format!("grant_type=password&refresh_token={rt}"),
            "unsupported_grant_type",
            "only grant_type=refresh_token is supported",
        ),
        (
            form,
            format!("{ok_body}&refresh_token={rt}"),
            "invalid_request",
            "a parameter is repeated",
        ),
        (
            form,
            format!("grant_type=refresh_token&{ok_body}"),
            "invalid_request",
            "a parameter is repeated",
        ),
        (
            form,
            "grant_type=refresh_token&refresh_token=not-a-token".into(),
            "invalid_grant",
            "the refresh token is invalid, expired, revoked or already used",
        ),
        (
            form,
            format!("grant_type=refresh_token&refresh_token={}", "A".repeat(43)),
            "invalid_grant",
            "the refresh token is invalid, expired, revoked or already used",
        ),
    ];
    for (ct, body, error, description) in cases {
        let r = grant_raw(&app, ct, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": error, "error_description": description}),
            "{body}"
        );
    }
    // A body over MAX_BODY_BYTES: 413 JSON, the token not consumed.
    let huge = format!(
        "{ok_body}&pad={}",
        "x".repeat(app.state.settings.max_body_bytes)
    );
    let r = grant_raw(&app, form, huge).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "payload_too_large"
    );
    // GET: 405 JSON.
    let r = app.get("/token").await;
    assert_eq!(r.status(), 405);
    // None of the refusals used the token up.
    assert_eq!(grant_raw(&app, form, ok_body).await.status(), 200);
}
db_test!(malformed_grants);

async fn refresh_token_hash_is_unique_and_indexed(db: TestDb) {
    #[derive(diesel::QueryableByName, Debug)]
    struct Index {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        col: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        uniq: i64,
    }
    let app = spawn_app(db).await;
    let mut found = app
        .state
        .db
        .run(|c| {
            let sql = match c {
                login_service::db::DbConn::Mysql(_) => {
                    "SELECT index_name AS name, column_name AS col, \
                     CAST(1 - non_unique AS SIGNED) AS uniq FROM information_schema.statistics \
                     WHERE table_schema = DATABASE() AND table_name = 'refresh_token' \
                     AND index_name <> 'PRIMARY'"
                }
                login_service::db::DbConn::Sqlite(_) => {
                    "SELECT il.name AS name, ii.name AS col, il.\"unique\" AS uniq \
                     FROM pragma_index_list('refresh_token') il \
                     JOIN pragma_index_info(il.name) ii WHERE il.origin = 'c'"
                }
            };
            diesel::sql_query(sql).load::<Index>(c)
        })
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.col, i.uniq))
        .collect::<Vec<_>>();
    found.sort();
    let want: Vec<(String, String, i64)> = [
        ("refresh_token_access_jti", "access_jti", 0),
        ("refresh_token_expires_at", "expires_at", 0),
        ("refresh_token_family", "family_id", 0),
        ("refresh_token_hash", "token_hash", 1),
        ("refresh_token_revoked_at", "revoked_at", 0),
        ("refresh_token_user", "user_id", 0),
        ("refresh_token_user_tip", "id", 0),
        ("refresh_token_user_tip", "used_at", 0),
        ("refresh_token_user_tip", "user_id", 0),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c))
    .collect();
    assert_eq!(found, want);
}
db_test!(refresh_token_hash_is_unique_and_indexed);
