//! HTTP from the client's side of Envoy: a client that never surprises (no proxy, no redirects,
//! no hang), bearer tokens on requests, a response read once into a [`Reply`] with the
//! assertions every suite shares, a [`flood`] for the rate limits, and a raw request for paths
//! an HTTP client would normalize.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::AUTHORIZATION;

use crate::ports::ENVOY_ADDR;

/// An HTTP client that never uses a proxy, never follows redirects and never hangs.
pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// True when `GET url` answers 2xx within 2 s (readiness probes).
pub fn http_ok(client: &Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// `Authorization: Bearer <token>` on a request.
pub trait Bearer {
    /// Adds the bearer token.
    fn bearer(self, token: &str) -> Self;
}

impl Bearer for RequestBuilder {
    fn bearer(self, token: &str) -> Self {
        self.header(AUTHORIZATION, format!("Bearer {token}"))
    }
}

/// Status, headers and body of a response, read once.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The whole body as text.
    pub text: String,
}

impl Reply {
    /// Sends `request` and reads the whole response.
    pub fn of(request: RequestBuilder) -> Self {
        let response = request.send().expect("request through Envoy");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        Self {
            status,
            headers,
            text,
        }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an ext-authz denial: `status`, the RFC 6750 challenge, and exactly the JSON body
    /// `{"error": error, "message": message}`; for `invalid_token` the challenge's
    /// `error_description` is `message` too (CONTRACT.md "Deny responses": the client is told the
    /// one reason, so a test must tell the reasons apart).
    #[track_caller]
    pub fn assert_denied(&self, status: u16, error: &str, message: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let challenge = self.header("www-authenticate");
        assert!(
            challenge.starts_with("Bearer realm=\""),
            "www-authenticate {challenge:?}"
        );
        if error == "missing_token" {
            // Why: RFC 6750 §3.1, no error code when the request had no authentication.
            assert!(
                !challenge.contains("error="),
                "www-authenticate {challenge:?} has an error code"
            );
        } else {
            let expected = format!("error=\"{error}\", error_description=\"{message}\"");
            assert!(
                challenge.contains(&expected),
                "www-authenticate {challenge:?} lacks {expected}"
            );
        }
        assert!(
            self.header("content-type").starts_with("application/json"),
            "content-type {:?}",
            self.header("content-type")
        );
        assert_eq!(
            self.json(),
            serde_json::json!({ "error": error, "message": message }),
            "{self:?}"
        );
    }

    /// Asserts an answer made by Envoy itself (issue #13): `status`, exactly the services' JSON
    /// shape `{"error": error, "message": <text>}` as `application/json`, a request id, and no
    /// `server: envoy` banner.
    #[track_caller]
    pub fn assert_edge_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type").starts_with("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"], error, "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
        assert!(!self.header("x-request-id").is_empty(), "{self:?}");
        assert!(self.headers.get("server").is_none(), "{self:?}");
    }

    /// Asserts Envoy's own 429 of a local rate limit: status, `Retry-After: 1`, exactly
    /// `{"error":"rate_limited","message":"too many requests; retry later"}` as JSON, no
    /// caching, a request id and no product banner (like every answer Envoy makes itself).
    #[track_caller]
    pub fn assert_edge_429(&self) {
        self.assert_edge_error(429, "rate_limited");
        assert_eq!(self.header("retry-after"), "1", "{self:?}");
        assert_eq!(self.header("cache-control"), "no-store", "{self:?}");
        assert_eq!(
            self.json(),
            serde_json::json!({"error": "rate_limited", "message": "too many requests; retry later"})
        );
    }

    /// The echo of demo-upstream: asserts 200 and returns the JSON.
    #[track_caller]
    pub fn echo(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.json()
    }
}

/// `clients` threads, each with its own [`client`] (so its own connections, all from one
/// address), sending `per_client` requests built by `request` back to back, all at once: a
/// flood for the rate limits. Every reply, in no particular order.
pub fn flood(
    clients: usize,
    per_client: usize,
    request: impl Fn(&Client) -> RequestBuilder + Sync,
) -> Vec<Reply> {
    let request = &request;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let client = client();
                    (0..per_client)
                        .map(|_| Reply::of(request(&client)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("flood worker"))
            .collect()
    })
}

/// Requests a token bucket of `burst`, refilled by `refill` a second, can have let through
/// since `start` (rounding the elapsed time up: an upper bound for "at most this many passed").
pub fn bucket_bound(burst: u64, refill: u64, start: Instant) -> u64 {
    burst + refill * (start.elapsed().as_secs() + 1)
}

/// Sends `GET <path>` to Envoy byte for byte (HTTP clients normalize `..` away before sending)
/// and returns the status code.
pub fn raw_get_status(path: &str, token: &str) -> u16 {
    let mut stream = TcpStream::connect(ENVOY_ADDR).expect("connect to Envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {ENVOY_ADDR}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"))
}
