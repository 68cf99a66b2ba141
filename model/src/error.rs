//! Errors of the `model` crate: every variant names the file, key or tensor it concerns.

use std::path::PathBuf;

/// An error while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A configuration file holds a value this crate does not support.
    #[error("{path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A weight file is unreadable, or a tensor in it is missing or has the wrong shape.
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        /// The weight file (or its index).
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A weight file is not a readable safetensors file.
    #[error("{path}: not a readable safetensors file: {message}")]
    Safetensors {
        /// The weight file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A required file is absent.
    #[error("{path}: missing file ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file should have held.
        what: String,
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
    #[error("{path}: cannot read weights: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        message: String,
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
    #[error("{path}: checkpoint does not fit this model: {message}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Why it does not fit.
        message: String,
    },
    /// An image could not be decoded or preprocessed.
    #[error("image {path}: {message}")]
    Image {
        /// The image file (or a description when it came from memory).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Inputs of a forward call are inconsistent (shapes, masks, cache).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`ModelError`].
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
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An unreadable weights file `path`.
    pub fn weights(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::Weights {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
