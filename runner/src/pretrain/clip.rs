//! A small CLIP-style vision tower trained contrastively on image-caption pairs, then saved in the
//! open_clip layout (`open_clip_config.json` + `open_clip_model.safetensors`, keys `visual.*`) so
//! that the model crate loads it exactly as it loads OpenAI's ViT-L/14.
//!
//! The text side is deliberately minimal (hashed bag of words -> linear projection): only the
//! vision tower is kept. Every op is a composed one with a backward pass.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap, ops};

use crate::config::schema::PretrainVision;

/// OpenAI CLIP normalisation mean (the model crate's constant, so the saved config and the loader
/// agree bit for bit), used by the preprocessing of every image the ViT sees.
pub const CLIP_MEAN: [f32; 3] = model::vision::OPENAI_CLIP_MEAN;
/// OpenAI CLIP normalisation standard deviation.
pub const CLIP_STD: [f32; 3] = model::vision::OPENAI_CLIP_STD;

/// Buckets of the hashed bag-of-words text encoder.
const TEXT_BUCKETS: usize = 4096;

struct Block {
    ln_1: (Tensor, Tensor),
    in_w: Tensor,
    in_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    ln_2: (Tensor, Tensor),
    fc_w: Tensor,
    fc_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
}

/// The trainable vision tower and text encoder.
pub struct ClipModel {
    cfg: PretrainVision,
    conv1: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: (Tensor, Tensor),
    blocks: Vec<Block>,
    ln_post: (Tensor, Tensor),
    proj: Tensor,
    text_embed: Tensor,
    text_proj: Tensor,
    logit_scale: Tensor,
}

fn ln(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor> {
    ops::layer_norm_slow(x, w, b, 1e-5)
}

fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.broadcast_matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x * ops::sigmoid(&(x * 1.702)?)?
}

impl ClipModel {
    /// A freshly initialised model whose vision weights are named as open_clip names them.
    pub fn new(cfg: &PretrainVision, vb: VarBuilder) -> Result<Self> {
        let (w, p) = (cfg.width as usize, cfg.patch_size as usize);
        let n = (cfg.image_size as usize / p).pow(2);
        let e = cfg.embed_dim as usize;
        let v = vb.pp("visual");
        let scale = (w as f64).powf(-0.5);
        let normal = |std: f64| candle_nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        };
        let ln_pair = |vb: VarBuilder| -> Result<(Tensor, Tensor)> {
            Ok((
                vb.get_with_hints(w, "weight", candle_nn::Init::Const(1.0))?,
                vb.get_with_hints(w, "bias", candle_nn::Init::Const(0.0))?,
            ))
        };
        let mut blocks = Vec::new();
        for i in 0..cfg.layers as usize {
            let b = v.pp(format!("transformer.resblocks.{i}"));
            let a = b.pp("attn");
            let m = b.pp("mlp");
            blocks.push(Block {
                ln_1: ln_pair(b.pp("ln_1"))?,
                in_w: a.get_with_hints((3 * w, w), "in_proj_weight", normal(scale))?,
                in_b: a.get_with_hints(3 * w, "in_proj_bias", candle_nn::Init::Const(0.0))?,
                out_w: a
                    .pp("out_proj")
                    .get_with_hints((w, w), "weight", normal(scale))?,
                out_b: a
                    .pp("out_proj")
                    .get_with_hints(w, "bias", candle_nn::Init::Const(0.0))?,
                ln_2: ln_pair(b.pp("ln_2"))?,
                fc_w: m
                    .pp("c_fc")
                    .get_with_hints((4 * w, w), "weight", normal(scale))?,
                fc_b: m
                    .pp("c_fc")
                    .get_with_hints(4 * w, "bias", candle_nn::Init::Const(0.0))?,
                proj_w: m.pp("c_proj").get_with_hints(
                    (w, 4 * w),
                    "weight",
                    normal((4.0 * w as f64).powf(-0.5)),
                )?,
                proj_b: m
                    .pp("c_proj")
                    .get_with_hints(w, "bias", candle_nn::Init::Const(0.0))?,
            });
        }
        Ok(ClipModel {
            cfg: cfg.clone(),
            conv1: v.get_with_hints(
                (w, 3, p, p),
                "conv1.weight",
                normal((3.0 * (p * p) as f64).powf(-0.5)),
            )?,
            class_embedding: v.get_with_hints(w, "class_embedding", normal(scale))?,
            positional_embedding: v.get_with_hints(
                (n + 1, w),
                "positional_embedding",
                normal(0.01),
            )?,
            ln_pre: ln_pair(v.pp("ln_pre"))?,
            blocks,
            ln_post: ln_pair(v.pp("ln_post"))?,
            proj: v.get_with_hints((w, e), "proj", normal(scale))?,
            text_embed: vb.get_with_hints((TEXT_BUCKETS, e), "text.embed", normal(0.02))?,
            text_proj: vb.get_with_hints((e, e), "text.proj", normal((e as f64).powf(-0.5)))?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                candle_nn::Init::Const((1.0f64 / 0.07).ln()),
            )?,
        })
    }

    fn attention(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let (bs, n, d) = x.dims3()?;
        let h = self.cfg.heads as usize;
        let dh = d / h;
        let qkv = linear(x, &b.in_w, Some(&b.in_b))?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((bs, n, h, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = (split(0)? * (dh as f64).powf(-0.5))?;
        let att = ops::softmax(&q.matmul(&split(1)?.t()?)?, D::Minus1)?;
        let out = att
            .matmul(&split(2)?)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bs, n, d))?;
        linear(&out, &b.out_w, Some(&b.out_b))
    }

    /// Pooled, projected image embeddings `(B, embed_dim)` of normalised pixels `(B, 3, H, W)`.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let p = self.cfg.patch_size as usize;
        let (bs, c, h, wd) = pixels.dims4()?;
        let (gh, gw) = (h / p, wd / p);
        // conv1 (kernel = stride = patch, no bias) as one matmul over flattened (c, ph, pw) patches:
        // the same numbers as a convolution, and a much cheaper backward on CPU.
        let patches = pixels
            .reshape((bs, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((bs, gh * gw, c * p * p))?;
        let w = self.conv1.dim(0)?;
        let kernel = self.conv1.reshape((w, c * p * p))?;
        let x = patches.broadcast_matmul(&kernel.t()?)?; // (B, n, w)
        let cls = self
            .class_embedding
            .reshape((1, 1, w))?
            .broadcast_as((bs, 1, w))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.positional_embedding)?;
        let mut x = ln(&x, &self.ln_pre)?;
        for b in &self.blocks {
            x = (&x + self.attention(b, &ln(&x, &b.ln_1)?)?)?;
            let h = quick_gelu(&linear(&ln(&x, &b.ln_2)?, &b.fc_w, Some(&b.fc_b))?)?;
            x = (&x + linear(&h, &b.proj_w, Some(&b.proj_b))?)?;
        }
        let pooled = ln(&x.narrow(1, 0, 1)?.squeeze(1)?, &self.ln_post)?;
        pooled.matmul(&self.proj)
    }

    /// Text embeddings `(B, embed_dim)` of captions: mean of hashed word embeddings, projected.
    /// The mean is one matmul with a constant bag-of-words matrix `(B, buckets)`, so the backward
    /// pass touches the embedding table once per batch rather than once per caption.
    pub fn encode_text(&self, captions: &[String], device: &Device) -> Result<Tensor> {
        let mut bow = vec![0f32; captions.len() * TEXT_BUCKETS];
        for (row, c) in captions.iter().enumerate() {
            let ids: Vec<u32> = words(c).map(|w| bucket(&w)).collect();
            let ids = if ids.is_empty() { vec![0] } else { ids };
            let share = 1.0 / ids.len() as f32;
            for id in ids {
                bow[row * TEXT_BUCKETS + id as usize] += share;
            }
        }
        let bow = Tensor::from_vec(bow, (captions.len(), TEXT_BUCKETS), device)?;
        bow.matmul(&self.text_embed)?.matmul(&self.text_proj)
    }

    /// The symmetric InfoNCE loss of a batch of matching (image, caption) pairs.
    pub fn loss(&self, pixels: &Tensor, captions: &[String]) -> Result<Tensor> {
        let img = l2_normalize(&self.encode_image(pixels)?)?;
        let txt = l2_normalize(&self.encode_text(captions, pixels.device())?)?;
        let scale = self.logit_scale.exp()?.clamp(0.0, 100.0)?;
        let logits = img.matmul(&txt.t()?)?.broadcast_mul(&scale)?;
        let n = captions.len();
        let target = Tensor::arange(0u32, n as u32, pixels.device())?;
        let a = candle_nn::loss::cross_entropy(&logits, &target)?;
        let b = candle_nn::loss::cross_entropy(&logits.t()?.contiguous()?, &target)?;
        (a + b)? / 2.0
    }
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// FNV-1a hash of a word into the text buckets (stable across runs and platforms).
fn bucket(w: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in w.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % TEXT_BUCKETS as u64) as u32
}

/// Normalises an RGB image already at the model's resolution into `(3, H, W)` CLIP pixels.
pub fn to_pixels(img: &image::RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let mut data = vec![0f32; 3 * (w * h) as usize];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * (w * h) as usize + (y * w + x) as usize] =
                (px[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Tensor::from_vec(data, (3, h as usize, w as usize), device)
}

/// Writes the vision tower as an open_clip directory.
pub fn save_open_clip(
    cfg: &PretrainVision,
    varmap: &VarMap,
    dir: &Path,
) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| "poisoned var map".to_string())?;
    let visual: HashMap<String, Tensor> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("visual."))
        .map(|(k, v): (&String, &Var)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let weights = dir.join("open_clip_model.safetensors");
    super::save_safetensors_pt(&visual, &weights).map_err(|e| e.to_string())?;
    let config = serde_json::json!({
        "model_cfg": {
            "embed_dim": cfg.embed_dim,
            "quick_gelu": true,
            "vision_cfg": {
                "image_size": cfg.image_size,
                "layers": cfg.layers,
                "width": cfg.width,
                "head_width": cfg.width / cfg.heads,
                "patch_size": cfg.patch_size,
                "mlp_ratio": 4.0
            }
        },
        "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}
    });
    let path = dir.join("open_clip_config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// A model and its variables for training, initialised from `cfg.seed`.
pub fn build(cfg: &PretrainVision, device: &Device) -> Result<(ClipModel, VarMap)> {
    let varmap = VarMap::new();
    let vb = super::init::seeded_var_builder(&varmap, cfg.seed, device);
    let model = ClipModel::new(cfg, vb)?;
    Ok((model, varmap))
}

impl Module for ClipModel {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.encode_image(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PretrainVision {
        PretrainVision {
            name: "t".into(),
            image_size: 16,
            patch_size: 8,
            width: 16,
            layers: 2,
            heads: 2,
            embed_dim: 8,
            steps: 1,
            batch_size: 4,
            lr: 1e-2,
            seed: 0,
        }
    }

    #[test]
    fn every_variable_gets_a_gradient_and_the_loss_falls() -> Result<()> {
        let dev = Device::Cpu;
        let (model, varmap) = build(&tiny(), &dev)?;
        let pixels = Tensor::randn(0f32, 1.0, (4, 3, 16, 16), &dev)?;
        let caps: Vec<String> = ["red circle", "blue square", "green star", "two dots"]
            .map(String::from)
            .to_vec();
        let loss = model.loss(&pixels, &caps)?;
        let grads = loss.backward()?;
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let n = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n > 0.0, "{name}: zero gradient");
        }
        let mut opt = candle_nn::AdamW::new_lr(varmap.all_vars(), 1e-2)?;
        use candle_nn::Optimizer;
        let first = loss.to_scalar::<f32>()?;
        for _ in 0..30 {
            opt.backward_step(&model.loss(&pixels, &caps)?)?;
        }
        let last = model.loss(&pixels, &caps)?.to_scalar::<f32>()?;
        assert!(last < first * 0.5, "{first} -> {last}");
        Ok(())
    }
}
