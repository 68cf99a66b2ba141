//! Readers for the standard prediction and annotation files `runner score` accepts:
//! COCO caption results `[{"image_id","caption"}]` and COCO captions files; VQA results
//! `[{"question_id","answer"}]` and VQA v2 annotation files; `[{"id","score"}]` and HatefulMemes
//! annotations (JSON lines or a JSON list of `{"id","label",...}`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::MetricError;
use super::vqa::GtAnswer;

/// An image, question or meme id: COCO and VQA use integers, Flickr30K file names (strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleId {
    /// A JSON integer.
    Int(i64),
    /// A JSON string.
    Str(String),
}

impl fmt::Display for SampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleId::Int(i) => write!(f, "{i}"),
            SampleId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Typed mirrors of the caption files: parsing into them skips building JSON maps (several times
/// faster). Any file they reject is parsed again as a JSON value, which names the offending entry.
mod typed {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Id {
        Int(i64),
        Str(String),
    }

    #[derive(Deserialize)]
    pub struct Image {
        pub id: Id,
    }

    #[derive(Deserialize)]
    pub struct Caption {
        pub image_id: Id,
        pub caption: String,
    }

    #[derive(Deserialize)]
    pub struct CocoFile {
        pub images: Option<Vec<Image>>,
        pub annotations: Vec<Caption>,
    }
}

impl From<typed::Id> for SampleId {
    fn from(id: typed::Id) -> Self {
        match id {
            typed::Id::Int(i) => SampleId::Int(i),
            typed::Id::Str(s) => SampleId::Str(s),
        }
    }
}

fn format_err(path: &Path, entry: impl Into<String>, reason: impl Into<String>) -> MetricError {
    MetricError::Format {
        path: path.to_path_buf(),
        entry: entry.into(),
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String, MetricError> {
    std::fs::read_to_string(path).map_err(|cause| MetricError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Parse a whole file as one JSON value.
pub fn read_json(path: &Path) -> Result<Value, MetricError> {
    serde_json::from_str(&read_text(path)?).map_err(|cause| MetricError::Json {
        path: path.to_path_buf(),
        line: None,
        cause,
    })
}

/// A JSON list, or JSON lines (one object per non-blank line).
pub fn read_json_list_or_lines(path: &Path) -> Result<Vec<Value>, MetricError> {
    let text = read_text(path)?;
    if text.trim_start().starts_with('[') {
        return match serde_json::from_str(&text) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err(format_err(path, "top level", "expected a JSON list")),
            Err(cause) => Err(MetricError::Json {
                path: path.to_path_buf(),
                line: None,
                cause,
            }),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|cause| MetricError::Json {
                path: path.to_path_buf(),
                line: Some(i + 1),
                cause,
            })
        })
        .collect()
}

fn as_list<'a>(value: &'a Value, path: &Path, what: &str) -> Result<&'a Vec<Value>, MetricError> {
    value
        .as_array()
        .ok_or_else(|| format_err(path, what, "expected a JSON list"))
}

fn field<'a>(
    item: &'a Value,
    key: &str,
    path: &Path,
    entry: &str,
) -> Result<&'a Value, MetricError> {
    let obj = item
        .as_object()
        .ok_or_else(|| format_err(path, entry, "expected a JSON object"))?;
    obj.get(key)
        .ok_or_else(|| format_err(path, entry, format!("missing {key:?}")))
}

fn id_of(item: &Value, key: &str, path: &Path, entry: &str) -> Result<SampleId, MetricError> {
    match field(item, key, path, entry)? {
        Value::Number(n) => n.as_i64().map(SampleId::Int).ok_or_else(|| {
            format_err(
                path,
                entry,
                format!("{key:?} must be an integer or a string, got {n}"),
            )
        }),
        Value::String(s) => Ok(SampleId::Str(s.clone())),
        other => Err(format_err(
            path,
            entry,
            format!("{key:?} must be an integer or a string, got {other}"),
        )),
    }
}

fn string_of(item: &Value, key: &str, path: &Path, entry: &str) -> Result<String, MetricError> {
    match field(item, key, path, entry)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(format_err(
            path,
            entry,
            format!("{key:?} must be a string, got {other}"),
        )),
    }
}

/// Predictions `[{<id_key>: id, <value_key>: ...}]`: non-empty, ids unique, in file order.
fn read_predictions<T>(
    path: &Path,
    id_key: &str,
    mut value: impl FnMut(&Value, &str) -> Result<T, MetricError>,
) -> Result<Vec<(SampleId, T)>, MetricError> {
    let json = read_json(path)?;
    let items = as_list(&json, path, "top level")?;
    if items.is_empty() {
        return Err(MetricError::EmptyPredictions {
            path: path.to_path_buf(),
        });
    }
    let mut seen: HashMap<SampleId, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let entry = format!("entry {i}");
        let id = id_of(item, id_key, path, &entry)?;
        if let Some(&first) = seen.get(&id) {
            return Err(MetricError::DuplicateId {
                path: path.to_path_buf(),
                index: i,
                first,
                id: id.to_string(),
            });
        }
        seen.insert(id.clone(), i);
        out.push((id, value(item, &entry)?));
    }
    Ok(out)
}

/// COCO caption results `[{"image_id", "caption"}]`.
pub fn read_caption_predictions(path: &Path) -> Result<Vec<(SampleId, String)>, MetricError> {
    if let Ok(list) = serde_json::from_str::<Vec<typed::Caption>>(&read_text(path)?) {
        if list.is_empty() {
            return Err(MetricError::EmptyPredictions {
                path: path.to_path_buf(),
            });
        }
        let mut seen: HashMap<SampleId, usize> = HashMap::with_capacity(list.len());
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.into_iter().enumerate() {
            let id = SampleId::from(item.image_id);
            if let Some(&first) = seen.get(&id) {
                return Err(MetricError::DuplicateId {
                    path: path.to_path_buf(),
                    index: i,
                    first,
                    id: id.to_string(),
                });
            }
            seen.insert(id.clone(), i);
            out.push((id, item.caption));
        }
        return Ok(out);
    }
    read_predictions(path, "image_id", |item, entry| {
        string_of(item, "caption", path, entry)
    })
}

/// VQA results `[{"question_id", "answer"}]`.
pub fn read_vqa_predictions(path: &Path) -> Result<Vec<(SampleId, String)>, MetricError> {
    read_predictions(path, "question_id", |item, entry| {
        string_of(item, "answer", path, entry)
    })
}

/// Classification scores `[{"id", "score"}]` (the probability of the positive class).
pub fn read_score_predictions(path: &Path) -> Result<Vec<(SampleId, f64)>, MetricError> {
    read_predictions(path, "id", |item, entry| {
        match field(item, "score", path, entry)? {
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                format_err(
                    path,
                    entry,
                    format!("\"score\" must be a finite number, got {n}"),
                )
            }),
            other => Err(format_err(
                path,
                entry,
                format!("\"score\" must be a number, got {other}"),
            )),
        }
    })
}

/// A COCO captions file: image order and reference captions per image.
#[derive(Debug, Clone)]
pub struct CocoCaptions {
    /// The file it came from.
    pub path: PathBuf,
    /// Image ids in the order of `images` (or of first appearance in `annotations` when the file has
    /// no `images` list); pycocoevalcap scores images in this order.
    pub images: Vec<SampleId>,
    /// Reference captions per image, in file order.
    pub refs: HashMap<SampleId, Vec<String>>,
}

/// Read a COCO captions file `{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`.
pub fn read_coco_captions(path: &Path) -> Result<CocoCaptions, MetricError> {
    let (image_list, anns) = match serde_json::from_str::<typed::CocoFile>(&read_text(path)?) {
        Ok(file) => (
            file.images.map(|list| {
                list.into_iter()
                    .map(|img| SampleId::from(img.id))
                    .collect::<Vec<_>>()
            }),
            file.annotations
                .into_iter()
                .map(|a| (SampleId::from(a.image_id), a.caption))
                .collect::<Vec<_>>(),
        ),
        Err(_) => coco_captions_from_value(path)?,
    };
    let mut images = Vec::new();
    let mut refs: HashMap<SampleId, Vec<String>> = HashMap::new();
    let has_image_list = image_list.is_some();
    if let Some(list) = image_list {
        let mut seen: HashMap<SampleId, usize> = HashMap::with_capacity(list.len());
        for (i, id) in list.into_iter().enumerate() {
            if let Some(&first) = seen.get(&id) {
                return Err(MetricError::DuplicateId {
                    path: path.to_path_buf(),
                    index: i,
                    first,
                    id: id.to_string(),
                });
            }
            seen.insert(id.clone(), i);
            images.push(id.clone());
            refs.insert(id, Vec::new());
        }
    }
    for (id, caption) in anns {
        match refs.get_mut(&id) {
            Some(list) => list.push(caption),
            None if !has_image_list => {
                images.push(id.clone());
                refs.insert(id, vec![caption]);
            }
            // pycocotools keeps annotations of unlisted images; they are never scored.
            None => {}
        }
    }
    Ok(CocoCaptions {
        path: path.to_path_buf(),
        images,
        refs,
    })
}

/// The image list (if any) and the (image id, caption) annotations of a COCO captions file, read as
/// a JSON value so that errors name the entry.
#[allow(clippy::type_complexity)]
fn coco_captions_from_value(
    path: &Path,
) -> Result<(Option<Vec<SampleId>>, Vec<(SampleId, String)>), MetricError> {
    let json = read_json(path)?;
    let anns = as_list(
        json.get("annotations")
            .ok_or_else(|| format_err(path, "top level", "missing \"annotations\""))?,
        path,
        "annotations",
    )?;
    let images = match json.get("images") {
        Some(list) => Some(
            as_list(list, path, "images")?
                .iter()
                .enumerate()
                .map(|(i, img)| id_of(img, "id", path, &format!("images[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let anns = anns
        .iter()
        .enumerate()
        .map(|(i, ann)| {
            let entry = format!("annotations[{i}]");
            Ok((
                id_of(ann, "image_id", path, &entry)?,
                string_of(ann, "caption", path, &entry)?,
            ))
        })
        .collect::<Result<Vec<_>, MetricError>>()?;
    Ok((images, anns))
}

/// A VQA annotations file: the answers of each question, and the types the official evaluation
/// groups its accuracy by.
#[derive(Debug, Clone, Default)]
pub struct VqaAnnotations {
    /// The ground-truth answer objects of each question.
    pub answers: HashMap<SampleId, Vec<GtAnswer>>,
    /// `answer_type` of each question (`yes/no`, `number`, `other` in VQAv2). The reference reads
    /// a missing one as `"other"`.
    pub answer_types: HashMap<SampleId, String>,
    /// `question_type` of each question that has one (e.g. `what color is the`).
    pub question_types: HashMap<SampleId, String>,
}

/// Read a VQA v2 annotations file `{"annotations": [{"question_id", "answers": [{"answer", ...}],
/// "answer_type"?, "question_type"?}]}`.
pub fn read_vqa_annotations(path: &Path) -> Result<VqaAnnotations, MetricError> {
    let mut json = read_json(path)?;
    let anns = match json.get_mut("annotations") {
        Some(Value::Array(list)) => std::mem::take(list),
        Some(_) => return Err(format_err(path, "annotations", "expected a JSON list")),
        None => return Err(format_err(path, "top level", "missing \"annotations\"")),
    };
    let mut out = VqaAnnotations::default();
    let mut first_at: HashMap<SampleId, usize> = HashMap::with_capacity(anns.len());
    for (i, mut ann) in anns.into_iter().enumerate() {
        let entry = format!("annotations[{i}]");
        let id = id_of(&ann, "question_id", path, &entry)?;
        for (key, types) in [
            ("answer_type", &mut out.answer_types),
            ("question_type", &mut out.question_types),
        ] {
            if ann.get(key).is_some() {
                types.insert(id.clone(), string_of(&ann, key, path, &entry)?);
            }
        }
        if let Some(&first) = first_at.get(&id) {
            return Err(MetricError::DuplicateId {
                path: path.to_path_buf(),
                index: i,
                first,
                id: id.to_string(),
            });
        }
        first_at.insert(id.clone(), i);
        field(&ann, "answers", path, &entry)?;
        let list = match ann.get_mut("answers") {
            Some(Value::Array(list)) => std::mem::take(list),
            _ => {
                return Err(format_err(
                    path,
                    format!("{entry}.answers"),
                    "expected a JSON list",
                ));
            }
        };
        let mut answers = Vec::with_capacity(list.len());
        for (j, a) in list.into_iter().enumerate() {
            let aentry = format!("{entry}.answers[{j}]");
            let answer = string_of(&a, "answer", path, &aentry)?;
            // The other fields matter only for the reference's whole-object comparison.
            let mut other_fields = match a {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            other_fields.remove("answer");
            answers.push(GtAnswer {
                answer,
                other_fields,
            });
        }
        out.answers.insert(id, answers);
    }
    Ok(out)
}

/// Read HatefulMemes annotations (JSON lines or a JSON list of `{"id", "label", ...}`); labels are
/// 0/1 (true = hateful, the positive class).
pub fn read_hateful_memes(path: &Path) -> Result<HashMap<SampleId, bool>, MetricError> {
    let items = read_json_list_or_lines(path)?;
    let mut out = HashMap::with_capacity(items.len());
    let mut first_at: HashMap<SampleId, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let entry = format!("entry {i}");
        let id = id_of(item, "id", path, &entry)?;
        if let Some(&first) = first_at.get(&id) {
            return Err(MetricError::DuplicateId {
                path: path.to_path_buf(),
                index: i,
                first,
                id: id.to_string(),
            });
        }
        first_at.insert(id.clone(), i);
        let label = match field(item, "label", path, &entry)? {
            Value::Number(n) if n.as_i64() == Some(0) => false,
            Value::Number(n) if n.as_i64() == Some(1) => true,
            other => {
                return Err(format_err(
                    path,
                    &entry,
                    format!("\"label\" must be 0 or 1, got {other}"),
                ));
            }
        };
        out.insert(id, label);
    }
    Ok(out)
}
