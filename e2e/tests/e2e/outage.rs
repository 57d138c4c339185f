//! Outages: ext-authz down fails closed with 503; login-service down only breaks logging in.

use std::time::Duration;

use reqwest::Method;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use e2e::client::{Bearer as _, Reply};
use e2e::process::wait_for;
use e2e::stack::{Stack, Transport};

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

/// ext-authz's gRPC address in the stack (TCP transport).
const EXT_AUTHZ_GRPC: &str = "http://127.0.0.1:9001";
/// The named health service that reports the revocation feed's freshness.
const FEED_SERVICE: &str = "edge-auth.revocation-feed";

/// Following login-service's feed, with a grace short enough for a test (fail-closed needs
/// one above the long poll's wait + 5s, or ext-authz refuses to start).
fn feed_args(fail_closed: bool) -> Vec<&'static str> {
    let mut args = vec![
        "--revocation-feed-url",
        "http://127.0.0.1:5000/revocations",
        "--revocation-grace",
        if fail_closed { "6500ms" } else { "1s" },
        "--revocation-feed-wait",
        "1s",
    ];
    if fail_closed {
        args.push("--revocation-fail-closed");
    }
    args
}

/// The gRPC health status of `service` on the stack's ext-authz (`None`: no answer).
fn health(service: &str) -> Option<ServingStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_static(EXT_AUTHZ_GRPC)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(reply.into_inner().status).ok()
    })
}

#[track_caller]
fn wait_health(service: &str, want: ServingStatus) {
    let mut last = None;
    let ok = wait_for(Duration::from_secs(20), || {
        last = health(service);
        last == Some(want)
    });
    assert!(ok, "health of {service:?}: {last:?}, want {want:?}");
}

/// Issue #11 item 6: with the revocation feed followed (default fail-open), login-service down
/// for longer than the grace leaves the edge up: issued tokens keep working through Envoy and
/// ext-authz's readiness ("" and Authorization) stays SERVING; only the named feed service
/// reports the stale data.
#[test]
fn login_service_down_keeps_the_edge_ready_and_only_the_feed_service_goes_not_serving() {
    let mut stack = Stack::start_with_args(Transport::Tcp, &feed_args(false));
    let token = stack.login(&stack.user);
    wait_health(FEED_SERVICE, ServingStatus::Serving);
    wait_health("", ServingStatus::Serving);

    stack.kill_login_service();
    wait_health(FEED_SERVICE, ServingStatus::NotServing);
    assert_eq!(health(""), Some(ServingStatus::Serving));
    assert_eq!(
        health("envoy.service.auth.v3.Authorization"),
        Some(ServingStatus::Serving)
    );
    let echo = Reply::of(stack.get("/during-outage").bearer(&token)).echo();
    assert_eq!(echo["headers"]["x-auth-email"], stack.user.email.as_str());
    Reply::of(stack.get("/during-outage")).assert_denied(401, "missing_token");
}

/// The explicit fail-closed choice: the same outage makes every check UNAVAILABLE, which Envoy
/// answers 503 (status_on_error), and readiness follows the feed.
#[test]
fn login_service_down_with_fail_closed_is_503_at_the_edge() {
    let mut stack = Stack::start_with_args(Transport::Tcp, &feed_args(true));
    let token = stack.login(&stack.user);
    wait_health("", ServingStatus::Serving);
    assert_eq!(
        Reply::of(stack.get("/before-outage").bearer(&token)).status,
        200
    );
    let seen = stack.upstream_requests();

    stack.kill_login_service();
    wait_health(FEED_SERVICE, ServingStatus::NotServing);
    let mut last = None;
    let refused = wait_for(Duration::from_secs(20), || {
        let reply = Reply::of(stack.get("/during-outage").bearer(&token));
        let is_503 = reply.status == 503;
        last = Some(reply);
        is_503
    });
    assert!(
        refused,
        "no 503 with fail-closed and the feed down: {last:?}"
    );
    assert_eq!(health(""), Some(ServingStatus::NotServing));
    assert_eq!(
        stack.upstream_requests(),
        seen,
        "nothing reached the upstream"
    );
}
