//! The `CheckRequest` as ext-authz reads it off the wire (issue #15 §1): the same protobuf
//! schema as `envoy.service.auth.v3.CheckRequest`, decoded without copying the strings ext-authz
//! never looks at, and the gRPC codec and service that use it.
//!
//! Why: decoding Envoy's `CheckRequest` into the generated types allocates a `String` for every
//! request header name and value (a `HashMap` of them), every HTTP attribute (`id`, `method`,
//! `path`, `host`, `scheme`, `protocol`...) and every context extension, although a check reads
//! three headers and two extensions. Here the string fields of the three messages on the path to
//! the headers (`AttributeContext`, `Request`, `HttpRequest`) are decoded as [`Bytes`]: tonic
//! hands prost the request in one contiguous buffer, so a `Bytes` field is a reference-counted
//! slice of it, not a copy. Headers and extensions stay in wire order in a `Vec`.
//!
//! Behaviour is the generated decoder's, input for input and word for word in its errors (a
//! differential property test over raw bytes and the fuzz target hold it to that):
//! - same field numbers and wire types, so the same inputs are refused for their *structure*
//!   (prost checks a `bytes` field exactly as a `string` field: length-delimited, in bounds);
//! - every field declared `string` is checked for UTF-8 *as each copy is decoded*
//!   ([`merge_text`]): the generated decoder refuses a message in which any copy of a string
//!   field is not UTF-8, even one a later copy replaces;
//! - a `map<string, string>` is, on the wire, a repeated entry message with key 1 and value 2:
//!   decoded as such, a repeated name keeps every value and [`HttpRequest::header`] returns the
//!   last one, the one the generated `HashMap` keeps;
//! - errors carry the same context (`HttpRequest.path: Request.http: ...`), so the gRPC status
//!   message is the same;
//! - the other nested messages (peers, metadata, TLS session, time, `header_map`) are decoded
//!   into the generated types as before: they are rare or small, and keeping their full decoder
//!   keeps their validation identical without restating it here.

use std::marker::PhantomData;

use bytes::Bytes;
use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, TlsSession};
use envoy_types::pb::google::protobuf::Timestamp;
use prost::Message as _;
use prost::encoding::{self, DecodeContext, WireType};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::answer::CheckAnswer;
use crate::check::Headers;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// `attributes` (1).
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    /// `source` (1), decoded in full.
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    /// `destination` (2), decoded in full.
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    /// `request` (4).
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `context_extensions` (10): `map<string, string>` in wire order.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
    /// `metadata_context` (11), decoded in full.
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
    /// `route_metadata_context` (13), decoded in full.
    #[prost(message, optional, tag = "13")]
    pub route_metadata_context: Option<Metadata>,
    /// `tls_session` (12), decoded in full.
    #[prost(message, optional, tag = "12")]
    pub tls_session: Option<TlsSession>,
}

/// `envoy.service.auth.v3.AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// `time` (1), decoded in full.
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    /// `http` (2).
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `envoy.service.auth.v3.AttributeContext.HttpRequest`: every `string` field as [`Bytes`],
/// checked for UTF-8 as it is decoded ([`merge_text`]). Its `prost::Message` is written out
/// below rather than derived, because a derived `bytes` field is not checked.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct HttpRequest {
    /// `id` (1, string).
    pub id: Bytes,
    /// `method` (2, string).
    pub method: Bytes,
    /// `headers` (3): `map<string, string>` in wire order.
    pub headers: Vec<Entry>,
    /// `path` (4, string).
    pub path: Bytes,
    /// `host` (5, string).
    pub host: Bytes,
    /// `scheme` (6, string).
    pub scheme: Bytes,
    /// `query` (7, string).
    pub query: Bytes,
    /// `fragment` (8, string).
    pub fragment: Bytes,
    /// `size` (9).
    pub size: i64,
    /// `protocol` (10, string).
    pub protocol: Bytes,
    /// `body` (11, string).
    pub body: Bytes,
    /// `raw_body` (12, bytes: not text).
    pub raw_body: Bytes,
    /// `header_map` (13), decoded in full.
    pub header_map: Option<HeaderMap>,
}

impl HttpRequest {
    /// The `string` fields with their tags, in tag order.
    fn texts(&self) -> [(u32, &Bytes); 9] {
        [
            (1, &self.id),
            (2, &self.method),
            (4, &self.path),
            (5, &self.host),
            (6, &self.scheme),
            (7, &self.query),
            (8, &self.fragment),
            (10, &self.protocol),
            (11, &self.body),
        ]
    }

    /// The `bytes` fields (`string` or not) with their tags, in tag order.
    fn all_bytes(&self) -> impl Iterator<Item = (u32, &Bytes)> {
        self.texts()
            .into_iter()
            .chain(std::iter::once((12, &self.raw_body)))
    }
}

/// What `prost-derive` would generate for the message, with [`merge_text`] for the `string`
/// fields and the same error context (`HttpRequest.<field>`) as the generated decoder adds.
impl prost::Message for HttpRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, value) in self.all_bytes() {
            if !value.is_empty() {
                encoding::bytes::encode(tag, value, buf);
            }
        }
        encoding::message::encode_repeated(3, &self.headers, buf);
        if self.size != 0 {
            encoding::int64::encode(9, &self.size, buf);
        }
        if let Some(map) = &self.header_map {
            encoding::message::encode(13, map, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let (field, merged) = match tag {
            1 => ("id", merge_text(wire_type, &mut self.id, buf, ctx)),
            2 => ("method", merge_text(wire_type, &mut self.method, buf, ctx)),
            3 => (
                "headers",
                encoding::message::merge_repeated(wire_type, &mut self.headers, buf, ctx),
            ),
            4 => ("path", merge_text(wire_type, &mut self.path, buf, ctx)),
            5 => ("host", merge_text(wire_type, &mut self.host, buf, ctx)),
            6 => ("scheme", merge_text(wire_type, &mut self.scheme, buf, ctx)),
            7 => ("query", merge_text(wire_type, &mut self.query, buf, ctx)),
            8 => (
                "fragment",
                merge_text(wire_type, &mut self.fragment, buf, ctx),
            ),
            9 => (
                "size",
                encoding::int64::merge(wire_type, &mut self.size, buf, ctx),
            ),
            10 => (
                "protocol",
                merge_text(wire_type, &mut self.protocol, buf, ctx),
            ),
            11 => ("body", merge_text(wire_type, &mut self.body, buf, ctx)),
            12 => (
                "raw_body",
                encoding::bytes::merge(wire_type, &mut self.raw_body, buf, ctx),
            ),
            13 => (
                "header_map",
                encoding::message::merge(
                    wire_type,
                    self.header_map.get_or_insert_with(HeaderMap::default),
                    buf,
                    ctx,
                ),
            ),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("HttpRequest", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        self.all_bytes()
            .filter(|(_, value)| !value.is_empty())
            .map(|(tag, value)| encoding::bytes::encoded_len(tag, value))
            .sum::<usize>()
            + encoding::message::encoded_len_repeated(3, &self.headers)
            + if self.size == 0 {
                0
            } else {
                encoding::int64::encoded_len(9, &self.size)
            }
            + self
                .header_map
                .as_ref()
                .map_or(0, |map| encoding::message::encoded_len(13, map))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// One entry of a `map<string, string>` (the wire form of a map: key 1, value 2; a missing key
/// or value is empty, as in the generated decoder). Decoded exactly as prost decodes a map entry
/// (the same recursion and length checks, unknown fields skipped, no error context of its own),
/// with both strings checked for UTF-8 as they arrive.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Entry {
    /// The key (string).
    pub key: Bytes,
    /// The value (string).
    pub value: Bytes,
}

impl prost::Message for Entry {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, value) in [(1, &self.key), (2, &self.value)] {
            if !value.is_empty() {
                encoding::bytes::encode(tag, value, buf);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => merge_text(wire_type, &mut self.key, buf, ctx),
            2 => merge_text(wire_type, &mut self.value, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        [(1, &self.key), (2, &self.value)]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(tag, value)| encoding::bytes::encoded_len(tag, value))
            .sum()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A `string` field kept as a slice of the received buffer: prost's `bytes` merge (the same
/// wire-type and length checks as its `string` merge), then the UTF-8 check `string` makes.
///
/// Why on every copy, as it arrives: a field sent twice keeps its last copy, but the generated
/// decoder refuses the message when *any* copy is not UTF-8; checking only what is left at the
/// end accepted `path="\xff", path="/"`, which the generated decoder refuses (attack review M1).
fn merge_text(
    wire_type: WireType,
    value: &mut Bytes,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), prost::DecodeError> {
    encoding::bytes::merge(wire_type, value, buf, ctx)?;
    if std::str::from_utf8(value).is_err() {
        value.clear();
        return Err(not_utf8());
    }
    Ok(())
}

/// prost's own "not UTF-8" error, word for word (prost keeps its constructor private):
/// decoding one byte that cannot start a UTF-8 sequence as a `string` yields exactly it.
#[cold]
fn not_utf8() -> prost::DecodeError {
    encoding::string::merge(
        WireType::LengthDelimited,
        &mut String::new(),
        &mut &[1_u8, 0xff][..],
        DecodeContext::default(),
    )
    .expect_err("0xff never starts a UTF-8 sequence")
}

impl CheckRequest {
    /// The request's HTTP attributes, if it has any.
    pub fn http(&self) -> Option<&HttpRequest> {
        self.attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
    }

    /// The value of context extension `key` (the last one, as a map keeps).
    pub fn extension(&self, key: &str) -> Option<&str> {
        last(&self.attributes.as_ref()?.context_extensions, key)
    }
}

/// Header `name` (lower-case, as Envoy sends names), the last value when the map repeats it, as
/// the generated decoder's `HashMap` keeps.
impl Headers for HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        last(&self.headers, name)
    }
}

/// The value of the last entry named `key`. A linear scan: Envoy sends a few headers (two with
/// the shipped `allowed_headers`), and the message size limit (4 MiB) bounds the worst case.
fn last<'a>(entries: &'a [Entry], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|e| e.key == key.as_bytes())
        // The decoder refuses a value that is not UTF-8; one built otherwise reads as U+FFFD,
        // which no token, role list or issuer is, so a check fails closed instead of reading
        // "absent" (attack review L2: an absent `require_roles` requires nothing).
        .map(|e| std::str::from_utf8(&e.value).unwrap_or("\u{fffd}"))
}

/// The gRPC codec of the Check method: [`CheckRequest`] in (validated), a [`CheckAnswer`] out
/// (an allow written by hand, anything else by prost) — tonic's prost codec, with both types
/// swapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckAnswer;
    type Decode = CheckRequest;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder
    }
}

/// Encodes a [`CheckAnswer`] ([`CheckAnswer::encode`]).
#[derive(Debug, Clone, Copy)]
pub struct ResponseEncoder(PhantomData<()>);

impl Encoder for ResponseEncoder {
    type Item = CheckAnswer;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // An `EncodeBuf` grows as needed, so this cannot fail; if it did, an error (not an
        // empty message, which Envoy would read as an allow).
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes a [`CheckRequest`]; any failure is INTERNAL, as tonic's prost decoder
/// answers a decode error.
#[derive(Debug, Clone, Copy)]
pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = CheckRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<CheckRequest>, Status> {
        let request = decode(buf).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(request))
    }
}

/// Decodes one `CheckRequest` from `buf` (see the module docs): the generated decoder's
/// answer for every input, with the strings left in `buf`.
pub fn decode(buf: impl bytes::Buf) -> Result<CheckRequest, prost::DecodeError> {
    CheckRequest::decode(buf)
}

#[cfg(test)]
mod tests;
