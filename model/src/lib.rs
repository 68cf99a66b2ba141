//! The Flamingo network in candle, numerically following mlfoundations/open_flamingo.
//!
//! Entry points:
//! - [`Flamingo::load`] (`FlamingoSpec { vision_dir, language_dir, checkpoint, .. }`) -> model,
//!   [`FlamingoTokenizer`], [`ImageProcessor`], [`LoadReport`].
//! - [`ImageProcessor::open`] / [`ImageProcessor::batch`]: images -> `(B, T_img, 3, S, S)` pixels.
//! - [`Flamingo::forward`]: pixels + ids + mask -> logits (differentiable; training and scoring).
//! - [`generate()`] with [`GenerateConfig`] on a left-padded [`PromptBatch`]: greedy / beam search as
//!   HF `generate`; [`rank_scores`]: log-likelihood of candidate continuations after a context.
//! - [`Flamingo::trainable_vars`]: the optimizer groups; [`Flamingo::save_trainable`] and
//!   [`checkpoint::load_checkpoint`]: OpenFlamingo-named weights in and out.
//! - Lower level: [`Flamingo::encode_media`], [`Flamingo::media_context`], [`MediaContext::mask`],
//!   [`Flamingo::forward_hidden`] / [`Flamingo::infer_hidden`] with an [`AttnCtx`] and [`KvCache`].

pub mod checkpoint;
pub mod cross_attn;
pub mod embeddings;
pub mod error;
pub mod flamingo;
pub mod frozen;
pub mod generate;
pub mod lm;
pub mod nn;
pub mod perceiver;
pub mod preprocess;
pub mod softmax;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use checkpoint::LoadReport;
pub use embeddings::{SpecialEmbeddingMode, TokenEmbeddings};
pub use error::{ModelError, Result};
pub use flamingo::{Flamingo, FlamingoConfig, FlamingoSpec, MediaContext, TrainableVars};
pub use generate::{
    GenerateConfig, Generation, PromptBatch, RankOptions, generate, rank_scores, rank_scores_with,
};
pub use lm::{AttnCtx, DecoderLm, KvCache, LayerCache, LmConfig, LmFamily, PositionRule};
pub use preprocess::ImageProcessor;
pub use tokenizer::FlamingoTokenizer;
