//! Errors of the Flamingo training stage, each naming what it concerns.

use std::path::PathBuf;

use crate::data::DataError;
use crate::train::checkpoint::CheckpointError;

/// What can stop a training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Building or loading the model failed.
    #[error("model: {0}")]
    Model(#[from] model::ModelError),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The data mix failed (unreadable shards, a source whose samples are all rejected). Boxed:
    /// a `DataError` is the largest cause, and every training `Result` would carry its size.
    #[error("data: {0}")]
    Data(Box<DataError>),
    /// Reading or writing a checkpoint failed.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// Too many optimizer steps in a row had a non-finite loss or gradient norm.
    #[error(
        "{count} steps in a row ended non-finite (last at step {step}: {why}); stopped, \
         the last good checkpoint is {}",
        last_checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    )]
    NonFinite {
        /// Consecutive non-finite steps.
        count: u64,
        /// The last of them (1-based).
        step: u64,
        /// What was non-finite.
        why: String,
        /// The newest checkpoint on disk.
        last_checkpoint: Option<PathBuf>,
    },
    /// A checkpoint does not belong to this training.
    #[error("checkpoint {path}: {message}")]
    Resume {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why it cannot be resumed.
        message: String,
    },
    /// A setting is unusable.
    #[error("train config: {0}")]
    Config(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(Box::new(e))
    }
}
