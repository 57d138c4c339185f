//! Issue #12: external OIDC issuers through the real Envoy. The stack's ext-authz trusts test
//! issuers ([`TestIssuer`]: discovery + JWKS on loopback) from an `--issuers-file`; a second Envoy
//! ([`VariantEnvoy`]) runs the shipped config rendered with the `external_issuers` flag, whose
//! example routes `/sso/...` and `/sso/admin...` opt in with the `issuers` context extension
//! (every other route keeps accepting our own tokens only).
//!
//! What is proven: tokens of every supported algorithm pass where accepted, with roles mapped from
//! Keycloak's `realm_access.roles`, a flat `groups` and a space-separated `scope`, and a
//! namespaced `x-auth-user-id`; every refusal has its exact reason and never reaches the
//! upstream; the JWKS lifecycle (one fetch for a burst of unknown kids, rotation, issuer down,
//! removal); attack tokens (alg confusion, `alg: none`, mismatched JWK `alg`, `jku`/`x5u`/`x5c`
//! never fetched, an oversized JWKS, discovery redirected to another host).

use std::time::Duration;

use auth_token::now_unix as now;
use auth_token::testing::{b64, forge, metric_value};
use serde_json::{Value, json};

use e2e::client::{Bearer as _, Reply, client};
use e2e::oidc_issuer::{Alg, TestIssuer};
use e2e::process::wait_for;
use e2e::stack::{Stack, Transport};
use e2e::variant::VariantEnvoy;

/// How long a JWKS change may take to show (fetches are in the background).
const WAIT: Duration = Duration::from_secs(20);
/// `--jwks-unknown-kid-interval`: a burst of 32 requests through Envoy always falls in one
/// window, even on a loaded 2-core machine (ext-authz's tests/it saw a 1 s window split once).
const UNKNOWN_KID_INTERVAL: &str = "8s";

/// The stack, trusting each `(name, issuer)` with audience `edge` and the three role claims, and
/// the variant Envoy whose `/sso` routes accept `route_issuers`.
struct OidcStack {
    stack: Stack,
    _envoy: VariantEnvoy,
    _dir: tempfile::TempDir,
}

impl OidcStack {
    fn start(issuers: &[(&str, &TestIssuer)], route_issuers: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("issuers.json");
        let issuers: Vec<Value> = issuers
            .iter()
            .map(|(name, issuer)| {
                json!({
                    "name": name, "issuer": issuer.url, "audience": "edge",
                    "roles_claims": [
                        {"path": "realm_access.roles"},
                        {"path": "groups"},
                        {"path": "scope", "format": "space_separated"},
                    ],
                })
            })
            .collect();
        std::fs::write(&file, json!({ "issuers": issuers }).to_string()).expect("issuers file");
        let stack = Stack::start_with_args(
            Transport::Tcp,
            &[
                "--issuers-file",
                file.to_str().expect("UTF-8 path"),
                "--jwks-startup-wait",
                "2s",
                "--jwks-refresh-min",
                "200ms",
                "--jwks-unknown-kid-interval",
                UNKNOWN_KID_INTERVAL,
            ],
        );
        let envoy = VariantEnvoy::start(
            &["external_issuers"],
            &[&format!("external_issuers={route_issuers}")],
        );
        Self {
            stack,
            _envoy: envoy,
            _dir: dir,
        }
    }

    /// `GET path` on the variant Envoy with `token`.
    fn get(&self, path: &str, token: &str) -> Reply {
        Reply::of(client().get(VariantEnvoy::url(path)).bearer(token))
    }

    fn status(&self, path: &str, token: &str) -> u16 {
        self.get(path, token).status
    }

    /// Polls until `token` gets `status` on `path`, sending `trigger` (a token with an unknown
    /// kid: it asks for an early JWKS refresh) before each try when given.
    #[track_caller]
    fn wait_status(&self, what: &str, path: &str, token: &str, status: u16, trigger: Option<&str>) {
        let ok = wait_for(WAIT, || {
            if let Some(trigger) = trigger {
                self.get(path, trigger);
            }
            self.status(path, token) == status
        });
        assert!(ok, "{what}: {status} not seen within {WAIT:?}");
    }

    /// Asserts a 401 `invalid_token` with `message`, and that the upstream saw nothing.
    #[track_caller]
    fn assert_invalid(&self, path: &str, token: &str, message: &str, case: &str) {
        self.assert_refused(path, token, 401, "invalid_token", message, case);
    }

    /// Asserts the denial (status, challenge, JSON body), and that the upstream saw nothing.
    #[track_caller]
    fn assert_refused(
        &self,
        path: &str,
        token: &str,
        status: u16,
        error: &str,
        message: &str,
        case: &str,
    ) {
        let before = self.stack.upstream_requests();
        let reply = self.get(path, token);
        assert_eq!(reply.status, status, "{case}: {reply:?}");
        reply.assert_denied(status, error, message);
        assert_eq!(
            self.stack.upstream_requests(),
            before,
            "{case}: a refused request reached the upstream"
        );
    }

    /// The value of one ext-authz metric series (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.stack.ext_authz_metrics(), series).unwrap_or(0.0)
    }
}

/// The echo's identity headers of an allowed request to `path`, asserting the upstream saw it.
#[track_caller]
fn allowed(oidc: &OidcStack, path: &str, token: &str, case: &str) -> Value {
    let before = oidc.stack.upstream_requests();
    let reply = oidc.get(path, token);
    assert_eq!(reply.status, 200, "{case}: {reply:?}");
    assert_eq!(oidc.stack.upstream_requests(), before + 1, "{case}");
    reply.echo()["headers"].clone()
}

#[test]
fn external_issuer_tokens_pass_with_mapped_roles_only_on_routes_that_opt_in() {
    let issuer = TestIssuer::start(&[
        ("r1", Alg::Rs256),
        ("p1", Alg::Ps256),
        ("e1", Alg::Es256),
        ("d1", Alg::EdDsa),
    ]);
    let oidc = OidcStack::start(&[("sso", &issuer)], "local,sso");
    let first = issuer.token("r1", json!({}));
    oidc.wait_status("first JWKS", "/sso/x", &first, 200, None);

    // Every supported algorithm; identity namespaced by the issuer's name.
    for kid in ["r1", "p1", "e1", "d1"] {
        let token = issuer.token(kid, json!({"realm_access": {"roles": ["admin"]}}));
        let headers = allowed(&oidc, "/sso/admin/x", &token, kid);
        assert_eq!(headers["x-auth-user-id"], "sso:u-1", "{kid}: {headers}");
        assert_eq!(headers["x-auth-email"], "u@issuer.test", "{kid}: {headers}");
        assert_eq!(headers["x-auth-roles"], "admin", "{kid}: {headers}");
    }
    // Each role claim decides the role-restricted route on its own.
    for (case, claims) in [
        (
            "keycloak realm_access.roles",
            json!({"realm_access": {"roles": ["admin"]}}),
        ),
        ("flat groups", json!({"groups": ["admin"]})),
        ("space-separated scope", json!({"scope": "openid admin"})),
    ] {
        let token = issuer.token("e1", claims);
        let headers = allowed(&oidc, "/sso/admin", &token, case);
        assert_eq!(
            headers["x-auth-roles"],
            if case.contains("scope") {
                "openid,admin"
            } else {
                "admin"
            }
        );
    }
    let no_admin = issuer.token(
        "e1",
        json!({"scope": "openid profile", "groups": ["staff"], "realm_access": {"roles": ["user"]}}),
    );
    oidc.assert_refused(
        "/sso/admin/x",
        &no_admin,
        403,
        "insufficient_scope",
        "missing required role",
        "no admin role in any claim",
    );
    allowed(&oidc, "/sso/x", &no_admin, "any role on /sso");
    // `admin` anywhere else than a role claim (its subject) is no role.
    let admin_sub = issuer.token("e1", json!({"sub": "admin", "email": "admin"}));
    oidc.assert_refused(
        "/sso/admin",
        &admin_sub,
        403,
        "insufficient_scope",
        "missing required role",
        "admin as subject",
    );

    // Routes that did not opt in refuse them before any signature work: the default route,
    // the shipped /admin route, and the stack's own Envoy (the shipped config).
    let token = issuer.token("r1", json!({"groups": ["admin"]}));
    for path in ["/x", "/admin/x", "/ssox", "/login/../x"] {
        oidc.assert_invalid(path, &token, "wrong issuer", path);
    }
    let before = oidc.stack.upstream_requests();
    Reply::of(oidc.stack.get("/x").bearer(&token)).assert_denied(
        401,
        "invalid_token",
        "wrong issuer",
    );
    assert_eq!(oidc.stack.upstream_requests(), before);
    // Our own tokens still pass on the opted-in route (`local` is listed) and everywhere else.
    let own = oidc.stack.login(&oidc.stack.user);
    allowed(&oidc, "/sso/x", &own, "our own token on /sso");
    allowed(&oidc, "/x", &own, "our own token elsewhere");

    // Wrong audience, expired, wrong issuer: refused with the exact reason.
    let t = now();
    for (case, claims, message) in [
        (
            "wrong aud",
            json!({"aud": "another-client"}),
            "wrong audience",
        ),
        (
            "aud list without ours",
            json!({"aud": ["a", "b"]}),
            "wrong audience",
        ),
        ("no aud", json!({"aud": null}), "missing claim"),
        (
            "expired",
            json!({"iat": t - 900, "exp": t - 600}),
            "token expired",
        ),
        ("no exp", json!({"exp": null}), "missing claim"),
        (
            "not yet valid",
            json!({"nbf": t + 600}),
            "token not yet valid",
        ),
        ("no sub", json!({"sub": null}), "missing claim"),
    ] {
        let token = issuer.token("r1", claims);
        oidc.assert_invalid("/sso/x", &token, message, case);
    }
    // Another `iss` is not this issuer's token: it takes our own path, whose keys cannot
    // verify an RS256 token.
    let wrong_iss = issuer.token("r1", json!({"iss": format!("{}/other", issuer.url)}));
    oidc.assert_invalid("/sso/x", &wrong_iss, "unsupported algorithm", "wrong iss");
    let spoofed = issuer.token(
        "r1",
        json!({"iss": issuer.url.replace("127.0.0.1", "localhost")}),
    );
    oidc.assert_invalid(
        "/sso/x",
        &spoofed,
        "unsupported algorithm",
        "iss spelled otherwise",
    );
}

/// Unknown kids are denied at once and a burst of them costs the issuer exactly one JWKS fetch;
/// the rotation it announced is picked up; with the issuer down the last good keys keep
/// verifying; a key removed from the JWKS stops verifying after the next refresh.
#[test]
fn jwks_lifecycle_through_envoy() {
    let issuer = TestIssuer::start(&[("r1", Alg::Rs256)]);
    let oidc = OidcStack::start(&[("sso", &issuer)], "sso");
    let old = issuer.token("r1", json!({}));
    oidc.wait_status("first JWKS", "/sso/x", &old, 200, None);
    // A route listing only `sso`: our own token is another issuer's there.
    let own = oidc.stack.login(&oidc.stack.user);
    oidc.assert_invalid("/sso/x", &own, "wrong issuer", "own token, sso-only route");
    let wrong_iss = issuer.token("r1", json!({"iss": format!("{}/other", issuer.url)}));
    oidc.assert_invalid(
        "/sso/x",
        &wrong_iss,
        "wrong issuer",
        "wrong iss, sso-only route",
    );

    // Rotation: the issuer publishes e2 beside r1. A burst of tokens with unknown kids (e2's
    // first token among them), 8 clients at once: each denied at once, one fetch in all.
    issuer.add_key("e2", Alg::Es256);
    let new = issuer.token("e2", json!({}));
    let fetches = issuer.jwks_fetches();
    let upstream = oidc.stack.upstream_requests();
    let garbage = |n: usize| {
        issuer.sign(
            "r1",
            &json!({"kid": format!("nope-{n}")}),
            &issuer.claims(&json!({})),
        )
    };
    let burst: Vec<String> = std::iter::once(new.clone())
        .chain((0..31).map(garbage))
        .collect();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let workers: Vec<_> = burst
            .chunks(4)
            .map(|chunk| {
                let oidc = &oidc;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|t| oidc.get("/sso/x", t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client"))
            .collect()
    });
    // The new token may already pass when its reply comes after the early fetch landed; the
    // garbage never does.
    for (n, reply) in replies.iter().enumerate().skip(1) {
        reply.assert_denied(401, "invalid_token", "unknown signing key");
        assert!(reply.status == 401, "garbage {n}");
    }
    let passed = replies.iter().filter(|r| r.status == 200).count() as u64;
    assert_eq!(oidc.stack.upstream_requests(), upstream + passed);
    oidc.wait_status("rotation picked up", "/sso/x", &new, 200, None);
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "exactly one early JWKS fetch for a burst of 32 unknown kids"
    );
    assert_eq!(
        oidc.metric("ext_authz_jwks_unknown_kid_refreshes_total{issuer=\"sso\"}"),
        1.0
    );
    assert_eq!(
        oidc.metric("ext_authz_jwks_keys_loaded{issuer=\"sso\"}"),
        2.0
    );
    assert_eq!(oidc.status("/sso/x", &old), 200);

    // Issuer down: the next early refresh fails; the last good keys keep verifying.
    issuer.set_down(true);
    let trigger = garbage(1000);
    assert!(
        wait_for(WAIT, || {
            oidc.get("/sso/x", &trigger);
            oidc.metric("ext_authz_jwks_refresh_failures_total{issuer=\"sso\"}") >= 1.0
        }),
        "no failed refresh seen"
    );
    assert_eq!(oidc.status("/sso/x", &old), 200);
    assert_eq!(oidc.status("/sso/x", &new), 200);
    assert_eq!(
        oidc.metric("ext_authz_jwks_keys_loaded{issuer=\"sso\"}"),
        2.0
    );

    // Back, without r1: after the next refresh r1's tokens are refused, e2's still pass.
    issuer.set_down(false);
    issuer.remove_key("r1");
    oidc.wait_status("r1 removed", "/sso/x", &old, 401, Some(&trigger));
    oidc.assert_invalid(
        "/sso/x",
        &old,
        "unsupported algorithm",
        "removed key (no RS256 key left)",
    );
    assert_eq!(oidc.status("/sso/x", &new), 200);
    assert_eq!(
        oidc.metric("ext_authz_jwks_keys_loaded{issuer=\"sso\"}"),
        1.0
    );
}

/// Attack tokens and hostile issuers, through the real Envoy.
#[test]
fn attack_tokens_and_hostile_jwks_are_refused() {
    let issuer = TestIssuer::start(&[
        ("r1", Alg::Rs256),
        ("e1", Alg::Es256),
        ("d1", Alg::EdDsa),
        ("p1", Alg::Ps256),
        ("ps", Alg::Ps256),
        ("ec", Alg::Es256),
    ]);
    // JWKS members whose `alg` contradicts the token's or the key's: `ps` is a PS256 key
    // published as RS256; `ec`, a P-256 key published as RS256 (not usable at all).
    issuer.set_jwk_member("ps", "alg", json!("RS256"));
    issuer.set_jwk_member("ec", "alg", json!("RS256"));
    // A server the attacker runs: its keys, its JWKS. Nothing may ever be fetched from it.
    let attacker = TestIssuer::start(&[("evil", Alg::EdDsa)]);
    // An issuer whose discovery redirects to another host (the attacker's document).
    let redirecting = TestIssuer::start(&[("k1", Alg::EdDsa)]);
    redirecting.redirect_discovery(Some(format!(
        "{}/.well-known/openid-configuration",
        attacker.url.replace("127.0.0.1", "localhost")
    )));
    let oidc = OidcStack::start(
        &[("sso", &issuer), ("redir", &redirecting)],
        "local,sso,redir",
    );
    let good = issuer.token("r1", json!({"groups": ["admin"]}));
    oidc.wait_status("first JWKS", "/sso/x", &good, 200, None);
    let t = now();
    let payload = issuer
        .claims(&json!({"groups": ["admin"], "iat": t, "exp": t + 300}))
        .to_string();

    // Alg confusion: HS256 with the issuer's public key (PEM, or the JWK's text) as the secret.
    for kid in ["r1", "e1", "d1"] {
        for secret in [issuer.public_pem(kid), issuer.public_jwk(kid).to_string()] {
            let confused = forge(
                format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
                &payload,
                secret.as_bytes(),
            );
            // The issuer's keyring holds no HMAC key at all (a JWKS `oct` key is skipped).
            oidc.assert_invalid(
                "/sso/admin",
                &confused,
                "unsupported algorithm",
                &format!("HS256 with {kid}'s public key"),
            );
        }
    }
    // alg none (any spelling), with and without a signature part.
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","kid":"r1"}}"#).as_bytes());
        for sig in ["", "x"] {
            let none = format!("{header}.{}.{sig}", b64(payload.as_bytes()));
            oidc.assert_invalid(
                "/sso/admin",
                &none,
                "unsupported algorithm",
                &format!("alg {alg}"),
            );
        }
    }
    // A JWKS key whose alg mismatches: the token's PS256 meets a key published as RS256 (with
    // PS256 keys in the set, so the refusal is about this key, not the algorithm as such).
    let ps = issuer.token("ps", json!({}));
    oidc.assert_invalid(
        "/sso/x",
        &ps,
        "algorithm does not match the key",
        "JWK alg RS256, token PS256",
    );
    // A P-256 key published as RS256 is skipped: its kid is unknown.
    let ec = issuer.token("ec", json!({}));
    oidc.assert_invalid(
        "/sso/x",
        &ec,
        "unknown signing key",
        "P-256 JWK with alg RS256",
    );

    // jku / x5u / x5c pointing at the attacker: the attacker's signature is refused (the header
    // never chooses the key), the issuer's own signature passes with them ignored, and the
    // attacker's server is never contacted.
    let hostile = [
        json!({"jku": format!("{}/jwks", attacker.url)}),
        json!({"x5u": format!("{}/cert.pem", attacker.url)}),
        json!({"x5c": [b64(attacker.public_pem("evil").as_bytes())]}),
        json!({"jwk": attacker.public_jwk("evil")}),
    ];
    let claims = issuer.claims(&json!({"groups": ["admin"]}));
    for header in &hostile {
        let forged = attacker.sign("evil", header, &claims);
        oidc.assert_invalid(
            "/sso/admin",
            &forged,
            "unknown signing key",
            &format!("attacker key, {header}"),
        );
        let mut with_kid = header.clone();
        with_kid["kid"] = json!("d1");
        let forged = attacker.sign("evil", &with_kid, &claims);
        oidc.assert_invalid(
            "/sso/admin",
            &forged,
            "invalid signature",
            &format!("attacker key as d1, {header}"),
        );
        let genuine = issuer.sign("d1", header, &claims);
        allowed(
            &oidc,
            "/sso/admin",
            &genuine,
            &format!("issuer's key, {header} ignored"),
        );
    }

    // `crit` names extensions the verifier would have to understand: refused, even when the
    // issuer's own key signed it.
    let crit = issuer.sign("d1", &json!({"crit": ["exp"]}), &claims);
    oidc.assert_invalid("/sso/x", &crit, "unsupported token header", "crit");

    // Discovery redirected to another host: refused, the issuer never gets keys, its tokens are
    // refused, and the other host is never asked.
    assert!(
        wait_for(WAIT, || oidc.metric(
            "ext_authz_jwks_refresh_failures_total{issuer=\"redir\"}"
        ) >= 1.0),
        "no failed discovery for the redirecting issuer"
    );
    assert!(redirecting.discovery_fetches() >= 1);
    assert_eq!(redirecting.jwks_fetches(), 0);
    let redirected = redirecting.token("k1", json!({}));
    oidc.assert_invalid(
        "/sso/x",
        &redirected,
        "unknown signing key",
        "redirecting issuer",
    );

    // An oversized JWKS (with a new key in it): refused whole, the previous keys stay.
    issuer.add_key("big", Alg::EdDsa);
    issuer.serve_oversized_jwks(Some(300 * 1024));
    let big = issuer.token("big", json!({}));
    let failures = oidc.metric("ext_authz_jwks_refresh_failures_total{issuer=\"sso\"}");
    let fetches = issuer.jwks_fetches();
    assert!(
        wait_for(WAIT, || {
            oidc.get("/sso/x", &big);
            oidc.metric("ext_authz_jwks_refresh_failures_total{issuer=\"sso\"}") > failures
        }),
        "the oversized JWKS was not refused"
    );
    assert!(issuer.jwks_fetches() > fetches);
    oidc.assert_invalid(
        "/sso/x",
        &big,
        "unknown signing key",
        "key of an oversized JWKS",
    );
    allowed(
        &oidc,
        "/sso/admin",
        &good,
        "previous keys after an oversized JWKS",
    );
    assert_eq!(
        oidc.metric("ext_authz_jwks_keys_loaded{issuer=\"sso\"}"),
        5.0
    );
    // Back to a normal size: the new key is picked up.
    issuer.serve_oversized_jwks(None);
    oidc.wait_status("normal JWKS again", "/sso/x", &big, 200, None);

    assert_eq!(
        attacker.requests(),
        0,
        "the attacker's server was contacted"
    );
}
