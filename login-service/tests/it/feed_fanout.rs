//! Many followers on one login-service (issue #15 §2b): the database cost of an idle feed does
//! not grow with the number of waiting long polls, a row written by someone else (another
//! replica, the CLI) wakes them, 409 `cursor_ahead` stays right when the database is replaced,
//! and the number of waiting polls is bounded.

use std::collections::HashMap;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use auth_token::FeedPage;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use login_service::db::{Db, PoolSettings};
use login_service::revocations::{self, TokenRef};

use crate::helpers::{TestApp, TestDb, db_test, poll, spawn_app_with, state_with};

/// Statements sent, per connection URL, by every connection opened in this test binary.
static STATEMENTS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// diesel's default instrumentation for new connections: remembers the connection's URL and
/// counts each statement under it (tests run in parallel; each has its own database URL).
fn counting() -> Option<Box<dyn Instrumentation>> {
    let mut url = String::new();
    Some(Box::new(move |e: InstrumentationEvent<'_>| match e {
        InstrumentationEvent::StartEstablishConnection { url: u, .. } => u.clone_into(&mut url),
        InstrumentationEvent::StartQuery { .. } => {
            let mut map = STATEMENTS.lock().unwrap();
            *map.get_or_insert_with(HashMap::new)
                .entry(url.clone())
                .or_default() += 1;
        }
        _ => {}
    }))
}

fn count_statements() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| diesel::connection::set_default_instrumentation(counting).unwrap());
}

/// Statements sent so far to `db` (by connections opened after [`count_statements`]).
fn statements(db_url: &str) -> usize {
    let needle = db_url.strip_prefix("sqlite://").unwrap_or(db_url);
    STATEMENTS.lock().unwrap().as_ref().map_or(0, |m| {
        m.iter()
            .filter(|(k, _)| k.contains(needle))
            .map(|(_, n)| n)
            .sum()
    })
}

/// One revocation written through a pool of its own, as another replica or the CLI would.
fn revoke_elsewhere(db: &Db, jti: &str) -> i64 {
    let jti = jti.to_owned();
    db.run_sync(move |c| {
        let now = revocations::now_secs();
        let t = TokenRef {
            sub: "1",
            jti: &jti,
            iat: now,
            exp: now + 600,
        };
        revocations::revoke_token(c, &t, || now, 16, Duration::from_secs(86_400))?;
        revocations::newest_id(c)
    })
    .unwrap()
    .unwrap()
}

/// Waits (up to 10 s) until exactly `n` long polls wait on `feed`, else fails with `what`.
async fn until_waiting(feed: &login_service::feed::FeedWatch, n: usize, what: &str) {
    poll(Duration::from_secs(10), || {
        std::future::ready((feed.waiting() == n).then_some(()))
    })
    .await
    .expect(what);
}

/// The app with room for the many followers of one test: they all share one address, which
/// `FEED_MAX_WAITERS_PER_PEER` (16 by default) would otherwise refuse past 16.
async fn followed_app(db: TestDb) -> TestApp {
    spawn_app_with(db, |s| s.revocation.feed_max_waiters_per_peer = 1_000).await
}

fn other_pool(db: &TestDb) -> Db {
    Db::new(
        db.db_url(),
        &PoolSettings {
            max_size: 2,
            connection_timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

/// One follower as ext-authz follows: long polls at its cursor, again and again, until `stop`.
fn follower(
    app: &TestApp,
    mut cursor: i64,
    wait: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<i64> {
    let client = app.client.clone();
    let base = app.url("/revocations");
    tokio::spawn(async move {
        while !*stop.borrow() {
            let r = client
                .get(format!("{base}?since={cursor}&wait={wait}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let page: FeedPage = r.json().await.unwrap();
            cursor = page.cursor;
        }
        cursor
    })
}

/// Statements sent to the database during `window` while `k` followers long-poll an idle feed.
async fn idle_statements(
    app: &TestApp,
    url: &str,
    cursor: i64,
    k: usize,
    window: Duration,
) -> usize {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let followers: Vec<_> = (0..k)
        .map(|_| follower(app, cursor, 1, stop.clone()))
        .collect();
    until_waiting(&app.state.feed, k, "every follower waits").await;
    let before = statements(url);
    tokio::time::sleep(window).await;
    let during = statements(url) - before;
    stop_tx.send(true).unwrap();
    for f in followers {
        assert_eq!(f.await.unwrap(), cursor, "nothing new in an idle feed");
    }
    during
}

/// 1 follower and 50 followers over the same idle time cost the database the same statements
/// (within a small constant: the watcher's reads are timed, so ±2 reads and their pool
/// checkouts). Before the watcher: two queries per 150 ms per waiting poll, ~50× as many.
/// Each follower's wait is 1 s, so the window also holds re-polls at the newest id: free.
async fn idle_cost_does_not_grow_with_followers(db: TestDb) {
    count_statements();
    let url = db.url.clone();
    let other = other_pool(&db);
    let app = followed_app(db).await;
    let cursor = tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "seed"))
        .await
        .unwrap();
    let window = Duration::from_millis(2500);
    let one = idle_statements(&app, &url, cursor, 1, window).await;
    let many = idle_statements(&app, &url, cursor, 50, window).await;
    eprintln!("idle statements in {window:?}: 1 follower {one}, 50 followers {many}");
    assert!(one > 0, "the watcher reads while a poll waits");
    assert!(
        many <= one + 12,
        "50 followers cost {many} statements, 1 follower {one}"
    );
}
db_test!(idle_cost_does_not_grow_with_followers);

/// A row written by someone else (another replica, the CLI: not this process, so no nudge)
/// wakes every waiting poll long before its `wait` ends: the watcher reads the database.
async fn a_row_written_elsewhere_wakes_waiting_polls(db: TestDb) {
    let other = other_pool(&db);
    let app = followed_app(db).await;
    let cursor = app.feed_rows().await.last().map_or(0, |r| r.id);
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&format!("/revocations?since={cursor}&wait=20"));
            tokio::spawn(async move {
                let page: FeedPage = client.get(url).send().await.unwrap().json().await.unwrap();
                (page, Instant::now())
            })
        })
        .collect();
    until_waiting(&app.state.feed, 20, "every poll waits").await;
    let written = Instant::now();
    let id = tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "elsewhere"))
        .await
        .unwrap();
    for p in polls {
        let (page, at) = p.await.unwrap();
        assert_eq!(page.cursor, id);
        assert_eq!(page.revocations.len(), 1);
        assert_eq!(page.revocations[0].jti.as_deref(), Some("elsewhere"));
        // The bound is loose (a shared machine); the interval is 150 ms, the wait 20 s.
        let after = at.duration_since(written);
        assert!(
            after < Duration::from_secs(5),
            "woken {after:?} after the write"
        );
    }
}
db_test!(a_row_written_elsewhere_wakes_waiting_polls);

/// Review F1: with the watcher gone (its task died, or its read hangs on a dead connection), a
/// waiting poll must not answer an empty page from memory at the end of its wait while the
/// database holds a new row: ext-authz would take it as "up to date" and let revoked tokens
/// through. The app is served here without its watcher, as if the task had died.
async fn a_dead_watcher_never_hides_a_row_behind_an_empty_page(db: TestDb) {
    let other = other_pool(&db);
    let state = crate::helpers::state_with(&db, |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = login_service::routes::router(state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let cursor = {
        let other = other_pool(&db);
        tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "before"))
            .await
            .unwrap()
    };
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/revocations?since={cursor}&wait=2");
    let poll_task = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<FeedPage>().await.unwrap()
    });
    until_waiting(&state.feed, 1, "the poll waits").await;
    let id = tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "hidden"))
        .await
        .unwrap();
    let page = poll_task.await.unwrap();
    server.abort();
    assert_eq!(page.cursor, id, "the new row, not an empty page: {page:?}");
    assert_eq!(page.revocations[0].jti.as_deref(), Some("hidden"));
    drop(db);
}
db_test!(a_dead_watcher_never_hides_a_row_behind_an_empty_page);

async fn status_of(app: &TestApp, query: &str) -> (u16, serde_json::Value) {
    let r = app.get(&format!("/revocations{query}")).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// 409 `cursor_ahead` right after the database is replaced (here: emptied, so its newest id is
/// below every follower's cursor), although the watcher last published the old newest id: a
/// poll waiting since before is told at the watcher's next read, a new long poll and a plain
/// read at once. And never a 409 from a stale value: the cursor equal to the newest id is fine.
async fn cursor_ahead_right_after_the_database_is_replaced(db: TestDb) {
    let other = other_pool(&db);
    let app = followed_app(db).await;
    let o = other.clone();
    let newest = tokio::task::spawn_blocking(move || {
        revoke_elsewhere(&o, "a");
        revoke_elsewhere(&o, "b")
    })
    .await
    .unwrap();
    assert_eq!(
        status_of(&app, &format!("?since={newest}&wait=0")).await.0,
        200
    );
    let waiting = {
        let client = app.client.clone();
        let url = app.url(&format!("/revocations?since={newest}&wait=20"));
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), Instant::now())
        })
    };
    until_waiting(&app.state.feed, 1, "the poll waits").await;
    // The replacement: every row gone (a restored older backup has fewer).
    let replaced = Instant::now();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl as _;
        other
            .run_sync(|c| diesel::delete(login_service::schema::revocation::table).execute(c))
            .unwrap();
    })
    .await
    .unwrap();
    let (status, body) = status_of(&app, &format!("?since={newest}&wait=0")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("cursor_ahead"))
    );
    let (status, body) = status_of(&app, &format!("?since={newest}&wait=20")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("cursor_ahead"))
    );
    let (status, at) = waiting.await.unwrap();
    assert_eq!(status, 409);
    let after = at.duration_since(replaced);
    assert!(
        after < Duration::from_secs(5),
        "told {after:?} after (wait 20 s)"
    );
    // Since 0 is never ahead.
    assert_eq!(status_of(&app, "?since=0&wait=1").await.0, 200);
}
db_test!(cursor_ahead_right_after_the_database_is_replaced);

/// Waiting polls are bounded (`FEED_MAX_WAITERS`): one more is answered 503 `feed_busy` with
/// `Retry-After` at once; a read without a wait is still served, and a freed place is reused.
async fn waiting_polls_are_bounded(db: TestDb) {
    let other = other_pool(&db);
    let app = spawn_app_with(db, |s| s.revocation.feed_max_waiters = 2).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let followers: Vec<_> = (0..2)
        .map(|_| follower(&app, 0, 20, stop.clone()))
        .collect();
    until_waiting(&app.state.feed, 2, "both wait").await;
    let r = app.get("/revocations?since=0&wait=5").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "feed_busy");
    assert_eq!(status_of(&app, "?since=0&wait=0").await.0, 200);
    // A logout-free way to end both waits: a row.
    stop_tx.send(true).unwrap();
    tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "x"))
        .await
        .unwrap();
    for f in followers {
        f.await.unwrap();
    }
    assert_eq!(app.state.feed.waiting(), 0);
    assert_eq!(status_of(&app, "?since=0&wait=1").await.0, 200);
}
db_test!(waiting_polls_are_bounded);

/// Review F2: a new row wakes every poll waiting at the same cursor, and they share one page
/// query: 40 polls cost about one query (two statements with the pool's check-out), not 40,
/// besides the watcher's timed reads during the wake-up (counted from the elapsed time).
async fn polls_woken_by_one_row_share_its_page_query(db: TestDb) {
    count_statements();
    let url = db.url.clone();
    let other = other_pool(&db);
    let app = followed_app(db).await;
    // What one write costs by itself (nobody waits, so the watcher is parked); the first
    // write also opens the pool's connection.
    let (u, o) = (url.clone(), other.clone());
    let (write, cursor) = tokio::task::spawn_blocking(move || {
        revoke_elsewhere(&o, "seed");
        let before = statements(&u);
        let id = revoke_elsewhere(&o, "calibrate");
        (statements(&u) - before, id)
    })
    .await
    .unwrap();
    let polls: Vec<_> = (0..40)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&format!("/revocations?since={cursor}&wait=20"));
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<FeedPage>().await.unwrap()
            })
        })
        .collect();
    until_waiting(&app.state.feed, 40, "every poll waits").await;
    // Why settle: a poll registers before its own first look (a cursor check, or a page query
    // while the newest id is unknown); those must not count as the wake-up's statements.
    poll(Duration::from_secs(10), || {
        std::future::ready(
            (app.state.feed.newest() == login_service::feed::Newest::Id(cursor)).then_some(()),
        )
    })
    .await
    .expect("the watcher read the newest id");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let before = statements(&url);
    let o = other.clone();
    let id = tokio::task::spawn_blocking(move || revoke_elsewhere(&o, "shared"))
        .await
        .unwrap();
    for p in polls {
        let page = p.await.unwrap();
        assert_eq!(page.cursor, id);
        assert_eq!(page.revocations[0].jti.as_deref(), Some("shared"));
    }
    let during = statements(&url) - before - write;
    let watcher_reads = started.elapsed().as_millis() / 150 + 2;
    let allowed = usize::try_from(2 * watcher_reads).unwrap() + 4;
    assert!(
        during <= allowed,
        "40 woken polls sent {during} statements (allowed {allowed}: one shared page query and \
         {watcher_reads} watcher reads, two statements each)"
    );
}
db_test!(polls_woken_by_one_row_share_its_page_query);

/// Review F4: a shutdown ends the waiting long polls at once (each answered 200 with what is
/// known, its cursor unchanged), so they do not hold the drain for the rest of their wait.
async fn shutdown_ends_waiting_polls(db: TestDb) {
    let state = state_with(&db, |s| s.shutdown_timeout = Duration::from_secs(60)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(login_service::server::serve(
        listener,
        state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let waiting = tokio::spawn(
        client
            .get(format!("http://{addr}/revocations?since=0&wait=19"))
            .send(),
    );
    until_waiting(&state.feed, 1, "the poll waits").await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let page: FeedPage = r.json().await.unwrap();
    assert!(page.revocations.is_empty());
    assert_eq!(page.cursor, 0, "the cursor does not move");
    server.await.unwrap().unwrap();
    // Why 10 s: far under the poll's 19 s wait, far over a drain that ends at once.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the wait held the shutdown for {:?}",
        asked.elapsed()
    );
}
db_test!(shutdown_ends_waiting_polls);

/// Review F3: one client address cannot take every waiting place (`FEED_MAX_WAITERS_PER_PEER`):
/// its next poll is answered 503 `feed_busy` while another address is still admitted.
async fn one_address_cannot_take_every_waiting_place(db: TestDb) {
    let other = other_pool(&db);
    let app = spawn_app_with(db, |s| {
        s.revocation.feed_max_waiters = 10;
        s.revocation.feed_max_waiters_per_peer = 2;
    })
    .await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mine: Vec<_> = (0..2)
        .map(|_| follower(&app, 0, 20, stop.clone()))
        .collect();
    until_waiting(&app.state.feed, 2, "both wait").await;
    let r = app.get("/revocations?since=0&wait=5").await;
    assert_eq!(r.status(), 503, "a third poll of the same address");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "feed_busy");
    // A forwarded-address header does not make another client: the feed counts TCP peers.
    let r = app
        .client
        .get(app.url("/revocations?since=0&wait=5"))
        .header("x-envoy-external-address", "10.0.0.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a spoofed address is the same peer");
    // Another address (a second loopback source) still waits.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let another = tokio::spawn(
        elsewhere
            .get(app.url("/revocations?since=0&wait=20"))
            .send(),
    );
    until_waiting(&app.state.feed, 3, "another address is admitted").await;
    stop_tx.send(true).unwrap();
    tokio::task::spawn_blocking(move || revoke_elsewhere(&other, "x"))
        .await
        .unwrap();
    assert_eq!(another.await.unwrap().unwrap().status(), 200);
    for f in mine {
        f.await.unwrap();
    }
    assert_eq!(app.state.feed.waiting(), 0);
}
db_test!(one_address_cannot_take_every_waiting_place);
