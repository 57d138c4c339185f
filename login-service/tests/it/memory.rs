//! Item 4a of issue #11: login-service's memory is bounded by design. The real binary serves a
//! burst of parallel logins and its peak RSS (`VmHWM`) must stay under
//! 32 MiB + HASH_CONCURRENCY × the hash's memory (19 MiB). SQLite only: the bound is about the
//! password hashes, not the database.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestDb, basic, binary, run_cli_ok};

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

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        Command::new(binary())
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("JWT_SECRET", "m".repeat(32))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("HASH_CONCURRENCY", HASH_CONCURRENCY.to_string())
            .env("IP_FAILURE_THRESHOLD", "100000")
            .env("RUST_LOG", "warn")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < end, "server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let peak_mib = peak_rss_kib(server.0.id()) / 1024;
    let bound_mib = 32 + HASH_CONCURRENCY * 19;
    assert!(
        peak_mib <= bound_mib,
        "peak RSS {peak_mib} MiB after {LOGINS} logins from {CLIENTS} clients exceeds \
         32 MiB + {HASH_CONCURRENCY} × 19 MiB = {bound_mib} MiB"
    );
}
