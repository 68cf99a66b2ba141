//! Softmax over the last axis for masked attention on the CPU: one pass, with a backward.
//!
//! Masked attention logits hold a huge negative value (HF's `finfo.min`), so after the max is
//! subtracted glibc's `expf` sees arguments far below its underflow bound and takes its slow
//! error path (it sets `errno`) for every masked entry. With causal masks that is half of every
//! attention matrix, and nearly all of a many-image cross-attention matrix: a quarter of a 32-shot
//! evaluation's time went there. This kernel returns 0 for any argument whose `expf` would be
//! subnormal or zero (below ln(f32::MIN_POSITIVE) ≈ -87.3), so its values differ from candle's
//! softmax only in weights under 1.2e-38 and by rounding (it multiplies by 1/sum where candle
//! divides). Unlike candle's fused `softmax_last_dim` it has a backward, so training and inference
//! share it; candle's composed softmax takes five passes.

use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Result, Shape, Tensor};

/// Below this, `exp(x)` is under `f32::MIN_POSITIVE`: the kernel writes 0 instead.
const EXP_FLOOR: f32 = -87.33;

/// Softmax over the last axis with a backward pass: [`SoftmaxLast`] for f32 CPU tensors, candle's
/// kernels otherwise (the fused one when no gradient flows).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        // candle records the op for backward only when `x` tracks a gradient.
        return x.contiguous()?.apply_op1(SoftmaxLast);
    }
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// The custom op: forward on contiguous f32 rows, backward `y · (g − Σ g·y)`.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxLast;

impl CustomOp1 for SoftmaxLast {
    fn name(&self) -> &'static str {
        "softmax-last-cpu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("softmax-last-cpu: f32 input expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax-last-cpu: contiguous input expected");
        };
        let dim = layout.dims().last().copied().unwrap_or(1).max(1);
        let src = &data[start..end];
        let mut dst = vec![0f32; src.len()];
        for (row, out) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in out.iter_mut().zip(row) {
                let z = v - max;
                *o = if z < EXP_FLOOR { 0.0 } else { z.exp() };
                sum += *o;
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some(grad_res.broadcast_sub(&dot)?.mul(res)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn logits() -> Result<Tensor> {
        let v: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 0.9 - 4.0).collect();
        let mut v = v;
        // Masked entries, and one row masked entirely (a padding query).
        v[3] = f32::MIN;
        v[5] = f32::MIN;
        for x in &mut v[18..24] {
            *x = f32::MIN;
        }
        Tensor::from_vec(v, (2, 2, 6), &Device::Cpu)
    }

    #[test]
    fn matches_candle_forward_including_masked_rows() -> Result<()> {
        let x = logits()?;
        let ours = softmax_last(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let theirs = candle_nn::ops::softmax_last_dim(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // The fully masked row is uniform, as with candle's kernel.
        assert!(ours[18..24].iter().all(|&p| (p - 1.0 / 6.0).abs() < 1e-6));
        Ok(())
    }

    #[test]
    fn backward_matches_the_composed_softmax() -> Result<()> {
        let x = Var::from_tensor(&logits()?)?;
        let w = Tensor::from_vec(
            (0..24).map(|i| (i as f32 * 0.31).sin()).collect::<Vec<_>>(),
            (2, 2, 6),
            &Device::Cpu,
        )?;
        let ours = (softmax_last(x.as_tensor())? * &w)?.sum_all()?.backward()?;
        let theirs = (candle_nn::ops::softmax(x.as_tensor(), D::Minus1)? * &w)?
            .sum_all()?
            .backward()?;
        let a = ours
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = theirs
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(a.iter().any(|g| g.abs() > 1e-4));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
        Ok(())
    }

    /// Side-by-side benchmark on a 32-shot cross-attention score matrix (8 prompts, 4 heads, 900
    /// tokens, 33 images x 16 latents, each token allowed one image): candle's fused kernel (the
    /// former inference path), candle's composed softmax (the former training path), this kernel.
    /// Run with `cargo test -p model --lib softmax -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_masked_softmax() -> Result<()> {
        let (b, h, t, images, latents) = (8, 4, 900, 33, 16);
        let k = images * latents;
        let mut v = vec![f32::MIN; b * h * t * k];
        for (row, chunk) in v.chunks_exact_mut(k).enumerate() {
            let img = (row % t) * images / t;
            for (j, x) in chunk[img * latents..(img + 1) * latents]
                .iter_mut()
                .enumerate()
            {
                *x = ((row + j) % 7) as f32 * 0.5;
            }
        }
        let x = Tensor::from_vec(v, (b, h, t, k), &Device::Cpu)?;
        let time = |f: &dyn Fn() -> Result<Tensor>| -> Result<f64> {
            f()?;
            let start = std::time::Instant::now();
            for _ in 0..3 {
                f()?;
            }
            Ok(start.elapsed().as_secs_f64() / 3.0 * 1e3)
        };
        let fused = time(&|| candle_nn::ops::softmax_last_dim(&x))?;
        let composed = time(&|| candle_nn::ops::softmax(&x, D::Minus1))?;
        let ours = time(&|| softmax_last(&x))?;
        println!(
            "masked softmax over {:?}: candle fused {fused:.1} ms, candle composed {composed:.1} ms, this kernel {ours:.1} ms",
            x.dims()
        );
        Ok(())
    }
}
