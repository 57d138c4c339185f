//! Decision logs and one request followed through every log (issue #14): ext-authz's
//! `dynamic_metadata` in Envoy's JSON access log, and Envoy's `x-request-id` on the lines of
//! ext-authz, login-service and the demo upstream, all in the one JSON log shape.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use e2e::client::{Bearer as _, Reply};
use e2e::process::wait_for;
use e2e::stack::{FAIL_OPEN_STAT, KID, Stack};

/// The JSON lines of `log` that mention `id`; panics on a line mentioning it that is not JSON.
fn lines_with(log: &str, id: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains(id))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// Envoy's access log entry of the request `id`, once Envoy flushed it (100 ms in the stack).
fn access_log_entry(stack: &Stack, id: &str) -> Value {
    let found = wait_for(Duration::from_secs(10), || {
        lines_with(&stack.envoy_log_json(), id)
            .iter()
            .any(|l| l["request_id"] == id)
    });
    assert!(found, "no access log line for {id}:\n{}", stack.envoy_log());
    let mut entries: Vec<Value> = lines_with(&stack.envoy_log_json(), id);
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

/// Every service line of one request: the one JSON shape (`timestamp`, `level`, `message`) and
/// the request id at the top level (an event field) or in the request's span.
#[track_caller]
fn assert_service_lines(lines: &[Value], id: &str, component: &str) {
    assert!(!lines.is_empty(), "{component}: no line with {id}");
    for line in lines {
        for key in ["timestamp", "level", "message"] {
            assert!(line[key].is_string(), "{component}: no {key}: {line}");
        }
        let in_span = line["span"]["request_id"] == id
            || line["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["request_id"] == id));
        assert!(
            line["request_id"] == id || in_span,
            "{component}: request_id not a field: {line}"
        );
    }
}

trait EnvoyJson {
    /// The JSON lines of Envoy's log (the access log; Envoy's own warnings are text).
    fn envoy_log_json(&self) -> String;
}

impl EnvoyJson for Stack {
    fn envoy_log_json(&self) -> String {
        self.envoy_log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn one_request_id_greps_out_of_every_log_and_the_access_log_shows_the_decision() {
    let stack = Stack::start_observed();
    let token = stack.login(&stack.user);

    // Allowed, then answered by the demo upstream.
    let reply = Reply::of(stack.get("/hello").bearer(&token));
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.header("x-request-id").to_owned();
    let entry = access_log_entry(&stack, &id);
    assert_eq!(entry["auth_decision"], "allow", "{entry}");
    assert_eq!(entry["auth_reason"], "ok", "{entry}");
    assert_eq!(entry["auth_kid"], KID, "{entry}");
    let subject = entry["auth_subject"].as_str().expect("subject").to_owned();
    assert!(
        !subject.is_empty() && subject.bytes().all(|b| b.is_ascii_digit()),
        "{entry}"
    );
    assert_service_lines(&lines_with(&stack.log("ext-authz"), &id), &id, "ext-authz");
    assert_service_lines(
        &lines_with(&stack.log("demo-upstream"), &id),
        &id,
        "demo-upstream",
    );

    // Allowed, then answered by login-service: ext-authz, login-service and Envoy share the id.
    let reply = Reply::of(stack.request(Method::POST, "/logout").bearer(&token));
    assert_eq!(reply.status, 204, "{reply:?}");
    let id = reply.header("x-request-id").to_owned();
    let entry = access_log_entry(&stack, &id);
    assert_eq!(entry["auth_decision"], "allow", "{entry}");
    assert_eq!(entry["auth_subject"], subject.as_str(), "{entry}");
    assert_service_lines(&lines_with(&stack.log("ext-authz"), &id), &id, "ext-authz");
    let login_lines = lines_with(&stack.log("login-service"), &id);
    assert_service_lines(&login_lines, &id, "login-service");
    assert!(
        login_lines.iter().any(|l| l["message"] == "logged out"),
        "{login_lines:?}"
    );

    // Denied: the user's header and claims under another token's signature. The reason, no
    // subject or kid (the client's text), and never the token.
    let other = stack.login(&stack.admin);
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", other.rsplit_once('.').unwrap().1);
    let reply = Reply::of(stack.get("/hello").bearer(&forged));
    assert_eq!(reply.status, 401, "{reply:?}");
    let id = reply.header("x-request-id").to_owned();
    let entry = access_log_entry(&stack, &id);
    assert_eq!(entry["auth_decision"], "deny", "{entry}");
    assert_eq!(entry["auth_reason"], "bad_signature", "{entry}");
    assert!(
        entry["auth_subject"].is_null() && entry["auth_kid"].is_null(),
        "{entry}"
    );
    assert_service_lines(&lines_with(&stack.log("ext-authz"), &id), &id, "ext-authz");

    // Open route: no check ran, so no decision.
    let reply = stack.post_login(&stack.user.email, "wrong password");
    let id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
    let entry = access_log_entry(&stack, &id);
    assert!(entry["auth_decision"].is_null(), "{entry}");
    assert_service_lines(
        &lines_with(&stack.log("login-service"), &id),
        &id,
        "login-service",
    );

    // No log of any component holds the token, the password or the e-mail address.
    for component in ["envoy", "ext-authz", "login-service", "demo-upstream"] {
        let log = stack.log(component);
        for t in [&token, &other] {
            assert!(
                !log.contains(t.rsplit('.').next().unwrap()),
                "{component} logged a token"
            );
        }
        assert!(
            !log.contains(&stack.user.password),
            "{component} logged the password"
        );
        assert!(
            !log.contains(&stack.user.email),
            "{component} logged the e-mail"
        );
    }
}

/// The soak's fail-open check (`examples/soak.rs`, not part of `make test`) reads
/// [`FAIL_OPEN_STAT`]: the stat exists and is 0 on the shipped config after a denial and an
/// allow, and `Stack::envoy_stat` fails on a stat Envoy does not have, so a misspelled name can
/// never pass as "0 requests let through" (issue #20).
#[test]
fn the_soaks_fail_open_stat_exists_and_a_missing_stat_fails() {
    let stack = Stack::start();
    let token = stack.login(&stack.user);
    Reply::of(stack.get("/x")).assert_denied(401, "missing_token", "missing bearer token");
    Reply::of(stack.get("/x").bearer(&token)).echo();
    assert_eq!(stack.envoy_stat(FAIL_OPEN_STAT), 0);

    let misspelled = FAIL_OPEN_STAT.replace("allowed", "alowed");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stack.envoy_stat(&misspelled)
    }))
    .expect_err("a stat Envoy does not have was read as a number");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("Envoy has no stat"), "{message}");
}
