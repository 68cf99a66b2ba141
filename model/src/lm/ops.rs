//! Differentiable building blocks shared by the LM families (fused candle kernels have no backward, so
//! they serve only where no gradient flows).

use candle_core::{D, Result, Tensor};

/// Additive value of a masked attention logit: HF's `torch.finfo(float32).min`. Finite, so fully masked rows
/// (padding queries) give a uniform softmax instead of NaN.
pub const MASK_VALUE: f32 = f32::MIN;

/// A linear layer `y = x Wᵀ + b` with HF weight layout `(out, in)`. A frozen weight gets no gradient
/// (see [`crate::frozen`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Wraps a weight `(out, in)` and optional bias `(out)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Applies the layer to `(.., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = crate::frozen::matmul_t(x, &self.weight)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// LayerNorm over the last axis with optional affine weight and bias, composed of differentiable ops.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// A LayerNorm; `weight`/`bias` absent means 1/0 (non-affine or bias-free variants).
    pub fn new(weight: Option<Tensor>, bias: Option<Tensor>, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// Normalises `x` over its last axis.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = centered.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        if let Some(w) = &self.weight {
            y = y.broadcast_mul(w)?;
        }
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    }
}

/// LLaMA's RMSNorm: `w · x / sqrt(mean(x²) + eps)`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// An RMSNorm with weight `(dim)`.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// Normalises `x` over its last axis.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?
            .broadcast_mul(&self.weight)
    }
}

/// Activation functions named by HF configs (`hidden_act`, `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu`.
    Relu,
    /// `gelu`: exact erf GELU.
    Gelu,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`: tanh approximation.
    GeluTanh,
    /// `silu` / `swish`.
    Silu,
    /// `quick_gelu`: `x·sigmoid(1.702x)`.
    QuickGelu,
}

impl Activation {
    /// Parses an HF activation name.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Self::Relu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            "quick_gelu" => Self::QuickGelu,
            _ => return None,
        })
    }

    /// Applies the activation.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::Gelu => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::Silu => x.silu(),
            Self::QuickGelu => x.broadcast_mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
        }
    }
}

/// Splits `(B, T, H·hd)` into heads `(B, H, T, hd)` (head-major feature layout).
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Merges heads `(B, H, T, hd)` back into `(B, T, H·hd)`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * hd))
}

/// Where the softmax scale is applied; HF families differ, and matching them keeps results bit-close.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// `q` is multiplied by the scale before `q·kᵀ` (OPT).
    Query(f64),
    /// `q·kᵀ` is multiplied by the scale (NeoX, MPT).
    Scores(f64),
    /// `q·kᵀ` is divided by the value (LLaMA: `/ sqrt(hd)`).
    DivScores(f64),
}

/// Softmax attention `(B, H, T, hd) × (B, H, S, hd)` with an additive bias broadcastable to `(B, H, T, S)`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    scale: Scale,
) -> Result<Tensor> {
    let q = match scale {
        Scale::Query(s) => (q * s)?,
        _ => q.clone(),
    };
    let mut scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    scores = match scale {
        Scale::Query(_) => scores,
        Scale::Scores(s) => (scores * s)?,
        Scale::DivScores(d) => (scores / d)?,
    };
    let scores = scores.broadcast_add(bias)?;
    let probs = crate::softmax::softmax_last(&scores)?;
    probs.matmul(&v.contiguous()?)
}

/// `rotate_half`: `[x1, x2] → [-x2, x1]` over the last axis.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// HF rotary embedding (GPT-NeoX / LLaMA, non-interleaved halves) on the first `cos.dim(-1)` features of
/// `x (B, H, T, hd)`; `cos`, `sin` are `(B, 1, T, rot)`.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let rot = cos.dim(D::Minus1)?;
    let hd = x.dim(D::Minus1)?;
    let (x_rot, x_pass) = if rot == hd {
        (x.clone(), None)
    } else {
        (
            x.narrow(D::Minus1, 0, rot)?,
            Some(x.narrow(D::Minus1, rot, hd - rot)?),
        )
    };
    let rotated = x_rot
        .broadcast_mul(cos)?
        .add(&rotate_half(&x_rot)?.broadcast_mul(sin)?)?;
    match x_pass {
        Some(pass) => Tensor::cat(&[&rotated, &pass], D::Minus1),
        None => Ok(rotated),
    }
}

/// Rotary tables for integer positions `(B, T)`: returns `cos`, `sin` of shape `(B, 1, T, rot)` computed in
/// f32 as HF does (`inv_freq = 1 / base^(2i/rot)`, `freqs = pos · inv_freq`, `emb = [freqs, freqs]`).
pub fn rotary_tables(
    positions: &[Vec<f32>],
    rot: usize,
    base: f64,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..rot / 2)
        .map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / rot as f32))
        .collect();
    let b = positions.len();
    let t = positions.first().map_or(0, Vec::len);
    let mut cos = Vec::with_capacity(b * t * rot);
    let mut sin = Vec::with_capacity(b * t * rot);
    for row in positions {
        for &p in row {
            for _half in 0..2 {
                for &f in &inv_freq {
                    let a = p * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
    }
    let cos = Tensor::from_vec(cos, (b, 1, t, rot), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (b, 1, t, rot), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Repeats key/value heads for grouped-query attention: `(B, Hkv, S, hd) → (B, Hkv·n, S, hd)`.
pub fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, s, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, h, n, s, hd))?
        .contiguous()?
        .reshape((b, h * n, s, hd))
}
