//! Fixtures shared by the unit tests and, behind the `test-support` feature, by the
//! integration tests and benches. Not part of the service's API.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

#[cfg(test)]
mod tokens;
#[cfg(test)]
pub(crate) use tokens::*;

/// A `CheckRequest` carrying these HTTP request headers and context extensions.
pub fn check_request(
    headers: HashMap<String, String>,
    extensions: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}
