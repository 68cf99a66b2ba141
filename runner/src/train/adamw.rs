//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay applied before the moment update,
//! bias-corrected step), with parameter groups and a state that checkpoints can save and restore.
//!
//! candle's own AdamW keeps its moments private, so a resumed run could not continue it exactly.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

/// AdamW hyper-parameters (torch defaults).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// epsilon.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One trainable parameter.
pub struct Param {
    /// Name (OpenFlamingo key).
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Decoupled weight decay of its group.
    pub weight_decay: f64,
}

/// The optimizer: parameters, moments and step count.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// An optimizer over `params` with zero moments.
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let m = params
            .iter()
            .map(|p| p.var.as_tensor().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = params
            .iter()
            .map(|p| p.var.as_tensor().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            cfg,
            params,
            m,
            v,
            step: 0,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` from gradients aligned with [`AdamW::params`] (`None`:
    /// no gradient, the parameter is left alone as torch does).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for (i, p) in self.params.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(Option::as_ref) else {
                continue;
            };
            // Gradients can carry their own backward graph: detach, or the moments would keep
            // every step's graph alive.
            let g = g.detach();
            let theta = p.var.as_tensor();
            let theta = if p.weight_decay != 0.0 {
                (theta * (1.0 - lr * p.weight_decay))?
            } else {
                theta.clone()
            };
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.cfg.eps)?;
            let update = ((&m / denom)? * (lr / bc1))?;
            p.var.set(&(theta - update)?)?;
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }

    /// The moments by name (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            out.insert(format!("m.{}", p.name), self.m[i].clone());
            out.insert(format!("v.{}", p.name), self.v[i].clone());
        }
        out
    }

    /// Restores moments and step count saved by [`AdamW::state_tensors`]; errors name a missing
    /// or misshapen moment.
    pub fn restore(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> std::result::Result<(), String> {
        for (i, p) in self.params.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{kind}.{}", p.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| format!("optimizer state lacks `{key}`"))?;
                if t.dims() != p.var.dims() {
                    return Err(format!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                        t.dims(),
                        p.var.dims()
                    ));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (coefficient `max_norm / (norm + 1e-6)`, clamped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Values from torch.optim.AdamW(lr=0.1, weight_decay=0.5) on p=[1,-2], grads [0.5,-1] then
    /// [0.25, 0.5] (computed by hand from torch's update rule).
    #[test]
    fn matches_torch_update_rule() -> Result<()> {
        let dev = Device::Cpu;
        let var = Var::from_slice(&[1f32, -2.0], 2, &dev)?;
        let mut opt = AdamW::new(
            vec![Param {
                name: "p".into(),
                var: var.clone(),
                weight_decay: 0.5,
            }],
            AdamWConfig::default(),
        )?;
        let mut expect = [1f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for (t, g) in [[0.5f64, -1.0], [0.25, 0.5]].iter().enumerate() {
            opt.step(
                &[Some(Tensor::new(&[g[0] as f32, g[1] as f32], &dev)?)],
                0.1,
            )?;
            let t = (t + 1) as i32;
            for i in 0..2 {
                expect[i] *= 1.0 - 0.1 * 0.5;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let denom = (v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt()) + 1e-8;
                expect[i] -= 0.1 / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
            }
        }
        let got = var.as_tensor().to_vec1::<f32>()?;
        for i in 0..2 {
            assert!(
                (got[i] as f64 - expect[i]).abs() < 1e-6,
                "{got:?} vs {expect:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn clipping_scales_to_max_norm() -> Result<()> {
        let dev = Device::Cpu;
        let mut g = vec![
            Some(Tensor::new(&[3f32, 0.0], &dev)?),
            None,
            Some(Tensor::new(&[4f32], &dev)?),
        ];
        let n = clip_grad_norm(&mut g, 1.0)?;
        assert!((n - 5.0).abs() < 1e-9);
        let a = g[0].as_ref().unwrap().to_vec1::<f32>()?;
        assert!((a[0] - 0.6).abs() < 1e-5);
        Ok(())
    }
}
