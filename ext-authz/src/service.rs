//! The tonic `Authorization` service: `CheckRequest` → [`decide`] → `CheckResponse`.
//! It reads the keyring ([`KeyStore`]) and the revocation state ([`Revocations`]) once per
//! check and does no other I/O.
//!
//! The server runs [`CheckServer`]: the generated `AuthorizationServer`'s contract, decoding
//! the request with [`crate::wire`] (only the strings a check reads are kept, none copied) and
//! answering without boxing a future per call (the check is synchronous). The generated
//! [`Authorization`] trait is implemented too, on the generated types, for tests and benches;
//! both reach the same [`AuthzService::check_headers`].
//!
//! Envoy's rules this layer follows (see the `// Why:` comments):
//! - a deny is `Ok(CheckResponse)` with a non-OK status and a `DeniedHttpResponse` whose HTTP
//!   status is set explicitly (Envoy defaults a denial to 403);
//! - a gRPC error (`UNAVAILABLE`) only when no decision is possible (revocations followed but
//!   not usable, see [`Revocations::usable`]): Envoy then applies
//!   `failure_mode_allow`/`status_on_error`;
//! - every header mutation sets `append: false` (Envoy's reading of an unset flag changed
//!   between versions) and uses lower-case names;
//! - allows and denials carry `dynamic_metadata` (the decision log, [`decision_metadata`]):
//!   Envoy files it under the filter's name `envoy.filters.http.ext_authz`, where the access log
//!   (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%`) and later filters read it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HttpResponse, HttpStatus,
};
use envoy_types::pb::google::rpc;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::answer::{Allow, CheckAnswer, DecisionLog, header_option, response_outcome};
use crate::check::{
    ALLOW_LABEL, Decision, Denial, Headers, Reason, Settings, decide_with_external,
};
use crate::external::ExternalIssuers;
use crate::jwks::JwksStore;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::wire;

pub use crate::answer::{EMAIL_HEADER, ROLES_HEADER, USER_ID_HEADER};

/// The gRPC `Authorization` service. Cloning shares the state.
#[derive(Debug, Clone)]
pub struct AuthzService {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    keys: Arc<KeyStore>,
    settings: Settings,
    metrics: Arc<Metrics>,
    strip_authorization: bool,
    /// Revoked tokens (`--revocation-feed-url`); `None`: no revocation checks.
    revocations: Option<Arc<Revocations>>,
    /// Trusted external issuers' keys (`--oidc-issuer`); `None`: our own tokens only.
    external: Option<Arc<JwksStore>>,
}

impl AuthzService {
    /// A service deciding with `settings` against the ring in `keys`.
    pub fn new(
        keys: Arc<KeyStore>,
        settings: Settings,
        metrics: Arc<Metrics>,
        strip_authorization: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys,
                settings,
                metrics,
                strip_authorization,
                revocations: None,
                external: None,
            }),
        }
    }

    /// The same service, also refusing the tokens in `revocations` (and, when it is
    /// fail-closed and stale, answering `UNAVAILABLE`).
    pub fn with_revocations(self, revocations: Arc<Revocations>) -> Self {
        let mut inner = Inner::clone(&self.inner);
        inner.revocations = Some(revocations);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The same service, also accepting tokens of the external issuers in `store` (on the
    /// routes that name them); a token of theirs with an unknown kid asks for an early refresh.
    pub fn with_external_issuers(self, store: Arc<JwksStore>) -> Self {
        let mut inner = Inner::clone(&self.inner);
        inner.external = Some(store);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Answers one check given as the generated `CheckRequest`: the synchronous core of
    /// [`Authorization::check`] (benchmarked, fuzzed, and what the unit tests call).
    pub fn check_request(&self, request: &CheckRequest) -> Result<CheckResponse, Status> {
        let attributes = request.attributes.as_ref();
        let headers = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|http| &http.headers);
        let policy = attributes.map_or(Policy::NONE, |a| {
            Policy::from_context_extensions(&a.context_extensions)
        });
        self.check_headers(&headers, policy)
            .map(CheckAnswer::into_response)
    }

    /// Answers one check decoded by [`crate::wire`] (what [`CheckServer`] runs): the same
    /// answer as [`AuthzService::check_request`] for the same bytes, not yet encoded.
    pub fn check_wire(&self, request: &wire::CheckRequest) -> Result<CheckAnswer, Status> {
        self.check_headers(
            &request.http(),
            Policy::from_lookup(|key| request.extension(key)),
        )
    }

    /// The check itself, from the request's headers and the route's policy.
    fn check_headers(
        &self,
        headers: &impl Headers,
        policy: Policy<'_>,
    ) -> Result<CheckAnswer, Status> {
        let started = Instant::now();
        let inner = &*self.inner;
        // Why: `request.http.id` is Envoy's stream id; the id that ties logs together is the
        // `x-request-id` header.
        let request_id = request_id_of(headers);

        let ring = inner.keys.load();
        // Dry run lets everything through anyway: it decides with what is known.
        if let Some(revocations) = inner.revocations.as_deref()
            && !inner.settings.dry_run
            && !revocations.usable()
        {
            inner.metrics.record_check_error(started.elapsed());
            // Why debug: the feed watcher logs the stale/missing feed once (and the health service
            // `edge-auth.revocation-feed` and gauges show it); one line per refused request would
            // let any client flood the log during an outage.
            tracing::debug!(request_id, "revocations not in sync; cannot decide");
            // Why: no snapshot yet, or stale with --revocation-fail-closed: an RPC error makes
            // Envoy answer status_on_error (503) instead of letting a revoked token through.
            return Err(Status::unavailable("revocation feed unavailable"));
        }
        // Why loaded after `usable()` (review of issue #15 §2): the feed stores the snapshot,
        // then marks it synced; a set loaded before the check saw "synced" could still be the
        // empty one it replaced, and a revoked token would pass once.
        let revoked = inner.revocations.as_deref().map(Revocations::load);
        let external = inner.external.as_deref().map(JwksStore::load);
        let decision = decide_with_external(
            headers,
            &policy,
            &ring,
            external
                .as_deref()
                .map_or(&ExternalIssuers::EMPTY, |set| &**set),
            revoked.as_deref().map(|set| &**set),
            &inner.settings,
            auth_token::now_unix(),
        );
        if let (Some(store), Some(set)) = (inner.external.as_deref(), external.as_deref()) {
            request_refresh_on_unknown_kid(&decision, headers, store, set);
        }
        log_decision(&decision, request_id);
        inner.metrics.record_check(&decision, started.elapsed());
        Ok(self.answer(decision, &policy))
    }

    /// The answer to send for `decision` on a route with `policy`.
    fn answer(&self, decision: Decision, policy: &Policy<'_>) -> CheckAnswer {
        let (identity, log) = match decision {
            Decision::Allow { claims, kid } => {
                let log = decision_log("allow", ALLOW_LABEL, Some(&claims), kid, policy);
                (Some(claims), log)
            }
            Decision::DryRunAllow {
                claims,
                kid,
                denial,
            } => {
                let reason = denial.reason.label();
                let log = decision_log("dry_run_allow", reason, claims.as_ref(), kid, policy);
                (claims, log)
            }
            Decision::Deny(denial) => {
                let log = decision_log("deny", denial.reason.label(), None, None, policy);
                let mut response = deny(denial);
                response.dynamic_metadata = Some(log.to_struct());
                return CheckAnswer::Response(response);
            }
        };
        CheckAnswer::Allow(Allow {
            identity,
            strip_authorization: self.inner.strip_authorization,
            log,
        })
    }
}

/// A token refused for an unknown kid (or an algorithm none of its keys has) may mean its
/// issuer rotated keys: wake the refresh task of that external issuer, or of our own
/// `--jwks-url`s, which throttles (no I/O here).
fn request_refresh_on_unknown_kid(
    decision: &Decision,
    headers: &impl Headers,
    store: &JwksStore,
    set: &ExternalIssuers,
) {
    let reason = match decision {
        Decision::Deny(d) => d.reason,
        Decision::DryRunAllow { denial, .. } => denial.reason,
        Decision::Allow { .. } => return,
    };
    // Why both: a rotation to a new kid of a new key type reads as "no key for this alg".
    if !matches!(
        reason,
        Reason::Invalid(
            auth_token::VerifyError::UnknownKey | auth_token::VerifyError::UnsupportedAlgorithm
        )
    ) {
        return;
    }
    let token = auth_token::bearer::parse(headers.header("authorization"));
    if let Ok(token) = token {
        store.request_refresh_for(set, token);
    }
}

/// The decision log entry Envoy gets as `dynamic_metadata` (envoy/envoy.yaml.in's access log
/// shows it): `decision`, `reason`, and when known `subject` (the token's `sub`), `kid` (of a
/// *verified* token only: an unverified header is the client's text), and the route's policy
/// (`require_roles`, `issuers`: route configuration, never client input).
/// Why no token and no e-mail: the access log is read by more people than the user table.
fn decision_log(
    decision: &'static str,
    reason: &'static str,
    claims: Option<&Arc<auth_token::Claims>>,
    kid: Option<Arc<str>>,
    policy: &Policy<'_>,
) -> DecisionLog {
    let [(k0, v0), (k1, v1)] = policy.as_set();
    DecisionLog {
        decision,
        reason,
        subject: claims.cloned(),
        // Why the check: the kid goes to the access log; one outside our kid alphabet (an
        // external issuer's choice) is left out. Only with a verified token's claims.
        kid: kid
            .filter(|k| auth_token::keys::valid_kid(k))
            .filter(|_| claims.is_some()),
        policy: [(k0, v0.map(Box::from)), (k1, v1.map(Box::from))],
    }
}

/// The `CheckResponse` for a denial (see CONTRACT.md "Deny responses").
fn deny(denial: Denial) -> CheckResponse {
    CheckResponse {
        // Why: a non-OK status in a CheckResponse is a deny; failure_mode_allow does not apply.
        status: Some(rpc::Status {
            code: denial.status.grpc_code(),
            message: denial.reason.label().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            // Why: Envoy answers 403 for a denial without an explicit status; 401 must be set.
            status: Some(HttpStatus {
                code: i32::from(denial.status.http_code()),
            }),
            headers: vec![
                header_option("www-authenticate", denial.www_authenticate),
                header_option("content-type", "application/json".to_owned()),
            ],
            body: denial.body,
        })),
        dynamic_metadata: None,
    }
}

/// One line per check: debug for allows (cheap when filtered), info for (would-be) denials.
/// Never the token.
fn log_decision(decision: &Decision, request_id: &str) {
    match decision {
        Decision::Allow { claims, .. } => {
            tracing::debug!(request_id, decision = "allow", reason = ALLOW_LABEL, sub = %claims.sub, "check");
        }
        Decision::Deny(d) => tracing::info!(
            request_id,
            decision = "deny",
            reason = d.reason.label(),
            status = d.status.http_code(),
            "check"
        ),
        Decision::DryRunAllow { denial, .. } => tracing::info!(
            request_id,
            decision = "dry_run_allow",
            reason = denial.reason.label(),
            status = denial.status.http_code(),
            "check: would deny (dry run)"
        ),
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let headers = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|http| &http.headers);
        traced(request.metadata(), &headers, || {
            self.check_request(request.get_ref())
        })
        .map(Response::new)
    }
}

/// `answer()`, inside the check's span when traces are exported (issue #14). With tracing off
/// (the default) nothing is built: one relaxed atomic load.
fn traced<T: Outcome>(
    metadata: &MetadataMap,
    headers: &impl Headers,
    answer: impl FnOnce() -> Result<T, Status>,
) -> Result<T, Status> {
    if !edge_process::telemetry::tracing_enabled() {
        return answer();
    }
    let span = check_span(metadata, headers);
    let answer = span.in_scope(answer);
    record_outcome(&span, &answer);
    answer
}

/// An answer's decision log `decision` and `reason`, for the check's span.
trait Outcome {
    fn outcome(&self) -> (Option<&str>, Option<&str>);
}

impl Outcome for CheckResponse {
    fn outcome(&self) -> (Option<&str>, Option<&str>) {
        response_outcome(self)
    }
}

impl Outcome for CheckAnswer {
    fn outcome(&self) -> (Option<&str>, Option<&str>) {
        CheckAnswer::outcome(self)
    }
}

/// The gRPC path of the Check method.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The `envoy.service.auth.v3.Authorization` gRPC service the server runs: what the generated
/// `AuthorizationServer` does (same path, same unimplemented answer for other methods, same
/// defaults: no compression, 4 MiB decode limit), with the request decoded by [`crate::wire`]
/// and the synchronous check answered as a ready future instead of a boxed `async_trait` one.
#[derive(Debug, Clone)]
pub struct CheckServer {
    service: AuthzService,
}

impl CheckServer {
    /// Serves `service`.
    pub fn new(service: AuthzService) -> Self {
        Self { service }
    }
}

impl tonic::server::NamedService for CheckServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for CheckServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            // The generated server's answer, header for header.
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = CheckMethod(self.service.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(wire::CheckCodec);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// The Check method over [`crate::wire`]'s request.
struct CheckMethod(AuthzService);

impl tonic::server::UnaryService<wire::CheckRequest> for CheckMethod {
    type Response = CheckAnswer;
    type Future = std::future::Ready<Result<Response<CheckAnswer>, Status>>;

    fn call(&mut self, request: Request<wire::CheckRequest>) -> Self::Future {
        let answer = traced(request.metadata(), &request.get_ref().http(), || {
            self.0.check_wire(request.get_ref())
        });
        std::future::ready(answer.map(Response::new))
    }
}

/// The `x-request-id` to log: bounded and printable only, because a client that reaches
/// ext-authz directly (or through a proxy that forwards its id) chooses this header
/// (SECURITY.md, review finding L3).
fn request_id_of(headers: &impl Headers) -> &str {
    edge_process::telemetry::request_id(headers.header("x-request-id").map(str::as_bytes))
}

/// The span of one check, only built when traces are exported (issue #14): a child of Envoy's
/// ext_authz call span, named by the `traceparent` Envoy's gRPC client puts in the call's
/// metadata; failing that, of the client request's own `traceparent` (Envoy sends it in the
/// CheckRequest when `allowed_headers` lets it through). Never the token.
fn check_span(metadata: &MetadataMap, headers: &impl Headers) -> tracing::Span {
    let grpc = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    let http = |name: &str| headers.header(name);
    let (traceparent, tracestate) = match grpc("traceparent") {
        Some(parent) => (Some(parent), grpc("tracestate")),
        None => (http("traceparent"), http("tracestate")),
    };
    let request_id = edge_process::telemetry::request_id(http("x-request-id").map(str::as_bytes));
    let span = tracing::info_span!(
        "check",
        otel.name = "ext_authz.check",
        otel.kind = "server",
        request_id,
        decision = tracing::field::Empty,
        reason = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    edge_process::telemetry::continue_trace(&span, traceparent, tracestate);
    span
}

/// The decision and reason (the labels of the access log's `auth_decision`/`auth_reason`) as
/// span attributes; an RPC error marks the span failed.
fn record_outcome(span: &tracing::Span, answer: &Result<impl Outcome, Status>) {
    let (decision, reason) = match answer {
        Ok(answer) => answer.outcome(),
        Err(status) => {
            span.record("otel.status_code", "ERROR");
            span.record("reason", status.message());
            return;
        }
    };
    if let Some(decision) = decision {
        span.record("decision", decision);
    }
    if let Some(reason) = reason {
        span.record("reason", reason);
    }
}

#[cfg(test)]
mod tests;
