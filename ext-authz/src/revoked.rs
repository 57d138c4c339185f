//! The revoked tokens known at one point, as a pure data structure: no I/O, no clock, no lock.
//!
//! [`RevocationSet`] is immutable once shared: `jti → exp` for single tokens, `sub → cut` for
//! user-wide revocations (every token of that user with `iat <= cut`). A check does at most two
//! lookups ([`RevocationSet::is_revoked`]): a keyed hash picks one of [`SHARDS`] shards, then a
//! binary search in that shard's sorted vector.
//!
//! Why shards behind `Arc`s (issue #15 §2): a feed batch builds a new set
//! ([`RevocationSet::with`]) that `revocation::Revocations` swaps in, so checks keep reading an
//! immutable snapshot with one atomic load. Copying a whole `HashMap` per batch cost O(set)
//! (≈ 25 ms per batch at 1M entries on one core); here the new set shares every untouched shard
//! with the old one and copies only the shards the batch touches, so a batch costs
//! O(batch × set / SHARDS) plus cloning the shard pointers. A persistent HAMT crate (`imbl`,
//! `rpds`) would give the same sharing, but with a node per few entries and a pointer per entry
//! it costs several times the 32 B per entry of a sorted vector, and the 1M-entry target is a
//! 64 MiB sidecar. Expiry is per shard too: each shard keeps a lower bound of its earliest
//! expiry, so the sweep looks at [`SHARDS`] numbers and rewrites only shards holding an expired
//! entry.
//!
//! Keys are compact ([`Key`]): a jti of 32 lowercase hex digits (login-service's) or a
//! lowercase hyphenated UUID is stored as its 16 bytes, a canonical decimal `sub` as a `u64`,
//! anything else as its bytes. The mapping is injective (each compact form has exactly one
//! spelling; an uppercase or otherwise different spelling stays bytes), so matching is exactly
//! string equality, as before.
//!
//! Entries are dropped once they cannot matter: `expires_at` plus the verifier's leeway has
//! passed (after that the verifier refuses the token by itself). The set is therefore bounded by
//! the revocations in force, and login-service bounds those per user (`MAX_REVOKED_PER_USER` +
//! 1). `tests::bytes_per_*` measure the resident bytes per entry (BENCHMARKS.md, issue #15).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use auth_token::{Claims, FeedEntry, FeedEntryRef};

/// Shards per map: a batch entry copies one shard (≈ 250 entries, 8 KiB, at 1M entries).
pub const SHARDS: usize = 4096;

/// A key in its compact form; `B` is the owner of the bytes of [`Key::Other`] (`Box<[u8]>`
/// stored, `&[u8]` looked up, so a check allocates nothing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key<B> {
    /// Exactly 32 lowercase hex digits.
    Hex32([u8; 16]),
    /// A lowercase hyphenated UUID (8-4-4-4-12).
    Uuid([u8; 16]),
    /// Decimal digits without a leading zero (or `0`), fitting a `u64`.
    Decimal(u64),
    /// Anything else, as given.
    Other(B),
}

type StoredKey = Key<Box<[u8]>>;

/// The value of each byte as a lowercase hex digit; [`NOT_HEX`] for every other byte. Why a
/// table: a 1M-entry snapshot parses 32M digits, and parsing keys (a branch and a bounds
/// check per digit) was a tenth of a replica's CPU for it in a profile (issue #15 §2).
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut d = 0;
    while d < 10 {
        table[b'0' as usize + d] = d as u8;
        d += 1;
    }
    let mut x = 0;
    while x < 6 {
        table[b'a' as usize + x] = 10 + x as u8;
        x += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// 16 bytes from exactly 32 lowercase hex digits, `None` for anything else.
fn hex16(digits: &[u8]) -> Option<[u8; 16]> {
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0_u8; 16];
    // OR of every digit's value: one test for "some byte was not a digit" at the end.
    let mut bad = 0_u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = match *pair {
            [hi, lo] => (HEX_VALUE[usize::from(hi)], HEX_VALUE[usize::from(lo)]),
            _ => return None,
        };
        bad |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// The 32 digits of a hyphenated UUID (8-4-4-4-12), hyphens dropped; `None` for any other
/// shape. A hyphen elsewhere leaves fewer than 32 digits, and the zero bytes left over are
/// refused by [`hex16`] as the digits they are not.
fn uuid_digits(b: &[u8]) -> Option<[u8; 32]> {
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
        return None;
    }
    let mut digits = [0_u8; 32];
    for (slot, &c) in digits.iter_mut().zip(b.iter().filter(|&&c| c != b'-')) {
        *slot = c;
    }
    Some(digits)
}

impl<'a> Key<&'a [u8]> {
    fn parse(s: &'a str) -> Self {
        let b = s.as_bytes();
        if let Some(k) = hex16(b) {
            return Key::Hex32(k);
        }
        if let Some(k) = uuid_digits(b).as_ref().and_then(|d| hex16(d)) {
            return Key::Uuid(k);
        }
        if !b.is_empty()
            && b.iter().all(u8::is_ascii_digit)
            && (b.len() == 1 || b.first() != Some(&b'0'))
            && let Ok(n) = s.parse::<u64>()
        {
            return Key::Decimal(n);
        }
        Key::Other(b)
    }

    fn to_stored(&self) -> StoredKey {
        match *self {
            Key::Hex32(k) => Key::Hex32(k),
            Key::Uuid(k) => Key::Uuid(k),
            Key::Decimal(n) => Key::Decimal(n),
            Key::Other(b) => Key::Other(b.into()),
        }
    }
}

impl StoredKey {
    fn borrowed(&self) -> Key<&[u8]> {
        match self {
            Key::Hex32(k) => Key::Hex32(*k),
            Key::Uuid(k) => Key::Uuid(*k),
            Key::Decimal(n) => Key::Decimal(*n),
            Key::Other(b) => Key::Other(b),
        }
    }
}

/// What a map holds per key: when it stops mattering, and how two entries for one key merge.
trait Value: Copy {
    fn expires_at(&self) -> u64;
    /// Folds a later entry for the same key into this one (never shortens it).
    fn merge(&mut self, other: Self);
}

impl Value for u64 {
    fn expires_at(&self) -> u64 {
        *self
    }
    fn merge(&mut self, other: Self) {
        *self = (*self).max(other);
    }
}

/// A user-wide revocation: tokens with `iat <= cut` are revoked until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserCut {
    cut: u64,
    expires_at: u64,
}

impl Value for UserCut {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
    fn merge(&mut self, other: Self) {
        self.cut = self.cut.max(other.cut);
        self.expires_at = self.expires_at.max(other.expires_at);
    }
}

/// One shard: entries sorted by key, and a lower bound of their earliest expiry.
#[derive(Debug, Clone)]
struct Shard<V> {
    entries: Vec<(StoredKey, V)>,
    min_exp: u64,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            min_exp: u64::MAX,
        }
    }
}

impl<V: Value> Shard<V> {
    fn get(&self, key: &Key<&[u8]>) -> Option<&V> {
        self.entries
            .binary_search_by(|(k, _)| k.borrowed().cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    fn upsert(&mut self, key: Key<&[u8]>, value: V) {
        match self
            .entries
            .binary_search_by(|(k, _)| k.borrowed().cmp(&key))
        {
            Ok(i) => {
                if let Some((_, v)) = self.entries.get_mut(i) {
                    v.merge(value);
                }
            }
            Err(i) => self.entries.insert(i, (key.to_stored(), value)),
        }
        // A merge only lengthens an entry, so the bound stays a lower bound.
        self.min_exp = self.min_exp.min(value.expires_at());
    }
}

/// `key → value` in [`SHARDS`] copy-on-write shards (see the module docs).
#[derive(Clone)]
struct Map<V> {
    shards: Vec<Arc<Shard<V>>>,
    hasher: RandomState,
    len: usize,
}

impl<V> Default for Map<V> {
    fn default() -> Self {
        // One empty shard shared by all: an empty map allocates one shard, not 4096.
        Self {
            shards: {
                let empty = Arc::new(Shard::default());
                (0..SHARDS).map(|_| Arc::clone(&empty)).collect()
            },
            hasher: RandomState::new(),
            len: 0,
        }
    }
}

/// The shard of `key`: a keyed hash, so nobody outside can pile keys into one shard.
fn shard_index(hasher: &RandomState, key: &Key<&[u8]>) -> usize {
    let h = hasher.hash_one(key);
    // Multiply-shift maps the hash onto 0..SHARDS without a division.
    usize::try_from((u128::from(h) * SHARDS as u128) >> 64).unwrap_or(0)
}

impl<V: Value> Map<V> {
    fn shard_of(&self, key: &Key<&[u8]>) -> usize {
        shard_index(&self.hasher, key)
    }

    fn get(&self, key: &str) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        let key = Key::parse(key);
        self.shards.get(self.shard_of(&key))?.get(&key)
    }

    /// Adds `(key, value)` pairs: each touched shard is copied once (if shared) with room for
    /// its new entries, so the old set's readers keep their shard untouched.
    fn insert<'a>(&mut self, items: impl IntoIterator<Item = (&'a str, V)>) {
        let mut items: Vec<(usize, Key<&[u8]>, V)> = items
            .into_iter()
            .map(|(k, v)| {
                let key = Key::parse(k);
                (self.shard_of(&key), key, v)
            })
            .collect();
        items.sort_by_key(|(shard, _, _)| *shard);
        for group in items.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(index, _, _)) = group.first() else {
                continue;
            };
            let Some(slot) = self.shards.get_mut(index) else {
                continue;
            };
            let shard = match Arc::get_mut(slot) {
                // Owned by this set alone (a snapshot being loaded): grow in place.
                Some(shard) => {
                    shard.entries.reserve(group.len());
                    shard
                }
                None => {
                    let mut entries = Vec::with_capacity(slot.entries.len() + group.len());
                    entries.extend_from_slice(&slot.entries);
                    *slot = Arc::new(Shard {
                        entries,
                        min_exp: slot.min_exp,
                    });
                    Arc::get_mut(slot).unwrap_or_else(|| unreachable!("just created"))
                }
            };
            let before = shard.entries.len();
            for (_, key, value) in group {
                shard.upsert(key.clone(), *value);
            }
            self.len += shard.entries.len() - before;
        }
    }

    fn has_expired(&self, now: u64, leeway: u64) -> bool {
        self.shards
            .iter()
            .any(|s| s.min_exp.saturating_add(leeway) < now)
    }

    /// Rewrites only the shards whose earliest expiry has passed.
    fn prune(&mut self, now: u64, leeway: u64) {
        let keep = |v: &V| v.expires_at().saturating_add(leeway) >= now;
        for slot in &mut self.shards {
            if slot.min_exp.saturating_add(leeway) >= now {
                continue;
            }
            // One allocation of the final size: collecting from a filter grows by doubling,
            // and the outgrown buffers stay as holes in the arena the checks allocate from.
            let mut entries =
                Vec::with_capacity(slot.entries.iter().filter(|(_, v)| keep(v)).count());
            entries.extend(slot.entries.iter().filter(|(_, v)| keep(v)).cloned());
            self.len -= slot.entries.len() - entries.len();
            let min_exp = entries
                .iter()
                .map(|(_, v)| v.expires_at())
                .min()
                .unwrap_or(u64::MAX);
            *slot = Arc::new(Shard { entries, min_exp });
        }
    }
}

/// A [`Map`] being loaded from a snapshot: plain shards, filled unsorted and sorted once by
/// [`MapBuilder::seal`]. Why (issue #15 §2): inserting each entry of a 1M-entry snapshot in its
/// sorted place moved half a shard per entry, a quarter of the load time; and appending through
/// the `Arc` of a shared [`Map`] (`Arc::make_mut`: an atomic compare-exchange on a cold line per
/// entry) was most of what was left of the appending. Nothing reads a map before it is sealed.
struct MapBuilder<V> {
    shards: Vec<Shard<V>>,
    hasher: RandomState,
}

impl<V> Default for MapBuilder<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<V: Value> MapBuilder<V> {
    /// Appends `(key, value)` pairs to their shards, unsorted.
    fn append<'a>(&mut self, items: impl IntoIterator<Item = (&'a str, V)>) {
        for (k, value) in items {
            let key = Key::parse(k);
            let Some(shard) = self.shards.get_mut(shard_index(&self.hasher, &key)) else {
                continue;
            };
            shard.entries.push((key.to_stored(), value));
            shard.min_exp = shard.min_exp.min(value.expires_at());
        }
    }

    /// The map: each shard sorted, one entry per key (merged as [`Shard::upsert`] does), no
    /// spare capacity; empty shards share one allocation, as in an empty [`Map`].
    fn seal(self) -> Map<V> {
        let empty = Arc::new(Shard::default());
        let mut len = 0;
        let shards = self
            .shards
            .into_iter()
            .map(|mut shard| {
                if shard.entries.is_empty() {
                    return Arc::clone(&empty);
                }
                shard.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                shard.entries.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        kept.1.merge(later.1);
                    }
                    same
                });
                shard.entries.shrink_to_fit();
                len += shard.entries.len();
                Arc::new(shard)
            })
            .collect();
        Map {
            shards,
            hasher: self.hasher,
            len,
        }
    }
}

/// The revoked tokens known at one point: immutable once shared, replaced whole (sharing the
/// shards a change does not touch).
#[derive(Clone, Default)]
pub struct RevocationSet {
    tokens: Map<u64>,
    users: Map<UserCut>,
}

impl std::fmt::Debug for RevocationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationSet")
            .field("tokens", &self.tokens.len)
            .field("users", &self.users.len)
            .finish()
    }
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl RevocationSet {
    /// True when `claims` (a token that verified) is revoked: its `jti` is listed, or its user
    /// has a cut at or after its `iat`.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        if let Some(user) = self.users.get(claims.sub.as_str())
            && claims.iat <= user.cut
        {
            return true;
        }
        self.tokens.get(claims.jti.as_str()).is_some()
    }

    /// Entries held (tokens + users).
    pub fn len(&self) -> usize {
        self.tokens.len + self.users.len
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entries`, skipping those already expired at `now` (with `leeway` seconds).
    pub fn insert(&mut self, entries: &[impl Revocation], now: u64, leeway: u64) {
        let (tokens, users) = live(entries, now, leeway);
        self.tokens.insert(tokens);
        self.users.insert(users);
    }

    /// A copy with `entries` added and expired entries dropped: shares the untouched shards,
    /// so it costs O(entries), not O(set).
    pub fn with(&self, entries: &[impl Revocation], now: u64, leeway: u64) -> Self {
        let mut next = self.clone();
        next.prune(now, leeway);
        next.insert(entries, now, leeway);
        next
    }

    /// True when some entry may have expired (so [`RevocationSet::prune`] may drop something).
    /// Looks at one bound per shard, not at every entry.
    pub fn has_expired(&self, now: u64, leeway: u64) -> bool {
        self.tokens.has_expired(now, leeway) || self.users.has_expired(now, leeway)
    }

    /// Drops entries whose `expires_at + leeway` is before `now`.
    pub fn prune(&mut self, now: u64, leeway: u64) {
        self.tokens.prune(now, leeway);
        self.users.prune(now, leeway);
    }
}

/// What the set reads of a feed entry: the owned [`FeedEntry`], or the [`FeedEntryRef`] a
/// follower parses its pages into (strings borrowed from the body).
pub trait Revocation {
    /// `sub`.
    fn sub(&self) -> &str;
    /// `jti`; `None` for a user-wide revocation.
    fn jti(&self) -> Option<&str>;
    /// `revoked_at` (for a user-wide revocation, the cut).
    fn revoked_at(&self) -> i64;
    /// `expires_at`.
    fn expires_at(&self) -> i64;
}

impl Revocation for FeedEntry {
    fn sub(&self) -> &str {
        &self.sub
    }
    fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    fn revoked_at(&self) -> i64 {
        self.revoked_at
    }
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl Revocation for FeedEntryRef<'_> {
    fn sub(&self) -> &str {
        &self.sub
    }
    fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    fn revoked_at(&self) -> i64 {
        self.revoked_at
    }
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// Entries that are not dropped at `now` (with `leeway` seconds): single tokens as
/// `(jti, expires_at)`, user-wide cuts as `(sub, cut)`.
fn live<E: Revocation>(
    entries: &[E],
    now: u64,
    leeway: u64,
) -> (
    impl Iterator<Item = (&str, u64)>,
    impl Iterator<Item = (&str, UserCut)>,
) {
    let live = move || {
        entries
            .iter()
            .filter(move |e| unsigned(e.expires_at()).saturating_add(leeway) >= now)
    };
    let tokens = live().filter_map(|e| Some((e.jti()?, unsigned(e.expires_at()))));
    let users = live().filter(|e| e.jti().is_none()).map(|e| {
        (
            e.sub(),
            UserCut {
                cut: unsigned(e.revoked_at()),
                expires_at: unsigned(e.expires_at()),
            },
        )
    });
    (tokens, users)
}

/// A [`RevocationSet`] being loaded from the feed's snapshot, page by page: entries are
/// appended unsorted and sorted once by [`SnapshotBuilder::finish`] (see [`MapBuilder`]). A
/// separate type, so nothing can read the set before it is sorted.
#[derive(Default)]
pub struct SnapshotBuilder {
    tokens: MapBuilder<u64>,
    users: MapBuilder<UserCut>,
}

impl SnapshotBuilder {
    /// Adds one page, skipping entries already expired at `now` (with `leeway` seconds).
    pub fn add(&mut self, entries: &[impl Revocation], now: u64, leeway: u64) {
        let (tokens, users) = live(entries, now, leeway);
        self.tokens.append(tokens);
        self.users.append(users);
    }

    /// The complete set: sorted, one entry per key, no spare capacity.
    pub fn finish(self) -> RevocationSet {
        RevocationSet {
            tokens: self.tokens.seal(),
            users: self.users.seal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty batch.
    const NOTHING: &[FeedEntry] = &[];

    fn claims(sub: &str, jti: &str, iat: u64) -> Claims {
        Claims {
            sub: sub.into(),
            email: "e@example.com".into(),
            roles: vec![],
            iat,
            nbf: iat,
            exp: iat + 600,
            jti: jti.into(),
            iss: None,
            aud: None,
        }
    }

    fn token(id: i64, sub: &str, jti: &str, exp: i64) -> FeedEntry {
        FeedEntry {
            id,
            sub: sub.into(),
            jti: Some(jti.into()),
            revoked_at: exp - 600,
            expires_at: exp,
            reason: String::new(),
        }
    }

    fn user(id: i64, sub: &str, cut: i64, expires_at: i64) -> FeedEntry {
        FeedEntry {
            id,
            sub: sub.into(),
            jti: None,
            revoked_at: cut,
            expires_at,
            reason: String::new(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A snapshot loaded page by page through [`SnapshotBuilder`] (appended unsorted, sorted
        /// once) is the set inserting each entry in place builds: the same entries, the same
        /// answer for every token, and the same after pruning — repeated keys, cuts and
        /// expired entries included.
        #[test]
        fn a_snapshot_built_in_bulk_is_the_set_built_entry_by_entry(
            entries in proptest::collection::vec(
                (0..40_u8, proptest::option::of(0..40_u8), 900..1_100_i64, 1_000..3_000_i64),
                0..300,
            ),
            page in 1..50_usize,
        ) {
            let jti = |j: u8| match j % 3 {
                0 => format!("{j:032x}"),
                1 => format!("0000000{j:x}-0000-4000-8000-000000000000"),
                _ => format!("Other-{j}"),
            };
            let entries: Vec<FeedEntry> = entries
                .iter()
                .zip(1..)
                .map(|(&(sub, j, cut, exp), id)| match j {
                    Some(j) => token(id, &sub.to_string(), &jti(j), exp),
                    None => user(id, &sub.to_string(), cut, exp),
                })
                .collect();
            let mut by_entry = RevocationSet::default();
            let mut builder = SnapshotBuilder::default();
            for chunk in entries.chunks(page) {
                by_entry.insert(chunk, 1_500, 30);
                builder.add(chunk, 1_500, 30);
            }
            let bulk = builder.finish();
            proptest::prop_assert_eq!(bulk.len(), by_entry.len());
            for now in [1_500, 2_500] {
                let (a, b) = (bulk.with(NOTHING, now, 30), by_entry.with(NOTHING, now, 30));
                proptest::prop_assert_eq!(a.len(), b.len());
                for sub in 0..40_u8 {
                    for j in 0..40_u8 {
                        for iat in [950, 1_000, 1_100] {
                            let c = claims(&sub.to_string(), &jti(j), iat);
                            proptest::prop_assert_eq!(a.is_revoked(&c), b.is_revoked(&c));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn token_revocation_matches_the_jti_only() {
        let set = RevocationSet::default().with(&[token(1, "7", "j1", 2_000)], 1_000, 30);
        assert!(set.is_revoked(&claims("7", "j1", 900)));
        assert!(!set.is_revoked(&claims("7", "j2", 900)));
        // The jti decides, whoever the user.
        assert!(set.is_revoked(&claims("8", "j1", 900)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn user_cut_edge_iat_equal_is_revoked_next_second_is_not() {
        let t = 1_000;
        let set = RevocationSet::default().with(&[user(1, "7", t, t + 86_400)], 1_000, 30);
        let t = u64::try_from(t).unwrap();
        assert!(set.is_revoked(&claims("7", "a", t - 100)));
        assert!(set.is_revoked(&claims("7", "b", t)), "iat == T is revoked");
        assert!(
            !set.is_revoked(&claims("7", "c", t + 1)),
            "iat == T + 1 (login-service's next token) lives"
        );
        assert!(
            !set.is_revoked(&claims("8", "d", t - 100)),
            "other users live"
        );
    }

    #[test]
    fn later_cut_wins_and_an_earlier_one_does_not_shrink_it() {
        let set = RevocationSet::default().with(
            &[user(1, "7", 2_000, 90_000), user(2, "7", 1_000, 80_000)],
            1_000,
            30,
        );
        assert!(set.is_revoked(&claims("7", "a", 1_500)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn expired_entries_are_skipped_and_dropped_so_the_set_is_bounded() {
        let now = 10_000;
        let mut set = RevocationSet::default();
        // Already expired beyond the leeway on arrival: never stored.
        set.insert(&[token(1, "7", "old", 9_000)], now, 30);
        assert!(set.is_empty());
        // Expired, but within the leeway: kept (the verifier still accepts that token).
        set.insert(&[token(2, "7", "recent", 9_980)], now, 30);
        assert_eq!(set.len(), 1);
        set.insert(
            &[token(3, "7", "live", 20_000), user(4, "8", 9_000, 10_500)],
            now,
            30,
        );
        assert_eq!(set.len(), 3);
        assert!(!set.has_expired(now, 30));
        // Later: the leeway passed for "recent", then for the user cut.
        assert!(set.has_expired(10_011, 30));
        set.prune(10_011, 30);
        assert_eq!(set.len(), 2);
        let next = set.with(NOTHING, 10_531, 30);
        assert_eq!(next.len(), 1);
        assert!(next.is_revoked(&claims("x", "live", 1)));
        // Bounded: after every expiry, nothing is left however many entries went in.
        let many: Vec<FeedEntry> = (0..10_000)
            .map(|i| token(i, "7", &format!("j{i}"), 11_000))
            .collect();
        let big = next.with(&many, now, 30);
        assert_eq!(big.len(), 10_001);
        assert_eq!(big.with(NOTHING, 21_000, 30).len(), 0);
    }

    /// The one spelling a key stands for (test only: the set never needs it back).
    fn spelling(key: &Key<&[u8]>) -> String {
        let hex = |k: &[u8; 16]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match key {
            Key::Hex32(k) => hex(k),
            Key::Uuid(k) => {
                let h = hex(k);
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            Key::Decimal(n) => n.to_string(),
            Key::Other(b) => String::from_utf8(b.to_vec()).unwrap(),
        }
    }

    proptest::proptest! {
        // Cheap cases, and a moved hyphen is one edit among hundreds: many of them.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Every string reads back as itself from its compact key, so two different spellings
        /// never share a key (the table-driven parse, issue #15 §2): near-misses of the compact
        /// shapes included (a wrong digit, an uppercase one, a hyphen moved, one too many).
        #[test]
        fn a_compact_key_spells_exactly_the_string_it_was_parsed_from(
            s in proptest::prop_oneof![
                "[0-9a-f]{32}",
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9a-fA-Fg/:@`\\-]{30,38}",
                "[0-9-]{34,38}",
                "[0-9]{0,22}",
                ".{0,40}",
            ],
            edit in proptest::option::of((0..3_u8, 0..37_usize, proptest::char::any())),
        ) {
            // One edit of a near-miss: a character inserted, one swapped with its neighbour
            // (a hyphen moved), or one replaced.
            let mut chars: Vec<char> = s.chars().collect();
            if let Some((kind, at, c)) = edit {
                let at = at.min(chars.len());
                match kind {
                    0 => chars.insert(at, c),
                    1 if at + 1 < chars.len() => chars.swap(at, at + 1),
                    _ if at < chars.len() => chars[at] = c,
                    _ => {}
                }
            }
            let s: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(spelling(&Key::parse(&s)), s);
        }
    }

    #[test]
    fn compact_keys_match_exactly_the_same_spelling() {
        let hex = "0123456789abcdef0123456789abcdef";
        let uuid = "01234567-89ab-cdef-0123-456789abcdef";
        assert!(matches!(Key::parse(hex), Key::Hex32(_)));
        assert!(matches!(Key::parse(uuid), Key::Uuid(_)));
        assert!(matches!(Key::parse("42"), Key::Decimal(42)));
        let spellings = [
            hex,
            uuid,
            "0123456789ABCDEF0123456789ABCDEF",
            "01234567-89AB-CDEF-0123-456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "+123456789abcdef0123456789abcdef",
            "0123456789abcdef-0123456789abcdef",
            "42",
            "042",
            "+42",
            "0",
            "00",
            "",
            "18446744073709551615",
            "18446744073709551616",
            "j-1",
        ];
        let set = RevocationSet::default().with(
            &spellings
                .iter()
                .enumerate()
                .map(|(i, j)| token(i64::try_from(i).unwrap(), "7", j, 2_000))
                .collect::<Vec<_>>(),
            1_000,
            30,
        );
        assert_eq!(set.len(), spellings.len(), "no two spellings share a key");
        for (i, a) in spellings.iter().enumerate() {
            let only = RevocationSet::default().with(&[token(1, "7", a, 2_000)], 1_000, 30);
            assert!(set.is_revoked(&claims("7", a, 1)));
            for b in spellings.iter().skip(i + 1) {
                assert!(
                    !only.is_revoked(&claims("7", b, 1)),
                    "{a:?} must not revoke {b:?}"
                );
            }
        }
        // Users too: "042" is not user 42.
        let users = RevocationSet::default().with(&[user(1, "42", 1_000, 90_000)], 1_000, 30);
        assert!(users.is_revoked(&claims("42", "a", 900)));
        assert!(!users.is_revoked(&claims("042", "a", 900)));
        assert!(!users.is_revoked(&claims("+42", "a", 900)));
    }

    #[test]
    fn a_batch_copies_only_the_shards_it_touches() {
        let now = 1_000;
        let many: Vec<FeedEntry> = (0..50_000)
            .map(|i| token(i, "7", &format!("{i:032x}"), 90_000))
            .collect();
        let mut set = RevocationSet::default();
        set.insert(&many, now, 30);
        let next = set.with(&[token(60_000, "8", "new", 90_000)], now, 30);
        assert_eq!(next.len(), 50_001);
        let copied = set
            .tokens
            .shards
            .iter()
            .zip(&next.tokens.shards)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1, "one entry, one shard copied; the rest shared");
        // The old set is untouched (its readers keep their snapshot).
        assert_eq!(set.len(), 50_000);
        assert!(!set.is_revoked(&claims("8", "new", 1)));
        assert!(next.is_revoked(&claims("8", "new", 1)));
        // Expiry rewrites only shards holding an expired entry.
        let mut mixed = next.with(&[token(60_001, "8", "short", 2_000)], now, 30);
        assert!(mixed.has_expired(2_031, 30));
        let before = mixed.clone();
        mixed.prune(2_031, 30);
        assert_eq!(mixed.len(), 50_001);
        assert!(!mixed.has_expired(2_031, 30));
        let rewritten = before
            .tokens
            .shards
            .iter()
            .zip(&mixed.tokens.shards)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(rewritten, 1);
    }

    /// Resident KiB of this process (`VmRSS`).
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Measurement, not a check (issue #11 item 5): resident bytes per revocation entry with
    /// login-service's real shapes (32-hex-digit `jti`, numeric `sub`), and the peak while a
    /// feed batch is applied (the set is copied, then swapped). One shape per process, so freed
    /// memory of another measurement is not reused: run each test on its own, e.g.
    /// `cargo test -p ext-authz --lib -- --ignored --exact --nocapture
    /// revoked::tests::bytes_per_jti_entry_1m`.
    fn measure_bytes_per_entry(n: i64, per_token: bool) {
        let entries: Vec<FeedEntry> = (0..n)
            .map(|i| {
                if per_token {
                    token(
                        i,
                        &(i % 50_000).to_string(),
                        &format!("{i:032x}"),
                        4_000_000_000,
                    )
                } else {
                    user(i, &(1_000_000 + i).to_string(), 1_000, 4_000_000_000)
                }
            })
            .collect();
        let before = rss_kib();
        let mut set = RevocationSet::default();
        set.insert(&entries, 1_000, 30);
        let held = rss_kib();
        let copy = set.with(NOTHING, 1_000, 30);
        let peak = rss_kib();
        assert_eq!(copy.len(), usize::try_from(n).unwrap());
        let per = |kib: u64| kib as f64 * 1024.0 / n as f64;
        println!(
            "{n} {} entries: {:.1} MiB resident = {:.0} B/entry; while a batch is applied: \
             {:.0} B/entry",
            if per_token { "jti" } else { "sub" },
            (held - before) as f64 / 1024.0,
            per(held - before),
            per(peak - before),
        );
    }

    /// Measurement (issue #15 §2): this whole process's `VmRSS` with 1M entries (90 % jtis,
    /// 10 % user cuts, the bench's mix) loaded page by page as the feed does (1000 per page,
    /// each page dropped after use), then with a 100-entry batch applied while the old set is
    /// still held. `cargo test -p ext-authz --release --lib -- --ignored --exact --nocapture
    /// revoked::tests::process_rss_with_1m_entries`.
    #[test]
    #[ignore = "measurement: prints the process RSS"]
    fn process_rss_with_1m_entries() {
        let entry = |i: i64| {
            if i % 10 == 0 {
                user(i, &(1_000_000 + i).to_string(), 1_000, 4_000_000_000)
            } else {
                token(
                    i,
                    &(i % 50_000).to_string(),
                    &format!("{i:032x}"),
                    4_000_000_000,
                )
            }
        };
        let start = rss_kib();
        let mut builder = SnapshotBuilder::default();
        for page in 0..1_000 {
            let entries: Vec<FeedEntry> = (page * 1_000..(page + 1) * 1_000).map(entry).collect();
            builder.add(&entries, 1_000, 30);
        }
        let set = builder.finish();
        assert_eq!(set.len(), 1_000_000);
        let held = rss_kib();
        let batch: Vec<FeedEntry> = (2_000_000..2_000_100).map(entry).collect();
        let next = set.with(&batch, 1_000, 30);
        let peak = rss_kib();
        assert_eq!(next.len(), 1_000_100);
        println!(
            "process VmRSS: {:.1} MiB before, {:.1} MiB with 1M entries ({:.0} B/entry), \
             {:.1} MiB while a 100-entry batch is applied",
            start as f64 / 1024.0,
            held as f64 / 1024.0,
            (held - start) as f64 * 1024.0 / 1e6,
            peak as f64 / 1024.0,
        );
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_jti_entry_100k() {
        measure_bytes_per_entry(100_000, true);
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_jti_entry_1m() {
        measure_bytes_per_entry(1_000_000, true);
    }

    #[test]
    #[ignore = "measurement: prints RSS per entry"]
    fn bytes_per_sub_entry_1m() {
        measure_bytes_per_entry(1_000_000, false);
    }
}
