//! The revoked tokens known at one point, as a pure data structure: no I/O, no clock, no lock.
//!
//! [`RevocationSet`] is immutable once built: `jti → exp` for single tokens, `sub → cut` for
//! user-wide revocations (every token of that user with `iat <= cut`). A check does at most two
//! hash lookups ([`RevocationSet::is_revoked`]). A batch from the feed builds a new set
//! ([`RevocationSet::with`]: copy + insert + drop expired) that `revocation::Revocations` swaps in;
//! batches are rare (a logout, a password change), so copying beats a concurrent map on the
//! read side, which is the one that must stay flat (`benches/revocation.rs` measures both: the
//! check with 100k revocations, and rebuilding a 100k set).
//!
//! Entries are dropped once they cannot matter: `expires_at` plus the verifier's leeway has
//! passed (after that the verifier refuses the token by itself). The set is therefore bounded by
//! the revocations in force, and login-service bounds those per user (`MAX_REVOKED_PER_USER` +
//! 1). Measured: ≈ 100 B resident per entry, ≈ 200 B while a batch is applied (old and new set
//! both alive); `tests::bytes_per_*` reproduce it.

use std::collections::HashMap;

use auth_token::{Claims, FeedEntry};

/// A user-wide revocation: tokens with `iat <= cut` are revoked until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserCut {
    cut: u64,
    expires_at: u64,
}

/// The revoked tokens known at one point: immutable, replaced whole.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    tokens: HashMap<Box<str>, u64>,
    users: HashMap<Box<str>, UserCut>,
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl RevocationSet {
    /// True when `claims` (a token that verified) is revoked: its `jti` is listed, or its user
    /// has a cut at or after its `iat`.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        if !self.users.is_empty()
            && let Some(user) = self.users.get(claims.sub.as_str())
            && claims.iat <= user.cut
        {
            return true;
        }
        !self.tokens.is_empty() && self.tokens.contains_key(claims.jti.as_str())
    }

    /// Entries held (tokens + users).
    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entries`, skipping those already expired at `now` (with `leeway` seconds).
    pub fn insert(&mut self, entries: &[FeedEntry], now: u64, leeway: u64) {
        for e in entries {
            let expires_at = unsigned(e.expires_at);
            if expires_at.saturating_add(leeway) < now {
                continue;
            }
            match &e.jti {
                Some(jti) => {
                    let exp = self.tokens.entry(jti.as_str().into()).or_insert(0);
                    *exp = (*exp).max(expires_at);
                }
                None => {
                    let cut = unsigned(e.revoked_at);
                    let user = self
                        .users
                        .entry(e.sub.as_str().into())
                        .or_insert(UserCut { cut, expires_at });
                    user.cut = user.cut.max(cut);
                    user.expires_at = user.expires_at.max(expires_at);
                }
            }
        }
    }

    /// A copy with `entries` added and expired entries dropped.
    pub fn with(&self, entries: &[FeedEntry], now: u64, leeway: u64) -> Self {
        let mut next = self.clone();
        next.prune(now, leeway);
        next.insert(entries, now, leeway);
        next
    }

    /// True when some entry expired (so [`RevocationSet::prune`] would drop something).
    pub fn has_expired(&self, now: u64, leeway: u64) -> bool {
        let gone = |exp: u64| exp.saturating_add(leeway) < now;
        self.tokens.values().any(|&e| gone(e)) || self.users.values().any(|u| gone(u.expires_at))
    }

    /// Drops entries whose `expires_at + leeway` is before `now`.
    pub fn prune(&mut self, now: u64, leeway: u64) {
        let keep = |exp: u64| exp.saturating_add(leeway) >= now;
        self.tokens.retain(|_, &mut e| keep(e));
        self.users.retain(|_, u| keep(u.expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let next = set.with(&[], 10_531, 30);
        assert_eq!(next.len(), 1);
        assert!(next.is_revoked(&claims("x", "live", 1)));
        // Bounded: after every expiry, nothing is left however many entries went in.
        let many: Vec<FeedEntry> = (0..10_000)
            .map(|i| token(i, "7", &format!("j{i}"), 11_000))
            .collect();
        let big = next.with(&many, now, 30);
        assert_eq!(big.len(), 10_001);
        assert_eq!(big.with(&[], 21_000, 30).len(), 0);
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
        let copy = set.with(&[], 1_000, 30);
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
