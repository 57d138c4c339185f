//! `bench footprint` (issue #15 §5): how long a service takes from `exec` to ready, and its
//! resident memory once idle.
//!
//! Method: the command is spawned by this process (the clock starts right before `spawn`, so
//! `fork` + `exec` + the binary's own start are in the figure) and probed every millisecond
//! until ready: `grpc.health.v1.Health/Check` for the overall service (`""`) answering SERVING
//! (what Envoy's health checks and a Kubernetes gRPC probe ask), or an HTTP URL answering 2xx.
//! A refused connection fails at once, so the probe's resolution is the 1 ms sleep plus one
//! round trip; the figure is the client's view, not a log line's. After `--idle` seconds of
//! nothing, `VmRSS`, `VmHWM` (peak) and `Threads` are read from `/proc/<pid>/status`; then the
//! process is killed. `--runs` starts, one after the other; one JSON line with the medians.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Options of `bench footprint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name copied into the output (`ext-authz`, `login-service`).
    #[arg(long)]
    name: String,
    /// Ready when gRPC health at this `host:port` reports the overall service SERVING.
    #[arg(long, required_unless_present = "http")]
    grpc: Option<String>,
    /// Ready when this URL answers 2xx.
    #[arg(long, conflicts_with = "grpc")]
    http: Option<String>,
    /// Starts measured, one after the other.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds idle after ready before the memory is read.
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// Seconds to wait for ready before failing.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Where the command's stdout and stderr go (appended).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Free-form label copied into the output (the flags, the load).
    #[arg(long, default_value = "")]
    label: String,
    /// The command (prefix it with `taskset -c N` to pin it; `taskset` execs in place, so the
    /// pid is the service's).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// How readiness is asked.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `grpc.health.v1` Check of `""` at `host:port`: SERVING.
    Grpc(String),
    /// `GET` answering 2xx.
    Http(String),
}

/// A probe with its connection kept between attempts (a server that accepts but is not
/// SERVING yet is asked again on the same HTTP/2 connection).
pub struct Prober {
    probe: Probe,
    channel: Option<HealthClient<Channel>>,
    http: reqwest::Client,
}

impl Prober {
    /// A prober for `probe`.
    pub fn new(probe: Probe) -> anyhow::Result<Self> {
        Ok(Self {
            probe,
            channel: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(500))
                .build()?,
        })
    }

    /// One attempt: `true` when ready.
    pub async fn ready(&mut self) -> bool {
        match &self.probe {
            Probe::Http(url) => self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Probe::Grpc(addr) => {
                if self.channel.is_none() {
                    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
                        return false;
                    };
                    match endpoint
                        .connect_timeout(Duration::from_millis(200))
                        .connect()
                        .await
                    {
                        Ok(channel) => self.channel = Some(HealthClient::new(channel)),
                        Err(_) => return false,
                    }
                }
                let Some(client) = self.channel.as_mut() else {
                    return false;
                };
                let mut request = tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                });
                request.set_timeout(Duration::from_millis(500));
                match client.check(request).await {
                    Ok(answer) => answer.into_inner().status == ServingStatus::Serving as i32,
                    Err(_) => {
                        self.channel = None;
                        false
                    }
                }
            }
        }
    }
}

/// Spawns `command` (stdout and stderr appended to `log`, or dropped).
pub fn spawn(command: &[String], log: Option<&PathBuf>) -> anyhow::Result<Child> {
    let (program, args) = command.split_first().context("empty command")?;
    let (out, err) = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| path.display().to_string())?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {program}"))
}

/// Polls `prober` every millisecond until ready; the time since `start`. Fails when `child`
/// exits or `timeout` passes.
pub async fn wait_ready(
    prober: &mut Prober,
    child: &mut Child,
    start: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if prober.ready().await {
            return Ok(start.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{:?} exited during startup: {status}", prober.probe);
        }
        if start.elapsed() > timeout {
            bail!("{:?} not ready after {timeout:?}", prober.probe);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), or `Threads`.
pub fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path}: no {field}"))
}

/// Stops a child this process started (SIGKILL: nothing is measured after this).
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The value at quantile `q` of `sorted` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Prints the measurement line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let probe = match (&args.grpc, &args.http) {
        (Some(addr), _) => Probe::Grpc(addr.clone()),
        (None, Some(url)) => Probe::Http(url.clone()),
        (None, None) => bail!("--grpc or --http is required"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut ready, mut rss, mut hwm, mut threads) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs.max(1) {
        let mut prober = Prober::new(probe.clone())?;
        let start = Instant::now();
        let mut child = spawn(&args.command, args.log.as_ref())?;
        let result = runtime.block_on(async {
            let took = wait_ready(
                &mut prober,
                &mut child,
                start,
                Duration::from_secs_f64(args.timeout),
            )
            .await?;
            tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
            anyhow::Ok(took)
        });
        let pid = child.id();
        let memory = (
            status_field(pid, "VmRSS"),
            status_field(pid, "VmHWM"),
            status_field(pid, "Threads"),
        );
        stop(&mut child);
        let took = result?;
        ready.push(took.as_secs_f64() * 1000.0);
        rss.push(memory.0? as f64);
        hwm.push(memory.1? as f64);
        threads.push(memory.2? as f64);
    }
    let (ready, rss, hwm, threads) = (sorted(ready), sorted(rss), sorted(hwm), sorted(threads));
    println!(
        "{}",
        serde_json::json!({
            "kind": "footprint",
            "name": args.name,
            "label": args.label,
            "probe": match probe { Probe::Grpc(_) => "grpc.health.v1", Probe::Http(_) => "http" },
            "runs": ready.len(),
            "idle_s": args.idle,
            "ready_ms_p50": quantile(&ready, 0.5),
            "ready_ms_min": ready.first(),
            "ready_ms_max": ready.last(),
            "rss_kib_p50": quantile(&rss, 0.5),
            "rss_kib_max": rss.last(),
            "hwm_kib_max": hwm.last(),
            "threads": quantile(&threads, 0.5),
        })
    );
    Ok(())
}
