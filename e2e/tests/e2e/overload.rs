//! Issue #15 §3, at the edge: a login shed by login-service's hashing-queue bound reaches the
//! client through the shipped Envoy as login-service's own 503 (`overloaded`, `Retry-After`,
//! the house JSON body), not as an Envoy local reply (a route timeout's 504 or a 503
//! `service_unavailable`).

use std::time::{Duration, Instant};

use e2e::stack::Stack;

#[test]
fn a_shed_login_reaches_the_client_as_503_with_retry_after_and_json() {
    let mut stack = Stack::start();
    // One permit and no waiting at all: any two overlapping logins shed one.
    stack.restart_login_service_with(&["--hash-concurrency", "1", "--login-max-queue-wait", "0s"]);
    let user = stack.user.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut shed) = (0, 0);
    while shed == 0 {
        assert!(
            Instant::now() < deadline,
            "no login was shed ({ok} succeeded)"
        );
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let r = stack.post_login(&user.email, &user.password);
                        let status = r.status().as_u16();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let content_type = r
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body: serde_json::Value = r.json().expect("JSON body");
                        (status, retry, content_type, body)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, retry, content_type, body) in answers {
            match status {
                200 => ok += 1,
                503 => {
                    shed += 1;
                    assert_eq!(
                        body,
                        serde_json::json!({
                            "error": "overloaded",
                            "message": "too many logins at once; retry later"
                        }),
                        "login-service's answer, not an Envoy local reply"
                    );
                    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
                    assert!((1..=60).contains(&retry), "Retry-After {retry}");
                    assert_eq!(content_type.as_deref(), Some("application/json"));
                }
                other => panic!("POST /login answered {other}: {body}"),
            }
        }
    }
    // After the burst a login works.
    let _ = stack.login(&user);
}
