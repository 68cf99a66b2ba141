//! Errors of the training-data pipeline that stop a job. Problems inside one sample are never
//! errors: they are skipped and counted (see [`super::skip`]).

use std::path::PathBuf;

/// A failure of a training data source as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A shard file could not be opened or positioned.
    #[error("shard {path}: cannot open: {source}")]
    ShardOpen {
        /// The shard file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The shard pattern of a source is malformed or names no file.
    #[error("source `{source_name}`: shard pattern `{pattern}`: {message}")]
    Pattern {
        /// Name of the source.
        source_name: String,
        /// The brace pattern as configured.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// Every shard of a source was read through without producing a single sample.
    #[error("shards `{pattern}`: no shard holds a readable sample")]
    NoSamples {
        /// The brace pattern of the source.
        pattern: String,
    },
    /// A source skipped so many samples in a row that it is presumably misconfigured.
    #[error("source `{source_name}`: the last {count} samples were all skipped (last: {last})")]
    AllSkipped {
        /// Name of the source.
        source_name: String,
        /// Consecutive skipped samples.
        count: u64,
        /// The last skip, with its sample key and reason.
        last: String,
    },
    /// A saved data-stream state does not belong to this source or its shards changed.
    #[error("source `{source_name}`: saved data-stream state does not fit: {message}")]
    State {
        /// Name of the source.
        source_name: String,
        /// What differs.
        message: String,
    },
    /// A source's settings are unusable (e.g. a zero batch size).
    #[error("source `{source_name}`: {message}")]
    Config {
        /// Name of the source.
        source_name: String,
        /// What is wrong, naming the setting.
        message: String,
    },
    /// Building the batch tensors failed.
    #[error("source `{source_name}`: building batch tensors: {source}")]
    Tensor {
        /// Name of the source.
        source_name: String,
        /// The candle error.
        source: candle_core::Error,
    },
}
