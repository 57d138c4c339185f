//! `bench login-overload`: logins under twice the sustainable rate (issue #15 §3), against
//! login-service directly (not through Envoy: the shipped per-address login rate limit would
//! answer first from one load generator's address).
//!
//! 1. **Sustainable rate**: `--clients` closed-loop clients (default: one per core, as many as
//!    hashing permits) log in with the right password for `--calibrate` seconds; the rate of
//!    200s is the sustainable rate.
//! 2. **Overload**: an open-loop schedule at `--factor` × that rate for `--duration` seconds:
//!    request *i* is sent at `start + i / rate` whatever the earlier ones are doing, and its
//!    latency is measured from that intended time (no coordinated omission). Each answer is a
//!    200 (accepted), a 503 `overloaded` (shed, with `Retry-After`), something else, or a
//!    client time-out after `--timeout` (10 s, Envoy's route timeout for `/login`).
//! 3. A login after the burst must succeed (the queue drained).
//!
//! Prints one `{"kind":"login_overload",...}` line: offered vs accepted rate, accepted latency
//! p50/p99/max, shed count and latency, time-outs, login-service's CPU per answered login and
//! its own moving average of one verification (`login_hash_verify_seconds`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

use crate::login_target::{self, LoginTarget};

/// Options of `bench login-overload`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// login-service and the account.
    #[command(flatten)]
    target: LoginTarget,
    /// Closed-loop clients measuring the sustainable rate (default: the number of cores).
    #[arg(long)]
    clients: Option<usize>,
    /// Seconds of the sustainable-rate measurement.
    #[arg(long, default_value_t = 10)]
    calibrate: u64,
    /// Offered rate = this × the sustainable rate.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Seconds of open-loop overload.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Client time-out per request, seconds (Envoy's route timeout for `/login`).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// One answer of the open-loop phase.
enum Outcome {
    Accepted(Duration),
    Shed {
        latency: Duration,
        retry_after: bool,
    },
    Other(u16),
    TimedOut,
    Error,
}

async fn login(client: &reqwest::Client, url: &str, email: &str, password: &str) -> Outcome {
    let sent = Instant::now();
    login_from(client, url, email, password, sent).await
}

/// One `POST /login`, its latency counted from `intended` (the schedule's send time).
async fn login_from(
    client: &reqwest::Client,
    url: &str,
    email: &str,
    password: &str,
    intended: Instant,
) -> Outcome {
    let r = client
        .post(format!("{url}/login"))
        .basic_auth(email, Some(password))
        .header("accept", "text/plain")
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::TimedOut,
        Err(_) => return Outcome::Error,
    };
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let body = match r.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => return Outcome::TimedOut,
        Err(_) => return Outcome::Error,
    };
    let latency = intended.elapsed();
    match status {
        200 => Outcome::Accepted(latency),
        503 if serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v["error"] == "overloaded") =>
        {
            Outcome::Shed {
                latency,
                retry_after,
            }
        }
        other => Outcome::Other(other),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Prints the measurement line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let password = login_target::password()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(measure(args, Arc::from(password)))
}

async fn measure(args: &Args, password: Arc<str>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .pool_max_idle_per_host(1024)
        .build()?;
    let url: Arc<str> = Arc::from(args.target.url.trim_end_matches('/'));
    let email: Arc<str> = Arc::from(args.target.email.as_str());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let clients = args.clients.unwrap_or(cores).max(1);

    // 1. Sustainable rate: as many closed-loop clients as hashing permits.
    let calibrate = Duration::from_secs(args.calibrate.max(1));
    let started = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, email, password) =
                (client.clone(), url.clone(), email.clone(), password.clone());
            tokio::spawn(async move {
                let (mut ok, mut other) = (0_u64, 0_u64);
                while started.elapsed() < calibrate {
                    match login(&client, &url, &email, &password).await {
                        Outcome::Accepted(_) => ok += 1,
                        _ => other += 1,
                    }
                }
                (ok, other)
            })
        })
        .collect();
    let (mut calib_ok, mut calib_other) = (0, 0);
    for l in loops {
        let (ok, other) = l.await?;
        calib_ok += ok;
        calib_other += other;
    }
    let calib_s = started.elapsed().as_secs_f64();
    let sustainable = calib_ok as f64 / calib_s;
    if calib_ok == 0 {
        bail!("no login succeeded while measuring the sustainable rate ({calib_other} failed)");
    }
    let verify_loaded = hash_verify_seconds(&client, &url).await?;

    // 2. Open loop at factor × sustainable.
    let rate = sustainable * args.factor;
    let total = (rate * args.duration as f64).round().max(1.0) as u64;
    let cpu_before = e2e::procfs::cpu_micros(args.target.server_pid)?;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let (client, url, email, password) =
            (client.clone(), url.clone(), email.clone(), password.clone());
        tasks.push(tokio::spawn(async move {
            login_from(&client, &url, &email, &password, intended).await
        }));
    }
    let sent_s = start.elapsed().as_secs_f64();
    let mut accepted = Histogram::<u64>::new(3)?;
    let mut shed = Histogram::<u64>::new(3)?;
    let (mut shed_no_retry, mut other, mut timeouts, mut errors) = (0, 0, 0, 0);
    let mut other_statuses = std::collections::BTreeMap::<u16, u64>::new();
    for t in tasks {
        match t.await? {
            Outcome::Accepted(l) => accepted.record(micros(l))?,
            Outcome::Shed {
                latency,
                retry_after,
            } => {
                shed.record(micros(latency))?;
                shed_no_retry += u64::from(!retry_after);
            }
            Outcome::Other(s) => {
                other += 1;
                *other_statuses.entry(s).or_default() += 1;
            }
            Outcome::TimedOut => timeouts += 1,
            Outcome::Error => errors += 1,
        }
    }
    let all_s = start.elapsed().as_secs_f64();
    let cpu_us = e2e::procfs::cpu_micros(args.target.server_pid)? - cpu_before;
    let verify_after = hash_verify_seconds(&client, &url).await?;

    // 3. The queue drained: one more login succeeds.
    let after = match login(&client, &url, &email, &password).await {
        Outcome::Accepted(_) => 200,
        Outcome::Shed { .. } => 503,
        Outcome::Other(s) => s,
        Outcome::TimedOut | Outcome::Error => 0,
    };
    let answered = accepted.len() + shed.len() + other;
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let line = serde_json::json!({
        "kind": "login_overload",
        "target": "login-service directly",
        "calibrate_clients": clients,
        "calibrate_s": calib_s,
        "calibrate_non2xx": calib_other,
        "sustainable_rps": sustainable,
        "factor": args.factor,
        "duration_s": args.duration,
        "offered_rps": total as f64 / sent_s,
        "sent": total,
        "accepted": accepted.len(),
        "accepted_rps": accepted.len() as f64 / all_s,
        "accepted_p50_us": q(&accepted, 0.5),
        "accepted_p99_us": q(&accepted, 0.99),
        "accepted_max_us": accepted.max(),
        "shed": shed.len(),
        "shed_p50_us": q(&shed, 0.5),
        "shed_p99_us": q(&shed, 0.99),
        "shed_without_retry_after": shed_no_retry,
        "other": other,
        "other_statuses": other_statuses,
        "timeouts": timeouts,
        "errors": errors,
        "timeout_s": args.timeout,
        "server_verify_ms_after_calibration": verify_loaded * 1e3,
        "server_verify_ms_after_overload": verify_after * 1e3,
        "server_cpu_us_per_answer": if answered == 0 { 0.0 } else { cpu_us / answered as f64 },
        "login_after_burst": after,
    });
    println!("{line}");
    Ok(())
}

/// login-service's moving average of one verification (`login_hash_verify_seconds`).
async fn hash_verify_seconds(client: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    auth_token::testing::metric_value(&text, "login_hash_verify_seconds")
        .context("no login_hash_verify_seconds in login-service's /metrics")
}
