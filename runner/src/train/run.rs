//! The training loop of one Flamingo variant: build the model and the data mix, resume from the
//! newest checkpoint if there is one, step, report, checkpoint, and write the final weights.
//!
//! Resume is exact: a checkpoint holds the trained weights, the AdamW moments and update count
//! (the schedule's clock), the data-stream position of every source and the counters; the model
//! is rebuilt with the same seed and the checkpoint loaded over it. Nothing else is random: the
//! trainable weights' initialisation is seeded (`train.seed`), the data streams are pure functions
//! of their seeds and positions, and the network has no dropout. The `rng` entry of a checkpoint
//! records those seeds and a resume refuses a checkpoint made with others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::config::schema::TrainConfig;
use crate::data::{DataMix, ImageTransform, MixState, PrefetchMix};
use crate::train::assemble::{ModelSpec, load_model, trained_tensors};
use crate::train::checkpoint::{self, TrainState};
use crate::train::error::TrainError;
use crate::train::schedule::lr_at;
use crate::train::step::{ParamCounts, StepReport, StepSettings, Trainer};

/// File the final trained weights are written to (what evaluation loads with the backbones).
pub const FINAL_WEIGHTS: &str = "weights.safetensors";
/// Directory of the step checkpoints inside the output directory.
pub const CHECKPOINTS: &str = "checkpoints";
/// Non-finite steps in a row after which training stops.
pub const DEFAULT_MAX_NONFINITE: u64 = 5;

/// One training run.
pub struct TrainJob<'a> {
    /// `[train]`.
    pub train: &'a TrainConfig,
    /// The model to build (its `init_seed` should be `train.seed`).
    pub model: ModelSpec,
    /// Where tensors live.
    pub device: Device,
    /// Base of relative shard paths.
    pub data_dir: PathBuf,
    /// Output directory: `checkpoints/` and the final weights.
    pub out_dir: PathBuf,
    /// Non-finite steps in a row that stop the job.
    pub max_nonfinite: u64,
    /// Batches prepared ahead per source (0: no background threads).
    pub prefetch: usize,
}

/// What the loop tells its observer when it starts.
#[derive(Debug, Clone, Serialize)]
pub struct StartInfo {
    /// Trainable parameters by group.
    pub params: ParamCounts,
    /// Step of the checkpoint resumed from.
    pub resumed_from: Option<u64>,
    /// Total steps.
    pub total_steps: u64,
}

/// One step's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    /// 1-based step.
    pub step: u64,
    /// Total steps.
    pub total_steps: u64,
    /// Learning rate used.
    pub lr: f64,
    /// What the step did (losses per source, grad norm, skip reason, tokens, samples).
    #[serde(skip)]
    pub report: StepReport,
    /// Tokens per second of this step (data included).
    pub tokens_per_s: f64,
    /// Samples per second of this step.
    pub samples_per_s: f64,
    /// Skipped steps so far.
    pub nonfinite_skips: u64,
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Next step.
    Continue,
    /// Return now, as if killed after this step's checkpoint (no final weights).
    Stop,
}

/// Receives progress: the stage records metrics and checkpoints; tests collect losses.
pub trait TrainObserver {
    /// Called once before the first step.
    fn started(&mut self, _info: &StartInfo) {}
    /// Called after every step.
    fn step(&mut self, _m: &StepMetrics) -> Flow {
        Flow::Continue
    }
    /// Called after a checkpoint was written.
    fn checkpoint(&mut self, _step: u64, _dir: &Path) {}
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Steps completed (including skipped ones).
    pub steps: u64,
    /// Whether all configured steps ran (false when the observer stopped the loop).
    pub completed: bool,
    /// Per-source losses of the last step.
    pub final_losses: BTreeMap<String, f64>,
    /// Trainable parameters by group.
    pub params: ParamCounts,
    /// Tokens per second over this process's steps.
    pub tokens_per_s: f64,
    /// Samples per second over this process's steps.
    pub samples_per_s: f64,
    /// Tokens trained on over the whole run.
    pub tokens: u64,
    /// Steps skipped for a non-finite loss or gradient.
    pub nonfinite_skips: u64,
    /// Samples skipped by the data sources, by source and reason.
    pub skipped_samples: serde_json::Value,
    /// Step resumed from, if any.
    pub resumed_from: Option<u64>,
    /// The final weights (when completed).
    pub weights: Option<PathBuf>,
}

fn positive(v: i64, what: &str) -> Result<u64, TrainError> {
    u64::try_from(v)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| TrainError::Config(format!("`{what}` must be positive, got {v}")))
}

fn seeds(train: &TrainConfig, model: &ModelSpec) -> serde_json::Value {
    serde_json::json!({"data_seed": train.seed, "init_seed": model.init_seed})
}

/// Writes the trained weights to `path` through a temporary file and a rename.
fn write_weights(trainer: &Trainer, path: &Path) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    candle_core::safetensors::save(&trained_tensors(trainer.model())?, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs (or resumes) the training and writes `<out_dir>/weights.safetensors` at the end.
pub fn train(job: &TrainJob, obs: &mut dyn TrainObserver) -> Result<TrainSummary, TrainError> {
    let t = job.train;
    let total = positive(t.steps, "train.steps")?;
    let every = u64::try_from(t.checkpoint_every).unwrap_or(0);
    let keep = usize::try_from(t.keep_checkpoints).unwrap_or(1).max(1);
    let warmup = u64::try_from(t.warmup_steps).unwrap_or(0);
    let settings = StepSettings {
        grad_accum: positive(t.grad_accum, "train.grad_accum")? as usize,
        max_grad_norm: t.max_grad_norm,
        weight_decay: t.weight_decay,
    };
    let (model, tokenizer, processor, _) = load_model(&job.model, &job.device)?;
    let mut trainer = Trainer::new(model, settings)?;
    let transform = ImageTransform::from_processor(processor);
    let mut data = DataMix::new(
        &t.data,
        t.seed,
        &job.data_dir,
        Arc::new(tokenizer),
        transform,
    )?;

    let ckpt_root = job.out_dir.join(CHECKPOINTS);
    let mut state = TrainState {
        rng: seeds(t, &job.model),
        ..TrainState::default()
    };
    let mut resumed_from = None;
    if let Some(ck) = checkpoint::latest(&ckpt_root, &job.device)? {
        let bad = |message: String| TrainError::Resume {
            path: ck.dir.clone(),
            message,
        };
        if ck.state.rng != state.rng {
            return Err(bad(format!(
                "made with seeds {}, this run uses {}",
                ck.state.rng, state.rng
            )));
        }
        let weights = ck.dir.join(checkpoint::WEIGHTS);
        model::checkpoint::load_checkpoint(trainer.model_mut(), &weights)?;
        trainer
            .optimizer_mut()
            .restore(&ck.optimizer, ck.state.optimizer_steps)
            .map_err(bad)?;
        let mix: MixState = serde_json::from_value(ck.state.data.clone())
            .map_err(|e| bad(format!("data state: {e}")))?;
        data.restore(&mix)?;
        resumed_from = Some(ck.state.step);
        state = ck.state;
    }
    obs.started(&StartInfo {
        params: trainer.param_counts(),
        resumed_from,
        total_steps: total,
    });

    let mut source = Source::new(data, job.prefetch);
    let (mut run_tokens, mut run_samples, mut run_secs) = (0u64, 0u64, 0f64);
    let mut completed = true;
    while state.step < total {
        let started = Instant::now();
        let lr = lr_at(t.schedule, t.lr, trainer.optimizer().steps(), warmup, total);
        let report = trainer.step(&mut || source.next_step(), lr)?;
        state.step += 1;
        state.optimizer_steps = trainer.optimizer().steps();
        state.tokens += report.tokens as u64;
        state.samples += report.samples as u64;
        state.losses = report.losses.clone();
        if let Some(why) = &report.skipped {
            state.nonfinite_skips += 1;
            state.consecutive_nonfinite += 1;
            if state.consecutive_nonfinite >= job.max_nonfinite.max(1) {
                return Err(TrainError::NonFinite {
                    count: state.consecutive_nonfinite,
                    step: state.step,
                    why: why.clone(),
                    last_checkpoint: checkpoint::list(&ckpt_root).pop().map(|(_, d)| d),
                });
            }
        } else {
            state.consecutive_nonfinite = 0;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        run_secs += secs;
        run_tokens += report.tokens as u64;
        run_samples += report.samples as u64;
        let flow = obs.step(&StepMetrics {
            step: state.step,
            total_steps: total,
            lr,
            tokens_per_s: report.tokens as f64 / secs,
            samples_per_s: report.samples as f64 / secs,
            report,
            nonfinite_skips: state.nonfinite_skips,
        });
        if (every > 0 && state.step.is_multiple_of(every)) || state.step == total {
            state.data = serde_json::to_value(source.state())
                .map_err(|e| TrainError::Config(format!("data state: {e}")))?;
            state.skipped_samples = source.skips_json();
            let dir = checkpoint::save(
                &ckpt_root,
                &trained_tensors(trainer.model())?,
                &trainer.optimizer().state_tensors(),
                &state,
                keep,
            )?;
            obs.checkpoint(state.step, &dir);
        }
        if flow == Flow::Stop && state.step < total {
            completed = false;
            break;
        }
    }
    let weights = if completed {
        std::fs::create_dir_all(&job.out_dir).map_err(|source| TrainError::Io {
            path: job.out_dir.clone(),
            source,
        })?;
        let path = job.out_dir.join(FINAL_WEIGHTS);
        write_weights(&trainer, &path)?;
        Some(path)
    } else {
        None
    };
    Ok(TrainSummary {
        steps: state.step,
        completed,
        final_losses: state.losses.clone(),
        params: trainer.param_counts(),
        tokens_per_s: run_tokens as f64 / run_secs.max(1e-9),
        samples_per_s: run_samples as f64 / run_secs.max(1e-9),
        tokens: state.tokens,
        nonfinite_skips: state.nonfinite_skips,
        skipped_samples: source.skips_json(),
        resumed_from,
        weights,
    })
}

/// The data mix, stepped in the foreground or with background prefetching.
enum Source {
    Plain(DataMix),
    Prefetch(PrefetchMix),
}

impl Source {
    fn new(mix: DataMix, depth: usize) -> Self {
        if depth == 0 {
            Source::Plain(mix)
        } else {
            Source::Prefetch(PrefetchMix::new(mix, depth))
        }
    }

    fn next_step(&mut self) -> Result<Vec<crate::data::Batch>, TrainError> {
        Ok(match self {
            Source::Plain(m) => m.next_step()?,
            Source::Prefetch(m) => m.next_step()?,
        })
    }

    fn state(&self) -> MixState {
        match self {
            Source::Plain(m) => m.state(),
            Source::Prefetch(m) => m.state(),
        }
    }

    fn skips_json(&self) -> serde_json::Value {
        let counts = match self {
            Source::Plain(m) => m.skip_counts(),
            Source::Prefetch(m) => m.skip_counts(),
        };
        let map: serde_json::Map<String, serde_json::Value> = counts
            .into_iter()
            .map(|(name, c)| {
                let reasons: serde_json::Map<String, serde_json::Value> = c
                    .nonzero()
                    .into_iter()
                    .map(|(r, n)| (r.to_string(), n.into()))
                    .collect();
                (name, serde_json::Value::Object(reasons))
            })
            .collect();
        serde_json::Value::Object(map)
    }
}
