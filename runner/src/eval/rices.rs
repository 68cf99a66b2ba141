//! RICES image features from the evaluated model's own vision encoder: the pooled, projected
//! embedding (open_clip `encode_image`: class token -> `ln_post` -> `proj`), L2-normalised. The
//! demonstration bank (a dataset's whole training split) is computed once per encoder and cached
//! on disk with [`super::features`] and kept in memory across cells; query features are computed
//! for the queries a cell runs (a second ViT pass over the query images: the media cache keeps
//! only the Perceiver latents).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Banks kept in memory across cells (COCO's is 82,783 x 768 floats, 254 MB).
const BANKS_KEPT: usize = 2;

type BankCache = Mutex<Vec<(PathBuf, Arc<FeatureBank>)>>;

fn banks() -> &'static BankCache {
    static BANKS: OnceLock<BankCache> = OnceLock::new();
    BANKS.get_or_init(|| Mutex::new(Vec::new()))
}

/// The feature bank of `dataset`'s training split under the vision encoder `encoder_id`: kept in
/// memory, else read from `cache_dir`, else computed and written there.
pub fn bank(
    model: &EvalModel,
    encoder_id: &str,
    dataset: &str,
    train: &[EvalExample],
    cache_dir: &Path,
) -> Result<Arc<FeatureBank>> {
    let key = CacheKey::new(encoder_id, dataset, train.iter().map(|e| e.id.as_str()));
    let file = key.path(cache_dir);
    let mut kept = banks()
        .lock()
        .map_err(|_| anyhow::anyhow!("the RICES bank cache lock is poisoned"))?;
    if let Some((_, b)) = kept.iter().find(|(p, _)| *p == file) {
        return Ok(b.clone());
    }
    let bank = match read_cache(cache_dir, &key)? {
        Some(bank) => bank,
        None => {
            let paths: Vec<PathBuf> = train.iter().map(|e| e.image.clone()).collect();
            let (data, dim) = embed(model, &paths)?;
            let bank = FeatureBank::new(dim.max(1), data)?;
            write_cache(cache_dir, &key, &bank)?;
            bank
        }
    };
    let bank = Arc::new(bank);
    if kept.len() >= BANKS_KEPT {
        kept.remove(0);
    }
    kept.push((file, bank.clone()));
    Ok(bank)
}
