//! A cell's value from its stored predictions: the predictions are written in the reference's
//! results format (COCO caption results, VQA results, `[{"id","score"}]`) and scored by the same
//! function as `runner score`, against the dataset's annotation file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use results::Prediction;
use serde_json::{Value, json};

use super::datasets::{EvalDataset, EvalExample, Metric, Task};
use super::metrics::score::{self, ScoreReport};

/// The predictions file of a cell, in the reference's results format, in query order.
pub fn results_json(
    task: Task,
    queries: &[&EvalExample],
    preds: &HashMap<String, Prediction>,
) -> Result<Value> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let p = preds
            .get(&q.id)
            .with_context(|| format!("no stored prediction for query {}", q.id))?;
        let id = q.json_id.to_json();
        out.push(match task {
            Task::Captioning => json!({"image_id": id, "caption": p.prediction}),
            Task::Vqa => json!({"question_id": id, "answer": p.prediction}),
            Task::Classification => {
                let s = p.score.with_context(|| {
                    format!("classification prediction {} without a score", q.id)
                })?;
                json!({"id": id, "score": s})
            }
        });
    }
    Ok(Value::Array(out))
}

/// The annotation file a dataset is scored against.
pub fn annotations(data: &EvalDataset) -> Result<PathBuf> {
    let key = match data.info.task {
        Task::Captioning => "annotations",
        Task::Vqa | Task::Classification => "test_annotations",
    };
    data.files
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("{}: no `{key}` file to score against", data.info.name))
}

fn metric_of(m: Metric) -> score::Metric {
    match m {
        Metric::Cider => score::Metric::Cider,
        Metric::VqaAccuracy => score::Metric::VqaAccuracy,
        Metric::RocAuc => score::Metric::RocAuc,
    }
}

/// Writes `results_file` from the stored predictions of `queries` and scores it.
pub fn score_cell(
    data: &EvalDataset,
    queries: &[&EvalExample],
    preds: &[Prediction],
    results_file: &Path,
) -> Result<ScoreReport> {
    if queries.is_empty() {
        bail!("{}: the cell has no queries", data.info.name);
    }
    let by_id: HashMap<String, Prediction> = preds
        .iter()
        .map(|p| (p.example_id.clone(), p.clone()))
        .collect();
    let file = results_json(data.info.task, queries, &by_id)?;
    std::fs::write(results_file, serde_json::to_string(&file)?)
        .with_context(|| format!("writing {}", results_file.display()))?;
    let ann = annotations(data)?;
    score::score_files(metric_of(data.info.metric), results_file, &ann).with_context(|| {
        format!(
            "scoring {} against {}",
            results_file.display(),
            ann.display()
        )
    })
}
