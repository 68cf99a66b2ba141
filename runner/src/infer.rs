//! In-context generation with an experiment's model (`runner generate`): the backbones the
//! experiment names (presets resolve to their pretrain jobs' outputs), the variant's trained
//! weights when its training is done (else `model.checkpoint`, else the untrained model), and an
//! interleaved `<image>` prompt.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::{Loaded, Variant};
use crate::exec::backbone::{job_dir, model_dirs};
use crate::plan::{JobKind, Plan};
use crate::train::assemble::{ModelSpec, load_model};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// One image per `<image>` token of the prompt, in order.
    pub images: Vec<PathBuf>,
    /// The prompt, e.g. `<image>Output:`.
    pub prompt: String,
    /// New-token budget.
    pub max_new_tokens: usize,
    /// 1 = greedy, more = beam search.
    pub num_beams: usize,
}

/// A generation with its log-probabilities (`runner generate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    /// Token ids of the prompt.
    pub prompt_ids: Vec<u32>,
    /// Log-prob of each prompt token after the first, given its prefix.
    pub prompt_logprobs: Vec<f32>,
    /// Generated token ids (ending with `<|endofchunk|>` when generation stopped on it).
    pub output_ids: Vec<u32>,
    /// Log-prob of each generated token.
    pub output_logprobs: Vec<f32>,
    /// The generated text, special tokens skipped.
    pub text: String,
    /// Which weights were used (trained weights file, checkpoint, or "untrained").
    pub weights: String,
}

/// The variant named `name` (or the first), with an error listing the variants otherwise.
pub fn pick_variant<'a>(loaded: &'a Loaded, name: Option<&str>) -> Result<&'a Variant> {
    match name {
        None => loaded
            .variants
            .first()
            .context("the experiment has no variant"),
        Some(n) => loaded
            .variants
            .iter()
            .find(|v| v.name == n)
            .with_context(|| {
                let names: Vec<&str> = loaded.variants.iter().map(|v| v.name.as_str()).collect();
                format!("no variant `{n}`; the experiment has: {}", names.join(", "))
            }),
    }
}

/// The model spec of a variant: its trained weights when available.
pub fn variant_model(
    plan: &Plan,
    variant: &Variant,
    runs_dir: &Path,
) -> Result<(ModelSpec, String)> {
    let exp = &variant.experiment;
    let train = plan
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::Train && j.variants.iter().any(|v| v == &variant.name));
    let (vision, language) = match train {
        Some(job) => model_dirs(runs_dir, &job.spec)?,
        None => {
            let pretrain = plan.jobs.iter().filter(|j| {
                j.kind == JobKind::Pretrain && j.variants.iter().any(|v| v == &variant.name)
            });
            let mut dirs = (
                PathBuf::from(&exp.model.vision),
                PathBuf::from(&exp.model.language),
            );
            for j in pretrain {
                match j.spec["inputs"]["backbone"].as_str() {
                    Some("vision") => {
                        dirs.0 = crate::pretrain::backbone_dir(runs_dir, &j.hash, "vision")
                    }
                    Some("language") => {
                        dirs.1 = crate::pretrain::backbone_dir(runs_dir, &j.hash, "language")
                    }
                    _ => {}
                }
            }
            dirs
        }
    };
    for (what, dir) in [("vision", &vision), ("language", &language)] {
        if !dir.is_dir() {
            bail!(
                "the {what} backbone {} does not exist yet: run `runner exec` on this experiment first \
                 (or point model.{what} at a directory)",
                dir.display()
            );
        }
    }
    let mut spec = ModelSpec::from_config(
        &exp.model,
        vision,
        language,
        model::flamingo::DEFAULT_INIT_SEED,
    );
    let trained =
        train.map(|j| job_dir(runs_dir, JobKind::Train, &j.hash).join("weights.safetensors"));
    let weights = match trained.filter(|p| p.is_file()) {
        Some(p) => {
            let s = p.display().to_string();
            spec.checkpoint = Some(p);
            s
        }
        None => match &spec.checkpoint {
            Some(c) => c.display().to_string(),
            None => "untrained (gates at zero: the language model alone)".to_string(),
        },
    };
    Ok((spec, weights))
}

/// Generates a continuation of the prompt with the variant's model.
pub fn generate(
    loaded: &Loaded,
    plan: &Plan,
    variant: Option<&str>,
    runs_dir: &Path,
    req: &GenerateRequest,
) -> Result<GenerateOutput> {
    let variant = pick_variant(loaded, variant)?;
    let (spec, weights) = variant_model(plan, variant, runs_dir)?;
    let device = crate::exec::device::device_from_name(&variant.experiment.device)?;
    let (model, tok, processor, _) = load_model(&spec, &device).context("loading the model")?;
    let n_media = req.prompt.matches("<image>").count();
    if n_media != req.images.len() {
        bail!(
            "the prompt has {n_media} <image> token(s) but {} --image file(s) were given",
            req.images.len()
        );
    }
    let pixels = req
        .images
        .iter()
        .map(|p| {
            processor
                .open(p, &device)
                .with_context(|| format!("image {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let pixels = processor.batch(&[pixels], &device)?;
    let ids = tok.encode(&req.prompt)?;
    let mut cfg = model::generate::GenerateConfig::open_flamingo(
        tok.eoc_id(),
        tok.pad_id(),
        req.max_new_tokens,
        req.num_beams.max(1),
    );
    cfg.prompt_logprobs = true;
    let batch = model::generate::PromptBatch::left_padded(
        std::slice::from_ref(&ids),
        tok.pad_id(),
        pixels,
    )?;
    let out = model::generate::generate(&model, &batch, &cfg)?
        .into_iter()
        .next()
        .context("generation returned nothing")?;
    let text = tok.decode(&out.tokens, true)?;
    Ok(GenerateOutput {
        prompt_ids: ids,
        prompt_logprobs: out.prompt_logprobs,
        output_ids: out.tokens,
        output_logprobs: out.token_logprobs,
        text,
        weights,
    })
}
