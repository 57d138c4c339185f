//! Issue #13: rate limits at the edge and the client-address model, through the real Envoy.
//!
//! The shipped config (the stack's Envoy on :8080) limits `POST /login` per client address and
//! per Envoy; variants rendered by `envoy/render.py --variant local --set ... --flag ...` (small
//! buckets, one trusted hop, the optional identity limit) run as a second Envoy
//! ([`e2e::variant::VariantEnvoy`]) in front of the same stack. Other client addresses are real:
//! the tests bind their sockets to 127.0.0.2, 127.0.0.3, ... (all loopback on Linux), so Envoy and
//! login-service see another TCP peer. login-service's own count comes from its `/metrics`, read directly.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};

use auth_token::testing::claims_json;
use e2e::client::{Reply, bucket_bound, client, flood};
use e2e::ports::ENVOY;
use e2e::stack::Stack;
use e2e::variant::VariantEnvoy;

/// login-service directly (`e2e::ports::LOGIN_SERVICE`, as a URL).
const LOGIN_SERVICE: &str = "http://127.0.0.1:5000";

/// A client whose connections come from `source` (a loopback address).
fn client_from(source: &str) -> Client {
    Client::builder()
        .no_proxy()
        .local_address(source.parse::<IpAddr>().expect("source address"))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Every `login_attempts_total` sample of login-service summed: each request it answered on
/// `/login`, whatever the outcome.
fn login_service_attempts() -> u64 {
    let text = client()
        .get(format!("{LOGIN_SERVICE}/metrics"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("login-service /metrics");
    text.lines()
        .filter(|l| l.starts_with("login_attempts_total{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("sample value") as u64
        })
        .sum()
}

/// `POST /login` without credentials: login-service answers 401 at once (no hash, no lockout
/// count), so only the edge decides what else happens.
fn empty_login(client: &Client, base: &str) -> RequestBuilder {
    client.post(format!("{base}/login"))
}

#[test]
fn login_flood_is_shed_at_the_edge_and_never_reaches_login_service() {
    let stack = Stack::start();
    let before = login_service_attempts();
    let start = Instant::now();
    // 8 clients × 50 requests at once from one address: far over the shipped per-address bucket
    // (100, refilled by 50 a second).
    let replies = flood(8, 50, |client| empty_login(client, ENVOY));
    let (mut passed, mut shed) = (0, 0);
    for reply in &replies {
        if reply.status == 429 {
            reply.assert_edge_429();
            shed += 1;
        } else {
            assert_eq!(reply.status, 401, "{reply:?}");
            assert_eq!(reply.json()["error"], "missing_credentials");
            passed += 1;
        }
    }
    assert!(shed > 0, "nothing shed out of {}", replies.len());
    assert!(passed <= bucket_bound(100, 50, start), "{passed} passed");
    // Excess requests never reached login-service: it counted exactly the ones that passed.
    assert_eq!(login_service_attempts() - before, passed);
    // The real user, from another address, still logs in (its own bucket).
    let reply = Reply::of(
        client_from("127.0.0.2")
            .post(format!("{}/login", ENVOY))
            .basic_auth(&stack.user.email, Some(&stack.user.password)),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn the_per_envoy_bucket_holds_across_client_addresses() {
    let _stack = Stack::start();
    let envoy = VariantEnvoy::start(
        &[],
        &[
            "login_address_burst=100",
            "login_global_burst=4",
            "login_global_refill=1",
        ],
    );
    let before = login_service_attempts();
    let start = Instant::now();
    let mut passed = 0;
    let mut shed = 0;
    for i in 0..12 {
        let client = client_from(&format!("127.0.1.{}", i + 1));
        let reply = Reply::of(client.post(VariantEnvoy::url("/login")));
        if reply.status == 429 {
            reply.assert_edge_429();
            shed += 1;
        } else {
            assert_eq!(reply.status, 401, "{reply:?}");
            passed += 1;
        }
    }
    assert!(
        shed > 0 && passed <= bucket_bound(4, 1, start),
        "{passed} passed"
    );
    assert_eq!(login_service_attempts() - before, passed);
    drop(envoy);
}

/// Through `base`, from `source`, a wrong password for `email` with spoofed address headers.
fn guess(base: &str, source: &str, email: &str, xff: &str, claimed: &str) -> Reply {
    Reply::of(
        client_from(source)
            .post(format!("{base}/login"))
            .basic_auth(email, Some("wrong password"))
            .header("x-forwarded-for", xff)
            .header("x-envoy-external-address", claimed),
    )
}

/// Five failures lock `email` for the address login-service counted them under (its
/// LOCKOUT_THRESHOLD, 5): asserts the 5 × 401 and the locked sixth, whatever the headers said.
#[track_caller]
fn lock_out(attempt: impl Fn(usize) -> Reply) {
    for i in 0..5 {
        let reply = attempt(i);
        assert_eq!(reply.status, 401, "attempt {i}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_credentials");
    }
    let reply = attempt(5);
    assert_eq!(reply.status, 429, "{reply:?}");
    assert_eq!(reply.json()["error"], "account_locked", "{reply:?}");
}

#[test]
fn client_address_headers_choose_no_bucket_and_no_counter_with_0_trusted_hops() {
    let _stack = Stack::start();
    let envoy = VariantEnvoy::start(
        &[],
        &[
            "login_address_burst=3",
            "login_address_refill=1",
            "login_global_burst=1000",
        ],
    );
    // Edge bucket: one real address, a different X-Forwarded-For and x-envoy-external-address on
    // every request: still one bucket.
    let start = Instant::now();
    let client = client_from("127.0.0.1");
    let mut passed = 0;
    for i in 0..12 {
        let spoof = format!("203.0.113.{i}");
        let reply = Reply::of(
            empty_login(&client, &VariantEnvoy::url(""))
                .header("x-forwarded-for", &spoof)
                .header("x-envoy-external-address", &spoof),
        );
        if reply.status == 429 {
            reply.assert_edge_429();
        } else {
            assert_eq!(reply.status, 401, "{reply:?}");
            passed += 1;
        }
    }
    assert!(
        passed < 12 && passed <= bucket_bound(3, 1, start),
        "{passed}"
    );
    // Another real address has its own bucket, even when it claims the drained one.
    let reply = Reply::of(
        empty_login(&client_from("127.0.0.2"), &VariantEnvoy::url(""))
            .header("x-forwarded-for", "127.0.0.1")
            .header("x-envoy-external-address", "127.0.0.1"),
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    drop(envoy);

    // Lockout through the shipped Envoy: the counter is the real peer's, whatever it claims.
    let email = "zero-hops@example.com";
    lock_out(|i| {
        let spoof = format!("198.18.0.{i}");
        guess(ENVOY, "127.0.0.2", email, &spoof, &spoof)
    });
    // Claiming the locked address from elsewhere reaches another counter (Envoy overwrote it).
    let reply = guess(ENVOY, "127.0.0.3", email, "127.0.0.2", "127.0.0.2");
    assert_eq!(reply.status, 401, "{reply:?}");

    // Directly at login-service from an untrusted peer: the headers are not read at all.
    let email = "direct@example.com";
    lock_out(|i| {
        let spoof = format!("198.18.1.{i}");
        guess(LOGIN_SERVICE, "127.0.0.4", email, &spoof, &spoof)
    });
    let reply = guess(LOGIN_SERVICE, "127.0.0.5", email, "127.0.0.4", "127.0.0.4");
    assert_eq!(reply.status, 401, "{reply:?}");
}

#[test]
fn client_address_headers_choose_no_bucket_and_no_counter_with_1_trusted_hop() {
    let _stack = Stack::start();
    // One trusted load balancer in front (played by the test): the client is the rightmost
    // X-Forwarded-For entry, the one the balancer appended; everything left of it is the
    // client's own writing.
    let envoy = VariantEnvoy::start(
        &[],
        &[
            "xff_trusted_hops=1",
            "login_address_burst=6",
            "login_address_refill=1",
            "login_global_burst=1000",
        ],
    );
    let base = VariantEnvoy::url("");
    let start = Instant::now();
    let client = client_from("127.0.0.1");
    let mut passed = 0;
    for i in 0..15 {
        let reply = Reply::of(
            empty_login(&client, &base)
                .header("x-forwarded-for", format!("203.0.113.{i}, 198.51.100.7"))
                .header("x-envoy-external-address", format!("203.0.113.{i}")),
        );
        if reply.status == 429 {
            reply.assert_edge_429();
        } else {
            assert_eq!(reply.status, 401, "{reply:?}");
            passed += 1;
        }
    }
    assert!(
        passed < 15 && passed <= bucket_bound(6, 1, start),
        "{passed}"
    );
    // Another client behind the balancer: its own bucket, even claiming the drained one.
    let reply = Reply::of(
        empty_login(&client, &base)
            .header("x-forwarded-for", "198.51.100.7, 198.51.100.8")
            .header("x-envoy-external-address", "198.51.100.7"),
    );
    assert_eq!(reply.status, 401, "{reply:?}");

    // Lockout: login-service counts the address Envoy determined (198.51.100.20), not the
    // spoofed left part nor the client's x-envoy-external-address.
    let email = "one-hop@example.com";
    lock_out(|i| {
        guess(
            &base,
            "127.0.0.1",
            email,
            &format!("198.18.2.{i}, 198.51.100.20"),
            &format!("198.18.2.{i}"),
        )
    });
    let reply = guess(
        &base,
        "127.0.0.1",
        email,
        "198.51.100.20, 198.51.100.21",
        "198.51.100.20",
    );
    assert_eq!(reply.status, 401, "another client claiming .20: {reply:?}");
    // Directly at login-service (untrusted peer), the balancer's form changes nothing either.
    let reply = guess(
        LOGIN_SERVICE,
        "127.0.0.6",
        email,
        "198.51.100.20",
        "198.51.100.20",
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    drop(envoy);
}

#[test]
fn identity_limit_sheds_one_token_and_not_the_others() {
    let stack = Stack::start();
    let user_token = stack.login(&stack.user);
    let admin_token = stack.login(&stack.admin);
    // Off by default: the shipped Envoy lets one token through as often as it likes.
    for _ in 0..10 {
        Reply::of(stack.get("/hello").bearer_auth(&user_token)).echo();
    }
    let envoy = VariantEnvoy::start(
        &["identity_limit"],
        &["identity_burst=3", "identity_refill=1"],
    );
    let client = client();
    let before = stack.upstream_requests();
    let start = Instant::now();
    let mut passed = 0;
    for _ in 0..10 {
        let reply = Reply::of(
            client
                .get(VariantEnvoy::url("/hello"))
                .bearer_auth(&user_token),
        );
        if reply.status == 429 {
            reply.assert_edge_429();
        } else {
            reply.echo();
            passed += 1;
        }
    }
    assert!(
        passed < 10 && passed <= bucket_bound(3, 1, start),
        "{passed}"
    );
    assert_eq!(
        stack.upstream_requests() - before,
        passed,
        "shed ones reached the upstream"
    );
    // Another identity has its own bucket; a client-sent x-auth-user-id changes nothing (ext-authz
    // overwrites it before the limit runs).
    let reply = Reply::of(
        client
            .get(VariantEnvoy::url("/hello"))
            .bearer_auth(&admin_token)
            .header("x-auth-user-id", "someone-else"),
    );
    reply.echo();
    // Without a token the check answers first (401), never the limit.
    let reply = Reply::of(client.get(VariantEnvoy::url("/hello")));
    reply.assert_denied(401, "missing_token", "missing bearer token");
    // Routes without a check do not run it: a login claiming the drained identity is not shed.
    let sub = claims_json(&user_token)["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    let reply = Reply::of(
        client
            .request(Method::POST, VariantEnvoy::url("/login"))
            .basic_auth(&stack.user.email, Some(&stack.user.password))
            .header("x-auth-user-id", &sub),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    drop(envoy);
}
