//! The Flamingo network in candle.

pub mod embeddings;
pub mod error;
pub mod lm;
pub mod tokenizer;

pub use embeddings::{SpecialEmbeddingMode, TokenEmbeddings};
pub use error::ModelError;
pub use lm::{AttnCtx, DecoderLm, KvCache, LayerCache, LmConfig, LmFamily, PositionRule};
pub use tokenizer::FlamingoTokenizer;
