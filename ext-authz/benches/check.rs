//! Benchmarks of the hot path: token verification, the pure decision, and the full
//! `CheckRequest` → `CheckResponse` conversion (without the network).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use auth_token::testing::check_request;
use auth_token::{Verifier, VerifierConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use ext_authz::keys::KeyStore;
use ext_authz::metrics::Metrics;
use ext_authz::service::AuthzService;
use ext_authz::{Policy, Settings, decide};

mod algs;
mod common;

/// [`common::headers`] as they arrive through Envoy.
fn headers(token: &str) -> HashMap<String, String> {
    let mut h = common::headers(token);
    h.insert("x-forwarded-proto".to_owned(), "https".to_owned());
    h
}

fn bench(c: &mut Criterion) {
    let ring = common::ring();
    let token = common::token(&ring, &["admin", "ops"], auth_token::now_unix());
    let verifier = Verifier::new(&VerifierConfig::default());
    let now = auth_token::now_unix();

    c.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), &ring, now).unwrap())
    });

    let settings = Settings {
        verifier: verifier.clone(),
        realm: "edge".into(),
        dry_run: false,
        token_cache: None,
    };
    let h = headers(&token);
    let roles = "admin";
    c.bench_function("decide_allow", |b| {
        b.iter(|| {
            decide(
                black_box(&h),
                &Policy::require_roles(roles),
                &ring,
                None,
                &settings,
                now,
            )
        })
    });
    let missing = headers("x.y.z");
    c.bench_function("decide_deny_malformed", |b| {
        b.iter(|| {
            decide(
                black_box(&missing),
                &Policy::NONE,
                &ring,
                None,
                &settings,
                now,
            )
        })
    });

    let service = AuthzService::new(
        Arc::new(KeyStore::new(common::ring())),
        settings,
        Arc::new(Metrics::new()),
        false,
    );
    let request = check_request(h.clone(), &[("require_roles", "admin")]);
    c.bench_function("check_request_allow", |b| {
        b.iter(|| service.check_request(black_box(&request)).unwrap())
    });

    // What the server does with a decoded request (issue #15 §1), the answer written out: by
    // hand (`answer::Allow::encode`), and through the generated message as before.
    let bytes = prost::Message::encode_to_vec(&request);
    let wire = ext_authz::wire::decode(bytes.as_slice()).unwrap();
    let mut out = Vec::with_capacity(512);
    c.bench_function("check_wire_allow_encoded", |b| {
        b.iter(|| {
            out.clear();
            service
                .check_wire(black_box(&wire))
                .unwrap()
                .encode(&mut out)
                .unwrap();
            black_box(out.len())
        })
    });
    c.bench_function("check_wire_allow_generated_encoded", |b| {
        b.iter(|| {
            out.clear();
            let response = service
                .check_wire(black_box(&wire))
                .unwrap()
                .into_response();
            prost::Message::encode(&response, &mut out).unwrap();
            black_box(out.len())
        })
    });
}

/// The token cache (issue #12): each algorithm without the cache, as a hit and as a miss.
fn bench_cache(c: &mut Criterion) {
    for name in algs::NAMES {
        let mut scenario = algs::Scenario::new(name).unwrap();
        c.bench_function(&format!("decide_{name}"), |b| {
            b.iter(|| black_box(scenario.run()))
        });
        algs::assert_measured(name, scenario.cache_counts());
        let mut service = scenario.into_service();
        c.bench_function(&format!("check_request_{name}"), |b| {
            b.iter(|| black_box(service.run()))
        });
        algs::assert_measured(name, service.cache_counts());
    }
}

criterion_group!(benches, bench, bench_cache);
criterion_main!(benches);
