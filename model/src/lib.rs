//! The Flamingo network in candle.

pub mod cross_attn;
pub mod error;
pub mod nn;
pub mod perceiver;
pub mod preprocess;
pub mod vision;
pub mod weights;

pub use error::{ModelError, Result};
