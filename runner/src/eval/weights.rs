//! Which weights an eval job evaluates, resolved to files: the job spec's `inputs.weights` is
//! either `{"train": <hash>}` (the variant's trained weights, `weights.safetensors` in the train
//! job's directory) or the model identity itself (eval-only experiments: backbones plus an
//! optional OpenFlamingo checkpoint).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use model::SpecialEmbeddingMode;
use serde_json::Value;

use crate::config::schema::FlamingoSizes;
use crate::exec::backbone::{backbone_dir, job_dir};
use crate::plan::JobKind;
use crate::plan::hash::hash_json;
use crate::train::assemble::ModelSpec;
use crate::train::run::FINAL_WEIGHTS;

/// Identity of an eval job's weights: equal identities load identical models (it keys the
/// model cache and the media cache).
pub fn identity(job_spec: &Value) -> String {
    let inputs = &job_spec["inputs"];
    hash_json(&serde_json::json!({
        "weights": inputs["weights"],
        "precision": inputs["precision"],
    }))
}

/// The model identity JSON (`inputs.model` of a train job, or `inputs.weights` of an eval-only
/// job) resolved to directories and files.
pub fn model_spec(
    model: &Value,
    checkpoint: Option<PathBuf>,
    runs_dir: &Path,
) -> Result<ModelSpec> {
    let vision =
        backbone_dir(runs_dir, &model["vision"], "vision").context("model vision backbone")?;
    let language = backbone_dir(runs_dir, &model["language"], "language")
        .context("model language backbone")?;
    let sizes = match &model["sizes"] {
        Value::Null => FlamingoSizes::OPEN_FLAMINGO,
        v => serde_json::from_value(v.clone()).with_context(|| format!("model sizes {v}"))?,
    };
    Ok(ModelSpec {
        vision_dir: vision,
        language_dir: language,
        checkpoint,
        cross_attn_every_n_layers: model["cross_attn_every_n_layers"]
            .as_u64()
            .context("model identity without cross_attn_every_n_layers")?
            as usize,
        special_embeddings: match model["special_embeddings"].as_str() {
            Some("frozen") => SpecialEmbeddingMode::Frozen,
            _ => SpecialEmbeddingMode::Trainable,
        },
        ln_post_tokens: model["ln_post_tokens"].as_bool().unwrap_or(false),
        sizes,
        init_seed: model::flamingo::DEFAULT_INIT_SEED,
    })
}

/// The [`ModelSpec`] an eval job evaluates and its model identity JSON. `train_spec` looks up the
/// spec JSON of a train job by hash (only called for trained variants).
pub fn resolve(
    job_spec: &Value,
    runs_dir: &Path,
    train_spec: impl FnOnce(&str) -> Result<Value>,
) -> Result<(ModelSpec, Value)> {
    let weights = &job_spec["inputs"]["weights"];
    if let Some(hash) = weights["train"].as_str() {
        let train = train_spec(hash)?;
        let file = job_dir(runs_dir, JobKind::Train, hash).join(FINAL_WEIGHTS);
        if !file.is_file() {
            bail!(
                "the trained weights of train job {} are missing: {}",
                &hash[..hash.len().min(12)],
                file.display()
            );
        }
        let model = train["inputs"]["model"].clone();
        return Ok((model_spec(&model, Some(file), runs_dir)?, model));
    }
    let checkpoint = match &weights["checkpoint"] {
        Value::Null => None,
        v => Some(PathBuf::from(v["path"].as_str().with_context(|| {
            format!("checkpoint identity without a path: {v}")
        })?)),
    };
    Ok((model_spec(weights, checkpoint, runs_dir)?, weights.clone()))
}
