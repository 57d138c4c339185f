//! EdDSA through the real Envoy (issue #12): login-service signs with an Ed25519 private key,
//! ext-authz holds ONLY the public key (`KID.pub.pem`), and the key documents are public. Attack
//! tokens aimed at algorithm confusion are refused with a precise reason, and the upstream sees
//! exactly the requests that carried a valid token.

use std::time::Duration;

use auth_token::now_unix as now;
use auth_token::testing::{b64, claims_payload, forge, sign_raw};
use reqwest::Method;

use e2e::client::{Bearer as _, Reply};
use e2e::process::wait_for;
use e2e::stack::{KID, Stack};

const ED: &str = "e2e-ed";

fn header_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON header")
}

#[track_caller]
fn assert_invalid(reply: &Reply, description: &str, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {reply:?}");
    reply.assert_denied(401, "invalid_token", description);
}

#[test]
fn eddsa_login_reaches_upstream_with_public_keys_only_at_the_gateway() {
    let mut stack = Stack::start();
    let (private, public) = auth_token::testing::ed25519_pem_pair();
    stack.write_key(&format!("{ED}.pem"), &private);
    stack.split_gateway_keys(&[(&format!("{ED}.pub.pem"), &public)]);
    stack.restart_login_service_with(&["--signing-kid", ED]);

    let token = stack.login(&stack.user);
    let sub = auth_token::testing::claims_json(&token)["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    let header = header_of(&token);
    assert_eq!(
        (&header["alg"], &header["kid"]),
        (&"EdDSA".into(), &ED.into())
    );
    let before = stack.upstream_requests();
    let ok = Reply::of(stack.get("/eddsa").bearer(&token));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(stack.upstream_requests(), before + 1);

    // The key documents are public, through Envoy, without a token; other methods are not.
    let jwks = Reply::of(stack.get("/.well-known/jwks.json"));
    assert_eq!(jwks.status, 200, "{jwks:?}");
    assert_eq!(jwks.header("content-type"), "application/json");
    let keys = jwks.json()["keys"].clone();
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{jwks:?}");
    assert_eq!(keys[0]["kid"], ED);
    assert!(
        !jwks.text.contains(KID),
        "an HMAC kid was published: {jwks:?}"
    );
    let post = Reply::of(stack.request(Method::POST, "/.well-known/jwks.json"));
    assert_eq!(post.status, 401, "{post:?}");
    // The gateway has no HMAC secret: the old HS256 token of the same user is refused.
    let hs = stack.sign(
        &sub,
        &stack.user.email,
        &[],
        now(),
        Duration::from_secs(600),
    );
    assert_invalid(
        &Reply::of(stack.get("/x").bearer(&hs)),
        "unsupported algorithm",
        "HS256 at an EdDSA-only gateway",
    );

    let t = now();
    let payload = claims_payload(&sub, &["admin"], t, t, t + 600);
    // HS256 "signed" with the Ed25519 PUBLIC key (the PEM text anyone can fetch) as HMAC secret.
    let confused = forge(
        format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{ED}"}}"#),
        &payload,
        public.as_bytes(),
    );
    assert_invalid(
        &Reply::of(stack.get("/x").bearer(&confused)),
        "unsupported algorithm",
        "public key as HMAC secret",
    );
    // alg none.
    let none = format!(
        "{}.{}.",
        b64(format!(r#"{{"alg":"none","kid":"{ED}"}}"#).as_bytes()),
        b64(payload.as_bytes())
    );
    assert_invalid(
        &Reply::of(stack.get("/x").bearer(&none)),
        "unsupported algorithm",
        "alg none",
    );
    // Valid EdDSA signatures under hostile headers: jku / x5u are refused, never fetched.
    let ed_key = auth_token::Key::ed25519_private_pem(ED, private.as_bytes()).expect("key");
    for extra in [
        r#""jku":"http://127.0.0.1:9/jwks.json""#,
        r#""x5u":"http://127.0.0.1:9/cert""#,
    ] {
        let hostile = sign_raw(
            &ed_key,
            &format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{ED}",{extra}}}"#),
            &payload,
        );
        assert_invalid(
            &Reply::of(stack.get("/x").bearer(&hostile)),
            "unsupported token header",
            extra,
        );
    }

    // With an HS256 key next to it (a rotation in progress), the confusion meets a real key:
    // refused because the token's alg is not its key's.
    stack.write_gateway_key(KID, stack.key_secret());
    assert!(
        wait_for(Duration::from_secs(10), || Reply::of(
            stack.get("/x").bearer(&hs)
        )
        .status
            == 200),
        "the HS256 key was never loaded"
    );
    assert_invalid(
        &Reply::of(stack.get("/x").bearer(&confused)),
        "algorithm does not match the key",
        "public key as HMAC secret, mixed ring",
    );
    let eddsa_with_hs_kid = sign_raw(
        &ed_key,
        &format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{KID}"}}"#),
        &payload,
    );
    assert_invalid(
        &Reply::of(stack.get("/x").bearer(&eddsa_with_hs_kid)),
        "algorithm does not match the key",
        "EdDSA header, HS256 kid",
    );
    assert_eq!(Reply::of(stack.get("/eddsa").bearer(&token)).status, 200);
}
