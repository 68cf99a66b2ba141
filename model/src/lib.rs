//! The Flamingo network in candle.

pub mod error;

pub use error::{ModelError, Result};
