//! Every error is JSON `{"error","message"}`: credentials, routing, limits, health endpoints.

use serde_json::Value;

use crate::helpers::{TestDb, basic, db_test, spawn_app};

async fn json_error(r: reqwest::Response, status: u16, code: &str) -> reqwest::header::HeaderMap {
    assert_eq!(r.status().as_u16(), status, "expected {code}");
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "application/json", "{code}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    headers
}

async fn credential_errors(db: TestDb) {
    let app = spawn_app(db).await;
    // Missing.
    let r = app.client.post(app.url("/login")).send().await.unwrap();
    let h = json_error(r, 401, "missing_credentials").await;
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    // Another scheme counts as missing Basic credentials.
    let r = app.login_raw("Bearer abc.def.ghi", "192.0.2.9").await;
    json_error(r, 401, "missing_credentials").await;
    // Malformed: bad base64, no colon, invalid UTF-8, empty.
    for auth in [
        "Basic !!!notbase64".to_owned(),
        basic(b"no-colon-here"),
        basic(&[0xff, 0xfe, b':', b'p']),
        "Basic".to_owned(),
    ] {
        let r = app.login_raw(&auth, "192.0.2.9").await;
        json_error(r, 400, "malformed_credentials").await;
    }
    // Scheme is case-insensitive.
    app.add_user("case@example.com", "pw", false).await;
    let auth = basic(b"case@example.com:pw").replacen("Basic", "bASIC", 1);
    assert_eq!(app.login_raw(&auth, "192.0.2.9").await.status(), 200);
}
db_test!(credential_errors);

async fn routing_and_limit_errors(db: TestDb) {
    let app = spawn_app(db).await;
    let r = app.get("/nope").await;
    json_error(r, 404, "not_found").await;
    let r = app.get("/login").await;
    let h = json_error(r, 405, "method_not_allowed").await;
    assert!(h.contains_key("allow"));
    let r = app
        .client
        .post(app.url("/login"))
        .header("authorization", basic(b"a@b.c:pw"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    json_error(r, 413, "payload_too_large").await;
    let r = app
        .client
        .post(app.url("/login"))
        .header("x-padding", "p".repeat(10_000))
        .send()
        .await
        .unwrap();
    json_error(r, 431, "headers_too_large").await;
}
db_test!(routing_and_limit_errors);

async fn health_ready_metrics(db: TestDb) {
    let app = spawn_app(db).await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let _ = app.login("m@example.com", "x", "192.0.2.10").await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("login_attempts_total{outcome=\"invalid_credentials\"} 1"),
        "{text}"
    );
    assert!(text.contains("login_duration_seconds_count 1"), "{text}");
    assert!(text.contains("login_db_pool_connections"), "{text}");
}
db_test!(health_ready_metrics);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_json() {
    let app = crate::helpers::spawn_app_with(TestDb::sqlite(), |s| {
        s.request_timeout = std::time::Duration::from_millis(1);
    })
    .await;
    app.add_user("slow@example.com", "pw", false).await;
    // An argon2 check takes far longer than 1 ms.
    let r = app.login("slow@example.com", "pw", "192.0.2.11").await;
    json_error(r, 408, "request_timeout").await;
}
