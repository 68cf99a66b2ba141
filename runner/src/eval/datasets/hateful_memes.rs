//! HatefulMemes JSON lines (`train.jsonl`, `test_seen.jsonl`, ...): one
//! `{"id", "img": "img/42953.png", "label": 0|1, "text"}` object per line. The image is the
//! base name of `img` inside the configured image directory, as in open_flamingo.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::json_id::JsonId;
use super::{DatasetError, EvalExample};

#[derive(Deserialize)]
struct Line {
    id: JsonId,
    img: String,
    label: Option<i64>,
    text: String,
}

/// Reads a JSONL file; blank lines are skipped, every other line must be a labelled meme.
pub fn read(path: &Path, images: &Path) -> Result<Vec<EvalExample>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = format!("line {}", i + 1);
        let m: Line = serde_json::from_str(&line)
            .map_err(|e| DatasetError::entry(path, entry.clone(), e.to_string()))?;
        let entry = format!("line {} (id {})", i + 1, m.id);
        let label = match m.label {
            Some(l @ (0 | 1)) => l as u8,
            Some(l) => {
                return Err(DatasetError::entry(
                    path,
                    entry,
                    format!("label must be 0 or 1, got {l}"),
                ));
            }
            None => {
                return Err(DatasetError::entry(
                    path,
                    entry,
                    "has no label (ROC AUC and demonstrations need one)",
                ));
            }
        };
        let base = m.img.rsplit('/').next().unwrap_or_default();
        if base.is_empty() {
            return Err(DatasetError::entry(
                path,
                entry,
                format!("`img` {:?} names no file", m.img),
            ));
        }
        out.push(EvalExample {
            id: m.id.to_string(),
            json_id: m.id,
            image: images.join(base),
            text: Some(m.text),
            answers: Vec::new(),
            label: Some(label),
        });
    }
    Ok(out)
}
