//! `bench argon2`: how long one argon2id verification takes with login-service's parameters.
//!
//! The ceiling of `/login` throughput is `cores / verify time`: each login verifies one hash
//! on the blocking pool. We measure it both ways: one thread (`cores ÷ single`) and every core
//! at once (what the memory bandwidth really allows), in the same run as the HTTP burst.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// login-service's parameters (OWASP's argon2id recommendation; see login-service/README.md).
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Options of `bench argon2`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verifications per thread (after one warm-up).
    #[arg(long, default_value_t = 20)]
    iterations: u32,
    /// Threads for the parallel measurement (default: CPUs available).
    #[arg(long)]
    threads: Option<usize>,
}

/// Prints `{"kind":"argon2",...}` with the single-thread median and the all-core throughput.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let password = b"correct horse battery staple";
    let salt = SaltString::encode_b64(b"bench-salt-16byt")
        .map_err(|e| anyhow::anyhow!("argon2 salt: {e}"))?;
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?
        .to_string();
    // Exactly what login-service does: parameters read from the stored PHC string.
    let verify = || -> anyhow::Result<Duration> {
        let hash = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        Argon2::default()
            .verify_password(password, &hash)
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        Ok(started.elapsed())
    };
    verify()?;
    let mut single: Vec<Duration> = (0..args.iterations)
        .map(|_| verify())
        .collect::<anyhow::Result<_>>()?;
    single.sort();
    let median = single[single.len() / 2];

    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..args.iterations {
                        verify()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))?
                .context("parallel verify")?;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let total = f64::from(args.iterations) * threads as f64;
    let line = serde_json::json!({
        "kind": "argon2",
        "m_cost_kib": M_COST_KIB,
        "t_cost": T_COST,
        "p_cost": P_COST,
        "single_verify_ms": median.as_secs_f64() * 1e3,
        "threads": threads,
        "limit_single_per_s": threads as f64 / median.as_secs_f64(),
        "parallel_verifies_per_s": total / elapsed,
    });
    println!("{line}");
    Ok(())
}
