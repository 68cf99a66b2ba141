//! Shared building blocks of the Flamingo network, written with composed candle ops so that
//! gradients flow through them (candle's fused `layer_norm`, `softmax_last_dim` have no backward).

use std::sync::Mutex;

use candle_core::{D, DType, Device, Module, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// PyTorch `nn.LayerNorm` (affine), computed with primitive ops so it has a backward pass.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Wraps existing weight and bias tensors.
    pub fn from_tensors(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// Loads (or initialises to weight 1, bias 0) `weight` and `bias` of width `dim` under `vb`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// The scale parameter.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift parameter.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Normalises over the last dimension with the fused kernel: same values, no backward.
    /// Only for inference, or for frozen parts that nothing upstream trains through.
    pub fn forward_inference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
    }

    /// [`LayerNorm::forward_inference`] when `fast`, else the differentiable composed form.
    pub fn apply(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        if fast {
            self.forward_inference(x)
        } else {
            self.forward(x)
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dim = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / dim)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = (centered.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Bound of PyTorch's default `nn.Linear` init (kaiming-uniform with a=sqrt(5)): 1/sqrt(fan_in).
pub fn torch_linear_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A bias-free linear layer `y = x W^T` (`nn.Linear(in, out, bias=False)`), PyTorch default init.
pub fn linear_no_bias(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<candle_nn::Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", torch_linear_init(in_dim))?;
    Ok(candle_nn::Linear::new(weight, None))
}

/// A linear layer with bias (`nn.Linear(in, out)`), PyTorch default init.
pub fn linear(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<candle_nn::Linear> {
    let init = torch_linear_init(in_dim);
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(candle_nn::Linear::new(weight, Some(bias)))
}

/// Exact (erf) GELU, PyTorch's `nn.GELU()`.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    x.gelu_erf()
}

/// QuickGELU of OpenAI CLIP: `x * sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
}

/// `(B, N, H*Dh) -> (B, H, N, Dh)`, head-major feature layout (feature index = h*Dh + d).
pub fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, n, inner) = x.dims3()?;
    x.reshape((b, n, heads, inner / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `(B, H, N, Dh) -> (B, N, H*Dh)`, inverse of [`split_heads`].
pub fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, n, dh) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, n, h * dh))
}

/// The feed-forward block of OpenFlamingo (`helpers.FeedForward`): LayerNorm -> Linear(dim, mult*dim,
/// no bias) -> GELU(erf) -> Linear(mult*dim, dim, no bias). Weight names `0.*`, `1.weight`, `3.weight`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    norm: LayerNorm,
    up: candle_nn::Linear,
    down: candle_nn::Linear,
}

impl FeedForward {
    /// Builds the block under `vb` with hidden width `dim * mult`.
    pub fn new(dim: usize, mult: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = dim * mult;
        Ok(Self {
            norm: LayerNorm::new(dim, 1e-5, vb.pp("0"))?,
            up: linear_no_bias(dim, inner, vb.pp("1"))?,
            down: linear_no_bias(inner, dim, vb.pp("3"))?,
        })
    }
}

impl FeedForward {
    /// The block with fused (no-backward) normalisation when `fast`.
    pub fn apply(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        let h = self.up.forward(&self.norm.apply(x, fast)?)?;
        self.down.forward(&gelu_erf(&h)?)
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, false)
    }
}

/// A [`VarBuilder`] backend over a [`VarMap`] whose new variables are drawn from a seeded ChaCha
/// stream, so that the same seed and construction order always give the same initial weights
/// (candle's CPU device ignores `set_seed`). Existing variables are returned unchanged.
struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededVarMap {
    fn sample(&self, shape: &Shape, init: Init) -> candle_core::Result<Vec<f32>> {
        let n = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("seeded init rng poisoned".into()))?;
        let values = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n)
                .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
                .collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box-Muller; 1-u keeps the log argument in (0, 1].
                    let u1: f64 = 1.0 - rng.random::<f64>();
                    let u2: f64 = rng.random::<f64>();
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (mean + stdev * z) as f32
                })
                .collect(),
            Init::Kaiming { .. } => {
                candle_core::bail!("seeded init: Kaiming hints are not supported, use Uniform")
            }
        };
        Ok(values)
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
            if let Some(var) = data.get(name) {
                if var.shape() != &s {
                    candle_core::bail!(
                        "shape mismatch on {name}: expected {s:?}, found {:?}",
                        var.shape()
                    )
                }
                return Ok(var.as_tensor().clone());
            }
        }
        let values = self.sample(&s, h)?;
        let tensor = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?
            .insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("cannot find {name} in the varmap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A [`VarBuilder`] that creates trainable variables in `varmap`, initialised deterministically
/// from `seed` (variables already in `varmap`, e.g. loaded from a checkpoint, are reused as they are).
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_matches_fused_and_has_grad() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 1, &dev);
        let ln = LayerNorm::new(6, 1e-5, vb.pp("ln"))?;
        let x = Var::from_tensor(&Tensor::arange(0f32, 12., &dev)?.reshape((2, 6))?.sqr()?)?;
        let a = ln.forward(x.as_tensor())?;
        let b = ln.forward_inference(x.as_tensor())?;
        let diff = (a.clone() - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let grads = a.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(x.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn seeded_init_is_deterministic() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let make = |seed| -> candle_core::Result<Vec<f32>> {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, &dev);
            let l = linear_no_bias(4, 3, vb.pp("l"))?;
            l.weight().flatten_all()?.to_vec1::<f32>()
        };
        assert_eq!(make(7)?, make(7)?);
        assert_ne!(make(7)?, make(8)?);
        let w = make(7)?;
        assert!(w.iter().all(|v| v.abs() <= 0.5));
        Ok(())
    }

    #[test]
    fn quick_gelu_values() -> candle_core::Result<()> {
        let x = Tensor::new(&[-1f32, 0., 2.], &Device::Cpu)?;
        let y = quick_gelu(&x)?.to_vec1::<f32>()?;
        let expect: Vec<f32> = [-1f32, 0., 2.]
            .iter()
            .map(|v| v / (1.0 + (-1.702 * v).exp()))
            .collect();
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
        Ok(())
    }
}
