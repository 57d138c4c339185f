//! The HTTP client of issuers' discovery documents and JWKS (layer 3: I/O, never on the check
//! path). Every response is bounded in time ([`FetchLimits::timeout`]) and bytes
//! ([`FetchLimits::max_bytes`], counted while reading, whatever `Content-Length` says); a
//! redirect is followed only to the same scheme, host and port (at most 3), so a compromised or
//! misconfigured issuer cannot point the gateway at another host; a discovery document must name
//! exactly the issuer it was fetched for (OpenID Connect Discovery §4.3), and its `jwks_uri`
//! must be `https` (or `http` on a loopback host). Keys from a token header (`jku`, `x5u`) are
//! never fetched: this module is only ever given configured URLs and discovered `jwks_uri`s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::external::{JwksSource, keys_from_jwks};
use crate::health::{keys_changed, report_health};
use crate::issuers::{IssuerSettings, is_loopback};
use crate::jwks::JwksStore;
use crate::jwks_refresh::{KidThrottle, RefreshBounds, next_refresh, retry_after};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// Default bound on one discovery or JWKS response body.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;

/// Most keys kept from one JWKS; a larger set is refused whole (bounded memory per issuer).
pub const MAX_KEYS: usize = 64;

/// Most redirects followed (same origin only).
const MAX_REDIRECTS: usize = 3;

/// Bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Connect + request + body, end to end.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why a discovery or JWKS fetch failed. Messages name URLs and statuses, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be fetched under the rules (scheme, host).
    #[error("refused URL {0}: need https (http only for loopback hosts)")]
    Url(String),
    /// A redirect to another origin, or too many redirects.
    #[error("refused redirect from {0}: only same-host redirects are followed")]
    Redirect(String),
    /// Connection, TLS or timeout.
    #[error("request to {url} failed: {message}")]
    Transport {
        /// The URL asked.
        url: String,
        /// reqwest's description.
        message: String,
    },
    /// A non-2xx answer.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeded [`FetchLimits::max_bytes`].
    #[error("{url}: response larger than {limit} bytes")]
    TooLarge {
        /// The URL asked.
        url: String,
        /// The bound.
        limit: usize,
    },
    /// Not the JSON document expected.
    #[error("{url}: invalid document: {message}")]
    Document {
        /// The URL asked.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// A JWKS as fetched: the keys (JWK JSON objects, at most [`MAX_KEYS`]) and the response's
/// `Cache-Control`, which schedules the next refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedJwks {
    /// The `keys` array's members.
    pub keys: Vec<Value>,
    /// The `Cache-Control` header, when present and ASCII.
    pub cache_control: Option<String>,
}

/// The client: one connection pool for every issuer.
#[derive(Debug, Clone)]
pub struct JwksClient {
    http: reqwest::Client,
    limits: FetchLimits,
}

impl JwksClient {
    /// A client with `limits`; https trusts the system store only.
    pub fn new(limits: FetchLimits) -> Result<Self, FetchError> {
        Self::with_ca(limits, None)
    }

    /// A client with `limits`; https trusts the system store (rustls-native-certs: the
    /// image's CA bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR` when set) plus every certificate of
    /// the PEM bundle `ca_pem` (`--issuer-ca-file`: an in-house CA). Certificate and host
    /// name are always verified; there is no switch to turn that off.
    pub fn with_ca(limits: FetchLimits, ca_pem: Option<&[u8]>) -> Result<Self, FetchError> {
        let build_error = |message: String| FetchError::Transport {
            url: String::new(),
            message,
        };
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(pem) = ca_pem {
            for cert in parse_ca_bundle(pem).map_err(build_error)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
            .user_agent(concat!("ext-authz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self { http, limits })
    }

    /// Discovers `issuer`'s `jwks_uri` from `ISSUER/.well-known/openid-configuration`.
    pub async fn discover(&self, issuer: &IssuerSettings) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = issuer.discovery_url();
        let (body, _) = self.get(&url, true).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|e| FetchError::Document {
            url: url.clone(),
            message: e.to_string(),
        })?;
        // Why: OpenID Connect Discovery §4.3 — the document must name the issuer it was
        // fetched for, or one issuer could vouch keys for another.
        if doc.issuer != issuer.issuer {
            return Err(FetchError::Document {
                url,
                message: format!("issuer {:?} is not the configured one", doc.issuer),
            });
        }
        check_url(&doc.jwks_uri, true)?;
        Ok(doc.jwks_uri)
    }

    /// Fetches the JWKS at `url`. `strict`: `http` only on loopback (discovered URLs);
    /// otherwise `http` is allowed (an explicit `--jwks-url`, warned about at startup).
    pub async fn jwks(&self, url: &str, strict: bool) -> Result<FetchedJwks, FetchError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let (body, cache_control) = self.get(url, strict).await?;
        let doc = |message: String| FetchError::Document {
            url: url.to_owned(),
            message,
        };
        let set: Set = serde_json::from_slice(&body).map_err(|e| doc(e.to_string()))?;
        if set.keys.len() > MAX_KEYS {
            return Err(doc(format!("more than {MAX_KEYS} keys")));
        }
        Ok(FetchedJwks {
            keys: set.keys,
            cache_control,
        })
    }

    /// GET with the bounds; returns the body and `Cache-Control`.
    async fn get(&self, url: &str, strict: bool) -> Result<(Vec<u8>, Option<String>), FetchError> {
        check_url(url, strict)?;
        let transport = |e: reqwest::Error| {
            if e.is_redirect() {
                FetchError::Redirect(url.to_owned())
            } else {
                FetchError::Transport {
                    url: url.to_owned(),
                    message: error_chain(&e),
                }
            }
        };
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit: self.limits.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.limits.max_bytes as u64)
        {
            return Err(too_large());
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        // Why chunk by chunk: Content-Length may be absent (chunked) or lie.
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.limits.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, cache_control))
    }
}

/// The certificates of a PEM bundle (`--issuer-ca-file`): at least one, all parsable.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("not a PEM certificate bundle: {}", error_chain(&e)))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM bundle".to_owned());
    }
    Ok(certs)
}

/// How the refresh tasks schedule fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshConfig {
    /// `--jwks-refresh-min` / `--jwks-refresh-max`: the `Cache-Control` clamp and the back-off.
    pub bounds: RefreshBounds,
    /// `--jwks-unknown-kid-interval`: at most one early fetch per issuer per this.
    pub unknown_kid_interval: Duration,
}

/// Keeps slot `slot`'s keys in `store` until `shutdown` (an external issuer: discovery + JWKS;
/// an own `--jwks-url`: that JWKS): a fetch at once, then again after the response's `max-age`
/// (clamped to the bounds), sooner after a failure (back-off from the minimum) or when a check
/// met an unknown kid (throttled, and only when the keys that refused it are still in use,
/// [`JwksStore::take_request`]). A failed fetch keeps the last good keys (counted, and logged
/// once per distinct error); a successful one replaces them whole, so a key removed from the
/// JWKS stops verifying. `files`: for an own JWKS, the `--keys-dir` ring, to log kids both
/// hold with different keys (refused). Cannot fail.
pub async fn follow_slot(
    slot: usize,
    store: Arc<JwksStore>,
    client: JwksClient,
    metrics: Arc<Metrics>,
    config: RefreshConfig,
    files: Option<Arc<KeyStore>>,
    mut shutdown: ShutdownSignal,
) {
    let Some((source, name)) = store.load().source(slot) else {
        return;
    };
    let name = name.as_str();
    let origin = Instant::now();
    let mut throttle = KidThrottle::new(config.unknown_kid_interval);
    let mut failures = 0u32;
    let mut last_error: Option<String> = None;
    let mut last_kids: Option<Vec<String>> = None;
    let mut last_conflicts: Vec<String> = Vec::new();
    loop {
        let outcome = match &source {
            JwksSource::Discover(settings) => match client.discover(settings).await {
                Ok(uri) => client.jwks(&uri, true).await,
                Err(e) => Err(e),
            },
            JwksSource::Url(url) => client.jwks(url, false).await,
        };
        let wait = match outcome.map(|fetched| (keys_from_jwks(&fetched.keys), fetched)) {
            Ok(((Some(ring), skipped), fetched)) => {
                failures = 0;
                last_error = None;
                let kids: Vec<String> = ring.kids().into_iter().map(str::to_owned).collect();
                metrics.record_jwks_success(name, kids.len(), auth_token::now_unix());
                if last_kids.as_ref() != Some(&kids) {
                    tracing::info!(
                        issuer = name,
                        kids = %kids.join(","),
                        skipped = %skipped.join(","),
                        "JWKS keys loaded"
                    );
                    last_kids = Some(kids);
                }
                store.set_keys(slot, ring);
                if let Some(files) = &files {
                    let conflicts = store.load().own_conflicts(&files.load());
                    if !conflicts.is_empty() && conflicts != last_conflicts {
                        tracing::error!(
                            issuer = name,
                            kids = %conflicts.join(","),
                            "these kids are both in the keys directory (or another --jwks-url) and in this JWKS with different keys: tokens carrying them are refused (unknown_kid) until one source drops them"
                        );
                    }
                    last_conflicts = conflicts;
                }
                next_refresh(fetched.cache_control.as_deref(), config.bounds)
            }
            Ok(((None, skipped), _)) => {
                failures = failures.saturating_add(1);
                metrics.record_jwks_failure(name);
                let message = format!(
                    "no usable signing key (skipped kids: {})",
                    skipped.join(",")
                );
                log_failure(name, &message, &mut last_error, last_kids.is_some());
                retry_after(failures, config.bounds)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.record_jwks_failure(name);
                log_failure(name, &e.to_string(), &mut last_error, last_kids.is_some());
                retry_after(failures, config.bounds)
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = store.refresh_requested(slot) => {
                    // Why both: a request refused by keys this fetch replaced is answered
                    // already and must not spend the throttle's window (issue #12, item 3).
                    if store.take_request(slot) && throttle.grant(origin.elapsed()) {
                        metrics.record_jwks_unknown_kid(name);
                        tracing::info!(issuer = name, "token with an unknown kid: refreshing the JWKS early");
                        break;
                    }
                }
                () = shutdown.wait() => return,
            }
        }
    }
}

/// Logs a failed fetch once per distinct error (the failure counter shows how long it lasts).
fn log_failure(name: &str, message: &str, last_error: &mut Option<String>, have_keys: bool) {
    if last_error.as_deref() == Some(message) {
        return;
    }
    if have_keys {
        tracing::warn!(issuer = name, error = %message, "JWKS refresh failed; keeping the last good keys");
    } else {
        tracing::warn!(issuer = name, error = %message, "JWKS fetch failed; this issuer's tokens are refused until it succeeds");
    }
    *last_error = Some(message.to_owned());
}

/// Until `stop`: waits for every issuer's first fetch or the startup wait, whichever comes
/// first, then says so once (ERROR naming the issuers still without keys), and, when
/// `report` (no revocation feed: `health::watch` does not run), reports gRPC health SERVING.
pub async fn watch_startup(
    store: Arc<JwksStore>,
    health: Option<tonic_health::server::HealthReporter>,
    outer: ShutdownSignal,
    mut stop: ShutdownSignal,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut keys_set = store.keys_set();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // A first fetch is reported at once, not at the next tick.
            () = keys_changed(Some(&mut keys_set)) => {}
            () = stop.wait() => return,
        }
        if store.all_loaded() {
            tracing::info!("every JWKS (external issuers, --jwks-url) is loaded");
            break;
        }
        if store.startup_wait_over() {
            let missing = store.load().missing();
            tracing::error!(
                issuers = %missing.join(","),
                "no JWKS for these issuers (local: --jwks-url) after --jwks-startup-wait: serving anyway; tokens needing their keys are refused (unknown_kid) until a fetch succeeds"
            );
            break;
        }
    }
    if let Some(health) = health
        && !outer.is_triggered()
    {
        report_health(&health, true).await;
    }
    stop.wait().await;
}

/// `https`, or `http` when `!strict` or the host is loopback.
fn check_url(url: &str, strict: bool) -> Result<(), FetchError> {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| match u.scheme() {
        "https" => u.has_host(),
        "http" => u.has_host() && (!strict || is_loopback(&u)),
        _ => false,
    });
    if ok {
        Ok(())
    } else {
        Err(FetchError::Url(url.to_owned()))
    }
}

/// reqwest's redirect rule for this client: same scheme, host and port, at most
/// [`MAX_REDIRECTS`].
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first();
    let same = first.is_some_and(|from| {
        from.scheme() == attempt.url().scheme()
            && from.host_str() == attempt.url().host_str()
            && from.port_or_known_default() == attempt.url().port_or_known_default()
    });
    if same && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.error("redirect refused")
    }
}

/// An error and its sources on one line (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a revocation feed this watcher reports readiness: once the keys are in, at
    /// once, not at its next 100 ms tick (time is paused: it moves only by the sleeps).
    #[tokio::test(start_paused = true)]
    async fn the_first_keys_are_reported_serving_before_the_next_tick() {
        use tonic_health::pb::health_check_response::ServingStatus as Status;
        use tonic_health::server::{HealthReporter, HealthService};

        use crate::test_support::health_status;

        let store = Arc::new(JwksStore::with_own(
            Vec::new(),
            vec![crate::external::OwnJwks::new(
                0,
                "http://login-service:5000/jwks.json",
            )],
            Duration::from_secs(600),
        ));
        let reporter = HealthReporter::new();
        report_health(&reporter, false).await; // as the server starts
        let service = HealthService::from_health_reporter(reporter.clone());
        let (trigger, signal) = crate::shutdown::channel();
        let watcher = tokio::spawn(watch_startup(
            Arc::clone(&store),
            Some(reporter),
            signal.clone(),
            signal,
        ));
        // Past the first tick, at 5 ms of the next 100: still waiting for the keys.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(health_status(&service, "").await, Status::NotServing);
        store.set_keys(0, crate::test_support::ring());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(health_status(&service, "").await, Status::Serving);
        trigger.trigger();
        watcher.await.expect("the watcher ends at the shutdown");
    }

    #[test]
    fn url_rules() {
        assert!(check_url("https://kc.example/jwks", true).is_ok());
        assert!(check_url("http://127.0.0.1:1/jwks", true).is_ok());
        assert!(check_url("http://localhost/jwks", true).is_ok());
        assert!(check_url("http://login-service:5000/jwks", true).is_err());
        assert!(check_url("http://login-service:5000/jwks", false).is_ok());
        assert!(check_url("file:///etc/passwd", false).is_err());
        assert!(check_url("ftp://a/b", false).is_err());
    }
}
