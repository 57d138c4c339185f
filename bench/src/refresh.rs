//! `bench refresh`: what one `POST /token` costs (issue #17). Each of `--sessions` threads logs
//! in once with `?refresh=true` (one argon2 hash each, before the clock starts), then refreshes
//! in a closed loop, each answer's refresh token feeding the next request, for `--duration`.
//! Prints one `{"kind":"refresh",...}` line: refreshes per second, latency percentiles, and the
//! CPU time login-service (`--server-pid`) spent per refresh — its inverse is "refreshes per
//! second on one core". A refresh verifies no password: compare `cpu_us_per_refresh` with
//! `bench argon2`'s verify time; and login-service's own `/metrics`, read before and after the
//! loop, must show no login answered (`login_duration_seconds_count`: the only path that
//! hashes) and exactly one issued grant per counted refresh, else the run fails.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

use crate::login_target::{self, LoginTarget};

/// Options of `bench refresh`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// login-service and the account.
    #[command(flatten)]
    target: LoginTarget,
    /// Concurrent sessions (threads), each refreshing its own chain.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Seconds to refresh for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

fn login(
    client: &reqwest::blocking::Client,
    args: &Args,
    password: &str,
) -> anyhow::Result<String> {
    let r = client
        .post(format!("{}/login?refresh=true", args.target.url))
        .basic_auth(&args.target.email, Some(password))
        .send()?;
    if !r.status().is_success() {
        bail!("login: {}", r.status());
    }
    let v: serde_json::Value = r.json()?;
    Ok(v["refresh_token"]
        .as_str()
        .context("no refresh_token")?
        .to_owned())
}

/// Prints the measurement line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let password = login_target::password()?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let tokens = (0..args.sessions.max(1))
        .map(|_| login(&client, args, &password))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = counters(&client, &args.target.url)?;
    let cpu_before = e2e::procfs::cpu_micros(args.target.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let results = std::thread::scope(|s| {
        let workers: Vec<_> = tokens
            .into_iter()
            .map(|mut token| {
                let client = client.clone();
                s.spawn(move || -> anyhow::Result<(Histogram<u64>, u64)> {
                    let mut hist = Histogram::<u64>::new(3)?;
                    let mut errors = 0;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let r = client
                            .post(format!("{}/token", args.target.url))
                            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                            .send()?;
                        let ok = r.status().is_success();
                        let v: serde_json::Value = r.json()?;
                        hist.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                        match v["refresh_token"].as_str() {
                            Some(next) if ok => token = next.to_owned(),
                            _ => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                    Ok((hist, errors))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_us = e2e::procfs::cpu_micros(args.target.server_pid)? - cpu_before;
    let mut all = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for (h, e) in &results {
        all.add(h)?;
        errors += e;
    }
    let n = all.len();
    let after = counters(&client, &args.target.url)?;
    let (logins, issued) = (after.0 - before.0, after.1 - before.1);
    if logins != 0.0 || issued != n as f64 {
        bail!(
            "login-service's /metrics during the loop: {logins} logins (want 0), {issued} issued \
             grants (want {n}, one per refresh)"
        );
    }
    let per = if n == 0 { 0.0 } else { cpu_us / n as f64 };
    let line = serde_json::json!({
        "kind": "refresh",
        "sessions": args.sessions,
        "refreshes": n,
        "errors": errors,
        "duration_s": elapsed,
        "rps": n as f64 / elapsed,
        "p50_us": all.value_at_quantile(0.5),
        "p99_us": all.value_at_quantile(0.99),
        "max_us": all.max(),
        "server_cpu_us_per_refresh": per,
        "logins_during_loop": logins,
        "refreshes_per_core_second": if per > 0.0 { 1e6 / per } else { 0.0 },
    });
    println!("{line}");
    Ok(())
}

/// login-service's (logins answered, refresh grants issued) from its `/metrics`.
fn counters(client: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()?
        .error_for_status()?
        .text()?;
    let read = |series: &str| {
        auth_token::testing::metric_value(&text, series)
            .with_context(|| format!("no {series} in login-service's /metrics"))
    };
    // The grant counter has a series once a grant was answered; the logins before the clock
    // started answered, so the login histogram has one.
    let issued =
        auth_token::testing::metric_value(&text, "login_token_requests_total{outcome=\"issued\"}")
            .unwrap_or(0.0);
    Ok((read("login_duration_seconds_count")?, issued))
}
