//! The token-cache scenarios (issue #12, "Speed"): one decision over a token of each algorithm
//! (HS256, EdDSA, RS256), without the cache, as a cache hit, and as a cache miss. Shared by the
//! criterion bench (`check`) and the instruction-count bench (`instructions`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::common::headers;
use std::time::Duration;

use auth_token::{Key, Keyring, Verifier, VerifierConfig};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use ext_authz::check::Decision;
use ext_authz::keys::KeyStore;
use ext_authz::metrics::Metrics;
use ext_authz::service::AuthzService;
use ext_authz::token_cache::{DEFAULT_BYTES, TokenCache};
use ext_authz::{Policy, Settings, decide};

const SECRET: &[u8] = b"benchmark-secret-0123456789abcdef0123";

/// Every scenario name, in report order.
pub const NAMES: [&str; 8] = [
    "hs256_nocache",
    "hs256_hit",
    "eddsa_nocache",
    "eddsa_hit",
    "eddsa_miss",
    "rs256_nocache",
    "rs256_hit",
    "rs256_miss",
];

/// Fails a run that did not measure what scenario `name` claims: a `_hit` scenario must hit
/// (after its one warm-up miss), a `_miss` one must (almost) never hit.
pub fn assert_measured(name: &str, (hits, misses): (u64, u64)) {
    if name.ends_with("_hit") {
        assert!(
            hits > 0 && misses <= 1,
            "{name}: {hits} hits, {misses} misses"
        );
    } else if name.ends_with("_miss") {
        assert!(hits * 20 <= misses, "{name}: {hits} hits, {misses} misses");
    } else {
        assert_eq!((hits, misses), (0, 0), "{name}");
    }
}

/// Tokens cycled through by a `_miss` scenario (more than its tiny cache holds).
const MISS_TOKENS: usize = 64;

/// One prepared scenario: call [`Scenario::run`] once per check.
pub struct Scenario {
    ring: Keyring,
    settings: Settings,
    requests: Vec<HashMap<String, String>>,
    next: usize,
}

impl Scenario {
    /// Builds scenario `name` (one of [`NAMES`]); `None` for an unknown name.
    pub fn new(name: &str) -> Option<Self> {
        let (alg, mode) = name.split_once('_')?;
        let (ring, signer): (Keyring, Box<dyn Fn() -> String>) = match alg {
            "hs256" => {
                let key = Key::new("k1", SECRET).unwrap();
                let ring = Keyring::from_keys(vec![Key::new("k1", SECRET).unwrap()], None).unwrap();
                (ring, Box::new(move || mint(&key)))
            }
            "eddsa" => {
                let (private, public) = auth_token::testing::ed25519_pem_pair();
                let key = Key::ed25519_private_pem("ed1", private.as_bytes()).unwrap();
                let public = Key::public_pem("ed1", public.as_bytes()).unwrap();
                let ring = Keyring::from_keys(vec![public], None).unwrap();
                (ring, Box::new(move || mint(&key)))
            }
            "rs256" => {
                let public =
                    Key::public_pem("rs1", auth_token::test_keys::RSA_PUBLIC_PEM.as_bytes())
                        .unwrap();
                let ring = Keyring::from_keys(vec![public], None).unwrap();
                (ring, Box::new(rs256_token))
            }
            _ => return None,
        };
        let cache = |bytes| TokenCache::new(bytes, Arc::default()).map(Arc::new);
        let (token_cache, tokens) = match mode {
            "nocache" => (None, 1),
            "hit" => (cache(DEFAULT_BYTES), 1),
            // Room for one entry (~470 bytes): cycling through MISS_TOKENS always misses.
            "miss" => (cache(600), MISS_TOKENS),
            _ => return None,
        };
        let requests = (0..tokens).map(|_| headers(&signer())).collect();
        let mut scenario = Self {
            ring,
            settings: Settings {
                verifier: Verifier::new(&VerifierConfig::default()),
                realm: "edge".into(),
                dry_run: false,
                token_cache,
            },
            requests,
            next: 0,
        };
        // A hit scenario starts warm; every scenario must allow.
        assert!(matches!(scenario.run(), Decision::Allow { .. }), "{name}");
        Some(scenario)
    }

    /// The same checks through the gRPC service's synchronous core
    /// ([`AuthzService::check_request`]: `CheckRequest` in, `CheckResponse` with metrics and
    /// the decision metadata out), as Envoy's calls arrive, minus the network.
    pub fn into_service(self) -> ServiceScenario {
        let requests = self
            .requests
            .into_iter()
            .map(|h| auth_token::testing::check_request(h, &[("require_roles", "admin")]))
            .collect();
        let cache = self.settings.token_cache.clone();
        let service = AuthzService::new(
            Arc::new(KeyStore::new(self.ring)),
            self.settings,
            Arc::new(Metrics::new()),
            false,
        );
        ServiceScenario {
            service,
            requests,
            next: 0,
            cache,
        }
    }

    /// Cache hits and misses so far (0, 0 without the cache).
    pub fn cache_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.settings.token_cache.as_ref().map_or((0, 0), |c| {
            (c.stats().hits.load(Relaxed), c.stats().misses.load(Relaxed))
        })
    }

    /// One decision (the route requires `admin`, as in the other benches).
    pub fn run(&mut self) -> Decision {
        let headers = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        decide(
            headers,
            &Policy::require_roles("admin"),
            &self.ring,
            None,
            &self.settings,
            auth_token::now_unix(),
        )
    }
}

/// A [`Scenario`] through the service.
pub struct ServiceScenario {
    service: AuthzService,
    requests: Vec<CheckRequest>,
    next: usize,
    cache: Option<Arc<TokenCache>>,
}

impl ServiceScenario {
    /// One check; true when allowed.
    pub fn run(&mut self) -> bool {
        let request = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        let response = self.service.check_request(request).unwrap();
        response.status.is_some_and(|s| s.code == 0)
    }

    /// Cache hits and misses so far (0, 0 without the cache).
    pub fn cache_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.cache.as_ref().map_or((0, 0), |c| {
            (c.stats().hits.load(Relaxed), c.stats().misses.load(Relaxed))
        })
    }
}

fn mint(key: &Key) -> String {
    auth_token::testing::mint(
        key,
        "12345",
        "bench@example.com",
        &["admin", "ops"],
        auth_token::now_unix(),
        Duration::from_secs(3600),
    )
}

/// An RS256 token with our claims (login-service does not sign RS256; an operator's own
/// issuer could), signed with the fixed RSA-2048 test key; a fresh `jti` each call.
fn rs256_token() -> String {
    let now = auth_token::now_unix();
    auth_token::testing::sign_with_test_key(
        &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "rs1"}),
        &serde_json::json!({
            "sub": "12345", "email": "bench@example.com", "roles": ["admin", "ops"],
            "iat": now, "nbf": now, "exp": now + 3600,
            "jti": format!("{:032x}", rand_u128()),
        }),
    )
}

/// A distinct value per call (the `jti`), without another dependency.
fn rand_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    t ^ u128::from(N.fetch_add(1, Ordering::Relaxed)) << 64
}
