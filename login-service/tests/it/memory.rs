//! Item 4a of issue #11: login-service's memory is bounded by design. The real binary serves a
//! burst of parallel logins and its peak RSS (`VmHWM`) must stay under
//! 32 MiB + HASH_CONCURRENCY × the hash's memory (19 MiB). SQLite only: the bound is about the
//! password hashes, not the database.

use std::time::Duration;

use crate::helpers::{TestDb, basic, run_cli_ok};
use crate::served::Served;

const HASH_CONCURRENCY: u64 = 2;
const LOGINS: usize = 48;
const CLIENTS: usize = 8;

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn peak_rss_stays_under_the_hash_memory_bound() {
    let db = TestDb::sqlite();
    run_cli_ok(&db, &[], &["migrate"], None);
    run_cli_ok(
        &db,
        &[],
        &["user", "add", "mem@example.com", "--password-stdin"],
        Some("pw\n"),
    );
    let secret = "m".repeat(32);
    let concurrency = HASH_CONCURRENCY.to_string();
    let server = Served::start(
        &[
            ("DATABASE_URL", &db.url),
            ("JWT_SECRET", &secret),
            ("HASH_CONCURRENCY", &concurrency),
            ("IP_FAILURE_THRESHOLD", "100000"),
            // 8 clients on 2 permits: every login waits, none is shed (the bound is overload.rs's).
            ("LOGIN_MAX_QUEUE_WAIT", "9s"),
            // The "listening" line (the bound port) and nothing chattier.
            ("RUST_LOG", "warn,login_service::server=info"),
        ],
        "/readyz",
        200,
    );
    let base = server.url("");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let auth = basic(b"mem@example.com:pw");
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < LOGINS {
                    let r = client
                        .post(format!("{base}/login"))
                        .header("authorization", &auth)
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    let peak_mib = peak_rss_kib(server.pid()) / 1024;
    let bound_mib = 32 + HASH_CONCURRENCY * 19;
    assert!(
        peak_mib <= bound_mib,
        "peak RSS {peak_mib} MiB after {LOGINS} logins from {CLIENTS} clients exceeds \
         32 MiB + {HASH_CONCURRENCY} × 19 MiB = {bound_mib} MiB"
    );
}
