//! The decision, as a pure function: request headers + route policy + keyring + revoked set →
//! [`Decision`].
//!
//! No tonic or Envoy types and no I/O here (the bottom layer, with [`crate::policy`] and
//! [`crate::revoked`]), so every accept/deny rule is unit-tested directly. The caller
//! (`service`) turns a [`Decision`] into a `CheckResponse`.
//!
//! `Authorization` is read by [`auth_token::bearer::parse`] (RFC 6750 §2.1, strict `b64token`,
//! so a header Envoy merged from duplicates is refused): no token, an empty header or another
//! scheme is [`Reason::MissingToken`] (a 401 challenge without an `error` attribute, as RFC 6750
//! §3.1 asks); anything else that is not a bearer token is a malformed token.

use std::collections::HashMap;
use std::sync::Arc;

use auth_token::{BearerError, Claims, Keyring, Verifier, VerifyError};

use crate::external::{ExternalIssuers, TrustedIssuer};
use crate::policy::Policy;
use crate::revoked::RevocationSet;
use crate::token_cache::{Entry, Source, TokenCache, check_times, header_kid};

/// Request headers as a check reads them: by lower-case name (Envoy lower-cases names), the
/// last value of a repeated name (the one Envoy's `map<string, string>` keeps once decoded).
/// Implemented for the generated `HashMap` (and by the wire request, a layer above).
pub trait Headers {
    /// The value of header `name`, if present.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Headers for HashMap<String, String, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// No `http` attributes at all (a malformed `CheckRequest`): no header.
impl<H: Headers> Headers for Option<&H> {
    fn header(&self, name: &str) -> Option<&str> {
        self.and_then(|h| h.header(name))
    }
}

/// Why a request was denied: one metric label and one log field each. An allowed request has
/// no reason (its label is [`ALLOW_LABEL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No bearer token in the request.
    MissingToken,
    /// A valid token lacking a role the route requires.
    InsufficientScope,
    /// The token was refused by the verifier (or the header was malformed).
    Invalid(VerifyError),
    /// A valid token that was revoked (logout, password change, disabled account...).
    Revoked,
}

/// The reason label of an allowed request (metrics and the decision log line).
pub const ALLOW_LABEL: &str = "ok";

impl Reason {
    /// Number of distinct reasons (the size of [`Reason::index`]'s range).
    pub const COUNT: usize = 3 + VerifyError::ALL.len();

    /// A stable, low-cardinality label: `missing_token`, `insufficient_scope`, `revoked` or
    /// [`VerifyError::reason`].
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Invalid(e) => e.reason(),
            Self::Revoked => "revoked",
        }
    }

    /// A dense index in `0..COUNT`, for pre-created metric handles.
    pub fn index(self) -> usize {
        match self {
            Self::MissingToken => 0,
            Self::InsufficientScope => 1,
            // Fieldless enum: the discriminant is its position in `VerifyError::ALL` (tested).
            Self::Invalid(e) => 2 + e as usize,
            Self::Revoked => 2 + VerifyError::ALL.len(),
        }
    }

    /// Every reason, in [`Reason::index`] order.
    pub fn all() -> impl Iterator<Item = Reason> {
        [Self::MissingToken, Self::InsufficientScope]
            .into_iter()
            .chain(VerifyError::ALL.into_iter().map(Self::Invalid))
            .chain([Self::Revoked])
    }
}

/// The HTTP status of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 401: no token or an invalid one.
    Unauthorized,
    /// 403: a valid token without the required role.
    Forbidden,
}

impl DenyStatus {
    /// The HTTP status code.
    pub fn http_code(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
        }
    }

    /// The google.rpc code of the `CheckResponse.status`: UNAUTHENTICATED (16) or
    /// PERMISSION_DENIED (7).
    pub fn grpc_code(self) -> i32 {
        match self {
            Self::Unauthorized => 16,
            Self::Forbidden => 7,
        }
    }
}

/// A refusal, with everything the client is told (see CONTRACT.md "Deny responses").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 401 or 403.
    pub status: DenyStatus,
    /// Why (for the log line and metrics; never contains token bytes).
    pub reason: Reason,
    /// The RFC 6750 challenge for `www-authenticate`.
    pub www_authenticate: String,
    /// `{"error":...,"message":...}`, served as `application/json`.
    pub body: String,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through with the identity from `claims`.
    Allow {
        /// The verified claims (shared with the token cache).
        claims: Arc<Claims>,
        /// The `kid` of the key that verified them, for the decision log (`None`: none named).
        kid: Option<Arc<str>>,
    },
    /// Refuse the request.
    Deny(Denial),
    /// `--dry-run`: the request would have been denied but is let through.
    DryRunAllow {
        /// The claims when the token itself was valid (then identity headers are still set).
        claims: Option<Arc<Claims>>,
        /// With `claims`: the `kid` of the key that verified them.
        kid: Option<Arc<str>>,
        /// What would have been answered.
        denial: Denial,
    },
}

/// What does not change between checks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Token validation rules.
    pub verifier: Verifier,
    /// Realm of the `www-authenticate` challenges; must be quoted-string safe (the
    /// configuration refuses any other at startup).
    pub realm: String,
    /// Allow everything, reporting would-be denials as [`Decision::DryRunAllow`].
    pub dry_run: bool,
    /// The verified-token cache (`--token-cache-bytes`); `None`: every token is verified in
    /// full. Shared by every check (the handle does not change; its contents do).
    pub token_cache: Option<Arc<TokenCache>>,
}

/// Decides one request from its (lower-cased) headers, the route policy, the keyring and, when
/// revocations are followed, the revoked set: a valid token that `revoked` lists is refused
/// (401 `invalid_token`, "token revoked", reason `revoked`).
///
/// `now` is Unix seconds, used for the `iat` check (expiry is checked against the clock by the
/// verifier). Never panics, never allows a token whose signature does not verify with a key of
/// `keys` (property-tested in the tests).
pub fn decide(
    headers: &(impl Headers + ?Sized),
    policy: &Policy<'_>,
    keys: &Keyring,
    revoked: Option<&RevocationSet>,
    settings: &Settings,
    now: u64,
) -> Decision {
    decide_with_external(
        headers,
        policy,
        keys,
        &EXTERNAL_NONE,
        revoked,
        settings,
        now,
    )
}

/// No external issuer configured.
static EXTERNAL_NONE: ExternalIssuers = ExternalIssuers::EMPTY;

/// [`decide`], also accepting tokens of the trusted external issuers in `external`.
///
/// A token whose `iss` names one of them ([`ExternalIssuers::route`]) is verified with that
/// issuer's keys only, mapped by its claim settings, never looked up in `revoked` (revocations
/// are our own tokens'; foreign subjects are namespaced `NAME:sub` and cannot collide), and
/// passes only a route whose `issuers` list names it ([`Policy::accepts_issuer`]). Every other
/// token takes our own path, which a route with an `issuers` list must name as `local`.
/// A route that does not accept the token's issuer refuses it before any signature work
/// (401 `wrong_issuer`).
pub fn decide_with_external(
    headers: &(impl Headers + ?Sized),
    policy: &Policy<'_>,
    keys: &Keyring,
    external: &ExternalIssuers,
    revoked: Option<&RevocationSet>,
    settings: &Settings,
    now: u64,
) -> Decision {
    // Why: Envoy lower-cases header names in `attributes.request.http.headers`.
    let authorization = headers.header("authorization");
    let (verified, reason) = match auth_token::bearer::parse(authorization) {
        Err(e) => (None, bearer_reason(e)),
        Ok(token) => match verify(token, policy, keys, external, settings, now) {
            Err(reason) => (None, reason),
            // Revocations are our own tokens' (see above).
            Ok(v)
                if v.source == Source::Local
                    && revoked.is_some_and(|set| set.is_revoked(&v.claims)) =>
            {
                (None, Reason::Revoked)
            }
            Ok(v) if !policy.is_satisfied_by(&v.claims) => (Some(v), Reason::InsufficientScope),
            Ok(Verified { claims, kid, .. }) => return Decision::Allow { claims, kid },
        },
    };
    let denial = denial(reason, policy, &settings.realm);
    if settings.dry_run {
        let (claims, kid) = verified.map_or((None, None), |v| (Some(v.claims), v.kid));
        Decision::DryRunAllow {
            claims,
            kid,
            denial,
        }
    } else {
        Decision::Deny(denial)
    }
}

/// A token that verified: its claims, whose keys verified them, and the `kid` that named the key
/// (carried to the decision log, so the header is read once per check at most).
struct Verified {
    claims: Arc<Claims>,
    source: Source,
    kid: Option<Arc<str>>,
}

/// The verified claims of `token` and whose keys verified them, or why it is refused; the
/// route's issuer list is applied first. With a [`TokenCache`] in `settings`, a token verified
/// before skips the signature work: the cache answers only while the key that verified it is
/// still loaded with the same material ([`TokenCache::lookup`]), and the time claims are checked
/// against `now` on every hit; revocations and the route's roles are the caller's, hit or miss.
fn verify(
    token: &str,
    policy: &Policy<'_>,
    keys: &Keyring,
    external: &ExternalIssuers,
    settings: &Settings,
    now: u64,
) -> Result<Verified, Reason> {
    let accepts = |source: Source| match source {
        Source::Local => policy.accepts_issuer(crate::issuers::LOCAL),
        Source::External(i) => external
            .get(i)
            .is_some_and(|issuer| policy.accepts_issuer(&issuer.settings.name)),
    };
    let ring = |source: Source| match source {
        // Our own token: the `--keys-dir` ring, or the own JWKS (`--jwks-url`) holding its kid.
        Source::Local => external.own_ring(token, keys).ok(),
        Source::External(i) => external.get(i).and_then(TrustedIssuer::keys),
    };
    // Why the length check: a token over the limit is refused unparsed; hashing it first would
    // let a client make every refusal cost a SHA-256 over up to Envoy's header limit.
    let cache = settings
        .token_cache
        .as_deref()
        .filter(|_| token.len() <= settings.verifier.max_token_len())
        .map(|c| (c, c.key(token)));
    if let Some((cache, key)) = &cache
        && let Some(entry) = cache.lookup(key, ring)
    {
        if !accepts(entry.source) {
            return Err(Reason::Invalid(VerifyError::WrongIssuer));
        }
        if let Err(e) = check_times(&entry.claims, now, settings.verifier.leeway_secs()) {
            return Err(Reason::Invalid(e));
        }
        return Ok(Verified {
            claims: Arc::clone(&entry.claims),
            source: entry.source,
            kid: entry.kid().cloned(),
        });
    }
    let source = match external.route(token) {
        Some(i) if external.get(i).is_some() => Source::External(i),
        _ => Source::Local,
    };
    // Why before any signature work: a route that does not take this issuer refuses cheaply.
    if !accepts(source) {
        return Err(Reason::Invalid(VerifyError::WrongIssuer));
    }
    let claims = match source {
        Source::External(i) => external
            .get(i)
            .map_or(Err(VerifyError::UnknownKey), |issuer| {
                issuer.verify(token, now)
            })
            .map_err(Reason::Invalid)?,
        Source::Local => {
            let ring = external.own_ring(token, keys).map_err(Reason::Invalid)?;
            let claims = settings
                .verifier
                .verify(token, ring, now)
                .map_err(Reason::Invalid)?;
            if !header_safe(&claims) {
                return Err(Reason::Invalid(VerifyError::Malformed));
            }
            claims
        }
    };
    let claims = Arc::new(claims);
    // Why `None` when unreadable: the verifier read this header, so that cannot happen; if it
    // did, the decision log would only lack the kid, and nothing is cached.
    let kid = header_kid(token);
    if let Some((cache, key)) = cache
        && let Some(kid) = &kid
        && let Some(k) = ring(source).and_then(|r| r.get(kid.as_deref()))
    {
        cache.insert(
            key,
            Entry::new(Arc::clone(&claims), source, kid.clone(), k.fingerprint()),
        );
    }
    Ok(Verified {
        claims,
        source,
        kid: kid.flatten(),
    })
}

/// The denial for an `Authorization` header that holds no usable bearer token.
fn bearer_reason(e: BearerError) -> Reason {
    match e {
        BearerError::Missing => Reason::MissingToken,
        BearerError::Malformed => Reason::Invalid(VerifyError::Malformed),
    }
}

/// Identity values become request headers: refuse control characters (a signed token from our
/// issuer never has them, but a header injection must not depend on that), and a role holding
/// ',' (roles are joined with ',' into `x-auth-roles`, so it would read as two; login-service
/// issues none, and the external issuers' path refuses it the same way).
fn header_safe(claims: &Claims) -> bool {
    let ok = |s: &str| !s.bytes().any(|b| b < 0x20 || b == 0x7f);
    ok(&claims.sub) && ok(&claims.email) && claims.roles.iter().all(|r| ok(r) && !r.contains(','))
}

/// Builds the client-facing refusal for `reason`.
fn denial(reason: Reason, policy: &Policy<'_>, realm: &str) -> Denial {
    let (status, www_authenticate, error, message) = match reason {
        Reason::MissingToken => (
            DenyStatus::Unauthorized,
            // Why: RFC 6750 §3.1 — no error code when the request had no authentication.
            format!("Bearer realm=\"{realm}\""),
            "missing_token",
            "missing bearer token",
        ),
        Reason::Invalid(e) => (
            DenyStatus::Unauthorized,
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                description(e)
            ),
            "invalid_token",
            description(e),
        ),
        Reason::Revoked => (
            DenyStatus::Unauthorized,
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"token revoked\""
            ),
            "invalid_token",
            "token revoked",
        ),
        Reason::InsufficientScope => {
            let mut challenge = format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"missing required role\""
            );
            // RFC 6750 §3 scope: space-delimited, only if every role is a valid scope-token.
            let roles: Vec<&str> = policy.required_roles().collect();
            if !roles.is_empty()
                && roles.iter().all(|r| {
                    r.bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
                })
            {
                challenge.push_str(", scope=\"");
                challenge.push_str(&roles.join(" "));
                challenge.push('"');
            }
            (
                DenyStatus::Forbidden,
                challenge,
                "insufficient_scope",
                "missing required role",
            )
        }
    };
    Denial {
        status,
        reason,
        www_authenticate,
        // The strings are static ASCII without quotes or backslashes: no escaping needed.
        body: format!("{{\"error\":\"{error}\",\"message\":\"{message}\"}}"),
    }
}

/// The human-readable text of a verification failure (its `Display`, as a static string).
fn description(e: VerifyError) -> &'static str {
    match e {
        VerifyError::TooLarge => "token too large",
        VerifyError::Malformed => "malformed token",
        VerifyError::UnsupportedHeader => "unsupported token header",
        VerifyError::UnsupportedAlgorithm => "unsupported algorithm",
        VerifyError::UnknownKey => "unknown signing key",
        VerifyError::BadSignature => "invalid signature",
        VerifyError::Expired => "token expired",
        VerifyError::NotYetValid => "token not yet valid",
        VerifyError::IssuedInFuture => "token issued in the future",
        VerifyError::WrongIssuer => "wrong issuer",
        VerifyError::WrongAudience => "wrong audience",
        VerifyError::MissingClaim => "missing claim",
        VerifyError::KeyAlgorithmMismatch => "algorithm does not match the key",
    }
}

#[cfg(test)]
mod tests;
