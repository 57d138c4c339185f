//! A directory laid out like a mounted Kubernetes Secret, updated the way the kubelet does it,
//! for every suite that tests key loading and rotation from a directory.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temporary directory holding `..<timestamp>/NAME` data dirs, a `..data` symlink to the
/// current one and a user-visible `NAME -> ..data/NAME` symlink per file. An update writes a
/// new data dir, points `..data_tmp` at it and renames that over `..data` (one atomic switch of
/// every file), then adds and removes the visible links and deletes the old data dir: exactly
/// the kubelet's sequence, so a reader sees the whole old set or the whole new one.
pub struct SecretDir {
    dir: tempfile::TempDir,
    generation: u32,
    files: Vec<String>,
    data_dir: Option<PathBuf>,
}

impl SecretDir {
    /// A mounted Secret with `files` (name, contents; each written with a trailing newline,
    /// as a key file saved by an editor has one).
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut s = Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            generation: 0,
            files: Vec::new(),
            data_dir: None,
        };
        s.update(files);
        s
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the whole set with `files`, as the kubelet applies an updated Secret.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        let root = self.dir.path();
        self.generation += 1;
        let name = format!("..2026_11_27_00_00_{:02}.000000000", self.generation);
        let data = root.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (file, contents) in files {
            std::fs::write(data.join(file), format!("{contents}\n")).unwrap();
        }
        let tmp = root.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        for (file, _) in files {
            let link = root.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{file}"), &link).unwrap();
            }
        }
        for old in &self.files {
            if !files.iter().any(|(file, _)| file == old) {
                std::fs::remove_file(root.join(old)).unwrap();
            }
        }
        if let Some(old) = self.data_dir.replace(data) {
            std::fs::remove_dir_all(old).unwrap();
        }
        self.files = files.iter().map(|(file, _)| (*file).to_owned()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_swaps_every_file_through_the_data_link() {
        let mut dir = SecretDir::new(&[("k1", "one"), ("k2", "two")]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("k1")).unwrap(),
            "one\n"
        );
        dir.update(&[("k2", "zwei"), ("k3", "drei")]);
        let root = dir.path();
        assert!(
            std::fs::symlink_metadata(root.join("k1")).is_err(),
            "k1 removed"
        );
        assert_eq!(std::fs::read_to_string(root.join("k2")).unwrap(), "zwei\n");
        assert_eq!(std::fs::read_to_string(root.join("k3")).unwrap(), "drei\n");
        assert_eq!(
            std::fs::read_link(root.join("k3")).unwrap(),
            Path::new("..data/k3")
        );
        // One data dir left, the one ..data names.
        let data: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("..2026"))
            .collect();
        assert_eq!(data.len(), 1, "{data:?}");
        assert_eq!(
            std::fs::read_link(root.join("..data")).unwrap(),
            Path::new(&data[0])
        );
    }
}
