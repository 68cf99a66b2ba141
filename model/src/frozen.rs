//! `x @ wᵀ` for frozen weights: a matmul whose backward computes only the input gradient.
//!
//! candle's `Op::Matmul` backward always computes both operand gradients. For a frozen weight the
//! weight gradient is thrown away, but it costs a third of the layer's backward FLOPs and stays in the
//! `GradStore` (an untracked leaf is never removed from it) until the store is dropped: as much memory
//! as the frozen weights themselves. [`matmul_t`] routes frozen weights through a custom op whose
//! backward returns no weight gradient, and keeps candle's matmul when the weight is trainable.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};

static PLAIN_BASELINE: AtomicBool = AtomicBool::new(false);

/// Benchmark baseline only: `true` sends frozen weights through candle's own matmul again (weight
/// gradients computed and held), so a benchmark can compare both in one run.
pub fn use_plain_matmul_baseline(on: bool) {
    PLAIN_BASELINE.store(on, Ordering::Relaxed);
}

/// `x (.., k) @ wᵀ → (.., n)` for a weight `w (n, k)`. When `w` depends on no trainable variable the
/// backward pass yields a gradient for `x` only, and nothing is stored for `w`.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.track_op() || !x.track_op() || PLAIN_BASELINE.load(Ordering::Relaxed) {
        // Trainable weight (it needs its gradient), or no gradient flows at all (inference: candle's
        // own broadcast matmul, no custom-op indirection).
        return x.broadcast_matmul(&w.t()?);
    }
    let w = w.contiguous()?;
    x.contiguous()?.apply_op2(&w, FrozenMatmulT)
}

/// Storage layouts of both operands, `(b, m, n, k)` and the output shape.
type MatmulPlan = (Layout, Layout, (usize, usize, usize, usize), Shape);

/// The custom op: forward is candle's storage matmul, backward is `grad @ w` for `x` only.
struct FrozenMatmulT;

impl FrozenMatmulT {
    /// Layouts and sizes of `x (m, k)` against `wᵀ (k, n)`, checking the shapes.
    fn plan(l1: &Layout, l2: &Layout) -> Result<MatmulPlan> {
        let x_dims = l1.dims();
        let (n, k_w) = l2.shape().dims2()?;
        let Some((&k, batch)) = x_dims.split_last() else {
            candle_core::bail!("frozen matmul: input is a scalar");
        };
        if k != k_w {
            candle_core::bail!(
                "frozen matmul: input {:?} against weight ({n}, {k_w})",
                x_dims
            );
        }
        if !l1.is_contiguous() || !l2.is_contiguous() {
            candle_core::bail!("frozen matmul: operands must be contiguous");
        }
        let m: usize = batch.iter().product();
        let lhs = Layout::contiguous_with_offset((m, k), l1.start_offset());
        let rhs = l2.transpose(0, 1)?;
        let mut out = batch.to_vec();
        out.push(n);
        Ok((lhs, rhs, (1, m, n, k), Shape::from(out)))
    }
}

impl CustomOp2 for FrozenMatmulT {
    fn name(&self) -> &'static str {
        "frozen-matmul-t"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (lhs, rhs, bmnk, shape) = Self::plan(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, &lhs, &rhs)?, shape))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (lhs, rhs, bmnk, shape) = Self::plan(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, &lhs, &rhs)?, shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad_res.broadcast_matmul(w)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    #[test]
    fn forward_and_input_gradient_match_the_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(data(5 * 3, 1.0), (5, 3), &dev)?;
        let x = Var::from_tensor(&Tensor::from_vec(data(2 * 4 * 3, 2.0), (2, 4, 3), &dev)?)?;
        let ours = matmul_t(x.as_tensor(), &w)?;
        let plain = x.as_tensor().broadcast_matmul(&w.t()?)?;
        assert_eq!(ours.dims(), &[2, 4, 5]);
        let diff = (&ours - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "forward differs by {diff}");

        let g_ours = ours.sqr()?.sum_all()?.backward()?;
        let g_plain = plain.sqr()?.sum_all()?.backward()?;
        let (a, b) = (g_ours.get(&x).unwrap(), g_plain.get(&x).unwrap());
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "input gradient differs by {diff}");
        // Ours holds the loss, the output and x; the plain matmul also a weight gradient.
        let held = |g: &candle_core::backprop::GradStore| g.get_ids().count();
        assert!(
            held(&g_ours) < held(&g_plain),
            "{} vs {}",
            held(&g_ours),
            held(&g_plain)
        );
        Ok(())
    }

    #[test]
    fn trainable_weights_keep_their_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::from_vec(data(5 * 3, 1.0), (5, 3), &dev)?)?;
        let x = Tensor::from_vec(data(4 * 3, 2.0), (4, 3), &dev)?;
        let grads = matmul_t(&x, w.as_tensor())?.sum_all()?.backward()?;
        let g = grads.get(&w).expect("weight gradient");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }
}
