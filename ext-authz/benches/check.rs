//! Benchmarks of the hot path: token verification, the pure decision, and the full
//! `CheckRequest` → `CheckResponse` conversion (without the network).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use auth_token::{Issuer, Key, Keyring, Verifier, VerifierConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use ext_authz::keys::KeyStore;
use ext_authz::metrics::Metrics;
use ext_authz::service::AuthzService;
use ext_authz::{Policy, Settings, decide};

const SECRET: &[u8] = b"benchmark-secret-0123456789abcdef0123";

fn token(ring: &Keyring) -> String {
    Issuer {
        ttl: Duration::from_secs(3600),
        issuer: None,
        audience: None,
    }
    .issue(
        ring.get(Some("k1")).unwrap(),
        "12345",
        "bench@example.com",
        &["admin".to_owned(), "ops".to_owned()],
        auth_token::now_unix(),
    )
    .unwrap()
    .token
}

fn headers(token: &str) -> HashMap<String, String> {
    let mut h: HashMap<String, String> = [
        (":authority", "edge.example.com"),
        (":method", "GET"),
        (":path", "/api/items?page=2"),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("user-agent", "bench/1.0"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "0b7d8f8e-5d1c-4f0e-9d55-3c2c6c2f2a11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    h.insert("authorization".to_owned(), format!("Bearer {token}"));
    h
}

fn bench(c: &mut Criterion) {
    let ring = Keyring::from_keys(vec![Key::new("k1", SECRET).unwrap()], None).unwrap();
    let token = token(&ring);
    let verifier = Verifier::new(&VerifierConfig::default());
    let now = auth_token::now_unix();

    c.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), &ring, now).unwrap())
    });

    let settings = Settings {
        verifier: verifier.clone(),
        realm: "edge".into(),
        dry_run: false,
    };
    let h = headers(&token);
    let roles = "admin";
    c.bench_function("decide_allow", |b| {
        b.iter(|| {
            decide(
                black_box(&h),
                &Policy::require_roles(roles),
                &ring,
                &settings,
                now,
            )
        })
    });
    let missing = headers("x.y.z");
    c.bench_function("decide_deny_malformed", |b| {
        b.iter(|| decide(black_box(&missing), &Policy::NONE, &ring, &settings, now))
    });

    let service = AuthzService::new(
        Arc::new(KeyStore::new(
            Keyring::from_keys(vec![Key::new("k1", SECRET).unwrap()], None).unwrap(),
        )),
        settings,
        Arc::new(Metrics::new()),
        false,
    );
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    headers: h.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([("require_roles".to_owned(), "admin".to_owned())]),
            ..Default::default()
        }),
    };
    c.bench_function("check_request_allow", |b| {
        b.iter(|| service.check_request(black_box(&request)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
