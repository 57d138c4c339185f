//! Errors at the HTTP boundary.
//!
//! Policy (the one crates.io writes at the top of its errors module): every failure a handler can
//! answer with is a variant of [`ApiError`], and each variant is mapped to its status, `error`
//! code, message and extra headers exactly once, in [`ApiError::parts`]. Internal details
//! (database messages, hashes, tokens) are logged where they happen, at most, and never put in a
//! response. Responses produced outside the handlers (unknown route, wrong method, body too large,
//! timeout) are rewritten to the same JSON shape by [`crate::routes`] through
//! [`ApiError::from_status`]. The errors of the layers below ([`LoginError`], [`DbError`],
//! [`PasswordError`], [`CredentialsError`]) become an [`ApiError`] here, by `From`, and nowhere
//! else. `anyhow` is used only in `main`, startup and tests.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::credentials::CredentialsError;
use crate::db::DbError;
use crate::login::LoginError;
use crate::password::PasswordError;

/// The realm announced in `WWW-Authenticate: Basic`.
pub const REALM: &str = "login-service";

/// Seconds a client is told to wait when the database is unavailable.
pub const DB_RETRY_AFTER_SECS: u64 = 5;

/// Seconds a follower is told to wait when too many polls wait already (ext-authz retries
/// with its own jittered backoff).
pub const FEED_BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Every error answer the HTTP API gives.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Basic` header.
    #[error("missing credentials")]
    MissingCredentials,
    /// A Basic header whose base64, `:` separator or UTF-8 is broken.
    #[error("malformed credentials")]
    MalformedCredentials,
    /// A user-id (e-mail) longer than [`crate::lockout::MAX_USER_ID_BYTES`]: refused before any
    /// hashing or database access.
    #[error("user-id too long")]
    UserIdTooLong,
    /// Unknown e-mail, wrong password or disabled account: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failures for this account (or e-mail); retry after the given seconds.
    #[error("account temporarily locked")]
    Locked {
        /// Seconds until the lock ends (≥ 1).
        retry_after: u64,
    },
    /// Too many failures from this client address.
    #[error("too many failed attempts from this address")]
    RateLimited {
        /// Seconds until the address may try again (≥ 1).
        retry_after: u64,
    },
    /// The database could not be reached or failed; the service recovers by itself.
    #[error("database unavailable")]
    DatabaseUnavailable,
    /// Too many logins at once: this process's password-hashing queue would hold the request
    /// longer than `LOGIN_MAX_QUEUE_WAIT`. Nothing was hashed or counted; the same for every
    /// user, known or not.
    #[error("login overloaded")]
    Overloaded {
        /// Seconds to wait before retrying (≥ 1).
        retry_after: u64,
    },
    /// Anything else that is our fault (signing failure, panicked task).
    #[error("internal error")]
    Internal,
    /// No such route.
    #[error("not found")]
    NotFound,
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Request body over the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Request headers over the configured limit.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request did not complete within the configured timeout.
    #[error("request timeout")]
    Timeout,
    /// No `Authorization: Bearer` token (`/logout`, `/revocations` with a feed token).
    #[error("missing bearer token")]
    MissingToken,
    /// The bearer token is invalid, expired, or not the feed token.
    #[error("invalid token")]
    InvalidToken,
    /// `POST /logout?all=true` with a token already revoked (a stolen token must not end the
    /// victim's newer sessions).
    #[error("token revoked")]
    RevokedToken,
    /// Query parameters that do not parse.
    #[error("invalid request")]
    InvalidRequest,
    /// `POST /token`: a malformed request (RFC 6749 §5.2 `invalid_request`): wrong content
    /// type, a missing or repeated parameter.
    #[error("invalid token request: {0}")]
    TokenRequest(&'static str),
    /// `POST /token`: the refresh token is unknown, expired, revoked, already used, or its
    /// account can no longer refresh (RFC 6749 §5.2 `invalid_grant`; deliberately one answer).
    #[error("invalid grant")]
    InvalidGrant,
    /// `POST /token` with a `grant_type` other than `refresh_token`.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// A revocation feed cursor beyond the newest row (the database was replaced): the
    /// follower must start again from `since=0`.
    #[error("cursor ahead of the feed")]
    CursorAhead,
    /// `GET /revocations` with a wait while `FEED_MAX_WAITERS` long polls already wait here, or
    /// `FEED_MAX_WAITERS_PER_PEER` of the same client address.
    #[error("too many waiting feed polls")]
    FeedBusy,
}

impl ApiError {
    /// Status, machine-readable code and human message: the one mapping of each variant.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MissingCredentials => (
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                "missing credentials: send Authorization: Basic base64(email:password)",
            ),
            Self::MalformedCredentials => (
                StatusCode::BAD_REQUEST,
                "malformed_credentials",
                "malformed Authorization header: expected Basic base64(email:password) in UTF-8",
            ),
            Self::UserIdTooLong => (
                StatusCode::BAD_REQUEST,
                "user_id_too_long",
                "the user-id (e-mail) is longer than 255 bytes",
            ),
            Self::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "invalid credentials",
            ),
            Self::Locked { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "account_locked",
                "too many failed logins for this account; retry later",
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed logins from this address; retry later",
            ),
            Self::DatabaseUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the credential store is unavailable; retry later",
            ),
            Self::Overloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many logins at once; retry later",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            ),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "request headers too large",
            ),
            Self::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "request took too long",
            ),
            Self::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "missing bearer token: send Authorization: Bearer <token>",
            ),
            Self::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "invalid or expired token",
            ),
            Self::RevokedToken => (StatusCode::UNAUTHORIZED, "invalid_token", "token revoked"),
            Self::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid query parameters",
            ),
            Self::TokenRequest(why) => (StatusCode::BAD_REQUEST, "invalid_request", why),
            Self::InvalidGrant => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token is invalid, expired, revoked or already used",
            ),
            Self::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported",
            ),
            Self::CursorAhead => (
                StatusCode::CONFLICT,
                "cursor_ahead",
                "the cursor is ahead of the revocation feed: start again from since=0",
            ),
            Self::FeedBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "feed_busy",
                "too many followers are waiting on this replica; retry later",
            ),
        }
    }

    /// The variant a bare status produced by a framework layer stands for, if any.
    pub fn from_status(status: StatusCode) -> Option<Self> {
        Some(match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::HeadersTooLarge,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::BAD_REQUEST => Self::InvalidRequest,
            StatusCode::SERVICE_UNAVAILABLE => Self::DatabaseUnavailable,
            s if s.is_server_error() => Self::Internal,
            _ => return None,
        })
    }

    /// `Retry-After` seconds, for the variants that carry one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Locked { retry_after }
            | Self::RateLimited { retry_after }
            | Self::Overloaded { retry_after } => Some(*retry_after),
            Self::DatabaseUnavailable => Some(DB_RETRY_AFTER_SECS),
            Self::FeedBusy => Some(FEED_BUSY_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The RFC 6749 §5.2 answers of `POST /token`.
    pub fn is_oauth(&self) -> bool {
        matches!(
            self,
            Self::TokenRequest(_) | Self::InvalidGrant | Self::UnsupportedGrantType
        )
    }

    /// Short label for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        // Why: `POST /token` is an OAuth endpoint; its clients read RFC 6749 §5.2's
        // `error_description`. Everything else keeps the house shape.
        let body = if self.is_oauth() {
            serde_json::json!({ "error": code, "error_description": message })
        } else {
            serde_json::json!({ "error": code, "message": message })
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        if matches!(
            self,
            Self::MissingToken | Self::InvalidToken | Self::RevokedToken
        ) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    if matches!(self, Self::InvalidToken | Self::RevokedToken) {
                        "Bearer realm=\"login-service\", error=\"invalid_token\""
                    } else {
                        "Bearer realm=\"login-service\""
                    },
                ),
            );
        } else if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(concat!(
                    "Basic realm=\"",
                    "login-service",
                    "\", charset=\"UTF-8\""
                )),
            );
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.is_oauth() {
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        resp
    }
}

/// The database failed: 503 with `Retry-After` (logged here, never put in the body).
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        warn!(error = %e, "database error");
        ApiError::DatabaseUnavailable
    }
}

/// The hashing queue is full: 503 with `Retry-After` (not logged per request: a flood would
/// flood the log; `login_attempts_total{outcome="overloaded"}` counts them). Hashing could
/// not run otherwise (not a wrong password): 500.
impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        if let PasswordError::Overloaded { retry_after } = e {
            return ApiError::Overloaded { retry_after };
        }
        warn!(error = %e, "password hashing failed");
        ApiError::Internal
    }
}

impl From<CredentialsError> for ApiError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::Missing => ApiError::MissingCredentials,
            CredentialsError::Malformed => ApiError::MalformedCredentials,
        }
    }
}

/// The answer to each way a login gives no token.
impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::UserIdTooLong => ApiError::UserIdTooLong,
            LoginError::InvalidCredentials => ApiError::InvalidCredentials,
            LoginError::Locked { retry_after } => ApiError::Locked { retry_after },
            LoginError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            LoginError::Database(e) => e.into(),
            LoginError::Password(e) => e.into(),
            LoginError::NoSigningKey => ApiError::Internal,
            LoginError::Signing(e) => {
                warn!(error = %e, "token signing failed");
                ApiError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_constant_matches_header() {
        let resp = ApiError::InvalidCredentials.into_response();
        let h = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(h.contains(&format!("realm=\"{REALM}\"")));
    }

    #[test]
    fn unknown_user_and_wrong_password_are_one_variant() {
        // Both paths construct InvalidCredentials; the body cannot differ.
        assert_eq!(
            ApiError::InvalidCredentials.parts().1,
            "invalid_credentials"
        );
        assert_eq!(ApiError::Locked { retry_after: 3 }.retry_after(), Some(3));
    }
}
