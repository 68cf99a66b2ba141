//! The Flamingo model (spec §1.1, §1.6, §1.8): a frozen CLIP vision encoder, a trainable Perceiver
//! resampler, and a frozen decoder LM with a trainable gated cross-attention block applied *before*
//! decoder layer `i` whenever `(i + 1) % cross_attn_every_n_layers == 0`.
//!
//! Trainable weights (perceiver, cross-attention) live in a [`VarMap`] under their OpenFlamingo
//! names (`perceiver.*`, `lang_encoder.<layers path>.{i}.gated_cross_attn_layer.*`); the frozen
//! backbones are plain tensors. Vision features are computed once per prompt and reused (the
//! per-layer media keys/values of a [`MediaContext`] are shared across beams and decoding steps).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::checkpoint::{self, LoadReport};
use crate::cross_attn::{
    CrossAttnConfig, GatedCrossAttentionBlock, MediaKv, MediaMask, media_counts, text_time_from_ids,
};
use crate::embeddings::SpecialEmbeddingMode;
use crate::error::{ModelError, Result};
use crate::lm::{AttnCtx, DecoderLm, KvCache};
use crate::nn::seeded_var_builder;
use crate::perceiver::{PerceiverConfig, PerceiverResampler};
use crate::preprocess::ImageProcessor;
use crate::tokenizer::FlamingoTokenizer;
use crate::vision::VisionEncoder;

/// Default seed of the trainable weights' initialisation (OpenFlamingo's `random_seed(42)`).
pub const DEFAULT_INIT_SEED: u64 = 42;

/// What to load: the inputs of [`Flamingo::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlamingoSpec {
    /// Vision encoder directory (open_clip or HF CLIP layout).
    pub vision_dir: PathBuf,
    /// HF LM directory (`config.json`, `*.safetensors`, `tokenizer.json`).
    pub language_dir: PathBuf,
    /// Optional OpenFlamingo checkpoint (`checkpoint.pt` in any of its layouts, or safetensors
    /// written by [`Flamingo::save_trainable`]).
    pub checkpoint: Option<PathBuf>,
    /// Insert a cross-attention block before every n-th decoder layer.
    pub cross_attn_every_n_layers: usize,
    /// Whether the `<image>` / `<|endofchunk|>` embedding rows train.
    pub special_embeddings: SpecialEmbeddingMode,
    /// Apply `ln_post` to the vision patch tokens (default off, as the released models).
    pub ln_post_tokens: bool,
    /// Seed of the initialisation of trainable weights not given by the checkpoint.
    pub init_seed: u64,
}

impl FlamingoSpec {
    /// A spec with OpenFlamingo defaults: no checkpoint, x-attn every layer, trainable special
    /// embeddings, no `ln_post` on tokens, init seed 42.
    pub fn new(vision_dir: impl Into<PathBuf>, language_dir: impl Into<PathBuf>) -> Self {
        Self {
            vision_dir: vision_dir.into(),
            language_dir: language_dir.into(),
            checkpoint: None,
            cross_attn_every_n_layers: 1,
            special_embeddings: SpecialEmbeddingMode::Trainable,
            ln_post_tokens: false,
            init_seed: DEFAULT_INIT_SEED,
        }
    }
}

/// Sizes and token ids tying the parts together.
#[derive(Debug, Clone, PartialEq)]
pub struct FlamingoConfig {
    /// Cross-attention placement interval.
    pub cross_attn_every_n_layers: usize,
    /// Id of `<image>`.
    pub media_token_id: u32,
    /// Id of `<|endofchunk|>` (the generation stop token).
    pub eoc_token_id: u32,
    /// The Perceiver resampler.
    pub perceiver: PerceiverConfig,
    /// Every gated cross-attention block.
    pub cross_attn: CrossAttnConfig,
}

/// Whether decoder layer `i` (0-based) gets a cross-attention block for interval `n`.
pub fn has_cross_attn(i: usize, n: usize) -> bool {
    n > 0 && (i + 1).is_multiple_of(n)
}

/// Per-layer media keys/values for one batch of prompts, computed once and reused.
#[derive(Debug, Clone)]
pub struct MediaContext {
    kv: Vec<Option<MediaKv>>,
    num_media: usize,
    latents: usize,
}

impl MediaContext {
    /// Number of images per row (including zero padding images).
    pub fn num_media(&self) -> usize {
        self.num_media
    }

    /// Selects (or repeats) batch rows, e.g. to expand prompts to beams.
    pub fn index_rows(&self, rows: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            kv: self
                .kv
                .iter()
                .map(|kv| kv.as_ref().map(|kv| kv.index_rows(rows)).transpose())
                .collect::<candle_core::Result<_>>()?,
            num_media: self.num_media,
            latents: self.latents,
        })
    }

    /// The cross-attention mask for per-position image indices `text_time` (see
    /// [`crate::cross_attn::text_time_from_ids`] and [`crate::cross_attn::text_time_cached`]).
    pub fn mask(&self, text_time: &[Vec<u32>], device: &Device) -> candle_core::Result<MediaMask> {
        MediaMask::new(text_time, self.num_media, self.latents, device)
    }
}

/// The trainable tensors, grouped as the optimizer needs them.
#[derive(Debug, Clone, Default)]
pub struct TrainableVars {
    /// Gated cross-attention parameters (gates and LayerNorms included): weight decay group.
    pub cross_attn: Vec<(String, Var)>,
    /// Perceiver parameters (latents, LayerNorms included): no weight decay.
    pub perceiver: Vec<(String, Var)>,
    /// Trainable special-token embedding rows (empty when frozen): no weight decay.
    pub embeddings: Vec<(String, Var)>,
}

impl TrainableVars {
    /// All variables of the three groups.
    pub fn all(&self) -> Vec<Var> {
        self.cross_attn
            .iter()
            .chain(&self.perceiver)
            .chain(&self.embeddings)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The Flamingo network.
pub struct Flamingo {
    vision: VisionEncoder,
    perceiver: PerceiverResampler,
    lm: DecoderLm,
    xattn: Vec<Option<GatedCrossAttentionBlock>>,
    varmap: VarMap,
    cfg: FlamingoConfig,
    device: Device,
}

impl std::fmt::Debug for Flamingo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flamingo")
            .field("config", &self.cfg)
            .field("vision", &self.vision.config())
            .field("lm", self.lm.config())
            .finish()
    }
}

impl Flamingo {
    /// Assembles the model. Perceiver and cross-attention weights are taken from `varmap` when it
    /// already holds them under their OpenFlamingo names, otherwise created there (seeded init:
    /// latents N(0,1), PyTorch-default linears, LayerNorm 1/0, gates 0). Runs on the LM's device.
    pub fn new(
        vision: VisionEncoder,
        lm: DecoderLm,
        media_token_id: u32,
        eoc_token_id: u32,
        cross_attn_every_n_layers: usize,
        varmap: VarMap,
        seed: u64,
    ) -> Result<Self> {
        if cross_attn_every_n_layers == 0 {
            return Err(ModelError::Input(
                "cross_attn_every_n_layers must be at least 1".into(),
            ));
        }
        let vis_dim = vision.config().width;
        let cfg = FlamingoConfig {
            cross_attn_every_n_layers,
            media_token_id,
            eoc_token_id,
            perceiver: PerceiverConfig::open_flamingo(vis_dim),
            cross_attn: CrossAttnConfig::open_flamingo(lm.hidden_size(), vis_dim),
        };
        Self::with_config(vision, lm, cfg, varmap, seed)
    }

    /// Like [`Flamingo::new`] with explicit (e.g. tiny) perceiver / cross-attention sizes.
    pub fn with_config(
        vision: VisionEncoder,
        lm: DecoderLm,
        cfg: FlamingoConfig,
        varmap: VarMap,
        seed: u64,
    ) -> Result<Self> {
        let device = &lm.embeddings().device().clone();
        if cfg.perceiver.dim != vision.config().width
            || cfg.cross_attn.dim_visual != cfg.perceiver.dim
        {
            return Err(ModelError::Input(format!(
                "perceiver width {} / cross-attention visual width {} must equal the vision width {}",
                cfg.perceiver.dim,
                cfg.cross_attn.dim_visual,
                vision.config().width
            )));
        }
        if cfg.cross_attn.dim != lm.hidden_size() {
            return Err(ModelError::Input(format!(
                "cross-attention width {} must equal the LM width {}",
                cfg.cross_attn.dim,
                lm.hidden_size()
            )));
        }
        let vb = seeded_var_builder(&varmap, seed, device);
        let perceiver = PerceiverResampler::new(&cfg.perceiver, vb.pp("perceiver"))?;
        let path = lm.config().decoder_layers_path();
        let mut xattn = Vec::with_capacity(lm.num_layers());
        for i in 0..lm.num_layers() {
            xattn.push(if has_cross_attn(i, cfg.cross_attn_every_n_layers) {
                let name = format!("lang_encoder.{path}.{i}.gated_cross_attn_layer");
                Some(GatedCrossAttentionBlock::new(&cfg.cross_attn, vb.pp(name))?)
            } else {
                None
            });
        }
        Ok(Self {
            vision,
            perceiver,
            lm,
            xattn,
            varmap,
            cfg,
            device: device.clone(),
        })
    }

    /// Loads vision encoder, tokenizer, LM (embeddings resized to the tokenizer) and, when given,
    /// an OpenFlamingo checkpoint; returns the model, its tokenizer, the matching image
    /// processor and what the checkpoint provided.
    pub fn load(
        spec: &FlamingoSpec,
        device: &Device,
    ) -> Result<(Flamingo, FlamingoTokenizer, ImageProcessor, LoadReport)> {
        let vision = VisionEncoder::load(&spec.vision_dir, spec.ln_post_tokens, device)?;
        let tokenizer = FlamingoTokenizer::from_dir(&spec.language_dir)?;
        let lm = DecoderLm::load(
            &spec.language_dir,
            tokenizer.len(),
            spec.special_embeddings,
            &tokenizer.trainable_token_ids(),
            device,
        )?;
        let processor = ImageProcessor::from_vision_config(vision.config());
        let mut model = Flamingo::new(
            vision,
            lm,
            tokenizer.image_id(),
            tokenizer.eoc_id(),
            spec.cross_attn_every_n_layers,
            VarMap::new(),
            spec.init_seed,
        )?;
        let report = match &spec.checkpoint {
            Some(path) => checkpoint::load_checkpoint(&mut model, path)?,
            None => LoadReport::default(),
        };
        Ok((model, tokenizer, processor, report))
    }

    /// The configuration.
    pub fn config(&self) -> &FlamingoConfig {
        &self.cfg
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The frozen vision encoder.
    pub fn vision(&self) -> &VisionEncoder {
        &self.vision
    }

    /// The decoder LM.
    pub fn lm(&self) -> &DecoderLm {
        &self.lm
    }

    /// Mutable decoder LM (to overwrite embeddings from a checkpoint).
    pub fn lm_mut(&mut self) -> &mut DecoderLm {
        &mut self.lm
    }

    /// The Perceiver resampler.
    pub fn perceiver(&self) -> &PerceiverResampler {
        &self.perceiver
    }

    /// The cross-attention block before each decoder layer (`None` where there is none).
    pub fn cross_attn_layers(&self) -> &[Option<GatedCrossAttentionBlock>] {
        &self.xattn
    }

    /// The VarMap holding perceiver and cross-attention variables under OpenFlamingo names.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Trainable variables grouped for the optimizer (sorted by name within each group).
    pub fn trainable_vars(&self) -> TrainableVars {
        let mut out = TrainableVars::default();
        let data = self.varmap.data().lock().map(|d| {
            let mut v: Vec<(String, Var)> = d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        });
        for (name, var) in data.unwrap_or_default() {
            if name.contains("gated_cross_attn") {
                out.cross_attn.push((name, var));
            } else {
                out.perceiver.push((name, var));
            }
        }
        let key = self.lm.config().embedding_key();
        for var in self.lm.trainable_vars() {
            out.embeddings
                .push((format!("lang_encoder.{key}[special rows]"), var));
        }
        out
    }

    /// Frozen vision features `(B, T_img, P, D_vis)` of pixels `(B, T_img, 3, S, S)` (detached).
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = pixels.dims5().map_err(|_| {
            ModelError::Input(format!(
                "pixels must be (B, T_img, 3, S, S), got {:?}",
                pixels.dims()
            ))
        })?;
        let tokens = self
            .vision
            .forward_tokens(&pixels.reshape((b * t, c, h, w))?)?;
        let (_, p, d) = tokens.dims3()?;
        Ok(tokens.reshape((b, t, p, d))?)
    }

    /// Visual latents `(B, T_img, n, D_vis)`: vision encoder (frozen) then perceiver (trainable).
    pub fn encode_media(&self, pixels: &Tensor) -> Result<Tensor> {
        let feats = self.vision_features(pixels)?;
        Ok(self.perceiver.forward(&feats)?)
    }

    /// [`Flamingo::encode_media`] for inference: fused kernels, detached result.
    pub fn encode_media_inference(&self, pixels: &Tensor) -> Result<Tensor> {
        let feats = self.vision_features(pixels)?;
        Ok(self.perceiver.forward_inference(&feats)?.detach())
    }

    /// Computes every cross-attention block's media keys/values for `media` `(B, T_img, n, D)`.
    pub fn media_context(&self, media: &Tensor) -> Result<MediaContext> {
        let (_, t_img, n, _) = media.dims4()?;
        let kv = self
            .xattn
            .iter()
            .map(|b| b.as_ref().map(|b| b.media_kv(media)).transpose())
            .collect::<candle_core::Result<_>>()?;
        Ok(MediaContext {
            kv,
            num_media: t_img,
            latents: n,
        })
    }

    /// Checks that no row holds more `<image>` tokens than there are images.
    pub fn check_media_counts(&self, rows: &[Vec<u32>], num_media: usize) -> Result<()> {
        for (b, c) in media_counts(rows, self.cfg.media_token_id)
            .iter()
            .enumerate()
        {
            if *c as usize > num_media {
                return Err(ModelError::Input(format!(
                    "row {b} holds {c} <image> tokens but only {num_media} images were given"
                )));
            }
        }
        Ok(())
    }

    fn run(
        &self,
        ids: &Tensor,
        media: &MediaContext,
        mask: &MediaMask,
        ctx: &AttnCtx,
        mut cache: Option<&mut KvCache>,
        detach: bool,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.lm.embed(ids, ctx)?;
        for (i, block) in self.xattn.iter().enumerate() {
            if let (Some(block), Some(Some(kv))) = (block, media.kv.get(i)) {
                x = if detach {
                    block.forward_inference(&x, kv, mask)?
                } else {
                    block.forward(&x, kv, mask)?
                };
            }
            if detach {
                // Inference: keep no autograd graph alive through the KV cache.
                x = x.detach();
            }
            let layer_cache = match cache.as_deref_mut() {
                Some(c) => c.layers.get_mut(i),
                None => None,
            };
            x = self.lm.layer(i, &x, ctx, layer_cache)?;
        }
        Ok(x)
    }

    /// Final hidden states `(B, T, D)` of `ids` conditioned on `media`, differentiable w.r.t. the
    /// trainable variables. `mask` comes from [`MediaContext::mask`]; with a cache, `ctx.past_len`
    /// must equal its length and the new keys/values are appended.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        media: &MediaContext,
        mask: &MediaMask,
        ctx: &AttnCtx,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        Ok(self.run(ids, media, mask, ctx, cache, false)?)
    }

    /// As [`Flamingo::forward_hidden`] for inference: the result and cache carry no autograd graph.
    pub fn infer_hidden(
        &self,
        ids: &Tensor,
        media: &MediaContext,
        mask: &MediaMask,
        ctx: &AttnCtx,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        Ok(self.run(ids, media, mask, ctx, cache, true)?.detach())
    }

    /// LM head on hidden states: `(.., D) -> (.., vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm.logits(hidden)?)
    }

    /// A full forward pass as OpenFlamingo's `Flamingo.forward`: pixels `(B, T_img, 3, S, S)`,
    /// ids `(B, T)` and attention mask `(B, T)` -> logits `(B, T, vocab)`, differentiable.
    /// Positions follow HF's plain `forward` (sequential for rotary LMs, from the mask for OPT/MPT).
    pub fn forward(
        &self,
        pixels: &Tensor,
        ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let features = self.vision_features(pixels)?;
        self.forward_features(&features, ids, attention_mask)
    }

    /// [`Flamingo::forward`] from precomputed frozen vision features `(B, T_img, P, D_vis)`
    /// ([`Flamingo::vision_features`]), e.g. cached across training epochs.
    pub fn forward_features(
        &self,
        features: &Tensor,
        ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let media = self.perceiver.forward(features)?;
        let ctxm = self.media_context(&media)?;
        self.check_media_counts(&rows, ctxm.num_media())?;
        let mask = ctxm.mask(
            &text_time_from_ids(&rows, self.cfg.media_token_id),
            &self.device,
        )?;
        let ctx = AttnCtx::sequential(attention_mask.clone(), 0);
        let hidden = self.forward_hidden(ids, &ctxm, &mask, &ctx, None)?;
        self.logits(&hidden)
    }

    /// Saves the trainable weights (perceiver, cross-attention, embeddings) as safetensors under
    /// OpenFlamingo key names; see [`crate::checkpoint::save_trainable`].
    pub fn save_trainable(&self, path: &Path) -> Result<()> {
        checkpoint::save_trainable(self, path)
    }
}
