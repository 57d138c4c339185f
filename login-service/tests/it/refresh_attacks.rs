//! Refresh tokens under attack (issue #17 security review): the cost of a reuse, the rows a
//! user can make, logout and the family's other access tokens, the verifiers' leeway, and a
//! refused rotation retried — on SQLite and MariaDB.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::connection::{Connection as _, InstrumentationEvent};
use diesel::prelude::*;
use login_service::db::DbConn;
use login_service::refresh::{self, FamilyEnd, Lifetimes, Rotation};
use login_service::revocations::{self, BatchOutcome, Reason};
use login_service::schema::refresh_token;

use crate::helpers::{TestApp, TestDb, db_test, jti, spawn_app, spawn_app_with};

/// A login with `?refresh=true`: (access token, refresh token).
async fn session(app: &TestApp, email: &str) -> (String, String) {
    let r = app
        .client
        .post(app.url("/login?refresh=true"))
        .header(
            "authorization",
            crate::helpers::basic(format!("{email}:pw").as_bytes()),
        )
        .header("x-envoy-external-address", "192.0.2.70")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// `POST /token`: (status, access token, refresh token) — the tokens empty on a refusal.
async fn refresh_with(app: &TestApp, rt: &str) -> (u16, String, String) {
    let r = app
        .client
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={rt}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    (status, field("access_token"), field("refresh_token"))
}

async fn user_id(app: &TestApp, email: &str) -> i32 {
    app.user(email).await.unwrap().id
}

/// Stores a family of `rotations` + 1 rows for `user` as `rotations` refreshes would have
/// (every row but the newest used, every access token live for 15 min); returns the text of
/// its first (used) refresh token. Rows are written directly: 2 000 real refreshes per test
/// would only slow the suite down.
fn store_family(c: &mut DbConn, user: i32, rotations: i32) -> QueryResult<String> {
    let now = revocations::now_secs();
    let first = refresh::RefreshToken::generate();
    let family = format!("{:032x}", rand::random::<u128>());
    let rows: Vec<_> = (0..=rotations)
        .map(|generation| {
            let hash = if generation == 0 {
                first.hash()
            } else {
                refresh::RefreshToken::generate().hash()
            };
            (
                refresh_token::token_hash.eq(hash),
                refresh_token::family_id.eq(family.clone()),
                refresh_token::user_id.eq(user),
                refresh_token::generation.eq(generation),
                refresh_token::auth_time.eq(now - 60),
                refresh_token::session_expires_at.eq(now + 86_400),
                refresh_token::issued_at.eq(now - 60),
                refresh_token::expires_at.eq(now + 3_600),
                refresh_token::used_at.eq((generation < rotations).then_some(now)),
                refresh_token::access_jti.eq(format!("{family}-{generation}")),
                refresh_token::access_exp.eq(now + 900),
            )
        })
        .collect();
    for chunk in rows.chunks(200) {
        let insert = diesel::insert_into(refresh_token::table).values(chunk);
        match c {
            DbConn::Mysql(m) => insert.execute(m)?,
            DbConn::Sqlite(s) => insert.execute(s)?,
        };
    }
    Ok(first.expose().to_owned())
}

/// Runs `f` on one pooled connection and counts the SQL statements it sends.
fn counted<T>(c: &mut DbConn, f: impl FnOnce(&mut DbConn) -> T) -> (T, usize) {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    c.set_instrumentation(move |e: InstrumentationEvent<'_>| {
        if matches!(e, InstrumentationEvent::StartQuery { .. }) {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let out = f(c);
    c.set_instrumentation(|_: InstrumentationEvent<'_>| {});
    (out, n.load(Ordering::Relaxed))
}

/// What `POST /token` does with a reused token, on one connection: (the rotation's answer,
/// what ending the family did, statements sent).
fn reuse(c: &mut DbConn, token: &str) -> (Option<FamilyEnd>, usize) {
    let max = revocations_max();
    let hash = refresh::hash(token);
    counted(c, |c| {
        let r = refresh::rotate(
            c,
            &hash,
            revocations::now_secs(),
            &Lifetimes::default(),
            |_, _| Err::<refresh::Signed<()>, ()>(()),
        )
        .unwrap();
        let Rotation::Reused {
            family_id,
            user_id,
            ended,
        } = r
        else {
            panic!("not a reuse: {r:?}");
        };
        (!ended).then(|| {
            refresh::revoke_family(
                c,
                &family_id,
                user_id,
                max,
                Duration::from_secs(86_400),
                Reason::RefreshReuse,
            )
            .unwrap()
        })
    })
}

fn revocations_max() -> u32 {
    login_service::config::DEFAULT_MAX_REVOKED_PER_USER
}

/// H1: a reuse costs the same number of statements for a family of 50 rotations and one of
/// 2 000 (each holding that many live access tokens), and a second reuse of an ended family
/// costs only the lookup. Before the fix: two to four statements per live access token, under
/// the global revocation lock, on every presentation.
async fn reuse_cost_does_not_grow_with_the_family(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("big@example.com", "pw", false).await;
    let user = user_id(&app, "big@example.com").await;
    let (small, large) = app
        .state
        .db
        .run(move |c| Ok((store_family(c, user, 50)?, store_family(c, user, 2_000)?)))
        .await
        .unwrap();
    let (first, again) = app
        .state
        .db
        .run(move |c| {
            let s = reuse(c, &small);
            let l = reuse(c, &large);
            let s2 = reuse(c, &small);
            let l2 = reuse(c, &large);
            Ok(((s, l), (s2, l2)))
        })
        .await
        .unwrap();
    let ((small_end, small_n), (large_end, large_n)) = first;
    // More live access tokens than MAX_REVOKED_PER_USER (16): one user-wide cut each.
    assert_eq!(small_end, Some(FamilyEnd::Ended(BatchOutcome::Cut)));
    assert_eq!(large_end, Some(FamilyEnd::Ended(BatchOutcome::Cut)));
    assert_eq!(
        small_n, large_n,
        "the cost of a reuse grows with the family"
    );
    assert!(small_n <= 16, "{small_n} statements for one reuse");
    let ((small_end, small_n2), (large_end, large_n2)) = again;
    assert_eq!((small_end, large_end), (None, None), "ended families");
    assert_eq!(small_n2, large_n2);
    assert!(small_n2 <= 6, "{small_n2} statements for a repeated reuse");
    // A cut each, nothing per token.
    let feed = app.feed_rows().await;
    assert!(feed.iter().all(|e| e.jti.is_none()), "{feed:?}");
    assert_eq!(feed.len(), 1, "the second cut supersedes the first");

    // A family with few live tokens still gets per-jti entries, in one insert.
    app.add_user("small@example.com", "pw", false).await;
    let user = user_id(&app, "small@example.com").await;
    let ((end, n), rows) = app
        .state
        .db
        .run(move |c| {
            let t = store_family(c, user, 3)?;
            let r = reuse(c, &t);
            Ok((r, revocations::page(c, 0, 0, 1000)?))
        })
        .await
        .unwrap();
    assert_eq!(end, Some(FamilyEnd::Ended(BatchOutcome::Tokens(4))));
    assert!(
        n <= small_n + 3 + 4,
        "{n}: at most one insert per token, and 4 tokens"
    );
    let sub = user.to_string();
    assert_eq!(
        rows.iter()
            .filter(|e| e.sub == sub && e.jti.is_some() && e.reason == "refresh_reuse")
            .count(),
        4
    );
}
db_test!(reuse_cost_does_not_grow_with_the_family);

/// H1: reuses of a huge family (20 000 live access tokens) hammered at once do not starve
/// `user revoke` (the revocation
/// writers' lock: MySQL `GET_LOCK` with a 10 s timeout, SQLite's writer lock with a 5 s busy
/// timeout). Before the fix, each reuse held the lock for thousands of statements.
async fn repeated_reuse_does_not_starve_revoke_user(db: TestDb) {
    let app = Arc::new(spawn_app(db).await);
    app.add_user("hammer@example.com", "pw", false).await;
    app.add_user("victim@example.com", "pw", false).await;
    let user = user_id(&app, "hammer@example.com").await;
    let victim = user_id(&app, "victim@example.com").await.to_string();
    let token = app
        .state
        .db
        .run(move |c| store_family(c, user, 20_000))
        .await
        .unwrap();
    let mut hammers = Vec::new();
    for _ in 0..8 {
        let (app, token) = (app.clone(), token.clone());
        hammers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..4 {
                statuses.push(refresh_with(&app, &token).await.0);
            }
            statuses
        }));
    }
    for _ in 0..3 {
        let v = victim.clone();
        let cut = app
            .state
            .db
            .run(move |c| {
                revocations::revoke_user(
                    c,
                    &v,
                    revocations::now_secs,
                    Duration::from_secs(3600),
                    Reason::Admin,
                )
            })
            .await;
        assert!(cut.is_ok(), "user revoke starved: {cut:?}");
    }
    for h in hammers {
        assert_eq!(
            h.await.unwrap(),
            [400; 4],
            "a reuse is invalid_grant, never 503"
        );
    }
}
db_test!(repeated_reuse_does_not_starve_revoke_user);

/// M2: a thief refreshed the victim's token (A1); the victim logs out with A0: A1 is revoked
/// too (it was not: logout revoked only the presented token and ended the family, so the
/// reuse that would have revoked A1 could no longer fire).
async fn logout_revokes_the_familys_other_access_tokens(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("m2@example.com", "pw", false).await;
    let (a0, rt0) = session(&app, "m2@example.com").await;
    let (s, a1, rt1) = refresh_with(&app, &rt0).await;
    assert_eq!(s, 200);
    // Another session of the user: untouched.
    let (other, other_rt) = session(&app, "m2@example.com").await;
    let r = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&a0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut revoked: Vec<(String, String)> = app
        .feed_rows()
        .await
        .into_iter()
        .map(|e| (e.jti.expect("per-token entries"), e.reason))
        .collect();
    revoked.sort();
    let mut want = vec![
        (jti(&a0), "logout".to_owned()),
        (jti(&a1), "logout".to_owned()),
    ];
    want.sort();
    assert_eq!(revoked, want);
    assert!(!revoked.iter().any(|(j, _)| *j == jti(&other)));
    assert_eq!(refresh_with(&app, &rt1).await.0, 400);
    // Logout again: idempotent.
    let r = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&a0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.feed_rows().await.len(), 2);
    assert_eq!(refresh_with(&app, &other_rt).await.0, 200);
}
db_test!(logout_revokes_the_familys_other_access_tokens);

/// L1: a reuse also revokes access tokens that expired moments ago (verifiers accept `exp`
/// plus a leeway, 30 s by default), not those expired beyond the feed's retention slack.
async fn reuse_revokes_tokens_still_inside_the_leeway(db: TestDb) {
    let app = spawn_app(db).await;
    app.add_user("l1@example.com", "pw", false).await;
    let (a0, rt0) = session(&app, "l1@example.com").await;
    let (_, a1, rt1) = refresh_with(&app, &rt0).await;
    let (_, a2, _) = refresh_with(&app, &rt1).await;
    let now = revocations::now_secs();
    for (token, exp) in [
        (a0.clone(), now - 10),
        (a1.clone(), now - revocations::RETENTION_SLACK_SECS - 1),
    ] {
        let j = jti(&token);
        app.state
            .db
            .run(move |c| {
                diesel::update(refresh_token::table.filter(refresh_token::access_jti.eq(j)))
                    .set(refresh_token::access_exp.eq(exp))
                    .execute(c)
            })
            .await
            .unwrap();
    }
    assert_eq!(refresh_with(&app, &rt0).await.0, 400);
    let mut revoked: Vec<String> = app
        .feed_rows()
        .await
        .into_iter()
        .filter_map(|e| e.jti)
        .collect();
    revoked.sort();
    let mut want = vec![jti(&a0), jti(&a2)];
    want.sort();
    assert_eq!(revoked, want, "a0 is 10 s past exp, a1 past the slack");
}
db_test!(reuse_revokes_tokens_still_inside_the_leeway);

/// L4: a refused rotation (`REFRESH_MAX_ROTATIONS` reached, or the account disabled) leaves
/// the token unused: the client's retry is refused again, not taken for a reuse (which revoked
/// the session's access tokens, or with many of them every token of the user).
async fn refused_rotation_retried_is_not_a_reuse(db: TestDb) {
    let app = spawn_app_with(db, |s| s.refresh.lifetimes.max_rotations = 1).await;
    app.add_user("l4@example.com", "pw", false).await;
    let (_, rt0) = session(&app, "l4@example.com").await;
    let (s, _, rt1) = refresh_with(&app, &rt0).await;
    assert_eq!(s, 200);
    for _ in 0..3 {
        assert_eq!(refresh_with(&app, &rt1).await.0, 400, "exhausted");
    }
    assert!(app.feed_rows().await.is_empty(), "a retry is not a reuse");
    let h = refresh::hash(&rt1);
    let row = app
        .state
        .db
        .run(move |c| refresh::find(c, &h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.used_at, None);
    // Reuse detection still works in an exhausted family.
    assert_eq!(refresh_with(&app, &rt0).await.0, 400);
    assert_eq!(app.feed_rows().await.len(), 2, "its two access tokens");

    // The account disabled behind the CLI's back (no cut): refused, and so is the retry,
    // without a reuse.
    app.add_user("l4b@example.com", "pw", false).await;
    let (_, rt) = session(&app, "l4b@example.com").await;
    app.state
        .db
        .run(|c| login_service::users::set_disabled(c, "l4b@example.com", true))
        .await
        .unwrap();
    let before = app.feed_rows().await.len();
    assert_eq!(refresh_with(&app, &rt).await.0, 400);
    assert_eq!(refresh_with(&app, &rt).await.0, 400);
    assert_eq!(app.feed_rows().await.len(), before);
}
db_test!(refused_rotation_retried_is_not_a_reuse);

/// M1: K logins × R rotations leave at most `REFRESH_MAX_SESSIONS` ×
/// (`REFRESH_MAX_ROTATIONS` + 1) rows for the user; the oldest sessions are the ones dropped,
/// and reuse is still detected in the kept ones.
async fn rows_per_user_are_bounded(db: TestDb) {
    let (sessions, rotations) = (3_u32, 4_u32);
    let app = spawn_app_with(db, |s| {
        s.refresh.lifetimes.max_sessions = sessions;
        s.refresh.lifetimes.max_rotations = rotations;
    })
    .await;
    app.add_user("m1@example.com", "pw", false).await;
    let user = user_id(&app, "m1@example.com").await;
    let rows = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            db.run(move |c| {
                refresh_token::table
                    .filter(refresh_token::user_id.eq(user))
                    .count()
                    .get_result::<i64>(c)
            })
            .await
            .unwrap()
        }
    };
    let cap = i64::from(sessions * (rotations + 1));
    let mut families = Vec::new();
    for _ in 0..6 {
        let (_, first) = session(&app, "m1@example.com").await;
        let mut rt = first.clone();
        for _ in 0..rotations {
            let (s, _, next) = refresh_with(&app, &rt).await;
            assert_eq!(s, 200);
            rt = next;
        }
        families.push((first, rt));
        let n = rows(&app).await;
        assert!(n <= cap, "{n} rows > {cap}");
    }
    // The three least recently refreshed sessions are gone, the newest three kept (both
    // answer invalid_grant now: exhausted or unknown), so look at the rows.
    let kept: Vec<bool> = {
        let mut v = Vec::new();
        for (_, last) in &families {
            let h = refresh::hash(last);
            v.push(
                app.state
                    .db
                    .run(move |c| refresh::find(c, &h))
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        v
    };
    assert_eq!(kept, [false, false, false, true, true, true]);
    // Reuse detection still works in a kept family: its first token is used.
    let (first, last) = families.last().unwrap().clone();
    assert_eq!(refresh_with(&app, &first).await.0, 400);
    assert!(
        !app.feed_rows().await.is_empty(),
        "reuse revoked the family"
    );
    let h = refresh::hash(&last);
    let row = app
        .state
        .db
        .run(move |c| refresh::find(c, &h))
        .await
        .unwrap()
        .unwrap();
    assert!(row.revoked_at.is_some(), "the family is ended");
    // A logout/login loop: ended families do not pile up.
    for _ in 0..5 {
        let (access, _) = session(&app, "m1@example.com").await;
        let r = app
            .client
            .post(app.url("/logout"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let n = rows(&app).await;
    assert!(n <= cap, "{n} rows > {cap}");
    // The cleanup deletes an ended family's rows once it ended longer ago than the slack, and
    // nothing of the live ones.
    let ended_long_ago = revocations::now_secs() - revocations::RETENTION_SLACK_SECS - 1;
    let (ended, live) = app
        .state
        .db
        .run(move |c| {
            diesel::update(refresh_token::table.filter(refresh_token::revoked_at.is_not_null()))
                .set(refresh_token::revoked_at.eq(Some(ended_long_ago)))
                .execute(c)?;
            let live = refresh_token::table
                .filter(refresh_token::revoked_at.is_null())
                .count()
                .get_result::<i64>(c)?;
            Ok((refresh::cleanup(c, revocations::now_secs())?, live))
        })
        .await
        .unwrap();
    assert!(ended > 0);
    assert_eq!(rows(&app).await, live);
}
db_test!(rows_per_user_are_bounded);
