//! The revocation feed protocol between the REAL ext-authz and the REAL login-service (issue
//! #20; the contract is `auth_token::feed`, the follower `ext-authz/src/feed.rs`): a snapshot
//! read in pages (`more`), a 409 `cursor_ahead` after login-service's database was replaced
//! answered by a new snapshot, and an outage logged once however many retries it takes.
//! Synchronised on ext-authz's log lines and metrics, never on elapsed time.

use std::time::Duration;

use auth_token::testing::metric_value;
use e2e::client::{Bearer as _, Reply};
use e2e::process::wait_for;
use e2e::stack::{Stack, Transport};

/// Pages of two entries, so five revocations take three pages.
const ARGS: &[&str] = &[
    "--revocation-feed-url",
    "http://127.0.0.1:5000/revocations",
    "--revocation-feed-page-limit",
    "2",
    "--revocation-feed-wait",
    "1s",
    "--revocation-grace",
    "60s",
];

/// Generous: every step here normally takes well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

fn metric(stack: &Stack, series: &str) -> Option<f64> {
    metric_value(&stack.ext_authz_metrics(), &format!("{series} "))
}

/// The `revocations=N` of every "revocation snapshot loaded" line in ext-authz's log.
fn snapshots(stack: &Stack) -> Vec<String> {
    stack
        .ext_authz_log()
        .lines()
        .filter(|l| l.contains("revocation snapshot loaded"))
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("revocations="))
                .unwrap_or("revocations=?")
                .to_owned()
        })
        .collect()
}

fn count(stack: &Stack, text: &str) -> usize {
    stack.ext_authz_log().matches(text).count()
}

#[track_caller]
fn wait(what: &str, stack: &Stack, mut ready: impl FnMut(&Stack) -> bool) {
    assert!(
        wait_for(DEADLINE, || ready(stack)),
        "{what}; ext-authz log:\n{}",
        stack.ext_authz_log()
    );
}

#[test]
fn paged_snapshot_cursor_ahead_and_one_log_line_per_outage() {
    let mut stack = Stack::start_with_args(Transport::Tcp, ARGS);
    wait("first snapshot", &stack, |s| snapshots(s).len() == 1);

    // Five tokens logged out: feed rows 1..=5.
    let tokens: Vec<String> = (0..5).map(|_| stack.login(&stack.user)).collect();
    for token in &tokens {
        let reply = Reply::of(
            stack
                .request(reqwest::Method::POST, "/logout")
                .bearer(token),
        );
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    wait("five revocations followed", &stack, |s| {
        metric(s, "ext_authz_revocations_known") == Some(5.0)
    });

    // A new replica's snapshot arrives in three pages of at most two and is taken whole: one
    // "snapshot loaded" with all five (a follower that stopped at the first page would load 2
    // and pick the rest up later as news).
    stack.kill_ext_authz();
    stack.restart_ext_authz();
    wait("second snapshot", &stack, |s| snapshots(s).len() == 2);
    assert_eq!(
        snapshots(&stack)[1],
        "revocations=5",
        "{:?}",
        snapshots(&stack)
    );
    for token in &tokens {
        Reply::of(stack.get("/x").bearer(token)).assert_denied(
            401,
            "invalid_token",
            "token revoked",
        );
    }

    // login-service's database replaced by an empty one: the follower's cursor (5) is ahead of
    // the feed, login-service answers 409, and ext-authz takes a new snapshot, which replaces
    // the old set (the new database revoked nothing).
    stack.replace_login_database(&[]);
    wait("409 seen", &stack, |s| {
        count(s, "feed cursor is ahead") == 1
    });
    wait("third snapshot", &stack, |s| snapshots(s).len() == 3);
    assert_eq!(
        snapshots(&stack)[2],
        "revocations=0",
        "{:?}",
        snapshots(&stack)
    );
    Reply::of(stack.get("/x").bearer(&tokens[0])).echo();
    // And the new feed is followed from its own start: a logout there is refused here.
    let fresh = stack.login(&stack.user);
    let reply = Reply::of(
        stack
            .request(reqwest::Method::POST, "/logout")
            .bearer(&fresh),
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    wait("the new database's revocation followed", &stack, |s| {
        metric(s, "ext_authz_revocations_known") == Some(1.0)
    });
    Reply::of(stack.get("/x").bearer(&fresh)).assert_denied(401, "invalid_token", "token revoked");

    // An outage: many failed retries (counted), one WARN line, one "recovered" line.
    let (failed, recovered) = (
        count(&stack, "revocation feed failed"),
        count(&stack, "revocation feed recovered"),
    );
    let errors = metric(&stack, "ext_authz_revocation_feed_errors_total").unwrap_or(0.0);
    stack.kill_login_service();
    wait("five failed retries", &stack, |s| {
        metric(s, "ext_authz_revocation_feed_errors_total").unwrap_or(0.0) >= errors + 5.0
    });
    stack.restart_login_service_with(&[]);
    wait("recovered", &stack, |s| {
        count(s, "revocation feed recovered") == recovered + 1
    });
    assert_eq!(
        count(&stack, "revocation feed failed"),
        failed + 1,
        "one WARN line per outage:\n{}",
        stack.ext_authz_log()
    );
    // What was known stayed in force through the outage.
    Reply::of(stack.get("/x").bearer(&fresh)).assert_denied(401, "invalid_token", "token revoked");
}
