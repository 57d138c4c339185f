use std::sync::Arc;

use auth_token::Claims;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use proptest::prelude::*;
use prost::Message as _;

use super::*;

fn claims(sub: &str, email: &str, roles: &[&str]) -> Arc<Claims> {
    Arc::new(Claims {
        sub: sub.to_owned(),
        email: email.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        iat: 1,
        nbf: 1,
        exp: 2,
        jti: "j".to_owned(),
        iss: None,
        aud: None,
    })
}

fn log(subject: Option<Arc<Claims>>, kid: Option<&str>, roles: Option<&str>) -> DecisionLog {
    DecisionLog {
        decision: "allow",
        reason: "ok",
        subject,
        kid: kid.map(Arc::from),
        policy: [("require_roles", roles.map(Box::from)), ("issuers", None)],
    }
}

/// The hand-written bytes, checked against the length they announce.
fn encoded(allow: &Allow) -> Vec<u8> {
    let mut buf = Vec::new();
    allow.encode(&mut buf);
    assert_eq!(buf.len(), allow.encoded_len(), "encoded_len");
    buf
}

/// The hand-written bytes decode, with the generated decoder, to the generated response.
fn assert_same_message(allow: &Allow) {
    let decoded = CheckResponse::decode(&encoded(allow)[..]).expect("decodes");
    assert_eq!(decoded, allow.clone().into_response());
}

#[test]
fn an_allow_is_the_generated_message() {
    let who = claims("42", "user@example.com", &["admin", "ops"]);
    let allow = Allow {
        identity: Some(who.clone()),
        strip_authorization: false,
        log: log(Some(who), Some("k1"), Some("admin")),
    };
    assert_same_message(&allow);
    // The identity as the headers Envoy sets, and `authorization` removed when stripped.
    let stripped = Allow {
        strip_authorization: true,
        ..allow
    };
    assert_same_message(&stripped);
    let Some(HttpResponse::OkResponse(ok)) = stripped.into_response().http_response else {
        panic!("not ok");
    };
    let set: Vec<_> = ok
        .headers
        .iter()
        .map(|h| {
            h.header
                .as_ref()
                .map(|h| (h.key.as_str(), h.value.as_str()))
        })
        .collect();
    assert_eq!(
        set,
        [
            Some((USER_ID_HEADER, "42")),
            Some((EMAIL_HEADER, "user@example.com")),
            Some((ROLES_HEADER, "admin,ops")),
        ]
    );
    assert_eq!(ok.headers_to_remove, ["authorization"]);
}

#[test]
fn empty_roles_are_sent_as_an_empty_value_that_still_overwrites() {
    let who = claims("7", "a@b.c", &[]);
    let allow = Allow {
        identity: Some(who.clone()),
        strip_authorization: false,
        log: log(Some(who), None, None),
    };
    assert_same_message(&allow);
    let response = allow.into_response();
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("not ok");
    };
    let roles = ok.headers[2].header.as_ref().unwrap();
    assert_eq!(
        (roles.key.as_str(), roles.value.as_str()),
        (ROLES_HEADER, "")
    );
    assert!(ok.headers[2].keep_empty_value);
}

#[test]
fn a_dry_run_without_identity_removes_the_identity_headers() {
    let allow = Allow {
        identity: None,
        strip_authorization: true,
        log: DecisionLog {
            decision: "dry_run_allow",
            reason: "missing_token",
            subject: None,
            kid: None,
            policy: [
                ("require_roles", Some("admin".into())),
                ("issuers", Some("local".into())),
            ],
        },
    };
    assert_same_message(&allow);
}

/// Lengths past every varint boundary a header can reach (a 20 KiB e-mail, 200 roles: 3-byte
/// lengths), and the characters a role list and a header care about.
#[test]
fn long_and_unusual_values_are_the_generated_message() {
    let roles: Vec<String> = (0..200).map(|i| format!("role-{i},x")).collect();
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let who = claims(
        &"7".repeat(200),
        &format!("{}@example.com", "a".repeat(20_000)),
        &roles,
    );
    let allow = Allow {
        identity: Some(who.clone()),
        strip_authorization: true,
        log: log(Some(who), Some("k1"), Some(&"r,".repeat(9_000))),
    };
    assert!(allow.encoded_len() > 16_384 + 2 * 9_000);
    assert_same_message(&allow);
}

/// A buffer that cannot take the answer gets nothing and an error, never a truncated or empty
/// message (an empty `CheckResponse` reads as OK at Envoy: an allow).
#[test]
fn a_full_buffer_is_an_error_not_an_empty_message() {
    let who = claims("42", "user@example.com", &["admin"]);
    let allow = CheckAnswer::Allow(Allow {
        identity: Some(who.clone()),
        strip_authorization: false,
        log: log(Some(who), Some("k1"), None),
    });
    let deny = CheckAnswer::Response(CheckResponse {
        status: Some(rpc::Status {
            code: 16,
            message: "missing_token".to_owned(),
            details: Vec::new(),
        }),
        ..Default::default()
    });
    for answer in [allow, deny] {
        let mut space = [0_u8; 8];
        let mut buf = &mut space[..];
        assert!(answer.encode(&mut buf).is_err(), "{answer:?}");
        assert_eq!(buf.len(), 8, "nothing written");
    }
}

fn text() -> impl Strategy<Value = String> {
    // Empty, ASCII, multi-byte, and long enough for a two-byte length varint.
    prop_oneof![
        Just(String::new()),
        "[a-z0-9@._-]{1,20}",
        "\\PC{0,10}",
        "[a-z]{120,300}",
    ]
}

proptest! {
    /// Any allow: the hand-written bytes are the generated message (decoded by the generated
    /// decoder, equal to [`CheckAnswer::into_response`]), and their length is announced right.
    #[test]
    fn any_allow_is_the_generated_message(
        sub in text(),
        email in text(),
        roles in proptest::collection::vec(text(), 0..5),
        with_identity in any::<bool>(),
        with_subject in any::<bool>(),
        strip in any::<bool>(),
        kid in proptest::option::of(text()),
        require in proptest::option::of(text()),
        issuers in proptest::option::of(text()),
        dry_run in any::<bool>(),
    ) {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let who = claims(&sub, &email, &roles);
        let allow = Allow {
            identity: with_identity.then(|| who.clone()),
            strip_authorization: strip,
            log: DecisionLog {
                decision: if dry_run { "dry_run_allow" } else { "allow" },
                reason: if dry_run { "insufficient_scope" } else { "ok" },
                subject: with_subject.then_some(who),
                kid: kid.as_deref().map(Arc::from),
                policy: [
                    ("require_roles", require.as_deref().map(Box::from)),
                    ("issuers", issuers.as_deref().map(Box::from)),
                ],
            },
        };
        let decoded = CheckResponse::decode(&encoded(&allow)[..]);
        prop_assert_eq!(decoded.as_ref().ok(), Some(&allow.clone().into_response()));
        // The decision log, against a list made here (both renderings read one list).
        let mut expected = vec![
            ("decision", allow.log.decision.to_owned()),
            ("reason", allow.log.reason.to_owned()),
        ];
        if with_subject {
            expected.push(("subject", sub.clone()));
        }
        for (key, value) in [("kid", kid), ("require_roles", require), ("issuers", issuers)] {
            if let Some(value) = value {
                expected.push((key, value));
            }
        }
        let fields = decoded.unwrap().dynamic_metadata.unwrap().fields;
        prop_assert_eq!(fields.len(), expected.len());
        for (key, value) in expected {
            let got = fields.get(key).and_then(|v| v.kind.clone());
            prop_assert_eq!(got, Some(Kind::StringValue(value)), "{}", key);
        }
    }
}
