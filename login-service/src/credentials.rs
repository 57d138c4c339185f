//! Parsing `Authorization: Basic` (RFC 7617) into an e-mail and a password. Pure: no I/O.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::SecretString;

/// Standard alphabet; padding optional (some clients strip it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Credentials from a Basic header. `Debug` never shows the password.
#[derive(Debug)]
pub struct Credentials {
    /// The user-id part (before the first `:`), as sent.
    pub email: String,
    /// Everything after the first `:` (may itself contain `:`).
    pub password: SecretString,
}

/// Why no credentials could be taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// No Authorization header, or one with another scheme.
    #[error("missing credentials")]
    Missing,
    /// `Basic` with bad base64, no `:`, or invalid UTF-8.
    #[error("malformed credentials")]
    Malformed,
}

/// Parses the raw value of the `Authorization` header (`None` when absent).
///
/// The scheme is case-insensitive; the user-id/password split happens at the FIRST colon, so a
/// password may contain colons (an e-mail cannot). Both parts must be UTF-8.
pub fn parse_basic(header: Option<&[u8]>) -> Result<Credentials, CredentialsError> {
    let raw = header.ok_or(CredentialsError::Missing)?;
    let value = std::str::from_utf8(raw).map_err(|_| CredentialsError::Malformed)?;
    let value = value.trim();
    let (scheme, rest) = match value.split_once(' ') {
        Some((s, r)) => (s, r.trim()),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(CredentialsError::Missing);
    }
    if rest.is_empty() {
        return Err(CredentialsError::Malformed);
    }
    let decoded = B64
        .decode(rest.as_bytes())
        .map_err(|_| CredentialsError::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| CredentialsError::Malformed)?;
    let (email, password) = text.split_once(':').ok_or(CredentialsError::Malformed)?;
    Ok(Credentials {
        email: email.to_owned(),
        password: SecretString::from(password.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as ENC;
    use secrecy::ExposeSecret;

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", ENC.encode(s)).into_bytes()
    }

    #[test]
    fn splits_at_first_colon() {
        let c = parse_basic(Some(&basic("a@b.c:pa:ss:word"))).unwrap();
        assert_eq!(c.email, "a@b.c");
        assert_eq!(c.password.expose_secret(), "pa:ss:word");
    }

    #[test]
    fn scheme_is_case_insensitive_and_padding_optional() {
        let v = format!("bAsIc   {}", ENC.encode("x@y.z:pw").trim_end_matches('='));
        let c = parse_basic(Some(v.as_bytes())).unwrap();
        assert_eq!(c.email, "x@y.z");
        assert_eq!(c.password.expose_secret(), "pw");
    }

    #[test]
    fn non_ascii_is_fine() {
        let c = parse_basic(Some(&basic("jürgen@exämple.de:pässwörd🔑"))).unwrap();
        assert_eq!(c.password.expose_secret(), "pässwörd🔑");
    }

    #[test]
    fn empty_password_parses() {
        let c = parse_basic(Some(&basic("a@b.c:"))).unwrap();
        assert_eq!(c.password.expose_secret(), "");
    }

    #[test]
    fn errors() {
        use CredentialsError::*;
        assert_eq!(parse_basic(None).unwrap_err(), Missing);
        assert_eq!(parse_basic(Some(b"Bearer abc")).unwrap_err(), Missing);
        assert_eq!(parse_basic(Some(b"Basic")).unwrap_err(), Malformed);
        assert_eq!(parse_basic(Some(b"Basic !!!")).unwrap_err(), Malformed);
        assert_eq!(parse_basic(Some(&basic("nocolon"))).unwrap_err(), Malformed);
        let bad_utf8 = format!("Basic {}", ENC.encode([0xff, 0xfe, b':', b'x']));
        assert_eq!(
            parse_basic(Some(bad_utf8.as_bytes())).unwrap_err(),
            Malformed
        );
        assert_eq!(parse_basic(Some(&[0xff, 0x20])).unwrap_err(), Malformed);
    }
}

/// Property tests of the Basic parser: round trip, no panics, and no credentials from bytes
/// that are not a well-formed `Basic` header.
#[cfg(test)]
mod proptests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as ENC;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any user-id without `:` and any password (SQL, quotes, colons, non-ASCII) round-trip,
        /// whatever the scheme's case, the padding and the surrounding whitespace. Missing
        /// padding occurs in about a third of the cases: `strip_padding` in half, and the
        /// encoding has padding to strip when the `email:password` bytes are not a multiple of
        /// three long (about two thirds).
        #[test]
        fn round_trips(
            email in "[^:]{0,40}",
            password in ".{0,60}",
            scheme in "[bB][aA][sS][iI][cC]",
            strip_padding in any::<bool>(),
            spaces in 1usize..4,
        ) {
            let mut encoded = ENC.encode(format!("{email}:{password}"));
            if strip_padding {
                encoded = encoded.trim_end_matches('=').to_owned();
            }
            let header = format!(" {scheme}{}{encoded} ", " ".repeat(spaces));
            let c = parse_basic(Some(header.as_bytes())).unwrap();
            prop_assert_eq!(c.email, email);
            prop_assert_eq!(c.password.expose_secret(), password.as_str());
        }

        /// Arbitrary bytes never panic; whatever is accepted has a colon-free user-id and
        /// decodes back to exactly `user-id:password`.
        #[test]
        fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(c) = parse_basic(Some(&raw)) {
                prop_assert!(!c.email.contains(':'));
                let text = std::str::from_utf8(&raw).unwrap().trim();
                let payload = text.split_once(' ').unwrap().1.trim();
                let decoded = B64.decode(payload).unwrap();
                let joined = format!("{}:{}", c.email, c.password.expose_secret());
                prop_assert_eq!(decoded, joined.into_bytes());
            }
        }

        /// A payload that is not UTF-8 is malformed, never a lossy user-id or password.
        #[test]
        fn invalid_utf8_is_malformed(
            prefix in proptest::collection::vec(any::<u8>(), 0..20),
            // Never valid whatever follows: 0xff, a lead byte before ASCII, a surrogate.
            bad in prop_oneof![Just(vec![0xffu8]), Just(vec![0xc3u8, b'(']), Just(vec![0xed, 0xa0, 0x80])],
            suffix in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let bytes = [prefix, b":".to_vec(), bad, suffix].concat();
            let header = format!("Basic {}", ENC.encode(&bytes));
            prop_assert_eq!(
                parse_basic(Some(header.as_bytes())).unwrap_err(),
                CredentialsError::Malformed
            );
        }

        /// Any other scheme is "missing", never parsed as Basic.
        #[test]
        fn other_schemes_are_missing(scheme in "[A-Za-z]{1,10}", rest in "[ -~]{0,40}") {
            prop_assume!(!scheme.eq_ignore_ascii_case("basic"));
            let header = format!("{scheme} {rest}");
            prop_assert_eq!(
                parse_basic(Some(header.as_bytes())).unwrap_err(),
                CredentialsError::Missing
            );
        }
    }
}
