//! Where a job's backbone lives: the artifacts directory of the `pretrain` job that built a preset,
//! or the directory the configuration names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::plan::JobKind;

/// The artifacts directory of job `hash` of `kind` under `runs_dir` (as the executor creates it).
pub fn job_dir(runs_dir: &Path, kind: JobKind, hash: &str) -> PathBuf {
    let short = hash.get(..12).unwrap_or(hash);
    runs_dir
        .join("jobs")
        .join(format!("{}-{short}", kind.as_str()))
}

/// Resolves a backbone identity of a job spec (`inputs.model.vision` / `.language`, `which` being
/// `vision` or `language`): `{"pretrain": hash}` is the directory the pretrain job wrote its
/// backbone into ([`crate::pretrain::backbone_dir`]), `{"dir": path, ..}` that directory.
pub fn backbone_dir(runs_dir: &Path, value: &Value, which: &str) -> Result<PathBuf> {
    if let Some(hash) = value.get("pretrain").and_then(Value::as_str) {
        return Ok(crate::pretrain::backbone_dir(runs_dir, hash, which));
    }
    if let Some(dir) = value.get("dir").and_then(Value::as_str) {
        return Ok(PathBuf::from(dir));
    }
    bail!("backbone identity {value} names neither a pretrain job nor a directory")
}

/// The vision and language directories of a job whose spec holds `inputs.model`.
pub fn model_dirs(runs_dir: &Path, job_spec: &Value) -> Result<(PathBuf, PathBuf)> {
    let model = &job_spec["inputs"]["model"];
    let vision =
        backbone_dir(runs_dir, &model["vision"], "vision").context("inputs.model.vision")?;
    let language =
        backbone_dir(runs_dir, &model["language"], "language").context("inputs.model.language")?;
    Ok((vision, language))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presets_map_to_pretrain_job_dirs_and_dirs_to_themselves() {
        let runs = Path::new("runs");
        let h = "0123456789abcdef0123";
        assert_eq!(
            backbone_dir(runs, &json!({ "pretrain": h }), "vision").unwrap(),
            Path::new("runs/jobs/pretrain-0123456789ab/vision")
        );
        assert_eq!(
            backbone_dir(runs, &json!({"dir": "/m/lm", "files": {}}), "language").unwrap(),
            Path::new("/m/lm")
        );
        assert!(backbone_dir(runs, &json!(null), "vision").is_err());
    }
}
