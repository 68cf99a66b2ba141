//! Errors of the metrics and of `runner score`; every one names the file and entry it concerns.

use std::path::PathBuf;

/// Why a score could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// A file could not be read.
    #[error("{path}: cannot read: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A file is not valid JSON (or a JSON line is not).
    #[error("{path}: malformed JSON{at}: {cause}", at = line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// The 1-based line for JSON-lines files.
        line: Option<usize>,
        /// The parser's error.
        cause: serde_json::Error,
    },
    /// A file parses but does not have the expected structure.
    #[error("{path}: {entry}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The offending entry, e.g. `entry 3` or `annotations[7].answers`.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A prediction names an id the annotations do not have.
    #[error("{path}: entry {index}: id {id} is not in the annotations {annotations}")]
    UnknownId {
        /// The predictions file.
        path: PathBuf,
        /// Index of the prediction in its file.
        index: usize,
        /// The id.
        id: String,
        /// The annotations file.
        annotations: PathBuf,
    },
    /// The same id appears twice.
    #[error("{path}: entry {index}: duplicate id {id} (first at entry {first})")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// Index of the second occurrence.
        index: usize,
        /// Index of the first occurrence.
        first: usize,
        /// The id.
        id: String,
    },
    /// Nothing to score.
    #[error("{path}: no predictions")]
    EmptyPredictions {
        /// The predictions file.
        path: PathBuf,
    },
    /// A predicted image has no reference captions (or a question no answers).
    #[error("{path}: id {id} has no reference {what}")]
    NoReferences {
        /// The annotations file.
        path: PathBuf,
        /// The id.
        id: String,
        /// `captions` or `answers`.
        what: &'static str,
    },
    /// ROC AUC needs both classes among the scored examples.
    #[error(
        "{context}: only one class ({class}) present in the labels; ROC AUC is not defined in that case"
    )]
    OneClass {
        /// The annotations file (or a description of the caller's data).
        context: String,
        /// The only label present.
        class: String,
    },
    /// A score is NaN or infinite.
    #[error("{context}: score {value} is not finite")]
    NonFinite {
        /// Where the score came from.
        context: String,
        /// The value.
        value: f64,
    },
    /// Inputs of different lengths were passed to a metric function.
    #[error("{0}")]
    Mismatch(String),
    /// Not one of `cider`, `vqa-accuracy`, `roc-auc`.
    #[error("unknown metric {0:?} (expected cider, vqa-accuracy or roc-auc)")]
    UnknownMetric(String),
    /// The PTB tokenizer failed (an internal error of the lexer).
    #[error("PTB tokenizer: {0}")]
    Tokenizer(String),
}
