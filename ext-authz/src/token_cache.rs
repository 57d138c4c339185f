//! The verified-token cache (layer 1: a data structure, no I/O): the result of signature
//! verification and claims parsing for tokens seen before, so a repeated asymmetric token
//! (Ed25519 tens of µs, RSA/P-256 more) costs about what an HS256 check costs.
//!
//! What is cached, and what is not:
//! - Only *successes* of the expensive, time-independent part: the signature, the header, `iss`
//!   and `aud`, and the parsed (for external issuers: mapped) claims. Every hit still runs the
//!   time checks against the caller's `now` ([`check_times`]), the revocation lookup and the
//!   route policy in [`crate::check`], so a revocation needs no invalidation and an expired
//!   token is refused from the cache exactly as without it.
//! - An entry remembers the `kid` and the [`auth_token::Key::fingerprint`] of the key that
//!   verified it. A hit is used only while the keyring in force *now* resolves that `kid` to a
//!   key with the same fingerprint ([`TokenCache::lookup`]): a key removed or replaced by a
//!   `--keys-dir` reload or a JWKS refresh stops verifying at once; the stale entry is dropped
//!   and the token verified afresh (and refused).
//! - No negative results: a refused token is re-verified every time. Caching refusals would
//!   let any client fill the cache with garbage at no cost to itself (pushing out real users'
//!   entries), most refusals are cheaper than a cache insert anyway (size, shape, header, `alg`
//!   and `kid` fail before any signature work), and a refusal can turn into an acceptance
//!   (an unknown `kid` after a JWKS refresh), which a negative entry would have to track.
//!
//! The key is SHA-256 over a per-process random salt and the token. Why a cryptographic hash:
//! equal keys must mean equal tokens, or a client could be handed another user's cached
//! identity; with a 64-bit hash a collision is findable, with SHA-256 it is not. Why the salt:
//! the key's first bytes also pick the shard and bucket, and without a secret salt an attacker
//! could grind tokens into one bucket or shard (cheap for a few bits) to evict a victim's entry
//! or degrade lookups; with it, placements are unpredictable and differ per replica. The token
//! itself is not kept, only its salted hash.
//!
//! Bounded in bytes (`--token-cache-bytes`): each entry weighs its estimated heap footprint
//! ([`Entry::weight`]) and the cache evicts to stay under the bound. Only tokens that verified
//! with our keys or a trusted issuer's can enter, so a client cannot grow it without valid
//! tokens, and the S3-FIFO policy keeps a burst of one-off tokens from flushing the hot ones.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use auth_token::{Claims, Keyring, VerifyError};
use sha2::{Digest, Sha256};

/// Default of `--token-cache-bytes`: 8 MiB, about 18 000 tokens (~470 bytes each), well
/// inside the sidecar's 64 MiB memory limit next to the revocation set.
pub const DEFAULT_BYTES: u64 = 8 * 1024 * 1024;

/// Bytes added to every entry's weight for the map slot, the queue links and allocator
/// overhead (measured order of magnitude; an estimate on the safe side).
const SLOT_OVERHEAD: usize = 96;

/// Salted SHA-256 of a token (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key is already a uniform, secret-salted hash: its first 8 bytes are the hash.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes [`TokenKey`]'s prefix through: hashing a SHA-256 output again would only cost time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrehashedBuilder;

/// The [`Hasher`] of [`PrehashedBuilder`].
#[derive(Debug, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a caller hashes something other than a `TokenKey`: fold it (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for PrehashedBuilder {
    type Hasher = Prehashed;

    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

/// Whose token an entry is: ours, or the external issuer at this index (its position in the
/// configuration, stable for the life of the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Verified with our keyring (`--keys-dir` / `JWT_SECRET`).
    Local,
    /// Verified with the JWKS keys of external issuer `index`.
    External(usize),
}

/// A verified token's reusable result.
#[derive(Debug)]
pub struct Entry {
    /// The claims as the verifier (and, for an external issuer, the claim mapping) produced
    /// them; the time claims are re-checked on every hit.
    /// Shared with every [`crate::check::Decision`] this entry answers, so a hit copies none
    /// of the strings.
    pub claims: Arc<Claims>,
    /// Whose keys verified it.
    pub source: Source,
    kid: Option<Arc<str>>,
    key_fingerprint: [u8; 32],
    weight: u32,
}

impl Entry {
    /// An entry for `claims`, verified by the key that `kid` names in `source`'s keyring, whose
    /// fingerprint is `key_fingerprint`.
    pub fn new(
        claims: Arc<Claims>,
        source: Source,
        kid: Option<Arc<str>>,
        key_fingerprint: [u8; 32],
    ) -> Self {
        let mut entry = Self {
            claims,
            source,
            kid,
            key_fingerprint,
            weight: 0,
        };
        entry.weight = u32::try_from(entry.footprint()).unwrap_or(u32::MAX);
        entry
    }

    /// Estimated bytes held: the key, the `Arc` allocation with the entry, every string and
    /// the roles vector, and a fixed [`SLOT_OVERHEAD`].
    fn footprint(&self) -> usize {
        let c = &self.claims;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        std::mem::size_of::<TokenKey>()
            + 2 * std::mem::size_of::<usize>() // Arc counters
            + std::mem::size_of::<Self>()
            + 2 * std::mem::size_of::<usize>() // the claims' Arc counters
            + std::mem::size_of::<Claims>()
            + c.sub.capacity()
            + c.email.capacity()
            + c.jti.capacity()
            + opt(&c.iss)
            + opt(&c.aud)
            + c.roles.capacity() * std::mem::size_of::<String>()
            + c.roles.iter().map(String::capacity).sum::<usize>()
            + self.kid.as_ref().map_or(0, |k| 2 * std::mem::size_of::<usize>() + k.len())
            + SLOT_OVERHEAD
    }

    /// The `kid` of the key that verified it (`None`: the token named none).
    pub fn kid(&self) -> Option<&Arc<str>> {
        self.kid.as_ref()
    }

    /// The weight counted against `--token-cache-bytes`.
    pub fn weight(&self) -> u64 {
        u64::from(self.weight)
    }
}

/// Counters of the cache, shared with the metrics (read at scrape time).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache (key still loaded).
    pub hits: AtomicU64,
    /// Lookups that found nothing usable (absent, or the key changed: a stale entry).
    pub misses: AtomicU64,
    /// Entries pushed out to stay within the byte bound.
    pub evictions: AtomicU64,
    /// Current weight (estimated bytes) of all entries.
    pub bytes: AtomicU64,
    /// Current number of entries.
    pub entries: AtomicU64,
}

/// quick_cache's weigher: the entry's own estimate.
#[derive(Debug, Clone, Copy)]
struct Weigh;

impl quick_cache::Weighter<TokenKey, Arc<Entry>> for Weigh {
    fn weight(&self, _key: &TokenKey, entry: &Arc<Entry>) -> u64 {
        entry.weight()
    }
}

/// Counts evictions (quick_cache calls it under the shard lock: one atomic add).
#[derive(Debug, Clone)]
struct Evictions(Arc<CacheStats>);

impl quick_cache::Lifecycle<TokenKey, Arc<Entry>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: TokenKey, _entry: Arc<Entry>) {
        self.0.evictions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why quick_cache: a well-kept concurrent cache with a weighted (byte) capacity, sharded
/// locks with a read lock on `get` (no global lock on the hot path, no per-hit allocation), and
/// S3-FIFO admission (a scan of one-off tokens does not flush the frequently used ones). A
/// hand-written `Mutex<LruMap>` would serialise every check on one lock; moka brings a
/// background maintenance thread and far more code for features (TTL, async) unused here.
type Map = quick_cache::sync::Cache<TokenKey, Arc<Entry>, Weigh, PrehashedBuilder, Evictions>;

/// The cache of verified tokens. Share it behind an `Arc`.
pub struct TokenCache {
    salt: [u8; 32],
    map: Map,
    stats: Arc<CacheStats>,
    capacity: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the salt.
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity_bytes` (estimated), counting into `stats`; `None` for 0
    /// (cache disabled).
    pub fn new(capacity_bytes: u64, stats: Arc<CacheStats>) -> Option<Self> {
        if capacity_bytes == 0 {
            return None;
        }
        let map = Map::with(
            usize::try_from(capacity_bytes / 512)
                .unwrap_or(usize::MAX)
                .max(16),
            capacity_bytes,
            Weigh,
            PrehashedBuilder,
            Evictions(Arc::clone(&stats)),
        );
        Some(Self {
            salt: rand::random(),
            map,
            stats,
            capacity: capacity_bytes,
        })
    }

    /// The byte bound.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The cache key of `token`: SHA-256(salt ‖ token).
    pub fn key(&self, token: &str) -> TokenKey {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        TokenKey(h.finalize().into())
    }

    /// The entry for `key`, if one exists whose key is still loaded with the same material:
    /// `ring(source)` is the keyring in force now for the entry's source. A stale entry (its
    /// `kid` gone, or now naming another key) is removed and reported as a miss, so the caller
    /// verifies the token afresh. Counts a hit or a miss.
    pub fn lookup<'k>(
        &self,
        key: &TokenKey,
        ring: impl FnOnce(Source) -> Option<&'k Keyring>,
    ) -> Option<Arc<Entry>> {
        let found = self.map.get(key).filter(|entry| {
            ring(entry.source)
                .and_then(|r| r.get(entry.kid.as_deref()))
                .is_some_and(|k| k.fingerprint() == entry.key_fingerprint)
        });
        match found {
            Some(entry) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            None => {
                // Absent, or stale: drop it so it does not take space until evicted.
                if self.map.remove(key).is_some() {
                    self.update_size();
                }
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Remembers a successful verification.
    pub fn insert(&self, key: TokenKey, entry: Entry) {
        self.map.insert(key, Arc::new(entry));
        self.update_size();
    }

    fn update_size(&self) {
        self.stats.bytes.store(self.map.weight(), Ordering::Relaxed);
        self.stats
            .entries
            .store(self.map.len() as u64, Ordering::Relaxed);
    }
}

/// The time rules of [`auth_token::Verifier`], for a cached token at `now` (Unix seconds):
/// expired when `exp < now - leeway`, not yet valid when `nbf > now + leeway`, issued in the
/// future when `iat > now + leeway`, in that order (an absent `nbf`/`iat` of an external
/// token is 0 and always passes).
pub fn check_times(claims: &Claims, now: u64, leeway_secs: u64) -> Result<(), VerifyError> {
    if claims.exp < now.saturating_sub(leeway_secs) {
        return Err(VerifyError::Expired);
    }
    let latest = now.saturating_add(leeway_secs);
    if claims.nbf > latest {
        return Err(VerifyError::NotYetValid);
    }
    if claims.iat > latest {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(())
}

/// The `kid` of a token's header (already verified by the caller), for the cache entry and the
/// decision log: `Some(None)` when it has none; `None` when the header cannot be read.
pub fn header_kid(token: &str) -> Option<Option<Arc<str>>> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        kid: Option<std::borrow::Cow<'a, str>>,
    }
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    serde_json::from_slice::<Header<'_>>(&bytes)
        .ok()
        .map(|h| h.kid.map(|k| Arc::from(&*k)))
}

#[cfg(test)]
mod tests;
