//! ext-authz's optional modes through the real Envoy (issue #20): `--dry-run` lets every request
//! through but never lets a client's own `x-auth-*` headers reach the upstream, and
//! `--strip-authorization` removes the token before the upstream. demo-upstream echoes every
//! header it received, so the assertions read what the upstream really saw.

use reqwest::Method;
use reqwest::blocking::RequestBuilder;

use e2e::client::{Bearer as _, Reply};
use e2e::stack::{Stack, Transport};

/// The identity headers ext-authz owns.
const IDENTITY: [&str; 3] = ["x-auth-user-id", "x-auth-email", "x-auth-roles"];

/// A request carrying a client's own identity headers, in several spellings and repeated.
fn spoofed(request: RequestBuilder) -> RequestBuilder {
    request
        .header("x-auth-user-id", "0")
        .header("X-Auth-Email", "attacker@evil.example")
        .header("x-auth-roles", "admin")
        .header("x-auth-roles", "root")
}

#[test]
fn dry_run_allows_everything_without_client_identity_headers() {
    let stack = Stack::start_with_args(Transport::Tcp, &["--dry-run"]);
    let user = stack.login(&stack.user);
    let seen = stack.upstream_requests();

    // Would be denied (no token, a broken token, another scheme, a user on an admin route
    // holds a valid token, below): allowed, and what reaches the upstream has no identity the
    // client made up.
    let no_identity = [
        spoofed(stack.get("/x")),
        spoofed(stack.get("/admin/x")).bearer("not-a-token"),
        spoofed(stack.request(Method::DELETE, "/x")).bearer(&format!("{user}x")),
        spoofed(stack.get("/x")).basic_auth("a", Some("b")),
    ];
    let count = no_identity.len();
    for request in no_identity {
        let echo = Reply::of(request).echo();
        for name in IDENTITY {
            assert!(
                echo["headers"].get(name).is_none(),
                "{name} reached the upstream: {echo}"
            );
        }
    }

    // A valid token lacking the route's role: allowed with the token's identity, overwriting
    // the client's.
    let echo = Reply::of(spoofed(stack.get("/admin/x")).bearer(&user)).echo();
    let headers = &echo["headers"];
    assert_eq!(headers["x-auth-email"], stack.user.email.as_str(), "{echo}");
    assert_eq!(headers["x-auth-roles"], "", "{echo}");
    assert_ne!(headers["x-auth-user-id"], "0", "{echo}");
    assert_eq!(stack.upstream_requests(), seen + count as u64 + 1);
}

#[test]
fn strip_authorization_removes_the_token_before_the_upstream() {
    let stack = Stack::start_with_args(Transport::Tcp, &["--strip-authorization"]);
    let token = stack.login(&stack.admin);
    for request in [
        stack.get("/x").bearer(&token),
        stack.get("/admin/x").bearer(&token),
        // The scheme in another case is the same credential.
        stack
            .request(Method::POST, "/x")
            .header("authorization", format!("bEaReR {token}")),
    ] {
        let echo = Reply::of(request).echo();
        let headers = &echo["headers"];
        assert!(
            headers.get("authorization").is_none(),
            "the token reached the upstream: {echo}"
        );
        assert!(
            !echo.to_string().contains(&token),
            "the token reached the upstream: {echo}"
        );
        assert_eq!(
            headers["x-auth-email"],
            stack.admin.email.as_str(),
            "{echo}"
        );
    }
    // Denials are untouched by the option.
    Reply::of(stack.get("/x")).assert_denied(401, "missing_token", "missing bearer token");
}
