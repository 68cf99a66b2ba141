//! Contrastive pretraining of the tiny vision backbone: the [`ClipModel`] trained with symmetric
//! InfoNCE on the world's LAION-style pairs, saved in the open_clip layout (with `proj`, so RICES
//! can use the pooled embedding), then reloaded through [`model::vision::VisionEncoder::load`] to
//! check that the saved encoder computes what was trained.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use model::preprocess::ImageProcessor;
use model::vision::VisionEncoder;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::clip::{self, CLIP_MEAN, CLIP_STD, ClipModel};
use super::pairs::{self, Pairs};
use super::{
    LossLog, PretrainError, PretrainSummary, StepOutcome, StepReport, max_abs_diff, optimizer_step,
};
use crate::config::schema::PretrainVision;
use crate::train::adamw::{AdamW, AdamWConfig, Param};

/// Weight decay of matrices (CLIP's recipe exempts gains, biases and embeddings-like vectors).
const WEIGHT_DECAY: f64 = 0.1;
/// Images compared between the trained model and the reloaded encoder.
const CHECK_IMAGES: usize = 8;
/// Tolerance of that comparison.
const RELOAD_TOLERANCE: f64 = 1e-4;

fn check(cfg: &PretrainVision) -> Result<(), PretrainError> {
    let bad = |message: String| PretrainError::Config {
        section: "vision",
        message,
    };
    for (key, v) in [
        ("image_size", cfg.image_size),
        ("patch_size", cfg.patch_size),
        ("width", cfg.width),
        ("layers", cfg.layers),
        ("heads", cfg.heads),
        ("embed_dim", cfg.embed_dim),
        ("steps", cfg.steps),
        ("batch_size", cfg.batch_size),
    ] {
        if v < 1 {
            return Err(bad(format!("`{key}` must be at least 1, got {v}")));
        }
    }
    if cfg.image_size % cfg.patch_size != 0 {
        return Err(bad(format!(
            "`image_size` {} is not a multiple of `patch_size` {}",
            cfg.image_size, cfg.patch_size
        )));
    }
    if cfg.width % cfg.heads != 0 {
        return Err(bad(format!(
            "`width` {} is not divisible by `heads` {}",
            cfg.width, cfg.heads
        )));
    }
    if cfg.batch_size < 2 {
        return Err(bad(
            "`batch_size` must be at least 2 for a contrastive loss".into(),
        ));
    }
    Ok(())
}

/// The preprocessing of the saved encoder (what [`ImageProcessor::from_vision_config`] gives).
pub fn processor(cfg: &PretrainVision) -> ImageProcessor {
    ImageProcessor {
        image_size: cfg.image_size as usize,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    }
}

/// Trains the vision backbone on the pairs of the world at `world` and writes it to `out` (an
/// open_clip directory). `on_step` sees every step.
pub fn pretrain_vision(
    cfg: &PretrainVision,
    world: &Path,
    out: &Path,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<PretrainSummary, PretrainError> {
    check(cfg)?;
    let started = Instant::now();
    let steps = cfg.steps as u64;
    let processor = processor(cfg);
    // One pass over distinct pairs is all the run can use.
    let wanted = (cfg.steps * cfg.batch_size) as usize;
    let data = pairs::read_pairs(world, &processor, wanted)?;
    if data.len() < 2 {
        return Err(PretrainError::data(
            world,
            format!(
                "{} complete image-caption pairs; at least 2 are needed",
                data.len()
            ),
        ));
    }
    let batch = (cfg.batch_size as usize).min(data.len());
    let (model, varmap) =
        clip::build(cfg, device).map_err(PretrainError::tensor("building the ViT"))?;
    let named = super::named_vars(&varmap, out)?;
    let parameters = named.iter().map(|(_, v)| v.elem_count()).sum();
    let params: Vec<Param> = named
        .into_iter()
        .map(|(name, var)| Param {
            weight_decay: if var.rank() >= 2 { WEIGHT_DECAY } else { 0.0 },
            name,
            var,
        })
        .collect();
    let mut opt = AdamW::new(params, AdamWConfig::default())
        .map_err(PretrainError::tensor("creating the optimizer"))?;

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let prepare_seconds = started.elapsed().as_secs_f64();
    let mut log = LossLog::default();
    for step in 0..steps {
        let t0 = Instant::now();
        if order.len() < batch {
            let mut epoch: Vec<usize> = (0..data.len()).collect();
            epoch.shuffle(&mut rng);
            order.extend(epoch);
        }
        let idx: Vec<usize> = order.drain(..batch).collect();
        let what = format!("vision pretraining step {}", step + 1);
        let pixels = data
            .batch(&idx, &processor, device)
            .map_err(PretrainError::tensor(what.clone()))?;
        let captions: Vec<String> = idx.iter().map(|&i| data.captions[i].clone()).collect();
        let loss = model
            .loss(&pixels, &captions)
            .map_err(PretrainError::tensor(what.clone()))?;
        let StepOutcome {
            loss,
            lr,
            grad_norm,
        } = optimizer_step(&mut opt, &loss, cfg.lr, step, steps)
            .map_err(PretrainError::tensor(what))?;
        log.push(loss);
        on_step(&StepReport {
            step: step + 1,
            steps,
            loss,
            lr,
            grad_norm,
            samples_per_s: batch as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        });
    }

    let train_seconds = started.elapsed().as_secs_f64() - prepare_seconds;
    clip::save_open_clip(cfg, &varmap, out).map_err(|m| PretrainError::data(out, m))?;
    let diff = verify_reload(&model, &data, &processor, out, device)?;
    Ok(PretrainSummary {
        backbone: "vision",
        steps,
        first_loss: log.first(),
        final_loss: log.last_tenth(),
        examples: data.len(),
        parameters,
        prepare_seconds,
        train_seconds,
        seconds: started.elapsed().as_secs_f64(),
        reload_max_abs_diff: diff,
    })
}

/// Loads `dir` through the model crate and compares its pooled embeddings with the trained model's.
pub fn verify_reload(
    model: &ClipModel,
    data: &Pairs,
    processor: &ImageProcessor,
    dir: &Path,
    device: &Device,
) -> Result<f64, PretrainError> {
    let encoder = VisionEncoder::load(dir, false, device)?;
    if ImageProcessor::from_vision_config(encoder.config()) != *processor {
        return Err(PretrainError::Mismatch {
            path: dir.to_path_buf(),
            message: "the saved preprocessing differs from the one used in training".into(),
        });
    }
    let idx: Vec<usize> = (0..data.len().min(CHECK_IMAGES)).collect();
    let what = "comparing the saved vision encoder";
    let pixels = data
        .batch(&idx, processor, device)
        .map_err(PretrainError::tensor(what))?;
    let trained = model
        .encode_image(&pixels)
        .map_err(PretrainError::tensor(what))?;
    let loaded = encoder
        .embed_image(&pixels)
        .map_err(PretrainError::tensor(what))?;
    if trained.dims() != loaded.dims() {
        return Err(PretrainError::Mismatch {
            path: dir.to_path_buf(),
            message: format!(
                "pooled embeddings of shape {:?}, trained {:?}",
                loaded.dims(),
                trained.dims()
            ),
        });
    }
    let diff = max_abs_diff(&trained, &loaded).map_err(PretrainError::tensor(what))?;
    if diff.is_nan() || diff > RELOAD_TOLERANCE {
        return Err(PretrainError::Mismatch {
            path: dir.to_path_buf(),
            message: format!("pooled embeddings differ by up to {diff:e}"),
        });
    }
    Ok(diff)
}
