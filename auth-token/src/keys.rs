//! HMAC keys and the keyring a token's `kid` selects from.
//!
//! Two sources, the same rules: `JWT_SECRET` (one key, kid [`DEFAULT_KID`]) or a keys directory
//! with one file per key, the file name being the `kid` — exactly how a Kubernetes Secret is
//! mounted (`..data` symlink and dot-entries are skipped). A key is the file's bytes without a
//! trailing newline and must be at least [`MIN_KEY_LEN`] bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Shortest accepted HMAC key: RFC 7518 §3.2 requires a key as long as the hash output.
pub const MIN_KEY_LEN: usize = 32;
/// The kid of the key given as `JWT_SECRET`.
pub const DEFAULT_KID: &str = "default";
/// Longest accepted kid; longer ones cannot be file names we created.
pub const MAX_KID_LEN: usize = 64;

/// Why a keyring could not be built. Messages name kids and paths, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// RFC 7518 forbids HS256 keys shorter than the hash.
    #[error("key {kid:?} is {len} bytes; HS256 keys must be at least {MIN_KEY_LEN} bytes")]
    TooShort {
        /// The offending key.
        kid: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A kid that could smuggle path or header characters.
    #[error(
        "invalid key id {0:?}: use 1-{MAX_KID_LEN} characters from A-Z a-z 0-9 . _ -, not starting with '.'"
    )]
    InvalidKid(String),
    /// The directory or one of its files could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A keyring must hold at least one key.
    #[error("no keys found in {0}")]
    Empty(PathBuf),
    /// The configured default kid is not in the keyring.
    #[error("default key id {0:?} is not among the loaded keys")]
    UnknownDefault(String),
}

/// Whether `kid` is acceptable as a key id (and therefore as a file name).
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One HMAC key, ready to sign and verify. `Debug` shows the kid only.
pub struct Key {
    kid: String,
    secret: Zeroizing<Vec<u8>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    /// Builds a key, enforcing the kid syntax and [`MIN_KEY_LEN`].
    pub fn new(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if !valid_kid(kid) {
            return Err(KeyError::InvalidKid(kid.to_owned()));
        }
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                kid: kid.to_owned(),
                len: secret.len(),
            });
        }
        Ok(Self {
            kid: kid.to_owned(),
            secret: Zeroizing::new(secret.to_vec()),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// The key id put in (and looked up from) the JWT header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The set of keys a verifier accepts, and the one used for tokens without a `kid`.
pub struct Keyring {
    keys: HashMap<String, Key>,
    default_kid: Option<String>,
}

impl Keyring {
    /// A keyring of one key (the `JWT_SECRET` case); it is also the default key.
    pub fn single(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        let key = Key::new(kid, secret)?;
        Ok(Self {
            default_kid: Some(key.kid.clone()),
            keys: HashMap::from([(key.kid.clone(), key)]),
        })
    }

    /// Builds a keyring from keys; `default_kid` must name one of them. Without it, a ring of
    /// exactly one key uses that key as the default, and a larger ring has none (tokens without
    /// `kid` are then refused).
    pub fn from_keys(keys: Vec<Key>, default_kid: Option<&str>) -> Result<Self, KeyError> {
        let keys: HashMap<String, Key> = keys.into_iter().map(|k| (k.kid.clone(), k)).collect();
        let default_kid = match default_kid {
            Some(kid) if keys.contains_key(kid) => Some(kid.to_owned()),
            Some(kid) => return Err(KeyError::UnknownDefault(kid.to_owned())),
            None if keys.len() == 1 => keys.keys().next().cloned(),
            None => None,
        };
        Ok(Self { keys, default_kid })
    }

    /// Loads every key file of `dir` (see the module docs for the layout).
    ///
    /// Dot-entries (`..data`, `..2026_11_27...`) and non-files are skipped; symlinks are followed,
    /// since a mounted Secret's files are symlinks into `..data`. Any unreadable file, bad kid or
    /// short key fails the whole load, so a half-written directory never replaces a good ring.
    pub fn from_dir(dir: &Path, default_kid: Option<&str>) -> Result<Self, KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(KeyError::InvalidKid(name.to_string_lossy().into_owned()));
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(io(&path))?;
            if !meta.is_file() {
                continue;
            }
            let bytes = Zeroizing::new(std::fs::read(&path).map_err(io(&path))?);
            keys.push(Key::new(name, trim_newline(&bytes))?);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(dir.to_path_buf()));
        }
        Self::from_keys(keys, default_kid)
    }

    /// The key for a token header's `kid`; `None` means the default key.
    pub fn get(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None => self.default_kid.as_deref().and_then(|k| self.keys.get(k)),
        }
    }

    /// The kid used for tokens that carry none, if any.
    pub fn default_kid(&self) -> Option<&str> {
        self.default_kid.as_deref()
    }

    /// All kids, sorted (for logs and metrics: kids are not secret).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: an empty keyring cannot be built.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A digest of kids, secrets and default: equal fingerprints mean an identical ring, so a
    /// reloader can skip swapping (and counting) unchanged content. Not secret-revealing: SHA-256
    /// over ≥ 32 random bytes.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for kid in self.kids() {
            h.update((kid.len() as u64).to_be_bytes());
            h.update(kid.as_bytes());
            let secret = &self.keys[kid].secret;
            h.update((secret.len() as u64).to_be_bytes());
            h.update(secret.as_slice());
        }
        h.update(self.default_kid.as_deref().unwrap_or("").as_bytes());
        h.finalize().into()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.kids())
            .field("default_kid", &self.default_kid)
            .finish()
    }
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn short_key_is_refused_without_revealing_it() {
        let err = Key::new("k1", b"short").unwrap_err();
        assert!(matches!(err, KeyError::TooShort { len: 5, .. }));
        assert!(!err.to_string().contains("short\""));
    }

    #[test]
    fn kid_syntax() {
        for ok in ["k1", "2026-11-27", "a.b_c-d"] {
            assert!(valid_kid(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_kid(bad), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_secret() {
        let ring = Keyring::single("k1", SECRET).unwrap();
        let shown = format!("{ring:?} {:?}", ring.get(None).unwrap());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("k1"));
    }

    #[test]
    fn dir_layout_of_a_mounted_secret() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_27_00_00_00.000");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("k1"), [SECRET, b"\n"].concat()).unwrap();
        std::fs::write(data.join("k2"), SECRET).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/k1", dir.path().join("k1")).unwrap();
            std::os::unix::fs::symlink("..data/k2", dir.path().join("k2")).unwrap();
        }
        let ring = Keyring::from_dir(dir.path(), Some("k2")).unwrap();
        assert_eq!(ring.kids(), ["k1", "k2"]);
        assert_eq!(ring.default_kid(), Some("k2"));
        // The trailing newline is not part of the key.
        assert_eq!(
            ring.fingerprint(),
            Keyring::from_keys(
                vec![
                    Key::new("k1", SECRET).unwrap(),
                    Key::new("k2", SECRET).unwrap()
                ],
                Some("k2")
            )
            .unwrap()
            .fingerprint()
        );
    }

    #[test]
    fn dir_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::Empty(_))
        ));
        std::fs::write(dir.path().join("k1"), b"too short").unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), None),
            Err(KeyError::TooShort { .. })
        ));
        std::fs::write(dir.path().join("k1"), SECRET).unwrap();
        assert!(matches!(
            Keyring::from_dir(dir.path(), Some("nope")),
            Err(KeyError::UnknownDefault(_))
        ));
        assert!(matches!(
            Keyring::from_dir(&dir.path().join("missing"), None),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn default_key_rules() {
        let one = Keyring::from_keys(vec![Key::new("a", SECRET).unwrap()], None).unwrap();
        assert_eq!(one.get(None).map(Key::kid), Some("a"));
        let two = Keyring::from_keys(
            vec![
                Key::new("a", SECRET).unwrap(),
                Key::new("b", SECRET).unwrap(),
            ],
            None,
        )
        .unwrap();
        assert!(two.get(None).is_none());
        assert!(two.get(Some("b")).is_some());
        assert!(two.get(Some("c")).is_none());
    }
}

/// Property tests of the keys-dir loader: whatever the directory holds, a load either fails as a
/// whole or yields exactly its valid key files.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// File names: valid kids, dot-entries, path-ish and non-ASCII names.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
            "\\.\\.?[a-z][a-z0-9._]{0,8}",
            "[a-z]{1,4}[ é%\\\\:*?]{1,3}[a-z]{0,4}",
            "[a-z]{65,70}",
        ]
    }

    /// Contents: short, exactly at the limit, long, with trailing newlines.
    fn content() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 31..34).prop_map(|mut v| {
                v.push(b'\n');
                v
            }),
            proptest::collection::vec(any::<u8>(), 32..64),
        ]
    }

    fn trimmed(bytes: &[u8]) -> &[u8] {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes.strip_suffix(b"\r").unwrap_or(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// `from_dir` succeeds exactly when there is at least one non-dot file and every
        /// non-dot file has a valid kid and a key of at least 32 bytes (after one trailing
        /// newline); then the ring holds exactly those kids, and loading is deterministic.
        #[test]
        fn loads_exactly_the_valid_key_files(
            files in proptest::collection::btree_map(name(), content(), 0..6),
            subdir in proptest::option::of("[a-z]{1,8}"),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for (name, bytes) in &files {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            if let Some(sub) = &subdir {
                // Directories are skipped, whatever their name.
                let _ = std::fs::create_dir(dir.path().join(sub));
            }
            let visible: Vec<(&String, &Vec<u8>)> =
                files.iter().filter(|(n, _)| !n.starts_with('.')).collect();
            let should_load = !visible.is_empty()
                && visible
                    .iter()
                    .all(|(n, b)| valid_kid(n) && trimmed(b).len() >= MIN_KEY_LEN);
            match Keyring::from_dir(dir.path(), None) {
                Ok(ring) => {
                    prop_assert!(should_load, "loaded {:?}", ring.kids());
                    let mut want: Vec<&str> = visible.iter().map(|(n, _)| n.as_str()).collect();
                    want.sort_unstable();
                    prop_assert_eq!(ring.kids(), want);
                    let again = Keyring::from_dir(dir.path(), None).unwrap();
                    prop_assert_eq!(again.fingerprint(), ring.fingerprint());
                }
                Err(e) => {
                    prop_assert!(!should_load, "refused a valid directory: {}", e);
                    // Errors name kids and paths, never key bytes.
                    for (_, bytes) in &visible {
                        if let Ok(text) = std::str::from_utf8(trimmed(bytes))
                            && text.len() >= 8
                        {
                            prop_assert!(!e.to_string().contains(text), "{}", e);
                        }
                    }
                }
            }
        }
    }
}
