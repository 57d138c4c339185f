//! The JWKS/discovery client against a local HTTP server: bounds, redirects, document rules.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use ext_authz::issuers::IssuerSettings;
use ext_authz::jwks_fetch::{FetchError, FetchLimits, JwksClient, MAX_KEYS};
use serde_json::json;

/// Serves the scenarios on 127.0.0.1; returns the base URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("http://127.0.0.1:{}", addr.port());
    let issuer = base.clone();
    let jwks = json!({"keys": [{"kty": "EC", "kid": "a"}]}).to_string();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get({
                let issuer = issuer.clone();
                move || async move {
                    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                }
            }),
        )
        .route(
            "/jwks",
            get(move || async move {
                ([(header::CACHE_CONTROL, "public, max-age=120")], jwks).into_response()
            }),
        )
        .route(
            "/other/.well-known/openid-configuration",
            get(|| async { axum::Json(json!({"issuer": "https://evil", "jwks_uri": "https://evil/jwks"})) }),
        )
        .route(
            "/plain/.well-known/openid-configuration",
            get({
                let issuer = issuer.clone();
                move || async move {
                    axum::Json(json!({"issuer": format!("{issuer}/plain"), "jwks_uri": "http://10.1.2.3/jwks"}))
                }
            }),
        )
        .route(
            "/big",
            get(|| async {
                // Chunked (no Content-Length): the bound is counted while reading.
                let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 16 * 1024]));
                Response::new(Body::from_stream(tokio_stream::iter(chunks)))
            }),
        )
        .route("/big-declared", get(|| async { " ".repeat(300 * 1024) }))
        .route(
            "/many",
            get(|| async {
                let keys: Vec<_> = (0..=MAX_KEYS).map(|i| json!({"kid": i.to_string()})).collect();
                axum::Json(json!({"keys": keys}))
            }),
        )
        .route("/same-host-redirect", get(|| async { Redirect::temporary("/jwks") }))
        .route(
            "/other-host-redirect",
            get(move || async move {
                // localhost is another host name than 127.0.0.1, though the same machine.
                Redirect::temporary(&format!("http://localhost:{}/jwks", addr.port()))
            }),
        )
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn client() -> JwksClient {
    JwksClient::new(FetchLimits::default()).unwrap()
}

#[tokio::test]
async fn discovery_then_jwks() {
    let base = serve().await;
    let uri = client()
        .discover(&IssuerSettings::new("t", &base))
        .await
        .unwrap();
    assert_eq!(uri, format!("{base}/jwks"));
    let set = client().jwks(&uri, true).await.unwrap();
    assert_eq!(set.keys, [json!({"kty": "EC", "kid": "a"})]);
    assert_eq!(set.cache_control.as_deref(), Some("public, max-age=120"));
}

/// A discovery document naming another issuer, or a plain-http jwks_uri off loopback: refused.
#[tokio::test]
async fn discovery_rules() {
    let base = serve().await;
    let err = client()
        .discover(&IssuerSettings::new("t", &format!("{base}/other")))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Document { .. }), "{err}");
    let err = client()
        .discover(&IssuerSettings::new("t", &format!("{base}/plain")))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Url(_)), "{err}");
}

/// Oversized JWKS responses are refused, declared or streamed; too many keys too.
#[tokio::test]
async fn oversized_responses_are_refused() {
    let base = serve().await;
    for path in ["/big", "/big-declared"] {
        let err = client()
            .jwks(&format!("{base}{path}"), true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 262_144, .. }),
            "{path}: {err}"
        );
    }
    let err = client()
        .jwks(&format!("{base}/many"), true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than 64 keys"), "{err}");
}

/// A redirect to another host is refused; one on the same host is followed.
#[tokio::test]
async fn redirect_to_another_host_is_refused() {
    let base = serve().await;
    let set = client()
        .jwks(&format!("{base}/same-host-redirect"), true)
        .await
        .unwrap();
    assert_eq!(set.keys.len(), 1);
    let err = client()
        .jwks(&format!("{base}/other-host-redirect"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirect(_)), "{err}");
}

#[tokio::test]
async fn failures_are_errors() {
    let base = serve().await;
    let err = client()
        .jwks(&format!("{base}/down"), true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
    let err = client()
        .jwks("http://10.255.255.1/jwks", true)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Url(_)), "{err}");
}
