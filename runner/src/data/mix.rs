//! The training data mix: one batch iterator per `[[train.data]]` source, producing tokenized,
//! masked, padded batches with their images.
//!
//! # Use (for the trainer)
//! ```text
//! let transform = ImageTransform::from_processor(processor);          // CLIP preprocessing
//! let mut mix = DataMix::new(&train.data, train.seed, base_dir, tokenizer, transform)?;
//! if let Some(saved) = checkpoint.data_state { mix.restore(&saved)?; } // exact resume
//! loop {
//!     for batch in mix.next_step()? { /* forward batch, loss * batch.loss_weight, backward */ }
//!     ...; checkpoint.data_state = Some(mix.state());                  // serde (JSON)
//!     record(mix.skip_counts());                                        // per source, per reason
//! }
//! ```
//! Each call of [`DataMix::next_step`] returns one batch per source, in configuration order,
//! each with that source's batch size. All tensors are on the CPU: move them to the device.
//!
//! # Determinism
//! A source's stream is seeded from the training seed and the source's index; every random
//! decision (shard order, shuffle buffer, single-image rejection, flips) is a pure function of
//! that seed and a counter held in [`SourceState`]. `state()` between steps and `restore()` into
//! a freshly built mix continue with exactly the batches the uninterrupted mix would produce.
//!
//! # Skips
//! Corrupt samples and samples rejected by the layout rules are skipped and counted per reason
//! ([`SkipCounts`]); they never fail the job. Failing a job: a shard file that cannot be opened
//! ([`DataError::ShardOpen`], naming the file), shards without any sample, or a source whose last
//! [`SourceBatcher::max_consecutive_skips`] samples were all skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use model::FlamingoTokenizer;
use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::images::ImageTransform;
use super::interleaved::{InterleavedOptions, prepare_interleaved};
use super::labels::{MaskRule, SpecialIds, TokenSpan, labels, mask_spans};
use super::pairs::prepare_pair;
use super::prepared::{PrepareContext, Prepared};
use super::seeded::{self, Purpose};
use super::sequences::prepare_sequence;
use super::shards::expand_braces;
use super::skip::{SkipCounts, SkipReason};
use super::webdataset::{SampleStream, StreamConfig, StreamState};
use crate::config::schema::{DataSource, SourceKind};

/// Default consecutive skips after which a source is considered broken.
pub const DEFAULT_MAX_CONSECUTIVE_SKIPS: u64 = 10_000;

/// One micro-batch of one source.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Source name (`pairs`, `interleaved`, `sequences`; `kind_i` if a kind appears twice).
    pub source: String,
    /// The source's layout.
    pub kind: SourceKind,
    /// The source's loss weight.
    pub loss_weight: f64,
    /// `(B, T)` u32 token ids, right-padded to the batch's longest row.
    pub input_ids: Tensor,
    /// `(B, T)` u32: 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `(B, T)` i64 labels with -100 on masked positions (spec §4.4; [`super::labels`]).
    pub labels: Tensor,
    /// `(B, N, 3, S, S)` f32 images, N = the most images of a row (at most 1 for pairs and
    /// `max_images` otherwise); slots past a sample's images are zero. The k-th image of a row is
    /// the image of its k-th `<image>`.
    /// OpenFlamingo's `(B, T, F, C, H, W)` vision input is `images.unsqueeze(2)` (F = 1).
    pub images: Tensor,
    /// Real (non-padding) images per row.
    pub image_counts: Vec<usize>,
    /// Sample keys per row.
    pub keys: Vec<String>,
    /// Non-padding tokens in the batch (for tokens/s).
    pub tokens: usize,
}

/// Everything needed to rebuild a source's position exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Source name, checked on restore.
    pub source: String,
    /// The sample stream.
    pub stream: StreamState,
    /// Batches produced so far.
    pub batches: u64,
    /// Skips so far.
    pub skips: SkipCounts,
}

/// The data position of a whole mix: save it in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixState {
    /// Per source, in configuration order.
    pub sources: Vec<SourceState>,
}

/// A source's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Name used in batches, metrics and errors.
    pub name: String,
    /// Layout.
    pub kind: SourceKind,
    /// Shards and shuffling.
    pub stream: StreamConfig,
    /// Samples per batch.
    pub batch_size: usize,
    /// Token budget per sample.
    pub max_tokens: usize,
    /// Interleaved/sequence rules (ignored for pairs).
    pub rules: InterleavedOptions,
    /// Loss weight.
    pub loss_weight: f64,
    /// `[start, end]` markers of text that gets no loss (`no_loss_spans`).
    pub no_loss_spans: Vec<[String; 2]>,
}

fn positive(name: &str, what: &str, v: i64) -> Result<usize, DataError> {
    usize::try_from(v)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| DataError::Config {
            source_name: name.to_string(),
            message: format!("`{what}` must be positive, got {v}"),
        })
}

/// Checks `no_loss_spans`: two non-empty markers each.
fn no_loss_spans(name: &str, spans: &[[String; 2]]) -> Result<Vec<[String; 2]>, DataError> {
    for (i, span) in spans.iter().enumerate() {
        if span.iter().any(|m| m.is_empty()) {
            return Err(DataError::Config {
                source_name: name.to_string(),
                message: format!("`no_loss_spans[{i}]` has an empty marker: {span:?}"),
            });
        }
    }
    Ok(spans.to_vec())
}

impl SourceSpec {
    /// Resolves `[[train.data]]` entry `index` of `all`: its name, shard files (relative paths
    /// are taken from `base_dir`), default token budget (32 pairs / 256 otherwise) and a
    /// per-source seed derived from `seed`.
    pub fn from_config(
        all: &[DataSource],
        index: usize,
        seed: u64,
        base_dir: &Path,
    ) -> Result<Self, DataError> {
        let src = all.get(index).ok_or_else(|| DataError::Config {
            source_name: format!("#{index}"),
            message: format!("there are only {} data sources", all.len()),
        })?;
        let kind_name = kind_name(src.kind);
        let name = if all.iter().filter(|s| s.kind == src.kind).count() > 1 {
            format!("{kind_name}_{index}")
        } else {
            kind_name.to_string()
        };
        let pattern_err = |message: String| DataError::Pattern {
            source_name: name.clone(),
            pattern: src.shards.clone(),
            message,
        };
        let shards: Vec<PathBuf> = expand_braces(&src.shards)
            .map_err(pattern_err)?
            .into_iter()
            .map(|s| {
                let p = PathBuf::from(s);
                if p.is_absolute() { p } else { base_dir.join(p) }
            })
            .collect();
        let default_tokens = if src.kind == SourceKind::Pairs {
            32
        } else {
            256
        };
        Ok(Self {
            kind: src.kind,
            stream: StreamConfig {
                pattern: src.shards.clone(),
                shards,
                resample: src.resample,
                shuffle_buffer: usize::try_from(src.shuffle_buffer).unwrap_or(0),
                seed: seeded::draw(seed, Purpose::SourceSeed, index as u64),
            },
            batch_size: positive(&name, "batch_size", src.batch_size)?,
            max_tokens: positive(
                &name,
                "max_tokens",
                src.max_tokens.unwrap_or(default_tokens),
            )?,
            rules: InterleavedOptions {
                sim_threshold: src.sim_threshold,
                max_images: positive(&name, "max_images", src.max_images)?,
                min_images: 1,
            },
            loss_weight: src.loss_weight,
            no_loss_spans: no_loss_spans(&name, &src.no_loss_spans)?,
            name,
        })
    }

    /// Image slots per row: 1 for pairs, `max_images` otherwise.
    pub fn image_slots(&self) -> usize {
        if self.kind == SourceKind::Pairs {
            1
        } else {
            self.rules.max_images
        }
    }
}

/// The configuration name of a layout.
pub fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Interleaved => "interleaved",
        SourceKind::Pairs => "pairs",
        SourceKind::Sequences => "sequences",
    }
}

/// Batches of one source.
pub struct SourceBatcher {
    spec: SourceSpec,
    stream: SampleStream,
    tokenizer: Arc<FlamingoTokenizer>,
    eos: String,
    /// `no_loss_spans` as token ids.
    spans: Vec<TokenSpan>,
    transform: ImageTransform,
    batches: u64,
    skips: SkipCounts,
    last_skip: Option<String>,
    /// Consecutive skipped samples after which [`SourceBatcher::next_batch`] fails.
    pub max_consecutive_skips: u64,
}

impl SourceBatcher {
    /// A batcher at the start of its stream. The tokenizer must define an eos token.
    pub fn new(
        spec: SourceSpec,
        tokenizer: Arc<FlamingoTokenizer>,
        transform: ImageTransform,
    ) -> Result<Self, DataError> {
        let eos = tokenizer
            .eos_token()
            .ok_or_else(|| DataError::Config {
                source_name: spec.name.clone(),
                message:
                    "the tokenizer defines no eos token (texts end with `<|endofchunk|>{eos}`)"
                        .into(),
            })?
            .to_string();
        let spans = spec
            .no_loss_spans
            .iter()
            .map(|[start, end]| {
                let ids = |marker: &str| {
                    let bad = |why: String| DataError::Config {
                        source_name: spec.name.clone(),
                        message: format!("`no_loss_spans` marker {marker:?}: {why}"),
                    };
                    match tokenizer.encode_with(marker, false, None) {
                        Ok(ids) if !ids.is_empty() => Ok(ids),
                        Ok(_) => Err(bad("no tokens".into())),
                        Err(e) => Err(bad(e.to_string())),
                    }
                };
                Ok(TokenSpan {
                    start: ids(start)?,
                    end: ids(end)?,
                })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        Ok(Self {
            stream: SampleStream::new(spec.stream.clone())?,
            spec,
            tokenizer,
            eos,
            spans,
            transform,
            batches: 0,
            skips: SkipCounts::default(),
            last_skip: None,
            max_consecutive_skips: DEFAULT_MAX_CONSECUTIVE_SKIPS,
        })
    }

    /// The resolved settings.
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// Skips so far, by reason.
    pub fn skip_counts(&self) -> &SkipCounts {
        &self.skips
    }

    /// The most recent skip (`key: reason: detail`), for logs.
    pub fn last_skip(&self) -> Option<&str> {
        self.last_skip.as_deref()
    }

    /// The next accepted sample.
    fn next_prepared(&mut self) -> Result<Prepared, DataError> {
        let mut skipped = 0u64;
        loop {
            let mut broken = 0u64;
            let item = self.stream.next_item(&mut broken)?;
            for _ in 0..broken {
                self.skips.add(SkipReason::BadTar);
            }
            let ctx = PrepareContext {
                tokenizer: &self.tokenizer,
                eos: &self.eos,
                transform: &self.transform,
                max_tokens: self.spec.max_tokens,
            };
            let seed = self.spec.stream.seed;
            let flip = seeded::unit(seed, Purpose::Flip, item.ordinal) < 0.5;
            let result = match self.spec.kind {
                SourceKind::Pairs => prepare_pair(&item.sample, &ctx),
                SourceKind::Interleaved => {
                    let draw = seeded::unit(seed, Purpose::SingleImage, item.ordinal);
                    prepare_interleaved(&item.sample, &ctx, &self.spec.rules, draw, flip)
                }
                SourceKind::Sequences => {
                    prepare_sequence(&item.sample, &ctx, &self.spec.rules, flip)
                }
            };
            match result {
                Ok(p) => return Ok(p),
                Err(skip) => {
                    self.skips.add(skip.reason);
                    let last = format!(
                        "{}: {}: {}",
                        item.sample.key,
                        skip.reason.name(),
                        skip.detail
                    );
                    self.last_skip = Some(last);
                    skipped += 1;
                    if skipped >= self.max_consecutive_skips {
                        return Err(DataError::AllSkipped {
                            source_name: self.spec.name.clone(),
                            count: skipped,
                            last: self.last_skip.clone().unwrap_or_default(),
                        });
                    }
                }
            }
        }
    }

    /// The next batch of `batch_size` accepted samples.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        let mut rows = Vec::with_capacity(self.spec.batch_size);
        while rows.len() < self.spec.batch_size {
            rows.push(self.next_prepared()?);
        }
        let flip_batch = self.spec.kind == SourceKind::Pairs
            && self.transform.hflip()
            && seeded::unit(self.spec.stream.seed, Purpose::Flip, self.batches) < 0.5;
        let batch = self
            .assemble(rows, flip_batch)
            .map_err(|source| DataError::Tensor {
                source_name: self.spec.name.clone(),
                source,
            })?;
        self.batches += 1;
        Ok(batch)
    }

    /// Pads, masks and stacks accepted samples.
    fn assemble(&self, rows: Vec<Prepared>, flip: bool) -> candle_core::Result<Batch> {
        let b = rows.len();
        // The reference pads interleaved text to `max_tokens` (256). Right padding is masked out of
        // the loss and never attended by a real token (causal attention), so padding every kind to
        // its longest row computes the same loss and gradients, without the wasted pad positions.
        let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let special = SpecialIds {
            pad: self.tokenizer.pad_id(),
            image: self.tokenizer.image_id(),
            eoc: self.tokenizer.eoc_id(),
        };
        let rule = match self.spec.kind {
            SourceKind::Pairs => MaskRule::Pairs,
            _ => MaskRule::Interleaved,
        };
        // Slots past every row's images are never attended (a token attends only the image of
        // its latest `<image>`), so the batch keeps only as many as its fullest row needs.
        let slots = rows
            .iter()
            .map(|r| r.images.len().min(self.spec.image_slots()))
            .max()
            .unwrap_or(0)
            .max(1);
        let zero = self.transform.zeros()?;
        let (mut ids, mut mask, mut labs) = (
            Vec::with_capacity(b * t),
            Vec::with_capacity(b * t),
            Vec::with_capacity(b * t),
        );
        let mut image_rows = Vec::with_capacity(b);
        let mut image_counts = Vec::with_capacity(b);
        let mut keys = Vec::with_capacity(b);
        let mut tokens = 0;
        for row in rows {
            let n = row.ids.len().min(t);
            tokens += n;
            let mut padded = row.ids[..n].to_vec();
            padded.resize(t, special.pad);
            let mut row_labels = labels(&padded, rule, special);
            mask_spans(&padded, &mut row_labels, &self.spans);
            labs.extend(row_labels);
            mask.extend((0..t).map(|i| u32::from(i < n)));
            ids.extend(padded);
            let mut imgs: Vec<Tensor> = row.images.into_iter().take(slots).collect();
            image_counts.push(imgs.len());
            imgs.resize(slots, zero.clone());
            image_rows.push(Tensor::stack(&imgs, 0)?);
            keys.push(row.key);
        }
        let device = Device::Cpu;
        let mut images = Tensor::stack(&image_rows, 0)?;
        if flip {
            images = images.flip(&[4])?;
        }
        Ok(Batch {
            source: self.spec.name.clone(),
            kind: self.spec.kind,
            loss_weight: self.spec.loss_weight,
            input_ids: Tensor::from_vec(ids, (b, t), &device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), &device)?,
            labels: Tensor::from_vec(labs, (b, t), &device)?,
            images,
            image_counts,
            keys,
            tokens,
        })
    }

    /// The position to save.
    pub fn state(&self) -> SourceState {
        SourceState {
            source: self.spec.name.clone(),
            stream: self.stream.state(),
            batches: self.batches,
            skips: self.skips.clone(),
        }
    }

    /// Continues from a saved position.
    pub fn restore(&mut self, state: &SourceState) -> Result<(), DataError> {
        if state.source != self.spec.name {
            return Err(DataError::State {
                source_name: self.spec.name.clone(),
                message: format!("the state belongs to source `{}`", state.source),
            });
        }
        self.stream.restore(&state.stream, &self.spec.name)?;
        self.batches = state.batches;
        self.skips = state.skips.clone();
        Ok(())
    }
}

/// All sources of a training, stepped together.
pub struct DataMix {
    sources: Vec<SourceBatcher>,
}

impl DataMix {
    /// Builds one batcher per `[[train.data]]` entry (relative shard paths resolved from
    /// `base_dir`), seeded from the training `seed`.
    pub fn new(
        data: &[DataSource],
        seed: u64,
        base_dir: &Path,
        tokenizer: Arc<FlamingoTokenizer>,
        transform: ImageTransform,
    ) -> Result<Self, DataError> {
        let sources = (0..data.len())
            .map(|i| {
                let spec = SourceSpec::from_config(data, i, seed, base_dir)?;
                SourceBatcher::new(spec, tokenizer.clone(), transform.clone())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { sources })
    }

    /// The batchers, in configuration order.
    pub fn sources(&self) -> &[SourceBatcher] {
        &self.sources
    }

    /// Mutable access to the batchers (e.g. to set `max_consecutive_skips`).
    pub fn sources_mut(&mut self) -> &mut [SourceBatcher] {
        &mut self.sources
    }

    /// The batchers, consumed (e.g. to run each in its own thread, [`super::prefetch`]).
    pub fn into_sources(self) -> Vec<SourceBatcher> {
        self.sources
    }

    /// One batch per source, in configuration order.
    pub fn next_step(&mut self) -> Result<Vec<Batch>, DataError> {
        self.sources
            .iter_mut()
            .map(SourceBatcher::next_batch)
            .collect()
    }

    /// Skip counts per source name.
    pub fn skip_counts(&self) -> Vec<(String, SkipCounts)> {
        self.sources
            .iter()
            .map(|s| (s.spec.name.clone(), s.skips.clone()))
            .collect()
    }

    /// The position to save in a checkpoint.
    pub fn state(&self) -> MixState {
        MixState {
            sources: self.sources.iter().map(SourceBatcher::state).collect(),
        }
    }

    /// Continues from a saved position (the mix must be built from the same configuration).
    pub fn restore(&mut self, state: &MixState) -> Result<(), DataError> {
        if state.sources.len() != self.sources.len() {
            return Err(DataError::State {
                source_name: "mix".into(),
                message: format!(
                    "saved with {} sources, configured with {}",
                    state.sources.len(),
                    self.sources.len()
                ),
            });
        }
        for (s, st) in self.sources.iter_mut().zip(&state.sources) {
            s.restore(st)?;
        }
        Ok(())
    }
}
