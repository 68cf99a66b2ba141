//! The published reference numbers (Flamingo, OpenFlamingo and the paper's ablations), shipped as
//! `data/paper_results.csv` and parsed into typed rows.
//!
//! The CSV holds the paper's Table 4 (Flamingo-3B/9B from Alayrac et al. 2022 and the five
//! OpenFlamingo models at 0, 4 and 32 shots, mean and std over 3 demo seeds), Table 5 (OPT-125M
//! trainable vs frozen special embeddings, 0/4/8 shots) and Table 7 (language backbones). Values are
//! on the paper's scale: CIDEr x100, VQA accuracy in percent, ROC AUC x100.

use serde::Serialize;

/// The embedded copy of `/shared/reference/paper_results.csv`.
pub const PAPER_RESULTS_CSV: &str = include_str!("../data/paper_results.csv");

/// Name under which the embedded CSV appears in error messages.
pub const PAPER_RESULTS_NAME: &str = "results/data/paper_results.csv";

const HEADER: [&str; 7] = [
    "model", "dataset", "metric", "shots", "mean", "std", "source",
];

/// Errors of reading a reference CSV; each names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The header is not `model,dataset,metric,shots,mean,std,source`.
    #[error("{file}: header must be `{}`, found `{found}`", HEADER.join(","))]
    Header {
        /// File name.
        file: String,
        /// The header found.
        found: String,
    },
    /// A line has fewer than 7 fields.
    #[error("{file}:{line}: expected 7 comma-separated fields, found {found}")]
    Fields {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Number of fields found.
        found: usize,
    },
    /// A field does not parse.
    #[error("{file}:{line}: field `{field}` = `{value}`: {why}")]
    Field {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        field: &'static str,
        /// The raw value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The same model, dataset and shots appear twice.
    #[error("{file}:{line}: duplicate entry for {model} / {dataset} / {shots} shots")]
    Duplicate {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Model.
        model: String,
        /// Dataset.
        dataset: String,
        /// Shots.
        shots: i64,
    },
}

/// One published number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceRow {
    /// Model id as in the CSV, e.g. `flamingo-3b`, `openflamingo-9b`.
    pub model: String,
    /// Dataset, in this runner's names (see [`canonical_dataset`]).
    pub dataset: String,
    /// Metric, in canonical form (`cider`, `vqa_accuracy`, `roc_auc`).
    pub metric: String,
    /// Number of in-context examples.
    pub shots: i64,
    /// Published value on the paper's scale.
    pub mean: f64,
    /// Published std over seeds, where the paper gives one.
    pub std: Option<f64>,
    /// Where the number comes from (paper and table).
    pub source: String,
}

/// The published numbers.
#[derive(Debug, Clone)]
pub struct Reference {
    rows: Vec<ReferenceRow>,
}

/// The seven evaluation datasets in the paper's order, in this runner's names.
pub const DATASETS: [&str; 7] = [
    "coco",
    "flickr30k",
    "vqav2",
    "okvqa",
    "textvqa",
    "vizwiz",
    "hatefulmemes",
];

/// Maps a dataset name as written by the paper, OpenFlamingo's scripts or this runner to this
/// runner's name (`coco`, `flickr30k`, `vqav2`, `okvqa`, `textvqa`, `vizwiz`, `hatefulmemes`).
pub fn canonical_dataset(name: &str) -> Option<&'static str> {
    let key: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    Some(match key.as_str() {
        "coco" | "cococaptions" | "mscoco" => "coco",
        "flickr30k" | "flickr" | "flickr30" => "flickr30k",
        "vqav2" | "vqa" => "vqav2",
        "okvqa" => "okvqa",
        "textvqa" => "textvqa",
        "vizwiz" => "vizwiz",
        "hatefulmemes" | "hateful" => "hatefulmemes",
        _ => return None,
    })
}

/// Canonical metric name: lowercase with `_` (the store and `runner score` write `vqa-accuracy`
/// and `roc-auc`; the CSV writes `vqa_accuracy` and `roc_auc`).
pub fn canonical_metric(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// Factor from the scale a metric is stored on to the paper's scale: CIDEr is stored on
/// pycocoevalcap's scale (0.79) and ROC AUC as a fraction, both reported x100 in the paper; VQA
/// accuracy is stored in percent already. Unknown metrics are shown as stored.
pub fn paper_scale(metric: &str) -> f64 {
    match canonical_metric(metric).as_str() {
        "cider" | "roc_auc" => 100.0,
        _ => 1.0,
    }
}

/// How a metric's stored value relates to what is displayed, for report notes.
pub fn scale_note(metric: &str) -> &'static str {
    match canonical_metric(metric).as_str() {
        "cider" => "CIDEr x100 (stored on pycocoevalcap's scale, e.g. 0.79 -> 79.0)",
        "roc_auc" => "ROC AUC x100 (stored as a fraction)",
        "vqa_accuracy" => "VQA accuracy in percent (stored so)",
        _ => "shown as stored",
    }
}

/// Display name of a reference model: `flamingo-3b` -> `Flamingo-3B`,
/// `openflamingo-3b-instruct` -> `OpenFlamingo-3B (Instruct)`; other ids are returned unchanged.
pub fn model_display_name(model: &str) -> String {
    let (base, instruct) = match model.strip_suffix("-instruct") {
        Some(b) => (b, true),
        None => (model, false),
    };
    let pretty = if let Some(size) = base.strip_prefix("openflamingo-") {
        format!("OpenFlamingo-{}", size.to_ascii_uppercase())
    } else if let Some(size) = base.strip_prefix("flamingo-") {
        format!("Flamingo-{}", size.to_ascii_uppercase())
    } else {
        return model.to_string();
    };
    if instruct {
        format!("{pretty} (Instruct)")
    } else {
        pretty
    }
}

impl Reference {
    /// The embedded published numbers.
    pub fn paper() -> Result<Reference, ReferenceError> {
        Reference::parse(PAPER_RESULTS_CSV, PAPER_RESULTS_NAME)
    }

    /// Parses a reference CSV (`model,dataset,metric,shots,mean,std,source`; the source is the
    /// rest of the line and may contain commas; `std` may be empty). `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Reference, ReferenceError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
        let found: Vec<&str> = header.split(',').map(str::trim).collect();
        if found != HEADER {
            return Err(ReferenceError::Header {
                file: file.into(),
                found: header.into(),
            });
        }
        let mut rows: Vec<ReferenceRow> = Vec::new();
        for (i, raw) in lines {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = raw.splitn(7, ',').map(str::trim).collect();
            if fields.len() != 7 {
                return Err(ReferenceError::Fields {
                    file: file.into(),
                    line,
                    found: fields.len(),
                });
            }
            let bad = |field: &'static str, value: &str, why: String| ReferenceError::Field {
                file: file.into(),
                line,
                field,
                value: value.into(),
                why,
            };
            let model = fields[0].to_ascii_lowercase();
            if model.is_empty() {
                return Err(bad("model", fields[0], "empty".into()));
            }
            let dataset = canonical_dataset(fields[1]).ok_or_else(|| {
                bad(
                    "dataset",
                    fields[1],
                    format!("unknown dataset (expected one of {})", DATASETS.join(", ")),
                )
            })?;
            let metric = canonical_metric(fields[2]);
            if !matches!(metric.as_str(), "cider" | "vqa_accuracy" | "roc_auc") {
                return Err(bad(
                    "metric",
                    fields[2],
                    "expected cider, vqa_accuracy or roc_auc".into(),
                ));
            }
            let shots: i64 = fields[3]
                .parse()
                .map_err(|e| bad("shots", fields[3], format!("{e}")))?;
            let number = |field: &'static str, v: &str| -> Result<f64, ReferenceError> {
                let x: f64 = v.parse().map_err(|e| bad(field, v, format!("{e}")))?;
                if x.is_finite() && x >= 0.0 {
                    Ok(x)
                } else {
                    Err(bad(field, v, "must be a finite number >= 0".into()))
                }
            };
            let mean = number("mean", fields[4])?;
            let std = match fields[5] {
                "" => None,
                v => Some(number("std", v)?),
            };
            let source = fields[6].trim_matches('"').to_string();
            if rows
                .iter()
                .any(|r| r.model == model && r.dataset == dataset && r.shots == shots)
            {
                return Err(ReferenceError::Duplicate {
                    file: file.into(),
                    line,
                    model,
                    dataset: dataset.into(),
                    shots,
                });
            }
            rows.push(ReferenceRow {
                model,
                dataset: dataset.into(),
                metric,
                shots,
                mean,
                std,
                source,
            });
        }
        Ok(Reference { rows })
    }

    /// All rows, in file order.
    pub fn rows(&self) -> &[ReferenceRow] {
        &self.rows
    }

    /// Model ids in file order, each once.
    pub fn models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !out.contains(&r.model.as_str()) {
                out.push(&r.model);
            }
        }
        out
    }

    /// Whether the model appears in the file.
    pub fn has_model(&self, model: &str) -> bool {
        self.rows.iter().any(|r| r.model == model)
    }

    /// The published number of a model on a dataset (any accepted spelling) at a shot count.
    pub fn get(&self, model: &str, dataset: &str, shots: i64) -> Option<&ReferenceRow> {
        let dataset = canonical_dataset(dataset)?;
        self.rows
            .iter()
            .find(|r| r.model == model && r.dataset == dataset && r.shots == shots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_csv_holds_table_4_5_and_7() {
        let r = Reference::paper().unwrap();
        assert_eq!(r.rows().len(), 167);
        let models = r.models();
        assert_eq!(
            &models[..7],
            [
                "flamingo-3b",
                "flamingo-9b",
                "openflamingo-3b",
                "openflamingo-3b-instruct",
                "openflamingo-4b",
                "openflamingo-4b-instruct",
                "openflamingo-9b"
            ]
        );
        // Table 4: 7 models x 7 datasets x 3 shot settings.
        for m in &models[..7] {
            for d in DATASETS {
                for s in [0, 4, 32] {
                    assert!(r.get(m, d, s).is_some(), "{m} {d} {s}");
                }
            }
        }
        let f = r.get("flamingo-3b", "coco", 0).unwrap();
        assert_eq!((f.mean, f.std, f.metric.as_str()), (73.0, None, "cider"));
        let of = r.get("openflamingo-3b", "hateful_memes", 4).unwrap();
        assert_eq!((of.mean, of.std), (50.6, Some(0.8)));
        assert_eq!(
            of.source,
            "OpenFlamingo Table 4 (random demos, mean over 3 seeds)"
        );
        let t5 = r
            .get("ablation-opt125m-frozen-embeddings", "vqav2", 8)
            .unwrap();
        assert_eq!(t5.mean, 18.8);
    }

    #[test]
    fn bad_lines_are_named() {
        let head = "model,dataset,metric,shots,mean,std,source\n";
        let e = Reference::parse(&format!("{head}m,mars,cider,0,1,,x\n"), "f.csv").unwrap_err();
        assert!(e.to_string().starts_with("f.csv:2: field `dataset`"), "{e}");
        let e = Reference::parse(&format!("{head}m,coco,cider,zero,1,,x\n"), "f.csv").unwrap_err();
        assert!(e.to_string().contains("field `shots`"), "{e}");
        let e = Reference::parse(&format!("{head}m,coco,cider\n"), "f.csv").unwrap_err();
        assert!(matches!(
            e,
            ReferenceError::Fields {
                line: 2,
                found: 3,
                ..
            }
        ));
        let e = Reference::parse("a,b\n", "f.csv").unwrap_err();
        assert!(matches!(e, ReferenceError::Header { .. }));
        let dup = format!("{head}m,coco,cider,0,1,,x\nm,COCO,cider,0,2,,y\n");
        assert!(matches!(
            Reference::parse(&dup, "f.csv").unwrap_err(),
            ReferenceError::Duplicate { line: 3, .. }
        ));
    }

    #[test]
    fn names_and_scales() {
        assert_eq!(canonical_dataset("Flickr-30K"), Some("flickr30k"));
        assert_eq!(canonical_dataset("ok_vqa"), Some("okvqa"));
        assert_eq!(canonical_metric("vqa-accuracy"), "vqa_accuracy");
        assert_eq!(paper_scale("roc-auc"), 100.0);
        assert_eq!(paper_scale("vqa-accuracy"), 1.0);
        assert_eq!(
            model_display_name("openflamingo-3b-instruct"),
            "OpenFlamingo-3B (Instruct)"
        );
        assert_eq!(model_display_name("flamingo-9b"), "Flamingo-9B");
    }
}
