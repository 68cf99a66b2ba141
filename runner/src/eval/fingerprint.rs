//! A cell's fingerprint: everything its value depends on, stored with the value so that cells
//! computed differently are never averaged together (the report groups cells by fingerprint with
//! the `seed` object removed, and ignores the `run` object, which holds how it was computed).

use anyhow::Result;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cell::{CellSpec, CellStats, MAX_PROMPT_TOKENS};
use super::datasets::{DatasetInfo, EvalDataset, EvalExample, HATEFUL_MEMES_CLASSES, Task};
use super::prompts;
use crate::plan::hash::{hex, sha256_file};

/// The prompt templates of a task, with `{...}` where the example's fields go.
pub fn prompt_template(task: Task) -> Value {
    let (demo, query) = match task {
        Task::Captioning => (
            prompts::caption_prompt(Some("{caption}")),
            prompts::caption_prompt(None),
        ),
        Task::Vqa => (
            prompts::vqa_prompt("{question}", Some("{answer}")),
            prompts::vqa_prompt("{question}", None),
        ),
        Task::Classification => (
            prompts::hateful_memes_prompt("{text}", Some("{label}")),
            prompts::hateful_memes_prompt("{text}", None),
        ),
    };
    json!({"demo": demo, "separator": prompts::demo_separator(task), "query": query})
}

/// Decoding (generative tasks) or rank-scoring (classification) settings.
pub fn decoding(info: &DatasetInfo, spec: &CellSpec) -> Value {
    match info.decoding {
        Some(d) => json!({
            "search": if spec.num_beams > 1 { "beam" } else { "greedy" },
            "num_beams": spec.num_beams,
            "max_new_tokens": d.max_new_tokens,
            "min_new_tokens": d.min_new_tokens,
            "length_penalty": d.length_penalty,
            "stop": prompts::END_OF_CHUNK,
            "max_prompt_tokens": MAX_PROMPT_TOKENS,
        }),
        // The reference's class pass attends to left padding, so the batch size changes scores.
        None => json!({
            "rank_scoring": HATEFUL_MEMES_CLASSES,
            "normalize_length": true,
            "max_prompt_tokens": MAX_PROMPT_TOKENS,
            "batch_size": spec.batch_size,
        }),
    }
}

/// SHA-256 of the query ids, in order.
pub fn ids_sha256(queries: &[&EvalExample]) -> String {
    let mut h = Sha256::new();
    for q in queries {
        h.update((q.id.len() as u64).to_le_bytes());
        h.update(q.id.as_bytes());
    }
    hex(&h.finalize())
}

/// The fingerprint of a cell.
pub fn fingerprint(
    weights: &Value,
    precision: &Value,
    data: &EvalDataset,
    spec: &CellSpec,
    queries: &[&EvalExample],
    stats: &CellStats,
) -> Result<Value> {
    let mut annotations = serde_json::Map::new();
    for (key, path) in &data.files {
        annotations.insert(
            (*key).to_string(),
            json!({"path": path.display().to_string(), "sha256": sha256_file(path)?}),
        );
    }
    Ok(json!({
        "weights": weights,
        "precision": precision,
        "dataset": data.info.name,
        "task": data.info.task.as_str(),
        "metric": data.info.metric.name(),
        "shots": spec.shots,
        "prompt": prompt_template(data.info.task),
        "decoding": decoding(&data.info, spec),
        "demos": {
            "mode": serde_json::to_value(spec.demos)?,
            "query_set_size": spec.query_set_size,
            "protocol": serde_json::to_value(spec.protocol)?,
        },
        "split": {
            "queries": "test",
            "demonstrations": "train",
            "num_samples": spec.num_samples,
            "test_size": data.test.len(),
            "train_size": data.train.len(),
        },
        "annotations": annotations,
        "code": {
            "runner": env!("CARGO_PKG_VERSION"),
            "eval_stage": crate::plan::STAGE_VERSIONS
                .iter()
                .find(|(k, _)| *k == "eval")
                .map(|(_, v)| *v),
        },
        "seed": {
            "value": spec.seed,
            "sample_ids_sha256": ids_sha256(queries),
            "count": queries.len(),
        },
        "run": {
            "batch_size": spec.batch_size,
            "stats": stats,
        },
    }))
}
