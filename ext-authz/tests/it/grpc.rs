//! The library server (`server::start`) over TCP and a Unix socket.

use std::time::Duration;

use envoy_types::ext_authz::v3::pb::HttpResponse;
use ext_authz::server;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

#[tokio::test]
async fn tcp_checks_health_and_metrics() {
    let config = config(&["--jwt-secret", SECRET]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let channel = tcp_channel(running.grpc_addr).await;
    assert_eq!(health(channel.clone(), "").await, ServingStatus::Serving);
    assert_eq!(
        health(channel.clone(), AUTHZ_SERVICE).await,
        ServingStatus::Serving
    );

    let mut client = authz(channel);
    let good = format!("Bearer {}", token("default", SECRET, &["admin"]));
    let resp = check(&mut client, Some(&good), &[("require_roles", "admin")]).await;
    assert_eq!(http_status(&resp), 200);

    let resp = check(&mut client, None, &[]).await;
    assert_eq!(http_status(&resp), 401);
    assert_eq!(resp.status.unwrap().code, 16);

    let resp = check(&mut client, Some(&good), &[("require_roles", "root")]).await;
    assert_eq!(http_status(&resp), 403);
    assert_eq!(resp.status.unwrap().code, 7);

    let text = scrape(running.metrics_addr).await;
    for line in [
        r#"ext_authz_checks_total{decision="allow",reason="ok"} 1"#,
        r#"ext_authz_checks_total{decision="deny",reason="missing_token"} 1"#,
        r#"ext_authz_checks_total{decision="deny",reason="insufficient_scope"} 1"#,
        "ext_authz_keys_loaded 1",
        "ext_authz_check_duration_seconds_count 3",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("content-type: application/openmetrics-text"));

    running.shutdown();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .expect("drained in time")
        .unwrap();
}

#[tokio::test]
async fn unix_socket_replaces_stale_file_and_is_group_accessible() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext-authz.sock");
    // A stale socket from a previous run.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let config = config(&["--jwt-secret", SECRET, "--grpc-uds", path.to_str().unwrap()]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let channel = uds_channel(&path).await;
    assert_eq!(health(channel.clone(), "").await, ServingStatus::Serving);
    let good = format!("Bearer {}", token("default", SECRET, &[]));
    let resp = check(&mut authz(channel), Some(&good), &[]).await;
    assert_eq!(http_status(&resp), 200);

    running.shutdown();
    running.wait().await.unwrap();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn unix_socket_path_that_is_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"keep me").unwrap();
    let config = config(&["--jwt-secret", SECRET, "--grpc-uds", path.to_str().unwrap()]);
    let err = server::start(&config, config.load().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[tokio::test]
async fn shutdown_flips_health_to_not_serving_and_drains_within_deadline() {
    use tokio_stream::StreamExt as _;
    let config = config(&["--jwt-secret", SECRET, "--shutdown-timeout", "2s"]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let channel = tcp_channel(running.grpc_addr).await;

    // A Watch stream sees the flip (and, being a never-ending stream, exercises the deadline).
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: AUTHZ_SERVICE.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Checks in flight while shutting down all get correct answers or a transport error.
    let good = format!("Bearer {}", token("default", SECRET, &[]));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = authz(channel.clone());
        let good = good.clone();
        load.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..200 {
                match client.check(check_request(Some(&good), &[])).await {
                    Ok(resp) => {
                        assert_eq!(http_status(&resp.into_inner()), 200);
                        ok += 1;
                    }
                    Err(_) => break,
                }
            }
            ok
        }));
    }
    running.shutdown();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch update");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stopped within the shutdown deadline")
        .unwrap();
    for task in load {
        task.await.unwrap();
    }
}

/// `--issuer`/`--audience` make the claims required: a token signed with a loaded key but
/// without `iss` or `aud` is refused with 401 invalid_token (issue #11, item 3).
#[tokio::test]
async fn configured_issuer_and_audience_refuse_tokens_without_them() {
    let config = config(&[
        "--jwt-secret",
        SECRET,
        "--issuer",
        "login",
        "--audience",
        "edge",
    ]);
    let running = server::start(&config, config.load().unwrap())
        .await
        .unwrap();
    let mut client = authz(tcp_channel(running.grpc_addr).await);
    let sign = |issuer: Option<&str>, audience: Option<&str>| {
        let key = auth_token::Key::new("default", SECRET.as_bytes()).unwrap();
        let token = auth_token::Issuer {
            ttl: Duration::from_secs(600),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
        }
        .issue(&key, "7", "it@example.com", &[], auth_token::now_unix())
        .unwrap()
        .token;
        format!("Bearer {token}")
    };

    let good = check(&mut client, Some(&sign(Some("login"), Some("edge"))), &[]).await;
    assert_eq!(http_status(&good), 200);
    for (iss, aud) in [(None, None), (Some("login"), None), (None, Some("edge"))] {
        let resp = check(&mut client, Some(&sign(iss, aud)), &[]).await;
        assert_eq!(http_status(&resp), 401, "iss {iss:?} aud {aud:?}");
        let Some(HttpResponse::DeniedResponse(denied)) = resp.http_response else {
            panic!("not a denial: iss {iss:?} aud {aud:?}");
        };
        assert_eq!(
            denied.body,
            r#"{"error":"invalid_token","message":"missing claim"}"#
        );
        let challenge = denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "www-authenticate")
            .map(|h| h.value.clone());
        assert_eq!(
            challenge.as_deref(),
            Some(
                r#"Bearer realm="edge", error="invalid_token", error_description="missing claim""#
            )
        );
    }
    let text = scrape(running.metrics_addr).await;
    assert!(
        text.contains(r#"ext_authz_checks_total{decision="deny",reason="missing_claim"} 3"#),
        "{text}"
    );

    running.shutdown();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .expect("drained in time")
        .unwrap();
}
