//! Flamingo training on a tiny model written to disk in the real layouts (random open_clip ViT,
//! random MPT-style LM with a BPE tokenizer) and the tiny synthetic world's WebDataset shards:
//! frozen parts stay bit-identical, every trainable tensor gets a gradient, a killed run resumes
//! to the uninterrupted run's losses, the loss falls, and non-finite losses stop the job.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use model::{AttnCtx, Flamingo};
use runner::data::{DataMix, ImageTransform};
use runner::train::assemble::{ModelSpec, load_model};
use runner::train::step::{StepSettings, Trainer};
use runner::train::{Flow, StepMetrics, TrainError, TrainJob, TrainObserver, train};

/// Collects every step's losses; optionally stops after a step (a simulated kill).
#[derive(Default)]
struct Losses {
    steps: BTreeMap<u64, BTreeMap<String, f64>>,
    stop_after: Option<u64>,
    checkpoints: Vec<u64>,
}

impl TrainObserver for Losses {
    fn step(&mut self, m: &StepMetrics) -> Flow {
        self.steps.insert(m.step, m.report.losses.clone());
        if self.stop_after == Some(m.step) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
    fn checkpoint(&mut self, step: u64, _dir: &Path) {
        self.checkpoints.push(step);
    }
}

fn job<'a>(
    train: &'a runner::config::schema::TrainConfig,
    model: ModelSpec,
    out: &Path,
) -> TrainJob<'a> {
    TrainJob {
        train,
        model,
        device: Device::Cpu,
        data_dir: ".".into(),
        out_dir: out.to_path_buf(),
        max_nonfinite: 5,
        prefetch: 2,
    }
}

/// A trainer and a data mix over the fixture.
fn trainer(fx: &common::Fixture, spec: &ModelSpec, steps: i64, lr: f64) -> (Trainer, DataMix) {
    let (model, tok, proc, _) = load_model(spec, &Device::Cpu).unwrap();
    let cfg = fx.train(steps, lr);
    let mix = DataMix::new(
        &cfg.data,
        cfg.seed,
        Path::new("."),
        Arc::new(tok),
        ImageTransform::from_processor(proc),
    )
    .unwrap();
    let t = Trainer::new(
        model,
        StepSettings {
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    (t, mix)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Fixed pseudo-random values.
fn fixed(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Outputs of every frozen computation on fixed inputs: vision features and each decoder layer.
fn frozen_outputs(m: &Flamingo) -> Vec<Vec<u32>> {
    let dev = Device::Cpu;
    let mut out = vec![bits(
        &m.vision_features(&fixed(&[1, 2, 3, 32, 32])).unwrap(),
    )];
    let x = fixed(&[2, 5, common::LM_WIDTH]);
    let ctx = AttnCtx::unpadded(2, 5, 0, &dev).unwrap();
    for i in 0..m.lm().num_layers() {
        out.push(bits(&m.lm().layer(i, &x, &ctx, None).unwrap()));
    }
    out
}

fn rows(t: &Tensor) -> Vec<Vec<u32>> {
    let (n, _) = t.dims2().unwrap();
    (0..n).map(|i| bits(&t.get(i).unwrap())).collect()
}

fn check_frozen(trainable: bool) {
    let fx = common::fixture();
    let spec = fx.model(trainable);
    let (mut t, mut mix) = trainer(&fx, &spec, 3, 5e-2);
    let (fresh, tok, _, _) = load_model(&spec, &Device::Cpu).unwrap();
    let special = tok.trainable_token_ids();
    let counts = t.param_counts();
    assert_eq!(
        counts.embeddings,
        if trainable { 2 * common::LM_WIDTH } else { 0 }
    );
    assert!(counts.cross_attn > 0 && counts.perceiver > 0);
    // Frozen parameters hold no optimizer state: only the three trainable groups are in it.
    let n_vars = t.model().trainable_vars().all().len();
    assert_eq!(t.optimizer().params().len(), n_vars);
    // Materialized now: a detached tensor shares its variable's storage, which updates in place.
    let snapshot = |m: &Flamingo| -> BTreeMap<String, Vec<u32>> {
        runner::train::assemble::trained_tensors(m)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), bits(v)))
            .collect()
    };
    let before = snapshot(t.model());
    for _ in 0..3 {
        let r = t.step(&mut || Ok(mix.next_step()?), 5e-2).unwrap();
        assert!(r.skipped.is_none(), "{r:?}");
    }
    // Training did move the trainable weights.
    let after = snapshot(t.model());
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("perceiver") && before[k] != after[k])
    );
    // Vision encoder and LM layers compute bit-identically to a freshly loaded model.
    assert_eq!(frozen_outputs(t.model()), frozen_outputs(&fresh));
    // Embedding rows: frozen rows bit-identical; special rows changed only when trainable.
    let trained = rows(&t.model().lm().embeddings().full_table().unwrap());
    let orig = rows(&fresh.lm().embeddings().full_table().unwrap());
    for (i, (a, b)) in trained.iter().zip(&orig).enumerate() {
        if trainable && special.contains(&(i as u32)) {
            assert_ne!(a, b, "special row {i} did not train");
        } else {
            assert_eq!(a, b, "row {i} changed");
        }
    }
    assert_eq!(
        rows(t.model().lm().embeddings().base_table()),
        rows(fresh.lm().embeddings().base_table()),
        "the frozen base table is untouched"
    );
}

#[test]
fn frozen_parts_stay_bit_identical_with_trainable_special_rows() {
    check_frozen(true);
}

#[test]
fn frozen_parts_stay_bit_identical_with_frozen_embeddings() {
    check_frozen(false);
}

#[test]
fn every_trainable_tensor_receives_a_nonzero_gradient() {
    let fx = common::fixture();
    let (t, mut mix) = trainer(&fx, &fx.model(true), 1, 1e-3);
    // Fresh gates are 0 (tanh(0) = 0 blocks every gradient behind them): open them first.
    for (name, var) in &t.model().trainable_vars().cross_attn {
        if name.ends_with("_gate") {
            var.set(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let mut report = Default::default();
    let grads = t
        .gradients(&mut || Ok(mix.next_step()?), &mut report)
        .unwrap();
    assert!(report.skipped.is_none());
    for (p, g) in t.optimizer().params().iter().zip(&grads) {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s > 0.0 && s.is_finite(), "{}: |grad| sum {s}", p.name);
    }
}

#[test]
fn killed_and_resumed_training_reproduces_the_uninterrupted_losses() {
    let fx = common::fixture();
    let mut cfg = fx.train(6, 1e-3);
    cfg.checkpoint_every = 2;
    let a_out = fx.root.path().join("a");
    let mut a = Losses::default();
    let sa = train(&job(&cfg, fx.model(true), &a_out), &mut a).unwrap();
    assert!(sa.completed && sa.steps == 6);
    assert_eq!(a.checkpoints, [2, 4, 6]);

    // Killed after step 3 (its checkpoint is at 2): the resumed run redoes step 3.
    let b_out = fx.root.path().join("b");
    let mut b1 = Losses {
        stop_after: Some(3),
        ..Default::default()
    };
    let s1 = train(&job(&cfg, fx.model(true), &b_out), &mut b1).unwrap();
    assert!(!s1.completed && s1.weights.is_none());
    let mut b2 = Losses::default();
    let s2 = train(&job(&cfg, fx.model(true), &b_out), &mut b2).unwrap();
    assert_eq!(s2.resumed_from, Some(2));
    assert_eq!(b2.steps.keys().copied().collect::<Vec<_>>(), [3, 4, 5, 6]);
    let mut b = b1.steps.clone();
    b.extend(b2.steps.clone());
    for (step, losses) in &a.steps {
        for (source, la) in losses {
            let lb = b[step][source];
            assert!(
                (la - lb).abs() <= 1e-5,
                "step {step} {source}: {la} vs {lb}"
            );
        }
    }
    let wa =
        candle_core::safetensors::load(a_out.join("weights.safetensors"), &Device::Cpu).unwrap();
    let wb =
        candle_core::safetensors::load(b_out.join("weights.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let d = (ta - &wb[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-5, "{k} differs by {d}");
    }
    // Keep-K pruning and the final weights under OpenFlamingo keys.
    let kept: Vec<u64> = runner::train::checkpoint::list(&a_out.join("checkpoints"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, [4, 6]);
    assert!(wa.keys().any(|k| k.starts_with("perceiver.")));
    assert!(wa.keys().any(|k| k.contains(".gated_cross_attn_layer.")));
    assert!(wa.contains_key("lang_encoder.transformer.wte.weight"));
}

#[test]
fn loss_falls_on_the_synthetic_task() {
    let fx = common::fixture();
    let cfg = fx.train(30, 1e-2);
    let mut obs = Losses::default();
    let s = train(
        &job(&cfg, fx.model(true), &fx.root.path().join("o")),
        &mut obs,
    )
    .unwrap();
    assert_eq!(s.nonfinite_skips, 0);
    let total = |l: &BTreeMap<String, f64>| l["pairs"] * 0.2 + l["interleaved"];
    let curve: Vec<f64> = obs.steps.values().map(total).collect();
    let first: f64 = curve[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = curve[curve.len() - 3..].iter().sum::<f64>() / 3.0;
    eprintln!("weighted loss: first {first:.4} last {last:.4}; curve {curve:.3?}");
    assert!(last < first * 0.8, "loss did not fall: {first} -> {last}");
}

#[test]
fn repeated_nonfinite_losses_stop_the_job_with_a_clear_error() {
    let fx = common::fixture();
    // A checkpoint whose perceiver latents are NaN makes every loss NaN.
    let (m, _, _, _) = load_model(&fx.model(true), &Device::Cpu).unwrap();
    let latents = m
        .trainable_vars()
        .perceiver
        .into_iter()
        .find(|(n, _)| n == "perceiver.latents");
    let (_, latents) = latents.expect("perceiver.latents");
    let nan = (latents.as_tensor().ones_like().unwrap() * f64::NAN).unwrap();
    let ckpt = fx.root.path().join("nan.safetensors");
    candle_core::safetensors::save(&[("perceiver.latents".to_string(), nan)].into(), &ckpt)
        .unwrap();
    let mut spec = fx.model(true);
    spec.checkpoint = Some(ckpt);
    let cfg = fx.train(20, 1e-3);
    let mut obs = Losses::default();
    let err = train(&job(&cfg, spec, &fx.root.path().join("o")), &mut obs).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                count: 5,
                step: 5,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("5 steps in a row") && msg.contains("non-finite loss"),
        "{msg}"
    );
    assert!(!fx.root.path().join("o/weights.safetensors").exists());
}

#[test]
fn accumulated_gradients_are_the_mean_of_the_micro_batch_gradients() {
    let fx = common::fixture();
    let spec = fx.model(true);
    let (t1, mut mix) = trainer(&fx, &spec, 1, 1e-3);
    for (name, var) in &t1.model().trainable_vars().cross_attn {
        if name.ends_with("_gate") {
            var.set(&Tensor::new(&[0.3f32], &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let micro = [mix.next_step().unwrap(), mix.next_step().unwrap()];
    let mut single = Vec::new();
    for m in &micro {
        let mut once = Some(m.clone());
        let mut r = Default::default();
        single.push(
            t1.gradients(&mut || Ok(once.take().unwrap_or_default()), &mut r)
                .unwrap(),
        );
    }
    // Same weights, grad_accum = 2, both micro-batches.
    let (model, _, _, _) = load_model(&spec, &Device::Cpu).unwrap();
    let t2 = Trainer::new(
        model,
        StepSettings {
            grad_accum: 2,
            max_grad_norm: 1.0,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    for (name, var) in &t2.model().trainable_vars().cross_attn {
        if name.ends_with("_gate") {
            var.set(&Tensor::new(&[0.3f32], &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let mut queue: Vec<_> = micro.iter().rev().cloned().collect();
    let mut r = Default::default();
    let acc = t2
        .gradients(&mut || Ok(queue.pop().unwrap_or_default()), &mut r)
        .unwrap();
    for (i, p) in t2.optimizer().params().iter().enumerate() {
        let expect = ((single[0][i].as_ref().unwrap() + single[1][i].as_ref().unwrap()).unwrap()
            * 0.5)
            .unwrap();
        let d = (acc[i].as_ref().unwrap() - expect)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{}: {d}", p.name);
    }
}
