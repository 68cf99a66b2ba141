//! The stages `exec` can run, one per job kind this build implements.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::JobContext;
use crate::plan::{Job, JobKind};

/// How a stage ended.
pub enum StageOutcome {
    /// Finished; the executor marks the job done with this JSON summary.
    Done(serde_json::Value),
    /// Finished, and the stage already marked the job done in the same transaction as its
    /// results (eval cells).
    Recorded,
}

/// A runnable stage.
pub trait Stage: Sync {
    /// Runs one job of this stage.
    fn run(&self, ctx: &JobContext<'_>) -> Result<StageOutcome>;

    /// Whether a job recorded as done still has its outputs on disk (a deleted or overwritten
    /// output makes the job pending again).
    fn intact(&self, _job: &Job, _runs_dir: &Path) -> bool {
        true
    }
}

/// The stage for a job kind, if this build has it.
pub fn stage_for(kind: JobKind) -> Option<&'static dyn Stage> {
    match kind {
        JobKind::Synth => Some(&SynthStage),
        JobKind::Pretrain => Some(&crate::pretrain::stage::PretrainStage),
        JobKind::Train => Some(&super::train_stage::TrainStage),
        JobKind::Eval => Some(&crate::eval::stage::EvalStage),
    }
}

/// A string input of a job's spec (`inputs.<key>`).
pub fn input_str<'a>(job: &'a Job, key: &str) -> Result<&'a str> {
    job.spec["inputs"][key]
        .as_str()
        .with_context(|| format!("job {} has no string input `{key}`", job.hash))
}

/// Writes the synthetic world: into a temporary sibling directory, then renamed into place, so a
/// world directory is complete or absent. A marker file names the job that wrote it.
pub struct SynthStage;

/// File in a world directory holding the hash of the job that wrote it.
pub const SYNTH_MARKER: &str = ".runner-job";

impl SynthStage {
    fn dir(job: &Job) -> Result<PathBuf> {
        Ok(PathBuf::from(input_str(job, "dir")?))
    }
}

impl Stage for SynthStage {
    fn run(&self, ctx: &JobContext<'_>) -> Result<StageOutcome> {
        let job = ctx.job;
        let dir = Self::dir(job)?;
        let seed = job.spec["inputs"]["seed"]
            .as_u64()
            .context("synth job without a seed")?;
        let size: crate::data::synth::WorldSize = input_str(job, "size")?.parse()?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "world".into());
        let tmp = dir.with_file_name(format!(".{name}.partial-{}", &job.hash[..12]));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot clear {}", tmp.display()))?;
        }
        ctx.progress.set(0, 1, "world", "writing");
        let summary = crate::data::synth::write_world(
            &tmp,
            &crate::data::synth::SynthOptions::new(seed, size),
        )
        .with_context(|| format!("writing the synthetic world into {}", tmp.display()))?;
        std::fs::write(tmp.join(SYNTH_MARKER), &job.hash)
            .with_context(|| format!("cannot write {}", tmp.join(SYNTH_MARKER).display()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
        ctx.progress.set(1, 1, "world", "done");
        Ok(StageOutcome::Done(serde_json::json!({
            "dir": dir.display().to_string(),
            "files": summary.files,
            "bytes": summary.bytes,
            "counts": summary.counts,
        })))
    }

    fn intact(&self, job: &Job, _runs_dir: &Path) -> bool {
        Self::dir(job)
            .ok()
            .and_then(|d| std::fs::read_to_string(d.join(SYNTH_MARKER)).ok())
            .is_some_and(|h| h.trim() == job.hash)
    }
}
