//! The error type of the `model` crate: every variant names the file, tensor or input it concerns.

use std::path::PathBuf;

/// Errors raised while loading, running or saving the Flamingo network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("{path}: missing file ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file should have held.
        what: String,
    },
    /// A configuration file is malformed or holds unsupported values.
    #[error("{path}: invalid config: {msg}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A configuration names a model type this crate does not implement.
    #[error("{path}: unknown model_type `{model_type}` (supported: {supported})")]
    UnknownModelType {
        /// The configuration file.
        path: PathBuf,
        /// The model type found in it.
        model_type: String,
        /// The model types that are supported, comma separated.
        supported: String,
    },
    /// A weights file could not be parsed (truncated, corrupt, unsupported format).
    #[error("{path}: cannot read weights: {msg}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A tensor the model needs is absent from a weights file.
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor {
        /// The weights file (or directory) searched.
        path: PathBuf,
        /// The tensor name looked for.
        name: String,
    },
    /// A tensor has a different shape than the model expects.
    #[error("{path}: tensor `{name}` has shape {got:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape found in the file.
        got: Vec<usize>,
    },
    /// A checkpoint does not fit the model at all (for example one trained for another LM).
    #[error("{path}: checkpoint does not fit this model: {msg}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Why it does not fit.
        msg: String,
    },
    /// The tokenizer file could not be loaded or used.
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// An image could not be decoded or preprocessed.
    #[error("image {path}: {msg}")]
    Image {
        /// The image file (or a description when it came from memory).
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Inputs given to the model are inconsistent (shapes, token ids, image counts).
    #[error("invalid input: {0}")]
    Input(String),
    /// An error from a tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`ModelError`] as the default error.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed or unsupported configuration in `path`.
    pub fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An unreadable weights file `path`.
    pub fn weights(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Self::Weights {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}
