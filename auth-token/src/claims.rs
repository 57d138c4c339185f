//! The claims login-service puts in a token and ext-authz reads back.

use serde::{Deserialize, Serialize};

/// Claims of an access token.
///
/// `sub` is the user's database id as a string, `roles` replaces the seed's `admin: true`
/// (`["admin"]`). `iss`/`aud` are present only when the issuer is configured with them. Unknown
/// claims are ignored on the way in; duplicated claims are rejected by the JSON parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stable user id (the `user.id` row), never the email: emails can change.
    pub sub: String,
    /// The login name, passed upstream as `x-auth-email`.
    pub email: String,
    /// Roles checked by per-route policy (`require_roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not valid before (Unix seconds).
    pub nbf: u64,
    /// Expiry (Unix seconds); required.
    pub exp: u64,
    /// Unique token id, the handle for revocation.
    pub jti: String,
    /// Issuer, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// True when the token carries `role`; roles compare exactly (case-sensitive).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
