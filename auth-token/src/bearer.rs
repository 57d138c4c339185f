//! The one `Authorization: Bearer` parser (RFC 6750 §2.1, `credentials = "Bearer" 1*SP b64token`),
//! so every place that accepts a bearer token reads the same header the same way:
//! - the scheme is matched case-insensitively (`bearer`, `BEARER`);
//! - one or more spaces separate scheme and token (`Bearer  tok` is valid per the grammar);
//!   surrounding spaces/tabs (HTTP optional whitespace) are ignored;
//! - a tab between scheme and token, or any character outside `b64token` in the token
//!   (space, comma, quote...) makes the header [`BearerError::Malformed`]. That is what refuses a
//!   header that a proxy merged from duplicates (`Bearer a,Bearer b`) instead of picking one
//!   (a server that sees the header lines separately refuses more than one the same way);
//! - no header, an empty one, or another scheme (`Basic ...`) is [`BearerError::Missing`]: a 401
//!   challenge without an `error` attribute, as RFC 6750 §3.1 asks.

/// Why no token could be taken from an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No header, an empty one, or another scheme: the request did not try bearer auth.
    #[error("missing bearer token")]
    Missing,
    /// The bearer scheme with no token, or with something that is not a `b64token`.
    #[error("malformed bearer token")]
    Malformed,
}

/// The token of one `Authorization` value (rules in the module docs). Never panics.
pub fn parse(value: Option<&str>) -> Result<&str, BearerError> {
    let value = value.unwrap_or("").trim_matches([' ', '\t']);
    let Some(rest) = value
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer"))
        .map(|_| &value[6..])
    else {
        return Err(BearerError::Missing);
    };
    match rest.as_bytes().first() {
        // "Bearer" with nothing after it: the scheme without credentials.
        None => Err(BearerError::Malformed),
        Some(b' ') => {
            let token = rest.trim_start_matches(' ');
            // Why: Envoy merges repeated headers with ","; a comma (or space) can never be part
            // of a b64token, so `Bearer a,Bearer b` is refused instead of picking one.
            if is_b64token(token) {
                Ok(token)
            } else {
                Err(BearerError::Malformed)
            }
        }
        Some(b'\t') => Err(BearerError::Malformed),
        // "BearerX ...": some other scheme.
        Some(_) => Err(BearerError::Missing),
    }
}

/// The bytes of a `b64token` before its trailing `=`s, as a table indexed by the byte.
///
/// Why a table (issue #15 §1): every check scans its whole token here, and the chained
/// comparisons per byte showed as 5 % of a check's CPU in a `perf` profile (≈ 250 bytes).
const B64TOKEN_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_b64token(token: &str) -> bool {
    let bytes = token.as_bytes();
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let body = bytes.get(..bytes.len() - padding).unwrap_or_default();
    !body.is_empty() && body.iter().all(|&b| B64TOKEN_CHAR[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_rfc_6750_class() {
        for b in 0..=255_u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(B64TOKEN_CHAR[usize::from(b)], rfc, "byte {b}");
        }
        for (token, ok) in [
            ("abc", true),
            ("abc==", true),
            ("a/+~._-Z9=", true),
            ("==", false),
            ("", false),
            ("a=b", false),
            ("a b", false),
            ("a,b", false),
            ("\u{e9}t\u{e9}", false),
        ] {
            assert_eq!(is_b64token(token), ok, "{token:?}");
        }
    }

    #[test]
    fn rfc6750_credentials() {
        assert_eq!(parse(Some("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(parse(Some("bEaReR   a.b.c")), Ok("a.b.c"));
        assert_eq!(parse(Some(" \tBearer abc== \t")), Ok("abc=="));
        assert_eq!(parse(Some("Bearer a-_~+/9")), Ok("a-_~+/9"));
        assert_eq!(parse(None), Err(BearerError::Missing));
        assert_eq!(parse(Some("")), Err(BearerError::Missing));
        assert_eq!(parse(Some("Basic abc")), Err(BearerError::Missing));
        assert_eq!(parse(Some("Bearerabc")), Err(BearerError::Missing));
        for malformed in [
            "Bearer",
            "Bearer ",
            "Bearer\tabc",
            "Bearer a=b",
            "Bearer ===",
            "Bearer a b",
            "Bearer a,Bearer b",
            "Bearer \"abc\"",
            "Bearer abcé",
        ] {
            assert_eq!(
                parse(Some(malformed)),
                Err(BearerError::Malformed),
                "{malformed:?}"
            );
        }
        // Multi-byte characters never panic the scheme slice.
        assert_eq!(parse(Some("Béarer x")), Err(BearerError::Missing));
        assert_eq!(parse(Some("ééé")), Err(BearerError::Missing));
    }
}
