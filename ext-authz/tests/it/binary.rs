//! The built `ext-authz` binary: startup errors, --check-config, TCP + UDS, SIGTERM drain.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ext-authz"));
    // Start from a clean environment so the host's JWT_SECRET, GRPC_ADDR... cannot leak in.
    cmd.env_clear().env("RUST_LOG", "info");
    cmd
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    wait_until(deadline, || child.try_wait().unwrap()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("ext-authz did not exit within {deadline:?}");
    })
}

/// The binary serving on ports the system picks, logging JSON at `rust_log` to a piped stderr
/// (read it with `serving_addrs`), with `args` after the addresses.
fn serve_json(rust_log: &str, args: &[&str]) -> Child {
    command()
        .env("JWT_SECRET", SECRET)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", rust_log)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit status (see [`exit_status`]).
async fn sigterm_and_wait(child: Child, deadline: Duration) -> std::process::ExitStatus {
    sigterm(&child);
    exit_status(child, deadline).await
}

/// The exit status within `deadline`, else the child is killed and this panics.
async fn exit_status(mut child: Child, deadline: Duration) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || wait_with_deadline(&mut child, deadline))
        .await
        .unwrap()
}

fn sigterm(child: &Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

#[test]
fn short_key_exits_64_with_one_clear_line_and_no_secret() {
    let out = command()
        .env("JWT_SECRET", "tiny-secret-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("tiny-secret-value"), "{stderr}");
    assert!(out.stdout.is_empty());

    // --check-config fails the same way (the manifest tests rely on it).
    let out = command()
        .env("JWT_SECRET", "tiny-secret-value")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
}

/// Security review of issue #11: a feed token that can never match login-service's, and a
/// fail-closed grace a healthy long poll outlasts, stop the start (exit 64, one line, the token
/// never printed).
#[test]
fn unusable_feed_settings_exit_64_with_one_line() {
    let secret = "0123456789abcdef0123456789abcdef";
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = command();
        cmd.env("JWT_SECRET", secret)
            .env("REVOCATION_FEED_URL", "http://127.0.0.1:5000/revocations")
            .arg("--check-config");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stderr).unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let (code, stderr, _) = run(&[("REVOCATION_FEED_TOKEN", "feed-secret-short")]);
    assert_eq!(code, Some(64));
    assert_eq!(
        stderr,
        "ext-authz: configuration error: invalid --revocation-feed-token (REVOCATION_FEED_TOKEN): need at least 32 characters of A-Z a-z 0-9 - . _ ~ + / with optional trailing = (an RFC 6750 b64token; surrounding whitespace is trimmed)\n"
    );
    let (code, stderr, _) = run(&[
        ("REVOCATION_FAIL_CLOSED", "true"),
        ("REVOCATION_GRACE", "10s"),
    ]);
    assert_eq!(code, Some(64));
    assert_eq!(
        stderr,
        "ext-authz: configuration error: invalid --revocation-grace 10s with --revocation-fail-closed: must be more than --revocation-feed-wait + 5s (8s + 5s), the longest a healthy long poll takes to answer\n"
    );
    // A secret file's trailing newline is fine: trimmed.
    let token = format!("{}\n", "ab".repeat(32));
    let (code, stderr, stdout) = run(&[("REVOCATION_FEED_TOKEN", &token)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains(&"ab".repeat(32)), "{stdout}");
}

#[test]
fn missing_keys_and_bad_flags_exit_64() {
    let out = command().output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));

    let out = command()
        .env("JWT_SECRET", SECRET)
        .args(["--realm", "bad\"realm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    let out = command()
        .env("JWT_SECRET", SECRET)
        .args(["--keys-reload-interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--keys-reload-interval"), "{stderr}");

    let out = command()
        .env("JWT_SECRET", SECRET)
        .env("DRY_RUN", "maybe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn taken_port_exits_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = command()
        .env("JWT_SECRET", SECRET)
        .args(["--grpc-addr", &addr, "--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen on grpc address {addr}")),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_kids_not_secrets() {
    let keys = SecretDir::new(&[("k1", SECRET), ("k2", SECRET_2)]);
    let out = command()
        .env("KEYS_DIR", keys.path())
        .env("JWT_DEFAULT_KID", "k2")
        .env("DRY_RUN", "1")
        .env("STRIP_AUTHORIZATION", "yes")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("kids=[k1,k2]") && stdout.contains("default_kid=k2"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stdout.contains(SECRET_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_tcp_and_uds_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("authz.sock");
    let mut child = serve_json(
        "info,ext_authz=debug",
        &[
            "--grpc-uds",
            sock.to_str().unwrap(),
            "--worker-threads",
            "1",
        ],
    );
    let (grpc_addr, metrics_addr, logs) = serving_addrs(&mut child);

    let tcp = tcp_channel(grpc_addr).await;
    assert_eq!(health(tcp.clone(), "").await, ServingStatus::Serving);
    let uds = uds_channel(&sock).await;
    assert_eq!(
        health(uds.clone(), AUTHZ_SERVICE).await,
        ServingStatus::Serving
    );

    let token_text = token("default", SECRET, &[]);
    let good = format!("Bearer {token_text}");
    for channel in [tcp.clone(), uds] {
        let resp = check(&mut authz(channel), Some(&good), &[]).await;
        assert_eq!(http_status(&resp), 200);
    }
    let resp = check(&mut authz(tcp.clone()), Some("Bearer not.a.token"), &[]).await;
    assert_eq!(http_status(&resp), 401);
    assert!(
        scrape(metrics_addr)
            .await
            .contains(r#"reason="malformed"} 1"#)
    );

    // Keep checks in flight over the open connection while SIGTERM arrives.
    let mut client = authz(tcp);
    let load = tokio::spawn(async move {
        let mut answered = 0u32;
        while let Ok(resp) = client.check(check_request(Some(&good), &[])).await {
            assert_eq!(http_status(&resp.into_inner()), 200);
            answered += 1;
        }
        answered
    });
    eventually("checks flowing", Duration::from_secs(10), || async {
        let text = scrape(metrics_addr).await;
        let allowed = metric_value(
            &text,
            r#"ext_authz_checks_total{decision="allow",reason="ok"}"#,
        )?;
        (allowed >= 10.0).then_some(())
    })
    .await;
    let exit = sigterm_and_wait(child, Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0));
    load.await.unwrap();
    // The child exited: its stderr is at EOF, so this ends once every line is read.
    let rest: Vec<String> = logs.iter().collect();
    let joined = rest.join("\n");
    assert!(
        joined.contains("shutting down") && joined.contains("SIGTERM"),
        "{joined}"
    );
    assert!(joined.contains("drained"), "{joined}");
    // Tokens and keys never reach the logs, even at debug; the request id does.
    assert!(!joined.contains(SECRET));
    assert!(!joined.contains("not.a.token"), "{joined}");
    assert!(!joined.contains(token_text.as_str()), "{joined}");
    assert!(joined.contains(r#""request_id":"it-1""#), "{joined}");
    assert!(!sock.exists(), "socket removed on exit");
}

/// A Check in flight when SIGTERM arrives is answered with an allow before the drain ends
/// (issue #20): the held stream stays open across the signal and the server's GOAWAY, and the
/// log shows its decision before "drained". A drain that does not wait for open streams fails
/// here: the connection dies with the process (the release errors), or the decision is logged
/// after "drained".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_held_across_sigterm_is_allowed_before_the_drain_ends() {
    // The shutdown deadline far beyond the test: only the held stream may end the drain.
    let mut child = serve_json(
        "info,ext_authz=debug",
        &["--shutdown-timeout", "120s", "--worker-threads", "1"],
    );
    let (grpc_addr, _, logs) = serving_addrs(&mut child);
    let good = format!("Bearer {}", token("default", SECRET, &[]));
    let mut request = check_request(Some(&good), &[]);
    request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap()
        .headers
        .insert("x-request-id".to_owned(), "held-across-sigterm".to_owned());
    let held = HeldCheck::start(grpc_addr, &request).await;

    sigterm(&child);
    let mut lines = read_log_until(&logs, Duration::from_secs(20), |l| {
        l.contains("shutting down")
    });
    // The graceful shutdown reached the held check's connection: new streams are refused.
    eventually(
        "a GOAWAY on the held check's connection",
        Duration::from_secs(20),
        || {
            let refused = held.new_stream_refused();
            async move { refused.await.then_some(()) }
        },
    )
    .await;

    let answer = held.release().await.expect("the held check is answered");
    assert_eq!(http_status(&answer), 200);
    let exit = exit_status(child, Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0));
    lines.extend(logs.iter());
    let at = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    let decided = at(&|l| {
        l.contains(r#""request_id":"held-across-sigterm""#) && l.contains(r#""decision":"allow""#)
    })
    .unwrap_or_else(|| panic!("no allow logged for the held check:\n{}", lines.join("\n")));
    let drained = at(&|l| l.contains(r#""message":"drained""#))
        .unwrap_or_else(|| panic!("no \"drained\" line:\n{}", lines.join("\n")));
    assert!(
        decided < drained,
        "decided after the drain ended:\n{}",
        lines.join("\n")
    );
}

/// Started while the feed is unreachable (fail-open): once the startup wait passes it decides
/// with an empty revocation set — and says so with one ERROR line (and the gauge, see
/// health.rs), so an operator cannot miss that revoked tokens may pass here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_without_a_revocation_snapshot_logs_an_error() {
    // A port that refuses connections: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let feed = format!("http://{closed}/revocations");
    let mut child = serve_json(
        "info",
        &[
            "--revocation-feed-url",
            &feed,
            "--revocation-startup-wait",
            "300ms",
        ],
    );
    let (grpc_addr, _metrics, logs) = serving_addrs(&mut child);
    let lines = read_log_until(&logs, Duration::from_secs(10), |line| {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["level"] == "ERROR"
    });
    let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        line["message"],
        "no revocation snapshot after the startup wait: deciding WITHOUT revocation data (revoked tokens are accepted until the feed answers)"
    );
    let channel = tcp_channel(grpc_addr).await;
    assert_eq!(health(channel, "").await, ServingStatus::Serving);
    let exit = sigterm_and_wait(child, Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0));
}
