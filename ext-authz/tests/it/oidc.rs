//! External OIDC issuers through the real server (`server::start`) and a test issuer: the JWKS
//! lifecycle (readiness, unknown-kid refresh, rotation, issuer down, removal) with no I/O on
//! the check path.

use std::time::Duration;

use ext_authz::server;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;
use e2e::oidc_issuer::{Alg, TestIssuer};

const WAIT: Duration = Duration::from_secs(20);

/// A server trusting `issuer` as `test` (audience `edge`, roles from `groups`).
async fn start(issuer: &TestIssuer, startup_wait: &str) -> (server::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("issuers.json");
    let doc = json!({"issuers": [{
        "name": "test", "issuer": issuer.url, "audience": "edge",
        "roles_claims": [{"path": "groups"}],
    }]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let config = config(&[
        "--jwt-secret",
        SECRET,
        "--issuers-file",
        file.to_str().unwrap(),
        "--jwks-startup-wait",
        startup_wait,
        "--jwks-refresh-min",
        "50ms",
        "--jwks-unknown-kid-interval",
        // Long enough that the burst of 21 unknown kids below always falls in one window on a
        // loaded machine (with 1 s it took two windows once); short enough for the next one.
        "4s",
    ]);
    let ring = config.load().unwrap();
    (server::start(&config, ring).await.unwrap(), dir)
}

const ROUTE: &[(&str, &str)] = &[("issuers", "local,test")];

async fn status(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>,
    token: &str,
    ext: &[(&str, &str)],
) -> i32 {
    http_status(&check(client, Some(&format!("Bearer {token}")), ext).await)
}

/// Mapped identity and roles on an opted-in route; refused on a route that did not opt in;
/// wrong `iss`/`aud` refused; health waits for the first JWKS.
#[tokio::test]
async fn external_tokens_pass_only_where_accepted() {
    let issuer = TestIssuer::start(&[
        ("r1", Alg::Rs256),
        ("p1", Alg::Ps256),
        ("e1", Alg::Es256),
        ("d1", Alg::EdDsa),
    ]);
    issuer.set_down(true);
    let (running, _dir) = start(&issuer, "30s").await;
    let channel = tcp_channel(running.grpc_addr).await;
    assert_eq!(
        health(channel.clone(), "").await,
        ServingStatus::NotServing,
        "before the first JWKS"
    );
    issuer.set_down(false);
    wait_for_health("first JWKS", WAIT, &channel, "", ServingStatus::Serving).await;

    let mut client = authz(channel);
    for kid in ["r1", "p1", "e1", "d1"] {
        let token = issuer.token(kid, json!({"groups": ["admin"]}));
        let response = check(&mut client, Some(&format!("Bearer {token}")), ROUTE).await;
        assert_eq!(http_status(&response), 200);
        let Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(ok)) =
            &response.http_response
        else {
            unreachable!()
        };
        let headers: Vec<(String, String)> = ok
            .headers
            .iter()
            .map(|h| h.header.as_ref().unwrap())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        assert!(
            headers.contains(&("x-auth-user-id".into(), "test:u-1".into())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("x-auth-roles".into(), "admin".into())),
            "{headers:?}"
        );
        assert_eq!(
            status(
                &mut client,
                &token,
                &[("issuers", "test"), ("require_roles", "admin")]
            )
            .await,
            200
        );
        // A route without `issuers` accepts our own tokens only.
        assert_eq!(status(&mut client, &token, &[]).await, 401);
    }
    let wrong_aud = issuer.token("r1", json!({"aud": "other"}));
    assert_eq!(status(&mut client, &wrong_aud, ROUTE).await, 401);
    let wrong_iss = issuer.token("r1", json!({"iss": "http://127.0.0.1:1"}));
    assert_eq!(status(&mut client, &wrong_iss, ROUTE).await, 401);
    // Our own tokens are unaffected.
    assert_eq!(
        status(&mut client, &token("default", SECRET, &[]), ROUTE).await,
        200
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// Unknown kids: denied at once, and a burst of them causes exactly one early fetch; a key
/// rotation is then picked up; with the issuer down the last good keys keep verifying; a key
/// removed from the JWKS stops verifying after the next refresh.
#[tokio::test]
async fn jwks_lifecycle() {
    let issuer = TestIssuer::start(&[("r1", Alg::Rs256)]);
    let (running, _dir) = start(&issuer, "10s").await;
    let channel = tcp_channel(running.grpc_addr).await;
    wait_for_health("first JWKS", WAIT, &channel, "", ServingStatus::Serving).await;
    let mut client = authz(channel);
    let old = issuer.token("r1", json!({}));
    assert_eq!(status(&mut client, &old, ROUTE).await, 200);

    // Rotation: the issuer publishes e1 too; its first token is refused, triggers one fetch.
    // Why signed beforehand: an RS256 signature costs ~0.2 s in a debug build on a loaded
    // machine; signed inside the burst, 20 of them outlasted the 4 s window (seen: a second
    // early refresh 4.6 s after the first, `left: 3, right: 2` below).
    let garbage: Vec<String> = (0..20)
        .map(|n| {
            issuer.sign(
                "r1",
                &json!({"kid": format!("garbage-{n}")}),
                &issuer.claims(&json!({})),
            )
        })
        .collect();
    let before = issuer.jwks_fetches();
    issuer.publish(&[("r1", Alg::Rs256), ("e1", Alg::Es256)]);
    let new = issuer.token("e1", json!({}));
    // Denied at once (the refresh it asks for happens after the answer).
    assert_eq!(status(&mut client, &new, ROUTE).await, 401);
    for garbage in &garbage {
        assert_eq!(status(&mut client, garbage, ROUTE).await, 401);
    }
    eventually("rotation picked up", WAIT, || {
        let (mut client, new) = (client.clone(), new.clone());
        async move { (status(&mut client, &new, ROUTE).await == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        issuer.jwks_fetches(),
        before + 1,
        "exactly one early refresh for 21 unknown kids"
    );
    let metrics = scrape(running.metrics_addr).await;
    assert!(
        metrics.contains("ext_authz_jwks_unknown_kid_refreshes_total{issuer=\"test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ext_authz_jwks_keys_loaded{issuer=\"test\"} 2"),
        "{metrics}"
    );

    // Issuer down: the next unknown kid (after the throttle window) fails to refresh; the
    // last good keys still verify, and the failure is counted.
    issuer.set_down(true);
    let metrics_addr = running.metrics_addr;
    eventually("a failed refresh", WAIT, || {
        let (mut client, issuer) = (client.clone(), issuer.clone());
        async move {
            let garbage = issuer.sign("r1", &json!({"kid": "garbage"}), &issuer.claims(&json!({})));
            status(&mut client, &garbage, ROUTE).await;
            let m = scrape(metrics_addr).await;
            (!m.contains("ext_authz_jwks_refresh_failures_total{issuer=\"test\"} 0")).then_some(())
        }
    })
    .await;
    assert_eq!(status(&mut client, &old, ROUTE).await, 200);
    assert_eq!(status(&mut client, &new, ROUTE).await, 200);

    // Back up without r1: after the next refresh, r1 tokens are refused.
    issuer.set_down(false);
    issuer.publish(&[("e1", Alg::Es256)]);
    eventually("r1 removed", WAIT, || {
        let (mut client, old) = (client.clone(), old.clone());
        async move { (status(&mut client, &old, ROUTE).await == 401).then_some(()) }
    })
    .await;
    assert_eq!(status(&mut client, &new, ROUTE).await, 200);
    running.shutdown();
    running.wait().await.unwrap();
}
