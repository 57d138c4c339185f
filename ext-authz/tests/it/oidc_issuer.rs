//! A test OIDC issuer: discovery + JWKS over HTTP on 127.0.0.1, signing RS256/ES256 tokens
//! with `auth_token::test_keys` (fixed keys: generating RSA in a debug test takes seconds). It
//! can publish any set of kids (rotation), answer 503 (down), and counts JWKS fetches.
//! Written to move into the e2e library (`e2e/src/oidc_issuer.rs`) once that exists.

use std::sync::{Arc, Mutex};

use auth_token::Key;
use auth_token::test_keys::{
    EC_PRIVATE_PKCS8_B64, EC_PUBLIC_PEM, RSA_PRIVATE_PKCS1_B64, RSA_PUBLIC_PEM,
};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// The key type behind a published kid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// The RSA-2048 test key.
    Rs256,
    /// The P-256 test key.
    Es256,
}

#[derive(Debug, Default)]
struct State {
    jwks: Vec<Value>,
    down: bool,
    cache_control: String,
    jwks_fetches: usize,
}

/// A running test issuer; stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    /// Its issuer URL (`iss` of its tokens).
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl TestIssuer {
    /// Starts serving, publishing `kids`.
    pub async fn start(kids: &[(&str, Alg)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State {
            cache_control: "max-age=3600".into(),
            ..State::default()
        }));
        let issuer = Self {
            url: url.clone(),
            state,
        };
        issuer.publish(kids);
        let (s1, s2) = (Arc::clone(&issuer.state), Arc::clone(&issuer.state));
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let (down, url) = (s1.lock().unwrap().down, url.clone());
                    async move {
                        if down {
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        axum::Json(json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}))
                            .into_response()
                    }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let mut st = s2.lock().unwrap();
                    st.jwks_fetches += 1;
                    let answer = if st.down {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        (
                            [(header::CACHE_CONTROL, st.cache_control.clone())],
                            axum::Json(json!({"keys": st.jwks})),
                        )
                            .into_response()
                    };
                    async move { answer }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        issuer
    }

    /// Publishes exactly `kids` from now on (a rotation, or a removal).
    pub fn publish(&self, kids: &[(&str, Alg)]) {
        let jwks = kids
            .iter()
            .map(|(kid, alg)| {
                let pem = match alg {
                    Alg::Rs256 => RSA_PUBLIC_PEM,
                    Alg::Es256 => EC_PUBLIC_PEM,
                };
                let key = Key::public_pem(kid, pem.as_bytes()).unwrap();
                serde_json::to_value(key.public_jwk().unwrap()).unwrap()
            })
            .collect();
        self.state.lock().unwrap().jwks = jwks;
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// JWKS requests served so far (including 503s).
    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// A token of this issuer for `sub`, signed with the key behind `alg` under header `kid`;
    /// `extra` claims override the defaults (`iss`, `sub`, `aud: edge`, `exp` in 5 minutes).
    pub fn token(&self, alg: Alg, kid: &str, extra: Value) -> String {
        let now = auth_token::now_unix();
        let mut claims = json!({
            "iss": self.url, "sub": "u-1", "aud": "edge", "email": "u@issuer.test",
            "groups": ["admin"], "iat": now, "exp": now + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sign(alg, kid, &claims)
    }
}

/// Signs `claims` with the test key of `alg`.
pub fn sign(alg: Alg, kid: &str, claims: &Value) -> String {
    let (name, key, jwt_alg) = match alg {
        Alg::Rs256 => (
            "RS256",
            jsonwebtoken::EncodingKey::from_rsa_der(
                &STANDARD.decode(RSA_PRIVATE_PKCS1_B64).unwrap(),
            ),
            jsonwebtoken::Algorithm::RS256,
        ),
        Alg::Es256 => (
            "ES256",
            jsonwebtoken::EncodingKey::from_ec_der(&STANDARD.decode(EC_PRIVATE_PKCS8_B64).unwrap()),
            jsonwebtoken::Algorithm::ES256,
        ),
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": name, "typ": "JWT", "kid": kid})),
        b64(claims)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jwt_alg).unwrap();
    format!("{input}.{sig}")
}
