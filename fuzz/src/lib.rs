//! Shared oracles for the fuzz targets: the keys the targets verify against and an independent
//! HMAC-SHA256 check, so "accepted" can be tested against "really signed by one of our keys"
//! without trusting the code under test.

use std::collections::HashMap;

pub mod targets;

/// login-service's Basic-credentials parser, compiled from its source: a pure module, so the fuzz
/// build does not link login-service's database drivers.
#[allow(dead_code, missing_docs)]
#[path = "../../login-service/src/credentials.rs"]
mod credentials;

use auth_token::{Key, Keyring};
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The default key (kid `k1`).
pub const SECRET1: &[u8] = b"fuzz-secret-one-0123456789abcdef0123";
/// A second key (kid `k2`), so kid selection matters.
pub const SECRET2: &[u8] = b"fuzz-secret-two-0123456789abcdef0123";

/// Lenient base64url: padding optional, trailing bits allowed. The oracle compares decoded
/// bytes, so a decoder that is laxer than the verifier never hides a forged signature.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// `k1` (default) and `k2`.
pub fn ring() -> Keyring {
    Keyring::from_keys(
        vec![
            Key::new("k1", SECRET1).expect("k1"),
            Key::new("k2", SECRET2).expect("k2"),
        ],
        Some("k1"),
    )
    .expect("ring")
}

/// The secret a token header's `kid` selects (no kid: the default `k1`).
pub fn secret_for(kid: Option<&str>) -> Option<&'static [u8]> {
    match kid {
        None | Some("k1") => Some(SECRET1),
        Some("k2") => Some(SECRET2),
        Some(_) => None,
    }
}

// The HMAC, the base64url encoder and the signer come from `auth_token::testing`, which signs
// with the `hmac` crate directly, never through the verifier under test.
pub use auth_token::testing::{b64, forge as sign_raw, hmac_sha256 as hmac};

/// Panics unless `token` is a JWS whose header is exactly what we issue (`alg` `HS256`, only
/// `alg`/`typ`/`kid`) and whose signature is the HMAC of a key in [`ring`]. Called on every
/// token the code under test accepted.
pub fn assert_really_signed(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token without three segments");
    let header = LENIENT
        .decode(parts[0])
        .expect("accepted an undecodable header");
    let header: serde_json::Value =
        serde_json::from_slice(&header).expect("accepted a non-JSON header");
    let object = header.as_object().expect("accepted a non-object header");
    for name in object.keys() {
        assert!(
            matches!(name.as_str(), "alg" | "typ" | "kid"),
            "accepted header parameter {name:?}"
        );
    }
    assert_eq!(object.get("alg").and_then(|a| a.as_str()), Some("HS256"));
    let kid = object
        .get("kid")
        .map(|k| k.as_str().expect("accepted a non-string kid"));
    let secret = secret_for(kid).expect("accepted a kid outside the ring");
    let signature = LENIENT
        .decode(parts[2])
        .expect("accepted an undecodable signature");
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(
        signature,
        hmac(secret, signing_input.as_bytes()),
        "accepted a signature that is not our HMAC"
    );
}

/// Lower-cased header map from arbitrary pairs (Envoy lower-cases names).
pub fn header_map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Replays every committed seed (`fuzz/seeds/<target>/`) and, when present, the local corpus
/// (`fuzz/corpus/<target>/`, written by `make fuzz`) through each target's body: the inputs
/// that once found a path stay regression tests on the stable toolchain (`make test`).
#[cfg(test)]
mod replay {
    use std::path::Path;

    use crate::targets;

    fn replay(target: &str, run: fn(&[u8])) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seeds = 0;
        for dir in ["seeds", "corpus"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("read a corpus file");
                eprintln!("{target}: {}", path.display());
                run(&data);
                if dir == "seeds" {
                    seeds += 1;
                }
            }
        }
        assert!(
            seeds > 0,
            "no committed seed for {target} in fuzz/seeds/{target}/"
        );
    }

    #[test]
    fn verify_token() {
        replay("verify_token", targets::verify_token::run_bytes);
    }

    #[test]
    fn basic_credentials() {
        replay("basic_credentials", targets::basic_credentials::run_bytes);
    }

    #[test]
    fn check_request() {
        replay("check_request", targets::check_request::run_bytes);
    }

    #[test]
    fn keys_dir() {
        replay("keys_dir", targets::keys_dir::run_bytes);
    }
}
