//! `runner score`: one metric over a predictions file and an annotations file.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use super::error::MetricError;
use super::formats::{
    read_caption_predictions, read_coco_captions, read_hateful_memes, read_score_predictions,
    read_vqa_annotations, read_vqa_predictions,
};
use super::{auc, cider, vqa};

/// A metric `runner score` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// CIDEr-D on pycocoevalcap's scale (e.g. 0.79).
    Cider,
    /// VQA accuracy in percent, two decimals.
    VqaAccuracy,
    /// ROC AUC in [0, 1].
    RocAuc,
}

impl Metric {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cider => "cider",
            Metric::VqaAccuracy => "vqa-accuracy",
            Metric::RocAuc => "roc-auc",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = MetricError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cider" => Ok(Metric::Cider),
            "vqa-accuracy" => Ok(Metric::VqaAccuracy),
            "roc-auc" => Ok(Metric::RocAuc),
            other => Err(MetricError::UnknownMetric(other.to_string())),
        }
    }
}

/// The result of `runner score` (`--json` prints exactly this object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    /// Metric name (`cider`, `vqa-accuracy`, `roc-auc`).
    pub metric: String,
    /// The score on the reference implementation's scale.
    pub score: f64,
    /// Number of scored predictions.
    pub count: usize,
}

/// Score `predictions` against `annotations`. Only predicted ids are scored; an id missing from the
/// annotations, a duplicate, an empty predictions file or an image without references is an error.
pub fn score_files(
    metric: Metric,
    predictions: &Path,
    annotations: &Path,
) -> Result<ScoreReport, MetricError> {
    let (score, count) = match metric {
        Metric::Cider => score_cider(predictions, annotations)?,
        Metric::VqaAccuracy => score_vqa(predictions, annotations)?,
        Metric::RocAuc => score_auc(predictions, annotations)?,
    };
    Ok(ScoreReport {
        metric: metric.name().to_string(),
        score,
        count,
    })
}

fn unknown(
    predictions: &Path,
    index: usize,
    id: &impl fmt::Display,
    annotations: &Path,
) -> MetricError {
    MetricError::UnknownId {
        path: predictions.to_path_buf(),
        index,
        id: id.to_string(),
        annotations: annotations.to_path_buf(),
    }
}

fn score_cider(predictions: &Path, annotations: &Path) -> Result<(f64, usize), MetricError> {
    let preds = read_caption_predictions(predictions)?;
    let gt = read_coco_captions(annotations)?;
    let mut predicted = std::collections::HashMap::with_capacity(preds.len());
    for (i, (id, caption)) in preds.iter().enumerate() {
        if !gt.refs.contains_key(id) {
            return Err(unknown(predictions, i, id, annotations));
        }
        predicted.insert(id.clone(), caption.clone());
    }
    // pycocoevalcap scores (and tokenizes) in the order of the annotation file's images.
    let mut cands = Vec::with_capacity(preds.len());
    for id in &gt.images {
        if let Some(caption) = predicted.remove(id) {
            if gt.refs[id].is_empty() {
                return Err(MetricError::NoReferences {
                    path: annotations.to_path_buf(),
                    id: id.to_string(),
                    what: "captions",
                });
            }
            cands.push((id.clone(), caption));
        }
    }
    let result = cider::score(&cands, &gt.refs)?;
    Ok((result.mean, cands.len()))
}

fn score_vqa(predictions: &Path, annotations: &Path) -> Result<(f64, usize), MetricError> {
    let preds = read_vqa_predictions(predictions)?;
    let gt = read_vqa_annotations(annotations)?;
    let mut per_question = Vec::with_capacity(preds.len());
    for (i, (id, answer)) in preds.iter().enumerate() {
        let answers = gt
            .get(id)
            .ok_or_else(|| unknown(predictions, i, id, annotations))?;
        if answers.is_empty() {
            return Err(MetricError::NoReferences {
                path: annotations.to_path_buf(),
                id: id.to_string(),
                what: "answers",
            });
        }
        per_question.push(vqa::question_accuracy(answer, answers));
    }
    Ok((vqa::accuracy(&per_question), per_question.len()))
}

fn score_auc(predictions: &Path, annotations: &Path) -> Result<(f64, usize), MetricError> {
    let preds = read_score_predictions(predictions)?;
    let gt = read_hateful_memes(annotations)?;
    let mut labels = Vec::with_capacity(preds.len());
    let mut scores = Vec::with_capacity(preds.len());
    for (i, (id, score)) in preds.iter().enumerate() {
        labels.push(
            *gt.get(id)
                .ok_or_else(|| unknown(predictions, i, id, annotations))?,
        );
        scores.push(*score);
    }
    let context = format!(
        "{} (labels of the {} predicted ids in {})",
        annotations.display(),
        preds.len(),
        predictions.display()
    );
    Ok((auc::roc_auc(&labels, &scores, &context)?, preds.len()))
}
