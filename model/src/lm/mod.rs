//! Decoder-only language models (OPT, GPT-NeoX, MPT/MosaicGPT, LLaMA) loaded from HF directories, exposed
//! layer by layer so that Flamingo can insert gated cross-attention before any decoder layer.
//!
//! Every family reads `config.json` and `model.safetensors` (or sharded `model.safetensors.index.json`, or
//! the PyTorch `pytorch_model.bin` equivalents) by HF weight names, and reproduces HF's causal + padding
//! masks, position ids and ALiBi biases under left padding. All ops are composed differentiable candle ops,
//! so gradients flow through the frozen LM (plain tensors) into trainable layers upstream of it. Forward
//! methods return [`candle_core::Result`]; loading returns [`ModelError`].
//!
//! ```text
//! let tok = FlamingoTokenizer::from_dir(dir)?;
//! let lm = DecoderLm::load(dir, tok.len(), SpecialEmbeddingMode::Trainable, &tok.trainable_token_ids(), &dev)?;
//! let ctx = AttnCtx::new(mask, 0); // (B, T) mask, 1 = token, 0 = left padding
//! let mut cache = lm.new_cache();
//! let mut x = lm.embed(&ids, &ctx)?;
//! for i in 0..lm.num_layers() {
//!     // (gated cross-attention goes here)
//!     x = lm.layer(i, &x, &ctx, Some(&mut cache.layers[i]))?;
//! }
//! let logits = lm.logits(&x)?; // (B, T, tok.len())
//! // next step: AttnCtx::new(mask with one more column of 1s, T) and the 1-token ids.
//! ```

mod gpt_neox;
mod llama;
mod mpt;
pub mod ops;
mod opt;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::embeddings::{SpecialEmbeddingMode, TokenEmbeddings};
use crate::error::{ModelError, Result};
use weights::Weights;

/// Seed of the generator that initialises embedding rows added by resizing (deterministic loads).
pub const RESIZE_SEED: u64 = 0x5eed_f1a6;

/// The LM families this crate implements, named by the HF `model_type` of `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmFamily {
    /// `opt` (facebook/opt-*).
    Opt,
    /// `gpt_neox` (Pythia, RedPajama-INCITE).
    GptNeox,
    /// `mpt` (MPT-7B, `MPTForCausalLM`).
    Mpt,
    /// `mosaic_gpt` (MPT-1B RedPajama, `MosaicGPT`).
    MosaicGpt,
    /// `llama`.
    Llama,
}

impl LmFamily {
    /// Parses an HF `model_type`; `None` for families this crate does not implement.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "opt" => Self::Opt,
            "gpt_neox" => Self::GptNeox,
            "mpt" => Self::Mpt,
            "mosaic_gpt" => Self::MosaicGpt,
            "llama" => Self::Llama,
            _ => return None,
        })
    }

    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Opt => "opt",
            Self::GptNeox => "gpt_neox",
            Self::Mpt => "mpt",
            Self::MosaicGpt => "mosaic_gpt",
            Self::Llama => "llama",
        }
    }

    /// Dotted path of the decoder layer list inside the HF model (OpenFlamingo's
    /// `decoder_layers_attr_name`), e.g. `transformer.blocks`.
    pub fn decoder_layers_path(self) -> &'static str {
        match self {
            Self::Opt => "model.decoder.layers",
            Self::GptNeox => "gpt_neox.layers",
            Self::Mpt | Self::MosaicGpt => "transformer.blocks",
            Self::Llama => "model.layers",
        }
    }

    /// HF name of the input embedding weight.
    pub fn embedding_key(self) -> &'static str {
        match self {
            Self::Opt => "model.decoder.embed_tokens.weight",
            Self::GptNeox => "gpt_neox.embed_in.weight",
            Self::Mpt | Self::MosaicGpt => "transformer.wte.weight",
            Self::Llama => "model.embed_tokens.weight",
        }
    }
}

/// The family-independent summary of an LM configuration.
#[derive(Debug, Clone)]
pub struct LmConfig {
    /// Which implementation runs the model.
    pub family: LmFamily,
    /// Width of the hidden states between decoder layers (`d_model` for MPT).
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of attention heads.
    pub num_heads: usize,
    /// `vocab_size` of `config.json` (before resizing to the tokenizer).
    pub vocab_size: usize,
    /// Width of an embedding row (OPT's `word_embed_proj_dim`; else `hidden_size`).
    pub embed_dim: usize,
    /// Standard deviation used for rows added by resizing (`initializer_range`, OPT `init_std`, MPT `init_std`).
    pub initializer_range: f64,
    /// Whether the output head is the input embedding table.
    pub tie_word_embeddings: bool,
    /// HF name of the untied output head weight (`lm_head.weight`, `embed_out.weight`); `None` when tied.
    pub head_key: Option<String>,
    /// The `config.json` this was read from.
    pub config_path: PathBuf,
}

impl LmConfig {
    /// HF name of the input embedding weight.
    pub fn embedding_key(&self) -> &'static str {
        self.family.embedding_key()
    }

    /// Dotted path of the decoder layer list (`transformer.blocks`, `gpt_neox.layers`, ...).
    pub fn decoder_layers_path(&self) -> &'static str {
        self.family.decoder_layers_path()
    }
}

/// How rotary families (GPT-NeoX, LLaMA) derive position ids. Rotary attention depends only on position
/// differences, so both rules give the same logits for real tokens up to float rounding (~1e-7); pick the one
/// HF used to be bit-closest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PositionRule {
    /// As HF `generate` (`prepare_inputs_for_generation`): `cumsum(mask) - 1`, pads set to 1. A left-padded
    /// row then gets the same positions as its unpadded sequence.
    #[default]
    FromMask,
    /// As a plain HF `forward` without `position_ids`: `past_len .. past_len + T` whatever the padding.
    Sequential,
}

/// Attention context of one forward call. Build it with [`AttnCtx::new`], [`AttnCtx::sequential`] or
/// [`AttnCtx::unpadded`]; the causal bias and rotary tables derived from it are computed once and shared by
/// every layer (do not mutate the fields after the first layer call).
#[derive(Debug, Clone)]
pub struct AttnCtx {
    /// `(B, past_len + T)`, 1 for real tokens and 0 for padding (left padding in generation); any dtype.
    pub attention_mask: Tensor,
    /// Number of positions already held by the KV cache.
    pub past_len: usize,
    /// Position-id rule of rotary families (OPT and MPT derive theirs from the mask as HF always does).
    pub positions: PositionRule,
    /// Added to every position id (see [`AttnCtx::with_position_offset`]).
    position_offset: usize,
    memo: Memo,
}

/// Tensors derived from an [`AttnCtx`], with the parameters they were derived for.
#[derive(Debug, Clone, Default)]
struct Memo {
    bias: OnceLock<(BiasKey, Tensor)>,
    alibi: OnceLock<(AlibiKey, Tensor)>,
    rotary: OnceLock<(RotaryKey, Tensor, Tensor)>,
}

/// (B, T, past_len, slope bits) of a cached causal + ALiBi bias.
type AlibiKey = (usize, usize, usize, Vec<u32>);

/// (B, T, past_len) of a cached causal bias.
type BiasKey = (usize, usize, usize);
/// (B, T, past_len, rule, rotary dims, base bits, scale bits) of cached rotary tables.
type RotaryKey = (usize, usize, usize, PositionRule, usize, u64, u32);

impl AttnCtx {
    /// A context with HF `generate` position semantics ([`PositionRule::FromMask`]).
    pub fn new(attention_mask: Tensor, past_len: usize) -> Self {
        Self {
            attention_mask,
            past_len,
            positions: PositionRule::FromMask,
            position_offset: 0,
            memo: Memo::default(),
        }
    }

    /// A context with plain HF `forward` position semantics ([`PositionRule::Sequential`]).
    pub fn sequential(attention_mask: Tensor, past_len: usize) -> Self {
        Self {
            attention_mask,
            past_len,
            positions: PositionRule::Sequential,
            position_offset: 0,
            memo: Memo::default(),
        }
    }

    /// Shifts every position id by `offset`. LM pretraining on short windows uses it so that every
    /// learned position, not just the first window's, is trained (long few-shot prompts need them).
    pub fn with_position_offset(mut self, offset: usize) -> Self {
        self.position_offset = offset;
        self.memo = Memo::default();
        self
    }

    /// A context without padding for `b` sequences of `t` new tokens after `past_len` cached ones.
    pub fn unpadded(
        b: usize,
        t: usize,
        past_len: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        Ok(Self::new(
            Tensor::ones((b, past_len + t), DType::U32, device)?,
            past_len,
        ))
    }

    /// The additive causal + padding bias `(B, 1, T, past+T)` in f32, computed once per context.
    pub(crate) fn bias(&self, b: usize, t: usize) -> candle_core::Result<Tensor> {
        let key = (b, t, self.past_len);
        if let Some((k, bias)) = self.memo.bias.get()
            && *k == key
        {
            return Ok(bias.clone());
        }
        let bias = self.causal_bias(b, t, self.attention_mask.device())?;
        let _ = self.memo.bias.set((key, bias.clone()));
        Ok(bias)
    }

    /// The causal + padding bias plus ALiBi, `slope_h · (s − (S−1))` on key `s` of head `h`:
    /// `(B, H, T, past+T)` in f32, computed once per context (every layer shares it).
    pub(crate) fn alibi_bias(
        &self,
        b: usize,
        t: usize,
        slopes: &[f32],
    ) -> candle_core::Result<Tensor> {
        let key = (
            b,
            t,
            self.past_len,
            slopes.iter().map(|s| s.to_bits()).collect(),
        );
        if let Some((k, bias)) = self.memo.alibi.get()
            && *k == key
        {
            return Ok(bias.clone());
        }
        let s_k = self.past_len + t;
        let alibi: Vec<f32> = slopes
            .iter()
            .flat_map(|&slope| (0..s_k).map(move |j| (j as f32 - (s_k as f32 - 1.0)) * slope))
            .collect();
        let dev = self.attention_mask.device();
        let alibi = Tensor::from_vec(alibi, (1, slopes.len(), 1, s_k), dev)?;
        let bias = self.bias(b, t)?.broadcast_add(&alibi)?;
        let _ = self.memo.alibi.set((key, bias.clone()));
        Ok(bias)
    }

    /// Rotary `cos`, `sin` `(B, 1, T, rot)` for the new tokens (positions divided by `scale`), computed once
    /// per context and rotary setting.
    pub(crate) fn rotary(
        &self,
        b: usize,
        t: usize,
        rot: usize,
        base: f64,
        scale: f32,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let key = (
            b,
            t,
            self.past_len,
            self.positions,
            rot,
            base.to_bits(),
            scale.to_bits(),
        );
        if let Some((k, cos, sin)) = self.memo.rotary.get()
            && *k == key
        {
            return Ok((cos.clone(), sin.clone()));
        }
        let mut pos = self.rotary_positions(b, t)?;
        if scale != 1.0 {
            pos.iter_mut().flatten().for_each(|p| *p /= scale);
        }
        let dev = self.attention_mask.device();
        let (cos, sin) = ops::rotary_tables(&pos, rot, base, dev, DType::F32)?;
        let _ = self.memo.rotary.set((key, cos.clone(), sin.clone()));
        Ok((cos, sin))
    }

    /// The mask as host rows of 0/1, after checking it is `(b, past_len + t)`.
    fn mask_rows(&self, b: usize, t: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        let dims = self.attention_mask.dims();
        if dims != [b, self.past_len + t] {
            candle_core::bail!(
                "attention_mask has shape {dims:?}, expected [{b}, {}] (batch, past_len {} + new tokens {t})",
                self.past_len + t,
                self.past_len
            );
        }
        let rows = self.attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| if v != 0.0 { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect())
    }

    /// Additive causal + key-padding bias `(B, 1, T, past+T)`: 0 where query `t` may see key `s`, else
    /// [`ops::MASK_VALUE`].
    pub(crate) fn causal_bias(
        &self,
        b: usize,
        t: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let rows = self.mask_rows(b, t)?;
        let s = self.past_len + t;
        let mut bias = Vec::with_capacity(b * t * s);
        for row in &rows {
            for q in 0..t {
                let last = self.past_len + q;
                for (k, &m) in row.iter().enumerate() {
                    bias.push(if k <= last && m != 0.0 {
                        0.0
                    } else {
                        ops::MASK_VALUE
                    });
                }
            }
        }
        Tensor::from_vec(bias, (b, 1, t, s), device)
    }

    /// Rotary position ids `(B, T)` for the new tokens under [`AttnCtx::positions`].
    pub(crate) fn rotary_positions(
        &self,
        b: usize,
        t: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = self.mask_rows(b, t)?;
        let shift = self.position_offset as f32;
        let mut pos: Vec<Vec<f32>> = match self.positions {
            PositionRule::Sequential => (0..b)
                .map(|_| {
                    (self.past_len..self.past_len + t)
                        .map(|p| p as f32)
                        .collect()
                })
                .collect(),
            PositionRule::FromMask => rows
                .iter()
                .map(|row| {
                    let mut cum = 0f32;
                    let all: Vec<f32> = row
                        .iter()
                        .map(|&m| {
                            cum += m;
                            if m == 0.0 { 1.0 } else { cum - 1.0 }
                        })
                        .collect();
                    all[self.past_len..].to_vec()
                })
                .collect(),
        };
        if shift != 0.0 {
            pos.iter_mut().flatten().for_each(|p| *p += shift);
        }
        Ok(pos)
    }

    /// OPT learned-position indices `(B, T)`: `cumsum(mask)·mask - 1 + 2` (HF `OPTLearnedPositionalEmbedding`).
    pub(crate) fn opt_positions(&self, b: usize, t: usize) -> candle_core::Result<Vec<u32>> {
        let rows = self.mask_rows(b, t)?;
        let mut out = Vec::with_capacity(b * t);
        for row in &rows {
            let mut cum = 0f32;
            for (s, &m) in row.iter().enumerate() {
                cum += m;
                if s >= self.past_len {
                    out.push((cum * m - 1.0 + 2.0) as u32 + self.position_offset as u32);
                }
            }
        }
        Ok(out)
    }

    /// MPT learned-position indices `(B, T)`: `clamp(pos - cumsum(1 - mask), 0)`.
    pub(crate) fn mpt_positions(&self, b: usize, t: usize) -> candle_core::Result<Vec<u32>> {
        let rows = self.mask_rows(b, t)?;
        let mut out = Vec::with_capacity(b * t);
        for row in &rows {
            let mut pads = 0i64;
            for (s, &m) in row.iter().enumerate() {
                if m == 0.0 {
                    pads += 1;
                }
                if s >= self.past_len {
                    out.push((s as i64 - pads).max(0) as u32 + self.position_offset as u32);
                }
            }
        }
        Ok(out)
    }
}

/// Cached keys and values of one decoder layer, `(B, H_kv, S, head_dim)` each.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys and values.
    pub fn kv(&self) -> Option<&(Tensor, Tensor)> {
        self.kv.as_ref()
    }

    /// Appends new keys/values and returns the full ones.
    pub(crate) fn append(
        &mut self,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = match &self.kv {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
            None => (k.clone(), v.clone()),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// The KV cache of a whole LM.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One cache per decoder layer.
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    /// Number of cached positions (that of the first layer).
    pub fn past_len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Reorders (or repeats) the batch rows: row `i` becomes old row `beam_idx[i]` (HF `_reorder_cache`).
    pub fn reorder(&mut self, beam_idx: &Tensor) -> candle_core::Result<()> {
        let idx = beam_idx.to_dtype(DType::U32)?;
        for layer in &mut self.layers {
            if let Some((k, v)) = &layer.kv {
                layer.kv = Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?));
            }
        }
        Ok(())
    }
}

/// What a family contributes besides the token embedding table.
pub(crate) trait FamilyBody: Send + Sync + std::fmt::Debug {
    /// Turns looked-up token embeddings `(B, T, embed_dim)` into the first hidden states `(B, T, hidden)`.
    fn embed(&self, tokens: &Tensor, ctx: &AttnCtx) -> candle_core::Result<Tensor>;
    /// Runs decoder layer `i`.
    fn layer(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> candle_core::Result<Tensor>;
    /// Final norm (and OPT's `project_out`) before the head.
    fn finish(&self, x: &Tensor) -> candle_core::Result<Tensor>;
}

/// A family's loaded parts, before the embeddings are resized.
pub(crate) struct LoadedFamily {
    pub config: LmConfig,
    pub body: Box<dyn FamilyBody>,
    /// The input embedding table `(vocab_size, embed_dim)` as stored.
    pub table: Tensor,
    /// The untied output head `(vocab_size, embed_dim)`, `None` when tied.
    pub head: Option<Tensor>,
    /// MPT's `logit_scale`.
    pub logit_scale: Option<f64>,
}

/// Context handed to a family loader.
pub(crate) struct LoadCtx<'a> {
    pub config_path: &'a Path,
    pub config: serde_json::Value,
    pub weights: &'a Weights,
    pub family: LmFamily,
}

impl LoadCtx<'_> {
    /// Deserialises the family's config struct, naming the file on error.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone()).map_err(|source| ModelError::Json {
            path: self.config_path.to_path_buf(),
            source,
        })
    }

    /// A configuration error naming the file.
    pub fn config_error(&self, message: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.config_path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A decoder-only LM run layer by layer.
#[derive(Debug)]
pub struct DecoderLm {
    config: LmConfig,
    embeddings: TokenEmbeddings,
    body: Box<dyn FamilyBody>,
    /// Untied output head `(vocab_len, embed_dim)` (frozen).
    head: Option<Tensor>,
    logit_scale: Option<f64>,
}

impl DecoderLm {
    /// Loads `dir/config.json` + weights, resizes the embeddings (and an untied head) to `vocab_len` rows as
    /// HF `resize_token_embeddings` does (first rows copied; added rows drawn from N(0, initializer_range)
    /// with the fixed [`RESIZE_SEED`]), and makes the rows of `special_ids` trainable in
    /// [`SpecialEmbeddingMode::Trainable`]. Weights are held in f32.
    pub fn load(
        dir: &Path,
        vocab_len: usize,
        mode: SpecialEmbeddingMode,
        special_ids: &[u32],
        device: &Device,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: config_path.clone(),
                source,
            })?;
        let family = family_of(&config, &config_path)?;
        let weights = Weights::open(dir, device, DType::F32)?;
        Self::build(
            &config_path,
            config,
            family,
            &weights,
            vocab_len,
            mode,
            special_ids,
        )
    }

    /// Builds an LM from a parsed `config.json` and weights already at hand (e.g.
    /// [`Weights::from_tensors`] over the tensors of candle `Var`s, which then receive gradients through
    /// every op of the body and head). Resizing and special rows as in [`DecoderLm::load`]; note that the
    /// embedding table itself is detached except for the rows of `special_ids` (pass every id to train the
    /// whole table, whose rows are then returned by [`DecoderLm::trainable_vars`]). Errors name
    /// `<weights origin>/config.json`.
    pub fn from_weights(
        config: serde_json::Value,
        weights: &Weights,
        vocab_len: usize,
        mode: SpecialEmbeddingMode,
        special_ids: &[u32],
    ) -> Result<Self> {
        let config_path = weights.origin().join("config.json");
        let family = family_of(&config, &config_path)?;
        Self::build(
            &config_path,
            config,
            family,
            weights,
            vocab_len,
            mode,
            special_ids,
        )
    }

    /// The family loader, resizing and special rows shared by [`DecoderLm::load`] and
    /// [`DecoderLm::from_weights`].
    fn build(
        config_path: &Path,
        config: serde_json::Value,
        family: LmFamily,
        weights: &Weights,
        vocab_len: usize,
        mode: SpecialEmbeddingMode,
        special_ids: &[u32],
    ) -> Result<Self> {
        let ctx = LoadCtx {
            config_path,
            config,
            weights,
            family,
        };
        let loaded = match family {
            LmFamily::Opt => opt::load(&ctx)?,
            LmFamily::GptNeox => gpt_neox::load(&ctx)?,
            LmFamily::Mpt | LmFamily::MosaicGpt => mpt::load(&ctx)?,
            LmFamily::Llama => llama::load(&ctx)?,
        };
        let std = loaded.config.initializer_range;
        let table = resize_rows(&loaded.table, vocab_len, std, RESIZE_SEED)?;
        let head = match &loaded.head {
            Some(h) => Some(resize_rows(h, vocab_len, std, RESIZE_SEED.wrapping_add(1))?),
            None => None,
        };
        let embeddings =
            TokenEmbeddings::new(table, mode, special_ids).map_err(|e| ModelError::Config {
                path: config_path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            config: loaded.config,
            embeddings,
            body: loaded.body,
            head,
            logit_scale: loaded.logit_scale,
        })
    }

    /// The configuration summary.
    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.config.num_layers
    }

    /// Width of the hidden states between decoder layers.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Number of rows of the (resized) embedding table = logits width.
    pub fn vocab_len(&self) -> usize {
        self.embeddings.vocab_size()
    }

    /// Token ids `(B, T)` → first hidden states `(B, T, hidden)`, including learned positions (OPT, MPT
    /// without ALiBi) computed from `ctx.attention_mask` as HF does.
    pub fn embed(&self, ids: &Tensor, ctx: &AttnCtx) -> candle_core::Result<Tensor> {
        let tokens = self.embeddings.forward(ids)?;
        self.body.embed(&tokens, ctx)
    }

    /// Runs decoder layer `i` on `x (B, T, hidden)`. With a cache, its keys/values are prepended and the new
    /// ones appended; `ctx.past_len` must equal the cached length.
    pub fn layer(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttnCtx,
        cache: Option<&mut LayerCache>,
    ) -> candle_core::Result<Tensor> {
        if i >= self.config.num_layers {
            candle_core::bail!(
                "layer {i} out of range: the LM has {} layers",
                self.config.num_layers
            );
        }
        let cached = cache.as_ref().map_or(0, |c| c.len());
        if cached != ctx.past_len {
            candle_core::bail!(
                "layer {i}: AttnCtx.past_len is {} but the layer cache holds {cached} positions",
                ctx.past_len
            );
        }
        self.body.layer(i, x, ctx, cache)
    }

    /// Final norm + output head: `(B, T, hidden) → (B, T, vocab_len)`. Tied heads (OPT, MPT) use the
    /// embedding table including the trainable rows; MPT's `logit_scale` is applied.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.body.finish(x)?;
        let logits = match &self.head {
            Some(w) => crate::frozen::matmul_t(&h, w)?,
            None => self.embeddings.tied_logits(&h)?,
        };
        match self.logit_scale {
            Some(s) => logits * s,
            None => Ok(logits),
        }
    }

    /// Runs every layer without cross-attention: ids → logits (a convenience for tests and text-only use).
    pub fn forward(
        &self,
        ids: &Tensor,
        ctx: &AttnCtx,
        mut cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.embed(ids, ctx)?;
        for i in 0..self.num_layers() {
            let layer_cache = match cache.as_deref_mut() {
                Some(c) => c.layers.get_mut(i),
                None => None,
            };
            x = self.layer(i, &x, ctx, layer_cache)?;
        }
        self.logits(&x)
    }

    /// An empty KV cache with one slot per layer.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); self.config.num_layers],
        }
    }

    /// The token embeddings (frozen base + trainable special rows).
    pub fn embeddings(&self) -> &TokenEmbeddings {
        &self.embeddings
    }

    /// Mutable token embeddings (to overwrite the table from a checkpoint).
    pub fn embeddings_mut(&mut self) -> &mut TokenEmbeddings {
        &mut self.embeddings
    }

    /// The untied output head `(vocab_len, embed_dim)`, `None` when tied to the embeddings.
    pub fn output_head(&self) -> Option<&Tensor> {
        self.head.as_ref()
    }

    /// Replaces the untied output head (e.g. GPT-NeoX `embed_out.weight` from a checkpoint).
    pub fn set_output_head(&mut self, weight: &Tensor) -> candle_core::Result<()> {
        match &self.head {
            Some(h) if h.dims() == weight.dims() => {
                self.head = Some(weight.to_dtype(h.dtype())?.to_device(h.device())?.detach());
                Ok(())
            }
            Some(h) => candle_core::bail!(
                "output head shape {:?} does not match the LM's {:?}",
                weight.dims(),
                h.dims()
            ),
            None => candle_core::bail!("this LM's output head is tied to its input embeddings"),
        }
    }

    /// Every trainable tensor of the LM: only the special embedding rows (empty when frozen).
    pub fn trainable_vars(&self) -> Vec<candle_core::Var> {
        self.embeddings.trainable_vars()
    }
}

/// The family named by `config.model_type`; errors name `config_path`.
fn family_of(config: &serde_json::Value, config_path: &Path) -> Result<LmFamily> {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ModelError::Config {
            path: config_path.to_path_buf(),
            message: "no string `model_type`".to_string(),
        })?;
    LmFamily::from_model_type(model_type).ok_or_else(|| ModelError::Config {
        path: config_path.to_path_buf(),
        message: format!(
            "unsupported model_type `{model_type}` (supported: opt, gpt_neox, mpt, mosaic_gpt, llama)"
        ),
    })
}

/// HF `resize_token_embeddings` on a `(rows, dim)` table: keeps the first `min(rows, new)` rows and appends
/// rows drawn from N(0, std) with a seeded generator.
pub fn resize_rows(
    table: &Tensor,
    new_rows: usize,
    std: f64,
    seed: u64,
) -> candle_core::Result<Tensor> {
    let (rows, dim) = table.dims2()?;
    if new_rows <= rows {
        return table.narrow(0, 0, new_rows);
    }
    let extra = new_rows - rows;
    let values = seeded_normal(extra * dim, std, seed);
    let added = Tensor::from_vec(values, (extra, dim), table.device())?.to_dtype(table.dtype())?;
    Tensor::cat(&[table, &added], 0)
}

/// `n` samples of N(0, std) from a ChaCha generator (Box–Muller), identical on every platform.
fn seeded_normal(n: usize, std: f64, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        if out.len() < n {
            out.push((r * a.sin()) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn position_offset_shifts_every_family_rule() -> candle_core::Result<()> {
        let ctx = AttnCtx::unpadded(1, 3, 0, &Device::Cpu)?;
        let shifted = ctx.clone().with_position_offset(5);
        assert_eq!(ctx.opt_positions(1, 3)?, vec![2, 3, 4]);
        assert_eq!(shifted.opt_positions(1, 3)?, vec![7, 8, 9]);
        assert_eq!(shifted.mpt_positions(1, 3)?, vec![5, 6, 7]);
        assert_eq!(shifted.rotary_positions(1, 3)?, vec![vec![5.0, 6.0, 7.0]]);
        Ok(())
    }
}
