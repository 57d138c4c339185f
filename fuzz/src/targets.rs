//! The fuzz targets' bodies, one module per target in `fuzz_targets/`: each `run` takes the
//! target's input, `run_bytes` the raw bytes libFuzzer hands over (decoded the way
//! libfuzzer-sys decodes them). Here rather than in the target files so that the stable
//! toolchain can run them too: `make test` replays the committed seeds through them.

pub mod basic_credentials;
pub mod check_request;
pub mod keys_dir;
pub mod verify_token;
