//! `bench feed-followers`: what many gateways following the revocation feed cost (issue #15
//! §2b). Holds K long polls against one login-service on MariaDB, each follower re-polling with
//! its cursor as ext-authz does (`?since=<cursor>&wait=<--wait>`), and measures over an idle
//! window (nobody logs out):
//! - the database statements per second: login-service's own, from MariaDB's
//!   `information_schema.USER_STATISTICS` for the account it connects as (`--db-user`; needs
//!   `userstat=ON`, which scripts/bench-feed.sh sets), so other clients of a shared server do not
//!   count; and the server-wide `SHOW GLOBAL STATUS` `Questions` / `Com_select` deltas the issue
//!   names, minus this measurement's own statements (a back-to-back pair of readings measures
//!   them);
//! - login-service's CPU time (`/proc/<pid>/stat`) and resident memory.
//!
//! Then, with the last K followers still following, `--logouts` logouts one after another
//! (tokens logged in beforehand, `BENCH_PASSWORD`): for each, the time from sending `POST
//! /logout` until the K-th follower has received a page holding the new row; p50/p99/max.
//!
//! Prints one `{"kind":"feed_idle",...}` line per K and one `{"kind":"feed_logout",...}` line.
//! The `mysql` client reads the counters (as the e2e library creates its databases).

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

/// Options of `bench feed-followers`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// login-service's base URL (directly).
    #[arg(long)]
    url: String,
    /// login-service's pid, for its CPU time and memory.
    #[arg(long)]
    server_pid: u32,
    /// Follower counts to measure idle, in order; the logouts run with the last.
    #[arg(long, value_delimiter = ',', default_value = "1,500")]
    followers: Vec<usize>,
    /// Seconds of each idle window.
    #[arg(long, default_value_t = 20)]
    window: u64,
    /// Each long poll's `wait` in seconds (ext-authz's `--revocation-feed-wait` default is 8 s).
    #[arg(long, default_value_t = 8)]
    wait: u64,
    /// Logouts to time (each seen by every follower before the next).
    #[arg(long, default_value_t = 50)]
    logouts: usize,
    /// The account to log in with (`BENCH_PASSWORD`).
    #[arg(long)]
    email: String,
    /// MariaDB account login-service connects as (its statements are counted).
    #[arg(long)]
    db_user: String,
    /// `mysql` client options reaching the server as an account that may read the counters.
    #[arg(long, default_value = "-h 127.0.0.1 -P 3306 -u root")]
    mysql_args: String,
    /// A label for the report (e.g. `after`, `before (main)`).
    #[arg(long, default_value = "")]
    label: String,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// `Questions`: every statement any client sent.
    questions: u64,
    /// `Com_select`.
    com_select: u64,
    /// login-service's account: SELECT + UPDATE + OTHER commands.
    user_statements: u64,
    /// login-service's account: SELECT commands.
    user_selects: u64,
}

fn read_counters(args: &Args) -> anyhow::Result<Counters> {
    // Why one client run: each run adds its own statements to `Questions`; a constant number,
    // measured by `own_statements` and subtracted.
    let sql = format!(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions','Com_select'); \
         SELECT SELECT_COMMANDS, UPDATE_COMMANDS, OTHER_COMMANDS \
         FROM information_schema.USER_STATISTICS WHERE USER = '{}'",
        args.db_user.replace('\'', "")
    );
    let out = Command::new("mysql")
        .args(args.mysql_args.split_whitespace())
        .args(["-N", "-B", "-e", &sql])
        .output()
        .context("run the mysql client")?;
    if !out.status.success() {
        bail!("mysql: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut c = Counters {
        questions: 0,
        com_select: 0,
        user_statements: 0,
        user_selects: 0,
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["Questions", v] => c.questions = v.parse()?,
            ["Com_select", v] => c.com_select = v.parse()?,
            [s, u, o] => {
                c.user_selects = s.parse()?;
                c.user_statements = c.user_selects + u.parse::<u64>()? + o.parse::<u64>()?;
            }
            _ => {}
        }
    }
    Ok(c)
}

/// What one reading adds to `Questions` and `Com_select` itself (a back-to-back pair).
fn own_statements(args: &Args) -> anyhow::Result<(u64, u64)> {
    let mut best = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        let a = read_counters(args)?;
        let b = read_counters(args)?;
        best.0 = best.0.min(b.questions - a.questions);
        best.1 = best.1.min(b.com_select - a.com_select);
    }
    Ok(best)
}

/// A page the follower received with news: (follower, when, entries).
type Seen = (usize, Instant, usize);

/// One follower: snapshot, then long polls at its cursor until aborted; every page with
/// entries is reported on `seen`.
async fn follow(
    client: reqwest::Client,
    url: String,
    wait: u64,
    index: usize,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut cursor = 0_i64;
    let mut snapshot = true;
    loop {
        let w = if snapshot { 0 } else { wait };
        let r = client
            .get(&url)
            .query(&[("since", cursor), ("wait", i64::try_from(w).unwrap_or(0))])
            .timeout(Duration::from_secs(w + 10))
            .send()
            .await;
        let page = match r {
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                (cursor, snapshot) = (0, true);
                continue;
            }
            Ok(r) if r.status().is_success() => r.json::<auth_token::FeedPage>().await.ok(),
            _ => None,
        };
        let Some(page) = page else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if !snapshot && !page.revocations.is_empty() {
            let _ = seen.send((index, Instant::now(), page.revocations.len()));
        }
        cursor = page.cursor.max(cursor);
        if !page.more {
            snapshot = false;
        }
    }
}

/// Prints the measurement lines.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let password = crate::login_target::password()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    // Tokens first: a login hashes a password (tens of ms), not part of any measurement.
    let mut tokens = Vec::with_capacity(args.logouts);
    for _ in 0..args.logouts {
        let r = client
            .post(format!("{}/login", args.url))
            .basic_auth(&args.email, Some(&password))
            .header("accept", "text/plain")
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("login: {}", r.status());
        }
        tokens.push(r.text().await?);
    }
    let own = tokio::task::block_in_place(|| own_statements(args))?;
    let feed_url = format!("{}/revocations", args.url);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let mut followers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut last = 0;
    for &k in &args.followers {
        for f in &followers {
            f.abort();
        }
        followers = (0..k)
            .map(|i| {
                tokio::spawn(follow(
                    client.clone(),
                    feed_url.clone(),
                    args.wait,
                    i,
                    seen_tx.clone(),
                ))
            })
            .collect();
        last = k;
        // Settle: every follower has its snapshot and waits (aborted ones have ended theirs).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu0 = e2e::procfs::cpu_micros(args.server_pid)?;
        let c0 = tokio::task::block_in_place(|| read_counters(args))?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.window)).await;
        let c1 = tokio::task::block_in_place(|| read_counters(args))?;
        let secs = started.elapsed().as_secs_f64();
        let cpu1 = e2e::procfs::cpu_micros(args.server_pid)?;
        let rss = e2e::procfs::rss_kib(args.server_pid)?;
        #[allow(clippy::cast_precision_loss)]
        let rate = |d: u64| d as f64 / secs;
        let line = serde_json::json!({
            "kind": "feed_idle",
            "label": args.label,
            "followers": k,
            "window_s": secs,
            "wait_s": args.wait,
            "db_statements_per_s": rate(c1.user_statements - c0.user_statements),
            "db_selects_per_s": rate(c1.user_selects - c0.user_selects),
            "global_questions_per_s": rate((c1.questions - c0.questions).saturating_sub(own.0)),
            "global_com_select_per_s": rate((c1.com_select - c0.com_select).saturating_sub(own.1)),
            "server_cpu_ms_per_s": (cpu1 - cpu0) / 1000.0 / secs,
            "server_rss_kib": rss,
            "loadavg": std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        });
        println!("{line}");
    }
    // Pages seen while idle (none expected) are not logouts.
    while seen_rx.try_recv().is_ok() {}
    let mut hist = Histogram::<u64>::new(3)?;
    let mut missed = 0_usize;
    for token in &tokens {
        // Let every follower be back in its long poll, as between two real logouts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        let r = client
            .post(format!("{}/logout", args.url))
            .bearer_auth(token)
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::NO_CONTENT {
            bail!("logout: {}", r.status());
        }
        let mut who = HashSet::new();
        let mut latest = sent;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait + 10);
        while who.len() < last {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((i, at, _))) => {
                    who.insert(i);
                    latest = latest.max(at);
                }
                _ => break,
            }
        }
        if who.len() < last {
            missed += 1;
            continue;
        }
        let us = u64::try_from(latest.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        hist.record(us.max(1))?;
    }
    for f in &followers {
        f.abort();
    }
    #[allow(clippy::cast_precision_loss)]
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let line = serde_json::json!({
        "kind": "feed_logout",
        "label": args.label,
        "followers": last,
        "logouts": hist.len(),
        "missed": missed,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": hist.max() as f64 / 1000.0,
    });
    println!("{line}");
    Ok(())
}
