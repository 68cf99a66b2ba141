//! OpenFlamingo checkpoints (spec §3): loading `checkpoint.pt` in its three layouts with candle's
//! pickle reader (which executes no code), and saving trained weights as safetensors under the
//! same key names so that `open_flamingo` users can `load_state_dict(..., strict=False)` them.
//!
//! Layouts read: the released flat state dict; the trainer's `{"model_state_dict": ...}` with
//! `module.` prefixes (stripped like the reference's `k.replace("module.", "")`); a full
//! `state_dict()` that also holds the wrapper's duplicate names (`...decoder_layer.*`,
//! `old_decoder_blocks.*`, `gated_cross_attn_layers.*`) and the vision encoder. Safetensors files
//! (our own saves) load too.
//!
//! Reporting follows torch's `strict=False`, restricted to what a checkpoint can provide here:
//! `missing` lists the perceiver / cross-attention / embedding tensors the checkpoint lacks (they
//! keep their initial values), `unexpected` the keys that match nothing in this model, and
//! `ignored_frozen` the frozen backbone tensors (vision encoder, LM layers, buffers), which always
//! come from the pretrained directories. A shape mismatch is an error naming file and tensor, and
//! so is a checkpoint whose cross-attention layers belong to another LM layout.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::flamingo::Flamingo;
use crate::weights::WeightFile;

/// How a checkpoint file was laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// A flat `torch.save(state_dict)` (the released `checkpoint.pt`).
    FlatStateDict,
    /// The trainer's `{"model_state_dict": ..., "optimizer_state_dict": ..., ...}`.
    TrainerDict,
    /// A safetensors file.
    Safetensors,
}

/// What loading a checkpoint did (torch `strict=False` style).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// The checkpoint file, if one was given.
    pub checkpoint: Option<PathBuf>,
    /// Its layout.
    pub layout: Option<CheckpointLayout>,
    /// Model keys set from the checkpoint (OpenFlamingo names).
    pub loaded: Vec<String>,
    /// Trainable model keys the checkpoint lacks (they keep their initial values).
    pub missing: Vec<String>,
    /// Checkpoint keys that match nothing in this model.
    pub unexpected: Vec<String>,
    /// Checkpoint keys deliberately not loaded: frozen backbone tensors (vision encoder, LM
    /// layers, buffers: taken from the pretrained directories instead) and duplicate alias names
    /// (`gated_cross_attn_layers.*` next to the same block's `gated_cross_attn_layer.*`).
    pub ignored_frozen: Vec<String>,
}

/// Opens a checkpoint in any supported layout.
pub fn open_checkpoint(path: &Path, device: &Device) -> Result<(WeightFile, CheckpointLayout)> {
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
            what: "OpenFlamingo checkpoint".into(),
        });
    }
    if !is_zip(path)? {
        let file = WeightFile::safetensors(path, device)?;
        return Ok((file, CheckpointLayout::Safetensors));
    }
    // A trainer dict holds the state dict under `model_state_dict`; a flat dict has no such key.
    if let Ok(f) = WeightFile::pth(path, Some("model_state_dict"), device)
        && !f.names().is_empty()
    {
        return Ok((f, CheckpointLayout::TrainerDict));
    }
    let file = WeightFile::pth(path, None, device)?;
    if file.names().is_empty() {
        return Err(ModelError::weights(
            path,
            "no tensors found (expected a state dict, or a dict with `model_state_dict`)",
        ));
    }
    Ok((file, CheckpointLayout::FlatStateDict))
}

fn is_zip(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 2];
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| ModelError::io(path, e))?;
    Ok(n == 2 && &head == b"PK")
}

/// The trainable keys of `model` with their shapes, as OpenFlamingo names them.
fn expected_keys(model: &Flamingo) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut keys = BTreeMap::new();
    let data = model
        .varmap()
        .data()
        .lock()
        .map_err(|_| ModelError::Input("varmap lock poisoned".into()))?;
    for (name, var) in data.iter() {
        keys.insert(name.clone(), var.dims().to_vec());
    }
    let lm = model.lm();
    keys.insert(
        format!("lang_encoder.{}", lm.config().embedding_key()),
        lm.embeddings().base_table().dims().to_vec(),
    );
    if let (Some(head_key), Some(head)) = (&lm.config().head_key, lm.output_head()) {
        keys.insert(format!("lang_encoder.{head_key}"), head.dims().to_vec());
    }
    Ok(keys)
}

/// First path segments under which the model's LM keeps its weights (`transformer`, `gpt_neox`, ...).
fn lm_roots(model: &Flamingo) -> Vec<String> {
    let cfg = model.lm().config();
    let mut roots = vec![
        cfg.embedding_key()
            .split('.')
            .next()
            .unwrap_or("")
            .to_string(),
        cfg.decoder_layers_path()
            .split('.')
            .next()
            .unwrap_or("")
            .to_string(),
        "lm_head".to_string(),
    ];
    if let Some(h) = &cfg.head_key {
        roots.push(h.split('.').next().unwrap_or("").to_string());
    }
    roots
}

/// Loads an OpenFlamingo checkpoint into `model` (perceiver, cross-attention, embeddings).
/// Nothing is changed unless every tensor to load has the expected shape.
pub fn load_checkpoint(model: &mut Flamingo, path: &Path) -> Result<LoadReport> {
    let device = model.device().clone();
    let (file, layout) = open_checkpoint(path, &device)?;
    // Normalised name -> original name; `module.` removed everywhere as the reference does.
    let mut names: HashMap<String, String> = HashMap::new();
    for orig in file.names() {
        names.insert(orig.replace("module.", ""), orig);
    }
    let layers_path = model.lm().config().decoder_layers_path();
    // Name B (`gated_cross_attn_layers.{i}.*`) aliases name A of the same block.
    let alias_prefix = "lang_encoder.gated_cross_attn_layers.";
    let aliases: Vec<(String, String)> = names
        .iter()
        .filter_map(|(norm, orig)| {
            let rest = norm.strip_prefix(alias_prefix)?;
            let (idx, tail) = rest.split_once('.')?;
            let canonical =
                format!("lang_encoder.{layers_path}.{idx}.gated_cross_attn_layer.{tail}");
            Some((canonical, orig.clone()))
        })
        .collect();
    let mut alias_used = Vec::new();
    for (canonical, orig) in aliases {
        if let std::collections::hash_map::Entry::Vacant(e) = names.entry(canonical.clone()) {
            alias_used.push(canonical);
            e.insert(orig);
        }
    }

    let expected = expected_keys(model)?;
    let mut to_load: Vec<(String, Tensor)> = Vec::new();
    let mut report = LoadReport {
        checkpoint: Some(path.to_path_buf()),
        layout: Some(layout),
        ..LoadReport::default()
    };
    for (key, shape) in &expected {
        match names.get(key) {
            Some(orig) => {
                if let Some(got) = file.shape(orig)
                    && &got != shape
                {
                    return Err(ModelError::ShapeMismatch {
                        path: path.to_path_buf(),
                        name: orig.clone(),
                        expected: shape.clone(),
                        got,
                    });
                }
                let t = file.get(orig, shape)?;
                to_load.push((key.clone(), t));
            }
            None => report.missing.push(key.clone()),
        }
    }

    let roots = lm_roots(model);
    let mut xattn_in_ckpt = Vec::new();
    for (norm, orig) in &names {
        if expected.contains_key(norm) || alias_used.contains(norm) {
            continue;
        }
        if let Some(rest) = norm.strip_prefix(alias_prefix) {
            // Duplicate of a name-A key already loaded, or of a layer this model lacks.
            let canonical = rest
                .split_once('.')
                .map(|(i, t)| format!("lang_encoder.{layers_path}.{i}.gated_cross_attn_layer.{t}"));
            match canonical {
                Some(c) if expected.contains_key(&c) => report.ignored_frozen.push(orig.clone()),
                _ => report.unexpected.push(orig.clone()),
            }
            continue;
        }
        if norm.contains("gated_cross_attn") {
            xattn_in_ckpt.push(norm.clone());
            report.unexpected.push(orig.clone());
            continue;
        }
        let frozen = norm.starts_with("vision_encoder.")
            || norm.starts_with("lang_encoder.old_decoder_blocks.")
            || norm.contains(".decoder_layer.")
            || norm
                .strip_prefix("lang_encoder.")
                .and_then(|r| r.split('.').next())
                .is_some_and(|root| roots.iter().any(|x| x == root));
        if frozen {
            report.ignored_frozen.push(orig.clone());
        } else {
            report.unexpected.push(orig.clone());
        }
    }
    let loaded_xattn = to_load.iter().any(|(k, _)| k.contains("gated_cross_attn"));
    if !xattn_in_ckpt.is_empty() && !loaded_xattn {
        xattn_in_ckpt.sort();
        return Err(ModelError::CheckpointMismatch {
            path: path.to_path_buf(),
            message: format!(
                "its cross-attention weights (e.g. `{}`) do not match this model's LM, whose decoder \
                 layers are `lang_encoder.{layers_path}` (a checkpoint for another LM?)",
                xattn_in_ckpt[0]
            ),
        });
    }

    // Every shape is checked: apply.
    let emb_key = format!("lang_encoder.{}", model.lm().config().embedding_key());
    let head_key = model
        .lm()
        .config()
        .head_key
        .as_ref()
        .map(|h| format!("lang_encoder.{h}"));
    for (key, t) in to_load {
        if key == emb_key {
            model.lm_mut().embeddings_mut().set_full_table(&t)?;
        } else if Some(&key) == head_key.as_ref() {
            model.lm_mut().set_output_head(&t)?;
        } else {
            let data = model
                .varmap()
                .data()
                .lock()
                .map_err(|_| ModelError::Input("varmap lock poisoned".into()))?;
            if let Some(var) = data.get(&key) {
                var.set(&t)?;
            }
        }
        report.loaded.push(key);
    }
    report.loaded.sort();
    report.missing.sort();
    report.unexpected.sort();
    report.ignored_frozen.sort();
    Ok(report)
}

/// Saves perceiver, cross-attention and embedding weights of `model` as safetensors under
/// OpenFlamingo names (`perceiver.*`, `lang_encoder.<layers>.{i}.gated_cross_attn_layer.*`, the
/// LM's embedding key and, when untied, its output head key).
pub fn save_trainable(model: &Flamingo, path: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    {
        let data = model
            .varmap()
            .data()
            .lock()
            .map_err(|_| ModelError::Input("varmap lock poisoned".into()))?;
        for (name, var) in data.iter() {
            tensors.insert(name.clone(), var.as_tensor().detach().contiguous()?);
        }
    }
    let lm = model.lm();
    tensors.insert(
        format!("lang_encoder.{}", lm.config().embedding_key()),
        lm.embeddings().full_table()?.detach().contiguous()?,
    );
    if let (Some(head_key), Some(head)) = (&lm.config().head_key, lm.output_head()) {
        tensors.insert(
            format!("lang_encoder.{head_key}"),
            head.detach().contiguous()?,
        );
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| ModelError::weights(path, e))
}
