//! Metrics identical to the reference implementations (pycocoevalcap CIDEr-D, open_flamingo VQA
//! accuracy, scikit-learn ROC AUC), the readers of their standard files, and `runner score`.

pub mod auc;
pub mod cider;
pub mod error;
pub mod formats;
pub mod okvqa_stem;
pub mod ptb;
pub mod ptb_rules;
pub mod python;
pub mod score;
pub mod vqa;

pub use error::MetricError;
