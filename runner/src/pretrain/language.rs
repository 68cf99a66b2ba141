//! Pretraining of the tiny language backbone: a byte-level BPE tokenizer trained on the world's
//! text corpus, then a small decoder ([`TinyDecoder`], OPT or MPT) trained by next-token prediction on the
//! same corpus. The result is an HF directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `tokenizer_config.json`) that [`DecoderLm::load`] and
//! [`model::FlamingoTokenizer::from_dir`] read like any downloaded model; it is reloaded once to
//! check that it computes the trained logits.

use std::path::Path;
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use model::{AttnCtx, DecoderLm, SpecialEmbeddingMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::decoder::{DecoderShape, TinyDecoder};
use super::tokenizer::{EOS, train_bpe};
use super::{
    LossLog, PretrainError, PretrainSummary, StepOutcome, StepReport, max_abs_diff, optimizer_step,
};
use crate::config::schema::PretrainLanguage;
use crate::data::synth::corpus::CORPUS_PATH;
use crate::train::adamw::{AdamW, AdamWConfig, Param};

/// Weight decay of matrices (biases, LayerNorms and embedding tables are exempt).
const WEIGHT_DECAY: f64 = 0.01;
/// Sequences compared between the trained model and the reloaded one.
const CHECK_ROWS: usize = 2;
/// Tolerance of that comparison (logits).
const RELOAD_TOLERANCE: f64 = 1e-3;

fn check(cfg: &PretrainLanguage) -> Result<(), PretrainError> {
    for (key, v) in [
        ("vocab_size", cfg.vocab_size),
        ("hidden_size", cfg.hidden_size),
        ("layers", cfg.layers),
        ("heads", cfg.heads),
        ("max_positions", cfg.max_positions),
        ("steps", cfg.steps),
        ("batch_size", cfg.batch_size),
        ("seq_len", cfg.seq_len),
        ("long_seq_len", cfg.long_seq_len.unwrap_or(1)),
        ("long_every", cfg.long_every.unwrap_or(1)),
    ] {
        if v < 1 {
            return Err(PretrainError::Config {
                section: "language",
                message: format!("`{key}` must be at least 1, got {v}"),
            });
        }
    }
    for (key, v) in [
        ("seq_len", cfg.seq_len),
        ("long_seq_len", cfg.long_seq_len.unwrap_or(1)),
    ] {
        if v > cfg.max_positions {
            return Err(PretrainError::Config {
                section: "language",
                message: format!("`{key}` {v} exceeds `max_positions` {}", cfg.max_positions),
            });
        }
    }
    Ok(())
}

/// The tokenized corpus: one token stream (every line followed by `<|endoftext|>`) and the offsets
/// where lines start; training rows begin at line starts, as prompts do.
pub struct TokenStream {
    /// All tokens.
    pub ids: Vec<u32>,
    /// Offsets of line starts in `ids`.
    pub starts: Vec<usize>,
}

impl TokenStream {
    /// Tokenizes `corpus` (non-empty lines) with `tokenizer`.
    pub fn from_corpus(
        corpus: &Path,
        tokenizer: &tokenizers::Tokenizer,
        eos_id: u32,
    ) -> Result<Self, PretrainError> {
        let text = std::fs::read_to_string(corpus).map_err(|e| PretrainError::io(corpus, e))?;
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let enc = tokenizer
                .encode(line, false)
                .map_err(|e| PretrainError::data(corpus, format!("line {}: {e}", n + 1)))?;
            starts.push(ids.len());
            ids.extend_from_slice(enc.get_ids());
            ids.push(eos_id);
        }
        if starts.is_empty() {
            return Err(PretrainError::data(corpus, "the corpus has no text"));
        }
        Ok(TokenStream { ids, starts })
    }

    /// `len` tokens from offset `start`, wrapping around at the end of the stream.
    fn window(&self, start: usize, len: usize) -> impl Iterator<Item = u32> + '_ {
        let n = self.ids.len();
        (0..len).map(move |i| self.ids[(start + i) % n])
    }
}

/// A batch of `b` rows of `t + 1` tokens starting at random line starts: inputs `(b, t)` and
/// next-token targets `(b, t)`.
fn batch(
    stream: &TokenStream,
    rng: &mut ChaCha8Rng,
    b: usize,
    t: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut inputs = Vec::with_capacity(b * t);
    let mut targets = Vec::with_capacity(b * t);
    for _ in 0..b {
        let start = stream.starts[rng.random_range(0..stream.starts.len())];
        let row: Vec<u32> = stream.window(start, t + 1).collect();
        inputs.extend_from_slice(&row[..t]);
        targets.extend_from_slice(&row[1..]);
    }
    Ok((
        Tensor::from_vec(inputs, (b, t), device)?,
        Tensor::from_vec(targets, (b, t), device)?,
    ))
}

/// Mean next-token cross-entropy of `lm` on `ids` against `targets` (both `(B, T)`, no padding),
/// with positions starting at `position_offset`.
pub fn lm_loss(
    lm: &DecoderLm,
    ids: &Tensor,
    targets: &Tensor,
    position_offset: usize,
) -> candle_core::Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let ctx = AttnCtx::unpadded(b, t, 0, ids.device())?.with_position_offset(position_offset);
    let logits = lm.forward(ids, &ctx, None)?;
    let v = logits.dim(D::Minus1)?;
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.flatten_all()?)
}

/// Writes the tokenizer's HF side file naming its special tokens.
fn write_tokenizer_config(dir: &Path, max_positions: i64) -> Result<(), PretrainError> {
    let path = dir.join("tokenizer_config.json");
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "model_max_length": max_positions,
        "clean_up_tokenization_spaces": false,
    });
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| PretrainError::data(&path, e))?;
    std::fs::write(&path, text).map_err(|e| PretrainError::io(&path, e))
}

/// Trains the tokenizer and the decoder on the corpus of the world at `world` and writes the HF
/// directory `out`. `on_step` sees every step.
pub fn pretrain_language(
    cfg: &PretrainLanguage,
    world: &Path,
    out: &Path,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<PretrainSummary, PretrainError> {
    check(cfg)?;
    let started = Instant::now();
    let corpus = world.join(CORPUS_PATH);
    train_bpe(&[&corpus], cfg.vocab_size as usize, out)?;
    write_tokenizer_config(out, cfg.max_positions)?;
    let tok_path = out.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| PretrainError::data(&tok_path, e))?;
    let eos_id = tokenizer
        .token_to_id(EOS)
        .ok_or_else(|| PretrainError::data(&tok_path, format!("no `{EOS}` token")))?;
    let vocab = tokenizer.get_vocab_size(true);
    let stream = TokenStream::from_corpus(&corpus, &tokenizer, eos_id)?;

    let shape = DecoderShape::new(cfg, vocab);
    let model = TinyDecoder::new(shape, eos_id, cfg.seed, device, out)?;
    let parameters = model.vars.iter().map(|(_, v)| v.elem_count()).sum();
    let params: Vec<Param> = model
        .vars
        .iter()
        .map(|(name, var)| Param {
            weight_decay: if var.rank() >= 2 && name.contains(".layers.") {
                WEIGHT_DECAY
            } else {
                0.0
            },
            name: name.clone(),
            var: var.clone(),
        })
        .collect();
    let mut opt = AdamW::new(params, AdamWConfig::default())
        .map_err(PretrainError::tensor("creating the optimizer"))?;

    let steps = cfg.steps as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let prepare_seconds = started.elapsed().as_secs_f64();
    let mut log = LossLog::default();
    for step in 0..steps {
        let t0 = Instant::now();
        let what = format!("language pretraining step {}", step + 1);
        let (b, t) = cfg.step_shape(step);
        let (ids, targets) =
            batch(&stream, &mut rng, b, t, device).map_err(PretrainError::tensor(what.clone()))?;
        // Half the windows start at position 0, the others anywhere, so that positions past
        // `seq_len` are trained too: few-shot prompts run to hundreds of tokens.
        let offset = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(0..=(cfg.max_positions as usize).saturating_sub(t))
        };
        let loss = lm_loss(&model.lm, &ids, &targets, offset)
            .map_err(PretrainError::tensor(what.clone()))?;
        let StepOutcome {
            loss,
            lr,
            grad_norm,
        } = optimizer_step(&mut opt, &loss, cfg.lr, step, steps)
            .map_err(PretrainError::tensor(what))?;
        log.push(loss);
        on_step(&StepReport {
            step: step + 1,
            steps,
            loss,
            lr,
            grad_norm,
            samples_per_s: b as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        });
    }

    let train_seconds = started.elapsed().as_secs_f64() - prepare_seconds;
    model.save(out)?;
    let (ids, _) = batch(&stream, &mut rng, CHECK_ROWS, cfg.seq_len as usize, device)
        .map_err(PretrainError::tensor("a reload check batch"))?;
    let diff = verify_reload(&model.lm, &ids, out, device)?;
    Ok(PretrainSummary {
        backbone: "language",
        steps,
        first_loss: log.first(),
        final_loss: log.last_tenth(),
        examples: stream.starts.len(),
        parameters,
        prepare_seconds,
        train_seconds,
        seconds: started.elapsed().as_secs_f64(),
        reload_max_abs_diff: diff,
    })
}

/// Loads `dir` through [`DecoderLm::load`] and compares its logits on `ids` with `trained`'s.
pub fn verify_reload(
    trained: &DecoderLm,
    ids: &Tensor,
    dir: &Path,
    device: &Device,
) -> Result<f64, PretrainError> {
    let loaded = DecoderLm::load(
        dir,
        trained.vocab_len(),
        SpecialEmbeddingMode::Frozen,
        &[],
        device,
    )?;
    let what = "comparing the saved language model";
    let logits = |lm: &DecoderLm| -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        lm.forward(ids, &AttnCtx::unpadded(b, t, 0, device)?, None)
    };
    let a = logits(trained).map_err(PretrainError::tensor(what))?;
    let l = logits(&loaded).map_err(PretrainError::tensor(what))?;
    let diff = max_abs_diff(&a, &l).map_err(PretrainError::tensor(what))?;
    if diff.is_nan() || diff > RELOAD_TOLERANCE {
        return Err(PretrainError::Mismatch {
            path: dir.to_path_buf(),
            message: format!("logits differ by up to {diff:e}"),
        });
    }
    Ok(diff)
}
