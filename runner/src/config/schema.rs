//! The typed experiment: what a composed TOML file must deserialize into.
//!
//! Every section denies unknown keys, so a typo is an error (with a "did you mean" hint added by
//! [`super::compose`]). Semantic rules (ranges, required paths) live in [`super::validate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A resolved experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment name (does not enter any job hash).
    pub name: String,
    /// Free text (does not enter any job hash).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// How many jobs `runner exec` runs at once when `--jobs` is not given (default 1). On a CPU
    /// with one candle thread per job, one job per core is fastest; enters no job hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// The Flamingo model: backbones, cross-attention interval, special embeddings.
    pub model: ModelConfig,
    /// Data the experiment generates itself (the synthetic world).
    #[serde(default, skip_serializing_if = "DataConfig::is_empty")]
    pub data: DataConfig,
    /// How preset backbones are built (pretraining stages), keyed `vision` / `language`.
    #[serde(default, skip_serializing_if = "PretrainConfig::is_empty")]
    pub pretrain: PretrainConfig,
    /// Flamingo training; absent for eval-only experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
    /// The evaluation grid; absent for train-only experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
    /// Ablation axes.
    #[serde(default, skip_serializing_if = "SweepConfig::is_empty")]
    pub sweep: SweepConfig,
}

fn default_device() -> String {
    "cpu".into()
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A preset built by `[pretrain.vision]` (e.g. `tiny-vit`) or a directory (open_clip or HF CLIP).
    pub vision: String,
    /// A preset built by `[pretrain.language]` (e.g. `tiny-lm`) or a HF directory.
    pub language: String,
    /// Optional OpenFlamingo-format weights to start from or evaluate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checkpoint: String,
    /// A gated cross-attention block before decoder layer i when (i+1) % n == 0.
    #[serde(default = "one")]
    pub cross_attn_every_n_layers: i64,
    /// Whether the `<image>` and `<|endofchunk|>` rows train.
    #[serde(default)]
    pub special_embeddings: SpecialEmbeddings,
    /// Apply the vision encoder's `ln_post` to the patch tokens (open_clip >= 2.23 behaviour).
    #[serde(default)]
    pub ln_post_tokens: bool,
    /// Precision of the frozen backbones' linear layers: `f32` or `bf16`.
    #[serde(default)]
    pub precision: Precision,
    /// Perceiver layers (default 6, OpenFlamingo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perceiver_depth: Option<i64>,
    /// Perceiver latents per image (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perceiver_latents: Option<i64>,
    /// Perceiver attention heads (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perceiver_heads: Option<i64>,
    /// Width of a perceiver attention head (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perceiver_dim_head: Option<i64>,
    /// Gated cross-attention heads (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attn_heads: Option<i64>,
    /// Width of a gated cross-attention head (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attn_dim_head: Option<i64>,
}

/// Perceiver and cross-attention sizes: OpenFlamingo's unless `[model]` overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlamingoSizes {
    /// Perceiver layers.
    pub perceiver_depth: usize,
    /// Perceiver latents per image.
    pub perceiver_latents: usize,
    /// Perceiver attention heads.
    pub perceiver_heads: usize,
    /// Width of a perceiver head.
    pub perceiver_dim_head: usize,
    /// Cross-attention heads.
    pub cross_attn_heads: usize,
    /// Width of a cross-attention head.
    pub cross_attn_dim_head: usize,
}

impl FlamingoSizes {
    /// OpenFlamingo's sizes (perceiver depth 6, 64 latents, 8 heads x 64; x-attn 8 heads x 64).
    pub const OPEN_FLAMINGO: FlamingoSizes = FlamingoSizes {
        perceiver_depth: 6,
        perceiver_latents: 64,
        perceiver_heads: 8,
        perceiver_dim_head: 64,
        cross_attn_heads: 8,
        cross_attn_dim_head: 64,
    };
}

impl ModelConfig {
    /// The effective sizes (unset or non-positive keys take OpenFlamingo's; validation rejects
    /// non-positive ones before anything runs).
    pub fn sizes(&self) -> FlamingoSizes {
        let d = FlamingoSizes::OPEN_FLAMINGO;
        let pick = |v: Option<i64>, default: usize| {
            v.and_then(|x| usize::try_from(x).ok())
                .filter(|x| *x > 0)
                .unwrap_or(default)
        };
        FlamingoSizes {
            perceiver_depth: pick(self.perceiver_depth, d.perceiver_depth),
            perceiver_latents: pick(self.perceiver_latents, d.perceiver_latents),
            perceiver_heads: pick(self.perceiver_heads, d.perceiver_heads),
            perceiver_dim_head: pick(self.perceiver_dim_head, d.perceiver_dim_head),
            cross_attn_heads: pick(self.cross_attn_heads, d.cross_attn_heads),
            cross_attn_dim_head: pick(self.cross_attn_dim_head, d.cross_attn_dim_head),
        }
    }
}

fn one() -> i64 {
    1
}

/// Trainable or frozen special-token embeddings (paper Table 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialEmbeddings {
    /// The two added rows train.
    #[default]
    Trainable,
    /// All embedding rows stay as initialised.
    Frozen,
}

/// Numeric precision of the frozen backbones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision everywhere.
    #[default]
    F32,
    /// Linear layers of the frozen backbones in bfloat16 (the paper's eval).
    Bf16,
}

/// `[data]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The synthetic world this experiment writes before anything reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthConfig>,
}

impl DataConfig {
    fn is_empty(&self) -> bool {
        self.synth.is_none()
    }
}

/// `[data.synth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Output directory.
    pub dir: String,
    /// World seed.
    #[serde(default)]
    pub seed: u64,
    /// Size preset.
    #[serde(default = "default_size")]
    pub size: String,
}

fn default_size() -> String {
    "default".into()
}

/// `[pretrain]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// How the preset vision encoder is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<PretrainVision>,
    /// How the preset language model is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<PretrainLanguage>,
}

impl PretrainConfig {
    fn is_empty(&self) -> bool {
        self.vision.is_none() && self.language.is_none()
    }
}

/// `[pretrain.vision]`: a small CLIP-style ViT trained contrastively on the synthetic pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainVision {
    /// Preset name `model.vision` refers to.
    pub name: String,
    /// Input resolution.
    pub image_size: i64,
    /// Patch size.
    pub patch_size: i64,
    /// Transformer width.
    pub width: i64,
    /// Transformer depth.
    pub layers: i64,
    /// Attention heads.
    pub heads: i64,
    /// Dimension of the projected (CLIP) embedding used by RICES.
    pub embed_dim: i64,
    /// Optimizer steps.
    pub steps: i64,
    /// Pairs per batch.
    pub batch_size: i64,
    /// Learning rate.
    pub lr: f64,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
}

/// Family of the tiny decoder LM: the layouts and position schemes of the paper's language models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TinyLmFamily {
    /// HF OPT (learned absolute positions), the family of the paper's Table 5 OPT-125M.
    #[default]
    Opt,
    /// HF MPT (ALiBi attention biases, no position table), the family of OpenFlamingo-3B/9B.
    Mpt,
}

impl TinyLmFamily {
    /// Whether this is the default, [`TinyLmFamily::Opt`].
    pub fn is_opt(&self) -> bool {
        *self == TinyLmFamily::Opt
    }
}

/// `[pretrain.language]`: a small decoder LM (and its BPE tokenizer) trained on the synthetic text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainLanguage {
    /// Preset name `model.language` refers to.
    pub name: String,
    /// Decoder family (default `opt`, which is left out of the serialised form so that jobs
    /// hashed before the key existed keep their hashes).
    #[serde(default, skip_serializing_if = "TinyLmFamily::is_opt")]
    pub family: TinyLmFamily,
    /// BPE vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub hidden_size: i64,
    /// Decoder depth.
    pub layers: i64,
    /// Attention heads.
    pub heads: i64,
    /// Maximum sequence length.
    pub max_positions: i64,
    /// Optimizer steps.
    pub steps: i64,
    /// Sequences per batch.
    pub batch_size: i64,
    /// Tokens per sequence.
    pub seq_len: i64,
    /// Tokens per sequence of the long steps (none when absent): every `long_every`-th step
    /// trains on rows this long, as many as keep `batch_size x seq_len` tokens (at least one),
    /// so that the LM learns to attend over contexts as long as many-shot prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_seq_len: Option<i64>,
    /// Period of the long steps (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_every: Option<i64>,
    /// Learning rate.
    pub lr: f64,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
}

impl PretrainLanguage {
    /// Rows and tokens per row of step `step` (0-based): the long shape on every
    /// `long_every`-th step when `long_seq_len` is set, else `batch_size x seq_len`.
    pub fn step_shape(&self, step: u64) -> (usize, usize) {
        let (b, t) = (
            self.batch_size.max(1) as usize,
            self.seq_len.max(1) as usize,
        );
        match self.long_seq_len {
            Some(long) if long > 0 => {
                let every = self.long_every.unwrap_or(4).max(1) as u64;
                if (step + 1).is_multiple_of(every) {
                    let long = long as usize;
                    ((b * t / long).max(1), long)
                } else {
                    (b, t)
                }
            }
            _ => (b, t),
        }
    }
}

/// `[train]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: i64,
    /// Peak learning rate (AdamW).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup_steps: i64,
    /// Schedule after warmup.
    #[serde(default)]
    pub schedule: Schedule,
    /// Weight decay, applied to the gated cross-attention parameters only.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: i64,
    /// Gradient clipping norm.
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    /// Seed of initialisation and data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Checkpoint every N steps (0: only at the end). Does not change results.
    #[serde(default)]
    pub checkpoint_every: i64,
    /// Checkpoints kept on disk. Does not change results.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: i64,
    /// Metrics logged every N steps. Does not change results.
    #[serde(default = "one")]
    pub log_every: i64,
    /// The data mix.
    pub data: Vec<DataSource>,
}

fn default_lr() -> f64 {
    1e-4
}
fn default_wd() -> f64 {
    0.1
}
fn default_clip() -> f64 {
    1.0
}
fn default_seed() -> u64 {
    42
}
fn default_keep() -> i64 {
    2
}

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Hold the peak (the paper).
    #[default]
    Constant,
    /// Linear decay to 0.
    Linear,
    /// Cosine decay to 0.
    Cosine,
}

/// One source of the training mix (`[[train.data]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// Layout of the shards.
    pub kind: SourceKind,
    /// Brace-expandable shard list, e.g. `data/mmc4/{000..015}.tar`.
    pub shards: String,
    /// Samples per micro-batch.
    pub batch_size: i64,
    /// Weight of this source's loss.
    pub loss_weight: f64,
    /// Token budget per sample (default 32 for pairs, 256 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// MMC4 image-sentence similarity threshold.
    #[serde(default = "default_sim")]
    pub sim_threshold: f64,
    /// Images kept per interleaved sample.
    #[serde(default = "default_max_images")]
    pub max_images: i64,
    /// Sample shards with replacement (true) or in shuffled epochs (false).
    #[serde(default = "yes")]
    pub resample: bool,
    /// Seeded shuffle buffer size.
    #[serde(default = "default_buffer")]
    pub shuffle_buffer: i64,
    /// Text spans that get no loss, each `[start, end]`: from a `start` marker through the next
    /// `end` marker (both included), e.g. `[["Question:", " Short answer:"]]` trains a sequence's
    /// answers but not its questions, as instruction tuning trains completions only. Default
    /// none: every text token gets loss, as in the reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_loss_spans: Vec<[String; 2]>,
}

fn default_sim() -> f64 {
    0.24
}
fn default_max_images() -> i64 {
    6
}
fn yes() -> bool {
    true
}
fn default_buffer() -> i64 {
    1000
}

/// The three training data layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// MMC4-style interleaved documents.
    Interleaved,
    /// LAION-style image-caption pairs.
    Pairs,
    /// ChatGPT-style synthetic sequences.
    Sequences,
}

/// The evaluation datasets of the paper.
pub const DATASETS: [&str; 7] = [
    "coco",
    "flickr30k",
    "vqav2",
    "okvqa",
    "textvqa",
    "vizwiz",
    "hatefulmemes",
];

/// `[eval]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Datasets to evaluate (names from [`DATASETS`]).
    pub datasets: Vec<String>,
    /// Numbers of in-context examples.
    pub shots: Vec<i64>,
    /// Demonstration seeds.
    pub seeds: Vec<u64>,
    /// How demonstrations are chosen.
    #[serde(default)]
    pub demos: Demos,
    /// Queries per cell, drawn with the seed; absent for the full split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_samples: Option<i64>,
    /// Size of the random demonstration pool drawn per dataset and seed.
    #[serde(default = "default_query_set")]
    pub query_set_size: i64,
    /// Prompts per batch.
    #[serde(default = "default_eval_batch")]
    pub batch_size: i64,
    /// Beams for captioning and VQA.
    #[serde(default = "default_beams")]
    pub num_beams: i64,
    /// Where the paper and the reference code differ: `paper` (default) or `code`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where each dataset's files are.
    #[serde(default)]
    pub paths: BTreeMap<String, DatasetPaths>,
}

fn default_query_set() -> i64 {
    2048
}
fn default_eval_batch() -> i64 {
    8
}
fn default_beams() -> i64 {
    3
}

/// Demonstration selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Demos {
    /// Uniformly random from the query set (the paper's main tables).
    #[default]
    Random,
    /// Retrieval-based in-context example selection.
    Rices,
}

/// Which of the paper / the reference code to follow where they differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The paper: classification prompt ensembling over 6 permutations; 0-shot uses the query image.
    #[default]
    Paper,
    /// open_flamingo's eval code at HEAD: no ensembling; the 0-shot classification image bug.
    Code,
}

/// Files of one evaluation dataset (`[eval.paths.<dataset>]`); which keys are required depends
/// on the dataset (see [`required_paths`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetPaths {
    /// Image directory (COCO: the root holding `train2014/` and `val2014/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<String>,
    /// Training-split image directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_images: Option<String>,
    /// Test-split image directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_images: Option<String>,
    /// Karpathy split JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub karpathy: Option<String>,
    /// COCO-format caption annotations for scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<String>,
    /// Training questions JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_questions: Option<String>,
    /// Training annotations (VQA JSON or HatefulMemes JSONL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_annotations: Option<String>,
    /// Test questions JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_questions: Option<String>,
    /// Test annotations (VQA JSON or HatefulMemes JSONL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_annotations: Option<String>,
}

/// The path keys a dataset needs.
pub fn required_paths(dataset: &str) -> &'static [&'static str] {
    match dataset {
        "coco" | "flickr30k" => &["images", "karpathy", "annotations"],
        "vqav2" | "okvqa" | "textvqa" | "vizwiz" => &[
            "train_images",
            "test_images",
            "train_questions",
            "train_annotations",
            "test_questions",
            "test_annotations",
        ],
        "hatefulmemes" => &["images", "train_annotations", "test_annotations"],
        _ => &[],
    }
}

impl DatasetPaths {
    /// The value of a path key by name.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "images" => self.images.as_deref(),
            "train_images" => self.train_images.as_deref(),
            "test_images" => self.test_images.as_deref(),
            "karpathy" => self.karpathy.as_deref(),
            "annotations" => self.annotations.as_deref(),
            "train_questions" => self.train_questions.as_deref(),
            "train_annotations" => self.train_annotations.as_deref(),
            "test_questions" => self.test_questions.as_deref(),
            "test_annotations" => self.test_annotations.as_deref(),
            _ => None,
        }
    }
}

/// `[sweep]`: dotted keys with lists of values (cartesian product), plus `[[sweep.tied]]` bundles
/// whose lists move together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    /// Bundles of keys whose values move together (all lists of one bundle have equal length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tied: Vec<BTreeMap<String, Vec<toml::Value>>>,
    /// Independent axes.
    #[serde(flatten)]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
}

impl SweepConfig {
    /// Whether the experiment has no sweep.
    pub fn is_empty(&self) -> bool {
        self.tied.is_empty() && self.axes.is_empty()
    }
}
