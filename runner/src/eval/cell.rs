//! One evaluation cell (dataset x shots x seed): its queries, their demonstrations and prompts,
//! batched decoding or rank scoring, and the per-example predictions.
//!
//! Queries are processed in fixed batches of the test subset (`batch_size` consecutive queries of
//! the subset order), whatever is already stored: a batch with any query missing from the store
//! is computed whole and flushed in one transaction. A cell killed and resumed therefore runs
//! exactly the batches an uninterrupted run would (batch composition matters for the reference's
//! padded rank scoring), and produces the same predictions and value.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use model::{GenerateConfig, LmFamily, PromptBatch, RankOptions, generate, rank_scores_with};
use results::Prediction;

use super::datasets::{EvalDataset, EvalExample, HATEFUL_MEMES_CLASSES, Task};
use super::demos::{RandomDemos, derive_rng, effective_shots, rices_batch, test_subset};
use super::features::FeatureBank;
use super::media_cache::MediaCache;
use super::model_cache::EvalModel;
use super::prompts::{self, Prompt};
use super::protocol::ensemble_orders;
use crate::config::schema::{Demos, Protocol};

/// Longest prompt in tokens (the reference tokenizes with `truncation=True, max_length=2000`).
pub const MAX_PROMPT_TOKENS: usize = 2000;

/// The settings of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSpec {
    /// Dataset name.
    pub dataset: String,
    /// In-context examples (0: two text-only demonstrations).
    pub shots: usize,
    /// Seed of the test subset and the demonstrations.
    pub seed: u64,
    /// Random or RICES demonstrations.
    pub demos: Demos,
    /// Queries drawn with the seed; `None` for the full test split.
    pub num_samples: Option<usize>,
    /// Size of the random demonstration pool.
    pub query_set_size: usize,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// Beams of generative tasks.
    pub num_beams: usize,
    /// Paper or reference-code behaviour where they differ.
    pub protocol: Protocol,
}

/// What a cell run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CellStats {
    /// Queries in the cell.
    pub queries: usize,
    /// Queries whose predictions were already stored (not recomputed).
    pub resumed: usize,
    /// Queries computed by this run (whole batches).
    pub computed: usize,
    /// Batches computed.
    pub batches: usize,
    /// Prompts run through the model (ensembles count each order).
    pub prompts: usize,
    /// Images this run sent through the vision encoder (others came from the media cache).
    pub images_encoded: u64,
    /// Distinct images the computed prompts referred to.
    pub distinct_images: usize,
    /// Wall time of the computed batches.
    pub seconds: f64,
}

/// Everything a cell run reads.
pub struct CellInputs<'a> {
    /// The model.
    pub model: &'a EvalModel,
    /// The dataset.
    pub data: &'a EvalDataset,
    /// The cell.
    pub spec: &'a CellSpec,
    /// The RICES bank of the training split (required when `spec.demos` is RICES).
    pub rices_bank: Option<&'a FeatureBank>,
    /// The encoded-image cache.
    pub media: &'a MediaCache,
}

/// The test examples of the cell, in evaluation order.
pub fn queries<'a>(data: &'a EvalDataset, spec: &CellSpec) -> Vec<&'a EvalExample> {
    test_subset(&spec.dataset, spec.seed, data.test.len(), spec.num_samples)
        .into_iter()
        .map(|i| &data.test[i])
        .collect()
}

/// Runs every batch with a query not in `stored`, calling `flush` with each batch's
/// predictions (in query order) and `progress(done, total)` after each batch.
pub fn run(
    inputs: &CellInputs<'_>,
    stored: &HashSet<String>,
    flush: &mut dyn FnMut(&[Prediction]) -> Result<()>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CellStats> {
    let spec = inputs.spec;
    let qs = queries(inputs.data, spec);
    let mut stats = CellStats {
        queries: qs.len(),
        ..Default::default()
    };
    let random = RandomDemos::new(
        &spec.dataset,
        spec.seed,
        inputs.data.train.len(),
        spec.query_set_size,
    );
    let encoded_before = inputs.media.encoded(&inputs.model.identity);
    let mut images: HashSet<PathBuf> = HashSet::new();
    let started = Instant::now();
    let bs = spec.batch_size.max(1);
    let mut done = 0;
    for batch in qs.chunks(bs) {
        if batch.iter().all(|q| stored.contains(&q.id)) {
            stats.resumed += batch.len();
            done += batch.len();
            progress(done, qs.len());
            continue;
        }
        let demos = demonstrations(inputs, &random, batch)?;
        let preds = match inputs.data.info.task {
            Task::Classification => classify(inputs, batch, &demos, &mut stats, &mut images)?,
            Task::Captioning | Task::Vqa => {
                generate_batch(inputs, batch, &demos, &mut stats, &mut images)?
            }
        };
        flush(&preds)?;
        stats.batches += 1;
        stats.computed += batch.len();
        done += batch.len();
        progress(done, qs.len());
    }
    stats.images_encoded = inputs.media.encoded(&inputs.model.identity) - encoded_before;
    stats.distinct_images = images.len();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Training-split indices of each query's demonstrations, in prompt order.
fn demonstrations(
    inputs: &CellInputs<'_>,
    random: &RandomDemos,
    batch: &[&EvalExample],
) -> Result<Vec<Vec<usize>>> {
    let spec = inputs.spec;
    let k = effective_shots(spec.shots);
    match spec.demos {
        Demos::Random => batch
            .iter()
            .map(|q| {
                random
                    .for_query(&q.id, k)
                    .with_context(|| format!("demonstrations of query {}", q.id))
            })
            .collect(),
        Demos::Rices => {
            let bank = inputs
                .rices_bank
                .context("RICES demonstrations without a feature bank")?;
            let paths: Vec<PathBuf> = batch.iter().map(|q| q.image.clone()).collect();
            let (feats, _) = super::rices::embed(inputs.model, &paths)?;
            Ok(rices_batch(&spec.dataset, &feats, bank, k)?)
        }
    }
}

/// The example ids of demonstrations given as training-split indices.
fn demo_ids(inputs: &CellInputs<'_>, idx: &[usize]) -> Vec<String> {
    idx.iter()
        .map(|&i| inputs.data.train[i].id.clone())
        .collect()
}

fn prompt_of(inputs: &CellInputs<'_>, query: &EvalExample, demo_idx: &[usize]) -> Result<Prompt> {
    let train = &inputs.data.train;
    let demos: Vec<&EvalExample> = demo_idx.iter().map(|&i| &train[i]).collect();
    Ok(prompts::build(
        inputs.data.info.task,
        &demos,
        query,
        inputs.spec.shots,
        inputs.spec.protocol,
    )?)
}

/// Token ids and visual latents `(B, T_max, n, D)` of a batch of prompts.
fn encode_batch(
    inputs: &CellInputs<'_>,
    prompts: &[Prompt],
    images: &mut HashSet<PathBuf>,
) -> Result<(Vec<Vec<u32>>, Tensor)> {
    let model = inputs.model;
    let ids = prompts
        .iter()
        .map(|p| {
            model
                .tokenizer
                .encode_with(&p.text, true, Some(MAX_PROMPT_TOKENS))
                .with_context(|| format!("tokenizing prompt {:?}", p.text))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut unique: Vec<&Path> = prompts
        .iter()
        .flat_map(|p| p.images.iter().map(PathBuf::as_path))
        .collect();
    unique.sort();
    unique.dedup();
    images.extend(unique.iter().map(|p| p.to_path_buf()));
    let latents = inputs.media.latents(model, &unique)?;
    let by_path: HashMap<&Path, &Tensor> = unique.iter().copied().zip(&latents).collect();
    let t_max = prompts.iter().map(|p| p.images.len()).max().unwrap_or(1);
    let first = latents.first().context("a batch without images")?;
    let zero = Tensor::zeros(first.dims(), first.dtype(), first.device())?;
    let rows = prompts
        .iter()
        .map(|p| {
            let mut row: Vec<Tensor> = p
                .images
                .iter()
                .map(|i| by_path[i.as_path()].clone())
                .collect();
            row.resize(t_max, zero.clone());
            Tensor::stack(&row, 0)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((ids, Tensor::stack(&rows, 0)?))
}

fn generate_batch(
    inputs: &CellInputs<'_>,
    batch: &[&EvalExample],
    demos: &[Vec<usize>],
    stats: &mut CellStats,
    images: &mut HashSet<PathBuf>,
) -> Result<Vec<Prediction>> {
    let info = &inputs.data.info;
    let decoding = info
        .decoding
        .with_context(|| format!("{} has no decoding settings", info.name))?;
    let model = inputs.model;
    let prompts = batch
        .iter()
        .zip(demos)
        .map(|(q, d)| prompt_of(inputs, q, d))
        .collect::<Result<Vec<_>>>()?;
    let (ids, latents) = encode_batch(inputs, &prompts, images)?;
    let pb = PromptBatch::left_padded_latents(&ids, model.tokenizer.pad_id(), latents)?;
    let mut cfg = GenerateConfig::open_flamingo(
        model.tokenizer.eoc_id(),
        model.tokenizer.pad_id(),
        decoding.max_new_tokens,
        inputs.spec.num_beams,
    );
    cfg.min_new_tokens = decoding.min_new_tokens;
    cfg.length_penalty = decoding.length_penalty;
    let gens = generate(&model.flamingo, &pb, &cfg)
        .with_context(|| format!("generating for queries {}..", batch[0].id))?;
    stats.prompts += prompts.len();
    batch
        .iter()
        .zip(gens)
        .zip(demos.iter().zip(&prompts))
        .map(|((q, g), (d, p))| {
            let raw = model.tokenizer.decode(&g.tokens, true)?;
            let prediction = super::postprocess::prediction(info, &raw);
            Ok(Prediction {
                example_id: q.id.clone(),
                prediction,
                score: None,
                extra: Some(
                    serde_json::json!({
                        "raw": raw,
                        "new_tokens": g.tokens.len(),
                        "beam_score": g.score,
                        "demos": demo_ids(inputs, d),
                        "images": p.images.len(),
                    })
                    .to_string(),
                ),
            })
        })
        .collect()
}

fn classify(
    inputs: &CellInputs<'_>,
    batch: &[&EvalExample],
    demos: &[Vec<usize>],
    stats: &mut CellStats,
    images: &mut HashSet<PathBuf>,
) -> Result<Vec<Prediction>> {
    let spec = inputs.spec;
    let model = inputs.model;
    let task = inputs.data.info.task;
    let k = effective_shots(spec.shots);
    // Demonstration orders per query (a single order unless the paper's ensembling applies).
    let orders: Vec<Vec<Vec<usize>>> = batch
        .iter()
        .map(|q| {
            let mut rng = derive_rng(&spec.dataset, spec.seed, &["ensemble", &q.id]);
            ensemble_orders(spec.protocol, task, k, &mut rng)
        })
        .collect();
    let n_orders = orders.first().map_or(1, Vec::len);
    let candidates = HATEFUL_MEMES_CLASSES
        .iter()
        .map(|c| model.tokenizer.encode_with(c, false, None))
        .collect::<Result<Vec<_>, _>>()?;
    if candidates.iter().any(Vec::is_empty) {
        bail!("a class name encodes to no tokens");
    }
    // Sum over orders of the length-normalised class log-likelihoods, per query.
    let mut sums = vec![[0f64; 2]; batch.len()];
    let mut images_per_prompt = vec![0; batch.len()];
    // `j` picks the j-th order of every query of the batch.
    #[allow(clippy::needless_range_loop)]
    for j in 0..n_orders {
        let prompts = batch
            .iter()
            .enumerate()
            .map(|(r, q)| {
                let ordered: Vec<usize> = orders[r][j].iter().map(|&i| demos[r][i]).collect();
                prompt_of(inputs, q, &ordered)
            })
            .collect::<Result<Vec<_>>>()?;
        for (n, p) in images_per_prompt.iter_mut().zip(&prompts) {
            *n = p.images.len();
        }
        let (ids, latents) = encode_batch(inputs, &prompts, images)?;
        let pb = PromptBatch::left_padded_latents(&ids, model.tokenizer.pad_id(), latents)?;
        // MosaicGPT (MPT-1B, OpenFlamingo-3B) extends the KV cache it is given in place, so
        // the reference scores later candidates after earlier ones (a no-op for one-token names).
        let opts = RankOptions {
            normalize_length: true,
            shared_cache: model.flamingo.lm().config().family == LmFamily::MosaicGpt,
        };
        let scores = rank_scores_with(&model.flamingo, &pb, &candidates, &opts)
            .with_context(|| format!("rank scoring queries {}..", batch[0].id))?;
        for (sum, s) in sums.iter_mut().zip(scores) {
            sum[0] += s[0];
            sum[1] += s[1];
        }
        stats.prompts += prompts.len();
    }
    Ok(batch
        .iter()
        .zip(sums)
        .enumerate()
        .map(|(r, (q, s))| {
            let mean = [s[0] / n_orders as f64, s[1] / n_orders as f64];
            let (class, p_yes) = super::postprocess::p_yes(&mean);
            Prediction {
                example_id: q.id.clone(),
                prediction: HATEFUL_MEMES_CLASSES[class].to_string(),
                score: Some(p_yes),
                extra: Some(
                    serde_json::json!({
                        "logprobs": mean,
                        "orders": n_orders,
                        "demos": demo_ids(inputs, &demos[r]),
                        "images": images_per_prompt[r],
                    })
                    .to_string(),
                ),
            }
        })
        .collect())
}
