//! Which weights an eval job evaluates, resolved to files: the job spec's `inputs.weights` is
//! either `{"train": <hash>}` (the variant's trained weights) or the model identity itself
//! (eval-only experiments: backbones plus an optional OpenFlamingo checkpoint).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use model::{FlamingoSpec, SpecialEmbeddingMode};
use serde_json::Value;

use crate::plan::hash::hash_json;

/// File of the trained weights inside a train job's artifact directory.
pub const TRAINED_WEIGHTS: &str = "weights.safetensors";

/// The artifact directory of a job (`runs/jobs/<kind>-<hash12>`), as the executor names it.
pub fn job_dir(runs_dir: &Path, kind: &str, hash: &str) -> PathBuf {
    runs_dir
        .join("jobs")
        .join(format!("{kind}-{}", &hash[..hash.len().min(12)]))
}

/// Directory of a preset backbone built by a pretrain job: `<job dir>/<vision|language>`.
///
/// Mirrors `runner::pretrain::backbone_dir` (being added on the `pretrain` branch); keep the two
/// in step.
pub fn backbone_dir(runs_dir: &Path, pretrain_job_hash: &str, which: &str) -> PathBuf {
    job_dir(runs_dir, "pretrain", pretrain_job_hash).join(which)
}

/// Identity of an eval job's weights: equal identities load identical models (it keys the
/// model cache, the media cache and the RICES feature cache).
pub fn identity(job_spec: &Value) -> String {
    let inputs = &job_spec["inputs"];
    hash_json(&serde_json::json!({
        "weights": inputs["weights"],
        "precision": inputs["precision"],
    }))
}

/// The model spec (`inputs.model` of a train job, or `inputs.weights` of an eval-only job)
/// resolved to directories and files.
pub fn flamingo_spec(
    model: &Value,
    checkpoint: Option<PathBuf>,
    runs_dir: &Path,
) -> Result<FlamingoSpec> {
    let backbone = |which: &str| -> Result<PathBuf> {
        let v = &model[which];
        if let Some(h) = v["pretrain"].as_str() {
            return Ok(backbone_dir(runs_dir, h, which));
        }
        v["dir"]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("model identity has no {which} backbone: {v}"))
    };
    let mut spec = FlamingoSpec::new(backbone("vision")?, backbone("language")?);
    spec.checkpoint = checkpoint;
    spec.cross_attn_every_n_layers = model["cross_attn_every_n_layers"]
        .as_u64()
        .context("model identity without cross_attn_every_n_layers")?
        as usize;
    spec.special_embeddings = match model["special_embeddings"].as_str() {
        Some("frozen") => SpecialEmbeddingMode::Frozen,
        _ => SpecialEmbeddingMode::Trainable,
    };
    spec.ln_post_tokens = model["ln_post_tokens"].as_bool().unwrap_or(false);
    Ok(spec)
}

/// The [`FlamingoSpec`] an eval job evaluates. `train_spec` looks up the spec JSON of a train job
/// by hash (only called for trained variants).
pub fn resolve(
    job_spec: &Value,
    runs_dir: &Path,
    train_spec: impl FnOnce(&str) -> Result<Value>,
) -> Result<FlamingoSpec> {
    let weights = &job_spec["inputs"]["weights"];
    if let Some(hash) = weights["train"].as_str() {
        let train = train_spec(hash)?;
        let file = job_dir(runs_dir, "train", hash).join(TRAINED_WEIGHTS);
        if !file.is_file() {
            bail!(
                "the trained weights of train job {} are missing: {}",
                &hash[..hash.len().min(12)],
                file.display()
            );
        }
        return flamingo_spec(&train["inputs"]["model"], Some(file), runs_dir);
    }
    let checkpoint = match &weights["checkpoint"] {
        Value::Null => None,
        v => Some(PathBuf::from(v["path"].as_str().with_context(|| {
            format!("checkpoint identity without a path: {v}")
        })?)),
    };
    flamingo_spec(weights, checkpoint, runs_dir)
}
