//! `auth_token::Keyring::from_dir` on a directory built from the input: arbitrary (even
//! non-UTF-8) file names, contents, sub-directories and symlinks (dangling or not). Never
//! panics; every `Ok` ring holds exactly the non-dot regular files (symlinks followed), each
//! with a valid kid and a key of at least 32 bytes, and loading twice gives the same ring.
//!
//! The body is [`edge_auth_fuzz::targets::keys_dir::run`], which `make test` also runs over the
//! committed seeds (fuzz/src/lib.rs, `replay`) on the stable toolchain.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: edge_auth_fuzz::targets::keys_dir::Input| {
    edge_auth_fuzz::targets::keys_dir::run(input)
});
