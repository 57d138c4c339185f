//! The wire decoder against the generated one: the same bytes are refused or accepted by both,
//! and when accepted a check reads the same headers and extensions and gives the same answer.

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::CheckRequest as Generated;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as GeneratedHttp;
use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::service::AuthzService;
use crate::test_support::*;

fn service() -> AuthzService {
    AuthzService::new(
        Arc::new(KeyStore::new(ring())),
        settings(false),
        Arc::new(Metrics::new()),
        false,
    )
}

fn entry(key: &[u8], value: &[u8]) -> Entry {
    Entry {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }
}

/// A request in wire form (duplicates and any bytes allowed), encoded.
fn encoded(headers: Vec<Entry>, extensions: Vec<Entry>, path: &[u8]) -> Vec<u8> {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: Bytes::from_static(b"1"),
                    method: Bytes::from_static(b"GET"),
                    headers,
                    path: Bytes::copy_from_slice(path),
                    ..Default::default()
                }),
            }),
            context_extensions: extensions,
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

/// Both decoders on `bytes`: they must agree on refusing, and on everything a check reads.
fn same_as_generated(bytes: &[u8], probes: &[&str]) -> Result<(), TestCaseError> {
    let generated = Generated::decode(bytes);
    let wire = decode(bytes);
    // The same refusal, word for word: tonic sends the error's text as the gRPC message.
    prop_assert_eq!(
        generated.as_ref().err().map(ToString::to_string),
        wire.as_ref().err().map(ToString::to_string)
    );
    let (Ok(generated), Ok(wire)) = (generated, wire) else {
        return Ok(());
    };
    let http = generated
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let extensions = generated.attributes.as_ref().map(|a| &a.context_extensions);
    let wire_http = wire.http();
    let mut names: Vec<&str> = probes.to_vec();
    names.extend(
        http.iter()
            .flat_map(|h| h.headers.keys().map(String::as_str)),
    );
    for name in &names {
        prop_assert_eq!(
            http.and_then(|h| h.headers.get(*name)).map(String::as_str),
            wire_http.header(name),
            "header {:?}",
            name
        );
    }
    let mut keys: Vec<&str> = vec!["require_roles", "issuers"];
    keys.extend(extensions.iter().flat_map(|e| e.keys().map(String::as_str)));
    for key in &keys {
        prop_assert_eq!(
            extensions.and_then(|e| e.get(*key)).map(String::as_str),
            wire.extension(key),
            "extension {:?}",
            key
        );
    }
    let service = service();
    prop_assert_eq!(
        service.check_request(&generated).ok(),
        service.check_wire(&wire).ok().map(|a| a.as_sent()),
        "different answers"
    );
    Ok(())
}

/// A realistic request: the bench's headers, a valid admin token, a role requirement.
fn realistic() -> Vec<u8> {
    let token = issue("k1", SECRET, &["admin"]);
    let mut headers = headers(&format!("Bearer {token}"));
    for (k, v) in [
        (":authority", "example.com"),
        (":method", "GET"),
        (":path", "/api/items?page=2"),
        ("x-request-id", "0b7d8f8e-5d1c-4f0e-9d55-3c2c6c2f2a11"),
    ] {
        headers.insert(k.to_owned(), v.to_owned());
    }
    auth_token::testing::check_request_for(
        GeneratedHttp {
            id: "1234".to_owned(),
            method: "GET".to_owned(),
            headers,
            path: "/api/items?page=2".to_owned(),
            host: "example.com".to_owned(),
            scheme: "http".to_owned(),
            protocol: "HTTP/1.1".to_owned(),
            ..Default::default()
        },
        &[("require_roles", "admin")],
    )
    .encode_to_vec()
}

#[test]
fn a_realistic_request_reads_the_same() {
    let bytes = realistic();
    same_as_generated(&bytes, &["authorization", "x-request-id"]).unwrap();
    let wire = decode(bytes.as_slice()).unwrap();
    assert!(wire.http().header("authorization").is_some());
    assert_eq!(wire.extension("require_roles"), Some("admin"));
    let answer = service().check_wire(&wire).unwrap().as_sent();
    assert_eq!(answer.status.map(|s| s.code), Some(0), "allowed");
}

/// Every field declared `string` in the proto refuses invalid UTF-8, as the generated decoder
/// does; `raw_body` (bytes) does not.
#[test]
fn invalid_utf8_is_refused_wherever_the_generated_decoder_refuses_it() {
    let bad: &[u8] = b"\xff\xfe";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "header value",
            encoded(vec![entry(b"authorization", bad)], vec![], b"/"),
        ),
        ("header name", encoded(vec![entry(bad, b"x")], vec![], b"/")),
        (
            "extension",
            encoded(vec![], vec![entry(b"require_roles", bad)], b"/"),
        ),
        ("path", encoded(vec![], vec![], bad)),
    ];
    for (what, bytes) in cases {
        assert!(Generated::decode(bytes.as_slice()).is_err(), "{what}");
        assert!(decode(bytes.as_slice()).is_err(), "{what}");
        same_as_generated(&bytes, &[]).unwrap();
    }
    for field in 1..=12u32 {
        let mut http = HttpRequest::default();
        let slot = match field {
            1 => &mut http.id,
            2 => &mut http.method,
            4 => &mut http.path,
            5 => &mut http.host,
            6 => &mut http.scheme,
            7 => &mut http.query,
            8 => &mut http.fragment,
            10 => &mut http.protocol,
            11 => &mut http.body,
            12 => &mut http.raw_body,
            _ => continue,
        };
        *slot = Bytes::from_static(b"\xc3\x28");
        let bytes = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            }),
        }
        .encode_to_vec();
        assert_eq!(
            Generated::decode(bytes.as_slice()).is_ok(),
            field == 12,
            "field {field}"
        );
        same_as_generated(&bytes, &[]).unwrap();
    }
}

/// A repeated header name: the generated map keeps the last value, and so does the lookup.
#[test]
fn a_repeated_name_reads_its_last_value() {
    let bytes = encoded(
        vec![
            entry(b"authorization", b"Bearer first"),
            entry(b"x", b"1"),
            entry(b"authorization", b"Bearer last"),
        ],
        vec![entry(b"require_roles", b"a"), entry(b"require_roles", b"b")],
        b"/",
    );
    same_as_generated(&bytes, &["authorization"]).unwrap();
    let wire = decode(bytes.as_slice()).unwrap();
    assert_eq!(wire.http().header("authorization"), Some("Bearer last"));
    assert_eq!(wire.extension("require_roles"), Some("b"));
}

/// A known field sent with another wire type is refused by both (here `path` as a varint).
#[test]
fn a_wrong_wire_type_is_refused_by_both() {
    // HttpRequest { path (4) as varint 1 } inside Request.http (2), AttributeContext.request
    // (4), CheckRequest.attributes (1).
    let http = [0x20, 0x01];
    let request = [&[0x12, http.len() as u8][..], &http].concat();
    let attributes = [&[0x22, request.len() as u8][..], &request].concat();
    let bytes = [&[0x0a, attributes.len() as u8][..], &attributes].concat();
    assert!(Generated::decode(bytes.as_slice()).is_err());
    assert!(decode(bytes.as_slice()).is_err());
}

/// A length-delimited field (tag below 16, wire type 2, length, bytes).
fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(tag < 16, "a one-byte key");
    let mut out = vec![tag << 3 | 2];
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// `HttpRequest` fields (already encoded) wrapped as `CheckRequest.attributes.request.http`,
/// followed by raw `AttributeContext` fields.
fn wrapped(http: &[u8], attributes: &[u8]) -> Vec<u8> {
    let request = field(2, http);
    field(1, &[field(4, &request), attributes.to_vec()].concat())
}

/// Attack review M1: a string field sent twice, the first copy not UTF-8, is refused as the
/// generated decoder refuses it, although the copy that would be kept is valid. Checking only
/// the kept copy accepted these, and read `require_roles` from an entry whose first key was not
/// UTF-8.
#[test]
fn a_replaced_copy_that_is_not_utf8_is_still_refused() {
    let cases = [
        (
            "path twice",
            wrapped(&[field(4, b"\xff"), field(4, b"/")].concat(), &[]),
        ),
        (
            "header key twice in one entry",
            wrapped(
                &field(
                    3,
                    &[field(1, b"\xff"), field(1, b"x"), field(2, b"y")].concat(),
                ),
                &[],
            ),
        ),
        (
            "extension key twice in one entry",
            wrapped(
                &[],
                &field(
                    10,
                    &[
                        field(1, b"\xff"),
                        field(1, b"require_roles"),
                        field(2, b"admin"),
                    ]
                    .concat(),
                ),
            ),
        ),
    ];
    for (what, bytes) in cases {
        let generated = Generated::decode(bytes.as_slice())
            .expect_err(what)
            .to_string();
        assert_eq!(
            decode(bytes.as_slice()).expect_err(what).to_string(),
            generated,
            "{what}"
        );
        assert!(generated.contains("not UTF-8"), "{what}: {generated}");
    }
}

/// One raw field of an `HttpRequest`: any tag 0..15 (known, unknown, or 0), as length-delimited
/// bytes or as a varint; the bytes are text, not UTF-8, or a map entry made the same way.
fn raw_field() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(b"authorization".to_vec()),
        Just(b"/".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"\xc3\x28".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..5),
    ];
    let entry_field = (0..4_u8, text.clone()).prop_map(|(tag, bytes)| field(tag, &bytes));
    let entry = proptest::collection::vec(entry_field, 0..4).prop_map(|fields| fields.concat());
    prop_oneof![
        (0..16_u8, text).prop_map(|(tag, bytes)| field(tag, &bytes)),
        entry.prop_map(|bytes| field(3, &bytes)),
        (0..16_u8, 0..3_u8).prop_map(|(tag, value)| vec![tag << 3, value]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Raw `HttpRequest` and `AttributeContext` fields in any order and number (repeated
    /// fields, repeated keys in one entry, unknown tags, wrong wire types, bad UTF-8 in any
    /// copy): both decoders refuse alike, with the same message, or read the same.
    #[test]
    fn raw_fields_are_refused_or_read_the_same(
        http in proptest::collection::vec(raw_field(), 0..8),
        extensions in proptest::collection::vec(raw_field(), 0..3),
    ) {
        // The extensions' fields are entries of `context_extensions` (10).
        let extensions: Vec<u8> = extensions.iter().map(|f| field(10, f)).collect::<Vec<_>>().concat();
        same_as_generated(&wrapped(&http.concat(), &extensions), &["authorization"])?;
    }

    /// Arbitrary names, values and extensions (any bytes, duplicates allowed).
    #[test]
    fn arbitrary_requests_read_the_same(
        headers in proptest::collection::vec(
            (prop_oneof![
                Just(b"authorization".to_vec()),
                Just(b"x-request-id".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..6),
            ], proptest::collection::vec(any::<u8>(), 0..12)),
            0..6,
        ),
        extensions in proptest::collection::vec(
            (prop_oneof![
                Just(b"require_roles".to_vec()),
                Just(b"issuers".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..4),
            ], proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
        path in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        let headers = headers.iter().map(|(k, v)| entry(k, v)).collect();
        let extensions = extensions.iter().map(|(k, v)| entry(k, v)).collect();
        same_as_generated(&encoded(headers, extensions, &path), &["authorization"])?;
    }

    /// A realistic request with bytes changed, inserted or cut: both decoders agree.
    #[test]
    fn mutated_requests_are_refused_or_read_the_same(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = realistic();
        for (at, byte, how) in edits {
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        same_as_generated(&bytes, &["authorization", "x-request-id"])?;
    }
}
