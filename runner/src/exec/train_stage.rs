//! The `train` stage: trains one Flamingo variant (spec §4) in the job's artifacts directory,
//! resuming from its newest checkpoint, with per-step metrics in the store and on the progress bar.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use results::TrainMetric;

use super::JobContext;
use super::backbone::{job_dir, model_dirs};
use super::device::device_from_name;
use super::stages::{Stage, StageOutcome};
use crate::plan::{Job, JobKind};
use crate::train::assemble::ModelSpec;
use crate::train::run::{DEFAULT_MAX_NONFINITE, FINAL_WEIGHTS};
use crate::train::{Flow, StartInfo, StepMetrics, TrainJob, TrainObserver, train};

/// Trains a variant; its output is `<artifacts>/weights.safetensors`.
pub struct TrainStage;

/// Records metrics every `log_every` steps and shows every step on the progress bar.
struct Recorder<'a> {
    ctx: &'a JobContext<'a>,
    log_every: u64,
    pending: Vec<TrainMetric>,
    error: Option<String>,
}

impl Recorder<'_> {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = self
            .ctx
            .store
            .put_train_metrics(&self.ctx.job.hash, &self.pending)
        {
            self.error = Some(e.to_string());
        }
        self.pending.clear();
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl TrainObserver for Recorder<'_> {
    fn started(&mut self, info: &StartInfo) {
        let p = info.params;
        let resumed = info
            .resumed_from
            .map(|s| format!(", resuming from step {s}"))
            .unwrap_or_default();
        self.ctx.progress.line(&format!(
            "{}: {} trainable parameters (cross-attention {}, perceiver {}, embeddings {}){resumed}",
            self.ctx.job.label,
            p.total(),
            p.cross_attn,
            p.perceiver,
            p.embeddings
        ));
    }

    fn step(&mut self, m: &StepMetrics) -> Flow {
        let r = &m.report;
        let per_source: Vec<String> = r
            .losses
            .iter()
            .map(|(s, l)| format!("{s} {l:.4}"))
            .collect();
        let skip = r
            .skipped
            .as_deref()
            .map(|w| format!(" SKIPPED ({w})"))
            .unwrap_or_default();
        let msg = format!(
            "loss {:.4} [{}] lr {:.2e} |g| {} {:.0} tok/s{skip}",
            r.weighted_loss(),
            per_source.join(", "),
            m.lr,
            r.grad_norm
                .map(|g| format!("{g:.3}"))
                .unwrap_or_else(|| "-".into()),
            m.tokens_per_s,
        );
        self.ctx.progress.set(m.step, m.total_steps, "steps", &msg);
        if m.step.is_multiple_of(self.log_every) || m.step == m.total_steps {
            for (source, loss) in &r.losses {
                self.pending.push(TrainMetric {
                    step: m.step as i64,
                    source: source.clone(),
                    loss: finite(*loss),
                    lr: None,
                    grad_norm: None,
                    tokens_per_s: None,
                    samples_per_s: None,
                });
            }
            self.pending.push(TrainMetric {
                step: m.step as i64,
                source: "all".into(),
                loss: finite(r.weighted_loss()),
                lr: Some(m.lr),
                grad_norm: r.grad_norm.and_then(finite),
                tokens_per_s: Some(m.tokens_per_s),
                samples_per_s: Some(m.samples_per_s),
            });
            self.flush();
        }
        Flow::Continue
    }

    fn checkpoint(&mut self, step: u64, dir: &Path) {
        let path = dir.display().to_string();
        if let Err(e) = self
            .ctx
            .store
            .put_checkpoint(&self.ctx.job.hash, step as i64, &path, None)
        {
            self.error = Some(e.to_string());
        }
    }
}

impl Stage for TrainStage {
    fn run(&self, ctx: &JobContext<'_>) -> Result<StageOutcome> {
        let exp = ctx.experiment();
        let t = exp
            .train
            .as_ref()
            .context("a train job of an experiment without [train]")?;
        let (vision, language) = model_dirs(&ctx.runs_dir, &ctx.job.spec)?;
        let job = TrainJob {
            train: t,
            model: ModelSpec::from_config(&exp.model, vision, language, t.seed),
            device: device_from_name(&exp.device)?,
            data_dir: PathBuf::from("."),
            out_dir: ctx.artifacts.clone(),
            max_nonfinite: DEFAULT_MAX_NONFINITE,
            prefetch: 2,
        };
        let mut rec = Recorder {
            ctx,
            log_every: u64::try_from(t.log_every).unwrap_or(1).max(1),
            pending: Vec::new(),
            error: None,
        };
        let summary =
            train(&job, &mut rec).with_context(|| format!("training {}", ctx.job.label))?;
        rec.flush();
        if let Some(e) = rec.error {
            anyhow::bail!("recording training metrics: {e}");
        }
        Ok(StageOutcome::Done(serde_json::to_value(&summary)?))
    }

    fn intact(&self, job: &Job, runs_dir: &Path) -> bool {
        job_dir(runs_dir, JobKind::Train, &job.hash)
            .join(FINAL_WEIGHTS)
            .is_file()
    }
}
