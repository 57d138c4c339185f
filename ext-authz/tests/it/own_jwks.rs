//! Our own issuer's keys from `--jwks-url` (login-service's `/.well-known/jwks.json`) beside the
//! keys directory, through the real server: readiness, both sources verifying side by side (a
//! reload of one never drops the other's keys), rotation and removal, the issuer down, kid
//! conflicts, HMAC (`oct`) keys refused, and the unknown-kid throttle's stale wake-up (issue
//! #12, item 3).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_token::Key;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use ext_authz::server;
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// An Ed25519 signing key and its public JWK under `kid`.
struct EdKey {
    signing: Key,
    public_pem: String,
    jwk: Value,
}

impl EdKey {
    fn new(kid: &str) -> Self {
        let (private, public) = auth_token::testing::ed25519_pem_pair();
        let signing = Key::ed25519_private_pem(kid, private.as_bytes()).unwrap();
        let jwk = serde_json::to_value(
            Key::public_pem(kid, public.as_bytes())
                .unwrap()
                .public_jwk(),
        )
        .unwrap();
        Self {
            signing,
            public_pem: public,
            jwk,
        }
    }

    /// A valid token of our own issuer signed with this key.
    fn token(&self) -> String {
        auth_token::testing::mint(
            &self.signing,
            "7",
            "it@example.com",
            &[],
            auth_token::now_unix(),
            Duration::from_secs(600),
        )
    }
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<Value>,
    down: bool,
    fetches: usize,
}

/// login-service's JWKS as far as ext-authz sees it: publishes any key set, can be down, can
/// hold its answers (to act while a fetch is in flight), counts fetches.
#[derive(Clone)]
struct JwksServer {
    url: String,
    state: Arc<Mutex<State>>,
    held: Arc<tokio::sync::watch::Sender<bool>>,
}

impl JwksServer {
    async fn start(keys: &[&Value], cache_control: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            listener.local_addr().unwrap().port()
        );
        let server = Self {
            url,
            state: Arc::default(),
            held: Arc::new(tokio::sync::watch::channel(false).0),
        };
        server.publish(keys);
        let (state, held) = (Arc::clone(&server.state), Arc::clone(&server.held));
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (state, mut held) = (Arc::clone(&state), held.subscribe());
                async move {
                    state.lock().unwrap().fetches += 1;
                    let _ = held.wait_for(|h| !*h).await;
                    let st = state.lock().unwrap();
                    if st.down {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    (
                        [(header::CACHE_CONTROL, cache_control)],
                        axum::Json(json!({"keys": st.keys})),
                    )
                        .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    fn publish(&self, keys: &[&Value]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| (*k).clone()).collect();
    }

    fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// While held, requests are counted but not answered.
    fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }

    fn fetches(&self) -> usize {
        self.state.lock().unwrap().fetches
    }
}

async fn start(keys_dir: &std::path::Path, jwks: &JwksServer, extra: &[&str]) -> server::Running {
    let mut args = vec![
        "--keys-dir",
        keys_dir.to_str().unwrap(),
        "--keys-reload-interval",
        "20ms",
        "--jwks-url",
        &jwks.url,
        "--jwks-startup-wait",
        "30s",
    ];
    args.extend_from_slice(extra);
    let config = config(&args);
    let ring = config.load().unwrap();
    server::start(&config, ring).await.unwrap()
}

async fn status(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>,
    token: &str,
) -> i32 {
    http_status(&check(client, Some(&format!("Bearer {token}")), &[]).await)
}

/// Keys from the directory and from the JWKS verify side by side; reloading either source
/// never drops the other's keys; rotation and removal follow the JWKS; with the JWKS down the
/// last good keys keep verifying (and the failure is counted); an HMAC key in the JWKS is never
/// accepted, and the algorithm is the key's.
#[tokio::test]
async fn jwks_keys_verify_beside_file_keys_and_follow_the_jwks() {
    let (ed1, ed2) = (EdKey::new("ed1"), EdKey::new("ed2"));
    let oct = json!({"kty": "oct", "kid": "oct1", "use": "sig",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET_2)});
    let jwks = JwksServer::start(&[&ed1.jwk, &oct], "max-age=0").await;
    jwks.hold(true);
    let mut dir = SecretDir::new(&[("hs1", SECRET)]);
    let running = start(
        dir.path(),
        &jwks,
        &[
            "--jwks-refresh-min",
            "50ms",
            "--jwks-unknown-kid-interval",
            "1h",
        ],
    )
    .await;
    let channel = tcp_channel(running.grpc_addr).await;
    assert_eq!(
        health(channel.clone(), "").await,
        ServingStatus::NotServing,
        "before the first JWKS"
    );
    jwks.hold(false);
    wait_for_health("first JWKS", WAIT, &channel, "", ServingStatus::Serving).await;
    let mut client = authz(channel);

    let hs1 = token("hs1", SECRET, &[]);
    assert_eq!(status(&mut client, &ed1.token()).await, 200, "JWKS key");
    assert_eq!(status(&mut client, &hs1).await, 200, "file key");
    // The oct member was skipped: an HS256 token under its kid and secret is refused.
    assert_eq!(
        status(&mut client, &token("oct1", SECRET_2, &[])).await,
        401
    );
    // Algorithm confusion: an HS256 token under an Ed25519 kid, keyed with its public key.
    let confused = auth_token::testing::forge(
        r#"{"alg":"HS256","typ":"JWT","kid":"ed1"}"#,
        auth_token::testing::claims_payload(
            "7",
            &[],
            auth_token::now_unix(),
            0,
            auth_token::now_unix() + 600,
        ),
        ed1.public_pem.as_bytes(),
    );
    assert_eq!(status(&mut client, &confused).await, 401);
    let metrics = scrape(running.metrics_addr).await;
    assert!(
        metrics.contains("ext_authz_jwks_keys_loaded{issuer=\"local\"} 1"),
        "{metrics}"
    );

    // File-key reloads (every 20 ms) and JWKS refreshes (every 50 ms) interleave: no check of
    // either kind is refused meanwhile.
    for n in 0..30 {
        let extra = format!("{SECRET_2}{n}");
        dir.update(&[("hs1", SECRET), ("hs2", extra.as_str())]);
        assert_eq!(
            status(&mut client, &ed1.token()).await,
            200,
            "JWKS key, round {n}"
        );
        assert_eq!(status(&mut client, &hs1).await, 200, "file key, round {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Rotation, then removal of ed1: picked up by the scheduled refreshes.
    jwks.publish(&[&ed1.jwk, &ed2.jwk]);
    eventually("ed2 published", WAIT, || {
        let (mut client, t) = (client.clone(), ed2.token());
        async move { (status(&mut client, &t).await == 200).then_some(()) }
    })
    .await;
    jwks.publish(&[&ed2.jwk]);
    eventually("ed1 removed", WAIT, || {
        let (mut client, t) = (client.clone(), ed1.token());
        async move { (status(&mut client, &t).await == 401).then_some(()) }
    })
    .await;
    assert_eq!(status(&mut client, &hs1).await, 200);

    // Down: failures counted, last good keys (ed2) still verify.
    jwks.set_down(true);
    let metrics_addr = running.metrics_addr;
    eventually("a failed refresh", WAIT, || async move {
        let m = scrape(metrics_addr).await;
        (metric_value(
            &m,
            "ext_authz_jwks_refresh_failures_total{issuer=\"local\"}",
        )
        .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(status(&mut client, &ed2.token()).await, 200);
    assert_eq!(status(&mut client, &hs1).await, 200);
    running.shutdown();
    running.wait().await.unwrap();
}

/// A kid in the keys directory and in the JWKS with different keys verifies with neither;
/// with the same key in both it verifies.
#[tokio::test]
async fn a_kid_held_by_two_sources_with_different_keys_is_refused() {
    let (in_jwks, in_file, same) = (EdKey::new("ed1"), EdKey::new("ed1"), EdKey::new("ed2"));
    let jwks = JwksServer::start(&[&in_jwks.jwk, &same.jwk], "max-age=3600").await;
    let dir = SecretDir::new(&[
        ("hs1", SECRET),
        ("ed1.pub.pem", in_file.public_pem.trim_end()),
        ("ed2.pub.pem", same.public_pem.trim_end()),
    ]);
    let running = start(dir.path(), &jwks, &[]).await;
    let channel = tcp_channel(running.grpc_addr).await;
    wait_for_health("first JWKS", WAIT, &channel, "", ServingStatus::Serving).await;
    let mut client = authz(channel);
    assert_eq!(
        status(&mut client, &in_jwks.token()).await,
        401,
        "JWKS's ed1"
    );
    assert_eq!(
        status(&mut client, &in_file.token()).await,
        401,
        "file's ed1"
    );
    assert_eq!(
        status(&mut client, &same.token()).await,
        200,
        "same key twice"
    );
    assert_eq!(status(&mut client, &token("hs1", SECRET, &[])).await, 200);
    running.shutdown();
    running.wait().await.unwrap();
}

/// Issue #12 item 3: a check refused while a fetch is in flight (here the startup fetch, held)
/// asks for a refresh that the completing fetch answers. It must not spend the unknown-kid
/// window: the next real rotation (a new kid published later) is still picked up at once.
/// Seen failing before the fix: the stale wake-up was granted right after the startup fetch,
/// and `ed2` stayed refused for the whole 1 h window.
#[tokio::test]
async fn a_check_refused_during_a_fetch_does_not_spend_the_unknown_kid_window() {
    let (ed1, ed2) = (EdKey::new("ed1"), EdKey::new("ed2"));
    let jwks = JwksServer::start(&[&ed1.jwk], "max-age=3600").await;
    jwks.hold(true);
    let dir = SecretDir::new(&[("hs1", SECRET)]);
    let running = start(dir.path(), &jwks, &["--jwks-unknown-kid-interval", "1h"]).await;
    let channel = tcp_channel(running.grpc_addr).await;
    let mut client = authz(channel.clone());
    eventually("the startup fetch in flight", WAIT, || async {
        (jwks.fetches() == 1).then_some(())
    })
    .await;
    // Answered (refused) while the startup fetch is held: its refresh request is pending.
    assert_eq!(status(&mut client, &ed2.token()).await, 401);
    jwks.hold(false);
    wait_for_health("first JWKS", WAIT, &channel, "", ServingStatus::Serving).await;
    assert_eq!(status(&mut client, &ed1.token()).await, 200);

    jwks.publish(&[&ed1.jwk, &ed2.jwk]);
    eventually("ed2 picked up by one early refresh", WAIT, || {
        let (mut client, t) = (client.clone(), ed2.token());
        async move { (status(&mut client, &t).await == 200).then_some(()) }
    })
    .await;
    assert_eq!(jwks.fetches(), 2, "the startup fetch and one early refresh");
    let metrics = scrape(running.metrics_addr).await;
    assert!(
        metrics.contains("ext_authz_jwks_unknown_kid_refreshes_total{issuer=\"local\"} 1"),
        "{metrics}"
    );
    running.shutdown();
    running.wait().await.unwrap();
}
