//! Outages: ext-authz down fails closed with 503; login-service down only breaks logging in.

use std::time::Duration;

use reqwest::Method;

use crate::stack::{Bearer as _, Reply, Stack, wait_for};

#[test]
fn ext_authz_down_fails_closed_with_503_and_recovers() {
    let mut stack = Stack::start();
    let user = stack.login(&stack.user);
    let admin = stack.login(&stack.admin);
    Reply::of(stack.get("/before").bearer(&user)).echo();
    let seen = stack.upstream_requests();

    stack.kill_ext_authz();
    for request in [
        stack.get("/x").bearer(&user),
        stack.get("/admin/x").bearer(&admin),
        stack.get("/x"),
        stack.request(Method::GET, "/login").bearer(&user),
        stack.request(Method::DELETE, "/x").bearer(&user),
    ] {
        let reply = Reply::of(request);
        // status_on_error: an outage is 503, never a 401/403 the client would act on.
        assert_eq!(reply.status, 503, "{reply:?}");
    }
    assert_eq!(
        stack.upstream_requests(),
        seen,
        "the upstream saw requests while ext-authz was down"
    );
    // Logging in does not depend on ext-authz.
    stack.login(&stack.user);

    stack.restart_ext_authz();
    let mut last = None;
    let recovered = wait_for(Duration::from_secs(10), || {
        let reply = Reply::of(stack.get("/after").bearer(&user));
        let ok = reply.status == 200;
        last = Some(reply);
        ok
    });
    assert!(recovered, "no 200 after ext-authz restarted: {last:?}");
    Reply::of(stack.get("/after")).assert_denied(401, "missing_token");
    assert_eq!(stack.upstream_requests(), seen + 1);
}

#[test]
fn login_service_down_is_503_while_issued_tokens_keep_working() {
    let mut stack = Stack::start();
    let token = stack.login(&stack.user);

    stack.kill_login_service();
    let reply = Reply::of(
        stack
            .request(Method::POST, "/login")
            .basic_auth(&stack.user.email, Some(&stack.user.password)),
    );
    assert_eq!(reply.status, 503, "{reply:?}");

    // Tokens are verified by ext-authz alone: no call to login-service.
    let echo = Reply::of(stack.get("/still-works").bearer(&token)).echo();
    assert_eq!(echo["headers"]["x-auth-email"], stack.user.email.as_str());
}
