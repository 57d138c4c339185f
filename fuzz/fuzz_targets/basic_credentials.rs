//! login-service's `Authorization: Basic` parser (`credentials::parse_basic`, a pure module
//! compiled here from its source so the fuzz build does not link the database drivers).
//! Never panics; every `Ok` must round-trip: the e-mail has no `:` and `email:password` is
//! exactly what the base64 payload decodes to.
//!
//! The body is [`edge_auth_fuzz::targets::basic_credentials::run`], which `make test` also runs over the
//! committed seeds (fuzz/src/lib.rs, `replay`) on the stable toolchain.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edge_auth_fuzz::targets::basic_credentials::run(data));
