//! The feed follower's snapshot rule, held mid-way (issue #20): after a 409 `cursor_ahead` the
//! follower reads a new snapshot page by page, and until its last page has arrived the OLD set
//! stays in force and nothing of the new one applies. A scripted feed (pages of one entry, a
//! request it holds unanswered) makes the half-read state last as long as the test needs; the
//! same protocol against the real login-service is `e2e/tests/e2e/feed.rs`. Each test runs with
//! the `feed-cursor`/`feed-more` headers a follower reads to ask for the next page early (issue
//! #15 §2), without them (an older login-service), and with headers that lie: the body decides.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ext_authz::server;

use crate::support::{
    FeedParams, SECRET, authz, check, config, eventually, http_status, metric_value, scrape,
    serve_feed, tcp_channel, token,
};

/// The feed's rows, one per page; a request with `since == hold_at` (when not 0) is held
/// unanswered until `hold_at` changes.
#[derive(Default)]
struct Scripted {
    rows: Mutex<Vec<serde_json::Value>>,
    hold_at: AtomicI64,
    /// Set when a request was held.
    held: AtomicBool,
    /// `feed-cursor`/`feed-more`: [`NO_HEADERS`], [`TRUE_HEADERS`] or [`LYING_HEADERS`].
    headers: AtomicU8,
    /// When not 0: the request with `since` one below it is answered once with a 200 whose body
    /// is not a page (the page's true headers, so a request ahead is already on its way).
    broken_once: AtomicI64,
}

/// An older login-service: no headers, the follower waits for each body.
const NO_HEADERS: u8 = 0;
/// login-service's headers: the body's cursor and `more`.
const TRUE_HEADERS: u8 = 1;
/// Headers naming the next cursor and the opposite `more`: the body must win.
const LYING_HEADERS: u8 = 2;

async fn scripted(
    State(feed): State<Arc<Scripted>>,
    Query(p): Query<FeedParams>,
) -> axum::response::Response {
    let newest = feed
        .rows
        .lock()
        .unwrap()
        .last()
        .map_or(0, |r| r["id"].as_i64().unwrap());
    if p.since > newest {
        return (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": "cursor_ahead", "message": "x"})),
        )
            .into_response();
    }
    while p.since != 0 && p.since == feed.hold_at.load(Ordering::SeqCst) {
        feed.held.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let broken = feed.broken_once.load(Ordering::SeqCst);
    if broken != 0 && p.since == broken - 1 {
        feed.broken_once.store(0, Ordering::SeqCst);
        let mut response = (
            [("content-type", "application/json")],
            r#"{"cursor":"a large blob a proxy wrote","revocations":[]}"#,
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(auth_token::feed::CURSOR_HEADER, broken.into());
        headers.insert(auth_token::feed::MORE_HEADER, "true".parse().unwrap());
        return response;
    }
    let rows = feed.rows.lock().unwrap().clone();
    let mut news = rows.iter().filter(|r| r["id"].as_i64().unwrap() > p.since);
    let page: Vec<serde_json::Value> = news.next().cloned().into_iter().collect();
    let more = news.next().is_some();
    if page.is_empty() && p.wait > 0 {
        // A short long poll: no busy loop of empty answers.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cursor = page.last().map_or(p.since, |r| r["id"].as_i64().unwrap());
    let mut response =
        axum::Json(serde_json::json!({"cursor": cursor, "more": more, "revocations": page}))
            .into_response();
    let (cursor, more) = match feed.headers.load(Ordering::SeqCst) {
        TRUE_HEADERS => (cursor, more),
        LYING_HEADERS => (cursor + 1, !more),
        _ => return response,
    };
    let headers = response.headers_mut();
    headers.insert(auth_token::feed::CURSOR_HEADER, cursor.into());
    headers.insert(
        auth_token::feed::MORE_HEADER,
        more.to_string().parse().unwrap(),
    );
    response
}

fn row(id: i64, token: &str) -> serde_json::Value {
    let claims = auth_token::testing::claims_json(token);
    let exp = claims["exp"].as_i64().unwrap();
    serde_json::json!({
        "id": id, "sub": claims["sub"], "jti": claims["jti"], "revoked_at": exp - 600,
        "expires_at": exp, "reason": "logout"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_replaces_the_old_set_only_once_complete() {
    snapshot_rule(TRUE_HEADERS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_headers_a_new_snapshot_replaces_the_old_set_only_once_complete() {
    snapshot_rule(NO_HEADERS).await;
}

/// Headers that contradict the body (the next page's cursor asked too early, `more` flipped)
/// never lose a page nor stop the snapshot: the body decides, the early request is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_headers_neither_lose_a_page_nor_stop_the_snapshot() {
    snapshot_rule(LYING_HEADERS).await;
}

/// A 200 whose body is not a page, in the middle of the snapshot (its headers already sent a
/// request ahead): the follower drops that request, asks for the same page again after its
/// backoff, and loses nothing (the page parse is borrowed since issue #15 §2: the error path is
/// the follower's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_page_mid_snapshot_is_read_again_and_nothing_is_lost() {
    let feed = Arc::new(Scripted::default());
    feed.headers.store(TRUE_HEADERS, Ordering::SeqCst);
    feed.broken_once.store(2, Ordering::SeqCst);
    let revoked: Vec<String> = (0..3).map(|_| token("default", SECRET, &[])).collect();
    *feed.rows.lock().unwrap() = revoked
        .iter()
        .enumerate()
        .map(|(i, t)| row(i64::try_from(i).unwrap() + 1, t))
        .collect();
    let url = serve_feed(Arc::clone(&feed), scripted).await;
    let config = config(&["--jwt-secret", SECRET, "--revocation-feed-url", &url]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let metrics = running.metrics_addr;
    eventually(
        "the three-page snapshot",
        Duration::from_secs(20),
        || async {
            (metric_value(&scrape(metrics).await, "ext_authz_revocations_known ") == Some(3.0))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        feed.broken_once.load(Ordering::SeqCst),
        0,
        "the broken page was served"
    );
    let mut client = authz(tcp_channel(running.grpc_addr).await);
    for t in &revoked {
        let status = http_status(&check(&mut client, Some(&format!("Bearer {t}")), &[]).await);
        assert_eq!(status, 401);
    }
    running.shutdown();
    running.wait().await.unwrap();
}

async fn snapshot_rule(headers: u8) {
    let feed = Arc::new(Scripted::default());
    feed.headers.store(headers, Ordering::SeqCst);
    let old: Vec<String> = (0..3).map(|_| token("default", SECRET, &[])).collect();
    let new: Vec<String> = (0..2).map(|_| token("default", SECRET, &[])).collect();
    *feed.rows.lock().unwrap() = old
        .iter()
        .enumerate()
        .map(|(i, t)| row(i64::try_from(i).unwrap() + 1, t))
        .collect();
    let url = serve_feed(Arc::clone(&feed), scripted).await;

    let config = config(&[
        "--jwt-secret",
        SECRET,
        "--revocation-feed-url",
        &url,
        "--revocation-feed-wait",
        "1s",
    ]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let mut client = authz(tcp_channel(running.grpc_addr).await);
    let metrics = running.metrics_addr;
    let known =
        move || async move { metric_value(&scrape(metrics).await, "ext_authz_revocations_known ") };
    eventually(
        "the three-page snapshot",
        Duration::from_secs(20),
        || async { (known().await == Some(3.0)).then_some(()) },
    )
    .await;
    let status = |t: &str| format!("Bearer {t}");
    for t in &old {
        assert_eq!(
            http_status(&check(&mut client, Some(&status(t)), &[]).await),
            401
        );
    }

    // The database is replaced (ids start again, newest 2 < cursor 3: 409), and the second
    // page of the new snapshot is held.
    feed.hold_at.store(1, Ordering::SeqCst);
    *feed.rows.lock().unwrap() = new
        .iter()
        .enumerate()
        .map(|(i, t)| row(i64::try_from(i).unwrap() + 1, t))
        .collect();
    eventually(
        "the second page requested",
        Duration::from_secs(20),
        || async { feed.held.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    // Half-read: the old set is in force, nothing of the new one applies.
    for t in &old {
        assert_eq!(
            http_status(&check(&mut client, Some(&status(t)), &[]).await),
            401,
            "an old revocation was dropped before the new snapshot was complete"
        );
    }
    assert_eq!(
        http_status(&check(&mut client, Some(&status(&new[0])), &[]).await),
        200,
        "a page of an incomplete snapshot was applied"
    );
    assert_eq!(known().await, Some(3.0));

    // Released: the complete new snapshot replaces the old set.
    feed.hold_at.store(0, Ordering::SeqCst);
    eventually("the new snapshot", Duration::from_secs(20), || async {
        (known().await == Some(2.0)).then_some(())
    })
    .await;
    for t in &new {
        assert_eq!(
            http_status(&check(&mut client, Some(&status(t)), &[]).await),
            401
        );
    }
    assert_eq!(
        http_status(&check(&mut client, Some(&status(&old[0])), &[]).await),
        200
    );
    running.shutdown();
    running.wait().await.unwrap();
}
