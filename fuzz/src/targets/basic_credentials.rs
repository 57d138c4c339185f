//! login-service's `Authorization: Basic` parser (`crate::credentials::parse_basic`, a pure module
//! compiled here from its source so the fuzz build does not link the database drivers).
//! Never panics; every `Ok` must round-trip: the e-mail has no `:` and `email:password` is
//! exactly what the base64 payload decodes to.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::ExposeSecret as _;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// One input (the fuzz target's body).
pub fn run(data: &[u8]) {
    let header = (data.first() != Some(&0)).then_some(data);
    if let Ok(c) = crate::credentials::parse_basic(header) {
        let value = std::str::from_utf8(data)
            .expect("accepted a non-UTF-8 header")
            .trim();
        let (scheme, rest) = value
            .split_once(' ')
            .expect("accepted a header without a space");
        assert!(
            scheme.eq_ignore_ascii_case("basic"),
            "accepted scheme {scheme:?}"
        );
        assert!(!c.email.contains(':'), "user-id with a colon");
        let decoded = LENIENT.decode(rest.trim()).expect("accepted bad base64");
        let joined = format!("{}:{}", c.email, c.password.expose_secret());
        assert_eq!(
            joined.as_bytes(),
            decoded.as_slice(),
            "credentials do not round-trip"
        );
    }
}

/// The same as [`run`] (raw bytes are this target's input).
pub fn run_bytes(data: &[u8]) {
    run(data);
}
