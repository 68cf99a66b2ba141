//! The synthetic world: deterministic scenes written in the real dataset formats.
//!
//! `write_world` renders scenes of colored shapes with rendered words (see [`scene`],
//! [`render`]), describes and questions them ([`language`]) and writes every dataset the
//! pipeline reads in its real on-disk format: Karpathy caption JSON and COCO annotations
//! ([`karpathy`]), official VQA question/annotation JSON ([`vqa`]), HatefulMemes JSONL
//! ([`hateful`]), WebDataset tars of pairs, MMC4 documents and ChatGPT-style sequences
//! ([`webdataset`], [`shards`]) and a plain-text corpus ([`corpus`]). The layout is listed
//! in [`WorldSummary::paths`] and in `manifest.json`. The same seed, size and image size give
//! byte-identical files.
//!
//! # Layout (relative to the output directory)
//!
//! | path | content |
//! |---|---|
//! | `manifest.json` | [`WorldSummary`]: seed, size, image size, counts, the paths below |
//! | `coco/train2014/COCO_train2014_{cocoid:012}.jpg` | train images (cocoid from 100000) |
//! | `coco/val2014/COCO_val2014_{cocoid:012}.jpg` | test / val / restval images (cocoid from 500000) |
//! | `coco/dataset_coco.json` | Karpathy JSON, splits train / test / val / restval, 5 captions |
//! | `coco/captions_val2014.json` | COCO caption annotations of all `val2014` images (int ids) |
//! | `flickr30k/flickr30k-images/{id}.jpg` | images, id from 1000000 |
//! | `flickr30k/dataset_flickr30k.json` | Karpathy JSON (no `filepath`/`cocoid`), train / val / test |
//! | `flickr30k/dataset_flickr30k_coco_style.json` | COCO caption annotations, `image_id` = file stem (string) |
//! | `vqav2/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json` | questions on COCO images (val2014 = test) |
//! | `vqav2/v2_mscoco_{train2014,val2014}_annotations.json` | 10 answers each, order shuffled |
//! | `okvqa/OpenEnded_mscoco_{train2014,val2014}_questions.json`, `okvqa/mscoco_{..}_annotations.json` | knowledge questions on COCO images |
//! | `textvqa/train_images/{16 hex}.jpg` | TextVQA images of both splits |
//! | `textvqa/{train,val}_{questions,annotations}_vqa_format.json` | reading questions (val = test) |
//! | `vizwiz/{train,val}/VizWiz_{train,val}_{i:08}.jpg` | VizWiz images; `image_id` is the file name |
//! | `vizwiz/{train,val}_{questions,annotations}_vqa_format.json` | questions, some "unanswerable" (val = test) |
//! | `hatefulmemes/img/{id:05}.png`, `hatefulmemes/{train,test_seen}.jsonl` | memes `{"id","img","label","text"}` |
//! | `laion/{000..N}.tar` | WebDataset pairs `KEY.png` + `KEY.txt` |
//! | `mmc4/{000..N}.tar` | WebDataset `KEY.json` MMC4 documents with base64 images >= 11,000 bytes |
//! | `chatgpt/{000..N}.tar` | WebDataset `KEY.json` ChatGPT-style sequences (`is_gpt`) |
//! | `text/corpus.txt` | training-split text and world knowledge, one sentence per line |
//!
//! All images are PNG bytes whatever their extension (readers decode by content, as the
//! reference readers build `.jpg` names). Keys are 9-digit global sample indices.

pub mod corpus;
pub mod hateful;
pub mod karpathy;
pub mod language;
pub mod output;
pub mod render;
pub mod scene;
pub mod shards;
pub mod vqa;
pub mod webdataset;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use output::OutDir;

/// Version of the world written by [`write_world`]; bump on any change to its layout or content
/// (it is also the synth stage's cache version, so a bump rewrites cached worlds).
pub const FORMAT_VERSION: u32 = 5;

/// Relative path of the world's manifest (written after every other file).
pub const MANIFEST_PATH: &str = "manifest.json";

/// Errors while generating or writing the synthetic world.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// `--size` named no known preset.
    #[error("unknown world size {0:?}: expected tiny, small or default")]
    UnknownSize(String),
    /// The requested image side is unusable.
    #[error("image size {0} px is out of range (32..=512)")]
    ImageSize(u32),
    /// A file or directory could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be serialised.
    #[error("serialising {path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The embedded font is unusable.
    #[error("font: {0}")]
    Font(String),
    /// An image could not be encoded (the message names the item).
    #[error("encoding image: {0}")]
    Encode(String),
}

/// World size presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorldSize {
    /// A few dozen items per dataset, for tests (well under a second).
    Tiny,
    /// A few hundred items per dataset.
    Small,
    /// Thousands of training images, hundreds of test items per dataset (a laptop run).
    Default,
}

impl WorldSize {
    /// The preset's name as accepted by `--size`.
    pub fn name(self) -> &'static str {
        match self {
            WorldSize::Tiny => "tiny",
            WorldSize::Small => "small",
            WorldSize::Default => "default",
        }
    }

    /// How many items each dataset gets at this size.
    pub fn counts(self) -> WorldCounts {
        match self {
            WorldSize::Tiny => WorldCounts {
                coco_train: 16,
                coco_test: 8,
                coco_val: 2,
                coco_restval: 2,
                flickr_train: 16,
                flickr_val: 2,
                flickr_test: 8,
                vqav2_questions_per_train_image: 2,
                okvqa_train: 16,
                okvqa_test: 8,
                textvqa_train: 16,
                textvqa_test: 8,
                vizwiz_train: 16,
                vizwiz_test: 8,
                hateful_train: 16,
                hateful_test: 8,
                laion_samples: 24,
                laion_per_shard: 6,
                mmc4_docs: 8,
                mmc4_per_shard: 2,
                chatgpt_docs: 4,
                chatgpt_per_shard: 2,
                corpus_facts: 50,
            },
            WorldSize::Small => WorldCounts {
                coco_train: 300,
                coco_test: 100,
                coco_val: 20,
                coco_restval: 40,
                flickr_train: 300,
                flickr_val: 20,
                flickr_test: 100,
                vqav2_questions_per_train_image: 3,
                okvqa_train: 300,
                okvqa_test: 100,
                textvqa_train: 300,
                textvqa_test: 100,
                vizwiz_train: 300,
                vizwiz_test: 100,
                hateful_train: 300,
                hateful_test: 100,
                laion_samples: 1000,
                laion_per_shard: 250,
                mmc4_docs: 200,
                mmc4_per_shard: 50,
                chatgpt_docs: 100,
                chatgpt_per_shard: 50,
                corpus_facts: 500,
            },
            WorldSize::Default => WorldCounts {
                coco_train: 3000,
                coco_test: 500,
                coco_val: 100,
                coco_restval: 200,
                flickr_train: 2000,
                flickr_val: 100,
                flickr_test: 500,
                vqav2_questions_per_train_image: 3,
                okvqa_train: 3000,
                okvqa_test: 500,
                textvqa_train: 2000,
                textvqa_test: 500,
                vizwiz_train: 2000,
                vizwiz_test: 500,
                hateful_train: 2000,
                hateful_test: 500,
                laion_samples: 10000,
                laion_per_shard: 2500,
                mmc4_docs: 1500,
                mmc4_per_shard: 375,
                chatgpt_docs: 1500,
                chatgpt_per_shard: 750,
                corpus_facts: 3000,
            },
        }
    }
}

impl FromStr for WorldSize {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, SynthError> {
        match s {
            "tiny" => Ok(WorldSize::Tiny),
            "small" => Ok(WorldSize::Small),
            "default" => Ok(WorldSize::Default),
            other => Err(SynthError::UnknownSize(other.to_string())),
        }
    }
}

/// Item counts of one world size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorldCounts {
    /// COCO `train2014` images (Karpathy split "train").
    pub coco_train: usize,
    /// COCO `val2014` images in Karpathy split "test".
    pub coco_test: usize,
    /// COCO `val2014` images in Karpathy split "val".
    pub coco_val: usize,
    /// COCO `val2014` images in Karpathy split "restval".
    pub coco_restval: usize,
    /// Flickr30K images in split "train".
    pub flickr_train: usize,
    /// Flickr30K images in split "val".
    pub flickr_val: usize,
    /// Flickr30K images in split "test".
    pub flickr_test: usize,
    /// VQAv2 train questions per `train2014` image (test: one per `val2014` image).
    pub vqav2_questions_per_train_image: usize,
    /// OK-VQA train questions (one per `train2014` image, from the first).
    pub okvqa_train: usize,
    /// OK-VQA test questions (one per `val2014` image, from the first).
    pub okvqa_test: usize,
    /// TextVQA train questions (one image each).
    pub textvqa_train: usize,
    /// TextVQA test ("val") questions.
    pub textvqa_test: usize,
    /// VizWiz train questions (one image each).
    pub vizwiz_train: usize,
    /// VizWiz test ("val") questions.
    pub vizwiz_test: usize,
    /// HatefulMemes `train.jsonl` lines.
    pub hateful_train: usize,
    /// HatefulMemes `test_seen.jsonl` lines.
    pub hateful_test: usize,
    /// LAION-like image-text pairs.
    pub laion_samples: usize,
    /// Pairs per LAION shard.
    pub laion_per_shard: usize,
    /// MMC4-like documents.
    pub mmc4_docs: usize,
    /// Documents per MMC4 shard.
    pub mmc4_per_shard: usize,
    /// ChatGPT-like sequences.
    pub chatgpt_docs: usize,
    /// Sequences per ChatGPT shard.
    pub chatgpt_per_shard: usize,
    /// Knowledge sentences in the text corpus.
    pub corpus_facts: usize,
}

/// How to generate a world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthOptions {
    /// The world seed: same seed (and size, image size) gives byte-identical files.
    pub seed: u64,
    /// The size preset.
    pub size: WorldSize,
    /// Side in pixels of the square eval / pair / sequence images (MMC4 images are 1.5 times
    /// as large, with light noise, to pass the reference loader's 10 kB filter).
    pub image_size: u32,
}

impl SynthOptions {
    /// The default image side.
    pub const DEFAULT_IMAGE_SIZE: u32 = 64;

    /// Options with the default image size.
    pub fn new(seed: u64, size: WorldSize) -> Self {
        Self {
            seed,
            size,
            image_size: Self::DEFAULT_IMAGE_SIZE,
        }
    }
}

/// What was written: also the content of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorldSummary {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The generator ("runner data synth").
    pub generator: String,
    /// The world seed.
    pub seed: u64,
    /// The size preset's name.
    pub size: String,
    /// Side of eval / pair / sequence images in pixels.
    pub image_size: u32,
    /// Item counts, e.g. `coco.test_images`, `vqav2.train_questions`, `laion.samples`.
    pub counts: BTreeMap<String, usize>,
    /// Relative paths of every dataset's files and directories, e.g. `coco.karpathy_json`,
    /// `laion.shards` (a brace pattern such as `laion/{000..009}.tar`).
    pub paths: BTreeMap<String, String>,
    /// Files written, `manifest.json` excluded.
    pub files: usize,
    /// Bytes written, `manifest.json` excluded.
    pub bytes: u64,
}

impl WorldSummary {
    fn count(&mut self, key: &str, n: usize) {
        self.counts.insert(key.to_string(), n);
    }

    fn path(&mut self, key: &str, rel: &str) {
        self.paths.insert(key.to_string(), rel.to_string());
    }
}

/// Writes the whole synthetic world under `dir` (created if needed; existing files with the same
/// names are overwritten) and returns what was written; also writes it as `manifest.json`.
pub fn write_world(dir: &Path, opts: &SynthOptions) -> Result<WorldSummary, SynthError> {
    if !(32..=512).contains(&opts.image_size) {
        return Err(SynthError::ImageSize(opts.image_size));
    }
    let counts = opts.size.counts();
    let mut out = OutDir::new(dir);
    let mut summary = WorldSummary {
        format_version: FORMAT_VERSION,
        generator: "runner data synth".to_string(),
        seed: opts.seed,
        size: opts.size.name().to_string(),
        image_size: opts.image_size,
        counts: BTreeMap::new(),
        paths: BTreeMap::new(),
        files: 0,
        bytes: 0,
    };
    let mut corpus = corpus::Corpus::default();

    let coco = karpathy::write_coco(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    karpathy::write_flickr(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    vqa::write_vqav2(&mut out, opts, &counts, &coco, &mut summary, &mut corpus)?;
    vqa::write_okvqa(&mut out, opts, &counts, &coco, &mut summary, &mut corpus)?;
    vqa::write_textvqa(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    vqa::write_vizwiz(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    hateful::write_hateful(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    shards::write_laion(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    shards::write_mmc4(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    shards::write_chatgpt(&mut out, opts, &counts, &mut summary, &mut corpus)?;
    corpus.write(&mut out, opts, &counts, &mut summary)?;

    summary.files = out.files;
    summary.bytes = out.bytes;
    out.json(MANIFEST_PATH, &summary)?;
    Ok(summary)
}

/// Renders a scene to PNG, naming the item in any error.
pub(crate) fn png(
    scene: &scene::Scene,
    side: u32,
    noise: u8,
    item: &str,
) -> Result<Vec<u8>, SynthError> {
    render::scene_png(scene, side, noise).map_err(|e| SynthError::Encode(format!("{item}: {e}")))
}

/// Pixel noise (+- levels) of eval, pair and sequence images: none, so files stay around 1 kB.
/// (MMC4 images get the smallest noise that lifts them over the loader's size filter.)
pub(crate) const IMAGE_NOISE: u8 = 0;

/// Computes `f(0..n)` on up to eight threads and returns the results in index order.
/// Every item draws from its own random stream, so the output does not depend on threading.
pub(crate) fn par_map<R: Send>(
    n: usize,
    f: impl Fn(usize) -> Result<R, SynthError> + Sync,
) -> Result<Vec<R>, SynthError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 8)
        .min(n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..n.min((t + 1) * chunk))
                        .map(f)
                        .collect::<Result<Vec<R>, SynthError>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| SynthError::Encode("a rendering thread panicked".to_string()))?;
            out.extend(part?);
        }
        Ok(out)
    })
}
