//! The stages `exec` can run, one per job kind this build implements.

use anyhow::Result;

use super::JobContext;
use crate::plan::JobKind;

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
}

/// The stage for a job kind, if this build has it.
pub fn stage_for(kind: JobKind) -> Option<&'static dyn Stage> {
    match kind {
        JobKind::Synth | JobKind::Pretrain | JobKind::Train | JobKind::Eval => None,
    }
}
