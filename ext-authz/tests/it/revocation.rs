//! Following a revocation feed (a fake login-service feed on port 0): not ready before the
//! snapshot, a revoked token refused within a second, stale feed → NOT_SERVING and, fail-closed,
//! UNAVAILABLE; recovery; the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ext_authz::server;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    AUTHZ_SERVICE, SECRET, authz, check, check_request, config, eventually, health, http_status,
    metric_value, scrape, tcp_channel, token, wait_for_health,
};

#[derive(Default)]
struct Feed {
    up: AtomicBool,
    entries: Mutex<Vec<serde_json::Value>>,
    token_seen: Mutex<Option<String>>,
}

#[derive(serde::Deserialize)]
struct Params {
    since: i64,
    wait: u64,
}

async fn feed(
    State(feed): State<Arc<Feed>>,
    Query(p): Query<Params>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    *feed.token_seen.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !feed.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(p.wait);
    loop {
        let news: Vec<serde_json::Value> = feed
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["id"].as_i64().unwrap() > p.since)
            .cloned()
            .collect();
        if !news.is_empty() || tokio::time::Instant::now() >= deadline {
            let cursor = news.last().map_or(p.since, |e| e["id"].as_i64().unwrap());
            return axum::Json(serde_json::json!({
                "cursor": cursor, "more": false, "revocations": news
            }))
            .into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn jti(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_feed_and_fails_closed_when_it_is_stale() {
    let state = Arc::new(Feed::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let feed_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/revocations", axum::routing::get(feed))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{feed_addr}/revocations");
    let config = config(&[
        "--jwt-secret",
        SECRET,
        "--revocation-feed-url",
        &url,
        "--revocation-feed-token",
        "feed-secret",
        "--revocation-grace",
        "1s",
        "--revocation-fail-closed",
        "--revocation-feed-wait",
        "1s",
    ]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let channel = tcp_channel(running.grpc_addr).await;
    let mut client = authz(channel.clone());
    let tok = token("default", SECRET, &[]);
    let bearer = format!("Bearer {tok}");

    // Feed down: no snapshot, not ready, no decision.
    assert_eq!(health(channel.clone(), "").await, ServingStatus::NotServing);
    let err = client
        .check(check_request(Some(&bearer), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Feed up: snapshot, SERVING, the token is allowed; the feed token is sent.
    state.up.store(true, Ordering::SeqCst);
    wait_for_health(
        "SERVING",
        Duration::from_secs(10),
        &channel,
        AUTHZ_SERVICE,
        ServingStatus::Serving,
    )
    .await;
    let resp = check(&mut client, Some(&bearer), &[]).await;
    assert_eq!(http_status(&resp), 200);
    assert_eq!(
        state.token_seen.lock().unwrap().as_deref(),
        Some("Bearer feed-secret")
    );

    // The token is revoked: refused within a second.
    let exp = i64::try_from(auth_token::now_unix()).unwrap() + 600;
    state.entries.lock().unwrap().push(serde_json::json!({
        "id": 1, "sub": "7", "jti": jti(&tok), "revoked_at": exp - 600, "expires_at": exp,
        "reason": "logout"
    }));
    let revoked_at = std::time::Instant::now();
    let resp = eventually("revoked", Duration::from_secs(1), || {
        let mut client = client.clone();
        let request = check_request(Some(&bearer), &[]);
        async move {
            let resp = client.check(request).await.unwrap().into_inner();
            (http_status(&resp) == 401).then_some(resp)
        }
    })
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    let Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(denied)) =
        resp.http_response
    else {
        panic!("not a denial")
    };
    assert_eq!(
        denied.body,
        r#"{"error":"invalid_token","message":"token revoked"}"#
    );
    let text = scrape(running.metrics_addr).await;
    assert_eq!(
        metric_value(
            &text,
            r#"ext_authz_checks_total{decision="deny",reason="revoked"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, "ext_authz_revocations_known"),
        Some(1.0)
    );
    // Another token of the same user is untouched.
    let other = format!("Bearer {}", token("default", SECRET, &[]));
    let resp = check(&mut client, Some(&other), &[]).await;
    assert_eq!(http_status(&resp), 200);

    // Feed down for longer than the grace: NOT_SERVING, and fail-closed: UNAVAILABLE.
    state.up.store(false, Ordering::SeqCst);
    wait_for_health(
        "NOT_SERVING",
        Duration::from_secs(15),
        &channel,
        AUTHZ_SERVICE,
        ServingStatus::NotServing,
    )
    .await;
    let err = client
        .check(check_request(Some(&other), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let text = scrape(running.metrics_addr).await;
    assert!(metric_value(&text, "ext_authz_revocation_feed_errors_total").unwrap() >= 1.0);
    assert!(metric_value(&text, "ext_authz_revocation_feed_lag_seconds").unwrap() > 0.5);

    // Back: SERVING again, what was revoked still is.
    state.up.store(true, Ordering::SeqCst);
    wait_for_health(
        "SERVING again",
        Duration::from_secs(15),
        &channel,
        "",
        ServingStatus::Serving,
    )
    .await;
    let resp = check(&mut client, Some(&bearer), &[]).await;
    assert_eq!(http_status(&resp), 401);

    running.shutdown();
    running.wait().await.unwrap();
}

#[test]
fn feed_url_is_validated() {
    for bad in ["not a url", "ftp://host/revocations", "http://"] {
        let c = config(&["--jwt-secret", SECRET, "--revocation-feed-url", bad]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--revocation-feed-url"), "{bad}: {err}");
    }
    let c = config(&["--jwt-secret", SECRET]);
    assert!(c.feed_config().is_none(), "off by default");
    let c = config(&[
        "--jwt-secret",
        SECRET,
        "--revocation-feed-url",
        "http://login-service:5000/revocations",
    ]);
    c.validate().unwrap();
    let feed = c.feed_config().unwrap();
    assert_eq!(feed.grace, Duration::from_secs(30));
    assert!(!feed.fail_closed);
}
