//! `--jwks-url` through the real Envoy and the real login-service (issue #12): ext-authz's keys
//! directory holds only the HS256 key; the Ed25519 key reaches the gateway only as login-service
//! publishes it in `/.well-known/jwks.json`. Published before it signs, the new key's first
//! token passes at once; HS256 tokens keep passing throughout (the sources are never merged).

use std::time::Duration;

use auth_token::testing::metric_value;
use e2e::client::{Bearer as _, Reply};
use e2e::ports::LOGIN_SERVICE;
use e2e::process::wait_for;
use e2e::stack::{KID, Stack, Transport};

const ED: &str = "e2e-jwks-ed";

fn header_kid(token: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("base64url");
    let header: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

#[test]
fn eddsa_keys_reach_the_gateway_only_through_login_services_jwks() {
    let jwks = format!("http://{LOGIN_SERVICE}/.well-known/jwks.json");
    let mut stack = Stack::start_with_args(
        Transport::Tcp,
        &[
            "--jwks-url",
            &jwks,
            "--jwks-refresh-min",
            "1s",
            "--jwks-startup-wait",
            "1s",
        ],
    );
    // The gateway's own keys directory: the HS256 key only, no Ed25519 material at all.
    let secret = stack.key_secret().to_owned();
    stack.split_gateway_keys(&[(KID, &secret)]);
    let hs = stack.login(&stack.user);
    assert_eq!(header_kid(&hs), KID);
    assert_eq!(Reply::of(stack.get("/x").bearer(&hs)).status, 200);

    // login-service gets an Ed25519 key and publishes it, still signing HS256.
    let (private, _public) = auth_token::testing::ed25519_pem_pair();
    stack.write_key(&format!("{ED}.pem"), &private);
    stack.restart_login_service_with(&["--signing-kid", KID]);
    let local_keys = |stack: &Stack| {
        metric_value(
            &stack.ext_authz_metrics(),
            "ext_authz_jwks_keys_loaded{issuer=\"local\"}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || local_keys(&stack) == Some(1.0)),
        "the published key never reached ext-authz: {:?}",
        local_keys(&stack)
    );
    assert!(
        std::fs::read_dir(stack.gateway_keys_dir())
            .expect("gateway keys dir")
            .all(|e| !e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".pem")),
        "the gateway's keys directory got PEM material"
    );

    // Now it signs with the Ed25519 key: the first token passes (no unknown-kid refusal), the
    // HS256 token still passes.
    stack.restart_login_service_with(&["--signing-kid", ED]);
    let ed = stack.login(&stack.user);
    assert_eq!(header_kid(&ed), ED);
    let first = Reply::of(stack.get("/x").bearer(&ed));
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(Reply::of(stack.get("/x").bearer(&hs)).status, 200);
    let metrics = stack.ext_authz_metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "ext_authz_jwks_unknown_kid_refreshes_total{issuer=\"local\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
}
