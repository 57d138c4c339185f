//! Key rotation through a Kubernetes-style keys directory while checks are running.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ext_authz::server;

use crate::support::*;

/// Phases: tokens signed with k1 → k2 added → tokens switch to k2 → k1 removed. Every check
/// uses a token whose kid is in the directory at that moment; none may be denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_checking_denies_no_valid_token() {
    let mut keys = SecretDir::new(&[("k1", SECRET)]);
    let config = config(&[
        "--keys-dir",
        keys.path().to_str().unwrap(),
        "--keys-reload-interval",
        "50ms",
    ]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let channel = tcp_channel(running.grpc_addr).await;

    let k1_token = format!("Bearer {}", token("k1", SECRET, &[]));
    let k2_token = format!("Bearer {}", token("k2", SECRET_2, &[]));
    let current = Arc::new(Mutex::new(k1_token.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let wrongly_denied = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut client = authz(channel.clone());
        let (current, stop, checks, wrongly_denied) = (
            Arc::clone(&current),
            Arc::clone(&stop),
            Arc::clone(&checks),
            Arc::clone(&wrongly_denied),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let value = current.lock().unwrap().clone();
                let resp = client
                    .check(check_request(Some(&value), &[]))
                    .await
                    .expect("check RPC");
                if http_status(&resp.into_inner()) != 200 {
                    wrongly_denied.fetch_add(1, Ordering::Relaxed);
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let wait_for_more_checks = |n: u64| {
        let checks = Arc::clone(&checks);
        let target = checks.load(Ordering::Relaxed) + n;
        async move {
            eventually("checks to progress", Duration::from_secs(20), || {
                let done = checks.load(Ordering::Relaxed) >= target;
                async move { done.then_some(()) }
            })
            .await;
        }
    };
    let status_of = |value: String| {
        let mut client = authz(channel.clone());
        async move {
            http_status(
                &client
                    .check(check_request(Some(&value), &[]))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        }
    };
    wait_for_more_checks(50).await;

    // Add k2: the server picks it up without restart.
    keys.update(&[("k1", SECRET), ("k2", SECRET_2)]);
    eventually("k2 accepted", Duration::from_secs(10), || {
        let probe = status_of(k2_token.clone());
        async move { (probe.await == 200).then_some(()) }
    })
    .await;
    wait_for_more_checks(50).await;

    // Switch the clients to k2 tokens, then retire k1.
    *current.lock().unwrap() = k2_token.clone();
    wait_for_more_checks(50).await;
    keys.update(&[("k2", SECRET_2)]);
    eventually("k1 refused", Duration::from_secs(10), || {
        let probe = status_of(k1_token.clone());
        async move { (probe.await == 401).then_some(()) }
    })
    .await;
    wait_for_more_checks(50).await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let total = checks.load(Ordering::Relaxed);
    assert_eq!(
        wrongly_denied.load(Ordering::Relaxed),
        0,
        "valid tokens denied during rotation (of {total} checks)"
    );
    assert!(total >= 200, "{total}");

    let text = scrape(running.metrics_addr).await;
    assert!(
        metric_value(&text, "ext_authz_key_reloads_total").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "ext_authz_keys_loaded"), Some(1.0));

    // A broken update (short key) keeps the working ring and counts a failure.
    keys.update(&[("k2", SECRET_2), ("k3", "short")]);
    eventually(
        "reload failure counted",
        Duration::from_secs(10),
        || async {
            let text = scrape(running.metrics_addr).await;
            (metric_value(&text, "ext_authz_key_reload_failures_total")? >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(status_of(k2_token.clone()).await, 200);

    running.shutdown();
    running.wait().await.unwrap();
}
