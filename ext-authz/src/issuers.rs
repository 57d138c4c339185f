//! Trusted external OIDC issuers, as data: their settings (`--oidc-issuer`, `--issuers-file`)
//! and the mapping of a foreign token's claims onto our identity (pure: no I/O, no clock).
//!
//! Trust rules (SECURITY.md "External issuers"):
//! - an issuer is named (`[a-z0-9-]`, at most [`MAX_NAME_LEN`] bytes); [`LOCAL`] is reserved for
//!   our own tokens (login-service), so a route's `issuers` list names exactly what it trusts;
//! - a foreign token's subject is namespaced as `NAME:sub` ([`namespaced_subject`]): our own
//!   subjects are database ids without `:`, so a foreign `sub` can neither read as a local user
//!   upstream nor match a local user's revocation (revocations apply to [`LOCAL`] tokens only);
//! - identity values that would become request headers are refused when they hold control
//!   characters (as for our own tokens).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

/// The name of our own issuer (login-service's tokens) in route `issuers` lists.
pub const LOCAL: &str = "local";

/// Longest issuer name.
pub const MAX_NAME_LEN: usize = 32;

/// Most external issuers one ext-authz trusts (each has a JWKS in memory and a refresh task).
pub const MAX_ISSUERS: usize = 16;

/// How roles are read from a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolesFormat {
    /// A JSON array of strings (Keycloak `realm_access.roles`, `groups`, `roles`); a single
    /// string is read as one role.
    #[default]
    Array,
    /// A space-separated string (OAuth 2.0 `scope`).
    SpaceSeparated,
}

/// One place roles come from: a dotted claim path and its format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesClaim {
    /// Dotted path into the payload, e.g. `realm_access.roles`.
    pub path: String,
    /// Array (default) or space-separated.
    #[serde(default)]
    pub format: RolesFormat,
}

/// Everything ext-authz knows about one trusted external issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// Route-facing name (`context_extensions` `issuers: "local,NAME"`).
    pub name: String,
    /// The issuer URL: discovery is `URL/.well-known/openid-configuration`, and tokens must
    /// carry exactly this `iss`.
    pub issuer: String,
    /// Required `aud` (a token's `aud` string or one element of its `aud` array). Mandatory
    /// ([`validate`]): without it, a token the IdP minted for any other client would pass.
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim path of the subject (default `sub`).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claim path of the e-mail (default `email`; a missing claim maps to an empty header).
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// Where roles come from; their union is the token's roles (default: none).
    #[serde(default)]
    pub roles_claims: Vec<RolesClaim>,
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_email_claim() -> String {
    "email".to_owned()
}

impl IssuerSettings {
    /// An issuer with the default claim mapping (`sub`, `email`, no roles) and no audience.
    pub fn new(name: &str, issuer: &str) -> Self {
        Self {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            audience: None,
            subject_claim: default_subject_claim(),
            email_claim: default_email_claim(),
            roles_claims: Vec::new(),
        }
    }

    /// The OIDC discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    /// True when `aud` (the token's claim: a string or an array of strings) satisfies the
    /// configured audience.
    pub fn audience_ok(&self, aud: Option<&Value>) -> bool {
        let Some(want) = &self.audience else {
            return true;
        };
        match aud {
            Some(Value::String(s)) => s == want,
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        }
    }
}

/// The `--issuers-file` document: `{"issuers": [IssuerSettings, ...]}` (JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuersFile {
    /// The issuers, in any order; names and URLs unique.
    pub issuers: Vec<IssuerSettings>,
}

/// A refused issuer configuration (names and URLs only; no secrets exist here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerConfigError {
    /// Not `NAME=URL#AUDIENCE`.
    #[error("invalid --oidc-issuer {0:?}: expected NAME=URL#AUDIENCE")]
    Syntax(String),
    /// No audience: every token the IdP mints, for any client, would pass.
    #[error(
        "issuer {0:?} has no audience: a token the IdP minted for any other client would pass; set one (\"audience\" in the issuers file, or --oidc-issuer NAME=URL#AUDIENCE)"
    )]
    NoAudience(String),
    /// A name outside `[a-z0-9-]{1,32}`, or the reserved `local`.
    #[error("invalid issuer name {0:?}: use 1-32 of a-z 0-9 - (\"local\" is reserved)")]
    Name(String),
    /// The same name or issuer URL twice.
    #[error("issuer {0:?} configured twice")]
    Duplicate(String),
    /// Not an https URL (or http on a loopback host), or with a query/fragment.
    #[error("invalid issuer URL {0:?}: need https://host[/path] (http:// only for loopback hosts)")]
    Url(String),
    /// An empty claim path or one with an empty segment.
    #[error("issuer {name:?}: invalid claim path {path:?}")]
    ClaimPath {
        /// The issuer's name.
        name: String,
        /// The path.
        path: String,
    },
    /// More than [`MAX_ISSUERS`].
    #[error("at most {MAX_ISSUERS} external issuers")]
    TooMany,
    /// The file is not a valid issuers document.
    #[error("invalid issuers file: {0}")]
    File(String),
}

/// Parses one `--oidc-issuer NAME=URL#AUDIENCE` value (default claim mapping). `#` cannot be
/// part of an issuer URL (OpenID Connect Discovery: no fragment), so it separates the audience.
pub fn parse_flag(value: &str) -> Result<IssuerSettings, IssuerConfigError> {
    let (name, rest) = value
        .split_once('=')
        .ok_or_else(|| IssuerConfigError::Syntax(value.to_owned()))?;
    let (url, audience) = match rest.split_once('#') {
        Some((url, audience)) => (url, Some(audience.trim().to_owned())),
        None => (rest, None),
    };
    Ok(IssuerSettings {
        audience,
        ..IssuerSettings::new(name.trim(), url.trim())
    })
}

/// Parses an `--issuers-file` document (JSON).
pub fn parse_file(text: &str) -> Result<Vec<IssuerSettings>, IssuerConfigError> {
    serde_json::from_str::<IssuersFile>(text)
        .map(|f| f.issuers)
        .map_err(|e| IssuerConfigError::File(e.to_string()))
}

/// Checks a complete issuer list: names, URLs, claim paths, uniqueness, count.
pub fn validate(issuers: &[IssuerSettings]) -> Result<(), IssuerConfigError> {
    if issuers.len() > MAX_ISSUERS {
        return Err(IssuerConfigError::TooMany);
    }
    let (mut names, mut urls) = (HashSet::new(), HashSet::new());
    for i in issuers {
        if !valid_name(&i.name) {
            return Err(IssuerConfigError::Name(i.name.clone()));
        }
        if !valid_issuer_url(&i.issuer) {
            return Err(IssuerConfigError::Url(i.issuer.clone()));
        }
        if !names.insert(i.name.as_str()) {
            return Err(IssuerConfigError::Duplicate(i.name.clone()));
        }
        if !urls.insert(i.issuer.as_str()) {
            return Err(IssuerConfigError::Duplicate(i.issuer.clone()));
        }
        let paths = [&i.subject_claim, &i.email_claim]
            .into_iter()
            .chain(i.roles_claims.iter().map(|r| &r.path));
        for path in paths {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(IssuerConfigError::ClaimPath {
                    name: i.name.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if let Some(i) = issuers
        .iter()
        .find(|i| i.audience.as_deref().is_none_or(str::is_empty))
    {
        return Err(IssuerConfigError::NoAudience(i.name.clone()));
    }
    Ok(())
}

/// `[a-z0-9-]{1,32}` and not [`LOCAL`].
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != LOCAL
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An issuer URL: `https://`, or `http://` to a loopback host (tests, local development),
/// with a host and no query, fragment or credentials.
pub fn valid_issuer_url(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && match u.scheme() {
            "https" => u.host().is_some(),
            "http" => is_loopback(&u),
            _ => false,
        }
}

/// True when `u`'s host is `localhost` or a loopback IP literal.
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The identity a verified foreign token maps to (the values of the `x-auth-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `NAME:sub` ([`namespaced_subject`]).
    pub sub: String,
    /// The e-mail claim, or empty.
    pub email: String,
    /// The union of the configured roles claims, in first-seen order, without duplicates.
    pub roles: Vec<String>,
}

/// Why a verified foreign token cannot be mapped (the token is then refused as invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// No subject, or a subject that is not a non-empty string.
    #[error("missing subject claim")]
    MissingSubject,
    /// A value that would become a header holds a control character, or a claim has the
    /// wrong JSON type.
    #[error("malformed identity claim")]
    Malformed,
}

/// The subject our upstreams see for `sub` from issuer `name`: `name:sub`. Local subjects
/// never contain `:`, so the two spaces cannot collide.
pub fn namespaced_subject(name: &str, sub: &str) -> String {
    format!("{name}:{sub}")
}

/// Follows a dotted `path` into `payload` (`realm_access.roles`).
pub fn claim_at<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(payload, |v, key| v.get(key))
}

/// Maps a verified foreign payload to an [`Identity`] with `settings`' claim paths.
pub fn map_claims(payload: &Value, settings: &IssuerSettings) -> Result<Identity, MappingError> {
    let sub = match claim_at(payload, &settings.subject_claim) {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(MappingError::MissingSubject),
    };
    let email = match claim_at(payload, &settings.email_claim) {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(MappingError::Malformed),
    };
    let mut roles: Vec<String> = Vec::new();
    for source in &settings.roles_claims {
        let found: Vec<&str> = match (claim_at(payload, &source.path), source.format) {
            (None | Some(Value::Null), _) => Vec::new(),
            (Some(Value::String(s)), RolesFormat::SpaceSeparated) => s.split(' ').collect(),
            (Some(Value::String(s)), RolesFormat::Array) => vec![s.as_str()],
            (Some(Value::Array(items)), RolesFormat::Array) => items
                .iter()
                .map(|v| v.as_str().ok_or(MappingError::Malformed))
                .collect::<Result<_, _>>()?,
            (Some(_), _) => return Err(MappingError::Malformed),
        };
        for role in found {
            if !role.is_empty() && !roles.iter().any(|r| r == role) {
                roles.push(role.to_owned());
            }
        }
    }
    let header_safe = |s: &str| !s.bytes().any(|b| b < 0x20 || b == 0x7f);
    // Why: roles are joined with ',' into x-auth-roles; a role holding ',' would read as two.
    if !header_safe(sub)
        || !header_safe(email)
        || roles.iter().any(|r| !header_safe(r) || r.contains(','))
    {
        return Err(MappingError::Malformed);
    }
    Ok(Identity {
        sub: namespaced_subject(&settings.name, sub),
        email: email.to_owned(),
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keycloak() -> IssuerSettings {
        IssuerSettings {
            roles_claims: vec![
                RolesClaim {
                    path: "realm_access.roles".into(),
                    format: RolesFormat::Array,
                },
                RolesClaim {
                    path: "scope".into(),
                    format: RolesFormat::SpaceSeparated,
                },
            ],
            audience: Some("edge".into()),
            ..IssuerSettings::new("keycloak", "https://kc.example/realms/edge")
        }
    }

    #[test]
    fn keycloak_roles_and_scope_are_merged_and_subject_namespaced() {
        let payload = json!({
            "sub": "f1d2", "email": "a@example.org",
            "realm_access": {"roles": ["admin", "ops"]},
            "scope": "openid  ops profile",
        });
        let id = map_claims(&payload, &keycloak()).unwrap();
        assert_eq!(id.sub, "keycloak:f1d2");
        assert_eq!(id.email, "a@example.org");
        assert_eq!(id.roles, ["admin", "ops", "openid", "profile"]);
    }

    #[test]
    fn flat_groups_custom_subject_and_missing_email() {
        let s = IssuerSettings {
            subject_claim: "oid".into(),
            roles_claims: vec![RolesClaim {
                path: "groups".into(),
                format: RolesFormat::Array,
            }],
            ..IssuerSettings::new("dex", "https://dex.example")
        };
        let id = map_claims(&json!({"sub": "x", "oid": "7", "groups": ["g"]}), &s).unwrap();
        assert_eq!(
            id,
            Identity {
                sub: "dex:7".into(),
                email: String::new(),
                roles: vec!["g".into()],
            }
        );
        // No roles claim at all: no roles.
        assert!(
            map_claims(&json!({"oid": "7"}), &s)
                .unwrap()
                .roles
                .is_empty()
        );
    }

    #[test]
    fn refusals() {
        let s = keycloak();
        let cases = [
            (json!({}), MappingError::MissingSubject),
            (json!({"sub": ""}), MappingError::MissingSubject),
            (json!({"sub": 5}), MappingError::MissingSubject),
            (json!({"sub": "a\nb"}), MappingError::Malformed),
            (json!({"sub": "a", "email": 3}), MappingError::Malformed),
            (json!({"sub": "a", "email": "x\r"}), MappingError::Malformed),
            (
                json!({"sub": "a", "realm_access": {"roles": [1]}}),
                MappingError::Malformed,
            ),
            (
                json!({"sub": "a", "realm_access": {"roles": ["a,admin"]}}),
                MappingError::Malformed,
            ),
            (json!({"sub": "a", "scope": ["x"]}), MappingError::Malformed),
        ];
        for (payload, want) in cases {
            assert_eq!(map_claims(&payload, &s), Err(want), "{payload}");
        }
    }

    /// A foreign subject can never equal a local one (local subjects are ids without ':').
    #[test]
    fn foreign_subjects_never_look_local() {
        let id = map_claims(&json!({"sub": "1"}), &keycloak()).unwrap();
        assert_ne!(id.sub, "1");
        assert!(id.sub.contains(':'));
    }

    #[test]
    fn audience() {
        let s = keycloak();
        assert!(s.audience_ok(Some(&json!("edge"))));
        assert!(s.audience_ok(Some(&json!(["x", "edge"]))));
        assert!(!s.audience_ok(Some(&json!("other"))));
        assert!(!s.audience_ok(Some(&json!(["other"]))));
        assert!(!s.audience_ok(None));
        assert!(IssuerSettings::new("a", "https://a").audience_ok(None));
    }

    #[test]
    fn config_parsing_and_validation() {
        let file = r#"{"issuers": [
            {"name": "keycloak", "issuer": "https://kc.example/realms/edge", "audience": "edge",
             "roles_claims": [{"path": "realm_access.roles"},
                              {"path": "scope", "format": "space_separated"}]},
            {"name": "dev", "issuer": "http://127.0.0.1:8081", "audience": "edge"}
        ]}"#;
        let issuers = parse_file(file).unwrap();
        assert_eq!(issuers[0], keycloak());
        assert_eq!(issuers[1].subject_claim, "sub");
        validate(&issuers).unwrap();
        assert_eq!(
            issuers[0].discovery_url(),
            "https://kc.example/realms/edge/.well-known/openid-configuration"
        );

        assert!(matches!(
            parse_file(r#"{"issuers": [{"name": "a", "issuer": "https://a", "typo": 1}]}"#),
            Err(IssuerConfigError::File(_))
        ));
        assert_eq!(
            parse_flag("kc=https://kc.example#edge").unwrap(),
            IssuerSettings {
                audience: Some("edge".into()),
                ..IssuerSettings::new("kc", "https://kc.example")
            }
        );
        // No audience: any client's token of that IdP would pass (review finding, issue #12).
        for value in ["kc=https://kc.example", "kc=https://kc.example#"] {
            assert_eq!(
                validate(&[parse_flag(value).unwrap()]),
                Err(IssuerConfigError::NoAudience("kc".into())),
                "{value}"
            );
        }
        assert!(matches!(
            parse_flag("https://kc"),
            Err(IssuerConfigError::Syntax(_))
        ));

        let bad = |i: IssuerSettings| validate(&[i]).unwrap_err();
        assert!(matches!(
            bad(IssuerSettings::new("local", "https://a")),
            IssuerConfigError::Name(_)
        ));
        assert!(matches!(
            bad(IssuerSettings::new("Kc", "https://a")),
            IssuerConfigError::Name(_)
        ));
        for url in [
            "http://kc.example",
            "http://10.0.0.1",
            "ftp://a",
            "https://a?x=1",
            "https://u:p@a",
            "not a url",
        ] {
            assert!(
                matches!(
                    bad(IssuerSettings::new("a", url)),
                    IssuerConfigError::Url(_)
                ),
                "{url}"
            );
        }
        for url in ["http://localhost:1", "http://127.0.0.1:1", "http://[::1]:1"] {
            validate(&[IssuerSettings {
                audience: Some("edge".into()),
                ..IssuerSettings::new("a", url)
            }])
            .unwrap();
        }
        let mut s = IssuerSettings::new("a", "https://a");
        s.email_claim = "a..b".into();
        assert!(matches!(bad(s), IssuerConfigError::ClaimPath { .. }));
        let dup = [
            IssuerSettings::new("a", "https://a"),
            IssuerSettings::new("a", "https://b"),
        ];
        assert!(matches!(
            validate(&dup),
            Err(IssuerConfigError::Duplicate(_))
        ));
        let many: Vec<_> = (0..=MAX_ISSUERS)
            .map(|n| IssuerSettings::new(&format!("i{n}"), &format!("https://i{n}")))
            .collect();
        assert_eq!(validate(&many), Err(IssuerConfigError::TooMany));
    }
}
