//! `auth_token::Verifier::verify` on arbitrary input. Never panics; every `Ok` is checked
//! against an independent HMAC and header oracle ([`edge_auth_fuzz::assert_really_signed`]).
//!
//! Input: first byte = mode, the rest split at `\n` into header JSON, payload JSON, signature.
//! - mode bit 0 set: the token is signed correctly with `k1` (or `k2` with bit 1), so the fuzzer
//!   explores the header and claims rules behind a valid signature;
//! - mode bit 2 set: the rest is used verbatim as the token (shape and size rules).
//!
//! The body is [`edge_auth_fuzz::targets::verify_token::run`], which `make test` also runs over the
//! committed seeds (fuzz/src/lib.rs, `replay`) on the stable toolchain.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edge_auth_fuzz::targets::verify_token::run(data));
