//! Per-route policy, read from the `context_extensions` Envoy attaches to each check.
//!
//! Keys (set per route or virtual host with `ExtAuthzPerRoute.check_settings.context_extensions`):
//! - [`REQUIRE_ROLES`]: comma-separated roles, all required; whitespace around names is trimmed
//!   and empty entries are ignored (`"admin, ,ops"` means admin and ops).
//!
//! Unknown keys are ignored, so Envoy configs can carry annotations for other tools; they are
//! documented in the crate README.

use std::collections::HashMap;

use auth_token::Claims;

/// The `context_extensions` key listing roles a route requires.
pub const REQUIRE_ROLES: &str = "require_roles";

/// What a route demands beyond a valid token. Borrows from the request: parsing allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy<'a> {
    require_roles: Option<&'a str>,
}

impl<'a> Policy<'a> {
    /// No requirement beyond a valid token.
    pub const NONE: Policy<'static> = Policy {
        require_roles: None,
    };

    /// Reads the policy from Envoy's `context_extensions`; unknown keys are ignored.
    pub fn from_context_extensions(extensions: &'a HashMap<String, String>) -> Self {
        Self {
            require_roles: extensions.get(REQUIRE_ROLES).map(String::as_str),
        }
    }

    /// A policy requiring the roles in `list` (same syntax as the `require_roles` key).
    pub fn require_roles(list: &'a str) -> Self {
        Self {
            require_roles: Some(list),
        }
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
}
