//! The Perceiver resampler of OpenFlamingo (`helpers.PerceiverResampler`, spec §1.4): a fixed set
//! of learned latents reads each image's patch tokens through `depth` attention + feed-forward
//! layers whose keys and values are `[media; latents]`.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{FeedForward, LayerNorm, linear_no_bias, merge_heads, split_heads};
use crate::softmax::softmax_last;

/// Hyper-parameters of the resampler (OpenFlamingo defaults: depth 6, 8 heads x 64, 64 latents, ff 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerceiverConfig {
    /// Width of the visual features (= vision encoder width).
    pub dim: usize,
    /// Number of attention + feed-forward layers.
    pub depth: usize,
    /// Width of each attention head.
    pub dim_head: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Number of latent vectors per image (the visual tokens the LM attends to).
    pub num_latents: usize,
    /// Feed-forward expansion factor.
    pub ff_mult: usize,
}

impl PerceiverConfig {
    /// The OpenFlamingo configuration for visual features of width `dim`.
    pub fn open_flamingo(dim: usize) -> Self {
        Self {
            dim,
            depth: 6,
            dim_head: 64,
            heads: 8,
            num_latents: 64,
            ff_mult: 4,
        }
    }
}

/// One `PerceiverAttention`: latents query `[media; latents]`.
#[derive(Debug, Clone)]
struct PerceiverAttention {
    norm_media: LayerNorm,
    norm_latents: LayerNorm,
    to_q: candle_nn::Linear,
    to_kv: candle_nn::Linear,
    to_out: candle_nn::Linear,
    heads: usize,
    scale: f64,
}

impl PerceiverAttention {
    fn new(cfg: &PerceiverConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = cfg.dim_head * cfg.heads;
        Ok(Self {
            norm_media: LayerNorm::new(cfg.dim, 1e-5, vb.pp("norm_media"))?,
            norm_latents: LayerNorm::new(cfg.dim, 1e-5, vb.pp("norm_latents"))?,
            to_q: linear_no_bias(cfg.dim, inner, vb.pp("to_q"))?,
            to_kv: linear_no_bias(cfg.dim, 2 * inner, vb.pp("to_kv"))?,
            to_out: linear_no_bias(inner, cfg.dim, vb.pp("to_out"))?,
            heads: cfg.heads,
            scale: (cfg.dim_head as f64).powf(-0.5),
        })
    }

    /// `x`: (N, v, D) media tokens, `latents`: (N, n, D); returns (N, n, D).
    fn apply(&self, x: &Tensor, latents: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        let x = self.norm_media.apply(x, fast)?;
        let latents = self.norm_latents.apply(latents, fast)?;
        let q = self.to_q.forward(&latents)?;
        // Keys/values from media first, then latents (spec: [media; latents]).
        let kv_in = Tensor::cat(&[&x, &latents], 1)?;
        let kv = self.to_kv.forward(&kv_in)?;
        let inner = kv.dim(2)? / 2;
        let k = kv.narrow(2, 0, inner)?;
        let v = kv.narrow(2, inner, inner)?;
        let q = (split_heads(&q, self.heads)? * self.scale)?;
        let k = split_heads(&k, self.heads)?;
        let v = split_heads(&v, self.heads)?;
        let sim = q.matmul(&k.t()?)?;
        let attn = softmax_last(&sim)?;
        let out = attn.matmul(&v)?;
        self.to_out.forward(&merge_heads(&out)?)
    }
}

/// The Perceiver resampler: `(B, T_img, v, D)` patch tokens -> `(B, T_img, num_latents, D)`.
#[derive(Debug, Clone)]
pub struct PerceiverResampler {
    latents: Tensor,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    norm: LayerNorm,
    cfg: PerceiverConfig,
}

impl PerceiverResampler {
    /// Builds the resampler under `vb` with OpenFlamingo names (`latents`, `layers.{i}.0.*`,
    /// `layers.{i}.1.*`, `norm.*`). With a fresh VarMap the latents are N(0, 1) and the linears
    /// use PyTorch's default init (spec §1.10).
    pub fn new(cfg: &PerceiverConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let latents = vb.get_with_hints(
            (cfg.num_latents, cfg.dim),
            "latents",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let mut layers = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let lvb = vb.pp("layers").pp(i);
            layers.push((
                PerceiverAttention::new(cfg, lvb.pp("0"))?,
                FeedForward::new(cfg.dim, cfg.ff_mult, lvb.pp("1"))?,
            ));
        }
        Ok(Self {
            latents,
            layers,
            norm: LayerNorm::new(cfg.dim, 1e-5, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PerceiverConfig {
        &self.cfg
    }

    /// Resamples `x` of shape `(B, T_img, v, D)` (or `(B, T_img, F, v, D)`, frames flattened into
    /// tokens) to `(B, T_img, num_latents, D)`. Each image is processed independently.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, false)
    }

    /// [`PerceiverResampler::forward`] with fused normalisation: same values, no
    /// backward pass (for inference).
    pub fn forward_inference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        let x = match x.rank() {
            5 => {
                let (b, t, f, v, d) = x.dims5()?;
                x.reshape((b, t, f * v, d))?
            }
            _ => x.clone(),
        };
        let (b, t, v, d) = x.dims4()?;
        let x = x.reshape((b * t, v, d))?;
        let n = self.cfg.num_latents;
        let mut latents = self
            .latents
            .unsqueeze(0)?
            .broadcast_as((b * t, n, d))?
            .contiguous()?;
        for (attn, ff) in &self.layers {
            latents = (attn.apply(&x, &latents, fast)? + &latents)?;
            latents = (ff.apply(&latents, fast)? + &latents)?;
        }
        self.norm.apply(&latents, fast)?.reshape((b, t, n, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::seeded_var_builder;
    use candle_core::{DType, Device, IndexOp};
    use candle_nn::VarMap;

    fn tiny() -> PerceiverConfig {
        PerceiverConfig {
            dim: 8,
            depth: 2,
            dim_head: 4,
            heads: 2,
            num_latents: 3,
            ff_mult: 2,
        }
    }

    #[test]
    fn shapes_and_names() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let p = PerceiverResampler::new(&tiny(), seeded_var_builder(&vm, 0, &dev))?;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev)?;
        assert_eq!(p.forward(&x)?.dims(), &[2, 3, 3, 8]);
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        for n in [
            "latents",
            "layers.0.0.norm_media.weight",
            "layers.1.0.norm_latents.bias",
            "layers.0.0.to_q.weight",
            "layers.0.0.to_kv.weight",
            "layers.0.0.to_out.weight",
            "layers.0.1.0.weight",
            "layers.0.1.1.weight",
            "layers.1.1.3.weight",
            "norm.bias",
        ] {
            assert!(names.iter().any(|k| k == n), "missing {n}");
        }
        Ok(())
    }

    /// Checks the `[media; latents]` key/value order against a hand-written reference with the
    /// same weights: attention over media tokens followed by the latents themselves.
    #[test]
    fn keys_are_media_then_latents() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = tiny();
        let p = PerceiverResampler::new(&cfg, seeded_var_builder(&vm, 3, &dev))?;
        let attn = &p.layers[0].0;
        let x = Tensor::randn(0f32, 1., (1, 5, 8), &dev)?;
        let lat = Tensor::randn(0f32, 1., (1, 3, 8), &dev)?;
        let got = attn.apply(&x, &lat, false)?;
        let fast = attn.apply(&x, &lat, true)?;
        let d = (&got - fast)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "fused path differs by {d}");
        // Reference with explicit per-head loops.
        let xn = attn.norm_media.forward(&x)?;
        let ln = attn.norm_latents.forward(&lat)?;
        let q = attn.to_q.forward(&ln)?.i(0)?;
        let kv_in = Tensor::cat(&[&xn, &ln], 1)?.i(0)?; // 8 tokens: 5 media then 3 latents
        let kv = attn.to_kv.forward(&kv_in.unsqueeze(0)?)?.i(0)?;
        let mut heads = vec![];
        for h in 0..cfg.heads {
            let qh = (q.narrow(1, h * 4, 4)? * 0.5)?;
            let kh = kv.narrow(1, h * 4, 4)?;
            let vh = kv.narrow(1, 8 + h * 4, 4)?;
            let a = candle_nn::ops::softmax_last_dim(&qh.matmul(&kh.t()?)?)?;
            heads.push(a.matmul(&vh)?);
        }
        let want = attn
            .to_out
            .forward(&Tensor::cat(&heads, 1)?.unsqueeze(0)?)?;
        let diff = (got - want)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }

    #[test]
    fn every_param_gets_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let p = PerceiverResampler::new(&tiny(), seeded_var_builder(&vm, 1, &dev))?;
        let x = Tensor::randn(0f32, 1., (1, 2, 4, 8), &dev)?;
        let loss = p.forward(&x)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        for (name, var) in vm.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor());
            let norm = g
                .map(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .unwrap_or(0.0);
            assert!(norm > 0.0, "no gradient for {name}");
        }
        Ok(())
    }
}
