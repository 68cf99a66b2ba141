//! Errors of the evaluation dataset readers: each names the file and the entry it concerns.

use std::path::PathBuf;

/// A problem reading an evaluation dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The dataset name is not one of the paper's seven.
    #[error("unknown evaluation dataset `{0}`")]
    UnknownDataset(String),
    /// A path key the dataset needs is not configured.
    #[error("dataset `{dataset}` needs `eval.paths.{dataset}.{key}`")]
    MissingPath {
        /// Dataset name.
        dataset: String,
        /// The missing key.
        key: &'static str,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message (with line and column).
        source: serde_json::Error,
    },
    /// One entry of a file is unusable.
    #[error("{}: {entry}: {message}", path.display())]
    Entry {
        /// The file.
        path: PathBuf,
        /// Which entry, e.g. `images[3] (cocoid 391895)` or `line 7`.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// An image file is missing or cannot be decoded.
    #[error("image {}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl DatasetError {
    /// An entry-level error.
    pub fn entry(
        path: impl Into<PathBuf>,
        entry: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DatasetError::Entry {
            path: path.into(),
            entry: entry.into(),
            message: message.into(),
        }
    }
}
