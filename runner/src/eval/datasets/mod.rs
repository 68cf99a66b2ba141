//! The seven evaluation datasets of the paper, read from their real files (spec §5.2).
//!
//! Every reader produces the same [`EvalExample`] model: an id, the image file, the question or
//! meme text, the reference answers or captions and the label. [`load`] dispatches on the
//! dataset name; [`DatasetInfo`] says which task, decoding budget and metric each dataset uses.

pub mod coco_captions;
pub mod error;
pub mod hateful_memes;
pub mod image;
pub mod json_id;
pub mod karpathy;
pub mod vqa;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

pub use error::DatasetError;
pub use json_id::JsonId;

use crate::config::schema::DatasetPaths;

/// The three kinds of evaluation task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Generate a caption (COCO, Flickr30K), scored with CIDEr.
    Captioning,
    /// Generate a short answer to a question (VQAv2, OK-VQA, TextVQA, VizWiz).
    Vqa,
    /// Rank the class names by likelihood (HatefulMemes).
    Classification,
}

impl Task {
    /// `captioning`, `vqa` or `classification`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Captioning => "captioning",
            Task::Vqa => "vqa",
            Task::Classification => "classification",
        }
    }
}

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Where demonstrations come from.
    Train,
    /// Where queries come from.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The metric a dataset is scored with (names as `runner score --metric` takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// pycocoevalcap CIDEr-D, ×100.
    Cider,
    /// open_flamingo's VQA accuracy, ×100.
    VqaAccuracy,
    /// scikit-learn ROC AUC of P("yes").
    RocAuc,
}

impl Metric {
    /// `cider`, `vqa-accuracy` or `roc-auc`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cider => "cider",
            Metric::VqaAccuracy => "vqa-accuracy",
            Metric::RocAuc => "roc-auc",
        }
    }
}

/// Generation settings of the generative tasks (spec §5.7); the beam count comes from the
/// experiment (`eval.num_beams`, 3 in the paper).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoding {
    /// Most tokens generated after the prompt: 20 captioning, 5 VQA, 10 TextVQA.
    pub max_new_tokens: usize,
    /// Fewest tokens generated (0: the reference's `min_generation_length`).
    pub min_new_tokens: usize,
    /// HF beam search length penalty: 0 ranks beams by the plain sum of log-probabilities.
    pub length_penalty: f64,
}

/// What a dataset is evaluated as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetInfo {
    /// Name as the experiment spells it (`coco`, `okvqa`, ...).
    pub name: &'static str,
    /// The task.
    pub task: Task,
    /// Generation settings; `None` for rank classification.
    pub decoding: Option<Decoding>,
    /// How a cell is scored.
    pub metric: Metric,
    /// Whether predictions are stemmed before scoring (OK-VQA only, spec §5.8).
    pub stem_predictions: bool,
}

/// Class names of HatefulMemes, indexed by label (`0` → `no`, `1` → `yes`).
pub const HATEFUL_MEMES_CLASSES: [&str; 2] = ["no", "yes"];

const fn generative(max_new_tokens: usize) -> Option<Decoding> {
    Some(Decoding {
        max_new_tokens,
        min_new_tokens: 0,
        length_penalty: 0.0,
    })
}

/// The task, decoding and metric of a dataset; `None` for a name outside the paper's seven.
pub fn dataset_info(name: &str) -> Option<DatasetInfo> {
    let (name, task, decoding, metric) = match name {
        "coco" => ("coco", Task::Captioning, generative(20), Metric::Cider),
        "flickr30k" => ("flickr30k", Task::Captioning, generative(20), Metric::Cider),
        "vqav2" => ("vqav2", Task::Vqa, generative(5), Metric::VqaAccuracy),
        "okvqa" => ("okvqa", Task::Vqa, generative(5), Metric::VqaAccuracy),
        "textvqa" => ("textvqa", Task::Vqa, generative(10), Metric::VqaAccuracy),
        "vizwiz" => ("vizwiz", Task::Vqa, generative(5), Metric::VqaAccuracy),
        "hatefulmemes" => ("hatefulmemes", Task::Classification, None, Metric::RocAuc),
        _ => return None,
    };
    Some(DatasetInfo {
        name,
        task,
        decoding,
        metric,
        stem_predictions: name == "okvqa",
    })
}

/// One example of any evaluation dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalExample {
    /// The id predictions are keyed by: COCO `cocoid`, Flickr30K file stem, VQA `question_id`,
    /// HatefulMemes `id` (numbers written in decimal).
    pub id: String,
    /// The same id as the file writes it (number or string), for prediction files that are
    /// matched against the annotations by value and type (pycocotools, the VQA scorer).
    pub json_id: JsonId,
    /// The image file (decode by content with [`image::decode`], not by extension).
    pub image: PathBuf,
    /// The VQA question or the meme's OCR text.
    pub text: Option<String>,
    /// Reference captions (Karpathy `sentences[*].raw`, unstripped) or annotator answers (VQA).
    pub answers: Vec<String>,
    /// HatefulMemes label (0 or 1).
    pub label: Option<u8>,
}

impl EvalExample {
    /// The text this example shows as a demonstration: the first caption stripped (captioning),
    /// the first annotator's answer (VQA, not the majority answer), or the class name.
    pub fn demo_target(&self, task: Task) -> Option<&str> {
        match task {
            Task::Captioning => self.answers.first().map(|s| s.trim()),
            Task::Vqa => self.answers.first().map(String::as_str),
            Task::Classification => self
                .label
                .and_then(|l| HATEFUL_MEMES_CLASSES.get(l as usize).copied()),
        }
    }
}

/// An evaluation dataset read from its files.
#[derive(Debug, Clone)]
pub struct EvalDataset {
    /// Task, decoding and metric.
    pub info: DatasetInfo,
    /// Demonstration pool, in file order.
    pub train: Vec<EvalExample>,
    /// Queries, in file order.
    pub test: Vec<EvalExample>,
    /// The annotation files read, by config key (`karpathy`, `test_questions`, ...).
    pub files: Vec<(&'static str, PathBuf)>,
}

impl EvalDataset {
    /// The examples of a split.
    pub fn split(&self, split: Split) -> &[EvalExample] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }
}

/// Reads a dataset's train and test splits from the configured paths.
pub fn load(name: &str, paths: &DatasetPaths) -> Result<EvalDataset, DatasetError> {
    let info = dataset_info(name).ok_or_else(|| DatasetError::UnknownDataset(name.into()))?;
    let need = |key: &'static str| -> Result<PathBuf, DatasetError> {
        paths
            .get(key)
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| DatasetError::MissingPath {
                dataset: name.into(),
                key,
            })
    };
    match info.task {
        Task::Captioning => {
            let karpathy_path = need("karpathy")?;
            let layout = if name == "coco" {
                karpathy::Layout::Coco
            } else {
                karpathy::Layout::Flickr
            };
            let splits = karpathy::read(&karpathy_path, &need("images")?, layout)?;
            Ok(EvalDataset {
                info,
                train: splits.train,
                test: splits.test,
                files: vec![
                    ("karpathy", karpathy_path),
                    ("annotations", need("annotations")?),
                ],
            })
        }
        Task::Vqa => {
            let layout = vqa::ImageLayout::for_dataset(name);
            let (tq, ta) = (need("train_questions")?, need("train_annotations")?);
            let (sq, sa) = (need("test_questions")?, need("test_annotations")?);
            let train = vqa::read(&tq, &ta, &need("train_images")?, layout)?;
            let test = vqa::read(&sq, &sa, &need("test_images")?, layout)?;
            Ok(EvalDataset {
                info,
                train,
                test,
                files: vec![
                    ("train_questions", tq),
                    ("train_annotations", ta),
                    ("test_questions", sq),
                    ("test_annotations", sa),
                ],
            })
        }
        Task::Classification => {
            let images = need("images")?;
            let (tr, te) = (need("train_annotations")?, need("test_annotations")?);
            Ok(EvalDataset {
                info,
                train: hateful_memes::read(&tr, &images)?,
                test: hateful_memes::read(&te, &images)?,
                files: vec![("train_annotations", tr), ("test_annotations", te)],
            })
        }
    }
}

/// Deserialises a whole JSON file, naming the file in errors.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DatasetError> {
    let file = File::open(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_reader(BufReader::with_capacity(1 << 20, file)).map_err(|source| {
        DatasetError::Json {
            path: path.to_path_buf(),
            source,
        }
    })
}
