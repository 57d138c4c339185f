//! What a check answers, and the allow's `CheckResponse` encoded by hand (issue #15 §1).
//!
//! [`CheckAnswer`] is a decision ready to be sent: an allow (or dry-run allow) as the few values
//! it is made of, or any other answer as the generated `CheckResponse`. The server writes an
//! allow's protobuf bytes straight from those values ([`Allow::encode`]); tests, benches and
//! the generated `Authorization` trait turn it into the generated type
//! ([`CheckAnswer::into_response`]).
//!
//! Why by hand: building the generated `CheckResponse` of an allow took about twenty small
//! allocations (each identity header's name and value, the roles joined, the decision log's
//! `Struct` as a `HashMap` of owned keys and values) that were freed right after prost wrote
//! them out; here an allow shares the claims with the token cache and allocates only a copy of
//! each policy value the route sets (the request's buffer does not outlive the answer).
//! The bytes are the same message: a differential property test (`answer::tests`) decodes them
//! with the generated decoder and compares with [`CheckAnswer::into_response`].
//!
//! The message, field by field (proto3, `envoy.service.auth.v3`): `CheckResponse.status` (1) =
//! `google.rpc.Status{}` (OK: an empty message, present), `ok_response` (3) =
//! `OkHttpResponse{headers (2): HeaderValueOption*, headers_to_remove (5): string*}`,
//! `dynamic_metadata` (4) = `google.protobuf.Struct{fields (1): map<string, Value>}`; a
//! `HeaderValueOption` is `{header (1): HeaderValue{key (1), value (2)}, append (2):
//! BoolValue{} (false, present), keep_empty_value (4): true}`.

use std::collections::HashMap;
use std::sync::Arc;

use auth_token::Claims;
use bytes::BufMut;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, HeaderValue, HeaderValueOption, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// Identity header: the token's `sub`.
pub const USER_ID_HEADER: &str = "x-auth-user-id";
/// Identity header: the token's `email`.
pub const EMAIL_HEADER: &str = "x-auth-email";
/// Identity header: the token's `roles`, comma-joined (empty when none).
pub const ROLES_HEADER: &str = "x-auth-roles";

/// A check's answer, ready to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckAnswer {
    /// Let the request through (an allow, or a dry-run allow).
    Allow(Allow),
    /// Any other answer (a denial), as the generated type.
    Response(CheckResponse),
}

/// An allow: the identity to pass upstream and the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// The verified claims: set as the identity headers. `None` (a dry run without a valid
    /// token): no identity, and the identity headers a client sent are removed.
    pub identity: Option<Arc<Claims>>,
    /// Also remove the `authorization` header (`--strip-authorization`).
    pub strip_authorization: bool,
    /// The decision log (`dynamic_metadata`).
    pub log: DecisionLog,
}

/// The decision log entry Envoy gets as `dynamic_metadata` (see `service::decision_log`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLog {
    /// `decision`: `allow`, `deny`, `dry_run_allow`.
    pub decision: &'static str,
    /// `reason`.
    pub reason: &'static str,
    /// `subject`: the verified token's `sub`, when there is one.
    pub subject: Option<Arc<Claims>>,
    /// `kid`: the verifying key's, when it is one we may log.
    pub kid: Option<Arc<str>>,
    /// The route's policy keys, when set (route configuration, never client input).
    pub policy: [(&'static str, Option<Box<str>>); 2],
}

impl CheckAnswer {
    /// The generated `CheckResponse` of this answer: the same message [`Allow::encode`] writes.
    pub fn into_response(self) -> CheckResponse {
        match self {
            Self::Allow(allow) => allow.into_response(),
            Self::Response(response) => response,
        }
    }

    /// The decision log's `decision` and `reason` (for the check's trace span).
    pub fn outcome(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::Allow(allow) => (Some(allow.log.decision), Some(allow.log.reason)),
            Self::Response(response) => response_outcome(response),
        }
    }

    /// The `CheckResponse` as the server sends it (the gRPC message, without its frame).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode(&mut buf)
            .expect("a Vec grows: encoding cannot run out of space");
        buf
    }

    /// The generated `CheckResponse` a client decodes from what the server sends: what the
    /// differential tests compare (the bytes, not only [`Self::into_response`]).
    pub fn as_sent(&self) -> CheckResponse {
        CheckResponse::decode(self.encode_to_vec().as_slice())
            .expect("an encoded CheckResponse decodes")
    }

    /// Writes the `CheckResponse` (without the gRPC frame), or nothing and an error when `buf`
    /// cannot take it all. Why the error matters (attack review): an empty `CheckResponse` has
    /// no status, which Envoy reads as OK, an allow; the codec turns the error into a gRPC
    /// error instead, so Envoy applies `status_on_error`.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), BufferFull> {
        let required = match self {
            Self::Allow(allow) => allow.encoded_len(),
            Self::Response(response) => response.encoded_len(),
        };
        let remaining = buf.remaining_mut();
        if remaining < required {
            return Err(BufferFull {
                required,
                remaining,
            });
        }
        match self {
            Self::Allow(allow) => allow.encode(buf),
            // Why no error: there is room (checked above), prost's only failure.
            Self::Response(response) => {
                let _ = response.encode(buf);
            }
        }
        Ok(())
    }
}

/// A buffer without room for an answer (nothing was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the answer needs {required} bytes, the buffer has room for {remaining}")]
pub struct BufferFull {
    /// Bytes the answer needs.
    pub required: usize,
    /// Bytes the buffer could take.
    pub remaining: usize,
}

/// A generated response's decision log `decision` and `reason`.
pub fn response_outcome(response: &CheckResponse) -> (Option<&str>, Option<&str>) {
    let fields = response.dynamic_metadata.as_ref().map(|m| &m.fields);
    let text = |key: &str| match fields
        .and_then(|f| f.get(key))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(value)) => Some(value.as_str()),
        _ => None,
    };
    (text("decision"), text("reason"))
}

impl DecisionLog {
    /// The entries, in a fixed order, values borrowed.
    fn entries(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let known = [
            Some(("decision", self.decision)),
            Some(("reason", self.reason)),
            self.subject.as_deref().map(|c| ("subject", c.sub.as_str())),
            self.kid.as_deref().map(|kid| ("kid", kid)),
        ];
        let policy = self
            .policy
            .iter()
            .map(|(key, value)| value.as_deref().map(|v| (*key, v)));
        known.into_iter().chain(policy).flatten()
    }

    /// As the generated `Struct`.
    pub fn to_struct(&self) -> Struct {
        let fields: HashMap<String, Value> = self
            .entries()
            .map(|(key, value)| {
                let value = Value {
                    kind: Some(Kind::StringValue(value.to_owned())),
                };
                (key.to_owned(), value)
            })
            .collect();
        Struct { fields }
    }

    /// The `Struct`'s length, encoded.
    fn encoded_len(&self) -> usize {
        self.entries()
            .map(|(key, value)| field_len(map_entry_len(key, value)))
            .sum()
    }

    /// `Struct.fields`: one map entry `{key (1), value (2): Value{string_value (3)}}` each.
    fn encode(&self, buf: &mut impl BufMut) {
        for (key, value) in self.entries() {
            begin(1, map_entry_len(key, value), buf);
            string(1, key, buf);
            begin(2, value_len(value), buf);
            // Why always written: a oneof member is present even when empty.
            begin(3, value.len(), buf);
            buf.put_slice(value.as_bytes());
        }
    }
}

impl Allow {
    /// As the generated `CheckResponse`.
    pub fn into_response(self) -> CheckResponse {
        let mut ok = OkHttpResponse::default();
        match &self.identity {
            Some(claims) => {
                // Why: set all three every time, overwriting, so a client cannot spoof any.
                ok.headers = vec![
                    header_option(USER_ID_HEADER, claims.sub.clone()),
                    header_option(EMAIL_HEADER, claims.email.clone()),
                    header_option(ROLES_HEADER, claims.roles.join(",")),
                ];
            }
            None => {
                // Dry-run without a valid token: no identity, and none smuggled by the client.
                ok.headers_to_remove = IDENTITY.map(str::to_owned).to_vec();
            }
        }
        if self.strip_authorization {
            ok.headers_to_remove.push("authorization".to_owned());
        }
        CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok as i32,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(ok)),
            dynamic_metadata: Some(self.log.to_struct()),
        }
    }

    /// The names removed from the request: the identity headers without an identity, and
    /// `authorization` when stripped.
    fn removed(&self) -> impl Iterator<Item = &'static str> {
        let identity = self.identity.is_none().then_some(IDENTITY);
        identity
            .into_iter()
            .flatten()
            .chain(self.strip_authorization.then_some("authorization"))
    }

    /// The identity headers' values: `sub`, `email`, and the roles as pieces to join.
    fn identity_headers(claims: &Claims) -> [(&'static str, Joined<'_>); 3] {
        [
            (USER_ID_HEADER, Joined::One(&claims.sub)),
            (EMAIL_HEADER, Joined::One(&claims.email)),
            (ROLES_HEADER, Joined::Roles(&claims.roles)),
        ]
    }

    fn ok_response_len(&self) -> usize {
        let headers: usize = self.identity.as_deref().map_or(0, |claims| {
            Self::identity_headers(claims)
                .iter()
                .map(|(name, value)| field_len(header_option_len(name, value.len())))
                .sum()
        });
        let removed: usize = self.removed().map(|name| field_len(name.len())).sum();
        headers + removed
    }

    /// The length of the whole `CheckResponse`, encoded.
    pub fn encoded_len(&self) -> usize {
        field_len(0) + field_len(self.ok_response_len()) + field_len(self.log.encoded_len())
    }

    /// Writes the `CheckResponse` (without the gRPC frame); `buf` must have room for
    /// [`Self::encoded_len`] bytes ([`CheckAnswer::encode`] checks).
    fn encode(&self, buf: &mut impl BufMut) {
        // status (1): OK, an empty message.
        begin(1, 0, buf);
        // ok_response (3).
        begin(3, self.ok_response_len(), buf);
        if let Some(claims) = self.identity.as_deref() {
            for (name, value) in Self::identity_headers(claims) {
                begin(2, header_option_len(name, value.len()), buf);
                begin(1, header_value_len(name, value.len()), buf);
                string(1, name, buf);
                // Why skipped when empty: proto3 omits a default scalar; the generated encoder
                // does too (an empty `x-auth-roles` still overwrites: `keep_empty_value`).
                if value.len() > 0 {
                    begin(2, value.len(), buf);
                    value.put(buf);
                }
                // append (2): BoolValue{value: false}, present and empty (see `header_option`).
                begin(2, 0, buf);
                // keep_empty_value (4): true.
                encode_key(4, WireType::Varint, buf);
                buf.put_u8(1);
            }
        }
        for name in self.removed() {
            string(5, name, buf);
        }
        // dynamic_metadata (4).
        begin(4, self.log.encoded_len(), buf);
        self.log.encode(buf);
    }
}

/// The identity headers, in the order they are set.
const IDENTITY: [&str; 3] = [USER_ID_HEADER, EMAIL_HEADER, ROLES_HEADER];

/// A header value: one string, or the roles joined with `,` as it is written.
#[derive(Clone, Copy)]
enum Joined<'a> {
    One(&'a str),
    Roles(&'a [String]),
}

impl Joined<'_> {
    fn len(self) -> usize {
        match self {
            Self::One(s) => s.len(),
            Self::Roles(roles) => {
                roles.iter().map(String::len).sum::<usize>() + roles.len().saturating_sub(1)
            }
        }
    }

    fn put(self, buf: &mut impl BufMut) {
        match self {
            Self::One(s) => buf.put_slice(s.as_bytes()),
            Self::Roles(roles) => {
                for (i, role) in roles.iter().enumerate() {
                    if i > 0 {
                        buf.put_u8(b',');
                    }
                    buf.put_slice(role.as_bytes());
                }
            }
        }
    }
}

/// A `HeaderValueOption` that overwrites (or adds) `name`: every Envoy reads it the same way.
pub fn header_option(name: &str, value: String) -> HeaderValueOption {
    #[allow(deprecated)]
    // `append` is deprecated upstream, but it is the field every Envoy honours.
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        // Why: an unset append flag meant overwrite up to Envoy 1.36 and append in 1.37.0;
        // `append: false` is overwrite-or-add in every version. `append_action` stays at its
        // default: Envoy's header parser refuses a non-default `append_action` next to `append`.
        append: Some(BoolValue { value: false }),
        append_action: 0,
        // Why: `x-auth-roles` is "" for a user without roles; it must still replace a spoofed value.
        keep_empty_value: true,
    }
}

/// `HeaderValue{key, value}`'s length (`value` omitted when empty).
fn header_value_len(name: &str, value: usize) -> usize {
    field_len(name.len()) + if value > 0 { field_len(value) } else { 0 }
}

/// `HeaderValueOption{header, append: {}, keep_empty_value: true}`'s length.
fn header_option_len(name: &str, value: usize) -> usize {
    field_len(header_value_len(name, value)) + field_len(0) + 2
}

/// `Value{string_value}`'s length.
fn value_len(value: &str) -> usize {
    field_len(value.len())
}

/// A `Struct.fields` map entry's length.
fn map_entry_len(key: &str, value: &str) -> usize {
    field_len(key.len()) + field_len(value_len(value))
}

/// A length-delimited field (a string, or a nested message) of `len` bytes, with its one-byte
/// key (every tag here is below 16) and its length.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field; its `len` bytes follow.
fn begin(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A string field, written even when empty (callers skip proto3 defaults themselves).
fn string(tag: u32, value: &str, buf: &mut impl BufMut) {
    begin(tag, value.len(), buf);
    buf.put_slice(value.as_bytes());
}

#[cfg(test)]
mod tests;
