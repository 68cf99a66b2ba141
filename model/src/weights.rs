//! Named tensors read from one weights file (safetensors or a PyTorch zip pickle), with errors
//! that name the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

enum Source {
    Loaded(HashMap<String, Tensor>),
    Pth(candle_core::pickle::PthTensors),
}

/// The tensors of one weights file, read eagerly (safetensors) or on demand (PyTorch pickles,
/// one tensor at a time, so that one unreadable entry does not make the whole file unreadable).
pub struct WeightFile {
    path: PathBuf,
    source: Source,
    device: Device,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("tensors", &self.names().len())
            .finish()
    }
}

impl WeightFile {
    /// Reads every tensor of a `.safetensors` file; a truncated or corrupt file is an error naming it.
    pub fn safetensors(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| ModelError::weights(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            source: Source::Loaded(tensors),
            device: device.clone(),
        })
    }

    /// Opens a PyTorch zip pickle (`torch.save` of a state dict, or of a dict holding one under
    /// `key`). Tensors are read when asked for. Executes no code from the file.
    pub fn pth(path: &Path, key: Option<&str>, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "PyTorch weights".into(),
            });
        }
        let pth = candle_core::pickle::PthTensors::new(path, key)
            .map_err(|e| ModelError::weights(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            source: Source::Pth(pth),
            device: device.clone(),
        })
    }

    /// Opens `path` as safetensors or PyTorch pickle, chosen by the file's first bytes.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        use std::io::Read;
        let mut head = [0u8; 4];
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let n = f.read(&mut head).map_err(|e| ModelError::io(path, e))?;
        if n >= 2 && &head[..2] == b"PK" {
            Self::pth(path, None, device)
        } else {
            Self::safetensors(path, device)
        }
    }

    /// Builds a weight file from tensors already in memory (tests, conversions).
    pub fn from_tensors(path: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        let device = tensors
            .values()
            .next()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        Self {
            path: path.into(),
            source: Source::Loaded(tensors),
            device,
        }
    }

    /// The file these tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.source {
            Source::Loaded(m) => m.keys().cloned().collect(),
            Source::Pth(p) => p.tensor_infos().keys().cloned().collect(),
        };
        names.sort();
        names
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Loaded(m) => m.contains_key(name),
            Source::Pth(p) => p.tensor_infos().contains_key(name),
        }
    }

    /// The shape of tensor `name`, without reading its data.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::Loaded(m) => m.get(name).map(|t| t.dims().to_vec()),
            Source::Pth(p) => p.tensor_infos().get(name).map(|i| i.layout.dims().to_vec()),
        }
    }

    /// Tensor `name` as f32 on the file's device, if present.
    pub fn try_get(&self, name: &str) -> Result<Option<Tensor>> {
        let t = match &self.source {
            Source::Loaded(m) => m.get(name).cloned(),
            Source::Pth(p) => p.get(name).map_err(|e| ModelError::Weights {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })?,
        };
        match t {
            None => Ok(None),
            Some(t) => {
                let t = t.to_dtype(DType::F32)?.to_device(&self.device)?;
                Ok(Some(t))
            }
        }
    }

    /// Tensor `name` as f32; missing is an error naming file and tensor.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        self.try_get(name)?
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Tensor `name` as f32 with exactly the shape `expected`; errors name file and tensor.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let t = self.get_any(name)?;
        check_shape(&self.path, name, &t, expected)?;
        Ok(t)
    }
}

/// Errors with [`ModelError::ShapeMismatch`] unless `t` has shape `expected`.
pub fn check_shape(path: &Path, name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        return Err(ModelError::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: expected.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_safetensors_names_file() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("model-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        let path = dir.join("w.safetensors");
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu)?;
        candle_core::safetensors::save(&HashMap::from([("a".to_string(), t)]), &path)?;
        let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
        std::fs::write(&path, &bytes[..bytes.len() - 10]).map_err(|e| ModelError::io(&path, e))?;
        let err = WeightFile::safetensors(&path, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("w.safetensors"), "{err}");
        std::fs::write(&path, &bytes).map_err(|e| ModelError::io(&path, e))?;
        let w = WeightFile::open(&path, &Device::Cpu)?;
        let err = w.get("a", &[4, 5]).unwrap_err();
        assert!(
            err.to_string().contains("`a`") && err.to_string().contains("[4, 5]"),
            "{err}"
        );
        let err = w.get("b", &[4, 4]).unwrap_err();
        assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
