//! CheckRequest → CheckResponse conversion: exact statuses, header options and bodies.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{HeaderValueOption, OkHttpResponse};
use envoy_types::pb::google::protobuf::value::Kind;

use super::*;
use crate::test_support::*;

fn service(dry_run: bool, strip: bool) -> AuthzService {
    AuthzService::new(
        Arc::new(KeyStore::new(ring())),
        settings(dry_run),
        Arc::new(Metrics::new()),
        strip,
    )
}

/// `(name, value, append)` of each header option.
#[allow(deprecated)]
fn options(headers: &[HeaderValueOption]) -> Vec<(String, String, Option<bool>, bool)> {
    headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            assert_eq!(h.append_action, 0, "append_action must stay unset");
            (
                hv.key.clone(),
                hv.value.clone(),
                h.append.as_ref().map(|b| b.value),
                h.keep_empty_value,
            )
        })
        .collect()
}

fn ok_response(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(response.status.as_ref().unwrap().code, 0);
    match response.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

fn denied_response(response: &CheckResponse) -> &DeniedHttpResponse {
    match response.http_response.as_ref().unwrap() {
        HttpResponse::DeniedResponse(d) => d,
        other => panic!("not a denied response: {other:?}"),
    }
}

#[test]
fn allow_sets_all_identity_headers_with_append_false() {
    let token = issue("k1", SECRET, &["admin", "ops"]);
    let mut h = headers(&format!("Bearer {token}"));
    h.insert("x-auth-user-id".into(), "spoofed".into());
    let resp = service(false, false)
        .check_request(&check_request(h, &[]))
        .unwrap();
    let ok = ok_response(&resp);
    assert_eq!(
        options(&ok.headers),
        [
            ("x-auth-user-id".into(), "42".into(), Some(false), true),
            (
                "x-auth-email".into(),
                "user@example.com".into(),
                Some(false),
                true
            ),
            ("x-auth-roles".into(), "admin,ops".into(), Some(false), true),
        ]
    );
    assert!(ok.headers_to_remove.is_empty());
    for (name, ..) in options(&ok.headers) {
        assert_eq!(name, name.to_ascii_lowercase());
    }
}

#[test]
fn allow_without_roles_sets_empty_roles_header() {
    let token = issue("k1", SECRET, &[]);
    let resp = service(false, true)
        .check_request(&check_request(headers(&format!("Bearer {token}")), &[]))
        .unwrap();
    let ok = ok_response(&resp);
    assert_eq!(
        options(&ok.headers)[2],
        ("x-auth-roles".into(), String::new(), Some(false), true)
    );
    // --strip-authorization
    assert_eq!(ok.headers_to_remove, ["authorization"]);
}

#[test]
fn missing_token_is_401_unauthenticated() {
    let resp = service(false, false)
        .check_request(&check_request(HashMap::new(), &[]))
        .unwrap();
    let status = resp.status.as_ref().unwrap();
    assert_eq!(status.code, 16);
    assert_eq!(status.message, "missing_token");
    let d = denied_response(&resp);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    assert_eq!(
        options(&d.headers),
        [
            (
                "www-authenticate".into(),
                r#"Bearer realm="edge""#.into(),
                Some(false),
                true
            ),
            (
                "content-type".into(),
                "application/json".into(),
                Some(false),
                true
            ),
        ]
    );
    assert_eq!(
        d.body,
        r#"{"error":"missing_token","message":"missing bearer token"}"#
    );
}

#[test]
fn invalid_token_is_401_with_invalid_token_challenge() {
    let wrong = issue("k1", OTHER_SECRET, &[]);
    let resp = service(false, false)
        .check_request(&check_request(headers(&format!("Bearer {wrong}")), &[]))
        .unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 16);
    let d = denied_response(&resp);
    assert_eq!(d.status.as_ref().unwrap().code, 401);
    assert_eq!(
        options(&d.headers)[0].1,
        r#"Bearer realm="edge", error="invalid_token", error_description="invalid signature""#
    );
    assert_eq!(
        d.body,
        r#"{"error":"invalid_token","message":"invalid signature"}"#
    );
}

#[test]
fn missing_role_is_403_permission_denied() {
    let token = issue("k1", SECRET, &["user"]);
    let resp = service(false, false)
        .check_request(&check_request(
            headers(&format!("Bearer {token}")),
            &[("require_roles", "admin"), ("unknown_key", "ignored")],
        ))
        .unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 7);
    let d = denied_response(&resp);
    assert_eq!(d.status.as_ref().unwrap().code, 403);
    assert_eq!(
        options(&d.headers)[0].1,
        r#"Bearer realm="edge", error="insufficient_scope", error_description="missing required role", scope="admin""#
    );
    assert_eq!(
        d.body,
        r#"{"error":"insufficient_scope","message":"missing required role"}"#
    );
}

#[test]
fn dry_run_allows_and_never_passes_spoofed_identity() {
    let svc = service(true, false);
    // No token: allowed, client-supplied identity headers removed.
    let mut h = HashMap::from([("x-auth-user-id".to_owned(), "spoofed".to_owned())]);
    let resp = svc.check_request(&check_request(h.clone(), &[])).unwrap();
    let ok = ok_response(&resp);
    assert!(ok.headers.is_empty());
    assert_eq!(
        ok.headers_to_remove,
        ["x-auth-user-id", "x-auth-email", "x-auth-roles"]
    );
    // Valid token lacking the role: allowed with identity.
    let token = issue("k1", SECRET, &["user"]);
    h.insert("authorization".into(), format!("Bearer {token}"));
    let resp = svc
        .check_request(&check_request(h, &[("require_roles", "admin")]))
        .unwrap();
    let ok = ok_response(&resp);
    assert_eq!(options(&ok.headers)[0].1, "42");
    let text = svc.inner.metrics.encode();
    assert!(
        text.contains(
            r#"ext_authz_checks_total{decision="dry_run_allow",reason="missing_token"} 1"#
        )
    );
    assert!(text.contains(
        r#"ext_authz_checks_total{decision="dry_run_allow",reason="insufficient_scope"} 1"#
    ));
}

#[test]
fn cannot_decide_is_an_rpc_error_not_a_deny() {
    // Fail-closed and no snapshot yet: the revocation state says "cannot decide".
    let revocations = Revocations::new(std::time::Duration::from_secs(30), true, 30);
    let svc = service(false, false).with_revocations(Arc::new(revocations));
    let err = svc
        .check_request(&check_request(headers("Bearer x.y.z"), &[]))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        svc.inner
            .metrics
            .encode()
            .contains("ext_authz_check_errors_total 1")
    );
}

#[test]
fn request_without_attributes_is_missing_token() {
    let resp = service(false, false)
        .check_request(&CheckRequest::default())
        .unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 16);
}

#[tokio::test]
async fn grpc_trait_delegates() {
    let token = issue("k1", SECRET, &[]);
    let resp = service(false, false)
        .check(Request::new(check_request(
            headers(&format!("Bearer {token}")),
            &[],
        )))
        .await
        .unwrap()
        .into_inner();
    ok_response(&resp);
}

/// The string fields of a response's `dynamic_metadata`.
fn metadata(response: &CheckResponse) -> HashMap<String, String> {
    response
        .dynamic_metadata
        .as_ref()
        .expect("dynamic_metadata set on every decision")
        .fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => (k.clone(), s.clone()),
            other => panic!("{k}: not a string: {other:?}"),
        })
        .collect()
}

#[test]
fn allow_carries_the_decision_log_without_token_or_email() {
    let token = issue("k1", SECRET, &["admin"]);
    let resp = service(false, false)
        .check_request(&check_request(
            headers(&format!("Bearer {token}")),
            &[("require_roles", "admin")],
        ))
        .unwrap();
    ok_response(&resp);
    let m = metadata(&resp);
    assert_eq!(
        m,
        HashMap::from(
            [
                ("decision", "allow"),
                ("reason", "ok"),
                ("subject", "42"),
                ("kid", "k1"),
                ("require_roles", "admin"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        )
    );
    let all: String = m.values().cloned().collect();
    assert!(!all.contains(&token) && !all.contains("user@example.com"));
}

#[test]
fn denials_carry_the_reason_and_never_the_clients_kid_or_token() {
    // A forged token naming a kid: the kid is the client's text, so it is not logged.
    let forged = forge(
        r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
        &payload(0, 0, 1),
        OTHER_SECRET,
    );
    let resp = service(false, false)
        .check_request(&check_request(headers(&format!("Bearer {forged}")), &[]))
        .unwrap();
    denied_response(&resp);
    let m = metadata(&resp);
    assert_eq!(m.get("decision").map(String::as_str), Some("deny"));
    assert_eq!(m.get("reason").map(String::as_str), Some("bad_signature"));
    assert!(
        !m.contains_key("kid") && !m.contains_key("subject"),
        "{m:?}"
    );
    assert!(!m.values().any(|v| v.contains(&forged)));

    let resp = service(false, false)
        .check_request(&check_request(HashMap::new(), &[]))
        .unwrap();
    assert_eq!(
        metadata(&resp),
        HashMap::from([
            ("decision".to_owned(), "deny".to_owned()),
            ("reason".to_owned(), "missing_token".to_owned())
        ])
    );
}

/// Review finding L3: the `x-request-id` a client chose is logged only when short and
/// printable (a forwarding proxy, or a client talking to ext-authz directly, sets it).
#[test]
fn logged_request_id_is_bounded_and_printable() {
    let with = |id: &str| {
        let mut h = headers("Bearer not-a-token");
        h.insert("x-request-id".into(), id.to_owned());
        request_id_of(&h).to_owned()
    };
    assert_eq!(with("3f0c2a1e-9b7d"), "3f0c2a1e-9b7d");
    assert_eq!(with(&format!("{}\nforged", "x".repeat(10_000))), "");
    assert_eq!(with(&"x".repeat(65)), "");
    assert_eq!(request_id_of(&HashMap::new()), "");
}
