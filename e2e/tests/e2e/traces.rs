//! Traces end to end (issue #14): with `OTEL_EXPORTER_OTLP_ENDPOINT` set and Envoy's tracer on,
//! one request through the real Envoy yields spans from Envoy, ext-authz and login-service that
//! share one trace id (the client's `traceparent`), received by a test OTLP/gRPC collector
//! (`e2e::otlp`). The spans carry the decision, never a token or a password.

use std::time::Duration;

use reqwest::Method;

use e2e::client::{Bearer as _, Reply};
use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::stack::Stack;

/// A W3C `traceparent` for a new trace: version 00, sampled.
fn traceparent() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent = &uuid::Uuid::new_v4().simple().to_string()[..16];
    (trace_id.clone(), format!("00-{trace_id}-{parent}-01"))
}

fn services(spans: &[ReceivedSpan]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// No attribute of any span contains one of `secrets`.
#[track_caller]
fn assert_no_secret(spans: &[ReceivedSpan], secrets: &[&str]) {
    for span in spans {
        for (key, value) in &span.attributes {
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "span {} ({}) attribute {key} holds a secret",
                    span.name,
                    span.service
                );
            }
        }
    }
}

#[test]
fn one_request_is_one_trace_through_envoy_ext_authz_and_login_service() {
    let collector = OtlpReceiver::start();
    let stack = Stack::start_traced(&collector);

    // A login: Envoy → login-service (no check on /login); the login's steps are spans.
    let (login_trace, parent) = traceparent();
    let login = stack
        .request(Method::POST, "/login")
        .basic_auth(&stack.user.email, Some(&stack.user.password))
        .header("traceparent", &parent)
        .send()
        .expect("POST /login");
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().expect("login JSON")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let spans = collector.wait_for_trace(&login_trace, Duration::from_secs(15), |spans| {
        [
            "login.password.verify",
            "login.database.lookup",
            "login.token.issue",
        ]
        .iter()
        .all(|name| spans.iter().any(|s| s.name == *name))
            && services(spans) == ["envoy", "login-service"]
    });
    assert_no_secret(&spans, &[&token, &stack.user.password]);

    // A logout: Envoy → ext-authz (the check) → login-service, one trace id for all three.
    let (logout_trace, parent) = traceparent();
    let logout = Reply::of(
        stack
            .request(Method::POST, "/logout")
            .bearer(&token)
            .header("traceparent", &parent),
    );
    assert_eq!(logout.status, 204, "{logout:?}");
    let spans = collector.wait_for_trace(&logout_trace, Duration::from_secs(15), |spans| {
        services(spans) == ["envoy", "ext-authz", "login-service"]
    });
    let check = spans
        .iter()
        .find(|s| s.name == "ext_authz.check")
        .expect("the check's span");
    assert_eq!(check.attribute("decision"), Some("allow"), "{check:?}");
    // A child of Envoy's span of the ext_authz call, not a new root.
    assert!(
        spans
            .iter()
            .any(|s| s.service == "envoy" && s.span_id == check.parent_span_id),
        "the check's parent is not an Envoy span: {spans:#?}"
    );
    assert_no_secret(&spans, &[&token]);

    // A refused request: the check's span says why, and the trace has no upstream span.
    let (denied_trace, parent) = traceparent();
    let denied = Reply::of(
        stack
            .get("/anything")
            .bearer("not-a-token")
            .header("traceparent", &parent),
    );
    assert_eq!(denied.status, 401, "{denied:?}");
    let spans = collector.wait_for_trace(&denied_trace, Duration::from_secs(15), |spans| {
        spans.iter().any(|s| s.name == "ext_authz.check")
    });
    let check = spans
        .iter()
        .find(|s| s.name == "ext_authz.check")
        .expect("the check's span");
    assert_eq!(check.attribute("decision"), Some("deny"), "{check:?}");
    assert_eq!(check.attribute("reason"), Some("malformed"), "{check:?}");
}
