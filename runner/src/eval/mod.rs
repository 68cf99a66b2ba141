//! Evaluation: the datasets' real formats, prompts, demonstration selection (random and RICES),
//! the paper-versus-code protocol choices, decoding and the metrics of the reference
//! implementations.

pub mod cell;
pub mod check;
pub mod datasets;
pub mod demos;
pub mod features;
pub mod fingerprint;
pub mod media_cache;
pub mod metrics;
pub mod model_cache;
pub mod postprocess;
pub mod prompts;
pub mod protocol;
pub mod rices;
pub mod scoring;
pub mod stage;
pub mod weights;
