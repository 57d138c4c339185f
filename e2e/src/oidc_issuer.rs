//! The one test OIDC issuer of every test suite (ext-authz's `tests/it`, the e2e tests): an HTTP
//! server on 127.0.0.1 serving `/.well-known/openid-configuration` and `/jwks`, and signing
//! RS256, PS256, ES256 and EdDSA tokens with its keys.
//!
//! Keys: P-256 and Ed25519 keys are generated per kid (random seeds from v4 UUIDs); the RSA kids
//! share the fixed RSA-2048 key of `auth_token::test_keys`, because generating an RSA key in a
//! debug-build test takes seconds. Controls: publish, rotate and remove keys, tamper with a
//! published JWK (a mismatched `alg`), go down (503) and come back, serve an oversized JWKS,
//! redirect discovery to another host; counters of discovery, JWKS and all requests (a second
//! issuer is also a server nobody should ever call: `jku`/`x5u` targets, redirect targets).
//!
//! It runs on its own thread and Tokio runtime, so synchronous tests and `#[tokio::test]`s use
//! it alike; the server stops when the last clone is dropped. Behind the `oidc-issuer` feature:
//! it needs `auth_token::testing`, which a normal build of this library must not enable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use auth_token::Key;
use auth_token::test_keys::{RSA_PRIVATE_PKCS1_B64, RSA_PUBLIC_PEM};
use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// The audience of the issuer's tokens unless a test overrides `aud`.
pub const AUDIENCE: &str = "edge";

/// The signing algorithm of a kid (fixed by its key type, as at the verifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSA-2048 PKCS#1 v1.5 (the fixed test key).
    Rs256,
    /// RSA-2048 PSS (the fixed test key; its JWK says `alg: PS256`).
    Ps256,
    /// P-256, generated per kid.
    Es256,
    /// Ed25519, generated per kid.
    EdDsa,
}

impl Alg {
    /// Every algorithm an external issuer may use.
    pub const ALL: [Self; 4] = [Self::Rs256, Self::Ps256, Self::Es256, Self::EdDsa];

    /// The JOSE name (`alg` header).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Ps256 => Algorithm::PS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// One kid's key pair.
#[derive(Clone)]
struct IssuerKey {
    alg: Alg,
    signing: EncodingKey,
    public_pem: String,
    jwk: Value,
}

impl IssuerKey {
    fn generate(kid: &str, alg: Alg) -> Self {
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let (signing, public_pem) = match alg {
            Alg::Rs256 | Alg::Ps256 => (
                EncodingKey::from_rsa_der(&STANDARD.decode(RSA_PRIVATE_PKCS1_B64).expect("b64")),
                RSA_PUBLIC_PEM.to_owned(),
            ),
            Alg::Es256 => {
                use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
                let secret = p256::SecretKey::from_slice(&seed()).expect("a valid P-256 scalar");
                let der = secret.to_pkcs8_der().expect("encodable");
                let public = secret
                    .public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .expect("encodable");
                (EncodingKey::from_ec_der(der.as_bytes()), public)
            }
            Alg::EdDsa => {
                use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
                let secret = ed25519_dalek::SigningKey::from_bytes(&seed());
                let der = secret.to_pkcs8_der().expect("encodable");
                let public = secret
                    .verifying_key()
                    .to_public_key_pem(LineEnding::LF)
                    .expect("encodable");
                (EncodingKey::from_ed_der(der.as_bytes()), public)
            }
        };
        // The JWK exactly as auth-token publishes one (kty, crv/n/e/x, kid, alg, use sig).
        let key = Key::public_pem(kid, public_pem.as_bytes()).expect("a valid public key");
        let mut jwk = serde_json::to_value(key.public_jwk().expect("a public key has a JWK"))
            .expect("serializable");
        jwk["alg"] = alg.name().into();
        Self {
            alg,
            signing,
            public_pem,
            jwk,
        }
    }
}

/// 32 random bytes (two v4 UUIDs; 12 of their bits are fixed, which a test key can afford).
fn seed() -> [u8; 32] {
    [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat()
    .try_into()
    .expect("two uuids are 32 bytes")
}

#[derive(Default)]
struct State {
    /// Every kid ever created (a removed kid can still sign: a token of a key the issuer dropped).
    keys: HashMap<String, IssuerKey>,
    /// The kids in the JWKS, in order.
    published: Vec<String>,
    down: bool,
    cache_control: String,
    oversized: Option<usize>,
    discovery_redirect: Option<String>,
    discovery_fetches: usize,
    jwks_fetches: usize,
    requests: usize,
}

/// Stops the server thread when the last [`TestIssuer`] clone goes.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running test issuer (cheap to clone; the server stops with the last clone).
#[derive(Clone)]
pub struct TestIssuer {
    /// Its issuer URL, `http://127.0.0.1:PORT` (the `iss` of its tokens).
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Arc<Server>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("url", &self.url)
            .finish()
    }
}

impl TestIssuer {
    /// Starts serving on a free port of 127.0.0.1, publishing `kids` (keys made for them).
    pub fn start(kids: &[(&str, Alg)]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("local addr").port()
        );
        let state = Arc::new(Mutex::new(State {
            cache_control: "max-age=3600".into(),
            ..State::default()
        }));
        let app = Router::new()
            .fallback(handle)
            .with_state((Arc::clone(&state), url.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("oidc-issuer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    // Why not a graceful shutdown: a verifier's keep-alive connection would
                    // hold it open; dropping the runtime closes every connection.
                    tokio::select! {
                        served = axum::serve(listener, app) => served.expect("issuer serves"),
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the issuer thread");
        let issuer = Self {
            url,
            state,
            _server: Arc::new(Server {
                stop: Some(stop),
                thread: Some(thread),
            }),
        };
        issuer.publish(kids);
        issuer
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes exactly `kids` from now on (a rotation, or a removal). A kid seen before keeps
    /// its key when its algorithm is the same; a new kid gets a new key.
    pub fn publish(&self, kids: &[(&str, Alg)]) {
        let mut st = self.state();
        st.published.clear();
        for (kid, alg) in kids {
            if st.keys.get(*kid).is_none_or(|k| k.alg != *alg) {
                st.keys
                    .insert((*kid).to_owned(), IssuerKey::generate(kid, *alg));
            }
            st.published.push((*kid).to_owned());
        }
    }

    /// Rotation: a new key `kid` published beside the current ones.
    pub fn add_key(&self, kid: &str, alg: Alg) {
        let mut st = self.state();
        st.keys
            .insert(kid.to_owned(), IssuerKey::generate(kid, alg));
        st.published.retain(|k| k != kid);
        st.published.push(kid.to_owned());
    }

    /// Drops `kid` from the JWKS (the issuer can still sign with it: a stale or stolen key).
    pub fn remove_key(&self, kid: &str) {
        self.state().published.retain(|k| k != kid);
    }

    /// Sets member `name` of `kid`'s published JWK to `value` (e.g. a mismatched `alg`).
    pub fn set_jwk_member(&self, kid: &str, name: &str, value: Value) {
        let mut st = self.state();
        let key = st.keys.get_mut(kid).expect("a known kid");
        key.jwk[name] = value;
    }

    /// Answers 503 to every request while `down`.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// The JWKS response's `Cache-Control` (default `max-age=3600`).
    pub fn set_cache_control(&self, value: &str) {
        self.state().cache_control = value.to_owned();
    }

    /// While `Some(bytes)`, the JWKS response is the current set padded with whitespace to that
    /// many bytes (valid JSON, only too large).
    pub fn serve_oversized_jwks(&self, bytes: Option<usize>) {
        self.state().oversized = bytes;
    }

    /// While `Some(url)`, discovery answers `302 Location: url` (e.g. another host's document).
    pub fn redirect_discovery(&self, url: Option<String>) {
        self.state().discovery_redirect = url;
    }

    /// Discovery requests served so far (including 503s and redirects).
    pub fn discovery_fetches(&self) -> usize {
        self.state().discovery_fetches
    }

    /// JWKS requests served so far (including 503s).
    pub fn jwks_fetches(&self) -> usize {
        self.state().jwks_fetches
    }

    /// Every request received so far, on any path.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// The SPKI PEM of `kid`'s public key (what an attacker can fetch and misuse).
    pub fn public_pem(&self, kid: &str) -> String {
        self.state().keys[kid].public_pem.clone()
    }

    /// `kid`'s public JWK as published (unless tampered with since).
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.state().keys[kid].jwk.clone()
    }

    /// The default claims of this issuer's tokens for `sub` `u-1` (`iss`, `aud` [`AUDIENCE`],
    /// `email`, `iat`, `exp` in 5 minutes), `extra` merged over them (a `null` removes one).
    pub fn claims(&self, extra: &Value) -> Value {
        let now = auth_token::now_unix();
        let mut claims = json!({
            "iss": self.url, "sub": "u-1", "aud": AUDIENCE, "email": "u@issuer.test",
            "iat": now, "exp": now + 300,
        });
        for (k, v) in extra.as_object().expect("extra claims are an object") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// A token of this issuer signed by `kid`'s key: the default claims with `extra` merged
    /// (see [`TestIssuer::claims`]).
    pub fn token(&self, kid: &str, extra: Value) -> String {
        self.sign(kid, &json!({}), &self.claims(&extra))
    }

    /// `claims` signed by `kid`'s key, under the header `{"alg", "typ": "JWT", "kid"}` with
    /// `header_extra` merged over it (`jku`, `x5u`, another `kid`...).
    pub fn sign(&self, kid: &str, header_extra: &Value, claims: &Value) -> String {
        let key = self.state().keys[kid].clone();
        let mut header = json!({"alg": key.alg.name(), "typ": "JWT", "kid": kid});
        for (k, v) in header_extra
            .as_object()
            .expect("header members are an object")
        {
            header[k] = v.clone();
        }
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"));
        let input = format!("{}.{}", b64(&header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.signing, key.alg.jwt())
            .expect("signable");
        format!("{input}.{sig}")
    }
}

/// Every request: counted, then discovery, JWKS, or 404.
async fn handle(
    AxumState((state, url)): AxumState<(Arc<Mutex<State>>, String)>,
    uri: Uri,
) -> Response {
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    st.requests += 1;
    let path = uri.path();
    let discovery = path == "/.well-known/openid-configuration";
    let jwks = path == "/jwks";
    if discovery {
        st.discovery_fetches += 1;
    }
    if jwks {
        st.jwks_fetches += 1;
    }
    if st.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if discovery {
        if let Some(to) = &st.discovery_redirect {
            return (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response();
        }
        return axum::Json(json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}))
            .into_response();
    }
    if jwks {
        let keys: Vec<&Value> = st.published.iter().map(|kid| &st.keys[kid].jwk).collect();
        let mut body = json!({ "keys": keys }).to_string();
        if let Some(bytes) = st.oversized {
            body.push_str(&" ".repeat(bytes.saturating_sub(body.len())));
        }
        return (
            [
                (header::CACHE_CONTROL, st.cache_control.clone()),
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ],
            body,
        )
            .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}
