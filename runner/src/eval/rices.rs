//! RICES image features from the evaluated model's own vision encoder: the pooled, projected
//! embedding (open_clip `encode_image`: class token -> `ln_post` -> `proj`), L2-normalised. The
//! demonstration bank (a dataset's whole training split) is computed once per encoder and cached
//! on disk with [`super::features`]; query features are computed for the queries a cell runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::datasets::EvalExample;
use super::features::{CacheKey, FeatureBank, read_cache, write_cache};
use super::model_cache::EvalModel;

/// Images per forward pass when embedding.
const CHUNK: usize = 32;

static EMBEDDED: AtomicU64 = AtomicU64::new(0);

/// Images embedded for RICES in this process (bank and queries; cached banks cost nothing).
pub fn images_embedded() -> u64 {
    EMBEDDED.load(Ordering::SeqCst)
}

/// Pooled projected embeddings of `paths`, row-major `[N, D]` (not yet normalised) and `D`.
pub fn embed(model: &EvalModel, paths: &[PathBuf]) -> Result<(Vec<f32>, usize)> {
    let dev = model.flamingo.device().clone();
    let mut out = Vec::new();
    let mut dim = 0;
    for chunk in paths.chunks(CHUNK) {
        let pixels: Vec<Tensor> = chunk
            .iter()
            .map(|p| -> Result<Tensor> {
                let img = super::datasets::image::decode(p)?;
                Ok(model.processor.preprocess(&img, &Device::Cpu)?)
            })
            .collect::<Result<_>>()?;
        let first = chunk
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let emb = Tensor::stack(&pixels, 0)
            .and_then(|t| t.to_device(&dev))
            .and_then(|t| model.flamingo.vision().embed_image(&t))
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_device(&Device::Cpu))
            .with_context(|| format!("RICES embedding of {} images from {first}", chunk.len()))?;
        dim = emb.dim(1)?;
        out.extend(emb.flatten_all()?.to_vec1::<f32>()?);
        EMBEDDED.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok((out, dim))
}

/// The feature bank of `dataset`'s training split under the vision encoder `encoder_id`: read
/// from `cache_dir`, or computed and written there.
pub fn bank(
    model: &EvalModel,
    encoder_id: &str,
    dataset: &str,
    train: &[EvalExample],
    cache_dir: &Path,
) -> Result<FeatureBank> {
    let key = CacheKey::new(encoder_id, dataset, train.iter().map(|e| e.id.as_str()));
    if let Some(bank) = read_cache(cache_dir, &key)? {
        return Ok(bank);
    }
    let paths: Vec<PathBuf> = train.iter().map(|e| e.image.clone()).collect();
    let (data, dim) = embed(model, &paths)?;
    let bank = FeatureBank::new(dim.max(1), data)?;
    write_cache(cache_dir, &key, &bank)?;
    Ok(bank)
}
