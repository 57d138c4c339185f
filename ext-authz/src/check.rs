//! The decision, as a pure function: request headers + route policy + keyring → [`Decision`].
//!
//! No tonic or Envoy types here, so every accept/deny rule is unit-tested directly. The caller
//! ([`crate::service`]) turns a [`Decision`] into a `CheckResponse`.
//!
//! Parsing of `Authorization` (RFC 6750 §2.1, `credentials = "Bearer" 1*SP b64token`):
//! - the scheme is matched case-insensitively (`bearer`, `BEARER`);
//! - one or more spaces separate scheme and token (`Bearer  tok` is valid per the grammar);
//!   surrounding spaces/tabs (HTTP optional whitespace) are ignored;
//! - a tab between scheme and token, or any character outside `b64token` in the token
//!   (space, comma, quote...) makes the header malformed. That is what refuses a header that
//!   Envoy merged from duplicates (`Bearer a,Bearer b`);
//! - no header, an empty one, or another scheme (`Basic ...`) means "no token": a 401 challenge
//!   without an `error` attribute, as RFC 6750 §3.1 asks.

use std::collections::HashMap;

use auth_token::{Claims, Keyring, Verifier, VerifyError};

use crate::policy::Policy;
use crate::revocation::RevocationSet;

/// Why a request was allowed or denied: one metric label and one log field each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A valid token that satisfies the route policy.
    Ok,
    /// No bearer token in the request.
    MissingToken,
    /// A valid token lacking a role the route requires.
    InsufficientScope,
    /// The token was refused by the verifier (or the header was malformed).
    Invalid(VerifyError),
    /// A valid token that was revoked (logout, password change, disabled account...).
    Revoked,
}

impl Reason {
    /// Number of distinct reasons (the size of [`Reason::index`]'s range).
    pub const COUNT: usize = 4 + VerifyError::ALL.len();

    /// A stable, low-cardinality label: `ok`, `missing_token`, `insufficient_scope` or
    /// [`VerifyError::reason`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::MissingToken => "missing_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Invalid(e) => e.reason(),
            Self::Revoked => "revoked",
        }
    }

    /// A dense index in `0..COUNT`, for pre-created metric handles.
    pub fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::MissingToken => 1,
            Self::InsufficientScope => 2,
            // Fieldless enum: the discriminant is its position in `VerifyError::ALL` (tested).
            Self::Invalid(e) => 3 + e as usize,
            Self::Revoked => 3 + VerifyError::ALL.len(),
        }
    }

    /// Every reason, in [`Reason::index`] order.
    pub fn all() -> impl Iterator<Item = Reason> {
        [Self::Ok, Self::MissingToken, Self::InsufficientScope]
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
        /// The verified claims.
        claims: Claims,
    },
    /// Refuse the request.
    Deny(Denial),
    /// `--dry-run`: the request would have been denied but is let through.
    DryRunAllow {
        /// The claims when the token itself was valid (then identity headers are still set).
        claims: Option<Claims>,
        /// What would have been answered.
        denial: Denial,
    },
}

impl Decision {
    /// The reason behind the decision.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Allow { .. } => Reason::Ok,
            Self::Deny(d) | Self::DryRunAllow { denial: d, .. } => d.reason,
        }
    }

    /// The metric/log label of the decision: `allow`, `deny` or `dry_run_allow`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::Deny(_) => "deny",
            Self::DryRunAllow { .. } => "dry_run_allow",
        }
    }
}

/// What does not change between checks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Token validation rules.
    pub verifier: Verifier,
    /// Realm of the `www-authenticate` challenges; must be quoted-string safe
    /// (see [`crate::config::Config::validate`]).
    pub realm: String,
    /// Allow everything, reporting would-be denials as [`Decision::DryRunAllow`].
    pub dry_run: bool,
}

/// Decides one request from its (lower-cased) headers, the route policy and the keyring.
///
/// `now` is Unix seconds, used for the `iat` check (expiry is checked against the clock by the
/// verifier). Never panics, never allows a token whose signature does not verify with a key of
/// `keys` (property-tested below).
pub fn decide(
    headers: &HashMap<String, String>,
    policy: &Policy<'_>,
    keys: &Keyring,
    settings: &Settings,
    now: u64,
) -> Decision {
    decide_with_revocations(headers, policy, keys, None, settings, now)
}

/// [`decide`], also refusing a valid token that `revoked` lists (401 `invalid_token`, "token
/// revoked", reason `revoked`). The set is in memory: no I/O, no lock.
pub fn decide_with_revocations(
    headers: &HashMap<String, String>,
    policy: &Policy<'_>,
    keys: &Keyring,
    revoked: Option<&RevocationSet>,
    settings: &Settings,
    now: u64,
) -> Decision {
    // Why: Envoy lower-cases header names in `attributes.request.http.headers`.
    let authorization = headers.get("authorization").map(String::as_str);
    let (claims, reason) = match bearer_token(authorization) {
        Err(reason) => (None, reason),
        Ok(token) => match settings.verifier.verify(token, keys, now) {
            Err(e) => (None, Reason::Invalid(e)),
            Ok(claims) if !header_safe(&claims) => (None, Reason::Invalid(VerifyError::Malformed)),
            Ok(claims) if revoked.is_some_and(|set| set.is_revoked(&claims)) => {
                (None, Reason::Revoked)
            }
            Ok(claims) if !policy.is_satisfied_by(&claims) => {
                (Some(claims), Reason::InsufficientScope)
            }
            Ok(claims) => return Decision::Allow { claims },
        },
    };
    let denial = denial(reason, policy, &settings.realm);
    if settings.dry_run {
        Decision::DryRunAllow { claims, denial }
    } else {
        Decision::Deny(denial)
    }
}

/// Extracts the token from an `Authorization` value (rules in the module docs).
pub fn bearer_token(value: Option<&str>) -> Result<&str, Reason> {
    const MALFORMED: Reason = Reason::Invalid(VerifyError::Malformed);
    let value = value.unwrap_or("").trim_matches([' ', '\t']);
    let Some(rest) = value
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer"))
        .map(|_| &value[6..])
    else {
        return Err(Reason::MissingToken);
    };
    match rest.as_bytes().first() {
        // "Bearer" with nothing after it: the scheme without credentials.
        None => Err(MALFORMED),
        Some(b' ') => {
            let token = rest.trim_start_matches(' ');
            // Why: Envoy merges repeated headers with ","; a comma (or space) can never be part
            // of a b64token, so `Bearer a,Bearer b` is refused instead of picking one.
            if is_b64token(token) {
                Ok(token)
            } else {
                Err(MALFORMED)
            }
        }
        Some(b'\t') => Err(MALFORMED),
        // "BearerX ...": some other scheme.
        Some(_) => Err(Reason::MissingToken),
    }
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Identity values become request headers: refuse control characters (a signed token from our
/// issuer never has them, but a header injection must not depend on that).
fn header_safe(claims: &Claims) -> bool {
    let ok = |s: &str| !s.bytes().any(|b| b < 0x20 || b == 0x7f);
    ok(&claims.sub) && ok(&claims.email) && claims.roles.iter().all(|r| ok(r))
}

/// Builds the client-facing refusal for `reason` (not called for [`Reason::Ok`]).
fn denial(reason: Reason, policy: &Policy<'_>, realm: &str) -> Denial {
    let (status, www_authenticate, error, message) = match reason {
        Reason::Ok | Reason::MissingToken => (
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
    }
}

#[cfg(test)]
mod tests;
