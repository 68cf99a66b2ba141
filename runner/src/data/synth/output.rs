//! The output directory of a synthetic world: writes files under it and keeps a tally.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SynthError;

/// Writes files below a root directory, creating parent directories, counting files and bytes.
pub struct OutDir {
    root: PathBuf,
    /// Directories already created (creating them once per file dominated the run time).
    made: BTreeSet<PathBuf>,
    /// Number of files written.
    pub files: usize,
    /// Number of bytes written.
    pub bytes: u64,
}

impl OutDir {
    /// An output directory rooted at `root` (created on first write).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            made: BTreeSet::new(),
            files: 0,
            bytes: 0,
        }
    }

    /// The absolute path of `rel` below the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes `data` to `rel` (a '/'-separated path relative to the root).
    pub fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), SynthError> {
        let path = self.path(rel);
        if let Some(parent) = path.parent()
            && !self.made.contains(parent)
        {
            std::fs::create_dir_all(parent).map_err(|source| SynthError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
            self.made.insert(parent.to_path_buf());
        }
        std::fs::write(&path, data).map_err(|source| SynthError::Io { path, source })?;
        self.files += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Writes `value` as compact JSON to `rel`.
    pub fn json(&mut self, rel: &str, value: &impl Serialize) -> Result<(), SynthError> {
        let data = serde_json::to_vec(value).map_err(|source| SynthError::Json {
            path: self.path(rel),
            source,
        })?;
        self.write(rel, &data)
    }

    /// Writes one compact JSON value per line to `rel`.
    pub fn jsonl<T: Serialize>(&mut self, rel: &str, values: &[T]) -> Result<(), SynthError> {
        let mut data = Vec::new();
        for value in values {
            serde_json::to_writer(&mut data, value).map_err(|source| SynthError::Json {
                path: self.path(rel),
                source,
            })?;
            data.push(b'\n');
        }
        self.write(rel, &data)
    }
}
