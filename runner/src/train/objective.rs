//! The Flamingo objective (spec §4.4): next-token cross-entropy on shifted logits, positions
//! labelled [`IGNORE_INDEX`] excluded, mean over the remaining tokens, as HF's causal-LM loss
//! (`CrossEntropyLoss(ignore_index=-100)` on `logits[:, :-1]` vs `labels[:, 1:]`).
//!
//! Built from composed candle ops (log-softmax by hand, `gather`), all of which have a backward
//! pass. A batch without any trained token gives NaN (0/0), as torch does.

use candle_core::{D, DType, Result, Tensor};

use crate::data::labels::IGNORE_INDEX;

/// Log-softmax over the last axis; the max is detached (it cancels mathematically, so its
/// gradient would only add rounding noise and work).
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Mean next-token cross-entropy of `logits` `(B, T, V)` against `labels` `(B, T)` (i64, with
/// [`IGNORE_INDEX`] on masked positions): position `t` predicts `labels[t + 1]`. Returns the scalar
/// loss (differentiable) and the number of trained tokens.
pub fn next_token_loss(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, usize)> {
    let (b, t, v) = logits.dims3()?;
    if labels.dims() != [b, t] {
        candle_core::bail!(
            "labels have shape {:?}, logits {:?}: expected labels (B, T) = ({b}, {t})",
            labels.dims(),
            logits.dims()
        );
    }
    if t < 2 {
        candle_core::bail!("sequences of {t} token(s) have no next-token targets");
    }
    // Targets and their 0/1 weights are built on the host (labels are small) and moved over.
    let rows = labels.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    let n = b * (t - 1);
    let mut targets = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for row in &rows {
        for &l in &row[1..] {
            let keep = l != IGNORE_INDEX;
            if keep && !(0..v as i64).contains(&l) {
                candle_core::bail!("label {l} is outside the vocabulary of {v} logits");
            }
            targets.push(if keep { l as u32 } else { 0 });
            weights.push(if keep { 1f32 } else { 0.0 });
        }
    }
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let dev = logits.device();
    let targets = Tensor::from_vec(targets, (n, 1), dev)?;
    let weights = Tensor::from_vec(weights, n, dev)?;
    let logp = log_softmax(
        &logits
            .narrow(1, 0, t - 1)?
            .reshape((n, v))?
            .to_dtype(DType::F32)?,
    )?;
    let picked = logp.gather(&targets, 1)?.squeeze(1)?;
    let total = (picked * weights)?.sum_all()?;
    let loss = (total.neg()? / count as f64)?;
    Ok((loss, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Against a hand computation of torch's `F.cross_entropy(logits[:, :-1].reshape(-1, V),
    /// labels[:, 1:].reshape(-1), ignore_index=-100)`.
    #[test]
    fn matches_shifted_masked_mean_and_has_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..2 * 3 * 4)
            .map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.5)
            .collect();
        let logits = Var::from_vec(vals.clone(), (2, 3, 4), &dev)?;
        let labels = Tensor::new(&[[9i64, 1, 3], [5, IGNORE_INDEX, 2]], &dev)?;
        let (loss, count) = next_token_loss(logits.as_tensor(), &labels)?;
        assert_eq!(count, 3);
        let lse = |row: &[f32]| row.iter().map(|x| x.exp()).sum::<f32>().ln();
        let at = |b: usize, t: usize| &vals[(b * 3 + t) * 4..(b * 3 + t + 1) * 4];
        let expect = ((lse(at(0, 0)) - at(0, 0)[1])
            + (lse(at(0, 1)) - at(0, 1)[3])
            + (lse(at(1, 1)) - at(1, 1)[2]))
            / 3.0;
        let got = loss.to_scalar::<f32>()?;
        assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
        let grads = loss.backward()?;
        let g = grads
            .get(logits.as_tensor())
            .expect("gradient")
            .to_vec3::<f32>()?;
        // Softmax minus one-hot, over 3 tokens; the last position and the ignored one get none.
        assert!(g[0][2].iter().all(|x| *x == 0.0) && g[1][0].iter().all(|x| *x == 0.0));
        let s: f32 = g[0][0].iter().sum();
        assert!(s.abs() < 1e-6 && g[0][0][1] < 0.0);
        Ok(())
    }

    #[test]
    fn all_masked_is_nan_and_bad_labels_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((1, 2, 3), DType::F32, &dev)?;
        let masked = Tensor::new(&[[1i64, IGNORE_INDEX]], &dev)?;
        assert!(
            next_token_loss(&logits, &masked)?
                .0
                .to_scalar::<f32>()?
                .is_nan()
        );
        let bad = Tensor::new(&[[1i64, 7]], &dev)?;
        assert!(next_token_loss(&logits, &bad).is_err());
        Ok(())
    }
}
