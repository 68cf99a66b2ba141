//! Reports: pivot tables of eval cells (rows dataset x shots, columns variants), mean +- std over
//! seeds (rendered by [`crate::render`] through the views of [`crate::compare`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{EvalCell, Store, StoreError};

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Box-drawn table for a terminal.
    Table,
    /// GitHub markdown.
    Markdown,
    /// Comma-separated values.
    Csv,
    /// JSON.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "markdown" | "md" => Ok(Format::Markdown),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(format!(
                "unknown format `{s}`: expected table, markdown, csv or json"
            )),
        }
    }
}

/// Mean and spread of one cell over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Aggregate {
    /// Mean over seeds.
    pub mean: f64,
    /// Population standard deviation over seeds (numpy's default, as the paper's tables).
    pub std: f64,
    /// Number of seeds.
    pub n: usize,
}

impl Aggregate {
    /// Aggregates values (empty -> None).
    pub fn of(values: &[f64]) -> Option<Aggregate> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        Some(Aggregate {
            mean,
            std: var.sqrt(),
            n,
        })
    }
}

/// A row of the pivot: one dataset at one shot count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RowKey {
    /// Position of the dataset in the paper's order.
    #[serde(skip)]
    pub order: usize,
    /// Dataset.
    pub dataset: String,
    /// Shots.
    pub shots: i64,
}

/// A pivot table of eval results.
#[derive(Debug, Clone, Serialize)]
pub struct Pivot {
    /// Column names (variants, or `experiment/variant` across experiments).
    pub columns: Vec<String>,
    /// Rows with one optional aggregate per column.
    pub rows: Vec<PivotRow>,
}

/// One row of a pivot.
#[derive(Debug, Clone, Serialize)]
pub struct PivotRow {
    /// Dataset and shots.
    #[serde(flatten)]
    pub key: RowKey,
    /// Metric of the dataset.
    pub metric: String,
    /// One aggregate per column (None when the column has no cell here).
    pub values: Vec<Option<Aggregate>>,
}

const PAPER_ORDER: [&str; 7] = [
    "coco",
    "flickr30k",
    "vqav2",
    "okvqa",
    "textvqa",
    "vizwiz",
    "hatefulmemes",
];

/// Builds the pivot of the named experiments (all when empty) from the store.
pub fn pivot(store: &Store, experiments: &[String]) -> Result<Pivot, StoreError> {
    let variants = store.variants(experiments)?;
    let multi = {
        let mut names: Vec<&str> = variants.iter().map(|v| v.experiment.as_str()).collect();
        names.dedup();
        names.len() > 1
    };
    let mut columns = Vec::new();
    let mut cells_by_col: Vec<Vec<EvalCell>> = Vec::new();
    for v in &variants {
        let cells = store.eval_cells(&v.job_hashes)?;
        if cells.is_empty() {
            continue;
        }
        columns.push(if multi {
            format!("{}/{}", v.experiment, v.variant)
        } else {
            v.variant.clone()
        });
        cells_by_col.push(cells);
    }
    Ok(pivot_cells(columns, &cells_by_col))
}

/// Builds a pivot from cells grouped by column.
pub fn pivot_cells(columns: Vec<String>, cells_by_col: &[Vec<EvalCell>]) -> Pivot {
    // (row) -> column -> values; cells with different fingerprints (seed aside) are kept apart
    // by averaging only the group of the most common fingerprint.
    let mut rows: BTreeMap<RowKey, (String, Vec<Option<Aggregate>>)> = BTreeMap::new();
    for (ci, cells) in cells_by_col.iter().enumerate() {
        let mut groups: BTreeMap<(RowKey, String), Vec<f64>> = BTreeMap::new();
        let mut metrics: BTreeMap<RowKey, String> = BTreeMap::new();
        for c in cells {
            // Group rows (`vqav2: number`) sort with their dataset.
            let dataset = c.dataset.split(GROUP_SEPARATOR).next().unwrap_or_default();
            let key = RowKey {
                order: PAPER_ORDER.iter().position(|d| *d == dataset).unwrap_or(99),
                dataset: c.dataset.clone(),
                shots: c.shots,
            };
            metrics.insert(key.clone(), c.metric.clone());
            groups
                .entry((key, fingerprint_without_seed(&c.fingerprint)))
                .or_default()
                .push(c.value);
        }
        let mut best: BTreeMap<RowKey, Vec<f64>> = BTreeMap::new();
        for ((key, _), vals) in groups {
            let slot = best.entry(key).or_default();
            if vals.len() > slot.len() {
                *slot = vals;
            }
        }
        for (key, vals) in best {
            let metric = metrics.get(&key).cloned().unwrap_or_default();
            let entry = rows
                .entry(key)
                .or_insert_with(|| (metric, vec![None; columns.len()]));
            entry.1[ci] = Aggregate::of(&vals);
        }
    }
    Pivot {
        columns,
        rows: rows
            .into_iter()
            .map(|(key, (metric, values))| PivotRow {
                key,
                metric,
                values,
            })
            .collect(),
    }
}

/// Joins a dataset and a group in the row names of a grouped report (`vqav2: number`).
pub const GROUP_SEPARATOR: &str = ": ";

/// Splits each cell into one cell per stored group of `kind` (`answer_type`, `question_type`),
/// named `dataset: group`, with the group's score and count; cells without such groups (other
/// metrics, or cells recorded before groups were stored) are left out.
pub fn group_cells(cells: &[EvalCell], kind: &str) -> Vec<EvalCell> {
    let mut out = Vec::new();
    for c in cells {
        let Some(groups) = c.groups.as_deref() else {
            continue;
        };
        let Ok(serde_json::Value::Object(mut all)) = serde_json::from_str(groups) else {
            continue;
        };
        let Some(serde_json::Value::Object(groups)) = all.remove(kind) else {
            continue;
        };
        for (name, g) in groups {
            let (Some(value), Some(count)) = (g["score"].as_f64(), g["count"].as_i64()) else {
                continue;
            };
            out.push(EvalCell {
                dataset: format!("{}{GROUP_SEPARATOR}{name}", c.dataset),
                value,
                count,
                groups: None,
                ..c.clone()
            });
        }
    }
    out
}

fn fingerprint_without_seed(fp: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(fp) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.remove("seed");
            // How a cell was computed (batching, cache counts, timings), not what it means.
            m.remove("run");
            serde_json::Value::Object(m).to_string()
        }
        _ => fp.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(ds: &str, shots: i64, seed: i64, v: f64) -> EvalCell {
        EvalCell {
            job_hash: format!("{ds}{shots}{seed}"),
            dataset: ds.into(),
            shots,
            seed,
            metric: "cider".into(),
            value: v,
            count: 10,
            fingerprint: format!("{{\"seed\":{seed},\"x\":1}}"),
            groups: None,
        }
    }

    #[test]
    fn mean_and_population_std_over_seeds() {
        let p = pivot_cells(
            vec!["a".into()],
            &[vec![
                cell("coco", 0, 1, 1.0),
                cell("coco", 0, 2, 3.0),
                cell("vqav2", 4, 1, 5.0),
            ]],
        );
        assert_eq!(p.rows.len(), 2);
        let a = p.rows[0].values[0].unwrap();
        assert_eq!((a.mean, a.std, a.n), (2.0, 1.0, 2));
    }
}
