//! The `eval` stage of `runner exec`: one job per cell (dataset x shots x seed).
//!
//! A cell loads (or reuses) its variant's model and dataset, resumes from the predictions already
//! stored for its job, computes the missing batches (flushing each), scores all predictions with
//! the metrics module, and records the cell with its fingerprint while marking the job done, in
//! one transaction. Artifacts: `predictions.json` (the reference's results format) and
//! `cell.json` (value, fingerprint, run statistics).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use results::EvalCell;
use serde_json::Value;

use super::cell::{self, CellInputs, CellSpec};
use super::datasets::{self, EvalDataset};
use super::media_cache::MediaCache;
use super::model_cache;
use super::weights;
use crate::config::schema::{Demos, Protocol};
use crate::exec::{JobContext, Stage, StageOutcome};
use crate::train::assemble::ModelSpec;

/// The eval stage.
pub struct EvalStage;

/// Datasets kept parsed across cells (the grid's cells of one dataset are consecutive).
const DATASETS_KEPT: usize = 2;

type DatasetKey = (String, String);
type DatasetCache = Mutex<Vec<(DatasetKey, Arc<EvalDataset>)>>;

fn dataset_cache() -> &'static DatasetCache {
    static CACHE: OnceLock<DatasetCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

/// The dataset `name` read from `paths`, parsed once per process while it stays in use.
pub fn load_dataset(
    name: &str,
    paths: &crate::config::schema::DatasetPaths,
) -> Result<Arc<EvalDataset>> {
    let key = (name.to_string(), serde_json::to_string(paths)?);
    let mut cache = dataset_cache()
        .lock()
        .map_err(|_| anyhow::anyhow!("the dataset cache lock is poisoned"))?;
    if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
        let entry = cache.remove(i);
        let data = entry.1.clone();
        cache.push(entry);
        return Ok(data);
    }
    let data = Arc::new(datasets::load(name, paths).with_context(|| format!("reading {name}"))?);
    if cache.len() >= DATASETS_KEPT {
        cache.remove(0);
    }
    cache.push((key, data.clone()));
    Ok(data)
}

/// The cell settings of an eval job spec (and the experiment's batch size).
pub fn cell_spec(job_spec: &Value, batch_size: usize) -> Result<CellSpec> {
    let inputs = &job_spec["inputs"];
    let p = &inputs["protocol"];
    let num = |v: &Value, what: &str| {
        v.as_u64()
            .with_context(|| format!("eval job without {what}"))
    };
    Ok(CellSpec {
        dataset: inputs["dataset"]
            .as_str()
            .context("eval job without a dataset")?
            .to_string(),
        shots: num(&inputs["shots"], "shots")? as usize,
        seed: num(&inputs["seed"], "a seed")?,
        demos: serde_json::from_value::<Demos>(p["demos"].clone()).unwrap_or_default(),
        num_samples: p["num_samples"].as_u64().map(|n| n as usize),
        query_set_size: num(&p["query_set_size"], "query_set_size")? as usize,
        batch_size,
        num_beams: num(&p["num_beams"], "num_beams")? as usize,
        protocol: serde_json::from_value::<Protocol>(p["protocol"].clone()).unwrap_or_default(),
    })
}

/// The eval job's [`ModelSpec`] and the identity of its vision encoder (which keys the RICES
/// feature cache).
fn model_spec(ctx: &JobContext<'_>) -> Result<(ModelSpec, String)> {
    let (spec, model_json) = weights::resolve(&ctx.job.spec, &ctx.runs_dir, |hash| {
        let plan = crate::plan::plan(ctx.loaded);
        let train = plan
            .jobs
            .iter()
            .find(|j| j.hash == hash)
            .with_context(|| format!("train job {hash} is not in the plan"))?;
        Ok(train.spec.clone())
    })?;
    let encoder = crate::plan::hash::hash_json(&serde_json::json!({
        "vision": model_json["vision"],
        "ln_post_tokens": model_json["ln_post_tokens"],
    }));
    Ok((spec, encoder))
}

/// Images sent through the vision encoder (ViT + Perceiver) by this process for the weights of
/// an eval job spec: with the media cache, the number of distinct images its cells used.
pub fn vision_encoder_calls(job_spec: &Value) -> u64 {
    MediaCache::global().encoded(&weights::identity(job_spec))
}

impl Stage for EvalStage {
    fn run(&self, ctx: &JobContext<'_>) -> Result<StageOutcome> {
        let started = std::time::Instant::now();
        let job = ctx.job;
        let exp = ctx.experiment();
        let ev = exp
            .eval
            .as_ref()
            .context("an eval job in an experiment without [eval]")?;
        let spec = cell_spec(&job.spec, ev.batch_size.max(1) as usize)?;
        let paths = ev.paths.get(&spec.dataset).cloned().unwrap_or_default();
        let data = load_dataset(&spec.dataset, &paths)?;

        let identity = weights::identity(&job.spec);
        let dev = crate::exec::device::device_from_name(&exp.device)?;
        let mut encoder_id = String::new();
        let model = model_cache::load(
            &identity,
            || {
                let (fs, enc) = model_spec(ctx)?;
                encoder_id = enc;
                Ok(fs)
            },
            &dev,
        )?;
        let bank = match spec.demos {
            Demos::Random => None,
            Demos::Rices => {
                if encoder_id.is_empty() {
                    encoder_id = model_spec(ctx)?.1;
                }
                ctx.progress.set(0, 1, "bank", "RICES features");
                let dir: PathBuf = ctx.runs_dir.join("cache").join("rices");
                Some(super::rices::bank(
                    &model,
                    &encoder_id,
                    &spec.dataset,
                    &data.train,
                    &dir,
                )?)
            }
        };

        let queries = cell::queries(&data, &spec);
        let wanted: HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
        let stored: HashSet<String> = ctx
            .store
            .predictions(&job.hash)?
            .into_iter()
            .map(|p| p.example_id)
            .filter(|id| wanted.contains(id.as_str()))
            .collect();
        let inputs = CellInputs {
            model: &model,
            data: &data,
            spec: &spec,
            rices_bank: bank.as_deref(),
            media: MediaCache::global(),
        };
        let stats = cell::run(
            &inputs,
            &stored,
            &mut |preds| Ok(ctx.store.put_predictions(&job.hash, preds)?),
            &mut |done, total| ctx.progress.set(done as u64, total as u64, "q", "queries"),
        )?;

        let preds = ctx.store.predictions(&job.hash)?;
        let report = super::scoring::score_cell(
            &data,
            &queries,
            &preds,
            &ctx.artifacts.join("predictions.json"),
        )?;
        let fp = super::fingerprint::fingerprint(
            &job.spec["inputs"]["weights"],
            &job.spec["inputs"]["precision"],
            &data,
            &spec,
            &queries,
            &stats,
        )?;
        let groups = report.groups_json();
        let cell = EvalCell {
            job_hash: job.hash.clone(),
            dataset: spec.dataset.clone(),
            shots: spec.shots as i64,
            seed: spec.seed as i64,
            metric: report.metric.clone(),
            value: report.score,
            count: report.count as i64,
            fingerprint: fp.to_string(),
            groups: groups.as_ref().map(|g| g.to_string()),
        };
        let summary = serde_json::json!({
            "metric": cell.metric,
            "value": cell.value,
            "count": cell.count,
            "groups": groups,
            "fingerprint": fp,
            "vision_encoder_calls_total": MediaCache::global().encoded(&identity),
            "rices_images_embedded_total": super::rices::images_embedded(),
        });
        let summary_path = ctx.artifacts.join("cell.json");
        std::fs::write(&summary_path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", summary_path.display()))?;
        let wall = started.elapsed().as_secs_f64();
        if !ctx.store.finish_eval_cell(ctx.owner, &cell, wall)? {
            bail!("lost the lease of {} before recording it", job.label);
        }
        Ok(StageOutcome::Recorded)
    }
}
