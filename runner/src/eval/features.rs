//! Demonstration-bank image features for RICES, and their on-disk cache.
//!
//! The features of a dataset's training split are computed once per vision encoder and stored
//! as a safetensors file holding one `features` tensor (F32, `[N, D]`, rows L2-normalised) and
//! metadata naming the format, the encoder identity, the dataset and a SHA-256 of the ordered
//! example ids. The file name carries a hash of all of these, so another encoder or an edited
//! training split never reads stale features; the metadata is checked again on reading. Files are
//! written to a temporary name and renamed, so a killed writer leaves no half file behind.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::plan::hash::hex;

/// Format tag stored in every cache file.
pub const CACHE_FORMAT: &str = "runner-demo-features/1";

/// Scales a vector to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A problem with demonstration features or their cache file.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The flat data does not hold whole rows.
    #[error("{len} values do not make rows of width {dim}")]
    Shape {
        /// Values given.
        len: usize,
        /// Row width.
        dim: usize,
    },
    /// The cache file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cache file is not a valid feature file for this key.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The image features of a demonstration pool: one L2-normalised row per training example.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureBank {
    dim: usize,
    data: Vec<f32>,
}

impl FeatureBank {
    /// Rows of width `dim` from row-major `data`; every row is L2-normalised.
    pub fn new(dim: usize, mut data: Vec<f32>) -> Result<Self, FeatureError> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(FeatureError::Shape {
                len: data.len(),
                dim,
            });
        }
        data.chunks_mut(dim).for_each(l2_normalize);
        Ok(FeatureBank { dim, data })
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether the bank has no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All rows, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// What a cached feature file must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Identity of the encoder that produced the features (e.g. a content hash of its weights
    /// and preprocessing settings).
    pub encoder: String,
    /// Dataset name.
    pub dataset: String,
    /// SHA-256 of the training split's example ids, in order.
    pub ids_sha256: String,
    /// Number of training examples.
    pub count: usize,
}

impl CacheKey {
    /// The key of `dataset`'s training split with example ids `ids` under `encoder`.
    pub fn new<'a>(encoder: &str, dataset: &str, ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut h = Sha256::new();
        let mut count = 0;
        for id in ids {
            h.update((id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
            count += 1;
        }
        CacheKey {
            encoder: encoder.to_string(),
            dataset: dataset.to_string(),
            ids_sha256: hex(&h.finalize()),
            count,
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), CACHE_FORMAT.to_string()),
            ("encoder".to_string(), self.encoder.clone()),
            ("dataset".to_string(), self.dataset.clone()),
            ("ids_sha256".to_string(), self.ids_sha256.clone()),
            ("count".to_string(), self.count.to_string()),
        ])
    }

    /// The cache file of this key inside `dir`: `{dataset}-{hash16}.safetensors`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let mut h = Sha256::new();
        let mut meta: Vec<(String, String)> = self.metadata().into_iter().collect();
        meta.sort();
        for (k, v) in meta {
            for s in [k, v] {
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
        dir.join(format!(
            "{}-{}.safetensors",
            self.dataset,
            &hex(&h.finalize())[..16]
        ))
    }
}

/// Writes the bank under its key's path in `dir` (created if needed), atomically.
pub fn write_cache(
    dir: &Path,
    key: &CacheKey,
    bank: &FeatureBank,
) -> Result<PathBuf, FeatureError> {
    let path = key.path(dir);
    if bank.len() != key.count {
        return Err(FeatureError::Invalid {
            path,
            message: format!(
                "{} feature rows for {} training examples",
                bank.len(),
                key.count
            ),
        });
    }
    let bytes: Vec<u8> = bank.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let invalid = |e: safetensors::SafeTensorError| FeatureError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    };
    let view = TensorView::new(Dtype::F32, vec![bank.len(), bank.dim], &bytes).map_err(invalid)?;
    let buffer =
        safetensors::serialize([("features", view)], Some(key.metadata())).map_err(invalid)?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| FeatureError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("features"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&buffer).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Reads the bank cached for `key` in `dir`; `None` when no file exists for the key.
pub fn read_cache(dir: &Path, key: &CacheKey) -> Result<Option<FeatureBank>, FeatureError> {
    let path = key.path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FeatureError::Io { path, source }),
    };
    let invalid = |message: String| FeatureError::Invalid {
        path: path.clone(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
    let expected = key.metadata();
    let stored = meta.metadata().clone().unwrap_or_default();
    for (k, v) in &expected {
        if stored.get(k) != Some(v) {
            return Err(invalid(format!(
                "metadata `{k}` is {:?}, expected {v:?}",
                stored.get(k)
            )));
        }
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    let t = st
        .tensor("features")
        .map_err(|e| invalid(format!("tensor `features`: {e}")))?;
    let shape = t.shape().to_vec();
    if t.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != key.count {
        return Err(invalid(format!(
            "tensor `features` is {:?} {shape:?}, expected F32 [{}, D]",
            t.dtype(),
            key.count
        )));
    }
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    FeatureBank::new(shape[1], data).map(Some)
}
