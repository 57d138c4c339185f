//! The authentication flows through Envoy with every component up.

use std::time::Duration;

use reqwest::Method;

use auth_token::Key;
use auth_token::now_unix as now;
use auth_token::testing::{claims_json, mint};
use e2e::client::{Bearer as _, Reply, raw_get_status};
use e2e::process::wait_for;
use e2e::stack::{KID, Stack};

#[test]
fn login_then_call_reaches_upstream_with_identity_headers() {
    let stack = Stack::start();
    let token = stack.login(&stack.admin);
    let expected = claims_json(&token);

    // A client-sent x-forwarded-for is kept, but Envoy appends the peer it saw: the rightmost
    // entry (what login-service rate-limits on) cannot be forged.
    let spoofed = "203.0.113.9";
    let reply = Reply::of(
        stack
            .get("/hello/world?x=1")
            .bearer(&token)
            .header("x-forwarded-for", spoofed),
    );
    let echo = reply.echo();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello/world");
    assert_eq!(echo["query"], "x=1");
    let headers = &echo["headers"];
    assert_eq!(headers["x-auth-user-id"], expected["sub"], "{echo}");
    assert_eq!(
        headers["x-auth-email"],
        stack.admin.email.as_str(),
        "{echo}"
    );
    assert_eq!(headers["x-auth-roles"], "admin", "{echo}");
    let request_id = headers["x-request-id"].as_str().unwrap_or("");
    assert!(
        !request_id.is_empty(),
        "Envoy generates x-request-id: {echo}"
    );
    let xff: Vec<&str> = headers["x-forwarded-for"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(xff.len(), 2, "{echo}");
    assert_eq!(xff[0], spoofed, "{echo}");
    // For a loopback peer Envoy appends its own host address rather than 127.0.0.1.
    assert!(!xff[1].is_empty() && xff[1] != spoofed, "{echo}");
    assert_eq!(headers["x-envoy-external-address"], "127.0.0.1", "{echo}");

    // A user without roles gets an empty roles header, not a missing one.
    let token = stack.login(&stack.user);
    let echo = Reply::of(stack.get("/").bearer(&token)).echo();
    assert_eq!(echo["headers"]["x-auth-email"], stack.user.email.as_str());
    assert_eq!(echo["headers"]["x-auth-roles"], "", "{echo}");

    // Every method reaches the upstream with a token.
    let echo = Reply::of(stack.request(Method::DELETE, "/items/7").bearer(&token)).echo();
    assert_eq!(echo["method"], "DELETE");

    // The access log is JSON on stdout, with the request id and no credentials.
    let mut line = None;
    let logged = wait_for(Duration::from_secs(10), || {
        line = stack
            .envoy_log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request_id"] == request_id);
        line.is_some()
    });
    assert!(logged, "no access log line with request_id {request_id}");
    let line = line.expect("found");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/hello/world", "no query string: {line}");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream_cluster"], "demo_upstream");
    for field in ["duration_ms", "response_flags"] {
        assert!(line.get(field).is_some(), "{field} missing: {line}");
    }
    let log = stack.envoy_log();
    assert!(!log.contains(&token), "a token reached Envoy's log");
    assert!(
        !log.to_lowercase().contains("bearer "),
        "credentials in Envoy's log"
    );
}

#[test]
fn missing_token_is_401_with_a_bearer_challenge() {
    let stack = Stack::start();
    for path in ["/", "/anything?q=1", "/admin/x"] {
        Reply::of(stack.get(path)).assert_denied(401, "missing_token");
    }
    Reply::of(stack.request(Method::POST, "/data").body("{}")).assert_denied(401, "missing_token");
    assert_eq!(
        stack.upstream_requests(),
        0,
        "denied requests reached the upstream"
    );
}

#[test]
fn bad_and_expired_tokens_are_401_invalid_token() {
    let stack = Stack::start();
    let user = &stack.user;
    let hour = Duration::from_secs(3600);
    let expired = stack.sign("1", &user.email, &[], now() - 2 * 3600, hour);
    let other_secret = b"another-secret-that-is-long-enough-for-hs256!";
    let wrong_key = mint(
        &Key::new(KID, other_secret).expect("test key"),
        "1",
        &user.email,
        &["admin"],
        now(),
        hour,
    );
    let unknown_kid = mint(
        &Key::new("not-a-kid", other_secret).expect("test key"),
        "1",
        &user.email,
        &[],
        now(),
        hour,
    );
    let valid = stack.login(user);
    let tampered = {
        // Same signature, payload of another user.
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let other = stack.sign("999", "attacker@evil", &["admin"], now(), hour);
        parts[1] = other.split('.').nth(1).expect("payload").to_owned();
        parts.join(".")
    };
    for (what, token) in [
        ("garbage", "not-a-jwt".to_owned()),
        ("expired", expired),
        ("wrong key", wrong_key),
        ("unknown kid", unknown_kid),
        ("tampered payload", tampered),
    ] {
        let reply = Reply::of(stack.get("/anything").bearer(&token));
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        reply.assert_denied(401, "invalid_token");
    }
    assert_eq!(
        stack.upstream_requests(),
        0,
        "denied requests reached the upstream"
    );

    // The same key, in date: accepted (the forging helper signs like login-service).
    let fresh = stack.sign("1", &user.email, &[], now(), hour);
    Reply::of(stack.get("/").bearer(&fresh)).echo();
}

#[test]
fn client_sent_identity_headers_are_replaced_by_the_tokens_identity() {
    let stack = Stack::start();
    let token = stack.login(&stack.user);
    let sub = claims_json(&token)["sub"].clone();
    let forged = |path: &str| {
        stack
            .get(path)
            .bearer(&token)
            .header("x-auth-email", "attacker@evil")
            .header("x-auth-user-id", "0")
            .header("x-auth-roles", "admin")
    };
    let echo = Reply::of(forged("/me")).echo();
    let headers = &echo["headers"];
    // Exactly the token's values: overwritten (`append: false`), not appended ("a,b").
    assert_eq!(headers["x-auth-email"], stack.user.email.as_str(), "{echo}");
    assert_eq!(headers["x-auth-user-id"], sub, "{echo}");
    assert_eq!(headers["x-auth-roles"], "", "{echo}");

    // A forged roles header does not open the admin area either.
    Reply::of(forged("/admin/x")).assert_denied(403, "insufficient_scope");
}

#[test]
fn admin_prefix_requires_the_admin_role() {
    let stack = Stack::start();
    let user = stack.login(&stack.user);
    let admin = stack.login(&stack.admin);

    // Other spellings of /admin/ are normalized onto the admin route, not past it.
    for path in [
        "/admin/x",
        "/admin/",
        "/ADMIN/x",
        "//admin/x",
        "/public/../admin/x",
        "/%61dmin/x",
    ] {
        assert_eq!(raw_get_status(path, &user), 403, "{path}");
    }
    Reply::of(stack.get("/admin/x").bearer(&user)).assert_denied(403, "insufficient_scope");
    // An escaped slash could be decoded differently upstream: rejected outright.
    assert_eq!(raw_get_status("/admin%2Fx", &user), 400);
    assert_eq!(stack.upstream_requests(), 0);

    let echo = Reply::of(stack.get("/admin/x").bearer(&admin)).echo();
    assert_eq!(echo["path"], "/admin/x");
    assert_eq!(echo["headers"]["x-auth-roles"], "admin");
    // The policy travels as context_extensions to ext-authz, never upstream.
    assert!(echo["headers"].get("require_roles").is_none(), "{echo}");

    // Outside /admin/ a plain user is fine.
    Reply::of(stack.get("/administrator").bearer(&user)).echo();
}

#[test]
fn login_is_public_for_post_only() {
    let stack = Stack::start();
    // POST /login needs no token (stack.login asserts the 200 and the JSON).
    let token = stack.login(&stack.user);
    // Bad credentials: login-service's own 401, not an ext-authz challenge.
    let reply = Reply::of(
        stack
            .request(Method::POST, "/login")
            .basic_auth(&stack.user.email, Some("wrong password")),
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.json()["error"].is_string(), "{reply:?}");

    // Any other method on /login is protected like the rest of the site.
    Reply::of(stack.get("/login")).assert_denied(401, "missing_token");
    Reply::of(stack.request(Method::PUT, "/login")).assert_denied(401, "missing_token");
    assert_eq!(stack.upstream_requests(), 0);
    let echo = Reply::of(stack.get("/login").bearer(&token)).echo();
    assert_eq!(echo["path"], "/login", "GET /login goes to the upstream");
}
