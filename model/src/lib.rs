//! The Flamingo network in candle.

pub mod cross_attn;
pub mod embeddings;
pub mod error;
pub mod lm;
pub mod nn;
pub mod perceiver;
pub mod preprocess;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use embeddings::{SpecialEmbeddingMode, TokenEmbeddings};
pub use error::{ModelError, Result};
pub use lm::{AttnCtx, DecoderLm, KvCache, LayerCache, LmConfig, LmFamily, PositionRule};
pub use tokenizer::FlamingoTokenizer;
