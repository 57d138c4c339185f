//! ext-authz's `CheckRequest` → decision → `CheckResponse` path (`AuthzService::check_request`)
//! with arbitrary header maps and context extensions, optionally around a real token (signed
//! with `k1`, arbitrary roles, optionally mutated). Never panics, never errors (keys are loaded);
//! every allow must carry a token that really is our HMAC, whose roles cover `require_roles`,
//! and the identity headers must be the token's claims, set with `append: false`. The same
//! request encoded and decoded by `ext_authz::wire` (what the server runs) answers the same.

use std::sync::Arc;
use std::time::Duration;

use crate::{assert_really_signed, header_map, ring};
use arbitrary::Arbitrary;
use auth_token::{Issuer, Verifier, VerifierConfig};
use envoy_types::ext_authz::v3::pb::{CheckRequest as Generated, HttpResponse};
use ext_authz::Settings;
use ext_authz::check::Headers as _;
use ext_authz::keys::KeyStore;
use ext_authz::metrics::Metrics;
use ext_authz::service::AuthzService;

/// A real token to put in `authorization`: prefix, roles, optional mutation (byte index, replacement byte).
type TokenSpec = (String, Vec<String>, Option<(u16, u8)>);

#[derive(Debug, Arbitrary)]
pub struct Input {
    headers: Vec<(String, String)>,
    extensions: Vec<(String, String)>,
    /// Some: put a real token in `authorization` (prefix, roles, mutation).
    token: Option<TokenSpec>,
    dry_run: bool,
    /// Raw bytes for both decoders, as a client talking to ext-authz directly may send.
    raw: Vec<u8>,
}

/// One input (the fuzz target's body).
pub fn run(input: Input) {
    let ring = ring();
    let mut headers = header_map(&input.headers);
    if let Some((prefix, roles, mutation)) = &input.token {
        let key = ring.get(Some("k1")).expect("k1");
        let issuer = Issuer {
            ttl: Duration::from_secs(300),
            issuer: None,
            audience: None,
        };
        let mut token = issuer
            .issue(key, "7", "fuzz@example.com", roles, auth_token::now_unix())
            .map(|issued| issued.token)
            .unwrap_or_default()
            .into_bytes();
        if let Some((pos, byte)) = mutation
            && !token.is_empty()
        {
            let i = usize::from(*pos) % token.len();
            token[i] = *byte;
        }
        let token = String::from_utf8_lossy(&token);
        headers.insert("authorization".to_owned(), format!("{prefix}{token}"));
    }
    let extensions: Vec<(&str, &str)> = input
        .extensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = auth_token::testing::check_request(headers.clone(), &extensions);
    let settings = Settings {
        verifier: Verifier::new(&VerifierConfig::default()),
        realm: "edge".to_owned(),
        dry_run: input.dry_run,
        token_cache: None,
    };
    let service = AuthzService::new(
        Arc::new(KeyStore::new(ring)),
        settings,
        Arc::new(Metrics::new()),
        false,
    );
    same_decoding(&input.raw, &service);
    let response = service
        .check_request(&request)
        .expect("keys are loaded: never an error");
    // The server decodes with `ext_authz::wire` and writes an allow by hand (issue #15 §1): the
    // same bytes must decode and give the same answer, as sent, as the generated types.
    let bytes = prost::Message::encode_to_vec(&request);
    let wire = ext_authz::wire::decode(bytes.as_slice()).expect("an encoded request decodes");
    assert_eq!(
        service.check_wire(&wire).ok().map(|a| a.as_sent()).as_ref(),
        Some(&response),
        "the wire decoder answers differently"
    );
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        assert_ne!(code, 0, "OK status without an OkHttpResponse");
        return;
    };
    assert_eq!(code, 0, "OkHttpResponse with a non-OK status");
    if input.dry_run && ok.headers.is_empty() {
        // Dry-run allow without a valid token: identity headers must be removed, not set.
        for name in ["x-auth-user-id", "x-auth-email", "x-auth-roles"] {
            assert!(
                ok.headers_to_remove.iter().any(|h| h == name),
                "{name} not removed"
            );
        }
        return;
    }
    // A real allow: the token must really be ours and satisfy the route.
    let value = headers
        .get("authorization")
        .expect("allowed without authorization");
    let token = value.trim_matches([' ', '\t']);
    assert!(
        token.len() > 7 && token[..6].eq_ignore_ascii_case("bearer"),
        "{value:?}"
    );
    let token = token[6..].trim_start_matches(' ');
    assert_really_signed(token);
    let claims = Verifier::new(&VerifierConfig::default())
        .verify(token, &crate::ring(), auth_token::now_unix())
        .expect("allowed a token the verifier refuses");
    if !input.dry_run {
        let required = request
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get("require_roles"))
            .map(String::as_str)
            .unwrap_or("");
        for role in required.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            assert!(claims.has_role(role), "allowed without role {role:?}");
        }
    }
    #[allow(deprecated)]
    let set: Vec<(&str, &str, Option<bool>)> = ok
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().expect("header");
            (
                hv.key.as_str(),
                hv.value.as_str(),
                h.append.as_ref().map(|b| b.value),
            )
        })
        .collect();
    let roles = claims.roles.join(",");
    assert_eq!(
        set,
        vec![
            ("x-auth-user-id", claims.sub.as_str(), Some(false)),
            ("x-auth-email", claims.email.as_str(), Some(false)),
            ("x-auth-roles", roles.as_str(), Some(false)),
        ]
    );
}

/// One input as raw bytes, decoded as libfuzzer-sys decodes them (`arbitrary_take_rest`);
/// bytes that decode to no input are skipped, as the fuzzer skips them.
pub fn run_bytes(data: &[u8]) {
    use arbitrary::Arbitrary as _;
    if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        run(input);
    }
}

/// Raw bytes through the generated decoder and `ext_authz::wire`: the same refusal, word for
/// word (tonic sends it as the gRPC message), or the same headers, extensions and answer.
fn same_decoding(bytes: &[u8], service: &AuthzService) {
    let generated = <Generated as prost::Message>::decode(bytes);
    let wire = ext_authz::wire::decode(bytes);
    assert_eq!(
        generated.as_ref().err().map(ToString::to_string),
        wire.as_ref().err().map(ToString::to_string),
        "the decoders refuse differently"
    );
    let (Ok(generated), Ok(wire)) = (generated, wire) else {
        return;
    };
    let attributes = generated.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    for (name, value) in http.iter().flat_map(|h| &h.headers) {
        assert_eq!(
            wire.http().header(name),
            Some(value.as_str()),
            "header {name:?}"
        );
    }
    for (key, value) in attributes.iter().flat_map(|a| &a.context_extensions) {
        assert_eq!(
            wire.extension(key),
            Some(value.as_str()),
            "extension {key:?}"
        );
    }
    assert_eq!(
        service.check_request(&generated).ok(),
        service.check_wire(&wire).ok().map(|a| a.as_sent()),
        "the decoders answer differently"
    );
}
