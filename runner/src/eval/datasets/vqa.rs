//! VQA-format question and annotation JSON (VQAv2, OK-VQA and open_flamingo's TextVQA / VizWiz
//! conversions). The two files are joined on `question_id`: the reference assumes
//! `questions[i]` and `annotations[i]` describe the same question, which the official files
//! happen to satisfy and re-ordered files silently break.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::json_id::JsonId;
use super::{DatasetError, EvalExample, read_json};

/// How a dataset names its image files (open_flamingo `VQADataset.get_img_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLayout {
    /// VQAv2 and OK-VQA: `COCO_{dir}_{image_id:012}.jpg`, `dir` being the image directory's own
    /// name (`train2014`, `val2014` or `test2015`).
    CocoSplitDir,
    /// TextVQA: `{image_id}.jpg`.
    IdJpg,
    /// VizWiz: `image_id` is the file name.
    FileName,
}

impl ImageLayout {
    /// The layout of a VQA dataset by name (`vqav2`, `okvqa`, `textvqa`, `vizwiz`).
    pub fn for_dataset(name: &str) -> Self {
        match name {
            "textvqa" => ImageLayout::IdJpg,
            "vizwiz" => ImageLayout::FileName,
            _ => ImageLayout::CocoSplitDir,
        }
    }
}

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    image_id: JsonId,
    question: String,
    question_id: JsonId,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct Annotation {
    question_id: JsonId,
    #[serde(default)]
    image_id: Option<JsonId>,
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
}

const COCO_DIRS: [&str; 3] = ["train2014", "val2014", "test2015"];

/// Reads one split: every question with its annotation, in question-file order.
///
/// A question without an annotation, an annotation without a question, a repeated
/// `question_id`, or an annotation whose `image_id` contradicts its question is an error naming
/// both files and the id.
pub fn read(
    questions_path: &Path,
    annotations_path: &Path,
    images: &Path,
    layout: ImageLayout,
) -> Result<Vec<EvalExample>, DatasetError> {
    let coco_dir = match layout {
        ImageLayout::CocoSplitDir => Some(coco_dir_name(images)?),
        _ => None,
    };
    let questions: QuestionsFile = read_json(questions_path)?;
    let annotations: AnnotationsFile = read_json(annotations_path)?;

    let mut by_id: HashMap<JsonId, (usize, Annotation)> =
        HashMap::with_capacity(annotations.annotations.len());
    for (i, a) in annotations.annotations.into_iter().enumerate() {
        let id = a.question_id.clone();
        if let Some((first, _)) = by_id.insert(id.clone(), (i, a)) {
            return Err(DatasetError::entry(
                annotations_path,
                format!("annotations[{i}] (question_id {id})"),
                format!("question_id {id} is annotated twice (also annotations[{first}])"),
            ));
        }
    }

    let mut seen: HashMap<JsonId, usize> = HashMap::with_capacity(questions.questions.len());
    let mut out = Vec::with_capacity(questions.questions.len());
    for (i, q) in questions.questions.into_iter().enumerate() {
        let qid = q.question_id;
        let entry = || format!("questions[{i}] (question_id {qid})");
        if let Some(first) = seen.insert(qid.clone(), i) {
            return Err(DatasetError::entry(
                questions_path,
                entry(),
                format!("question_id {qid} is asked twice (also questions[{first}])"),
            ));
        }
        let Some((ai, ann)) = by_id.remove(&qid) else {
            return Err(DatasetError::entry(
                questions_path,
                entry(),
                format!(
                    "has no annotation with question_id {qid} in {}",
                    annotations_path.display()
                ),
            ));
        };
        if let Some(img) = ann.image_id.as_ref().filter(|img| **img != q.image_id) {
            return Err(DatasetError::entry(
                annotations_path,
                format!("annotations[{ai}] (question_id {qid})"),
                format!(
                    "image_id {img} differs from the question's image_id {} in {}",
                    q.image_id,
                    questions_path.display()
                ),
            ));
        }
        if ann.answers.is_empty() {
            return Err(DatasetError::entry(
                annotations_path,
                format!("annotations[{ai}] (question_id {qid})"),
                "has no answers (a demonstration shows answers[0], scoring needs them all)",
            ));
        }
        let image = image_path(images, &q.image_id, layout, coco_dir)
            .map_err(|message| DatasetError::entry(questions_path, entry(), message))?;
        out.push(EvalExample {
            id: qid.to_string(),
            json_id: qid,
            image,
            text: Some(q.question),
            answers: ann.answers.into_iter().map(|a| a.answer).collect(),
            label: None,
        });
    }
    if let Some((qid, (ai, _))) = by_id.iter().min_by_key(|(_, (ai, _))| *ai) {
        return Err(DatasetError::entry(
            annotations_path,
            format!("annotations[{ai}] (question_id {qid})"),
            format!(
                "annotates question_id {qid}, which is not in {} ({} such annotation(s))",
                questions_path.display(),
                by_id.len()
            ),
        ));
    }
    Ok(out)
}

/// The COCO split name the VQAv2 / OK-VQA file names carry: the image directory's own name.
fn coco_dir_name(images: &Path) -> Result<&'static str, DatasetError> {
    let name = images
        .components()
        .next_back()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    COCO_DIRS.into_iter().find(|d| *d == name).ok_or_else(|| {
        DatasetError::entry(
            images,
            "image directory",
            format!(
                "VQAv2 / OK-VQA images are named COCO_<dir>_<image_id>.jpg after their directory, \
                 which must be one of {} (got `{name}`)",
                COCO_DIRS.join(", ")
            ),
        )
    })
}

fn image_path(
    images: &Path,
    image_id: &JsonId,
    layout: ImageLayout,
    coco_dir: Option<&str>,
) -> Result<PathBuf, String> {
    match layout {
        ImageLayout::CocoSplitDir => match image_id {
            JsonId::Int(id) => Ok(images.join(format!(
                "COCO_{}_{id:012}.jpg",
                coco_dir.unwrap_or_default()
            ))),
            JsonId::Str(s) => Err(format!(
                "image_id `{s}` is not an integer (COCO image files are named by number)"
            )),
        },
        ImageLayout::IdJpg => Ok(images.join(format!("{image_id}.jpg"))),
        ImageLayout::FileName => match image_id {
            JsonId::Str(s) if !s.is_empty() => Ok(images.join(s)),
            other => Err(format!(
                "image_id `{other}` is not a file name (VizWiz names images by file)"
            )),
        },
    }
}
