//! Pretraining of the tiny preset backbones the embedded default uses: a BPE tokenizer and a small
//! decoder LM on the synthetic text, a small CLIP-style ViT on the synthetic pairs.

pub mod clip;
pub mod tokenizer;
