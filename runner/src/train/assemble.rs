//! The Flamingo a job trains or evaluates: backbones from their directories, perceiver and
//! cross-attention at the configured sizes, optionally an OpenFlamingo checkpoint on top.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use model::cross_attn::CrossAttnConfig;
use model::perceiver::PerceiverConfig;
use model::vision::VisionEncoder;
use model::{
    DecoderLm, Flamingo, FlamingoConfig, FlamingoTokenizer, ImageProcessor, LoadReport, ModelError,
    SpecialEmbeddingMode,
};

use crate::config::schema::{FlamingoSizes, ModelConfig, SpecialEmbeddings};

/// Everything needed to build the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Vision encoder directory (open_clip or HF CLIP layout).
    pub vision_dir: PathBuf,
    /// HF LM directory with its `tokenizer.json`.
    pub language_dir: PathBuf,
    /// OpenFlamingo weights loaded over the initialisation.
    pub checkpoint: Option<PathBuf>,
    /// A cross-attention block before every n-th decoder layer.
    pub cross_attn_every_n_layers: usize,
    /// Whether the `<image>` / `<|endofchunk|>` rows train.
    pub special_embeddings: SpecialEmbeddingMode,
    /// `ln_post` on the vision tokens.
    pub ln_post_tokens: bool,
    /// Perceiver / cross-attention sizes.
    pub sizes: FlamingoSizes,
    /// Seed of the trainable weights' initialisation.
    pub init_seed: u64,
}

impl ModelSpec {
    /// The spec of `[model]` with resolved backbone directories.
    pub fn from_config(
        cfg: &ModelConfig,
        vision_dir: PathBuf,
        language_dir: PathBuf,
        init_seed: u64,
    ) -> Self {
        ModelSpec {
            vision_dir,
            language_dir,
            checkpoint: (!cfg.checkpoint.is_empty()).then(|| PathBuf::from(&cfg.checkpoint)),
            cross_attn_every_n_layers: usize::try_from(cfg.cross_attn_every_n_layers).unwrap_or(1),
            special_embeddings: match cfg.special_embeddings {
                SpecialEmbeddings::Trainable => SpecialEmbeddingMode::Trainable,
                SpecialEmbeddings::Frozen => SpecialEmbeddingMode::Frozen,
            },
            ln_post_tokens: cfg.ln_post_tokens,
            sizes: cfg.sizes(),
            init_seed,
        }
    }
}

/// The network configuration for backbones of the given widths.
pub fn flamingo_config(
    sizes: &FlamingoSizes,
    vision_width: usize,
    lm_width: usize,
    n: usize,
    tokenizer: &FlamingoTokenizer,
) -> FlamingoConfig {
    let of = PerceiverConfig::open_flamingo(vision_width);
    FlamingoConfig {
        cross_attn_every_n_layers: n,
        media_token_id: tokenizer.image_id(),
        eoc_token_id: tokenizer.eoc_id(),
        perceiver: PerceiverConfig {
            depth: sizes.perceiver_depth,
            dim_head: sizes.perceiver_dim_head,
            heads: sizes.perceiver_heads,
            num_latents: sizes.perceiver_latents,
            ..of
        },
        cross_attn: CrossAttnConfig {
            dim_head: sizes.cross_attn_dim_head,
            heads: sizes.cross_attn_heads,
            ..CrossAttnConfig::open_flamingo(lm_width, vision_width)
        },
    }
}

/// Loads backbones and tokenizer, assembles the model at the spec's sizes and applies the
/// checkpoint, if any.
pub fn load_model(
    spec: &ModelSpec,
    device: &Device,
) -> Result<(Flamingo, FlamingoTokenizer, ImageProcessor, LoadReport), ModelError> {
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
    let cfg = flamingo_config(
        &spec.sizes,
        vision.config().width,
        lm.hidden_size(),
        spec.cross_attn_every_n_layers,
        &tokenizer,
    );
    let mut model = Flamingo::with_config(vision, lm, cfg, VarMap::new(), spec.init_seed)?;
    let report = match &spec.checkpoint {
        Some(path) => model::checkpoint::load_checkpoint(&mut model, path)?,
        None => LoadReport::default(),
    };
    Ok((model, tokenizer, processor, report))
}

/// The trained weights under OpenFlamingo keys, as [`Flamingo::save_trainable`] writes them
/// (perceiver, cross-attention, the full embedding table and an untied output head).
pub fn trained_tensors(model: &Flamingo) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::new();
    {
        let data = model
            .varmap()
            .data()
            .lock()
            .map_err(|_| ModelError::Input("varmap lock poisoned".into()))?;
        for (name, var) in data.iter() {
            out.insert(name.clone(), var.as_tensor().detach().contiguous()?);
        }
    }
    let lm = model.lm();
    out.insert(
        format!("lang_encoder.{}", lm.config().embedding_key()),
        lm.embeddings().full_table()?.detach().contiguous()?,
    );
    if let (Some(key), Some(head)) = (&lm.config().head_key, lm.output_head()) {
        out.insert(format!("lang_encoder.{key}"), head.detach().contiguous()?);
    }
    Ok(out)
}
