//! `auth_token::Verifier::verify` on arbitrary input. Never panics; every `Ok` is checked
//! against an independent HMAC and header oracle ([`crate::assert_really_signed`]).
//!
//! Input: first byte = mode, the rest split at `\n` into header JSON, payload JSON, signature.
//! - mode bit 0 set: the token is signed correctly with `k1` (or `k2` with bit 1), so the fuzzer
//!   explores the header and claims rules behind a valid signature;
//! - mode bit 2 set: the rest is used verbatim as the token (shape and size rules).

use crate::{SECRET1, SECRET2, assert_really_signed, b64, ring, sign_raw};
use auth_token::{Verifier, VerifierConfig};

/// One input (the fuzz target's body).
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 4 != 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let header = parts.next().unwrap_or_default();
        let payload = parts.next().unwrap_or_default();
        let signature = parts.next().unwrap_or_default();
        if mode & 1 != 0 {
            let secret = if mode & 2 != 0 { SECRET2 } else { SECRET1 };
            sign_raw(header, payload, secret)
        } else {
            format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
        }
    };
    let now = auth_token::now_unix();
    let verifier = Verifier::new(&VerifierConfig::default());
    if let Ok(claims) = verifier.verify(&token, &ring(), now) {
        assert_really_signed(&token);
        let leeway = auth_token::verify::DEFAULT_LEEWAY_SECS;
        assert!(
            claims.exp.saturating_add(leeway) >= now,
            "accepted an expired token"
        );
        assert!(claims.nbf <= now + leeway, "accepted a token not yet valid");
        assert!(
            claims.iat <= now + leeway,
            "accepted a token issued in the future"
        );
    }
}

/// The same as [`run`] (raw bytes are this target's input).
pub fn run_bytes(data: &[u8]) {
    run(data);
}
