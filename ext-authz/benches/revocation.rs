//! The cost of revocation checks on the hot path: the full `CheckRequest` → `CheckResponse`
//! conversion and the pure decision, without revocations and with 100k active revocations
//! (90k tokens + 10k user-wide cuts, none matching the token), plus the cost of applying a feed
//! batch (what a logout costs each replica, off the hot path). Issue #15 §2: the same at
//! 1,000,000 entries (`*_1m`): the lookup, the check, and a 100-entry batch.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use auth_token::FeedEntry;
use auth_token::testing::check_request;
use auth_token::{Verifier, VerifierConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use ext_authz::keys::KeyStore;
use ext_authz::metrics::Metrics;
use ext_authz::revocation::Revocations;
use ext_authz::revoked::RevocationSet;
use ext_authz::service::AuthzService;
use ext_authz::{Policy, Settings, decide};

const ENTRIES: i64 = 100_000;

mod common;

fn request(token: &str) -> CheckRequest {
    check_request(common::headers(token), &[("require_roles", "admin")])
}

/// 90% single tokens (uuid-like jtis), 10% user-wide cuts, all live for an hour.
fn entries(now: i64) -> Vec<FeedEntry> {
    entries_n(now, ENTRIES)
}

/// [`entries`] with `n` entries.
fn entries_n(now: i64, n: i64) -> Vec<FeedEntry> {
    (0..n)
        .map(|i| FeedEntry {
            id: i + 1,
            sub: format!("{}", 1_000_000 + i),
            jti: (i % 10 != 0).then(|| format!("{:032x}", 0x5eed_u128 * 1_000_003 + i as u128)),
            revoked_at: now,
            expires_at: now + 3600,
            reason: String::new(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ring = common::ring();
    let now = auth_token::now_unix();
    let now_i = i64::try_from(now).unwrap();
    let token = common::token(&ring, &["admin"], now);
    let settings = Settings {
        verifier: Verifier::new(&VerifierConfig::default()),
        realm: "edge".into(),
        dry_run: false,
        token_cache: None,
    };
    let all = entries(now_i);
    let mut set = RevocationSet::default();
    set.insert(&all, now, 30);
    assert_eq!(set.len(), usize::try_from(ENTRIES).unwrap());

    // The pure decision.
    let req = request(&token);
    let headers = &req
        .attributes
        .as_ref()
        .unwrap()
        .request
        .as_ref()
        .unwrap()
        .http
        .as_ref()
        .unwrap()
        .headers;
    let policy = Policy::require_roles("admin");
    c.bench_function("decide_allow_no_revocations", |b| {
        b.iter(|| decide(black_box(headers), &policy, &ring, None, &settings, now))
    });
    c.bench_function("decide_allow_100k_revocations", |b| {
        b.iter(|| {
            decide(
                black_box(headers),
                &policy,
                &ring,
                Some(&set),
                &settings,
                now,
            )
        })
    });

    // The whole check, as the gRPC handler runs it.
    let plain = AuthzService::new(
        Arc::new(KeyStore::new(common::ring())),
        settings.clone(),
        Arc::new(Metrics::new()),
        false,
    );
    let revocations = Arc::new(Revocations::new(Duration::from_secs(30), false, 30));
    revocations.store(set.clone());
    revocations.mark_synced();
    let with = AuthzService::new(
        Arc::new(KeyStore::new(common::ring())),
        settings.clone(),
        Arc::new(Metrics::new()),
        false,
    )
    .with_revocations(Arc::clone(&revocations));
    assert!(with.check_request(&req).is_ok());
    c.bench_function("check_request_allow_no_revocations", |b| {
        b.iter(|| plain.check_request(black_box(&req)).unwrap())
    });
    c.bench_function("check_request_allow_100k_revocations", |b| {
        b.iter(|| with.check_request(black_box(&req)).unwrap())
    });

    // The added work in isolation: one ArcSwap load plus the two lookups of a miss.
    let claims = settings.verifier.verify(&token, &ring, now).unwrap();
    c.bench_function("revocation_lookup_100k", |b| {
        b.iter(|| revocations.load().is_revoked(black_box(&claims)))
    });

    // Off the hot path: one feed batch (one logout) against a 100k set.
    let one = [FeedEntry {
        id: ENTRIES + 1,
        sub: "42".into(),
        jti: Some("ffffffffffffffffffffffffffffffff".into()),
        revoked_at: now_i,
        expires_at: now_i + 3600,
        reason: String::new(),
    }];
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(20);
    group.bench_function("rebuild_100k_plus_one", |b| {
        b.iter(|| black_box(set.with(&one, now, 30)).len())
    });
    group.finish();

    // Issue #15 §2: a batch of 100 new entries (a feed page during a logout wave) applied to
    // 100k and 1M sets, and the check's lookup at 1M.
    let batch: Vec<FeedEntry> = (0..100)
        .map(|i| FeedEntry {
            id: 10_000_000 + i,
            sub: format!("{}", 9_000_000 + i),
            jti: (i % 10 != 0).then(|| format!("{:032x}", 0xbeef_u128 * 1_000_003 + i as u128)),
            revoked_at: now_i,
            expires_at: now_i + 3600,
            reason: String::new(),
        })
        .collect();
    let mut big = RevocationSet::default();
    big.insert(&entries_n(now_i, 1_000_000), now, 30);
    assert_eq!(big.len(), 1_000_000);
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    group.bench_function("apply_100_to_100k", |b| {
        b.iter(|| black_box(set.with(&batch, now, 30)).len())
    });
    group.bench_function("apply_100_to_1m", |b| {
        b.iter(|| black_box(big.with(&batch, now, 30)).len())
    });
    group.finish();
    let empty = Revocations::new(Duration::from_secs(30), false, 30);
    empty.mark_synced();
    c.bench_function("revocation_lookup_0", |b| {
        b.iter(|| empty.load().is_revoked(black_box(&claims)))
    });
    revocations.store(big);
    c.bench_function("revocation_lookup_1m", |b| {
        b.iter(|| revocations.load().is_revoked(black_box(&claims)))
    });
    c.bench_function("check_request_allow_1m_revocations", |b| {
        b.iter(|| with.check_request(black_box(&req)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
