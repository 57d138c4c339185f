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
//! Behaviour is the generated decoder's, field for field (a differential property test and the
//! fuzz target hold it to that):
//! - same field numbers and wire types, so the same inputs are refused for their *structure*
//!   (prost checks a `bytes` field exactly as a `string` field: length-delimited, in bounds);
//! - every field declared `string` in the proto is checked for UTF-8 after decoding
//!   ([`CheckRequest::validate`]), so the same inputs are refused for their *text*, with the
//!   same gRPC status (INTERNAL, as tonic answers any decode error);
//! - a `map<string, string>` is, on the wire, a repeated entry message with key 1 and value 2:
//!   decoded as such, a repeated name keeps every value and [`HttpRequest::header`] returns the
//!   last one, the one the generated `HashMap` keeps;
//! - the other nested messages (peers, metadata, TLS session, time, `header_map`) are decoded
//!   into the generated types as before: they are rare or small, and keeping their full decoder
//!   keeps their validation identical without restating it here.

use std::marker::PhantomData;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, TlsSession};
use envoy_types::pb::google::protobuf::Timestamp;
use prost::Message as _;
use tonic::Status;

use crate::check::Headers;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

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
/// checked by [`CheckRequest::validate`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// `id` (1, string).
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    /// `method` (2, string).
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `headers` (3): `map<string, string>` in wire order.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    /// `header_map` (13), decoded in full.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
    /// `path` (4, string).
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    /// `host` (5, string).
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    /// `scheme` (6, string).
    #[prost(bytes = "bytes", tag = "6")]
    pub scheme: Bytes,
    /// `query` (7, string).
    #[prost(bytes = "bytes", tag = "7")]
    pub query: Bytes,
    /// `fragment` (8, string).
    #[prost(bytes = "bytes", tag = "8")]
    pub fragment: Bytes,
    /// `size` (9).
    #[prost(int64, tag = "9")]
    pub size: i64,
    /// `protocol` (10, string).
    #[prost(bytes = "bytes", tag = "10")]
    pub protocol: Bytes,
    /// `body` (11, string).
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    /// `raw_body` (12, bytes: not text).
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
}

/// One entry of a `map<string, string>` (the wire form of a map: key 1, value 2; a missing key
/// or value is empty, as in the generated decoder).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The key (string).
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value (string).
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// A `string` field that is not UTF-8: the generated decoder refuses the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to decode Protobuf message: {0}: invalid string value: data is not UTF-8 encoded")]
pub struct NotUtf8(&'static str);

impl CheckRequest {
    /// Checks that every field the proto declares `string` is UTF-8, as the generated decoder
    /// does while decoding (the fields decoded into generated types were checked then).
    pub fn validate(&self) -> Result<(), NotUtf8> {
        let text = |what: &'static str, b: &Bytes| {
            std::str::from_utf8(b)
                .map(|_| ())
                .map_err(|_| NotUtf8(what))
        };
        let entries = |what: &'static str, entries: &[Entry]| {
            entries
                .iter()
                .try_for_each(|e| text(what, &e.key).and_then(|()| text(what, &e.value)))
        };
        let Some(attributes) = &self.attributes else {
            return Ok(());
        };
        entries(
            "AttributeContext.context_extensions",
            &attributes.context_extensions,
        )?;
        let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
            return Ok(());
        };
        entries("HttpRequest.headers", &http.headers)?;
        for (what, field) in [
            ("HttpRequest.id", &http.id),
            ("HttpRequest.method", &http.method),
            ("HttpRequest.path", &http.path),
            ("HttpRequest.host", &http.host),
            ("HttpRequest.scheme", &http.scheme),
            ("HttpRequest.query", &http.query),
            ("HttpRequest.fragment", &http.fragment),
            ("HttpRequest.protocol", &http.protocol),
            ("HttpRequest.body", &http.body),
        ] {
            text(what, field)?;
        }
        Ok(())
    }

    /// The request's HTTP headers, if it has any.
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
        // Validated by `CheckRequest::validate` before any lookup (the codec does it).
        .and_then(|e| std::str::from_utf8(&e.value).ok())
}

/// The gRPC codec of the Check method: [`CheckRequest`] in (validated), the generated
/// `CheckResponse` out — tonic's prost codec, with the request type swapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = envoy_types::ext_authz::v3::pb::CheckResponse;
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

/// Encodes a `CheckResponse` as tonic's prost encoder does.
#[derive(Debug, Clone, Copy)]
pub struct ResponseEncoder(PhantomData<()>);

impl Encoder for ResponseEncoder {
    type Item = envoy_types::ext_authz::v3::pb::CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // An `EncodeBuf` grows as needed: encoding cannot run out of space.
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes and validates a [`CheckRequest`]; any failure is INTERNAL, as tonic's prost decoder
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

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf structure is broken.
    #[error(transparent)]
    Wire(#[from] prost::DecodeError),
    /// A `string` field is not UTF-8.
    #[error(transparent)]
    Text(#[from] NotUtf8),
}

/// Decodes one `CheckRequest` from `buf` and validates it (see the module docs).
pub fn decode(buf: impl bytes::Buf) -> Result<CheckRequest, DecodeError> {
    let request = CheckRequest::decode(buf)?;
    request.validate()?;
    Ok(request)
}

#[cfg(test)]
mod tests;
