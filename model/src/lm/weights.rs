//! HF weight files read by tensor name: `model.safetensors`, sharded `model.safetensors.index.json`, and (for
//! the many older checkpoints that only ship them) PyTorch `pytorch_model.bin` / `pytorch_model.bin.index.json`
//! read with candle's pickle reader, which executes no code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Name of the single-file weights of an HF model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the index of sharded HF weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the single-file PyTorch weights of an HF model directory.
pub const PTH_SINGLE_FILE: &str = "pytorch_model.bin";
/// Name of the index of sharded PyTorch weights.
pub const PTH_INDEX_FILE: &str = "pytorch_model.bin.index.json";

/// One opened weight file.
enum WeightFile {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
}

impl WeightFile {
    fn open(path: &Path) -> Result<Self> {
        let is_pth = path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
        if is_pth {
            PthTensors::new(path, None)
                .map(Self::Pth)
                .map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("not a readable PyTorch zip checkpoint either: {e}"),
                })
        } else {
            // SAFETY: the file is mapped read-only; the crate never writes weight files while a model is loaded.
            unsafe { MmapedSafetensors::new(path) }
                .map(Self::Safetensors)
                .map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Self::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Self::Pth(p) => p.tensor_infos().keys().cloned().collect(),
        }
    }

    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Safetensors(st) => st.load(name, device),
            Self::Pth(p) => match p.get(name)? {
                Some(t) => t.to_device(device),
                None => candle_core::bail!("not found"),
            },
        }
    }
}

/// The weight files of one HF model directory, with the file that holds each tensor.
pub struct Weights {
    files: Vec<(PathBuf, WeightFile)>,
    /// Tensor name → index into `files`.
    names: HashMap<String, usize>,
    /// The path errors about a missing tensor name (the index when sharded).
    origin: PathBuf,
    device: Device,
    dtype: DType,
}

impl Weights {
    /// Opens the shards listed by `dir/model.safetensors.index.json`, else `dir/model.safetensors`, else the
    /// PyTorch equivalents (`pytorch_model.bin.index.json`, `pytorch_model.bin`).
    pub fn open(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let has = |name: &str| dir.join(name).is_file();
        let (index, single) = if !has(INDEX_FILE)
            && !has(SINGLE_FILE)
            && (has(PTH_INDEX_FILE) || has(PTH_SINGLE_FILE))
        {
            (dir.join(PTH_INDEX_FILE), dir.join(PTH_SINGLE_FILE))
        } else {
            (dir.join(INDEX_FILE), dir.join(SINGLE_FILE))
        };
        let (origin, shard_paths, declared): (
            PathBuf,
            Vec<PathBuf>,
            Option<HashMap<String, String>>,
        ) = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: HashMap<String, String>,
            }
            let parsed: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index.clone(),
                source,
            })?;
            let mut shards: Vec<String> = parsed.weight_map.values().cloned().collect();
            shards.sort();
            shards.dedup();
            let paths = shards.iter().map(|s| dir.join(s)).collect();
            (index, paths, Some(parsed.weight_map))
        } else if single.is_file() {
            (single.clone(), vec![single], None)
        } else {
            return Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no {SINGLE_FILE}, {INDEX_FILE}, {PTH_SINGLE_FILE} or {PTH_INDEX_FILE} in this directory"
                    ),
                ),
            });
        };
        let mut files = Vec::with_capacity(shard_paths.len());
        let mut names = HashMap::new();
        for (i, path) in shard_paths.into_iter().enumerate() {
            if !path.is_file() {
                return Err(ModelError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard listed in {} is missing", origin.display()),
                    ),
                });
            }
            let file = WeightFile::open(&path)?;
            for name in file.names() {
                names.insert(name, i);
            }
            files.push((path, file));
        }
        if let Some(declared) = declared {
            for (name, shard) in declared {
                let Some(&i) = names.get(&name) else {
                    return Err(ModelError::Tensor {
                        path: dir.join(&shard),
                        name,
                        message: format!(
                            "listed in {} but absent from the shard",
                            origin.display()
                        ),
                    });
                };
                if files[i].0 != dir.join(&shard) {
                    return Err(ModelError::Tensor {
                        path: origin.clone(),
                        name,
                        message: format!("found in {} instead of {shard}", files[i].0.display()),
                    });
                }
            }
        }
        Ok(Self {
            files,
            names,
            origin,
            device: device.clone(),
            dtype,
        })
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.keys().cloned().collect();
        v.sort();
        v
    }

    /// Loads `name`, checks its shape and converts it to the working dtype and device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get_any_shape(name)?;
        if t.dims() != shape {
            return Err(ModelError::Tensor {
                path: self.path_of(name),
                name: name.to_string(),
                message: format!("expected shape {shape:?}, found {:?}", t.dims()),
            });
        }
        Ok(t)
    }

    /// Loads `name` if present (with the shape check of [`Weights::get`]).
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads `name` whatever its shape.
    pub fn get_any_shape(&self, name: &str) -> Result<Tensor> {
        let Some(&i) = self.names.get(name) else {
            return Err(ModelError::Tensor {
                path: self.origin.clone(),
                name: name.to_string(),
                message: "missing".to_string(),
            });
        };
        let (path, file) = &self.files[i];
        let err = |e: candle_core::Error| ModelError::Tensor {
            path: path.clone(),
            name: name.to_string(),
            message: e.to_string(),
        };
        let t = file.load(name, &self.device).map_err(err)?;
        t.to_dtype(self.dtype).map_err(err)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        match self.names.get(name) {
            Some(&i) => self.files[i].0.clone(),
            None => self.origin.clone(),
        }
    }
}
