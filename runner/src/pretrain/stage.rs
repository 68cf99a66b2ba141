//! The `pretrain` stage of the executor: builds one preset backbone from its job spec
//! (`inputs.backbone` = `vision` | `language`, `inputs.config` = the preset without its name,
//! `inputs.data` = the synth job whose world it learns from).
//!
//! Both backbones take well under a minute, so a killed run simply starts again: training writes
//! into a scratch sibling directory that is renamed into place only when the backbone is complete
//! and verified, with a marker naming the job, so a half-written backbone is never used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use results::TrainMetric;

use super::{PretrainSummary, StepReport, backbone_dir};
use crate::config::schema::{PretrainLanguage, PretrainVision};
use crate::exec::stages::{SYNTH_MARKER, input_str};
use crate::exec::{JobContext, Stage, StageOutcome};
use crate::plan::Job;

/// File in a backbone directory holding the hash of the job that wrote it.
pub const BACKBONE_MARKER: &str = ".runner-job";

/// Loss source recorded for the vision backbone.
pub const VISION_SOURCE: &str = "contrastive";
/// Loss source recorded for the language backbone.
pub const LANGUAGE_SOURCE: &str = "next_token";

/// Runs `pretrain` jobs.
pub struct PretrainStage;

/// Files a finished backbone directory must hold.
fn required_files(which: &str) -> &'static [&'static str] {
    match which {
        "vision" => &["open_clip_config.json", "open_clip_model.safetensors"],
        _ => &["config.json", "model.safetensors", "tokenizer.json"],
    }
}

/// The candle device an experiment names (`cpu`, `cuda`, `cuda:N`).
pub fn device_of(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).context("device `cuda`"),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n).with_context(|| format!("device `{other}`")),
            _ => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
    }
}

/// The preset of the job spec, with a name for messages.
fn preset<T: serde::de::DeserializeOwned>(job: &Job, name: &str) -> Result<T> {
    let mut cfg = job.spec["inputs"]["config"].clone();
    let map = cfg
        .as_object_mut()
        .with_context(|| format!("job {} has no object input `config`", job.hash))?;
    map.insert("name".into(), serde_json::Value::String(name.into()));
    serde_json::from_value(cfg)
        .with_context(|| format!("job {}: input `config` is not a valid preset", job.hash))
}

/// The synthetic world the job learns from: the experiment's `[data.synth]` directory, checked to
/// be the one written by the job named in `inputs.data`.
fn world_dir(ctx: &JobContext<'_>) -> Result<PathBuf> {
    let job = ctx.job;
    let Some(synth_hash) = job.spec["inputs"]["data"].as_str() else {
        bail!(
            "a preset backbone is pretrained on the synthetic world: the experiment needs [data.synth]"
        );
    };
    let synth = ctx
        .experiment()
        .data
        .synth
        .as_ref()
        .context("the experiment has no [data.synth] section")?;
    let dir = PathBuf::from(&synth.dir);
    let marker = dir.join(SYNTH_MARKER);
    let written_by = std::fs::read_to_string(&marker).with_context(|| {
        format!(
            "the synthetic world {} is missing or incomplete",
            dir.display()
        )
    })?;
    if written_by.trim() != synth_hash {
        bail!(
            "the synthetic world {} was written by job {}, not by {synth_hash} this backbone depends on",
            dir.display(),
            written_by.trim()
        );
    }
    Ok(dir)
}

/// Removes `path` if it exists.
fn clear(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

impl Stage for PretrainStage {
    fn run(&self, ctx: &JobContext<'_>) -> Result<StageOutcome> {
        let job = ctx.job;
        let which = input_str(job, "backbone")?.to_string();
        let world = world_dir(ctx)?;
        let device = device_of(&ctx.experiment().device)?;
        let out = backbone_dir(&ctx.runs_dir, &job.hash, &which);
        let parent = out
            .parent()
            .with_context(|| format!("{} has no parent directory", out.display()))?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let tmp = parent.join(format!(".{which}.partial"));
        clear(&tmp)?;
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;

        let mut rows: Vec<TrainMetric> = Vec::new();
        let source = if which == "vision" {
            VISION_SOURCE
        } else {
            LANGUAGE_SOURCE
        };
        let mut on_step = |r: &StepReport| {
            ctx.progress.set(
                r.step,
                r.steps,
                "step",
                &format!("{which} loss {:.4}", r.loss),
            );
            rows.push(TrainMetric {
                step: r.step as i64,
                source: source.to_string(),
                loss: Some(r.loss),
                lr: Some(r.lr),
                grad_norm: Some(r.grad_norm),
                tokens_per_s: None,
                samples_per_s: Some(r.samples_per_s),
            });
        };
        let summary: PretrainSummary = match which.as_str() {
            "vision" => {
                let name = ctx.experiment().model.vision.clone();
                let cfg: PretrainVision = preset(job, &name)?;
                super::vision::pretrain_vision(&cfg, &world, &tmp, &device, &mut on_step)?
            }
            "language" => {
                let name = ctx.experiment().model.language.clone();
                let cfg: PretrainLanguage = preset(job, &name)?;
                super::language::pretrain_language(&cfg, &world, &tmp, &device, &mut on_step)?
            }
            other => bail!("job {}: unknown backbone `{other}`", job.hash),
        };
        ctx.store
            .put_train_metrics(&job.hash, &rows)
            .context("recording the pretraining losses")?;

        std::fs::write(tmp.join(BACKBONE_MARKER), &job.hash)
            .with_context(|| format!("cannot write {}", tmp.join(BACKBONE_MARKER).display()))?;
        clear(&out)?;
        std::fs::rename(&tmp, &out)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
        let mut result = serde_json::to_value(&summary)?;
        if let serde_json::Value::Object(m) = &mut result {
            m.insert("dir".into(), out.display().to_string().into());
        }
        Ok(StageOutcome::Done(result))
    }

    fn intact(&self, job: &Job, runs_dir: &Path) -> bool {
        let Ok(which) = input_str(job, "backbone") else {
            return false;
        };
        let dir = backbone_dir(runs_dir, &job.hash, which);
        let marked =
            std::fs::read_to_string(dir.join(BACKBONE_MARKER)).is_ok_and(|h| h.trim() == job.hash);
        marked && required_files(which).iter().all(|f| dir.join(f).is_file())
    }
}
