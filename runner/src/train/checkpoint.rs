//! Training checkpoints: a directory per step holding the trained weights (safetensors, OpenFlamingo
//! key names), the optimizer moments (safetensors) and the rest of the state (JSON: step, data
//! stream, RNG, counters). Written into a temporary directory and renamed, so a checkpoint is
//! either complete or absent; the newest `keep` are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// File of the trained weights inside a checkpoint directory.
pub const WEIGHTS: &str = "model.safetensors";
/// File of the optimizer moments.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// File of the remaining state.
pub const STATE: &str = "state.json";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Data-stream state of each source (opaque to the checkpoint).
    pub data: serde_json::Value,
    /// RNG state of the trainer.
    pub rng: serde_json::Value,
    /// Steps skipped for a non-finite loss so far.
    pub nonfinite_skips: u64,
    /// Corrupt samples skipped so far, by source and reason.
    pub skipped_samples: serde_json::Value,
    /// Optimizer updates so far (fewer than `step` when steps were skipped); the schedule's clock.
    #[serde(default)]
    pub optimizer_steps: u64,
    /// Non-finite steps in a row at the end (a resumed run keeps counting).
    #[serde(default)]
    pub consecutive_nonfinite: u64,
    /// Non-padding tokens trained on so far.
    #[serde(default)]
    pub tokens: u64,
    /// Samples trained on so far.
    #[serde(default)]
    pub samples: u64,
    /// Per-source losses of the last step.
    #[serde(default)]
    pub losses: std::collections::BTreeMap<String, f64>,
}

/// Errors of checkpoint I/O, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Filesystem error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Tensor (de)serialisation error.
    #[error("checkpoint {path}: {source}")]
    Tensor {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: candle_core::Error,
    },
    /// Malformed state file.
    #[error("checkpoint {path}: {message}")]
    State {
        /// Path involved.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Writes the checkpoint of `state.step` atomically and prunes all but the newest `keep`.
pub fn save(
    root: &Path,
    weights: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!(
        ".tmp-step-{:08}-{}",
        state.step,
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    for (name, tensors) in [(WEIGHTS, weights), (OPTIMIZER, optimizer)] {
        let p = tmp.join(name);
        candle_core::safetensors::save(tensors, &p).map_err(|source| CheckpointError::Tensor {
            path: p.clone(),
            source,
        })?;
    }
    let p = tmp.join(STATE);
    let text = serde_json::to_string_pretty(state).map_err(|e| CheckpointError::State {
        path: p.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&p, text).map_err(io(&p))?;
    // Make the files durable before the rename publishes them.
    for name in [WEIGHTS, OPTIMIZER, STATE] {
        let f = tmp.join(name);
        std::fs::File::open(&f)
            .and_then(|h| h.sync_all())
            .map_err(io(&f))?;
    }
    let dest = step_dir(root, state.step);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
    }
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    prune(root, keep)?;
    Ok(dest)
}

/// Complete checkpoints under `root`, oldest first: (step, directory).
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().join(STATE).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(root);
    let n = all.len().saturating_sub(keep.max(1));
    for (_, dir) in all.into_iter().take(n) {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    // Leftovers of a killed writer.
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// A loaded checkpoint.
pub struct Loaded {
    /// Its directory.
    pub dir: PathBuf,
    /// Trained weights by OpenFlamingo key.
    pub weights: HashMap<String, Tensor>,
    /// Optimizer moments.
    pub optimizer: HashMap<String, Tensor>,
    /// The rest of the state.
    pub state: TrainState,
}

/// Loads one checkpoint directory.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded, CheckpointError> {
    let read = |name: &str| {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, device)
            .map_err(|source| CheckpointError::Tensor { path: p, source })
    };
    let p = dir.join(STATE);
    let text = std::fs::read_to_string(&p).map_err(io(&p))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| CheckpointError::State {
        path: p.clone(),
        message: e.to_string(),
    })?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        weights: read(WEIGHTS)?,
        optimizer: read(OPTIMIZER)?,
        state,
    })
}

/// The newest complete checkpoint under `root`, if any.
pub fn latest(root: &Path, device: &Device) -> Result<Option<Loaded>, CheckpointError> {
    match list(root).pop() {
        None => Ok(None),
        Some((_, dir)) => load(&dir, device).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_save_list_prune_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let w: HashMap<String, Tensor> =
            [("a".to_string(), Tensor::new(&[1f32, 2.0], &dev).unwrap())].into();
        for step in [10, 20, 30] {
            let st = TrainState {
                step,
                ..Default::default()
            };
            save(dir.path(), &w, &HashMap::new(), &st, 2).unwrap();
        }
        // A half-written checkpoint of a killed run is ignored and cleaned.
        std::fs::create_dir_all(dir.path().join(".tmp-step-00000040-1")).unwrap();
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [20, 30]);
        let l = latest(dir.path(), &dev).unwrap().unwrap();
        assert_eq!(l.state.step, 30);
        assert_eq!(l.weights["a"].to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }
}
