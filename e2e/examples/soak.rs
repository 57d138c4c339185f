//! Bounded soak: constant load through the real Envoy for `SOAK_SECONDS` (default 180), then a
//! report — errors (must be 0), throughput and latency percentiles per window
//! (`SOAK_WINDOW_SECONDS`, default 15), and the RSS of Envoy, ext-authz, login-service and
//! demo-upstream per window (a leak shows as growth over the last two thirds of the run).
//!
//! Run by `scripts/soak.sh` (`make soak`) with release binaries: it starts the same stack as the
//! e2e tests (the shipped `envoy/envoy.yaml`, fixed ports) from the target directory this example
//! was built into. The mix: valid-token GETs (expect 200), requests without a token (expect 401),
//! an admin route with a plain token (expect 403), and one `POST /login` per second (expect 200).
//! Exit status 1 when any request got another answer, or when the upstream saw a request that
//! was not a valid-token 200.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::client::{Bearer as _, client};
use e2e::ports::ENVOY;
use e2e::process::binary;
use e2e::procfs;
use e2e::stack::Stack;

/// One answered request.
struct Sample {
    /// Seconds since the start of the load.
    at: f64,
    latency: Duration,
    ok: bool,
    /// A valid-token 200 (one upstream hit).
    upstream: bool,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of `pid` in MiB (0 when it cannot be read).
fn rss_mib(pid: u32) -> f64 {
    procfs::rss_kib(pid).map_or(0.0, |kib| kib as f64 / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let seconds = env_u64("SOAK_SECONDS", 180);
    let window = env_u64("SOAK_WINDOW_SECONDS", 15).max(1);
    let clients = env_u64("SOAK_CLIENTS", 8) as usize;

    let stack = Stack::start();
    let user_token = stack.login(&stack.user);
    let admin_token = stack.login(&stack.admin);
    let upstream_before = stack.upstream_requests();
    let pids = stack.pids();
    let mut rss: Vec<(f64, Vec<f64>)> =
        vec![(0.0, pids.iter().map(|(_, p)| rss_mib(*p)).collect())];
    println!(
        "soak: {seconds} s, {clients} clients, windows of {window} s, through {ENVOY} \
         (release binaries from {})",
        binary("ext-authz").display()
    );

    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let logins = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = Duration::from_secs(seconds);

    std::thread::scope(|scope| {
        for c in 0..clients {
            let (samples, errors, stop) = (&samples, &errors, &stop);
            let (user_token, admin_token) = (&user_token, &admin_token);
            scope.spawn(move || {
                let client = client();
                let mut local = Vec::new();
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // 8 in 10 valid, 1 without a token, 1 on the admin route without the role.
                    let (request, want, upstream) = match (i + c as u64) % 10 {
                        8 => (client.get(format!("{ENVOY}/soak/anon")), 401, false),
                        9 => (
                            client.get(format!("{ENVOY}/admin/soak")).bearer(user_token),
                            403,
                            false,
                        ),
                        n if n % 4 == 0 => (
                            client
                                .get(format!("{ENVOY}/admin/soak"))
                                .bearer(admin_token),
                            200,
                            true,
                        ),
                        _ => (
                            client.get(format!("{ENVOY}/soak/{c}")).bearer(user_token),
                            200,
                            true,
                        ),
                    };
                    let sent = Instant::now();
                    let result = request.send().and_then(|r| {
                        let status = r.status().as_u16();
                        r.bytes().map(|_| status)
                    });
                    let latency = sent.elapsed();
                    let ok = matches!(result, Ok(s) if s == want);
                    if !ok {
                        errors
                            .lock()
                            .expect("errors")
                            .push(format!("want {want}, got {result:?}"));
                    }
                    local.push(Sample {
                        at: (sent - start).as_secs_f64(),
                        latency,
                        ok,
                        upstream: ok && upstream,
                    });
                    if local.len() >= 1024 {
                        samples.lock().expect("samples").append(&mut local);
                    }
                }
                samples.lock().expect("samples").append(&mut local);
            });
        }
        // One login per second (argon2id: a real user's login rate, not a hashing benchmark).
        let (errors, stop, logins) = (&errors, &stop, &logins);
        let (email, password) = (stack.user.email.clone(), stack.user.password.clone());
        scope.spawn(move || {
            let client = client();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let status = client
                    .post(format!("{ENVOY}/login"))
                    .basic_auth(&email, Some(&password))
                    .send()
                    .map(|r| r.status().as_u16());
                if !matches!(status, Ok(200)) {
                    errors
                        .lock()
                        .expect("errors")
                        .push(format!("login: {status:?}"));
                }
                logins.fetch_add(1, Ordering::Relaxed);
                next += Duration::from_secs(1);
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        // RSS at the end of every window.
        let mut next = Duration::from_secs(window);
        while start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if start.elapsed() >= next {
                rss.push((
                    start.elapsed().as_secs_f64(),
                    pids.iter().map(|(_, p)| rss_mib(*p)).collect(),
                ));
                next += Duration::from_secs(window);
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed().as_secs_f64();
    rss.push((elapsed, pids.iter().map(|(_, p)| rss_mib(*p)).collect()));

    let samples = samples.into_inner().expect("samples");
    let errors = errors.into_inner().expect("errors");
    let upstream_seen = stack.upstream_requests() - upstream_before;
    let upstream_expected = samples.iter().filter(|s| s.upstream).count() as u64;
    let fail_open = stack.envoy_stat(e2e::stack::FAIL_OPEN_STAT);

    println!("\n  window      requests     rps   p50 ms   p99 ms   max ms  errors");
    let windows = (elapsed / window as f64).ceil() as u64;
    let mut p99s = Vec::new();
    for w in 0..windows {
        let (lo, hi) = ((w * window) as f64, ((w + 1) * window) as f64);
        let in_window: Vec<&Sample> = samples.iter().filter(|s| s.at >= lo && s.at < hi).collect();
        if in_window.is_empty() {
            continue;
        }
        let mut latencies: Vec<Duration> = in_window.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let span = (elapsed.min(hi) - lo).max(0.001);
        let p99 = percentile(&latencies, 0.99);
        p99s.push(ms(p99));
        println!(
            "  {:>4}-{:<4} {:>9} {:>7.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            lo,
            hi.min(elapsed.ceil()),
            in_window.len(),
            in_window.len() as f64 / span,
            ms(percentile(&latencies, 0.50)),
            ms(p99),
            ms(*latencies.last().expect("non-empty")),
            in_window.iter().filter(|s| !s.ok).count()
        );
    }
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort_unstable();
    println!(
        "  total     {:>9} {:>7.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
        samples.len(),
        samples.len() as f64 / elapsed,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
        errors.len()
    );

    println!("\n  RSS MiB at   {}", {
        let names: Vec<String> = pids.iter().map(|(n, _)| format!("{n:>14}")).collect();
        names.join("")
    });
    for (at, values) in &rss {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:>14.1}")).collect();
        println!("  {at:>8.0} s   {}", cells.join(""));
    }
    // Growth over the last two thirds of the run: allocator caches and argon2's per-hash memory
    // settle during warm-up (login-service needs a window or two), a leak keeps growing.
    let warm_at = elapsed / 3.0;
    let warm = rss
        .iter()
        .find(|(at, _)| *at >= warm_at)
        .unwrap_or(&rss[0])
        .clone();
    let end = &rss.last().expect("rss").1;
    let mut trend = Vec::new();
    for ((name, _), (w, e)) in pids.iter().zip(warm.1.iter().zip(end)) {
        let growth = if *w > 0.0 { (e - w) / w * 100.0 } else { 0.0 };
        println!(
            "  {name}: {w:.1} MiB at {:.0} s → {e:.1} MiB at the end ({growth:+.1} %)",
            warm.0
        );
        if growth > 10.0 && e - w > 8.0 {
            trend.push(*name);
        }
    }
    println!(
        "\n  logins {}; upstream hits {upstream_seen} (valid-token 200s: {upstream_expected}); \
         ext_authz failure_mode_allowed {fail_open}",
        logins.load(Ordering::Relaxed)
    );
    if let (Some(first), Some(last)) = (p99s.first(), p99s.last()) {
        println!("  p99 first window {first:.2} ms, last window {last:.2} ms");
    }

    let mut failed = false;
    if !errors.is_empty() {
        eprintln!(
            "soak: {} errors, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        failed = true;
    }
    if upstream_seen != upstream_expected || fail_open != 0 {
        eprintln!("soak: the upstream saw requests that were not valid-token 200s");
        failed = true;
    }
    if !trend.is_empty() {
        eprintln!("soak: RSS still growing after warm-up (> 10 % and > 8 MiB): {trend:?}");
        failed = true;
    }
    // `exit` runs no destructors: stop the stack's processes first.
    drop(stack);
    if failed {
        std::process::exit(1);
    }
    println!("soak: OK — 0 errors");
}
