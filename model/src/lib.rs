//! The Flamingo network in candle.

pub mod checkpoint;
pub mod cross_attn;
pub mod embeddings;
pub mod error;
pub mod flamingo;
pub mod generate;
pub mod lm;
pub mod nn;
pub mod perceiver;
pub mod preprocess;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use embeddings::{SpecialEmbeddingMode, TokenEmbeddings};
pub use checkpoint::LoadReport;
pub use error::{ModelError, Result};
pub use flamingo::{Flamingo, FlamingoConfig, FlamingoSpec, MediaContext, TrainableVars};
pub use generate::{GenerateConfig, Generation, PromptBatch, generate, rank_scores};
pub use preprocess::ImageProcessor;
pub use lm::{AttnCtx, DecoderLm, KvCache, LayerCache, LmConfig, LmFamily, PositionRule};
pub use tokenizer::FlamingoTokenizer;
