//! Flamingo training (spec §4): the objective, one optimizer step, the loop with checkpoints and
//! exact resume, and the pieces they use (AdamW, schedules, checkpoint files, model assembly).
//!
//! Entry point: [`run::train`] with a [`run::TrainJob`]; the `exec` stage wraps it.

pub mod adamw;
pub mod assemble;
pub mod checkpoint;
pub mod error;
pub mod objective;
pub mod run;
pub mod schedule;
pub mod step;

pub use error::TrainError;
pub use run::{Flow, StartInfo, StepMetrics, TrainJob, TrainObserver, TrainSummary, train};
