//! Measures whether a wrong password for a real account and a login for an unknown e-mail take
//! the same time (issue #11, item 11): the real `login-service` binary on SQLite and on MariaDB,
//! `--attempts` of each (default 200), interleaved, from distinct forwarded addresses with the
//! lockout thresholds out of reach. Prints median, p10 and p90 per kind and backend.
//!
//! `make bench-login` (needs MariaDB at `TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`;
//! `--sqlite-only` skips it). A measurement, not a test: the figures go into SECURITY.md.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use diesel::{Connection as _, RunQueryDsl as _};

const SECRET: &str = "timing-measurement-secret-0123456789abcdef";

fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/login_timing → target/<profile>/login-service
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?
        .join("login-service");
    if !bin.exists() {
        bail!("{} missing: cargo build -p login-service", bin.display());
    }
    Ok(bin)
}

fn command(bin: &Path, url: &str) -> Command {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("LOCKOUT_THRESHOLD", "1000000")
        .env("ACCOUNT_LOCKOUT_THRESHOLD", "1000000")
        .env("IP_FAILURE_THRESHOLD", "1000000")
        .env("TRUSTED_PROXIES", "127.0.0.1");
    c
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn measure(bin: &Path, backend: &str, url: &str, attempts: usize) -> anyhow::Result<()> {
    let status = command(bin, url)
        .arg("migrate")
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("migrate failed on {backend}");
    }
    let mut add = command(bin, url)
        .args(["user", "add", "timing@example.com", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    add.stdin
        .take()
        .context("stdin")?
        .write_all(b"the-right-password\n")?;
    if !add.wait()?.success() {
        bail!("user add failed on {backend}");
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        command(bin, url)
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
            .env("JWT_SECRET", SECRET)
            .spawn()?,
    );
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("login-service on {backend} not ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut known = Vec::with_capacity(attempts);
    let mut unknown = Vec::with_capacity(attempts);
    // Warm-up (pool connections, hasher).
    for i in 0..10 {
        let _ = client
            .post(format!("{base}/login"))
            .basic_auth("timing@example.com", Some(format!("warm-{i}")))
            .send()?;
    }
    for i in 0..attempts {
        for (kind, email) in [
            ("known", "timing@example.com".to_owned()),
            ("unknown", format!("nobody-{i}@example.com")),
        ] {
            let t = Instant::now();
            let r = client
                .post(format!("{base}/login"))
                .header(
                    "x-envoy-external-address",
                    format!("198.18.{}.{}", i / 250, i % 250 + 1),
                )
                .basic_auth(&email, Some("a-wrong-password"))
                .send()?;
            let elapsed = t.elapsed();
            if r.status() != 401 {
                bail!("{kind} answered {}", r.status());
            }
            if kind == "known" {
                known.push(elapsed);
            } else {
                unknown.push(elapsed);
            }
        }
    }
    for (kind, v) in [
        ("real account, wrong password", &mut known),
        ("unknown e-mail", &mut unknown),
    ] {
        v.sort();
        println!(
            "{backend:8} {kind:30} n={} median {}  p10 {}  p90 {}",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.1)),
            ms(percentile(v, 0.9)),
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let attempts = args
        .iter()
        .position(|a| a == "--attempts")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(200), |n| n.parse())?;
    let bin = binary()?;
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("timing.sqlite").display());
    measure(&bin, "sqlite", &sqlite, attempts)?;
    if args.iter().any(|a| a == "--sqlite-only") {
        return Ok(());
    }
    let base = std::env::var("TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned();
    let name = format!("timing_{:016x}", rand::random::<u64>());
    let mut admin = diesel::mysql::MysqlConnection::establish(&base)?;
    diesel::sql_query(format!("CREATE DATABASE `{name}`")).execute(&mut admin)?;
    let result = measure(&bin, "mariadb", &format!("{base}/{name}"), attempts);
    diesel::sql_query(format!("DROP DATABASE `{name}`")).execute(&mut admin)?;
    result
}
