//! EdDSA signing and the `/.well-known` documents: a token from /login verifies with nothing but
//! the published JWKS, which never contains an HMAC secret.

use std::sync::Arc;

use auth_token::{JwkSet, Key, Keyring, Verifier, VerifierConfig};

use crate::helpers::{SECRET, TestDb, spawn_app_with};

fn mixed_ring(private_pem: &str) -> Keyring {
    Keyring::from_keys(
        vec![
            Key::new("hs-old", SECRET).unwrap(),
            Key::ed25519_private_pem("ed-1", private_pem.as_bytes()).unwrap(),
        ],
        None,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_login_verifies_with_the_published_jwks_only() {
    let (private, _) = auth_token::testing::ed25519_pem_pair();
    let app = spawn_app_with(TestDb::sqlite(), |s| {
        s.keys = Arc::new(mixed_ring(&private));
        s.signing_kid = "ed-1".into();
        s.issuer.issuer = Some("https://login.example".into());
        s.well_known.public_url = Some("https://edge.example".into());
    })
    .await;
    app.add_user("ed@example.com", "pw", false).await;
    let r = app.login("ed@example.com", "pw", "192.0.2.1").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let header =
        auth_token::testing::claims_json(&format!("x.{}.x", token.split('.').next().unwrap()));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "ed-1");

    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let text = r.text().await.unwrap();
    let jwks: JwkSet = serde_json::from_str(&text).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(raw["keys"].as_array().unwrap().len(), 1, "{text}");
    let jwk = &raw["keys"][0];
    assert_eq!(
        (
            &jwk["kty"],
            &jwk["crv"],
            &jwk["kid"],
            &jwk["alg"],
            &jwk["use"]
        ),
        (
            &"OKP".into(),
            &"Ed25519".into(),
            &"ed-1".into(),
            &"EdDSA".into(),
            &"sig".into()
        )
    );
    assert!(jwk.get("d").is_none(), "{text}");
    assert!(!text.contains("hs-old") && !text.contains("oct"), "{text}");

    // The verifier holds the JWKS and nothing else.
    let public = Keyring::from_jwks(&jwks).unwrap();
    let v = Verifier::new(&VerifierConfig {
        issuer: Some("https://login.example".into()),
        ..VerifierConfig::default()
    });
    let claims = v.verify(&token, &public, auth_token::now_unix()).unwrap();
    assert_eq!(claims.email, "ed@example.com");

    let r = app.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "issuer": "https://login.example",
            "jwks_uri": "https://edge.example/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_only_publishes_no_key_and_no_discovery_without_public_url() {
    let app = spawn_app_with(TestDb::sqlite(), |s| {
        s.well_known.max_age = std::time::Duration::from_secs(60);
    })
    .await;
    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    assert_eq!(r.text().await.unwrap(), r#"{"keys":[]}"#);
    let r = app.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status(), 404);
    // Other methods are refused like on every route.
    let r = app
        .client
        .post(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}
