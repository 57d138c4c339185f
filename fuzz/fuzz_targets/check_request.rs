//! ext-authz's `CheckRequest` → decision → `CheckResponse` path (`AuthzService::check_request`)
//! with arbitrary header maps and context extensions, optionally around a real token (signed
//! with `k1`, arbitrary roles, optionally mutated). Never panics, never errors (keys are loaded);
//! every allow must carry a token that really is our HMAC, whose roles cover `require_roles`,
//! and the identity headers must be the token's claims, set with `append: false`.
//!
//! The body is [`edge_auth_fuzz::targets::check_request::run`], which `make test` also runs over the
//! committed seeds (fuzz/src/lib.rs, `replay`) on the stable toolchain.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: edge_auth_fuzz::targets::check_request::Input| {
    edge_auth_fuzz::targets::check_request::run(input)
});
