//! Per-route policy, read from the `context_extensions` Envoy attaches to each check.
//!
//! Keys (set per route or virtual host with `ExtAuthzPerRoute.check_settings.context_extensions`):
//! - [`REQUIRE_ROLES`]: comma-separated roles, all required; whitespace around names is trimmed
//!   and empty entries are ignored (`"admin, ,ops"` means admin and ops).
//! - [`ISSUERS`]: comma-separated issuer names whose tokens the route accepts (`local` is our
//!   own login-service, the others are `--oidc-issuer`/`--issuers-file` names). **Unset means
//!   `local` only**: an external identity provider passes only routes that opted in to it, so
//!   adding an issuer to ext-authz never opens a route by itself. Same list syntax as roles.
//!
//! Unknown keys are ignored, so Envoy configs can carry annotations for other tools; they are
//! documented in the crate README.

use std::collections::HashMap;

use auth_token::Claims;

/// The `context_extensions` key listing roles a route requires.
pub const REQUIRE_ROLES: &str = "require_roles";

/// The `context_extensions` key listing the issuers a route accepts (default: `local` only).
pub const ISSUERS: &str = "issuers";

/// The issuer a route accepts when it does not say: our own.
pub const DEFAULT_ISSUER: &str = "local";

/// What a route demands beyond a valid token. Borrows from the request: parsing allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy<'a> {
    require_roles: Option<&'a str>,
    issuers: Option<&'a str>,
}

impl<'a> Policy<'a> {
    /// No requirement beyond a valid token.
    pub const NONE: Policy<'static> = Policy {
        require_roles: None,
        issuers: None,
    };

    /// Reads the policy from Envoy's `context_extensions`; unknown keys are ignored.
    pub fn from_context_extensions(extensions: &'a HashMap<String, String>) -> Self {
        Self::from_lookup(|key| extensions.get(key).map(String::as_str))
    }

    /// Reads the policy through `extension` (the value of a `context_extensions` key, if set):
    /// the same as [`Policy::from_context_extensions`] for extensions kept in another form.
    pub fn from_lookup(extension: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            require_roles: extension(REQUIRE_ROLES),
            issuers: extension(ISSUERS),
        }
    }

    /// The policy's keys and their values as the route set them (for the decision log).
    pub fn as_set(&self) -> [(&'static str, Option<&'a str>); 2] {
        [(REQUIRE_ROLES, self.require_roles), (ISSUERS, self.issuers)]
    }

    /// A policy requiring the roles in `list` (same syntax as the `require_roles` key).
    pub fn require_roles(list: &'a str) -> Self {
        Self {
            require_roles: Some(list),
            issuers: None,
        }
    }

    /// The same policy, accepting the issuers in `list` (same syntax as the `issuers` key).
    pub fn with_issuers(self, list: &'a str) -> Self {
        Self {
            issuers: Some(list),
            ..self
        }
    }

    /// True when tokens of the issuer named `name` may pass this route: it is listed in
    /// `issuers`, or the route sets no list and `name` is [`DEFAULT_ISSUER`].
    pub fn accepts_issuer(&self, name: &str) -> bool {
        self.issuers
            .unwrap_or(DEFAULT_ISSUER)
            .split(',')
            .map(str::trim)
            .any(|i| i == name)
    }

    /// The required roles, trimmed, without empty entries.
    pub fn required_roles(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.require_roles
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    /// True when `claims` carries every required role (roles compare case-sensitively).
    pub fn is_satisfied_by(&self, claims: &Claims) -> bool {
        self.required_roles().all(|role| claims.has_role(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::claims_with_roles as claims;

    #[test]
    fn parses_and_trims() {
        let ext = HashMap::from([
            (REQUIRE_ROLES.to_owned(), " admin, ,ops ,".to_owned()),
            ("unknown".to_owned(), "ignored".to_owned()),
        ]);
        let p = Policy::from_context_extensions(&ext);
        assert_eq!(p.required_roles().collect::<Vec<_>>(), ["admin", "ops"]);
        assert!(p.is_satisfied_by(&claims(&["ops", "admin", "x"])));
        assert!(!p.is_satisfied_by(&claims(&["admin"])));
        assert!(!p.is_satisfied_by(&claims(&["Admin", "ops"])));
    }

    #[test]
    fn empty_policy_requires_nothing() {
        let ext = HashMap::new();
        let p = Policy::from_context_extensions(&ext);
        assert_eq!(p, Policy::NONE);
        assert!(p.is_satisfied_by(&claims(&[])));
        assert!(Policy::require_roles(" , ").is_satisfied_by(&claims(&[])));
    }

    /// An external issuer passes only routes that name it; unset means our own issuer only.
    #[test]
    fn issuers_default_to_local_only() {
        let ext = HashMap::new();
        let p = Policy::from_context_extensions(&ext);
        assert!(p.accepts_issuer("local"));
        assert!(!p.accepts_issuer("keycloak"));

        let ext = HashMap::from([(ISSUERS.to_owned(), " keycloak , dex".to_owned())]);
        let p = Policy::from_context_extensions(&ext);
        assert!(p.accepts_issuer("keycloak") && p.accepts_issuer("dex"));
        assert!(
            !p.accepts_issuer("local"),
            "a list that omits local refuses local tokens"
        );
        assert!(!p.accepts_issuer("keycloak2") && !p.accepts_issuer(""));

        let p = Policy::NONE.with_issuers("local,keycloak");
        assert!(p.accepts_issuer("local") && p.accepts_issuer("keycloak"));
        // An empty list accepts nobody (not even local): a route can be closed to all tokens.
        assert!(!Policy::NONE.with_issuers("").accepts_issuer("local"));
    }
}
