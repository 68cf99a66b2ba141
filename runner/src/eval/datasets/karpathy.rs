//! Karpathy split JSON (`dataset_coco.json`, `dataset_flickr30k.json`), as open_flamingo's
//! `CaptionDataset` reads it: demonstrations from `split == "train"` only (`restval` and `val`
//! are not used), queries from `split == "test"`.

use std::path::Path;

use serde::Deserialize;

use super::json_id::JsonId;
use super::{DatasetError, EvalExample, read_json};

/// Where a dataset keeps its images and how its ids are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `{images}/{filepath}/{filename}` (`train2014` or `val2014`); id = `cocoid`.
    Coco,
    /// `{images}/{filename}`; id = the file name up to its first `.` (a string).
    Flickr,
}

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    split: String,
    #[serde(default)]
    cocoid: Option<JsonId>,
    #[serde(default)]
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    raw: String,
}

/// The two splits the evaluation uses.
#[derive(Debug, Clone, Default)]
pub struct KarpathySplits {
    /// `split == "train"`, in file order.
    pub train: Vec<EvalExample>,
    /// `split == "test"`, in file order.
    pub test: Vec<EvalExample>,
}

/// Reads a Karpathy split file; image paths are resolved under `images` per `layout`.
pub fn read(path: &Path, images: &Path, layout: Layout) -> Result<KarpathySplits, DatasetError> {
    let file: KarpathyFile = read_json(path)?;
    let mut out = KarpathySplits::default();
    for (i, img) in file.images.into_iter().enumerate() {
        let is_train = match img.split.as_str() {
            "train" => true,
            "test" => false,
            _ => continue,
        };
        let entry = || format!("images[{i}] ({})", img.filename);
        let (json_id, image) = match layout {
            Layout::Coco => {
                let id = img.cocoid.as_ref().ok_or_else(|| {
                    DatasetError::entry(
                        path,
                        entry(),
                        "has no `cocoid` (needed as the COCO image id)",
                    )
                })?;
                let dir = img
                    .filepath
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| {
                        DatasetError::entry(
                            path,
                            entry(),
                            "has no `filepath` (the image directory, train2014 or val2014)",
                        )
                    })?;
                (id.clone(), images.join(dir).join(&img.filename))
            }
            Layout::Flickr => {
                let stem = img.filename.split('.').next().unwrap_or_default();
                if stem.is_empty() {
                    return Err(DatasetError::entry(path, entry(), "has an empty file name"));
                }
                (JsonId::Str(stem.to_string()), images.join(&img.filename))
            }
        };
        if is_train && img.sentences.is_empty() {
            return Err(DatasetError::entry(
                path,
                entry(),
                "is a train image without sentences (a demonstration needs sentences[0].raw)",
            ));
        }
        let example = EvalExample {
            id: json_id.to_string(),
            json_id,
            image,
            text: None,
            answers: img.sentences.into_iter().map(|s| s.raw).collect(),
            label: None,
        };
        if is_train {
            out.train.push(example);
        } else {
            out.test.push(example);
        }
    }
    Ok(out)
}
