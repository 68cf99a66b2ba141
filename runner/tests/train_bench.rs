//! Training throughput on a small config (ignored by default; run with
//! `cargo test -p runner --test train_bench -- --ignored --nocapture`).
//!
//! Prints samples/s and tokens/s of the optimizer step (forward, backward, clipping, AdamW; data
//! prepared beforehand and timed separately), the model FLOPs of a step from the batch shapes, and
//! the implied fraction of the CPU's f32 matmul peak measured with candle in the same run.
//!
//! Model FLOPs count the matmuls a step needs (2·m·n·k each): frozen vision encoder forward only;
//! frozen LM forward plus the input-gradient half of its backward (2x, attention scores 3x);
//! perceiver and cross-attention forward and full backward (3x); the tied head 2x. candle's
//! backward also computes (and discards) weight gradients of frozen LM matmuls, so the executed
//! FLOPs are higher than the model FLOPs.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use runner::config::schema::FlamingoSizes;
use runner::data::{Batch, DataMix, ImageTransform};
use runner::train::assemble::load_model;
use runner::train::step::{StepSettings, Trainer};

const V_WIDTH: usize = 64;
const V_LAYERS: usize = 4;
const IMAGE: usize = 64;
const LM_D: usize = 128;
const LM_LAYERS: usize = 4;

fn vision(dir: &Path) {
    common::write_vision_sized(dir, V_WIDTH, V_LAYERS, IMAGE, 16);
}

fn lm(dir: &Path, vocab: usize) {
    common::write_mpt_sized(dir, vocab, LM_D, LM_LAYERS, 4);
}

/// The sizes of templates/tiny.toml.
const SIZES: FlamingoSizes = FlamingoSizes {
    perceiver_depth: 2,
    perceiver_latents: 16,
    perceiver_heads: 4,
    perceiver_dim_head: 16,
    cross_attn_heads: 4,
    cross_attn_dim_head: 32,
};

/// Model FLOPs of one batch's forward + backward (see the module docs).
fn batch_flops(b: &Batch, vocab: usize) -> f64 {
    let (rows, t) = b.input_ids.dims2().unwrap();
    let n_img = b.images.dim(1).unwrap();
    let (rows, t, n_img) = (rows as f64, t as f64, n_img as f64);
    let mm = |m: f64, n: f64, k: f64| 2.0 * m * n * k;
    // Vision encoder, forward only, per image.
    let p = ((IMAGE / 8) * (IMAGE / 8)) as f64;
    let (dv, tok) = (V_WIDTH as f64, p + 1.0);
    let vis_layer = mm(tok, 3.0 * dv, dv)
        + 2.0 * mm(tok, tok, dv)
        + mm(tok, dv, dv)
        + 2.0 * mm(tok, 4.0 * dv, dv);
    let vision = rows * n_img * (mm(p, dv, 3.0 * 64.0) + V_LAYERS as f64 * vis_layer);
    // Perceiver per image: latents query [media; latents].
    let (l, pi) = (
        SIZES.perceiver_latents as f64,
        (SIZES.perceiver_heads * SIZES.perceiver_dim_head) as f64,
    );
    let per_layer = mm(l, pi, dv)
        + mm(p + l, 2.0 * pi, dv)
        + 2.0 * mm(l, p + l, pi)
        + mm(l, dv, pi)
        + 2.0 * mm(l, 4.0 * dv, dv);
    let perceiver = 3.0 * rows * n_img * SIZES.perceiver_depth as f64 * per_layer;
    // Gated cross-attention before every LM layer: text attends to all images' latents.
    let (d, xi) = (
        LM_D as f64,
        (SIZES.cross_attn_heads * SIZES.cross_attn_dim_head) as f64,
    );
    let media = n_img * l;
    let xattn_layer = mm(t, xi, d)
        + mm(media, 2.0 * xi, dv)
        + 2.0 * mm(t, media, xi)
        + mm(t, d, xi)
        + 2.0 * mm(t, 4.0 * d, d);
    let xattn = 3.0 * rows * LM_LAYERS as f64 * xattn_layer;
    // Frozen LM: linears 2x (forward + input gradient), attention scores 3x.
    let lm_lin = mm(t, 3.0 * d, d) + mm(t, d, d) + 2.0 * mm(t, 4.0 * d, d);
    let lm_att = 2.0 * mm(t, t, d);
    let lm = rows * LM_LAYERS as f64 * (2.0 * lm_lin + 3.0 * lm_att);
    let head = 2.0 * rows * mm(t, vocab as f64, d);
    vision + perceiver + xattn + lm + head
}

/// Best f32 matmul throughput (FLOP/s) of candle on this CPU, 512³ and 1024³.
fn matmul_peak() -> f64 {
    let mut best = 0f64;
    for n in [512usize, 1024] {
        let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
        let _ = a.matmul(&b).unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            let c = a.matmul(&b).unwrap();
            let _ = c.sum_all().unwrap().to_dtype(DType::F32).unwrap();
            best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64());
        }
    }
    best
}

#[test]
#[ignore]
fn training_throughput() {
    let fx = common::fixture_with(512, vision, lm);
    let mut spec = fx.model(true);
    spec.sizes = SIZES;
    let (model, tok, proc, _) = load_model(&spec, &Device::Cpu).unwrap();
    let vocab = tok.len();
    let mut cfg = fx.train(1, 1e-4);
    // Paper-shaped mix: interleaved 4 x 128 tokens (2 images), pairs 8 x 32 tokens.
    cfg.data[0].batch_size = 8;
    cfg.data[0].max_tokens = Some(32);
    cfg.data[1].batch_size = 4;
    cfg.data[1].max_tokens = Some(128);
    let mut mix = DataMix::new(
        &cfg.data,
        cfg.seed,
        Path::new("."),
        Arc::new(tok),
        ImageTransform::from_processor(proc),
    )
    .unwrap();
    let mut trainer = Trainer::new(
        model,
        StepSettings {
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    let counts = trainer.param_counts();
    let peak = matmul_peak();
    println!(
        "trainable params {} (x-attn {}, perceiver {}, embeddings {}); vision {V_WIDTH}w x{V_LAYERS} @ {IMAGE}px, LM {LM_D}d x{LM_LAYERS}, vocab {vocab}",
        counts.total(),
        counts.cross_attn,
        counts.perceiver,
        counts.embeddings
    );
    // Side by side in one run: candle's matmul backward for the frozen weights (baseline), then
    // the frozen matmul that computes no weight gradients.
    for (label, baseline) in [
        ("baseline (candle matmul backward)", true),
        ("frozen matmul", false),
    ] {
        model::frozen::use_plain_matmul_baseline(baseline);
        let (warmup, steps) = (2, 8);
        let (mut secs, mut data_secs, mut flops, mut samples, mut tokens) =
            (0f64, 0f64, 0f64, 0, 0);
        for i in 0..warmup + steps {
            let t0 = Instant::now();
            let batches = mix.next_step().unwrap();
            let dt_data = t0.elapsed().as_secs_f64();
            let f: f64 = batches.iter().map(|b| batch_flops(b, vocab)).sum();
            let (s, tk): (usize, usize) = batches
                .iter()
                .fold((0, 0), |(s, t), b| (s + b.keys.len(), t + b.tokens));
            let mut once = Some(batches);
            let t1 = Instant::now();
            trainer
                .step(&mut || Ok(once.take().unwrap_or_default()), 1e-4)
                .unwrap();
            let dt = t1.elapsed().as_secs_f64();
            if i >= warmup {
                secs += dt;
                data_secs += dt_data;
                flops += f;
                samples += s;
                tokens += tk;
            }
        }
        let achieved = flops / secs;
        println!("{label}:");
        println!(
            "step: {:.1} ms; {:.1} samples/s, {:.0} tokens/s (non-pad); data prep {:.1} ms/step (own thread in exec)",
            1e3 * secs / steps as f64,
            samples as f64 / secs,
            tokens as f64 / secs,
            1e3 * data_secs / steps as f64
        );
        println!(
            "model FLOPs/step {:.3} GFLOP; achieved {:.2} GFLOP/s; candle f32 matmul peak {:.2} GFLOP/s; fraction {:.1}%",
            flops / steps as f64 / 1e9,
            achieved / 1e9,
            peak / 1e9,
            100.0 * achieved / peak
        );
    }
    model::frozen::use_plain_matmul_baseline(false);
}
