//! Gated cross-attention (`helpers.GatedCrossAttentionBlock`, spec §1.5) and the media-location
//! mask (§1.7): each text token attends only to the latents of the latest `<image>` at or before
//! it; tokens before the first `<image>` get a zero attention output but still pass the gated FFW.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{FeedForward, LayerNorm, linear_no_bias, merge_heads, split_heads};
use crate::softmax::softmax_last;

/// Hyper-parameters of one gated cross-attention block (OpenFlamingo: 8 heads x 64, ff 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossAttnConfig {
    /// LM hidden width.
    pub dim: usize,
    /// Width of the visual latents (perceiver width).
    pub dim_visual: usize,
    /// Width of each attention head.
    pub dim_head: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Feed-forward expansion factor.
    pub ff_mult: usize,
}

impl CrossAttnConfig {
    /// The OpenFlamingo configuration for an LM of width `dim` and visual width `dim_visual`.
    pub fn open_flamingo(dim: usize, dim_visual: usize) -> Self {
        Self {
            dim,
            dim_visual,
            dim_head: 64,
            heads: 8,
            ff_mult: 4,
        }
    }
}

/// For every text position, the 1-based index of the image it may attend to (0 = none).
///
/// Normal forward: the inclusive running count of `<image>` tokens (the `<image>` token itself
/// belongs to its own image).
pub fn text_time_from_ids(ids: &[Vec<u32>], media_token: u32) -> Vec<Vec<u32>> {
    ids.iter()
        .map(|row| {
            let mut count = 0u32;
            row.iter()
                .map(|&t| {
                    if t == media_token {
                        count += 1;
                    }
                    count
                })
                .collect()
        })
        .collect()
}

/// Cached-media rule (generation steps after the prompt, rank-scoring continuations): every one
/// of the `len` new positions of row `b` attends to the last image of that row's cached prompt.
pub fn text_time_cached(media_counts: &[u32], len: usize) -> Vec<Vec<u32>> {
    media_counts.iter().map(|&c| vec![c; len]).collect()
}

/// The number of `<image>` tokens in each row.
pub fn media_counts(ids: &[Vec<u32>], media_token: u32) -> Vec<u32> {
    ids.iter()
        .map(|row| row.iter().filter(|&&t| t == media_token).count() as u32)
        .collect()
}

/// The cross-attention mask for one forward call, shared by all x-attn layers.
#[derive(Debug, Clone)]
pub struct MediaMask {
    /// (B, 1, T, T_img * n) u8: 1 where the key slot belongs to the query's image.
    allowed: Tensor,
    /// (B, 1, T, 1) f32: 0 for queries with no preceding image (their attention is zeroed).
    has_media: Tensor,
}

impl MediaMask {
    /// Builds the mask from per-position image indices (see [`text_time_from_ids`]) for
    /// `num_media` images of `latents` tokens each.
    pub fn new(
        text_time: &[Vec<u32>],
        num_media: usize,
        latents: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let b = text_time.len();
        let t = text_time.first().map(|r| r.len()).unwrap_or(0);
        let k = num_media * latents;
        let mut allowed = vec![0u8; b * t * k];
        let mut has = vec![0f32; b * t];
        for (bi, row) in text_time.iter().enumerate() {
            if row.len() != t {
                candle_core::bail!("media mask: ragged text_time rows");
            }
            for (ti, &tt) in row.iter().enumerate() {
                if tt > 0 {
                    has[bi * t + ti] = 1.0;
                    let j = tt as usize - 1;
                    if j < num_media {
                        let base = (bi * t + ti) * k + j * latents;
                        allowed[base..base + latents].fill(1);
                    }
                }
            }
        }
        Ok(Self {
            allowed: Tensor::from_vec(allowed, (b, 1, t, k), device)?,
            has_media: Tensor::from_vec(has, (b, 1, t, 1), device)?,
        })
    }

    /// Selects rows (batch entries) of the mask, e.g. to expand a batch to beams.
    pub fn index_rows(&self, rows: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            allowed: self.allowed.index_select(rows, 0)?,
            has_media: self.has_media.index_select(rows, 0)?,
        })
    }
}

/// Keys and values of one block computed from the visual latents, reusable across decoding steps.
#[derive(Debug, Clone)]
pub struct MediaKv {
    k: Tensor,
    v: Tensor,
}

impl MediaKv {
    /// Selects batch rows (e.g. expand prompts to beams).
    pub fn index_rows(&self, rows: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            k: self.k.index_select(rows, 0)?,
            v: self.v.index_select(rows, 0)?,
        })
    }
}

/// `MaskedCrossAttention` with `only_attend_immediate_media=True`.
#[derive(Debug, Clone)]
struct MaskedCrossAttention {
    norm: LayerNorm,
    to_q: candle_nn::Linear,
    to_kv: candle_nn::Linear,
    to_out: candle_nn::Linear,
    heads: usize,
    scale: f64,
}

impl MaskedCrossAttention {
    fn new(cfg: &CrossAttnConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = cfg.dim_head * cfg.heads;
        Ok(Self {
            norm: LayerNorm::new(cfg.dim, 1e-5, vb.pp("norm"))?,
            to_q: linear_no_bias(cfg.dim, inner, vb.pp("to_q"))?,
            to_kv: linear_no_bias(cfg.dim_visual, 2 * inner, vb.pp("to_kv"))?,
            to_out: linear_no_bias(inner, cfg.dim, vb.pp("to_out"))?,
            heads: cfg.heads,
            scale: (cfg.dim_head as f64).powf(-0.5),
        })
    }

    fn media_kv(&self, media: &Tensor) -> candle_core::Result<MediaKv> {
        let (b, t_img, n, d) = media.dims4()?;
        // Media are not re-normalised here: they are the perceiver's normed output.
        let kv = self.to_kv.forward(&media.reshape((b, t_img * n, d))?)?;
        let inner = kv.dim(2)? / 2;
        Ok(MediaKv {
            k: split_heads(&kv.narrow(2, 0, inner)?, self.heads)?,
            v: split_heads(&kv.narrow(2, inner, inner)?, self.heads)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        kv: &MediaKv,
        mask: &MediaMask,
        fast: bool,
    ) -> candle_core::Result<Tensor> {
        let q = self.to_q.forward(&self.norm.apply(x, fast)?)?;
        let q = (split_heads(&q, self.heads)? * self.scale)?;
        let sim = q.matmul(&kv.k.t()?)?; // (B, H, T, K)
        let allowed = mask.allowed.broadcast_as(sim.shape())?;
        let floor = Tensor::new(-f32::MAX, sim.device())?
            .to_dtype(sim.dtype())?
            .broadcast_as(sim.shape())?;
        let sim = allowed.where_cond(&sim, &floor)?;
        let attn = softmax_last(&sim)?;
        let attn = attn.broadcast_mul(&mask.has_media.to_dtype(attn.dtype())?)?;
        let out = attn.matmul(&kv.v)?;
        self.to_out.forward(&merge_heads(&out)?)
    }
}

/// The gated cross-attention block inserted before a decoder layer:
/// `x += tanh(attn_gate) * xattn(x, media)`, then `x += tanh(ff_gate) * ff(x)`.
#[derive(Debug, Clone)]
pub struct GatedCrossAttentionBlock {
    attn: MaskedCrossAttention,
    attn_gate: Tensor,
    ff: FeedForward,
    ff_gate: Tensor,
}

impl GatedCrossAttentionBlock {
    /// Builds the block under `vb` with OpenFlamingo names (`attn.norm`, `attn.to_q`,
    /// `attn.to_kv`, `attn.to_out`, `attn_gate`, `ff.0/1/3`, `ff_gate`); fresh gates are 0.
    pub fn new(cfg: &CrossAttnConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            attn: MaskedCrossAttention::new(cfg, vb.pp("attn"))?,
            attn_gate: vb.get_with_hints(1, "attn_gate", Init::Const(0.0))?,
            ff: FeedForward::new(cfg.dim, cfg.ff_mult, vb.pp("ff"))?,
            ff_gate: vb.get_with_hints(1, "ff_gate", Init::Const(0.0))?,
        })
    }

    /// Keys and values of this block for `media` `(B, T_img, n, D_visual)`.
    pub fn media_kv(&self, media: &Tensor) -> candle_core::Result<MediaKv> {
        self.attn.media_kv(media)
    }

    /// Applies the block to text hidden states `x` `(B, T, D)` (differentiable).
    pub fn forward(
        &self,
        x: &Tensor,
        kv: &MediaKv,
        mask: &MediaMask,
    ) -> candle_core::Result<Tensor> {
        self.apply(x, kv, mask, false)
    }

    /// [`GatedCrossAttentionBlock::forward`] with fused normalisation: same values,
    /// no backward pass (for inference).
    pub fn forward_inference(
        &self,
        x: &Tensor,
        kv: &MediaKv,
        mask: &MediaMask,
    ) -> candle_core::Result<Tensor> {
        self.apply(x, kv, mask, true)
    }

    fn apply(
        &self,
        x: &Tensor,
        kv: &MediaKv,
        mask: &MediaMask,
        fast: bool,
    ) -> candle_core::Result<Tensor> {
        let a = self.attn.forward(x, kv, mask, fast)?;
        let x = (a.broadcast_mul(&self.attn_gate.tanh()?)? + x)?;
        let f = self.ff.apply(&x, fast)?;
        f.broadcast_mul(&self.ff_gate.tanh()?)? + x
    }

    /// Current gate values `(attn_gate, ff_gate)` (before tanh).
    pub fn gates(&self) -> candle_core::Result<(f32, f32)> {
        let a = self
            .attn_gate
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let f = self
            .ff_gate
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((a[0], f[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::seeded_var_builder;
    use candle_core::IndexOp;
    use candle_nn::VarMap;

    fn cfg() -> CrossAttnConfig {
        CrossAttnConfig {
            dim: 8,
            dim_visual: 6,
            dim_head: 4,
            heads: 2,
            ff_mult: 2,
        }
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn text_time_rules() {
        let img = 9;
        let ids = vec![vec![1, 9, 2, 3, 9, 4], vec![1, 2, 3, 4, 5, 9]];
        assert_eq!(
            text_time_from_ids(&ids, img),
            vec![vec![0, 1, 1, 1, 2, 2], vec![0, 0, 0, 0, 0, 1]]
        );
        assert_eq!(media_counts(&ids, img), vec![2, 1]);
        assert_eq!(text_time_cached(&[2, 1], 2), vec![vec![2, 2], vec![1, 1]]);
    }

    /// Tokens before the first image get exactly the FFW-only output; tokens after image j see
    /// only image j's latents (changing another image leaves them unchanged).
    #[test]
    fn mask_semantics() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        GatedCrossAttentionBlock::new(&cfg(), seeded_var_builder(&vm, 5, &dev))?;
        for name in ["attn_gate", "ff_gate"] {
            vm.data().lock().unwrap()[name].set(&Tensor::new(&[0.7f32], &dev)?)?;
        }
        let block = GatedCrossAttentionBlock::new(&cfg(), seeded_var_builder(&vm, 5, &dev))?;
        let ids = vec![vec![1u32, 2, 9, 3, 9, 4]];
        let tt = text_time_from_ids(&ids, 9);
        let mask = MediaMask::new(&tt, 2, 3, &dev)?;
        let x = Tensor::randn(0f32, 1., (1, 6, 8), &dev)?;
        let media_a = Tensor::randn(0f32, 1., (1, 2, 3, 6), &dev)?;
        // Same first image, different second image.
        let second = Tensor::randn(0f32, 1., (1, 1, 3, 6), &dev)?;
        let media_b = Tensor::cat(&[&media_a.i((.., 0..1))?, &second], 1)?;
        let ya = block.forward(&x, &block.media_kv(&media_a)?, &mask)?;
        let fast = block.forward_inference(&x, &block.media_kv(&media_a)?, &mask)?;
        assert!(max_abs(&(&ya - fast)?) < 1e-5, "fused path differs");
        let yb = block.forward(&x, &block.media_kv(&media_b)?, &mask)?;
        // Positions 0..4 (before the second <image>) do not depend on image 2.
        assert!(max_abs(&(ya.i((.., 0..4))? - yb.i((.., 0..4))?)?) < 1e-6);
        assert!(max_abs(&(ya.i((.., 4..))? - yb.i((.., 4..))?)?) > 1e-4);
        // Positions 0, 1 (before any image): x + tanh(g) * ff(x) exactly.
        let ffo = block.ff.forward(&x)?;
        let expect = ((ffo * 0.7f64.tanh())? + &x)?;
        assert!(max_abs(&(ya.i((.., 0..2))? - expect.i((.., 0..2))?)?) < 1e-6);
        assert!(max_abs(&(ya.i((.., 2..3))? - expect.i((.., 2..3))?)?) > 1e-4);
        Ok(())
    }

    #[test]
    fn zero_gates_are_identity() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let block = GatedCrossAttentionBlock::new(&cfg(), seeded_var_builder(&vm, 2, &dev))?;
        assert_eq!(block.gates()?, (0.0, 0.0));
        let x = Tensor::randn(0f32, 1., (2, 4, 8), &dev)?;
        let media = Tensor::randn(0f32, 1., (2, 1, 3, 6), &dev)?;
        let mask = MediaMask::new(
            &text_time_from_ids(&[vec![9, 1, 2, 3], vec![1, 9, 2, 3]], 9),
            1,
            3,
            &dev,
        )?;
        let y = block.forward(&x, &block.media_kv(&media)?, &mask)?;
        assert_eq!(max_abs(&(y - &x)?), 0.0);
        Ok(())
    }

    #[test]
    fn every_param_gets_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        GatedCrossAttentionBlock::new(&cfg(), seeded_var_builder(&vm, 2, &dev))?;
        for name in ["attn_gate", "ff_gate"] {
            vm.data().lock().unwrap()[name].set(&Tensor::new(&[0.3f32], &dev)?)?;
        }
        let block = GatedCrossAttentionBlock::new(&cfg(), seeded_var_builder(&vm, 2, &dev))?;
        let x = Tensor::randn(0f32, 1., (1, 4, 8), &dev)?;
        let media = Tensor::randn(0f32, 1., (1, 1, 3, 6), &dev)?;
        let mask = MediaMask::new(&text_time_from_ids(&[vec![9, 1, 2, 3]], 9), 1, 3, &dev)?;
        let loss = block
            .forward(&x, &block.media_kv(&media)?, &mask)?
            .sqr()?
            .sum_all()?;
        let grads = loss.backward()?;
        for (name, var) in vm.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor()).map(max_abs).unwrap_or(0.0);
            assert!(g > 0.0, "no gradient for {name}");
        }
        Ok(())
    }
}
