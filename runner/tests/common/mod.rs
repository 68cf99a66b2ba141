//! A tiny Flamingo training setup on disk in the real layouts: the synthetic world's shards, a
//! BPE tokenizer trained on its corpus, a random open_clip ViT and a random MPT-style HF LM.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use runner::config::schema::{DataSource, FlamingoSizes, Schedule, SourceKind, TrainConfig};
use runner::data::synth::{SynthOptions, WorldSize, write_world};
use runner::train::assemble::ModelSpec;

/// Width of the tiny ViT and LM.
pub const VISION_WIDTH: usize = 32;
/// LM width.
pub const LM_WIDTH: usize = 32;

/// Backbone and world directories of one fixture.
pub struct Fixture {
    /// Root (removed on drop).
    pub root: tempfile::TempDir,
    /// The synthetic world.
    pub world: PathBuf,
    /// open_clip vision directory.
    pub vision: PathBuf,
    /// HF LM directory with tokenizer.
    pub lm: PathBuf,
}

fn rand_tensor(
    rng: &mut rand_chacha::ChaCha8Rng,
    shape: &[usize],
    scale: f32,
    offset: f32,
) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random open_clip ViT: width 32, 2 layers, 8px patches on 32px images.
pub fn write_vision(dir: &Path) {
    write_vision_sized(dir, VISION_WIDTH, 2, 32, 16);
}

/// A random open_clip ViT of width `d` with `layers` layers, 8px patches, `image`px inputs and
/// heads of width `head_width`.
pub fn write_vision_sized(dir: &Path, d: usize, layers: usize, image: usize, head_width: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let patches = (image / 8) * (image / 8);
    let mut t = HashMap::new();
    let mut put = |k: String, s: &[usize], scale: f32, off: f32| {
        t.insert(k, rand_tensor(&mut rng, s, scale, off));
    };
    put("visual.conv1.weight".into(), &[d, 3, 8, 8], 0.05, 0.0);
    put("visual.class_embedding".into(), &[d], 0.5, 0.0);
    put(
        "visual.positional_embedding".into(),
        &[patches + 1, d],
        0.5,
        0.0,
    );
    put("visual.proj".into(), &[d, 16], 0.3, 0.0);
    for n in ["ln_pre", "ln_post"] {
        put(format!("visual.{n}.weight"), &[d], 0.1, 1.0);
        put(format!("visual.{n}.bias"), &[d], 0.1, 0.0);
    }
    for i in 0..layers {
        let b = format!("visual.transformer.resblocks.{i}");
        for n in ["ln_1", "ln_2"] {
            put(format!("{b}.{n}.weight"), &[d], 0.1, 1.0);
            put(format!("{b}.{n}.bias"), &[d], 0.1, 0.0);
        }
        put(format!("{b}.attn.in_proj_weight"), &[3 * d, d], 0.2, 0.0);
        put(format!("{b}.attn.in_proj_bias"), &[3 * d], 0.1, 0.0);
        put(format!("{b}.attn.out_proj.weight"), &[d, d], 0.2, 0.0);
        put(format!("{b}.attn.out_proj.bias"), &[d], 0.1, 0.0);
        put(format!("{b}.mlp.c_fc.weight"), &[4 * d, d], 0.2, 0.0);
        put(format!("{b}.mlp.c_fc.bias"), &[4 * d], 0.1, 0.0);
        put(format!("{b}.mlp.c_proj.weight"), &[d, 4 * d], 0.1, 0.0);
        put(format!("{b}.mlp.c_proj.bias"), &[d], 0.1, 0.0);
    }
    candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
    let cfg = serde_json::json!({"model_cfg": {"embed_dim": 16, "quick_gelu": true,
        "vision_cfg": {"image_size": image, "layers": layers, "width": d, "patch_size": 8,
            "head_width": head_width}}});
    std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
}

/// A random MPT-style LM (tied embeddings, ALiBi) over the tokenizer in `dir`.
pub fn write_mpt(dir: &Path, vocab: usize) {
    write_mpt_sized(dir, vocab, LM_WIDTH, 2, 4);
}

/// A random MPT-style LM of width `d`, `layers` layers and `heads` heads.
pub fn write_mpt_sized(dir: &Path, vocab: usize, d: usize, layers: usize, heads: usize) {
    let mut names: Vec<(String, Vec<usize>)> =
        vec![("transformer.wte.weight".into(), vec![vocab, d])];
    for i in 0..layers {
        let p = format!("transformer.blocks.{i}");
        names.push((format!("{p}.norm_1.weight"), vec![d]));
        names.push((format!("{p}.attn.Wqkv.weight"), vec![3 * d, d]));
        names.push((format!("{p}.attn.out_proj.weight"), vec![d, d]));
        names.push((format!("{p}.norm_2.weight"), vec![d]));
        names.push((format!("{p}.ffn.up_proj.weight"), vec![4 * d, d]));
        names.push((format!("{p}.ffn.down_proj.weight"), vec![d, 4 * d]));
    }
    names.push(("transformer.norm_f.weight".into(), vec![d]));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let tensors: HashMap<String, Tensor> = names
        .iter()
        .map(|(n, s)| {
            let t = if n.contains("norm") {
                rand_tensor(&mut rng, s, 0.1, 1.0)
            } else {
                rand_tensor(&mut rng, s, 0.2, 0.0)
            };
            (n.clone(), t)
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({"model_type": "mpt", "d_model": d, "n_heads": heads, "n_layers": layers,
        "expansion_ratio": 4, "max_seq_len": 256, "vocab_size": vocab, "no_bias": true,
        "norm_type": "low_precision_layernorm",
        "attn_config": {"alibi": true, "alibi_bias_max": 8, "attn_type": "multihead_attention",
            "prefix_lm": false}});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"eos_token": "<|endoftext|>"}"#,
    )
    .unwrap();
}

/// Writes the tiny world and the backbones under a fresh temporary directory.
pub fn fixture() -> Fixture {
    fixture_with(300, write_vision, write_mpt)
}

/// The world, a BPE of `vocab` entries, and backbones written by the given functions.
pub fn fixture_with(vocab: usize, vision_fn: fn(&Path), lm_fn: fn(&Path, usize)) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let world = root.path().join("world");
    write_world(&world, &SynthOptions::new(3, WorldSize::Tiny)).unwrap();
    let vision = root.path().join("vision");
    vision_fn(&vision);
    let lm = root.path().join("lm");
    runner::pretrain::tokenizer::train_bpe(&[&world.join("text/corpus.txt")], vocab, &lm).unwrap();
    let tok = tokenizers::Tokenizer::from_file(lm.join("tokenizer.json")).unwrap();
    lm_fn(&lm, tok.get_vocab_size(true));
    Fixture {
        root,
        world,
        vision,
        lm,
    }
}

/// Small perceiver and cross-attention.
pub const SIZES: FlamingoSizes = FlamingoSizes {
    perceiver_depth: 1,
    perceiver_latents: 4,
    perceiver_heads: 2,
    perceiver_dim_head: 8,
    cross_attn_heads: 2,
    cross_attn_dim_head: 8,
};

impl Fixture {
    /// The model spec over this fixture's backbones.
    pub fn model(&self, trainable_embeddings: bool) -> ModelSpec {
        ModelSpec {
            vision_dir: self.vision.clone(),
            language_dir: self.lm.clone(),
            checkpoint: None,
            cross_attn_every_n_layers: 1,
            special_embeddings: if trainable_embeddings {
                model::SpecialEmbeddingMode::Trainable
            } else {
                model::SpecialEmbeddingMode::Frozen
            },
            ln_post_tokens: false,
            sizes: SIZES,
            init_seed: 42,
        }
    }

    /// Pairs (batch 4, 24 tokens, loss weight 0.2) and interleaved documents (batch 2, 48 tokens).
    pub fn train(&self, steps: i64, lr: f64) -> TrainConfig {
        let w = self.world.display();
        let source = |kind, shards: String, batch_size, loss_weight, max_tokens| DataSource {
            kind,
            shards,
            batch_size,
            loss_weight,
            max_tokens: Some(max_tokens),
            sim_threshold: 0.0,
            max_images: 2,
            resample: true,
            shuffle_buffer: 8,
            no_loss_spans: Vec::new(),
        };
        TrainConfig {
            steps,
            lr,
            warmup_steps: 2,
            schedule: Schedule::Constant,
            weight_decay: 0.1,
            grad_accum: 1,
            max_grad_norm: 1.0,
            seed: 42,
            checkpoint_every: 0,
            keep_checkpoints: 2,
            log_every: 1,
            data: vec![
                source(
                    SourceKind::Pairs,
                    format!("{w}/laion/{{000..001}}.tar"),
                    4,
                    0.2,
                    24,
                ),
                source(
                    SourceKind::Interleaved,
                    format!("{w}/mmc4/{{000..001}}.tar"),
                    2,
                    1.0,
                    48,
                ),
            ],
        }
    }
}
