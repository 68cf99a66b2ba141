//! Evaluation: the datasets' real formats, prompts, demonstration selection (random and RICES),
//! the paper-versus-code protocol choices, decoding and the metrics of the reference
//! implementations.

pub mod check;
pub mod datasets;
pub mod demos;
pub mod features;
pub mod metrics;
pub mod prompts;
pub mod protocol;
