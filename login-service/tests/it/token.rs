//! Tokens from /login are exactly what ext-authz accepts (same crate, same keys), and nothing else.

use auth_token::{Verifier, VerifierConfig, VerifyError};

use crate::helpers::{TestDb, keyring, spawn_app_with};

fn flip(token: &str, at: usize) -> String {
    let mut b = token.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_verifies_and_any_altered_byte_does_not() {
    let app = spawn_app_with(TestDb::sqlite(), |s| {
        s.issuer.issuer = Some("login-service".into());
        s.issuer.audience = Some("edge".into());
    })
    .await;
    app.add_user("tok@example.com", "pw", true).await;
    let r = app.login("tok@example.com", "pw", "192.0.2.1").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();

    let verifier = Verifier::new(&VerifierConfig {
        issuer: Some("login-service".into()),
        audience: Some("edge".into()),
        ..VerifierConfig::default()
    });
    let now = auth_token::now_unix();
    let claims = verifier.verify(&token, &keyring(), now).unwrap();
    assert_eq!(claims.iss.as_deref(), Some("login-service"));
    assert_eq!(claims.aud.as_deref(), Some("edge"));
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(!claims.jti.is_empty());

    // One byte changed in the header, the payload or the signature: refused.
    let dots: Vec<usize> = token.match_indices('.').map(|(i, _)| i).collect();
    // The header no longer decodes (malformed); the payload or the signature no longer match the
    // HMAC (bad signature): the exact refusal, not just "some error".
    for (at, expected) in [
        (5, VerifyError::Malformed),
        (dots[0] + 10, VerifyError::BadSignature),
        (dots[1] + 10, VerifyError::BadSignature),
    ] {
        let bad = flip(&token, at);
        assert_ne!(bad, token);
        assert!(verifier.verify(&bad, &keyring(), now).is_err(), "byte {at}");
        assert_eq!(
            verifier.verify(&bad, &keyring(), now).unwrap_err(),
            expected,
            "byte {at}"
        );
    }
    let bad_sig = flip(&token, dots[1] + 10);
    assert_eq!(
        verifier.verify(&bad_sig, &keyring(), now).unwrap_err(),
        VerifyError::BadSignature
    );
    // Another key: refused.
    let other = auth_token::Keyring::single("default", &[9u8; 32]).unwrap();
    assert!(verifier.verify(&token, &other, now).is_err());
    assert_eq!(
        verifier.verify(&token, &other, now).unwrap_err(),
        VerifyError::BadSignature
    );
}
