//! The CLIP vision transformer as open_clip builds it (spec §1.2): conv1 patchify (no bias), class
//! token, positional embedding, `ln_pre`, pre-LN residual blocks with a fused q/k/v projection,
//! QuickGELU or GELU. OpenFlamingo uses the patch tokens with the class token dropped, taken before
//! `ln_post` (open_clip <= 2.22); applying `ln_post` to them is a switch. The pooled embedding
//! (CLS -> `ln_post` -> `proj`) serves RICES.
//!
//! Two directory layouts load: open_clip (`open_clip_config.json` + `open_clip_model.safetensors`
//! or `open_clip_pytorch_model.bin`, keys `visual.*`) and HF CLIP (`config.json` +
//! `model.safetensors`, keys `vision_model.*`, `visual_projection.weight`).

use std::path::{Path, PathBuf};

use candle_core::{D, Device, Module, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::nn::{LayerNorm, quick_gelu};
use crate::weights::WeightFile;

/// CLIP's (OpenAI) normalisation mean, the default when a config names none (digits as open_clip
/// writes them; rounded to f32 exactly as torch does).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's (OpenAI) normalisation standard deviation.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The MLP activation of the vision blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP weights).
    QuickGelu,
    /// Exact erf GELU (`nn.GELU()`).
    Gelu,
}

/// Which on-disk layout a vision directory used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionLayout {
    /// open_clip: `open_clip_config.json` + `visual.*` weights.
    OpenClip,
    /// HF transformers CLIP: `config.json` + `vision_model.*` weights.
    HfClip,
}

/// Hyper-parameters of the vision transformer and its preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Transformer width (= visual feature width).
    pub width: usize,
    /// Number of residual blocks.
    pub layers: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_dim: usize,
    /// MLP activation.
    pub activation: VisionActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Width of the pooled embedding after `proj` (None when the weights have no projection).
    pub output_dim: Option<usize>,
    /// Per-channel normalisation mean.
    pub image_mean: [f32; 3],
    /// Per-channel normalisation standard deviation.
    pub image_std: [f32; 3],
    /// Apply `ln_post` to the patch tokens (open_clip >= 2.23 behaviour). Default off, as the
    /// released OpenFlamingo checkpoints were trained.
    pub ln_post_tokens: bool,
}

impl VisionConfig {
    /// Number of patch tokens per image (class token excluded).
    pub fn num_patches(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g
    }
}

/// One pre-LN residual block (`ResidualAttentionBlock`).
#[derive(Debug, Clone)]
struct ResidualBlock {
    ln_1: LayerNorm,
    in_proj: candle_nn::Linear,
    out_proj: candle_nn::Linear,
    ln_2: LayerNorm,
    c_fc: candle_nn::Linear,
    c_proj: candle_nn::Linear,
    heads: usize,
    activation: VisionActivation,
}

impl ResidualBlock {
    fn attention(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let dh = d / self.heads;
        let qkv = self.in_proj.forward(x)?; // (b, n, 3d): q, k, v stacked
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((b, n, self.heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = (split(0)? * (dh as f64).powf(-0.5))?;
        let k = split(1)?;
        let v = split(2)?;
        let attn = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let out = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, d))?;
        self.out_proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attention(&self.ln_1.forward_inference(x)?)?)?;
        let h = self.c_fc.forward(&self.ln_2.forward_inference(&x)?)?;
        let h = match self.activation {
            VisionActivation::QuickGelu => quick_gelu(&h)?,
            VisionActivation::Gelu => h.gelu_erf()?,
        };
        x + self.c_proj.forward(&h)?
    }
}

/// The frozen CLIP vision transformer (plain tensors: it never trains).
#[derive(Debug, Clone)]
pub struct VisionEncoder {
    cfg: VisionConfig,
    layout: VisionLayout,
    /// conv1 as a matrix `(width, 3 * patch * patch)`.
    patch_weight: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    blocks: Vec<ResidualBlock>,
    ln_post: LayerNorm,
    /// `(width, output_dim)`, open_clip orientation.
    proj: Option<Tensor>,
}

/// Open-clip-named tensors for the encoder, whichever layout they came from.
struct Named<'a> {
    file: &'a WeightFile,
    layout: VisionLayout,
}

impl Named<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.file.get(name, shape)
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn usize_field(v: &Value, key: &str, default: Option<usize>, path: &Path) -> Result<usize> {
    match v.get(key) {
        Some(x) => {
            if let Some(n) = x.as_u64() {
                Ok(n as usize)
            } else if let Some(arr) = x.as_array() {
                // open_clip allows [h, w]; only square sizes are supported.
                let vals: Vec<u64> = arr.iter().filter_map(|a| a.as_u64()).collect();
                match vals.as_slice() {
                    [a, b] if a == b => Ok(*a as usize),
                    _ => Err(ModelError::config(
                        path,
                        format!("`{key}` must be a square size, got {x}"),
                    )),
                }
            } else {
                Err(ModelError::config(
                    path,
                    format!("`{key}` must be an integer, got {x}"),
                ))
            }
        }
        None => default.ok_or_else(|| ModelError::config(path, format!("missing `{key}`"))),
    }
}

fn triple(v: Option<&Value>, key: &str, default: [f32; 3], path: &Path) -> Result<[f32; 3]> {
    match v.and_then(|v| v.get(key)) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => {
            let vals: Vec<f32> = x
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_f64())
                        .map(|f| f as f32)
                        .collect()
                })
                .unwrap_or_default();
            match vals.as_slice() {
                [a, b, c] => Ok([*a, *b, *c]),
                [a] => Ok([*a; 3]),
                _ => Err(ModelError::config(
                    path,
                    format!("`{key}` must hold 3 numbers, got {x}"),
                )),
            }
        }
    }
}

impl VisionEncoder {
    /// Loads a vision directory in either layout (detected from the files present).
    /// `ln_post_tokens` sets [`VisionConfig::ln_post_tokens`].
    pub fn load(dir: &Path, ln_post_tokens: bool, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "vision encoder directory".into(),
            });
        }
        let oc_cfg = dir.join("open_clip_config.json");
        let hf_cfg = dir.join("config.json");
        if oc_cfg.is_file() {
            Self::load_open_clip(dir, &oc_cfg, ln_post_tokens, device)
        } else if hf_cfg.is_file() {
            Self::load_hf(dir, &hf_cfg, ln_post_tokens, device)
        } else {
            Err(ModelError::MissingFile {
                path: oc_cfg,
                what: "open_clip_config.json (open_clip layout) or config.json (HF CLIP layout)"
                    .into(),
            })
        }
    }

    fn load_open_clip(
        dir: &Path,
        cfg_path: &Path,
        ln_post_tokens: bool,
        device: &Device,
    ) -> Result<Self> {
        let root = read_json(cfg_path)?;
        let model_cfg = root.get("model_cfg").unwrap_or(&root);
        let vc = model_cfg
            .get("vision_cfg")
            .ok_or_else(|| ModelError::config(cfg_path, "missing `model_cfg.vision_cfg`"))?;
        for (key, unsupported) in [
            ("timm_model_name", "timm towers"),
            ("attentional_pool", "attentional pooling"),
            ("input_patchnorm", "input patchnorm"),
            ("ls_init_value", "layer scale"),
            ("global_average_pool", "global average pooling"),
        ] {
            match vc.get(key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(v) => {
                    return Err(ModelError::config(
                        cfg_path,
                        format!("vision_cfg.{key} = {v}: {unsupported} are not supported"),
                    ));
                }
            }
        }
        let width = usize_field(vc, "width", Some(768), cfg_path)?;
        let head_width = usize_field(vc, "head_width", Some(64), cfg_path)?;
        let mlp_ratio = vc.get("mlp_ratio").and_then(|v| v.as_f64()).unwrap_or(4.0);
        let quick = model_cfg
            .get("quick_gelu")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let pre = root.get("preprocess_cfg");
        // Only open_clip's default validation transform (shortest-side bicubic + centre crop) is
        // implemented; refuse configs that ask for another.
        for (key, allowed) in [("resize_mode", "shortest"), ("interpolation", "bicubic")] {
            match pre.and_then(|p| p.get(key)) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) if v == allowed => {}
                Some(v) => {
                    return Err(ModelError::config(
                        cfg_path,
                        format!("preprocess_cfg.{key} = {v} is not supported (only \"{allowed}\")"),
                    ));
                }
            }
        }
        let cfg = VisionConfig {
            image_size: usize_field(vc, "image_size", Some(224), cfg_path)?,
            patch_size: usize_field(vc, "patch_size", Some(16), cfg_path)?,
            width,
            layers: usize_field(vc, "layers", Some(12), cfg_path)?,
            heads: width / head_width.max(1),
            mlp_dim: (width as f64 * mlp_ratio) as usize,
            activation: if quick {
                VisionActivation::QuickGelu
            } else {
                VisionActivation::Gelu
            },
            layer_norm_eps: 1e-5,
            output_dim: model_cfg
                .get("embed_dim")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize),
            image_mean: triple(pre, "mean", OPENAI_CLIP_MEAN, cfg_path)?,
            image_std: triple(pre, "std", OPENAI_CLIP_STD, cfg_path)?,
            ln_post_tokens,
        };
        let st = dir.join("open_clip_model.safetensors");
        let bin = dir.join("open_clip_pytorch_model.bin");
        let file = if st.is_file() {
            WeightFile::safetensors(&st, device)?
        } else if bin.is_file() {
            let f = WeightFile::pth(&bin, None, device)?;
            if f.names().is_empty() {
                // open_clip training checkpoints: {"state_dict": {"module.visual...": ...}}.
                let f = WeightFile::pth(&bin, Some("state_dict"), device)?;
                strip_module_prefix(f)?
            } else {
                f
            }
        } else {
            return Err(ModelError::MissingFile {
                path: st,
                what:
                    "open_clip weights (open_clip_model.safetensors or open_clip_pytorch_model.bin)"
                        .into(),
            });
        };
        Self::from_weights(
            cfg,
            &Named {
                file: &file,
                layout: VisionLayout::OpenClip,
            },
        )
    }

    fn load_hf(dir: &Path, cfg_path: &Path, ln_post_tokens: bool, device: &Device) -> Result<Self> {
        let root = read_json(cfg_path)?;
        let model_type = root
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let vc = match model_type {
            "clip" => root
                .get("vision_config")
                .ok_or_else(|| ModelError::config(cfg_path, "missing `vision_config`"))?,
            "clip_vision_model" => &root,
            other => {
                return Err(ModelError::UnknownModelType {
                    path: cfg_path.to_path_buf(),
                    model_type: other.to_string(),
                    supported: "clip, clip_vision_model".into(),
                });
            }
        };
        let act = vc
            .get("hidden_act")
            .and_then(|v| v.as_str())
            .unwrap_or("quick_gelu");
        let activation = match act {
            "quick_gelu" => VisionActivation::QuickGelu,
            "gelu" => VisionActivation::Gelu,
            other => {
                return Err(ModelError::config(
                    cfg_path,
                    format!("hidden_act `{other}` is not supported"),
                ));
            }
        };
        let width = usize_field(vc, "hidden_size", Some(768), cfg_path)?;
        let pre_path = dir.join("preprocessor_config.json");
        let pre = if pre_path.is_file() {
            Some(read_json(&pre_path)?)
        } else {
            None
        };
        let cfg = VisionConfig {
            image_size: usize_field(vc, "image_size", Some(224), cfg_path)?,
            patch_size: usize_field(vc, "patch_size", Some(32), cfg_path)?,
            width,
            layers: usize_field(vc, "num_hidden_layers", Some(12), cfg_path)?,
            heads: usize_field(vc, "num_attention_heads", Some(12), cfg_path)?,
            mlp_dim: usize_field(vc, "intermediate_size", Some(3072), cfg_path)?,
            activation,
            layer_norm_eps: vc
                .get("layer_norm_eps")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5),
            output_dim: None,
            image_mean: triple(pre.as_ref(), "image_mean", OPENAI_CLIP_MEAN, &pre_path)?,
            image_std: triple(pre.as_ref(), "image_std", OPENAI_CLIP_STD, &pre_path)?,
            ln_post_tokens,
        };
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        let file = if st.is_file() {
            WeightFile::safetensors(&st, device)?
        } else if bin.is_file() {
            WeightFile::pth(&bin, None, device)?
        } else {
            return Err(ModelError::MissingFile {
                path: st,
                what: "HF CLIP weights (model.safetensors)".into(),
            });
        };
        Self::from_weights(
            cfg,
            &Named {
                file: &file,
                layout: VisionLayout::HfClip,
            },
        )
    }

    fn from_weights(mut cfg: VisionConfig, w: &Named) -> Result<Self> {
        if cfg.heads == 0 || !cfg.width.is_multiple_of(cfg.heads) || cfg.patch_size == 0 {
            return Err(ModelError::config(
                w.file.path(),
                format!(
                    "width {} / heads {} / patch {} are inconsistent",
                    cfg.width, cfg.heads, cfg.patch_size
                ),
            ));
        }
        let d = cfg.width;
        let p = cfg.patch_size;
        let n_pos = cfg.num_patches() + 1;
        let eps = cfg.layer_norm_eps;
        let hf = w.layout == VisionLayout::HfClip;
        let ln = |oc: &str, hfn: &str| -> Result<LayerNorm> {
            let base = if hf { hfn } else { oc };
            Ok(LayerNorm::from_tensors(
                w.get(&format!("{base}.weight"), &[d])?,
                w.get(&format!("{base}.bias"), &[d])?,
                eps,
            ))
        };
        let lin = |name: &str, out: usize, inp: usize| -> Result<candle_nn::Linear> {
            Ok(candle_nn::Linear::new(
                w.get(&format!("{name}.weight"), &[out, inp])?,
                Some(w.get(&format!("{name}.bias"), &[out])?),
            ))
        };
        let (conv, cls, pos) = if hf {
            (
                w.get(
                    "vision_model.embeddings.patch_embedding.weight",
                    &[d, 3, p, p],
                )?,
                w.get("vision_model.embeddings.class_embedding", &[d])?,
                w.get(
                    "vision_model.embeddings.position_embedding.weight",
                    &[n_pos, d],
                )?,
            )
        } else {
            (
                w.get("visual.conv1.weight", &[d, 3, p, p])?,
                w.get("visual.class_embedding", &[d])?,
                w.get("visual.positional_embedding", &[n_pos, d])?,
            )
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let block = if hf {
                let b = format!("vision_model.encoder.layers.{i}");
                let qkv_w: Vec<Tensor> = ["q", "k", "v"]
                    .iter()
                    .map(|n| w.get(&format!("{b}.self_attn.{n}_proj.weight"), &[d, d]))
                    .collect::<Result<_>>()?;
                let qkv_b: Vec<Tensor> = ["q", "k", "v"]
                    .iter()
                    .map(|n| w.get(&format!("{b}.self_attn.{n}_proj.bias"), &[d]))
                    .collect::<Result<_>>()?;
                ResidualBlock {
                    ln_1: ln("", &format!("{b}.layer_norm1"))?,
                    in_proj: candle_nn::Linear::new(
                        Tensor::cat(&qkv_w, 0)?,
                        Some(Tensor::cat(&qkv_b, 0)?),
                    ),
                    out_proj: lin(&format!("{b}.self_attn.out_proj"), d, d)?,
                    ln_2: ln("", &format!("{b}.layer_norm2"))?,
                    c_fc: lin(&format!("{b}.mlp.fc1"), cfg.mlp_dim, d)?,
                    c_proj: lin(&format!("{b}.mlp.fc2"), d, cfg.mlp_dim)?,
                    heads: cfg.heads,
                    activation: cfg.activation,
                }
            } else {
                let b = format!("visual.transformer.resblocks.{i}");
                ResidualBlock {
                    ln_1: ln(&format!("{b}.ln_1"), "")?,
                    in_proj: candle_nn::Linear::new(
                        w.get(&format!("{b}.attn.in_proj_weight"), &[3 * d, d])?,
                        Some(w.get(&format!("{b}.attn.in_proj_bias"), &[3 * d])?),
                    ),
                    out_proj: lin(&format!("{b}.attn.out_proj"), d, d)?,
                    ln_2: ln(&format!("{b}.ln_2"), "")?,
                    c_fc: lin(&format!("{b}.mlp.c_fc"), cfg.mlp_dim, d)?,
                    c_proj: lin(&format!("{b}.mlp.c_proj"), d, cfg.mlp_dim)?,
                    heads: cfg.heads,
                    activation: cfg.activation,
                }
            };
            blocks.push(block);
        }
        let proj = if hf {
            match w.file.try_get("visual_projection.weight")? {
                Some(t) => {
                    let out = t.dim(0)?;
                    crate::weights::check_shape(
                        w.file.path(),
                        "visual_projection.weight",
                        &t,
                        &[out, d],
                    )?;
                    Some(t.t()?.contiguous()?)
                }
                None => None,
            }
        } else {
            match w.file.try_get("visual.proj")? {
                Some(t) => {
                    let out = t.dim(D::Minus1)?;
                    crate::weights::check_shape(w.file.path(), "visual.proj", &t, &[d, out])?;
                    Some(t)
                }
                None => None,
            }
        };
        cfg.output_dim = proj.as_ref().map(|p| p.dim(1)).transpose()?;
        Ok(Self {
            layout: w.layout,
            patch_weight: conv.reshape((d, 3 * p * p))?,
            class_embedding: cls,
            positional_embedding: pos,
            ln_pre: if hf {
                ln("", "vision_model.pre_layrnorm")?
            } else {
                ln("visual.ln_pre", "")?
            },
            ln_post: if hf {
                ln("", "vision_model.post_layernorm")?
            } else {
                ln("visual.ln_post", "")?
            },
            blocks,
            proj,
            cfg,
        })
    }

    /// The configuration (sizes, activation, normalisation constants).
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The layout the weights were loaded from.
    pub fn layout(&self) -> VisionLayout {
        self.layout
    }

    /// Runs the transformer on `pixels` `(N, 3, S, S)` and returns all tokens `(N, 1 + P, D)`
    /// (class token first), before `ln_post`.
    fn encode(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = pixels.dims4()?;
        let p = self.cfg.patch_size;
        if c != 3 || h != self.cfg.image_size || w != self.cfg.image_size {
            candle_core::bail!(
                "vision encoder expects (N, 3, {s}, {s}) pixels, got {:?}",
                pixels.dims(),
                s = self.cfg.image_size
            );
        }
        let (gh, gw) = (h / p, w / p);
        // conv1 with kernel = stride = patch is a matmul over flattened patches (c, ph, pw order).
        let patches = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((n, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, gh * gw, c * p * p))?;
        let x = patches.broadcast_matmul(&self.patch_weight.t()?)?;
        let d = self.cfg.width;
        let cls = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((n, 1, d))?;
        let x = Tensor::cat(&[&cls.contiguous()?, &x], 1)?;
        let x = x.broadcast_add(&self.positional_embedding)?;
        let mut x = self.ln_pre.forward_inference(&x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x)
    }

    /// Patch tokens `(N, P, D)` of `pixels` `(N, 3, S, S)`, class token dropped; `ln_post` applied
    /// only when [`VisionConfig::ln_post_tokens`] is set. The result is detached (frozen encoder).
    pub fn forward_tokens(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.encode(&pixels.detach())?;
        let tokens = x.narrow(1, 1, x.dim(1)? - 1)?;
        let tokens = if self.cfg.ln_post_tokens {
            self.ln_post.forward_inference(&tokens)?
        } else {
            tokens.contiguous()?
        };
        Ok(tokens.detach())
    }

    /// The pooled image embedding `(N, output_dim)`: class token -> `ln_post` -> `proj` (open_clip
    /// `encode_image`, used by RICES). Without a projection in the weights, `(N, width)`.
    pub fn embed_image(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.encode(&pixels.detach())?;
        let pooled = self
            .ln_post
            .forward_inference(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        match &self.proj {
            Some(p) => pooled.matmul(p),
            None => Ok(pooled),
        }
    }
}

/// Re-keys a weight file without DDP's `module.` prefixes (reads its `visual.*` tensors).
fn strip_module_prefix(f: WeightFile) -> Result<WeightFile> {
    if !f.names().iter().any(|n| n.starts_with("module.")) {
        return Ok(f);
    }
    let mut tensors = std::collections::HashMap::new();
    for name in f.names() {
        let key = name.strip_prefix("module.").unwrap_or(&name).to_string();
        if key.starts_with("visual.") {
            tensors.insert(key, f.get_any(&name)?);
        }
    }
    Ok(WeightFile::from_tensors(f.path().to_path_buf(), tensors))
}

/// Where a vision directory's weights live, for error messages and reports.
pub fn vision_weights_path(dir: &Path) -> PathBuf {
    for name in [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    dir.to_path_buf()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::DType;
    use std::collections::HashMap;

    /// Writes a tiny random open_clip ViT into `dir` (width 16, 2 layers, 2 heads, 8px patches
    /// on 16px images, embed 6) and returns its tensors.
    pub(crate) fn write_open_clip(dir: &Path, quick_gelu: bool) -> HashMap<String, Tensor> {
        std::fs::create_dir_all(dir).unwrap();
        let dev = Device::Cpu;
        let r = |s: &[usize]| (Tensor::randn(0f32, 1., s, &dev).unwrap() * 0.2).unwrap();
        let d = 16;
        let mut t = HashMap::new();
        t.insert("visual.conv1.weight".into(), r(&[d, 3, 8, 8]));
        t.insert("visual.class_embedding".into(), r(&[d]));
        t.insert("visual.positional_embedding".into(), r(&[5, d]));
        for n in ["ln_pre", "ln_post"] {
            t.insert(format!("visual.{n}.weight"), (r(&[d]) + 1.0).unwrap());
            t.insert(format!("visual.{n}.bias"), r(&[d]));
        }
        t.insert("visual.proj".into(), r(&[d, 6]));
        for i in 0..2 {
            let b = format!("visual.transformer.resblocks.{i}");
            for n in ["ln_1", "ln_2"] {
                t.insert(format!("{b}.{n}.weight"), (r(&[d]) + 1.0).unwrap());
                t.insert(format!("{b}.{n}.bias"), r(&[d]));
            }
            t.insert(format!("{b}.attn.in_proj_weight"), r(&[3 * d, d]));
            t.insert(format!("{b}.attn.in_proj_bias"), r(&[3 * d]));
            t.insert(format!("{b}.attn.out_proj.weight"), r(&[d, d]));
            t.insert(format!("{b}.attn.out_proj.bias"), r(&[d]));
            t.insert(format!("{b}.mlp.c_fc.weight"), r(&[4 * d, d]));
            t.insert(format!("{b}.mlp.c_fc.bias"), r(&[4 * d]));
            t.insert(format!("{b}.mlp.c_proj.weight"), r(&[d, 4 * d]));
            t.insert(format!("{b}.mlp.c_proj.bias"), r(&[d]));
        }
        // A text tower key that must be ignored.
        t.insert("token_embedding.weight".into(), r(&[4, d]));
        candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
        let cfg = serde_json::json!({
            "model_cfg": {"embed_dim": 6, "quick_gelu": quick_gelu,
                "vision_cfg": {"image_size": 16, "layers": 2, "width": d, "patch_size": 8, "head_width": 8},
                "text_cfg": {"width": 16}},
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
        });
        std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
        t
    }

    fn to_hf(dir: &Path, oc: &HashMap<String, Tensor>) {
        std::fs::create_dir_all(dir).unwrap();
        let d = 16;
        let mut t = HashMap::new();
        let g = |k: &str| oc[k].clone();
        t.insert(
            "vision_model.embeddings.patch_embedding.weight".into(),
            g("visual.conv1.weight"),
        );
        t.insert(
            "vision_model.embeddings.class_embedding".into(),
            g("visual.class_embedding"),
        );
        t.insert(
            "vision_model.embeddings.position_embedding.weight".into(),
            g("visual.positional_embedding"),
        );
        for (o, h) in [("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")] {
            for s in ["weight", "bias"] {
                t.insert(
                    format!("vision_model.{h}.{s}"),
                    g(&format!("visual.{o}.{s}")),
                );
            }
        }
        t.insert(
            "visual_projection.weight".into(),
            g("visual.proj").t().unwrap().contiguous().unwrap(),
        );
        for i in 0..2 {
            let o = format!("visual.transformer.resblocks.{i}");
            let h = format!("vision_model.encoder.layers.{i}");
            for (a, b) in [
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
                ("attn.out_proj", "self_attn.out_proj"),
            ] {
                for s in ["weight", "bias"] {
                    t.insert(format!("{h}.{b}.{s}"), g(&format!("{o}.{a}.{s}")));
                }
            }
            let w = g(&format!("{o}.attn.in_proj_weight"));
            let bias = g(&format!("{o}.attn.in_proj_bias"));
            for (j, n) in ["q", "k", "v"].iter().enumerate() {
                t.insert(
                    format!("{h}.self_attn.{n}_proj.weight"),
                    w.narrow(0, j * d, d).unwrap().contiguous().unwrap(),
                );
                t.insert(
                    format!("{h}.self_attn.{n}_proj.bias"),
                    bias.narrow(0, j * d, d).unwrap().contiguous().unwrap(),
                );
            }
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
        let cfg = serde_json::json!({"model_type": "clip", "projection_dim": 6,
            "vision_config": {"hidden_size": d, "intermediate_size": 64, "num_attention_heads": 2,
                "num_hidden_layers": 2, "image_size": 16, "patch_size": 8, "hidden_act": "quick_gelu"}});
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("model-vision-{}-{name}", std::process::id()))
    }

    #[test]
    fn layouts_agree_and_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let oc_dir = tmp("oc");
        let hf_dir = tmp("hf");
        let tensors = write_open_clip(&oc_dir, true);
        to_hf(&hf_dir, &tensors);
        let a = VisionEncoder::load(&oc_dir, false, &dev)?;
        let b = VisionEncoder::load(&hf_dir, false, &dev)?;
        assert_eq!(a.config().activation, VisionActivation::QuickGelu);
        assert_eq!(a.config().image_mean, [0.5; 3]);
        assert_eq!(b.config().image_mean, OPENAI_CLIP_MEAN);
        let px = Tensor::randn(0f32, 1., (2, 3, 16, 16), &dev)?;
        let ta = a.forward_tokens(&px)?;
        let tb = b.forward_tokens(&px)?;
        assert_eq!(ta.dims(), &[2, 4, 16]);
        let diff = (&ta - &tb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let ea = a.embed_image(&px)?;
        let eb = b.embed_image(&px)?;
        assert_eq!(ea.dims(), &[2, 6]);
        assert!((ea - eb)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // ln_post on tokens changes them; every token then has ~zero mean before the affine.
        let c = VisionEncoder::load(&oc_dir, true, &dev)?;
        let tc = c.forward_tokens(&px)?;
        assert!((tc - &ta)?.abs()?.max_all()?.to_scalar::<f32>()? > 1e-3);
        // Patchify equals a real conv2d with stride = kernel.
        let conv = px.conv2d(&tensors["visual.conv1.weight"], 0, 8, 1, 1)?; // (2, 16, 2, 2)
        let conv = conv.flatten_from(2)?.transpose(1, 2)?;
        let mine = px
            .reshape((2, 3, 2, 8, 2, 8))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((2, 4, 192))?
            .broadcast_matmul(&a.patch_weight.t()?)?;
        assert!(
            (conv - mine)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?
                < 1e-4
        );
        std::fs::remove_dir_all(&oc_dir).ok();
        std::fs::remove_dir_all(&hf_dir).ok();
        Ok(())
    }

    #[test]
    fn bad_inputs_name_files() {
        let dev = Device::Cpu;
        let dir = tmp("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let err = VisionEncoder::load(&dir, false, &dev).unwrap_err();
        assert!(err.to_string().contains("open_clip_config.json"), "{err}");
        std::fs::write(dir.join("config.json"), r#"{"model_type": "siglip"}"#).unwrap();
        let err = VisionEncoder::load(&dir, false, &dev).unwrap_err();
        assert!(matches!(err, ModelError::UnknownModelType { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        let dir = tmp("badshape");
        let mut t = write_open_clip(&dir, false);
        t.insert(
            "visual.ln_pre.bias".into(),
            Tensor::zeros(3, DType::F32, &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
        let err = VisionEncoder::load(&dir, false, &dev).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("visual.ln_pre.bias") && msg.contains("open_clip_model.safetensors"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
