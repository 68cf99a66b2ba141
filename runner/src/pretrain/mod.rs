//! Pretraining of the tiny preset backbones the embedded default uses (design.md §5): a small
//! CLIP-style ViT trained contrastively on the synthetic world's pairs ([`vision`]) and a BPE
//! tokenizer plus a small decoder (MPT or OPT) trained by next-token prediction on its text corpus
//! ([`language`]). Both are saved in the layouts real backbones use (open_clip directory, HF
//! directory) and are then loaded, frozen, exactly as downloaded backbones are. The plan runs them
//! as cached `pretrain` jobs ([`stage::PretrainStage`]); [`backbone_dir`] finds their output.

pub mod clip;
pub mod decoder;
pub mod init;
pub mod language;
pub mod pairs;
pub mod stage;
pub mod tokenizer;
pub mod vision;

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::config::schema::Schedule;
use crate::train::adamw::{AdamW, clip_grad_norm};
use crate::train::schedule::lr_at;

/// The directory holding the backbone `which` (`"vision"` or `"language"`) built by the pretrain
/// job `job_hash` under the runs directory (`<runs>/jobs/pretrain-<hash12>/<which>`).
pub fn backbone_dir(runs_dir: &Path, job_hash: &str, which: &str) -> PathBuf {
    crate::exec::backbone::job_dir(runs_dir, crate::plan::JobKind::Pretrain, job_hash).join(which)
}

/// Every variable of `varmap` with its name, sorted by name (a stable order for optimizers and
/// checkpoints); `origin` names the model in the error.
pub fn named_vars(varmap: &VarMap, origin: &Path) -> Result<Vec<(String, Var)>, PretrainError> {
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map_err(|_| PretrainError::data(origin, "poisoned variable map"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Writes `tensors` as a safetensors file with the `{"format": "pt"}` header metadata that HF
/// `from_pretrained` requires of PyTorch weights (candle's own writer leaves the metadata out).
pub fn save_safetensors_pt(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> Result<(), PretrainError> {
    let mut sorted: Vec<(&String, candle_core::Tensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .contiguous()
            .map_err(PretrainError::tensor(format!("tensor `{name}`")))?;
        sorted.push((name, t));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(sorted, Some(metadata), path)
        .map_err(|e| PretrainError::data(path, e))
}

/// Errors of pretraining, naming the file, tensor or setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A data file has unexpected content.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting cannot be used.
    #[error("[pretrain.{section}]: {message}")]
    Config {
        /// `vision` or `language`.
        section: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A tensor computation failed.
    #[error("{what}: {source}")]
    Tensor {
        /// What was being computed.
        what: String,
        /// The cause.
        source: candle_core::Error,
    },
    /// The model crate rejected a saved backbone.
    #[error("{0}")]
    Model(#[from] model::ModelError),
    /// Tokenizer training failed.
    #[error("{0}")]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A saved backbone does not reproduce the trained model.
    #[error("{path}: the saved backbone does not reproduce the trained model: {message}")]
    Mismatch {
        /// The saved directory.
        path: PathBuf,
        /// The difference found.
        message: String,
    },
}

impl PretrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        PretrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A content error in `path`.
    pub fn data(path: &Path, message: impl std::fmt::Display) -> Self {
        PretrainError::Data {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// A tensor error while computing `what`.
    pub fn tensor(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let what = what.into();
        move |source| PretrainError::Tensor { what, source }
    }
}

/// One optimizer step, as reported to the caller (progress bars, the store).
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// 1-based step.
    pub step: u64,
    /// Total steps.
    pub steps: u64,
    /// Training loss of this step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Samples per second over this step.
    pub samples_per_s: f64,
}

/// What a pretraining run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PretrainSummary {
    /// `vision` or `language`.
    pub backbone: &'static str,
    /// Optimizer steps.
    pub steps: u64,
    /// Loss of the first step.
    pub first_loss: f64,
    /// Mean loss of the last 10% of steps (at least one).
    pub final_loss: f64,
    /// Training examples available (pairs, or corpus lines).
    pub examples: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Wall time of data preparation (reading, decoding, tokenizer training, tokenizing).
    pub prepare_seconds: f64,
    /// Wall time of the optimizer steps.
    pub train_seconds: f64,
    /// Wall time of everything, saving and the reload check included.
    pub seconds: f64,
    /// Largest absolute difference between the saved backbone reloaded by the model crate and the
    /// trained model (pooled embeddings, or logits).
    pub reload_max_abs_diff: f64,
}

/// Tracks losses for [`PretrainSummary::first_loss`] / [`PretrainSummary::final_loss`].
#[derive(Debug, Default)]
pub(crate) struct LossLog {
    losses: Vec<f64>,
}

impl LossLog {
    pub(crate) fn push(&mut self, loss: f64) {
        self.losses.push(loss);
    }

    pub(crate) fn first(&self) -> f64 {
        self.losses.first().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn last_tenth(&self) -> f64 {
        let n = (self.losses.len() / 10).max(1).min(self.losses.len());
        if n == 0 {
            return f64::NAN;
        }
        self.losses[self.losses.len() - n..].iter().sum::<f64>() / n as f64
    }
}

/// The warmup length used by both stages: 5% of the steps.
pub(crate) fn warmup_steps(steps: u64) -> u64 {
    steps / 20
}

/// Gradient clipping threshold of both stages.
const MAX_GRAD_NORM: f64 = 1.0;

/// What one optimizer step reports.
pub(crate) struct StepOutcome {
    /// The loss before the update.
    pub loss: f64,
    /// The learning rate applied.
    pub lr: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
}

/// One optimizer step of either stage on `loss`: backward, gradients clipped to norm 1, AdamW at
/// step `step` (0-based) of a cosine schedule from `base_lr` with 5% warmup.
pub(crate) fn optimizer_step(
    opt: &mut AdamW,
    loss: &Tensor,
    base_lr: f64,
    step: u64,
    steps: u64,
) -> candle_core::Result<StepOutcome> {
    let grads = loss.backward()?;
    // Detached: a gradient keeps its backward graph alive, and the optimizer's moments are
    // built from it, so each step's whole graph would otherwise stay in memory.
    let mut aligned: Vec<_> = opt
        .params()
        .iter()
        .map(|p| grads.get(p.var.as_tensor()).map(Tensor::detach))
        .collect();
    let grad_norm = clip_grad_norm(&mut aligned, MAX_GRAD_NORM)?;
    let lr = lr_at(Schedule::Cosine, base_lr, step, warmup_steps(steps), steps);
    opt.step(&aligned, lr)?;
    let loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(StepOutcome {
        loss,
        lr,
        grad_norm,
    })
}

/// Largest absolute elementwise difference of two tensors of equal shape.
pub(crate) fn max_abs_diff(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> candle_core::Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbone_dir_is_the_job_artifacts_subdir() {
        let hash = "0123456789abcdef0123";
        assert_eq!(
            backbone_dir(Path::new("runs"), hash, "vision"),
            Path::new("runs/jobs/pretrain-0123456789ab/vision")
        );
    }
}
