//! `auth_token::Keyring::from_dir` on a directory built from the input: arbitrary (even
//! non-UTF-8) file names, contents, sub-directories and symlinks (dangling or not). Never
//! panics; every `Ok` ring holds exactly the non-dot regular files (symlinks followed), each
//! with a valid kid and a key of at least 32 bytes, and loading twice gives the same ring.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use arbitrary::Arbitrary;
use auth_token::{Keyring, MIN_KEY_LEN, keys::valid_kid};

#[derive(Debug, Arbitrary)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    /// A symlink to the entry with this index (dangling when out of range).
    Link(u8),
}

#[derive(Debug, Arbitrary)]
pub struct Input {
    entries: Vec<(Vec<u8>, Kind)>,
    default_kid: Option<String>,
}

/// One input (the fuzz target's body).
pub fn run(input: Input) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut names: Vec<Vec<u8>> = Vec::new();
    for (raw, _) in input.entries.iter().take(8) {
        let name: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'/' || b == 0 { b'_' } else { b })
            .take(100)
            .collect();
        if name.is_empty() || name == b"." || name == b".." || names.contains(&name) {
            names.push(Vec::new());
        } else {
            names.push(name);
        }
    }
    for ((_, kind), name) in input.entries.iter().zip(&names) {
        if name.is_empty() {
            continue;
        }
        let path = dir.path().join(OsStr::from_bytes(name));
        let _ = match kind {
            Kind::File(bytes) => std::fs::write(&path, bytes),
            Kind::Dir => std::fs::create_dir(&path),
            Kind::Link(i) => {
                let target = names
                    .get(usize::from(*i))
                    .filter(|n| !n.is_empty())
                    .map_or(OsStr::new("missing").to_owned(), |n| {
                        OsStr::from_bytes(n).to_owned()
                    });
                std::os::unix::fs::symlink(target, &path)
            }
        };
    }
    let default = input.default_kid.as_deref();
    let Ok(ring) = Keyring::from_dir(dir.path(), default) else {
        return;
    };
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(dir.path()).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name = name
            .to_str()
            .expect("accepted a non-UTF-8 file name")
            .to_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            panic!("accepted a dangling symlink {name:?}");
        };
        if meta.is_file() {
            let bytes = std::fs::read(entry.path()).expect("read key");
            let key = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let key = key.strip_suffix(b"\r").unwrap_or(key);
            assert!(key.len() >= MIN_KEY_LEN, "accepted a short key {name:?}");
            expected.insert(name);
        }
    }
    let kids: BTreeSet<String> = ring.kids().into_iter().map(str::to_owned).collect();
    assert_eq!(kids, expected, "ring does not hold exactly the key files");
    assert!(
        kids.iter().all(|k| valid_kid(k)),
        "invalid kid accepted: {kids:?}"
    );
    if let Some(d) = default {
        assert_eq!(ring.default_kid(), Some(d));
    }
    let again = Keyring::from_dir(dir.path(), default).expect("second load");
    assert_eq!(
        again.fingerprint(),
        ring.fingerprint(),
        "loading is not deterministic"
    );
}

/// One input as raw bytes, decoded as libfuzzer-sys decodes them (`arbitrary_take_rest`);
/// bytes that decode to no input are skipped, as the fuzzer skips them.
pub fn run_bytes(data: &[u8]) {
    use arbitrary::Arbitrary as _;
    if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        run(input);
    }
}
