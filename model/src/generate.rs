//! KV-cache decoding with the semantics of HF `generate` as OpenFlamingo's eval calls it (spec
//! §1.8, §5.7): greedy search (`num_beams = 1`) and beam search (`BeamSearchScorer`, transformers
//! 4.33: `2 * num_beams` candidates per step, finished hypotheses kept per prompt, score
//! `sum_logprobs / len ** length_penalty`, `early_stopping=False` stop rule), batched prompts with
//! left padding, stop token `<|endofchunk|>`. Vision features are computed once per prompt; the
//! prompt is prefilled once and its cache copied to the beams. Also rank scoring (spec §5.10):
//! log-likelihood of candidate continuations after a shared context, reusing its KV cache.

use candle_core::{D, DType, IndexOp, Tensor};

use crate::cross_attn::{media_counts, text_time_cached, text_time_from_ids};
use crate::error::{ModelError, Result};
use crate::flamingo::{Flamingo, MediaContext};
use crate::lm::{AttnCtx, KvCache, PositionRule};

/// Decoding settings (OpenFlamingo eval: 3 beams, `length_penalty = 0`, eos = `<|endofchunk|>`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Maximum number of generated tokens.
    pub max_new_tokens: usize,
    /// The end-of-sequence token is forbidden before this many new tokens.
    pub min_new_tokens: usize,
    /// 1 = greedy search; more = beam search.
    pub num_beams: usize,
    /// Exponent of the hypothesis length dividing its summed log-probs (beam search).
    pub length_penalty: f64,
    /// The stop token.
    pub eos_token_id: u32,
    /// Token fed for finished sequences (not part of any output).
    pub pad_token_id: u32,
    /// Also return the log-prob of each prompt token given its prefix.
    pub prompt_logprobs: bool,
}

impl GenerateConfig {
    /// OpenFlamingo's evaluation settings for a given budget and beam count.
    pub fn open_flamingo(
        eoc_token_id: u32,
        pad_token_id: u32,
        max_new_tokens: usize,
        num_beams: usize,
    ) -> Self {
        Self {
            max_new_tokens,
            min_new_tokens: 0,
            num_beams,
            length_penalty: 0.0,
            eos_token_id: eoc_token_id,
            pad_token_id,
            prompt_logprobs: false,
        }
    }
}

/// A batch of prompts, left padded, with their images.
#[derive(Debug, Clone)]
pub struct PromptBatch {
    rows: Vec<Vec<u32>>,
    mask: Vec<Vec<u32>>,
    pixels: Tensor,
}

impl PromptBatch {
    /// Left-pads `prompts` with `pad_id`; `pixels` is `(B, T_img, 3, S, S)` (zero images pad
    /// examples with fewer images).
    pub fn left_padded(prompts: &[Vec<u32>], pad_id: u32, pixels: Tensor) -> Result<Self> {
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if len == 0 {
            return Err(ModelError::Input("empty prompt batch".into()));
        }
        let rows = prompts
            .iter()
            .map(|p| {
                std::iter::repeat_n(pad_id, len - p.len())
                    .chain(p.iter().copied())
                    .collect()
            })
            .collect();
        let mask = prompts
            .iter()
            .map(|p| {
                std::iter::repeat_n(0, len - p.len())
                    .chain(std::iter::repeat_n(1, p.len()))
                    .collect()
            })
            .collect();
        Self::from_padded(rows, mask, pixels)
    }

    /// A batch already padded by a tokenizer (ids and 0/1 mask rows of equal length).
    pub fn from_padded(rows: Vec<Vec<u32>>, mask: Vec<Vec<u32>>, pixels: Tensor) -> Result<Self> {
        let len = rows.first().map_or(0, Vec::len);
        if rows.is_empty() || len == 0 {
            return Err(ModelError::Input("empty prompt batch".into()));
        }
        if rows.len() != mask.len() || rows.iter().chain(&mask).any(|r| r.len() != len) {
            return Err(ModelError::Input(
                "prompt ids and mask rows must all have the same length".into(),
            ));
        }
        if pixels.rank() != 5 || pixels.dim(0)? != rows.len() {
            return Err(ModelError::Input(format!(
                "pixels must be (B={}, T_img, 3, S, S), got {:?}",
                rows.len(),
                pixels.dims()
            )));
        }
        Ok(Self { rows, mask, pixels })
    }

    /// A batch from a tokenizer encoding (left padded, as OpenFlamingo's eval tokenizes).
    pub fn from_encoding(
        encoding: &crate::tokenizer::BatchEncoding,
        pixels: Tensor,
    ) -> Result<Self> {
        Self::from_padded(
            encoding.ids.clone(),
            encoding.attention_mask.clone(),
            pixels,
        )
    }

    /// The padded prompt rows.
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Padded prompt length.
    pub fn width(&self) -> usize {
        self.rows[0].len()
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens, ending with the stop token when generation stopped on it.
    pub tokens: Vec<u32>,
    /// Log-prob of each new token when it was chosen.
    pub token_logprobs: Vec<f32>,
    /// Beam score (summed log-probs / length penalty) or, for greedy search, summed log-probs.
    pub score: f64,
    /// Log-prob of each real prompt token after the first given its prefix (when asked for).
    pub prompt_logprobs: Vec<f32>,
    /// Whether any decoding step of this `generate` call (any row or beam) fed `<image>` back into
    /// the model. The reference then re-conditions every row's media locations, so outputs can
    /// depend on the batch; this crate reproduces that.
    pub fed_media_token: bool,
}

struct Prefill {
    media: MediaContext,
    counts: Vec<u32>,
    cache: KvCache,
    /// (B, V) log-probs of the next token.
    next_logprobs: Tensor,
    prompt_logprobs: Vec<Vec<f32>>,
}

fn mask_tensor(rows: &[Vec<u32>], device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let (b, l) = (rows.len(), rows.first().map_or(0, Vec::len));
    Tensor::from_vec(rows.concat(), (b, l), device)
}

fn prefill(
    model: &Flamingo,
    batch: &PromptBatch,
    positions: PositionRule,
    want_prompt: bool,
) -> Result<Prefill> {
    let dev = model.device().clone();
    let media = model.encode_media_inference(&batch.pixels)?;
    let media = model.media_context(&media)?;
    model.check_media_counts(&batch.rows, media.num_media())?;
    let media_id = model.config().media_token_id;
    let mask = media.mask(&text_time_from_ids(&batch.rows, media_id), &dev)?;
    let ids = mask_tensor(&batch.rows, &dev)?;
    let attn = mask_tensor(&batch.mask, &dev)?;
    let ctx = match positions {
        PositionRule::FromMask => AttnCtx::new(attn, 0),
        PositionRule::Sequential => AttnCtx::sequential(attn, 0),
    };
    let mut cache = model.lm().new_cache();
    let hidden = model.infer_hidden(&ids, &media, &mask, &ctx, Some(&mut cache))?;
    let l = batch.width();
    // (B, D) rather than (B, 1, D): one matmul reads the output table once for all rows.
    let last = model.logits(&hidden.i((.., l - 1))?.contiguous()?)?;
    let next_logprobs = candle_nn::ops::log_softmax(&last.to_dtype(DType::F32)?, D::Minus1)?;
    let mut prompt_logprobs = vec![Vec::new(); batch.len()];
    if want_prompt {
        for (b, out) in prompt_logprobs.iter_mut().enumerate() {
            let start = batch.mask[b].iter().position(|&m| m != 0).unwrap_or(l);
            if start + 1 >= l {
                continue;
            }
            let h = hidden.i((b, start..l - 1))?;
            let lp =
                candle_nn::ops::log_softmax(&model.logits(&h)?.to_dtype(DType::F32)?, D::Minus1)?;
            let lp = lp.to_vec2::<f32>()?;
            *out = (start + 1..l)
                .zip(lp)
                .map(|(t, row)| row[batch.rows[b][t] as usize])
                .collect();
        }
    }
    Ok(Prefill {
        counts: media_counts(&batch.rows, media_id),
        media,
        cache,
        next_logprobs,
        prompt_logprobs,
    })
}

/// The media locations the reference's Flamingo layers are conditioned on during decoding, as
/// per-row `<image>` counts. They are indexed by batch row and, as in the reference, not reordered
/// when beams are: HF reorders only the KV cache.
struct MediaState {
    counts: Vec<u32>,
    media_token: u32,
    fed_media_token: bool,
}

impl MediaState {
    /// Per-position image indices for one step feeding `tokens` (one per row). Without `<image>`
    /// in the step, every row attends to the last image of its conditioned locations (cached
    /// media). If any row feeds `<image>`, the reference re-conditions all rows on this step's
    /// tokens alone: a fed `<image>` attends to image 1, the other rows to nothing, and later steps
    /// count the images of this step.
    fn step(&mut self, tokens: &[u32]) -> Vec<Vec<u32>> {
        if tokens.contains(&self.media_token) {
            self.fed_media_token = true;
            self.counts = tokens
                .iter()
                .map(|&t| u32::from(t == self.media_token))
                .collect();
            self.counts.iter().map(|&c| vec![c]).collect()
        } else {
            text_time_cached(&self.counts, 1)
        }
    }
}

/// One decoding step: feeds `tokens` (one per row) and returns `(rows, V)` log-probs.
fn step(
    model: &Flamingo,
    tokens: &[u32],
    media: &MediaContext,
    state: &mut MediaState,
    mask_rows: &[Vec<u32>],
    cache: &mut KvCache,
) -> Result<Tensor> {
    let dev = model.device();
    let past = cache.past_len();
    let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), dev)?;
    let ctx = AttnCtx::new(mask_tensor(mask_rows, dev)?, past);
    let mask = media.mask(&state.step(tokens), dev)?;
    let hidden = model.infer_hidden(&ids, media, &mask, &ctx, Some(cache))?;
    let logits = model.logits(&hidden.squeeze(1)?)?;
    Ok(candle_nn::ops::log_softmax(
        &logits.to_dtype(DType::F32)?,
        D::Minus1,
    )?)
}

/// Errors unless every id is a row of the model's vocabulary (no out-of-range indexing later).
fn check_ids<'a>(
    model: &Flamingo,
    what: &str,
    ids: impl IntoIterator<Item = &'a u32>,
) -> Result<()> {
    let vocab = model.lm().vocab_len();
    for &id in ids {
        if id as usize >= vocab {
            return Err(ModelError::Input(format!(
                "{what}: token id {id} is outside the vocabulary of {vocab} rows"
            )));
        }
    }
    Ok(())
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Generates a continuation for every prompt of `batch`.
pub fn generate(
    model: &Flamingo,
    batch: &PromptBatch,
    cfg: &GenerateConfig,
) -> Result<Vec<Generation>> {
    if cfg.num_beams == 0 {
        return Err(ModelError::Input("num_beams must be at least 1".into()));
    }
    check_ids(model, "prompt", batch.rows.iter().flatten())?;
    check_ids(
        model,
        "eos/pad token",
        [&cfg.eos_token_id, &cfg.pad_token_id],
    )?;
    let pre = prefill(model, batch, PositionRule::FromMask, cfg.prompt_logprobs)?;
    let mut out = if cfg.num_beams == 1 {
        greedy(
            model,
            batch,
            cfg,
            pre.media,
            pre.counts,
            pre.cache,
            pre.next_logprobs,
        )?
    } else {
        beam_search(
            model,
            batch,
            cfg,
            pre.media,
            pre.counts,
            pre.cache,
            pre.next_logprobs,
        )?
    };
    for (g, p) in out.iter_mut().zip(pre.prompt_logprobs) {
        g.prompt_logprobs = p;
    }
    Ok(out)
}

fn greedy(
    model: &Flamingo,
    batch: &PromptBatch,
    cfg: &GenerateConfig,
    media: MediaContext,
    counts: Vec<u32>,
    mut cache: KvCache,
    first: Tensor,
) -> Result<Vec<Generation>> {
    let b = batch.len();
    let mut mask_rows = batch.mask.clone();
    let mut state = MediaState {
        counts,
        media_token: model.config().media_token_id,
        fed_media_token: false,
    };
    let mut lp = first.to_vec2::<f32>()?;
    let mut done = vec![false; b];
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            tokens: vec![],
            token_logprobs: vec![],
            score: 0.0,
            prompt_logprobs: vec![],
            fed_media_token: false,
        })
        .collect();
    for n in 0..cfg.max_new_tokens {
        let mut tokens = Vec::with_capacity(b);
        for (r, row) in lp.iter_mut().enumerate() {
            if n < cfg.min_new_tokens {
                row[cfg.eos_token_id as usize] = f32::NEG_INFINITY;
            }
            if done[r] {
                tokens.push(cfg.pad_token_id);
                continue;
            }
            let t = argmax(row) as u32;
            out[r].tokens.push(t);
            out[r].token_logprobs.push(row[t as usize]);
            out[r].score += row[t as usize] as f64;
            done[r] = t == cfg.eos_token_id;
            tokens.push(t);
        }
        if done.iter().all(|&d| d) || n + 1 == cfg.max_new_tokens {
            break;
        }
        for m in &mut mask_rows {
            m.push(1);
        }
        lp = step(model, &tokens, &media, &mut state, &mask_rows, &mut cache)?.to_vec2::<f32>()?;
    }
    for g in &mut out {
        g.fed_media_token = state.fed_media_token;
    }
    Ok(out)
}

/// A finished hypothesis of one prompt.
#[derive(Debug, Clone)]
struct Hyp {
    score: f64,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    eos: bool,
}

/// HF `BeamHypotheses` (transformers 4.33).
struct BeamHyps {
    num_beams: usize,
    length_penalty: f64,
    beams: Vec<Hyp>,
    worst_score: f64,
}

impl BeamHyps {
    fn new(num_beams: usize, length_penalty: f64) -> Self {
        Self {
            num_beams,
            length_penalty,
            beams: vec![],
            worst_score: 1e9,
        }
    }

    /// `len` is the full sequence length (padded prompt + generated, eos excluded) as HF uses it.
    fn add(
        &mut self,
        sum_logprobs: f64,
        len: usize,
        tokens: Vec<u32>,
        logprobs: Vec<f32>,
        eos: bool,
    ) {
        let score = sum_logprobs / (len as f64).powf(self.length_penalty);
        if self.beams.len() < self.num_beams || score > self.worst_score {
            self.beams.push(Hyp {
                score,
                tokens,
                logprobs,
                eos,
            });
            if self.beams.len() > self.num_beams {
                let mut sorted: Vec<(f64, usize)> = self
                    .beams
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.score, i))
                    .collect();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(sorted[0].1);
                self.worst_score = sorted[1].0;
            } else {
                self.worst_score = self.worst_score.min(score);
            }
        }
    }

    fn is_done(&self, best_sum_logprobs: f64, cur_len: usize) -> bool {
        if self.beams.len() < self.num_beams {
            return false;
        }
        self.worst_score >= best_sum_logprobs / (cur_len as f64).powf(self.length_penalty)
    }

    /// The best hypothesis (among equal scores, the one added last, as Python's stable sort + pop).
    fn best(&self) -> Option<&Hyp> {
        let mut best: Option<&Hyp> = None;
        for h in &self.beams {
            if best.is_none_or(|b| h.score >= b.score) {
                best = Some(h);
            }
        }
        best
    }
}

/// The `k` best `(score, flat index)` pairs, highest first; ties prefer the lower index.
fn top_k(scores: impl Iterator<Item = (f32, usize)>, k: usize) -> Vec<(f32, usize)> {
    let mut top: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (s, i) in scores {
        if top.len() == k && s.partial_cmp(&top[k - 1].0) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let pos = top.iter().position(|&(ts, _)| s > ts).unwrap_or(top.len());
        top.insert(pos, (s, i));
        top.truncate(k);
    }
    top
}

fn beam_search(
    model: &Flamingo,
    batch: &PromptBatch,
    cfg: &GenerateConfig,
    media: MediaContext,
    counts: Vec<u32>,
    mut cache: KvCache,
    first: Tensor,
) -> Result<Vec<Generation>> {
    let dev = model.device().clone();
    let b = batch.len();
    let nb = cfg.num_beams;
    let bn = b * nb;
    // Expand prompts to beams (HF `repeat_interleave`), reusing the prefilled cache and media.
    let rep: Vec<u32> = (0..b)
        .flat_map(|r| std::iter::repeat_n(r as u32, nb))
        .collect();
    let rep_t = Tensor::new(rep.as_slice(), &dev)?;
    cache.reorder(&rep_t)?;
    let media = media.index_rows(&rep_t)?;
    let mut state = MediaState {
        counts: rep.iter().map(|&r| counts[r as usize]).collect(),
        media_token: model.config().media_token_id,
        fed_media_token: false,
    };
    let mut mask_rows: Vec<Vec<u32>> = rep
        .iter()
        .map(|&r| batch.mask[r as usize].clone())
        .collect();
    let first = first.index_select(&rep_t, 0)?;
    let vocab = first.dim(1)?;
    let mut lp: Vec<f32> = first.flatten_all()?.to_vec1::<f32>()?;

    let mut beam_scores: Vec<f32> = (0..bn)
        .map(|i| if i % nb == 0 { 0.0 } else { -1e9 })
        .collect();
    let mut beam_tokens: Vec<Vec<u32>> = vec![vec![]; bn];
    let mut beam_lps: Vec<Vec<f32>> = vec![vec![]; bn];
    let mut hyps: Vec<BeamHyps> = (0..b)
        .map(|_| BeamHyps::new(nb, cfg.length_penalty))
        .collect();
    let mut done = vec![false; b];
    let mut cur_len = batch.width();
    let eos = cfg.eos_token_id as usize;

    for n in 0..cfg.max_new_tokens {
        if n < cfg.min_new_tokens {
            for r in 0..bn {
                lp[r * vocab + eos] = f32::NEG_INFINITY;
            }
        }
        let mut next_scores = vec![0f32; bn];
        let mut next_tokens = vec![cfg.pad_token_id; bn];
        let mut next_indices = vec![0usize; bn];
        for bi in 0..b {
            if done[bi] {
                // HF pads finished prompts: score 0, pad token, beam index 0.
                continue;
            }
            let base = bi * nb;
            let cands = top_k(
                (0..nb).flat_map(|j| {
                    let row = &lp[(base + j) * vocab..(base + j + 1) * vocab];
                    let bs = beam_scores[base + j];
                    row.iter()
                        .enumerate()
                        .map(move |(t, &v)| (v + bs, j * vocab + t))
                }),
                2 * nb,
            );
            let mut filled = 0;
            for (rank, &(score, flat)) in cands.iter().enumerate() {
                let (j, tok) = (flat / vocab, flat % vocab);
                let src = base + j;
                if tok == eos {
                    if rank >= nb {
                        continue;
                    }
                    let mut lps = beam_lps[src].clone();
                    lps.push(lp[src * vocab + tok]);
                    hyps[bi].add(score as f64, cur_len, beam_tokens[src].clone(), lps, true);
                } else {
                    next_scores[base + filled] = score;
                    next_tokens[base + filled] = tok as u32;
                    next_indices[base + filled] = src;
                    filled += 1;
                }
                if filled == nb {
                    break;
                }
            }
            if filled < nb {
                return Err(ModelError::Input(format!(
                    "beam search: fewer than {nb} non-stop candidates (vocabulary too small?)"
                )));
            }
            let best = cands.first().map_or(f64::NEG_INFINITY, |c| c.0 as f64);
            done[bi] = hyps[bi].is_done(best, cur_len);
        }
        // Reorder the beams and append the chosen tokens.
        let mut new_tokens = Vec::with_capacity(bn);
        let mut new_lps = Vec::with_capacity(bn);
        for i in 0..bn {
            let src = next_indices[i];
            let mut t = beam_tokens[src].clone();
            t.push(next_tokens[i]);
            new_tokens.push(t);
            let mut l = beam_lps[src].clone();
            l.push(lp[src * vocab + next_tokens[i] as usize]);
            new_lps.push(l);
        }
        beam_tokens = new_tokens;
        beam_lps = new_lps;
        beam_scores = next_scores;
        cur_len += 1;
        if done.iter().all(|&d| d) || n + 1 == cfg.max_new_tokens {
            break;
        }
        let idx: Vec<u32> = next_indices.iter().map(|&i| i as u32).collect();
        cache.reorder(&Tensor::new(idx.as_slice(), &dev)?)?;
        for m in &mut mask_rows {
            m.push(1);
        }
        lp = step(
            model,
            &next_tokens,
            &media,
            &mut state,
            &mask_rows,
            &mut cache,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
    }
    // Finalize: open beams of unfinished prompts join the hypotheses.
    let mut out = Vec::with_capacity(b);
    for bi in 0..b {
        if !done[bi] {
            for j in 0..nb {
                let i = bi * nb + j;
                hyps[bi].add(
                    beam_scores[i] as f64,
                    cur_len,
                    beam_tokens[i].clone(),
                    beam_lps[i].clone(),
                    false,
                );
            }
        }
        let best = hyps[bi]
            .best()
            .ok_or_else(|| ModelError::Input("beam search produced no hypothesis".into()))?;
        let mut tokens = best.tokens.clone();
        if best.eos {
            tokens.push(cfg.eos_token_id);
        }
        out.push(Generation {
            tokens,
            token_logprobs: best.logprobs.clone(),
            score: best.score,
            prompt_logprobs: vec![],
            fed_media_token: state.fed_media_token,
        });
    }
    Ok(out)
}

/// Options of [`rank_scores_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankOptions {
    /// Mean instead of sum of the candidate's token log-probs (`normalize_length`).
    pub normalize_length: bool,
    /// Reproduce LMs whose forward writes the extended KV cache back into the list it was given
    /// (the MosaicGPT remote code of MPT-1B, used by OpenFlamingo-3B): every candidate after the
    /// first is then scored after the previous candidates' tokens, except its first token, which
    /// is still predicted from the context alone.
    pub shared_cache: bool,
}

/// Rank scoring (OpenFlamingo `get_rank_classifications` with caching): the context is run once;
/// each candidate's tokens are then scored after it, reusing the context's KV cache. Returns
/// `[prompt][candidate]` summed (or, with `normalize_length`, mean) token log-probs.
///
/// As the reference, the context pass uses plain-forward positions and the candidate pass
/// attends to every cached position (its attention mask is all ones), and candidate tokens attend
/// to the last image of their prompt (cached-media rule).
pub fn rank_scores(
    model: &Flamingo,
    batch: &PromptBatch,
    candidates: &[Vec<u32>],
    normalize_length: bool,
) -> Result<Vec<Vec<f64>>> {
    let opts = RankOptions {
        normalize_length,
        shared_cache: false,
    };
    rank_scores_with(model, batch, candidates, &opts)
}

/// [`rank_scores`] with [`RankOptions`].
pub fn rank_scores_with(
    model: &Flamingo,
    batch: &PromptBatch,
    candidates: &[Vec<u32>],
    opts: &RankOptions,
) -> Result<Vec<Vec<f64>>> {
    let dev = model.device().clone();
    check_ids(model, "context", batch.rows.iter().flatten())?;
    check_ids(model, "candidate", candidates.iter().flatten())?;
    let pre = prefill(model, batch, PositionRule::Sequential, false)?;
    let b = batch.len();
    let first = pre.next_logprobs.to_vec2::<f32>()?;
    let mut shared = pre.cache.clone();
    let mut scores = vec![Vec::with_capacity(candidates.len()); b];
    for cand in candidates {
        if cand.is_empty() {
            return Err(ModelError::Input("rank scoring: empty candidate".into()));
        }
        let n = cand.len();
        let mut lps: Vec<Vec<f32>> = (0..b).map(|r| vec![first[r][cand[0] as usize]]).collect();
        // The shared cache keeps every fed token (the reference feeds all n, one at a time).
        let feed = if opts.shared_cache {
            cand.as_slice()
        } else {
            &cand[..n - 1]
        };
        if !feed.is_empty() {
            let mut own = pre.cache.clone();
            let cache = if opts.shared_cache {
                &mut shared
            } else {
                &mut own
            };
            let past = cache.past_len();
            let t = feed.len();
            let ids = Tensor::new(feed, &dev)?.unsqueeze(0)?.repeat((b, 1))?;
            let ctx = AttnCtx::new(Tensor::ones((b, past + t), DType::U32, &dev)?, past);
            let mask = pre.media.mask(&text_time_cached(&pre.counts, t), &dev)?;
            let hidden = model.infer_hidden(&ids, &pre.media, &mask, &ctx, Some(cache))?;
            let lp = candle_nn::ops::log_softmax(
                &model.logits(&hidden)?.to_dtype(DType::F32)?,
                D::Minus1,
            )?;
            for (r, row_lps) in lps.iter_mut().enumerate() {
                let rows = lp.i(r)?.to_vec2::<f32>()?;
                for k in 0..n - 1 {
                    row_lps.push(rows[k][cand[k + 1] as usize]);
                }
            }
        }
        for (r, l) in lps.iter().enumerate() {
            let sum: f64 = l.iter().map(|&v| v as f64).sum();
            scores[r].push(if opts.normalize_length {
                sum / n as f64
            } else {
                sum
            });
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fed_image_token_reconditions_every_row() {
        let mut s = MediaState {
            counts: vec![2, 1, 3],
            media_token: 9,
            fed_media_token: false,
        };
        // No <image>: each row attends to the last image of its prompt.
        assert_eq!(s.step(&[4, 5, 6]), vec![vec![2], vec![1], vec![3]]);
        assert!(!s.fed_media_token);
        // Row 1 feeds <image>: it attends to image 1, the others to nothing (reference quirk).
        assert_eq!(s.step(&[4, 9, 6]), vec![vec![0], vec![1], vec![0]]);
        assert!(s.fed_media_token);
        // Later steps count this step's images only.
        assert_eq!(s.step(&[4, 5, 6]), vec![vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn beam_hypotheses_keep_the_best_and_stop_like_hf() {
        let mut h = BeamHyps::new(2, 0.0);
        h.add(-3.0, 5, vec![1], vec![-3.0], true);
        assert!(!h.is_done(-1.0, 5));
        h.add(-1.0, 5, vec![2], vec![-1.0], true);
        h.add(-2.0, 6, vec![3], vec![-2.0], false);
        assert_eq!(h.beams.len(), 2);
        assert_eq!(h.worst_score, -2.0);
        assert_eq!(h.best().map(|b| b.tokens.clone()), Some(vec![2]));
        // Done once the worst kept score beats the best still reachable.
        assert!(h.is_done(-2.5, 6));
        assert!(!h.is_done(-1.5, 6));
        assert_eq!(
            top_k([(1.0, 0), (3.0, 1), (2.0, 2), (3.0, 3)].into_iter(), 3),
            vec![(3.0, 1), (3.0, 3), (2.0, 2)]
        );
    }
}
