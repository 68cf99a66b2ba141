//! Evaluation: prompts, demonstrations, decoding and the metrics of the reference implementations.

pub mod metrics;
