//! One optimizer step (spec §4.5): for each of `grad_accum` micro-batches and each source of the
//! mix, forward, `loss * loss_weight / grad_accum`, backward, and gradients summed per variable;
//! then global-norm clipping and AdamW. A non-finite loss (or gradient norm) skips the whole step
//! with the gradients of every source discarded, as the reference's NaN check does.
//!
//! Only the trainable variables (perceiver, gated cross-attention, trainable special-token rows)
//! reach the optimizer; the frozen backbones are plain tensors without gradients or moments.
//!
//! Deviation: the reference clips after every micro-batch (also mid-accumulation); here the
//! accumulated gradient is clipped once per optimizer step. With `grad_accum = 1` (the paper's
//! recipes) both are the same.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use model::Flamingo;

use crate::data::Batch;
use crate::train::adamw::{AdamW, AdamWConfig, Param, clip_grad_norm};
use crate::train::error::TrainError;
use crate::train::objective::next_token_loss;

/// Per-step settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Weight decay of the gated cross-attention group (the other groups get none).
    pub weight_decay: f64,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Mean unweighted loss per source over the micro-batches seen.
    pub losses: BTreeMap<String, f64>,
    /// Loss weight per source.
    pub weights: BTreeMap<String, f64>,
    /// Global gradient norm before clipping (`None` when skipped before clipping).
    pub grad_norm: Option<f64>,
    /// Why the step was skipped (non-finite loss or gradient norm); `None` when it updated.
    pub skipped: Option<String>,
    /// Non-padding tokens processed.
    pub tokens: usize,
    /// Samples processed.
    pub samples: usize,
}

impl StepReport {
    /// The optimized objective: the loss-weighted sum over sources.
    pub fn weighted_loss(&self) -> f64 {
        self.losses
            .iter()
            .map(|(s, l)| l * self.weights.get(s).copied().unwrap_or(1.0))
            .sum()
    }
}

/// Parameter counts of the optimizer groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    /// Gated cross-attention (weight decay group).
    pub cross_attn: usize,
    /// Perceiver.
    pub perceiver: usize,
    /// Trainable special-token embedding rows.
    pub embeddings: usize,
}

impl ParamCounts {
    /// All trainable parameters.
    pub fn total(&self) -> usize {
        self.cross_attn + self.perceiver + self.embeddings
    }
}

/// The model with its optimizer.
pub struct Trainer {
    model: Flamingo,
    opt: AdamW,
    counts: ParamCounts,
    settings: StepSettings,
}

impl Trainer {
    /// AdamW (torch defaults) over the model's trainable variables: weight decay on the gated
    /// cross-attention group only (its gates and LayerNorms included), none on the perceiver and
    /// the embedding rows.
    pub fn new(model: Flamingo, settings: StepSettings) -> Result<Self, TrainError> {
        if settings.grad_accum == 0 {
            return Err(TrainError::Config("grad_accum must be at least 1".into()));
        }
        let groups = model.trainable_vars();
        let size = |g: &[(String, Var)]| g.iter().map(|(_, v)| v.elem_count()).sum();
        let counts = ParamCounts {
            cross_attn: size(&groups.cross_attn),
            perceiver: size(&groups.perceiver),
            embeddings: size(&groups.embeddings),
        };
        let mut params = Vec::new();
        for (group, wd) in [
            (&groups.cross_attn, settings.weight_decay),
            (&groups.perceiver, 0.0),
            (&groups.embeddings, 0.0),
        ] {
            for (name, var) in group {
                params.push(Param {
                    name: name.clone(),
                    var: var.clone(),
                    weight_decay: wd,
                });
            }
        }
        let opt = AdamW::new(params, AdamWConfig::default())?;
        Ok(Trainer {
            model,
            opt,
            counts,
            settings,
        })
    }

    /// The model.
    pub fn model(&self) -> &Flamingo {
        &self.model
    }

    /// Mutable model (to load checkpoint weights).
    pub fn model_mut(&mut self) -> &mut Flamingo {
        &mut self.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Mutable optimizer (to restore its state).
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.opt
    }

    /// Trainable parameter counts by group.
    pub fn param_counts(&self) -> ParamCounts {
        self.counts
    }

    /// Forward and loss of one batch; with a finite loss, also the gradients of `loss * scale`.
    pub fn loss_and_grads(
        &self,
        batch: &Batch,
        scale: f64,
    ) -> Result<(f64, Option<GradStore>), TrainError> {
        let dev = self.model.device();
        let logits = self.model.forward(
            &batch.images.to_device(dev)?,
            &batch.input_ids.to_device(dev)?,
            &batch.attention_mask.to_device(dev)?,
        )?;
        let (loss, _) = next_token_loss(&logits, &batch.labels)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Ok((value, None));
        }
        Ok((value, Some((loss * scale)?.backward()?)))
    }

    /// Adds this backward pass's gradients to the running sums, aligned with the optimizer's
    /// parameters (a variable the pass did not reach contributes nothing).
    fn accumulate(&self, acc: &mut [Option<Tensor>], grads: &GradStore) -> Result<(), TrainError> {
        for (slot, p) in acc.iter_mut().zip(self.opt.params()) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// The summed gradients of `loss * loss_weight / grad_accum` over the given micro-batches,
    /// aligned with [`AdamW::params`], with the per-batch losses; `Err`-free early return with
    /// `skipped` set on a non-finite loss.
    pub fn gradients(
        &self,
        micro_batches: &mut dyn FnMut() -> Result<Vec<Batch>, TrainError>,
        report: &mut StepReport,
    ) -> Result<Vec<Option<Tensor>>, TrainError> {
        let n = self.settings.grad_accum;
        let mut acc: Vec<Option<Tensor>> = vec![None; self.opt.params().len()];
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            for batch in micro_batches()? {
                report.tokens += batch.tokens;
                report.samples += batch.keys.len();
                let (loss, grads) = self.loss_and_grads(&batch, batch.loss_weight / n as f64)?;
                *report.losses.entry(batch.source.clone()).or_default() += loss;
                *seen.entry(batch.source.clone()).or_default() += 1;
                report
                    .weights
                    .insert(batch.source.clone(), batch.loss_weight);
                match grads {
                    Some(g) => self.accumulate(&mut acc, &g)?,
                    None => {
                        report.skipped = Some(format!(
                            "non-finite loss {loss} on source `{}`",
                            batch.source
                        ));
                        break;
                    }
                }
            }
            if report.skipped.is_some() {
                break;
            }
        }
        for (source, sum) in report.losses.iter_mut() {
            *sum /= seen.get(source).copied().unwrap_or(1).max(1) as f64;
        }
        Ok(acc)
    }

    /// One optimizer step at learning rate `lr`, pulling `grad_accum` micro-batches (one batch
    /// per source each) from `micro_batches`.
    pub fn step(
        &mut self,
        micro_batches: &mut dyn FnMut() -> Result<Vec<Batch>, TrainError>,
        lr: f64,
    ) -> Result<StepReport, TrainError> {
        let mut report = StepReport::default();
        let mut grads = self.gradients(micro_batches, &mut report)?;
        if report.skipped.is_some() {
            return Ok(report);
        }
        let norm = clip_grad_norm(&mut grads, self.settings.max_grad_norm)?;
        report.grad_norm = Some(norm);
        if !norm.is_finite() {
            report.skipped = Some(format!("non-finite gradient norm {norm}"));
            return Ok(report);
        }
        self.opt.step(&grads, lr)?;
        Ok(report)
    }
}
