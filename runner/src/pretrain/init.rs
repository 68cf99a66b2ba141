//! Seeded initialisation of trainable variables. candle's CPU generator cannot be seeded, so a
//! pretraining run draws every variable from its own ChaCha generator keyed by the run seed and the
//! variable's name: the same seed gives the same initial weights whatever order the model creates
//! its variables in.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A [`VarBuilder`] backend that creates missing variables in a [`VarMap`] from seeded generators.
struct SeededVars {
    varmap: VarMap,
    seed: u64,
}

/// The generator of variable `name` under `seed`.
pub fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// `n` samples of N(mean, std) (Box–Muller), identical on every platform.
pub fn normal(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((mean + r * a.cos()) as f32);
        if out.len() < n {
            out.push((mean + r * a.sin()) as f32);
        }
    }
    out
}

/// Initial values of a variable of `shape` under a candle [`Init`].
fn sample(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(rng, n, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => normal(rng, n, 0.0, std),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
            }
        }
    }
}

impl SimpleBackend for SeededVars {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned variable map".into()))?;
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` exists with shape {:?}, asked for {:?}",
                    v.dims(),
                    s.dims()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let values = sample(h, &s, &mut rng_for(self.seed, name));
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned variable map".into()))?;
        match vars.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("variable `{name}` does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .is_ok_and(|vars| vars.contains_key(name))
    }
}

/// A builder whose new variables land in `varmap`, drawn from generators seeded by `seed` and
/// their names (f32 on `device`).
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVars {
            varmap: varmap.clone(),
            seed,
        }),
        DType::F32,
        device.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_whatever_the_order() -> Result<()> {
        let dev = Device::Cpu;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let (a, b) = (VarMap::new(), VarMap::new());
        let va = seeded_var_builder(&a, 7, &dev);
        let vb = seeded_var_builder(&b, 7, &dev);
        let x1 = va.get_with_hints((4, 3), "x", init)?;
        let _y1 = va.get_with_hints(5, "y", Init::Const(1.0))?;
        let _y2 = vb.get_with_hints(5, "y", Init::Const(1.0))?;
        let x2 = vb.get_with_hints((4, 3), "x", init)?;
        let diff = (x1 - &x2)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let other =
            seeded_var_builder(&VarMap::new(), 8, &dev).get_with_hints((4, 3), "x", init)?;
        assert!((other - x2)?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0);
        assert_eq!(a.all_vars().len(), 2);
        Ok(())
    }
}
