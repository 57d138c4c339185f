//! `bench revocation-scale` (issue #15 §2): ext-authz following a feed that holds many
//! outstanding revocations (1,000,000 in `make bench`; loaded into login-service's database
//! by `scripts/bench-scale.sh` before this runs).
//!
//! With login-service already serving that feed, it starts ext-authz replicas itself, one after
//! the other, each pinned with `taskset` (so each is a 1-CPU sidecar: current-thread runtime):
//! - replicas `a` and `b` follow the loaded feed: exec → SERVING (gRPC health `""` polled every
//!   millisecond, as `bench footprint` does; SERVING means the snapshot is complete), the
//!   entries they hold (`ext_authz_revocations_known` from their metrics), and `VmRSS`/`VmHWM`
//!   after `--idle` seconds;
//! - replica `none` follows `--empty-feed-url` (a login-service on an empty database): the
//!   no-revocation case of the check comparison;
//! - **logout → refusal**: `--logouts` times, a fresh token (minted with the gateway's key, a
//!   new `sub` each, so no per-user bound is involved) is checked allowed by both replicas, then
//!   `POST /logout` on login-service; from its 204, both replicas are asked the same `Check`
//!   every millisecond until each refuses it. The latency of one logout is the later of the two
//!   (the token is refused at the edge once every replica refuses it). ext-authz answers Envoy's
//!   `Check` directly here: Envoy adds no step to how the revocation travels.
//! - **the check at 1M vs none**: `bench grpc` (this binary, as a child, pinned to
//!   `--client-cpus`) against `a` and `none` in alternating rounds, same rates, same token.
//!
//! One JSON line per measurement: `scale_replica`, `scale_logout`, `scale_check`.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::{Channel, Endpoint};

use crate::footprint::{self, Probe, Prober};

/// Options of `bench revocation-scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ext-authz binary.
    #[arg(long)]
    ext_authz: PathBuf,
    /// The gateway's keys dir (shared with login-service).
    #[arg(long)]
    keys_dir: PathBuf,
    /// The HS256 key file in it, to mint the logout tokens.
    #[arg(long)]
    key: PathBuf,
    /// Its kid.
    #[arg(long)]
    kid: String,
    /// login-service's base URL (for `POST /logout`).
    #[arg(long)]
    login_url: String,
    /// The feed holding the loaded entries.
    #[arg(long)]
    feed_url: String,
    /// A feed with no entries (the check comparison's "none"); without it, that replica runs
    /// without a feed.
    #[arg(long)]
    empty_feed_url: Option<String>,
    /// The entries loaded (checked against what the replicas report).
    #[arg(long)]
    entries: u64,
    /// First port: replicas use PORT, PORT+1 (metrics), PORT+2, ... .
    #[arg(long, default_value_t = 19101)]
    port: u16,
    /// CPUs for the ext-authz replicas (`taskset` list).
    #[arg(long, default_value = "1")]
    cpus: String,
    /// CPUs for the load generator.
    #[arg(long, default_value = "0")]
    client_cpus: String,
    /// Extra ext-authz flags (space-separated).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    ext_authz_args: String,
    /// Logouts measured.
    #[arg(long, default_value_t = 200)]
    logouts: usize,
    /// Rounds of the check comparison (each: `a`, then `none`, alternating who goes first).
    #[arg(long, default_value_t = 3)]
    check_rounds: u32,
    /// `bench grpc --rates` of each round.
    #[arg(long, default_value = "1000,max")]
    check_rates: String,
    /// `bench grpc --duration` of each step.
    #[arg(long, default_value_t = 5.0)]
    check_duration: f64,
    /// Seconds idle after SERVING before memory is read.
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// Seconds a replica may take to reach SERVING.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Directory for the replicas' logs.
    #[arg(long)]
    log_dir: PathBuf,
}

/// A replica this process started.
struct Replica {
    name: &'static str,
    child: Child,
    grpc: String,
    metrics: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        footprint::stop(&mut self.child);
    }
}

/// `ext_authz_revocations_known` from a replica's metrics.
async fn known(metrics: &str) -> anyhow::Result<u64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("ext_authz_revocations_known "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no ext_authz_revocations_known in the metrics")
}

async fn start_replica(
    args: &Args,
    name: &'static str,
    n: u16,
    feed: Option<&str>,
) -> anyhow::Result<Replica> {
    let grpc = format!("127.0.0.1:{}", args.port + 2 * n);
    let metrics = format!("127.0.0.1:{}", args.port + 2 * n + 1);
    let mut command: Vec<String> = vec![
        "taskset".into(),
        "-c".into(),
        args.cpus.clone(),
        args.ext_authz.display().to_string(),
        "--grpc-addr".into(),
        grpc.clone(),
        "--metrics-addr".into(),
        metrics.clone(),
        "--keys-dir".into(),
        args.keys_dir.display().to_string(),
    ];
    if let Some(feed) = feed {
        // A startup wait longer than the measurement: SERVING then means "snapshot loaded".
        command.extend(
            [
                "--revocation-feed-url",
                feed,
                "--revocation-startup-wait",
                "10m",
            ]
            .map(String::from),
        );
    }
    command.extend(args.ext_authz_args.split_whitespace().map(String::from));
    let log = args.log_dir.join(format!("scale-ext-authz-{name}.log"));
    let mut prober = Prober::new(Probe::Grpc(grpc.clone()))?;
    let start = Instant::now();
    let mut child = footprint::spawn(&command, Some(&log))?;
    let ready = footprint::wait_ready(
        &mut prober,
        &mut child,
        start,
        Duration::from_secs_f64(args.timeout),
    )
    .await;
    let replica = Replica {
        name,
        child,
        grpc,
        metrics,
    };
    let ready = ready?;
    let entries = known(&replica.metrics).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    let pid = replica.child.id();
    let rss = footprint::status_field(pid, "VmRSS")?;
    let hwm = footprint::status_field(pid, "VmHWM")?;
    #[allow(clippy::cast_precision_loss)]
    let per_entry = (entries > 0).then(|| rss as f64 * 1024.0 / entries as f64);
    println!(
        "{}",
        serde_json::json!({
            "kind": "scale_replica",
            "replica": name,
            "feed": feed.is_some(),
            "entries_loaded": if feed == Some(args.feed_url.as_str()) { args.entries } else { 0 },
            "entries_known": entries,
            "ready_ms": ready.as_secs_f64() * 1000.0,
            "rss_kib": rss,
            "hwm_kib": hwm,
            "rss_bytes_per_entry": per_entry,
        })
    );
    if feed == Some(args.feed_url.as_str()) && entries < args.entries {
        bail!(
            "replica {name} holds {entries} entries, {} were loaded",
            args.entries
        );
    }
    Ok(replica)
}

/// The `CheckRequest` Envoy sends for `GET /api/items` with `token`, on a route requiring the
/// `admin` role.
fn check_request(token: &str) -> CheckRequest {
    let headers = [
        (":authority", "127.0.0.1:18080"),
        (":method", "GET"),
        (":path", "/api/items"),
        ("authorization", &format!("Bearer {token}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    auth_token::testing::check_request(headers, &[("require_roles", "admin")])
}

async fn client(addr: &str) -> anyhow::Result<AuthorizationClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect {addr}"))?;
    Ok(AuthorizationClient::new(channel))
}

/// `true` when the replica allows the request.
async fn allowed(
    client: &mut AuthorizationClient<Channel>,
    request: &CheckRequest,
) -> anyhow::Result<bool> {
    let answer = client.check(request.clone()).await?.into_inner();
    Ok(answer.status.map_or(0, |s| s.code) == 0)
}

/// Asks every millisecond until the replica refuses; the time since `since`.
async fn until_refused(
    mut client: AuthorizationClient<Channel>,
    request: CheckRequest,
    since: Instant,
) -> anyhow::Result<Duration> {
    loop {
        if !allowed(&mut client, &request).await? {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(30) {
            bail!("still allowed 30 s after the logout");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn logouts(args: &Args, a: &Replica, b: &Replica) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.key).with_context(|| args.key.display().to_string())?;
    let key = auth_token::Key::new(&args.kid, bytes.strip_suffix(b"\n").unwrap_or(&bytes))?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (ca, cb) = (client(&a.grpc).await?, client(&b.grpc).await?);
    let (mut later, mut first, mut at_a, mut at_b) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.logouts {
        // A sub of its own per logout: the per-user bound of login-service never applies.
        let sub = format!("{}", 900_000_000 + i);
        let token = auth_token::testing::mint(
            &key,
            &sub,
            "scale@example.com",
            &["admin"],
            auth_token::now_unix(),
            Duration::from_secs(3600),
        );
        let request = check_request(&token);
        for (name, c) in [(a.name, &ca), (b.name, &cb)] {
            if !allowed(&mut c.clone(), &request).await? {
                bail!("replica {name} refused a fresh token before its logout");
            }
        }
        let answer = http
            .post(format!("{}/logout", args.login_url))
            .bearer_auth(&token)
            .send()
            .await?;
        let done = Instant::now();
        if answer.status() != reqwest::StatusCode::NO_CONTENT {
            bail!("POST /logout answered {}", answer.status());
        }
        let (ta, tb) = tokio::try_join!(
            until_refused(ca.clone(), request.clone(), done),
            until_refused(cb.clone(), request, done),
        )?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        later.push(ms(ta.max(tb)));
        first.push(ms(ta.min(tb)));
        at_a.push(ms(ta));
        at_b.push(ms(tb));
        // Why a random pause: the replicas re-arm their long polls right after they receive an
        // entry; a logout sent at once would always land at the same phase of login-service's
        // poll cycle and measure one point of it (the worst, at 150 ms) instead of its spread.
        tokio::time::sleep(Duration::from_millis(rand_below(250))).await;
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        serde_json::json!({
            "p50_ms": footprint::quantile(&v, 0.5),
            "p90_ms": footprint::quantile(&v, 0.9),
            "p99_ms": footprint::quantile(&v, 0.99),
            "max_ms": v.last(),
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "kind": "scale_logout",
            "logouts": later.len(),
            "replicas": 2,
            "entries_loaded": args.entries,
            "both": summary(later),
            "first": summary(first),
            "replica_a": summary(at_a),
            "replica_b": summary(at_b),
        })
    );
    Ok(())
}

/// A pseudo-random number below `n` from the standard library's per-instance hash keys (no
/// RNG dependency for a pause).
fn rand_below(n: u64) -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(0_u8) % n.max(1)
}

/// One `bench grpc` run (this binary, pinned) against `replica`; its lines, tagged.
fn check_round(args: &Args, replica: &Replica, set: &str, round: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.key)?;
    let key = auth_token::Key::new(&args.kid, bytes.strip_suffix(b"\n").unwrap_or(&bytes))?;
    let token = auth_token::testing::mint(
        &key,
        "12345",
        "bench@example.com",
        &["admin"],
        auth_token::now_unix(),
        Duration::from_secs(3600),
    );
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new("taskset")
        .args(["-c", &args.client_cpus])
        .arg(exe)
        .args(["grpc", "--target", &format!("http://{}", replica.grpc)])
        .args(["--rates", &args.check_rates])
        .args([
            "--duration",
            &args.check_duration.to_string(),
            "--warmup",
            "1",
        ])
        .args(["--server-pid", &replica.child.id().to_string()])
        .env("BENCH_TOKEN", token)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("bench grpc against {} failed", replica.name);
    }
    for line in String::from_utf8(output.stdout)?.lines() {
        let mut value: serde_json::Value = serde_json::from_str(line)?;
        let Some(object) = value.as_object_mut() else {
            continue;
        };
        object.insert("kind".into(), "scale_check".into());
        object.insert("set".into(), set.into());
        object.insert("round".into(), round.into());
        #[allow(clippy::cast_precision_loss)]
        let entries = if set == "none" {
            0.0
        } else {
            args.entries as f64
        };
        object.insert("entries".into(), entries.into());
        println!("{value}");
    }
    Ok(())
}

/// Runs every measurement (see the module docs).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let a = start_replica(args, "a", 0, Some(&args.feed_url)).await?;
        let b = start_replica(args, "b", 1, Some(&args.feed_url)).await?;
        let none = start_replica(args, "none", 2, args.empty_feed_url.as_deref()).await?;
        logouts(args, &a, &b).await?;
        // The loaded replica in steady state: the snapshot plus the logouts' feed batches (and
        // a few hundred tokens in its cache).
        let memory = |label: &str, a: &Replica| -> anyhow::Result<serde_json::Value> {
            let pid = a.child.id();
            Ok(serde_json::json!({
                "kind": "scale_replica_after",
                "replica": a.name,
                "after": label,
                "rss_kib": footprint::status_field(pid, "VmRSS")?,
                "hwm_kib": footprint::status_field(pid, "VmHWM")?,
            }))
        };
        let mut line = memory("logouts", &a)?;
        line["entries_known"] = known(&a.metrics).await?.into();
        println!("{line}");
        for round in 1..=args.check_rounds {
            // Alternate who goes first, so drift over the run hits both alike.
            let order = if round % 2 == 1 {
                [(&a, "loaded"), (&none, "none")]
            } else {
                [(&none, "none"), (&a, "loaded")]
            };
            for (replica, set) in order {
                check_round(args, replica, set, round)?;
            }
        }
        // After the load steps: what the check traffic left (buffers, allocator), for the
        // record; the RSS target is read before them.
        let mut line = memory("checks", &a)?;
        line["entries_known"] = known(&a.metrics).await?.into();
        println!("{line}");
        drop((a, b, none));
        anyhow::Ok(())
    })
}
