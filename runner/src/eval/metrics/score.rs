//! `runner score`: one metric over a predictions file and an annotations file.

use std::collections::BTreeMap;
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
    /// VQA accuracy per `answer_type` (the official evaluation's `perAnswerType`); empty for
    /// other metrics.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_answer_type: BTreeMap<String, GroupScore>,
    /// VQA accuracy per `question_type` (`perQuestionType`), over the questions that have one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_question_type: BTreeMap<String, GroupScore>,
}

impl ScoreReport {
    /// The group scores as stored with an eval cell: `{"answer_type": {..}, "question_type":
    /// {..}}` with the non-empty groupings, or `None` when there are none.
    pub fn groups_json(&self) -> Option<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (key, groups) in [
            ("answer_type", &self.by_answer_type),
            ("question_type", &self.by_question_type),
        ] {
            if !groups.is_empty() {
                out.insert(key.into(), serde_json::json!(groups));
            }
        }
        (!out.is_empty()).then_some(serde_json::Value::Object(out))
    }
}

/// The score of one group of predictions (an answer or question type).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScore {
    /// The metric over the group, on the same scale as the overall score.
    pub score: f64,
    /// Number of predictions in the group.
    pub count: usize,
}

/// Accuracy per group, as the reference computes it: a left-to-right mean of the per-question
/// accuracies in prediction order, rounded like the overall score.
fn group_scores(groups: BTreeMap<String, Vec<f64>>) -> BTreeMap<String, GroupScore> {
    groups
        .into_iter()
        .map(|(name, accs)| {
            let score = GroupScore {
                score: vqa::accuracy(&accs),
                count: accs.len(),
            };
            (name, score)
        })
        .collect()
}

/// Score `predictions` against `annotations`. Only predicted ids are scored; an id missing from the
/// annotations, a duplicate, an empty predictions file or an image without references is an error.
pub fn score_files(
    metric: Metric,
    predictions: &Path,
    annotations: &Path,
) -> Result<ScoreReport, MetricError> {
    let report = |(score, count)| ScoreReport {
        metric: metric.name().to_string(),
        score,
        count,
        by_answer_type: BTreeMap::new(),
        by_question_type: BTreeMap::new(),
    };
    match metric {
        Metric::Cider => Ok(report(score_cider(predictions, annotations)?)),
        Metric::VqaAccuracy => score_vqa(predictions, annotations),
        Metric::RocAuc => Ok(report(score_auc(predictions, annotations)?)),
    }
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

fn score_vqa(predictions: &Path, annotations: &Path) -> Result<ScoreReport, MetricError> {
    let preds = read_vqa_predictions(predictions)?;
    let gt = read_vqa_annotations(annotations)?;
    let mut per_question = Vec::with_capacity(preds.len());
    let mut by_answer_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_question_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (i, (id, answer)) in preds.iter().enumerate() {
        let answers = gt
            .answers
            .get(id)
            .ok_or_else(|| unknown(predictions, i, id, annotations))?;
        if answers.is_empty() {
            return Err(MetricError::NoReferences {
                path: annotations.to_path_buf(),
                id: id.to_string(),
                what: "answers",
            });
        }
        let acc = vqa::question_accuracy(answer, answers);
        per_question.push(acc);
        let answer_type = gt.answer_types.get(id).map_or("other", String::as_str);
        by_answer_type
            .entry(answer_type.to_string())
            .or_default()
            .push(acc);
        if let Some(question_type) = gt.question_types.get(id) {
            by_question_type
                .entry(question_type.clone())
                .or_default()
                .push(acc);
        }
    }
    Ok(ScoreReport {
        metric: Metric::VqaAccuracy.name().to_string(),
        score: vqa::accuracy(&per_question),
        count: per_question.len(),
        by_answer_type: group_scores(by_answer_type),
        by_question_type: group_scores(by_question_type),
    })
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
