//! `bench grpc`: open-loop load on `envoy.service.auth.v3.Authorization/Check`.
//!
//! Method (the one behind OPA-Envoy's published latency table, so numbers compare like for
//! like): requests are *scheduled* at a fixed rate by a busy-polling pacer, whatever the server's
//! speed, and each latency runs from the request's intended send time to its response. A slow
//! response therefore delays nothing and every request it held up is charged, unlike a
//! closed-loop client (coordinated omission). The pacer's own lateness is reported separately
//! (`pacer_p99_us`) so it can be told apart from the server's.
//!
//! Each step: `--warmup` unrecorded, then `--duration` recorded, then up to 5 s to collect
//! in-flight answers; then the next step. Step "max" is closed-loop with `--max-inflight`
//! requests outstanding (throughput ceiling; latency measured from the actual send).
//!
//! `--floor` (issue #15 §1): after each Check step, the same step sends `grpc.health.v1.Health/
//! Check` to the same server over the same HTTP/2 connections (same pacer, same CPU accounting):
//! the *framework floor* of a call — tonic, HTTP/2 and the runtime, but none of our work. Its lines
//! are `"kind": "grpc_floor"`, so tables of Check lines are unchanged; interleaving step by step
//! lets machine drift hit both alike, and `bench/report.py` divides one by the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Options of `bench grpc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ext-authz gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:19001")]
    target: String,
    /// Bearer token sent in every request (a valid one: the allow path is measured).
    #[arg(long, env = "BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// HTTP/2 connections, requests spread round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Comma-separated steps: requests per second, or `max`.
    #[arg(long, default_value = "1000,5000,10000,max")]
    rates: String,
    /// Recorded seconds per step.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unrecorded seconds before each step.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Outstanding requests in the `max` step.
    #[arg(long, default_value_t = 64)]
    max_inflight: usize,
    /// ext-authz's pid: report its CPU microseconds per check.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Round number, copied into the output.
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Free-form label copied into the output (e.g. which server setup).
    #[arg(long, default_value = "")]
    label: String,
    /// After each step, the same step with `grpc.health.v1.Health/Check` (the framework floor;
    /// lines of kind `grpc_floor`).
    #[arg(long)]
    floor: bool,
}

/// The RPC a step sends: ext-authz's Check, or the health Check of the framework floor. Both
/// clients share the step's HTTP/2 connections (a `Channel` clone is the same connection).
#[derive(Clone)]
enum Rpc {
    Check(AuthorizationClient<Channel>, Arc<CheckRequest>),
    Health(HealthClient<Channel>),
}

impl Rpc {
    /// The `kind` of this RPC's output lines.
    fn kind(&self) -> &'static str {
        match self {
            Self::Check(..) => "grpc",
            Self::Health(_) => "grpc_floor",
        }
    }

    /// One call; `true` for an OK answer (an allow, or SERVING).
    async fn call(&mut self) -> bool {
        match self {
            Self::Check(client, request) => call(client, request).await,
            Self::Health(client) => {
                // The overall ("") service: the one probes ask, set by ext-authz's report_health.
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(Duration::from_secs(2));
                match client.check(req).await {
                    Ok(answer) => {
                        let status = answer.into_inner().status;
                        let serving = status == ServingStatus::Serving as i32;
                        if !serving {
                            report_error(&format!("health status {status}"));
                        }
                        serving
                    }
                    Err(status) => {
                        report_error(&format!("{:?}: {}", status.code(), status.message()));
                        false
                    }
                }
            }
        }
    }
}

/// Shared measurement state of one step.
struct Recorder {
    /// Latency from intended (or actual, in `max`) send time to the answer, in nanoseconds.
    latency: Mutex<Histogram<u64>>,
    /// How late the request really left compared to its schedule, in nanoseconds.
    pacer: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Start of the recorded window: earlier requests are warm-up.
    window_start: Instant,
}

impl Recorder {
    fn new(window_start: Instant) -> anyhow::Result<Self> {
        let hist = || Histogram::new_with_bounds(1, 120_000_000_000, 3).context("histogram");
        Ok(Self {
            latency: Mutex::new(hist()?),
            pacer: Mutex::new(hist()?),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            window_start,
        })
    }

    fn record(&self, intended: Instant, sent: Instant, done: Instant, ok: bool) {
        if intended < self.window_start {
            return;
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(nanos(done - intended));
        }
        if let Ok(mut h) = self.pacer.lock() {
            h.saturating_record(nanos(sent.saturating_duration_since(intended)));
        }
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs every step and prints one JSON line per step.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        // Busy-polling pacer (see `run_step`): check the sockets often between yields.
        .event_interval(4)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run_steps(args))
}

async fn run_steps(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be > 0");
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // One Endpoint::connect = one HTTP/2 connection.
        let channel: Channel = Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.target))?;
        channels.push(channel);
    }
    let request = Arc::new(check_request(&args.token));
    let checks: Vec<Rpc> = channels
        .iter()
        .map(|c| Rpc::Check(AuthorizationClient::new(c.clone()), Arc::clone(&request)))
        .collect();
    let floors: Vec<Rpc> = channels
        .iter()
        .map(|c| Rpc::Health(HealthClient::new(c.clone())))
        .collect();
    // Fail fast with a clear message when the token is not accepted.
    let answer = AuthorizationClient::new(channels[0].clone())
        .check((*request).clone())
        .await
        .context("first Check failed")?
        .into_inner();
    let code = answer.status.map_or(0, |s| s.code);
    anyhow::ensure!(code == 0, "the server denied the token (gRPC code {code})");
    if args.floor {
        anyhow::ensure!(
            floors[0].clone().call().await,
            "the server's health Check is not SERVING"
        );
    }

    for step in args
        .rates
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let rate = if step == "max" {
            None
        } else {
            Some(
                step.parse::<u64>()
                    .with_context(|| format!("bad rate {step:?}"))?,
            )
        };
        let result = run_step(args, &checks, rate).await?;
        println!("{result}");
        if args.floor {
            println!("{}", run_step(args, &floors, rate).await?);
        }
    }
    Ok(())
}

async fn run_step(
    args: &Args,
    clients: &[Rpc],
    rate: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let begin = Instant::now();
    let window_start = begin + warmup;
    let end = window_start + duration;
    let recorder = Arc::new(Recorder::new(window_start)?);
    let cpu_before = Arc::new(Mutex::new(None::<f64>));

    // The server's CPU clock is read when the recorded window opens and once every recorded
    // request has been answered.
    let cpu_probe = {
        let cpu_before = Arc::clone(&cpu_before);
        let pid = args.server_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            if let Some(pid) = pid
                && let Ok(mut slot) = cpu_before.lock()
            {
                *slot = e2e::procfs::cpu_micros(pid).ok();
            }
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    match rate {
        Some(rate) => {
            anyhow::ensure!(rate > 0, "rate must be > 0");
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            // Why busy-polling: the pacer runs on the runtime's own thread and yields instead of
            // sleeping, so the runtime never parks in epoll_wait. Neither the schedule (timer
            // slack, a thread hop) nor the client's wake-up on each answer (tens of µs on a VM)
            // is charged to the server. Costs one core, the load generator's own.
            let mut intended = begin;
            let mut next = 0usize;
            while intended < end {
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
                let mut client = clients[next % clients.len()].clone();
                next += 1;
                let recorder = Arc::clone(&recorder);
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let ok = client.call().await;
                    recorder.record(intended, sent, Instant::now(), ok);
                });
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
                intended += interval;
            }
        }
        None => {
            for i in 0..args.max_inflight {
                let mut client = clients[i % clients.len()].clone();
                let recorder = Arc::clone(&recorder);
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let sent = Instant::now();
                        let ok = client.call().await;
                        recorder.record(sent, sent, Instant::now(), ok);
                    }
                });
            }
        }
    }
    // Bounded drain: whatever is still out 5 s after the end counts as an error.
    let drained = tokio::time::timeout_at((end + Duration::from_secs(5)).into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let mut lost = 0;
    if drained.is_err() {
        lost = tasks.len() as u64;
        tasks.abort_all();
    }
    let window_end = Instant::now().min(end).max(window_start);
    let cpu_after = args.server_pid.map(e2e::procfs::cpu_micros).transpose()?;
    cpu_probe.await?;
    let cpu_before = cpu_before.lock().ok().and_then(|slot| *slot);

    let ok = recorder.ok.load(Ordering::Relaxed);
    let errors = recorder.errors.load(Ordering::Relaxed) + lost;
    let secs = (window_end - window_start).as_secs_f64().max(1e-9);
    let latency = recorder
        .latency
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let pacer = recorder
        .pacer
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let cpu_per_check = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if ok > 0 => Some((after - before) / ok as f64),
        _ => None,
    };
    Ok(serde_json::json!({
        "kind": clients.first().map_or("grpc", Rpc::kind),
        "round": args.round,
        "label": args.label,
        "step": rate.map_or_else(|| "max".to_owned(), |r| r.to_string()),
        "target_rps": rate,
        "connections": args.connections,
        "achieved_rps": ok as f64 / secs,
        "ok": ok,
        "errors": errors,
        "p50_us": us(&latency, 0.50),
        "p90_us": us(&latency, 0.90),
        "p99_us": us(&latency, 0.99),
        "p999_us": us(&latency, 0.999),
        "max_us": latency.max() as f64 / 1e3,
        "pacer_p50_us": us(&pacer, 0.50),
        "pacer_p99_us": us(&pacer, 0.99),
        "server_cpu_us_per_check": cpu_per_check,
    }))
}

/// One Check; `true` for an OK (allow) answer.
async fn call(client: &mut AuthorizationClient<Channel>, request: &CheckRequest) -> bool {
    let mut req = tonic::Request::new(request.clone());
    req.set_timeout(Duration::from_secs(2));
    match client.check(req).await {
        Ok(answer) => {
            let code = answer.into_inner().status.map_or(0, |s| s.code);
            if code != 0 {
                report_error(&format!("denied with gRPC code {code}"));
            }
            code == 0
        }
        Err(status) => {
            report_error(&format!("{:?}: {}", status.code(), status.message()));
            false
        }
    }
}

/// Prints the first few distinct failures on stderr (the JSON line only counts them).
fn report_error(text: &str) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    if SEEN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("bench grpc: check failed: {text}");
    }
}

/// A `CheckRequest` shaped like the ones Envoy sends for `GET /api/items` with a bearer token,
/// on a route requiring the `admin` role.
fn check_request(token: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "127.0.0.1:18080"),
        (":method", "GET"),
        (":path", "/api/items?page=2"),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "bench/1.0"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b7d8f8e-5d1c-4f0e-9d55-3c2c6c2f2a11"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(std::iter::once((
        "authorization".to_owned(),
        format!("Bearer {token}"),
    )))
    .collect();
    auth_token::testing::check_request_for(
        HttpRequest {
            id: "1234567890".to_owned(),
            method: "GET".to_owned(),
            headers,
            path: "/api/items?page=2".to_owned(),
            host: "127.0.0.1:18080".to_owned(),
            scheme: "http".to_owned(),
            protocol: "HTTP/1.1".to_owned(),
            ..Default::default()
        },
        // Every feature on: the route's role requirement (the bench token is an admin's).
        &[("require_roles", "admin")],
    )
}
