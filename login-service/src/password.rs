//! Argon2id password hashing: PHC strings, OWASP parameters, a dummy hash for unknown users, and
//! hash upgrades. The async entry points run the work on the blocking pool under a semaphore, so a
//! burst of logins can neither stall the runtime nor allocate unbounded memory.
//!
//! **Memory is bounded by design.** Each hash needs `m_cost` KiB of working memory (19 MiB with
//! OWASP's parameters). Allocating it per hash let glibc keep the freed buffers in the arenas of
//! every blocking-pool thread that ever hashed (RSS reached 245 MiB after 500 logins). Instead,
//! [`Hasher`] allocates one [`Memory`] per permit once, at start, and a hash checks one out
//! together with its permit: RSS stays below the rest of the process plus
//! `HASH_CONCURRENCY × m_cost`, whatever the load, and the hash touches no fresh pages.
//!
//! A stored hash with a larger `m_cost` than the current parameters (an older, stronger hash)
//! still verifies: up to [`MAX_STORED_M_COST`] it gets a one-off buffer (and is rehashed with
//! the current parameters on that login); above that it is refused like a wrong password and
//! logged, so a tampered row cannot make a login allocate gigabytes. Likewise a stored hash
//! with more than [`MAX_STORED_T_COST`] passes, [`MAX_STORED_P_COST`] lanes or
//! [`MAX_STORED_WORK`] (m × t) is refused without running, so it cannot hold a permit for long.
//! A hash that panics still returns its buffer to the pool (a drop guard).
//!
//! **The queue is bounded in time** (issue #15 §3). With more logins than the permits can hash,
//! waiting for a permit would grow without end. [`Hasher::admit`] estimates the wait of a new
//! request from the requests already waiting, the permits and a moving average of one
//! verification ([`estimated_wait`]), and refuses at once ([`PasswordError::Overloaded`], a 503
//! with `Retry-After`) when it would exceed the bound (`LOGIN_MAX_QUEUE_WAIT`, default
//! [`default_queue_wait`]); an admitted request that still waits longer (the estimate was low) is
//! refused by a timeout on the permit. A refused request never runs argon2. The bound is per
//! process: it protects this process's cores, not a fleet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// OWASP's argon2id recommendation: 19 MiB.
pub const OWASP_M_COST: u32 = 19_456;
/// OWASP's argon2id recommendation: 2 iterations.
pub const OWASP_T_COST: u32 = 2;
/// OWASP's argon2id recommendation: 1 lane.
pub const OWASP_P_COST: u32 = 1;
/// Largest `m_cost` (KiB, 64 MiB) of a stored hash that is verified; larger ones never match.
pub const MAX_STORED_M_COST: u32 = 65_536;
/// Largest `t_cost` (passes) of a stored hash that is verified; larger ones never match.
pub const MAX_STORED_T_COST: u32 = 10;
/// Largest `p_cost` (lanes) of a stored hash that is verified; larger ones never match.
pub const MAX_STORED_P_COST: u32 = 8;
/// Largest `m_cost × t_cost` (KiB passes) of a stored hash that is verified: RFC 9106's
/// 64 MiB × 3 passes, about 5 OWASP hashes of work. Larger ones never match.
pub const MAX_STORED_WORK: u64 = 65_536 * 3;

/// Hashing or task failure (never "wrong password", which is [`Verification::Mismatch`]).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 crate refused (bad parameters; out of memory).
    #[error("argon2: {0}")]
    Hash(argon2::password_hash::Error),
    /// The blocking task panicked or was cancelled.
    #[error("hashing task failed")]
    Task,
    /// The request would wait longer than the queue bound for a hashing permit: refused
    /// without hashing (see the module docs).
    #[error("hashing queue full")]
    Overloaded {
        /// Seconds the client is told to wait (≥ 1).
        retry_after: u64,
    },
}

/// Most requests that may wait for a hashing permit at once, whatever the time bound: with a
/// very fast hash (tests) and a long bound, the time estimate alone would admit a queue of
/// any length, and each waiter holds a request in memory.
pub const MAX_WAITING: usize = 1024;

/// Default queue bound for a measured verification time `verify` on `permits` hashing permits:
/// two and a half verifications with one permit, one and a half with more.
///
/// Why: [`estimated_wait`] counts whole verifications, so a bound of *r* + ½ admits *r* rounds
/// of waiting logins (*r* per permit) and refuses the next; the half is slack for the permit
/// timeout, so an admitted login whose hash ahead runs a little long is not refused after
/// waiting. With several permits, hashes running side by side slow each other (1.5–1.7× on the
/// bench VM: argon2 blocks evicting each other from a shared L3), so one round: an accepted
/// login answers in about two of those slower verifications plus the database (accepted p99
/// 3.5–4.2× one verification alone in three runs, against the 4×; two rounds, the first
/// default, gave 4.9–6.7×). With one permit (a one-CPU pod) no two hashes overlap and two
/// rounds still answer in about three verifications; a queue of one would shed a bursty load
/// far below capacity (at half of it, ~10 % of logins instead of ~3 %, by the M/D/1/K model).
pub fn default_queue_wait(verify: Duration, permits: usize) -> Duration {
    let rounds_and_a_half = if permits <= 1 { 5 } else { 3 };
    verify.saturating_mul(rounds_and_a_half) / 2
}

/// Worst-case wait of a request that finds `queued` requests already waiting and `free` of
/// `permits` permits free, when one verification takes `verify`: nothing while a permit is free
/// for it; else one verification per round of `permits` requests ahead, plus one for the hashes
/// running now (which may just have started).
pub fn estimated_wait(queued: usize, free: usize, permits: usize, verify: Duration) -> Duration {
    if queued < free {
        return Duration::ZERO;
    }
    let rounds = ((queued - free) / permits.max(1)).saturating_add(1);
    verify.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
}

/// `Retry-After` seconds for a wait of `wait`: rounded up, at least 1, at most 60.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).clamp(1, 60)
}

/// Outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches.
    Match {
        /// The stored hash uses other parameters than the current ones: store a new hash.
        needs_rehash: bool,
    },
    /// Wrong password, no such user, or a stored value that is not a PHC string.
    Mismatch,
}

/// The current hashing parameters.
pub fn owasp_params() -> Params {
    Params::new(OWASP_M_COST, OWASP_T_COST, OWASP_P_COST, None).expect("OWASP params are valid")
}

/// Working memory for one argon2 computation: allocated once and reused, so hashing does not
/// allocate (see the module docs).
pub struct Memory(Box<[Block]>);

impl Memory {
    /// Memory for hashes with `params` (every page touched now, not on the first login).
    pub fn for_params(params: &Params) -> Self {
        Self(vec![Block::new(); params.block_count()].into_boxed_slice())
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.0.len() * Block::SIZE
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} KiB)", self.0.len())
    }
}

fn hash_error(e: argon2::Error) -> PasswordError {
    PasswordError::Hash(e.into())
}

/// Hashes `password` into an argon2id PHC string with `params` and a fresh random salt, in
/// `memory` (which must hold `params.block_count()` blocks).
pub fn hash_in(
    password: &[u8],
    params: Params,
    memory: &mut Memory,
) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(PasswordError::Hash)?;
    let mut salt_bytes = [0_u8; 16];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(PasswordError::Hash)?;
    let mut out = [0_u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt_bytes, &mut out, &mut *memory.0)
        .map_err(hash_error)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(PasswordError::Hash)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(PasswordError::Hash)?),
    };
    Ok(phc.to_string())
}

/// Hashes `password` with `params` and a fresh random salt, allocating the memory (the CLI and
/// tests; the server uses [`Hasher`]).
pub fn hash_with(password: &[u8], params: Params) -> Result<String, PasswordError> {
    let mut memory = Memory::for_params(&params);
    hash_in(password, params, &mut memory)
}

/// Recomputes `hash` for `password` in `memory` (or, for a stored `m_cost` above it and at most
/// [`MAX_STORED_M_COST`], in a one-off buffer) and compares in constant time. `false` for any
/// hash that cannot be recomputed.
fn matches(hash: &PasswordHash<'_>, password: &[u8], memory: &mut Memory) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm), Params::try_from(hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    // Why: the work of one verification is m × t, and it holds a hashing permit all along; a
    // tampered row with t = 2^32 - 1 would hold one for hours (and enough such logins, all).
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.t_cost() > MAX_STORED_T_COST
        || params.p_cost() > MAX_STORED_P_COST
        || work > MAX_STORED_WORK
    {
        tracing::warn!(
            m_cost = params.m_cost(),
            t_cost = params.t_cost(),
            p_cost = params.p_cost(),
            "stored password hash asks for more work than allowed: refused"
        );
        return false;
    }
    let mut salt_buf = [0_u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0_u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let computed = if params.block_count() <= memory.0.len() {
        argon.hash_password_into_with_memory(password, salt, out, &mut *memory.0)
    } else if params.m_cost() <= MAX_STORED_M_COST {
        // Why: an older, stronger hash must still log in (and be rehashed); this one login
        // allocates, bounded by MAX_STORED_M_COST.
        argon.hash_password_into_with_memory(
            password,
            salt,
            out,
            &mut *Memory::for_params(&params).0,
        )
    } else {
        tracing::warn!(
            m_cost = params.m_cost(),
            max = MAX_STORED_M_COST,
            "stored password hash asks for more memory than allowed: refused"
        );
        return false;
    };
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

/// Checks `password` against `stored` in `memory`; a value that is not an argon2 PHC string
/// never matches, and costs the same as a real check because `dummy` is verified instead.
pub fn verify_in(
    stored: Option<&str>,
    dummy: &str,
    password: &[u8],
    current: &Params,
    memory: &mut Memory,
) -> Verification {
    let parsed = stored
        .and_then(|s| PasswordHash::new(s).ok())
        .filter(|h| h.algorithm.as_str().starts_with("argon2"));
    match parsed {
        Some(hash) => {
            if matches(&hash, password, memory) {
                Verification::Match {
                    needs_rehash: needs_rehash(&hash, current),
                }
            } else {
                Verification::Mismatch
            }
        }
        None => {
            // Why: same cost as a real check, so response time does not reveal whether the
            // e-mail exists (or holds a seed plaintext password).
            if let Ok(hash) = PasswordHash::new(dummy) {
                let _ = matches(&hash, password, memory);
            }
            Verification::Mismatch
        }
    }
}

/// [`verify_in`] with freshly allocated memory (tests).
pub fn verify_with(
    stored: Option<&str>,
    dummy: &str,
    password: &[u8],
    current: &Params,
) -> Verification {
    verify_in(
        stored,
        dummy,
        password,
        current,
        &mut Memory::for_params(current),
    )
}

/// True when `hash` is not argon2id v0x13 with exactly `current`'s m, t, p.
pub fn needs_rehash(hash: &PasswordHash<'_>, current: &Params) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return true;
    }
    match Params::try_from(hash) {
        Ok(p) => {
            p.m_cost() != current.m_cost()
                || p.t_cost() != current.t_cost()
                || p.p_cost() != current.p_cost()
        }
        Err(_) => true,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The [`Memory`] of every permit, allocated at start: a task holding a permit always finds
/// one here.
#[derive(Debug)]
struct Pool {
    free: Mutex<Vec<Memory>>,
    allocated: usize,
}

impl Pool {
    fn take(&self) -> Option<Memory> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put(&self, memory: Memory) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(memory);
    }
}

/// A [`Memory`] checked out of the [`Pool`]: put back when dropped, also when the hash panics
/// (else every later hash holding that permit would find no buffer and fail).
struct Lease<'a> {
    memory: Option<Memory>,
    pool: &'a Pool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            self.pool.put(memory);
        }
    }
}

/// Async front end: bounded concurrency, one reusable [`Memory`] per permit, blocking pool,
/// tracing span carried across.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
    pool: Arc<Pool>,
    /// Requests admitted and waiting for a permit (≤ [`MAX_WAITING`]).
    waiting: Arc<AtomicUsize>,
    /// Moving average of one hash, in nanoseconds (seeded with the dummy hash at start).
    verify_nanos: Arc<AtomicU64>,
    /// `LOGIN_MAX_QUEUE_WAIT`; `None`: [`default_queue_wait`] of the moving average.
    max_wait: Option<Duration>,
}

/// One request counted in [`Hasher`]'s waiting requests; uncounted when dropped (it got its
/// permit, timed out, or the client went away).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("available_permits", &self.permits.available_permits())
            .field("memory_blocks", &self.pool.allocated)
            .field("waiting", &self.waiting())
            .field("verify_time", &self.verify_time())
            .field("max_queue_wait", &self.max_queue_wait())
            .finish()
    }
}

impl Hasher {
    /// A hasher with `params`, at most `concurrency` (≥ 1) hashes at a time. Allocates one
    /// [`Memory`] per permit and computes the dummy hash (one argon2 run).
    pub fn new(params: Params, concurrency: usize) -> Result<Self, PasswordError> {
        let concurrency = concurrency.max(1);
        let mut free: Vec<Memory> = (0..concurrency)
            .map(|_| Memory::for_params(&params))
            .collect();
        let dummy_pw: [u8; 32] = rand::random();
        let started = Instant::now();
        let dummy = hash_in(&dummy_pw, params.clone(), &mut free[0])?;
        let first = nanos(started.elapsed());
        Ok(Self {
            params,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(concurrency)),
            pool: Arc::new(Pool {
                free: Mutex::new(free),
                allocated: concurrency,
            }),
            waiting: Arc::new(AtomicUsize::new(0)),
            verify_nanos: Arc::new(AtomicU64::new(first)),
            max_wait: None,
        })
    }

    /// This hasher with the queue bound `max_wait` (`LOGIN_MAX_QUEUE_WAIT`; `None`: the
    /// default, [`default_queue_wait`] of the measured verification).
    #[must_use]
    pub fn with_max_queue_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Moving average of one hash on this process, as the admission estimate uses it.
    pub fn verify_time(&self) -> Duration {
        Duration::from_nanos(self.verify_nanos.load(Ordering::Relaxed))
    }

    /// The longest a request may wait for a hashing permit now.
    pub fn max_queue_wait(&self) -> Duration {
        self.max_wait
            .unwrap_or_else(|| default_queue_wait(self.verify_time(), self.pool.allocated))
    }

    /// Permits held now (hashes running or about to).
    pub fn hashing(&self) -> usize {
        self.pool.allocated - self.permits.available_permits()
    }

    /// Requests waiting for a hashing permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The door: [`PasswordError::Overloaded`] if a request arriving now would be refused by
    /// the queue bound. Counts nothing (the request is admitted by [`Hasher::verify`]), so a
    /// caller can refuse before doing any other work for a request that cannot be hashed.
    pub fn check_admission(&self) -> Result<(), PasswordError> {
        let wait = estimated_wait(
            self.waiting(),
            self.permits.available_permits(),
            self.pool.allocated,
            self.verify_time(),
        );
        if self.waiting() >= MAX_WAITING || wait > self.max_queue_wait() {
            return Err(PasswordError::Overloaded {
                retry_after: retry_after_secs(wait),
            });
        }
        Ok(())
    }

    /// Admission: counts the request as waiting if its estimated wait is within the bound, else
    /// refuses it now, before any work. The check and the count are one atomic update, so a
    /// burst arriving at once cannot all see the same short queue.
    fn admit(&self, bound: Duration) -> Result<Waiting, PasswordError> {
        let verify = self.verify_time();
        let permits = self.pool.allocated;
        let mut refused = Duration::ZERO;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let wait =
                    estimated_wait(queued, self.permits.available_permits(), permits, verify);
                if queued >= MAX_WAITING || wait > bound {
                    refused = wait;
                    None
                } else {
                    Some(queued + 1)
                }
            })
            .map(|_| Waiting(self.waiting.clone()))
            .map_err(|_| PasswordError::Overloaded {
                retry_after: retry_after_secs(refused),
            })
    }

    /// Folds one measured hash into the moving average (weight 1/8: a few hashes follow a
    /// change of machine load, one slow outlier moves it little).
    fn record(verify_nanos: &AtomicU64, took: Duration) {
        let sample = nanos(took);
        let _ = verify_nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
            Some(avg - avg / 8 + sample / 8)
        });
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// How many [`Memory`] buffers exist (= the concurrency; never grows).
    pub fn memory_buffers(&self) -> usize {
        self.pool.allocated
    }

    /// Bytes of argon2 memory this hasher holds: `concurrency × m_cost` KiB.
    pub fn memory_bytes(&self) -> usize {
        self.pool.allocated * self.params.block_count() * Block::SIZE
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let bound = self.max_queue_wait();
        let waiting = self.admit(bound)?;
        // Why a timeout although admission estimated the wait: the estimate assumes hashes keep
        // their average time; when they slow down (a busier machine), the bound still holds.
        let permit = tokio::time::timeout(bound, self.permits.clone().acquire_owned())
            .instrument(tracing::debug_span!("hash_permit"))
            .await
            .map_err(|_| PasswordError::Overloaded {
                retry_after: retry_after_secs(bound),
            })?
            .map_err(|_| PasswordError::Task)?;
        drop(waiting);
        let span = tracing::Span::current();
        let pool = self.pool.clone();
        let verify_nanos = self.verify_nanos.clone();
        // Why: the permit moves into the blocking task, so a request that times out (and drops
        // this future) still counts against the bound until its hash really finishes; the
        // memory goes back to the pool before the permit is released.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // One buffer per permit: there is always one free while we hold a permit.
            let mut lease = Lease {
                memory: Some(pool.take().ok_or(PasswordError::Task)?),
                pool: &pool,
            };
            let memory = lease.memory.as_mut().ok_or(PasswordError::Task)?;
            let started = Instant::now();
            let out = span.in_scope(|| f(memory));
            Self::record(&verify_nanos, started.elapsed());
            Ok(out)
        })
        .await
        .map_err(|_| PasswordError::Task)?
    }

    /// Verifies `password` against `stored` (`None`: unknown user → dummy hash).
    ///
    /// [`PasswordError::Overloaded`] when the queue bound refuses it (nothing was computed,
    /// whoever the user is).
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: Arc<SecretString>,
    ) -> Result<Verification, PasswordError> {
        let dummy = self.dummy.clone();
        let params = self.params.clone();
        self.blocking(move |memory| {
            verify_in(
                stored.as_deref(),
                &dummy,
                password.expose_secret().as_bytes(),
                &params,
                memory,
            )
        })
        .await
    }

    /// Hashes `password` with the current parameters.
    pub async fn hash(&self, password: Arc<SecretString>) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.blocking(move |memory| hash_in(password.expose_secret().as_bytes(), params, memory))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    #[test]
    fn roundtrip_and_mismatch() {
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        let h = hash_with("pässwörd:x".as_bytes(), p.clone()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert_eq!(
            verify_with(Some(&h), &dummy, "pässwörd:x".as_bytes(), &p),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            verify_with(Some(&h), &dummy, b"nope", &p),
            Verification::Mismatch
        );
    }

    #[test]
    fn plaintext_and_unknown_never_match() {
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        // A seed row: plaintext "secret" stored as is.
        assert_eq!(
            verify_with(Some("secret"), &dummy, b"secret", &p),
            Verification::Mismatch
        );
        assert_eq!(
            verify_with(None, &dummy, b"dummy", &p),
            Verification::Mismatch
        );
    }

    /// An unknown e-mail (no stored hash) or a row that is not an argon2 hash costs a real
    /// argon2 run: the dummy is verified in the same memory, and argon2 writes every block of it.
    /// Proven by the memory written, not by timing (the timing is `make bench-login`, SECURITY.md
    /// "Measured"); a `verify_in` that skipped the dummy leaves the blocks zero.
    #[test]
    fn unknown_users_run_argon2_over_the_whole_memory_like_a_real_check() {
        fn written(memory: &Memory) -> usize {
            memory
                .0
                .iter()
                .filter(|b| b.as_ref().iter().any(|&w| w != 0))
                .count()
        }
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        let real = hash_with(b"right", p.clone()).unwrap();
        for stored in [None, Some("secret"), Some(real.as_str())] {
            let mut memory = Memory::for_params(&p);
            assert_eq!(written(&memory), 0);
            let verdict = verify_in(stored, &dummy, b"wrong", &p, &mut memory);
            assert_eq!(verdict, Verification::Mismatch, "{stored:?}");
            assert_eq!(written(&memory), p.block_count(), "{stored:?}");
        }
    }

    /// The crate's own (allocating) hasher and verifier agree with ours, both ways, for every
    /// argon2 variant a stored hash may use.
    #[test]
    fn compatible_with_the_crate_in_both_directions() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let p = weak();
        let dummy = hash_with(b"dummy", p.clone()).unwrap();
        let ours = hash_with(b"pw", p.clone()).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
        for alg in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
            for version in [Version::V0x13, Version::V0x10] {
                let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
                let theirs = Argon2::new(alg, version, p.clone())
                    .hash_password(b"pw", &salt)
                    .unwrap()
                    .to_string();
                let expect_rehash = alg != Algorithm::Argon2id || version != Version::V0x13;
                assert_eq!(
                    verify_with(Some(&theirs), &dummy, b"pw", &p),
                    Verification::Match {
                        needs_rehash: expect_rehash
                    },
                    "{theirs}"
                );
                assert_eq!(
                    verify_with(Some(&theirs), &dummy, b"pX", &p),
                    Verification::Mismatch
                );
            }
        }
    }

    /// A stored hash with more memory than the pool's buffer verifies (one-off buffer) and is
    /// rehashed; one above MAX_STORED_M_COST is refused without allocating it.
    #[test]
    fn larger_stored_m_cost_verifies_absurd_is_refused() {
        let current = weak();
        let mut memory = Memory::for_params(&current);
        let dummy = hash_with(b"dummy", current.clone()).unwrap();
        let stronger = hash_with(b"pw", Params::new(64, 1, 1, None).unwrap()).unwrap();
        assert_eq!(
            verify_in(Some(&stronger), &dummy, b"pw", &current, &mut memory),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(memory.bytes(), 8 * 1024, "the pooled buffer is not grown");
        let absurd = stronger.replace("m=64,", &format!("m={},", MAX_STORED_M_COST + 1));
        assert_eq!(
            verify_in(Some(&absurd), &dummy, b"pw", &current, &mut memory),
            Verification::Mismatch
        );
    }

    /// Item 4a of issue #11: the hasher holds exactly one buffer per permit, however many
    /// hashes run, and every buffer is back in the pool afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pool_holds_one_buffer_per_permit() {
        let p = weak();
        // 64 at once on 3 permits: every one waits (the bound is tested below).
        let hasher = Hasher::new(p.clone(), 3)
            .unwrap()
            .with_max_queue_wait(Some(Duration::from_secs(60)));
        assert_eq!(hasher.memory_buffers(), 3);
        assert_eq!(hasher.memory_bytes(), 3 * 8 * 1024);
        let stored = hash_with(b"pw", p).unwrap();
        let pw = Arc::new(SecretString::from("pw".to_owned()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (h, pw, stored) = (hasher.clone(), pw.clone(), stored.clone());
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        h.verify(Some(stored), pw).await.unwrap()
                    } else {
                        h.hash(pw).await.unwrap();
                        Verification::Mismatch
                    }
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let v = t.await.unwrap();
            if i % 2 == 0 {
                assert_eq!(
                    v,
                    Verification::Match {
                        needs_rehash: false
                    }
                );
            }
        }
        assert_eq!(hasher.memory_buffers(), 3);
        assert_eq!(hasher.pool.free.lock().unwrap().len(), 3);
    }

    #[test]
    fn estimated_wait_counts_rounds_of_permits_in_the_worst_case() {
        let v = Duration::from_millis(10);
        // A free permit for this request: no wait.
        assert_eq!(estimated_wait(0, 1, 2, v), Duration::ZERO);
        assert_eq!(estimated_wait(1, 2, 2, v), Duration::ZERO);
        // The free permits go to those ahead: then one running hash (which may just have
        // started) per round of `permits` requests.
        assert_eq!(estimated_wait(1, 1, 2, v), v);
        assert_eq!(estimated_wait(0, 0, 2, v), v);
        assert_eq!(estimated_wait(1, 0, 2, v), v);
        assert_eq!(estimated_wait(2, 0, 2, v), 2 * v);
        assert_eq!(estimated_wait(3, 0, 2, v), 2 * v);
        assert_eq!(estimated_wait(4, 0, 2, v), 3 * v);
        assert_eq!(estimated_wait(4, 0, 1, v), 5 * v);
        assert_eq!(estimated_wait(usize::MAX, 0, 1, v), v * u32::MAX);
    }

    #[test]
    fn default_bound_admits_two_rounds_on_one_permit_and_one_on_more() {
        let v = Duration::from_millis(10);
        // One permit: two waiting logins, not three.
        let bound = default_queue_wait(v, 1);
        assert_eq!(bound, Duration::from_millis(25));
        assert!(estimated_wait(1, 0, 1, v) <= bound);
        assert!(estimated_wait(2, 0, 1, v) > bound);
        for permits in [2, 4, 16] {
            // No permit free: one waiter per permit is admitted, the next is refused.
            let bound = default_queue_wait(v, permits);
            assert_eq!(bound, Duration::from_millis(15));
            for queued in 0..permits {
                assert!(
                    estimated_wait(queued, 0, permits, v) <= bound,
                    "{queued}/{permits}"
                );
            }
            assert!(estimated_wait(permits, 0, permits, v) > bound, "{permits}");
        }
        assert_eq!(default_queue_wait(Duration::MAX, 2), Duration::MAX / 2);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_within_1_and_60() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(40)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3600)), 60);
    }

    /// The default bound follows the measured verification; a fixed one replaces it.
    #[test]
    fn default_bound_follows_the_moving_average_and_the_permits() {
        let h = Hasher::new(weak(), 2).unwrap();
        h.verify_nanos.store(30_000_000, Ordering::Relaxed);
        assert_eq!(h.max_queue_wait(), Duration::from_millis(45));
        Hasher::record(&h.verify_nanos, Duration::from_millis(110));
        assert_eq!(h.verify_time(), Duration::from_millis(40));
        assert_eq!(h.max_queue_wait(), Duration::from_millis(60));
        let one = Hasher::new(weak(), 1).unwrap();
        one.verify_nanos.store(30_000_000, Ordering::Relaxed);
        assert_eq!(one.max_queue_wait(), Duration::from_millis(75));
        let fixed = h.with_max_queue_wait(Some(Duration::from_secs(1)));
        assert_eq!(fixed.max_queue_wait(), Duration::from_secs(1));
    }

    /// With every permit taken: a request over the bound is refused at once without queueing,
    /// one the estimate admits is refused by the timeout when the permit does not come in time,
    /// and neither stays counted as waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_the_bound_refused_at_once_or_by_the_timeout() {
        let h = Hasher::new(weak(), 1)
            .unwrap()
            .with_max_queue_wait(Some(Duration::ZERO));
        let pw = Arc::new(SecretString::from("pw".to_owned()));
        assert!(h.check_admission().is_ok());
        let held = h.permits.clone().acquire_owned().await.unwrap();
        assert!(matches!(
            h.check_admission(),
            Err(PasswordError::Overloaded { retry_after: 1 })
        ));
        let r = h.verify(None, pw.clone()).await;
        assert!(matches!(r, Err(PasswordError::Overloaded { .. })), "{r:?}");
        assert!(matches!(
            h.hash(pw.clone()).await,
            Err(PasswordError::Overloaded { .. })
        ));
        assert_eq!(h.waiting(), 0);
        // The estimate (1 ms a hash) admits; the held permit outlasts the 50 ms bound.
        let h = h.with_max_queue_wait(Some(Duration::from_millis(50)));
        h.verify_nanos.store(1_000_000, Ordering::Relaxed);
        let started = Instant::now();
        let r = h.verify(None, pw.clone()).await;
        assert!(matches!(r, Err(PasswordError::Overloaded { .. })), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(h.waiting(), 0);
        // The cap on waiters holds whatever the time bound says.
        h.waiting.store(MAX_WAITING, Ordering::Relaxed);
        assert!(h.check_admission().is_err());
        assert!(h.verify(None, pw.clone()).await.is_err());
        h.waiting.store(0, Ordering::Relaxed);
        drop(held);
        assert_eq!(h.verify(None, pw).await.unwrap(), Verification::Mismatch);
    }

    /// Review finding G of issue #11: a panicking hash gives its buffer back; later hashes work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_hash_returns_its_buffer() {
        let p = weak();
        let hasher = Hasher::new(p.clone(), 2).unwrap();
        for _ in 0..3 {
            let r = hasher
                .blocking(|_: &mut Memory| -> () { panic!("hash panicked (expected by the test)") })
                .await;
            assert!(matches!(r, Err(PasswordError::Task)), "{r:?}");
        }
        assert_eq!(hasher.pool.free.lock().unwrap().len(), 2);
        let stored = hash_with(b"pw", p).unwrap();
        let pw = Arc::new(SecretString::from("pw".to_owned()));
        for _ in 0..4 {
            assert_eq!(
                hasher
                    .verify(Some(stored.clone()), pw.clone())
                    .await
                    .unwrap(),
                Verification::Match {
                    needs_rehash: false
                }
            );
        }
    }

    /// Review finding G of issue #11: a stored hash asking for too many passes, lanes or total
    /// work is refused like a wrong password, without running it; the bounds themselves verify.
    #[test]
    fn absurd_stored_t_and_p_cost_are_refused() {
        let current = weak();
        let mut memory = Memory::for_params(&current);
        let dummy = hash_with(b"dummy", current.clone()).unwrap();
        let at_bounds = |m, t, p| hash_with(b"pw", Params::new(m, t, p, None).unwrap()).unwrap();
        for ok in [
            at_bounds(64, MAX_STORED_T_COST, 1),
            at_bounds(64, 1, MAX_STORED_P_COST),
        ] {
            assert_eq!(
                verify_in(Some(&ok), &dummy, b"pw", &current, &mut memory),
                Verification::Match { needs_rehash: true },
                "{ok}"
            );
        }
        // Real hashes of the right password just past the t and p bounds (so only the bound
        // refuses them); for the work bound and t = 2^32 - 1 an edited row (running them would
        // take minutes to hours).
        let base = at_bounds(128, 1, 1);
        for bad in [
            at_bounds(8, MAX_STORED_T_COST + 1, 1),
            at_bounds(8 * (MAX_STORED_P_COST + 1), 1, MAX_STORED_P_COST + 1),
            base.replace(",t=1,", ",t=4294967295,"),
            base.replace("m=128,t=1,", "m=65536,t=4,"),
        ] {
            assert_eq!(
                verify_in(Some(&bad), &dummy, b"pw", &current, &mut memory),
                Verification::Mismatch,
                "{bad}"
            );
        }
    }

    #[test]
    fn other_params_need_rehash() {
        let h = hash_with(b"pw", weak()).unwrap();
        let dummy = hash_with(b"dummy", weak()).unwrap();
        assert_eq!(
            verify_with(Some(&h), &dummy, b"pw", &owasp_params()),
            Verification::Match { needs_rehash: true }
        );
    }
}
