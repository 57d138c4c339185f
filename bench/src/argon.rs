//! `bench argon2`: how long one argon2id verification takes with login-service's parameters.
//!
//! The ceiling of `/login` throughput is `cores / verify time`: each login verifies one hash
//! on the blocking pool. We measure it both ways: one thread (`cores ÷ single`) and every core
//! at once (what the memory bandwidth really allows), in the same run as the HTTP burst.
//!
//! login-service recomputes the hash in a memory block allocated once per hashing permit
//! (`hash_password_into_with_memory`); the headline figures measure exactly that. The `*_alloc`
//! figures measure the crate's allocating `verify_password` (login-service before issue #11),
//! which faults in a fresh 19 MiB block per verification.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?
        .to_string();
    let hash = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("{e}"))?;
    let expected = hash.hash.context("PHC string without a hash")?;
    let mut salt_buf = [0_u8; 64];
    let salt_bytes = hash
        .salt
        .context("PHC string without a salt")?
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_vec();
    // What login-service does: recompute into a block allocated once, then compare.
    let pooled = |memory: &mut [Block]| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut out = [0_u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password, &salt_bytes, &mut out, memory)
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        anyhow::ensure!(out.as_slice() == expected.as_bytes(), "verify: mismatch");
        Ok(started.elapsed())
    };
    // The crate's allocating verifier (parameters read from the PHC string).
    let allocating = || -> anyhow::Result<Duration> {
        let hash = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        Argon2::default()
            .verify_password(password, &hash)
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        Ok(started.elapsed())
    };
    let new_memory = || vec![Block::new(); params.block_count()];
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut memory = new_memory();
    pooled(&mut memory)?;
    allocating()?;
    let single = median(
        (0..args.iterations)
            .map(|_| pooled(&mut memory))
            .collect::<anyhow::Result<_>>()?,
    );
    let single_alloc = median(
        (0..args.iterations)
            .map(|_| allocating())
            .collect::<anyhow::Result<_>>()?,
    );

    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let total = f64::from(args.iterations) * threads as f64;
    let parallel = |reuse: bool| -> anyhow::Result<f64> {
        let started = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        let mut memory = new_memory();
                        for _ in 0..args.iterations {
                            if reuse {
                                pooled(&mut memory)?;
                            } else {
                                allocating()?;
                            }
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
        Ok(total / started.elapsed().as_secs_f64())
    };
    let parallel_pooled = parallel(true)?;
    let parallel_alloc = parallel(false)?;
    let line = serde_json::json!({
        "kind": "argon2",
        "m_cost_kib": M_COST_KIB,
        "t_cost": T_COST,
        "p_cost": P_COST,
        "single_verify_ms": single.as_secs_f64() * 1e3,
        "threads": threads,
        "limit_single_per_s": threads as f64 / single.as_secs_f64(),
        "parallel_verifies_per_s": parallel_pooled,
        "single_verify_alloc_ms": single_alloc.as_secs_f64() * 1e3,
        "parallel_verifies_alloc_per_s": parallel_alloc,
    });
    println!("{line}");
    Ok(())
}
