//! Outages: ext-authz down, hung, or up but unable to decide fails closed with Envoy's JSON 503
//! and nothing reaches the upstream; login-service down only breaks logging in.

use std::net::TcpListener;
use std::time::{Duration, Instant};

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
    Reply::of(stack.get("/after")).assert_denied(401, "missing_token", "missing bearer token");
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
    Reply::of(stack.get("/during-outage")).assert_denied(
        401,
        "missing_token",
        "missing bearer token",
    );
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
    last.expect("a reply")
        .assert_edge_error(503, "service_unavailable");
    assert_eq!(health(""), Some(ServingStatus::NotServing));
    assert_eq!(
        stack.upstream_requests(),
        seen,
        "nothing reached the upstream"
    );
}

/// Requests that must all be refused with Envoy's 503 while ext-authz cannot decide: a user's
/// and an admin's valid token, no token, an admin route. Asserts the JSON shape of each and that
/// the upstream saw none of them.
#[track_caller]
fn assert_all_503(stack: &Stack, user: &str, admin: &str) {
    let seen = stack.upstream_requests();
    for request in [
        stack.get("/x").bearer(user),
        stack.get("/admin/x").bearer(admin),
        stack.get("/x"),
        stack.request(Method::DELETE, "/x").bearer(user),
    ] {
        Reply::of(request).assert_edge_error(503, "service_unavailable");
    }
    assert_eq!(
        stack.upstream_requests(),
        seen,
        "the upstream saw a request"
    );
}

/// A LIVE ext-authz that cannot decide yet (issue #20): following a feed that never answers
/// (a listener this test holds and never accepts on, so no snapshot can arrive; the startup
/// wait is an hour so the fail-open replica never starts deciding without one) answers gRPC
/// UNAVAILABLE, which Envoy turns into its JSON 503; the upstream sees nothing. The tokens are
/// valid: a replica that decided anyway would answer 200.
#[test]
fn a_live_ext_authz_before_its_first_revocation_snapshot_is_503_at_the_edge() {
    let silent_feed = TcpListener::bind("127.0.0.1:0").expect("bind the silent feed");
    let feed = format!(
        "http://{}/revocations",
        silent_feed.local_addr().expect("addr")
    );
    let stack = Stack::start_with_args(
        Transport::Tcp,
        &[
            "--revocation-feed-url",
            &feed,
            "--revocation-startup-wait",
            "1h",
            "--revocation-feed-wait",
            "1s",
        ],
    );
    let user = stack.sign("2", &stack.user.email, &[], auth_token::now_unix(), HOUR);
    let admin = stack.sign(
        "1",
        &stack.admin.email,
        &["admin"],
        auth_token::now_unix(),
        HOUR,
    );
    // Live: it answers health, and says it cannot decide.
    assert_eq!(health(""), Some(ServingStatus::NotServing));
    assert_all_503(&stack, &user, &admin);
    // ext-authz answered with RPC errors, not denials (a deny would be a 401/403 the client
    // acts on).
    let errors = auth_token::testing::metric_value(
        &stack.ext_authz_metrics(),
        "ext_authz_check_errors_total ",
    );
    assert_eq!(errors, Some(4.0));
}

/// A hung ext-authz (SIGSTOP: its sockets stay open, nothing answers) is Envoy's JSON 503 once
/// the filter's gRPC timeout (0.5 s in envoy.yaml.in) passes, not a client left waiting until
/// the route timeout; the upstream sees nothing; it recovers on SIGCONT. The time bound is
/// deliberately loose (10 s, far above 0.5 s and far below the 60 s request timeout): it tells
/// "the check timed out" from "Envoy waited for the route or the client".
#[test]
fn a_hung_ext_authz_is_503_within_the_check_timeout() {
    let stack = Stack::start();
    let user = stack.login(&stack.user);
    let admin = stack.login(&stack.admin);
    Reply::of(stack.get("/warm").bearer(&user)).echo();

    let stopped = stack.stop_process("ext-authz");
    let started = Instant::now();
    assert_all_503(&stack, &user, &admin);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10 * 4),
        "4 requests took {took:?}"
    );
    for _ in 0..3 {
        let started = Instant::now();
        Reply::of(
            stack
                .get("/x")
                .bearer(&user)
                .timeout(Duration::from_secs(30)),
        )
        .assert_edge_error(503, "service_unavailable");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "one request took {took:?}");
    }
    drop(stopped);

    let seen = stack.upstream_requests();
    let mut last = None;
    let back = wait_for(Duration::from_secs(20), || {
        let reply = Reply::of(stack.get("/after").bearer(&user));
        let ok = reply.status == 200;
        last = Some(reply);
        ok
    });
    assert!(back, "no 200 after SIGCONT: {last:?}");
    assert_eq!(stack.upstream_requests(), seen + 1);
}

/// "No keys" cannot make a live ext-authz answer UNAVAILABLE: it refuses to start without keys
/// (exit 64, "no keys found in DIR") and, when every key file disappears under
/// it, keeps the keys it has (a failed reload). So emptying the keys directory of a running
/// gateway is not an outage: valid tokens still pass, forged ones are still refused.
#[test]
fn emptying_the_keys_directory_keeps_the_loaded_keys() {
    let stack = Stack::start();
    let token = stack.login(&stack.user);
    let before = failures(&stack);
    stack.remove_gateway_key(e2e::stack::KID);
    assert!(
        wait_for(Duration::from_secs(20), || failures(&stack) > before),
        "no failed key reload counted"
    );
    let echo = Reply::of(stack.get("/x").bearer(&token)).echo();
    assert_eq!(echo["headers"]["x-auth-email"], stack.user.email.as_str());
    let forged = auth_token::testing::mint(
        &auth_token::Key::new(e2e::stack::KID, &[b'x'; 32]).expect("key"),
        "1",
        &stack.admin.email,
        &["admin"],
        auth_token::now_unix(),
        HOUR,
    );
    Reply::of(stack.get("/admin/x").bearer(&forged)).assert_denied(
        401,
        "invalid_token",
        "invalid signature",
    );
}

/// ext-authz's failed key reloads so far.
fn failures(stack: &Stack) -> f64 {
    auth_token::testing::metric_value(
        &stack.ext_authz_metrics(),
        "ext_authz_key_reload_failures_total ",
    )
    .unwrap_or(0.0)
}

const HOUR: Duration = Duration::from_secs(3600);
