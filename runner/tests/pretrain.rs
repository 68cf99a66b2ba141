//! The preset backbones: pretrained on a tiny synthetic world, saved in the real layouts, reloaded by
//! the model crate with the trained numbers, and run as cached, resumable `pretrain` jobs.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::lm::weights::Weights;
use model::vision::VisionEncoder;
use model::{AttnCtx, DecoderLm, FlamingoTokenizer, SpecialEmbeddingMode};
use runner::config::schema::{PretrainLanguage, PretrainVision};
use runner::config::{self, Overrides};
use runner::data::synth::{SynthOptions, WorldSize, write_world};
use runner::exec::{ExecOptions, exec};
use runner::pretrain::language::pretrain_language;
use runner::pretrain::vision::pretrain_vision;
use runner::pretrain::{StepReport, backbone_dir};

fn tiny_world(dir: &Path) -> PathBuf {
    let world = dir.join("world");
    write_world(&world, &SynthOptions::new(0, WorldSize::Tiny)).expect("tiny world");
    world
}

fn vision_cfg() -> PretrainVision {
    PretrainVision {
        name: "v".into(),
        image_size: 32,
        patch_size: 8,
        width: 16,
        layers: 1,
        heads: 2,
        embed_dim: 8,
        steps: 30,
        batch_size: 8,
        lr: 5e-3,
        seed: 0,
    }
}

fn language_cfg() -> PretrainLanguage {
    PretrainLanguage {
        name: "l".into(),
        family: Default::default(),
        vocab_size: 300,
        hidden_size: 32,
        layers: 2,
        heads: 2,
        max_positions: 64,
        steps: 40,
        batch_size: 8,
        seq_len: 32,
        // Every 4th step: 4 rows of 64 tokens (the same 256 tokens).
        long_seq_len: Some(64),
        long_every: Some(4),
        lr: 5e-3,
        seed: 0,
    }
}

#[test]
fn long_steps_keep_the_token_budget_and_are_checked() {
    let cfg = language_cfg();
    let shapes: Vec<_> = (0..8).map(|s| cfg.step_shape(s)).collect();
    assert_eq!(
        shapes,
        [
            (8, 32),
            (8, 32),
            (8, 32),
            (4, 64),
            (8, 32),
            (8, 32),
            (8, 32),
            (4, 64)
        ]
    );
    let plain = PretrainLanguage {
        long_seq_len: None,
        ..language_cfg()
    };
    assert!((0..8).all(|s| plain.step_shape(s) == (8, 32)));

    let tmp = tempfile::tempdir().unwrap();
    let world = tiny_world(tmp.path());
    let too_long = PretrainLanguage {
        long_seq_len: Some(65),
        ..language_cfg()
    };
    let err = pretrain_language(
        &too_long,
        &world,
        &tmp.path().join("language"),
        &Device::Cpu,
        &mut |_: &StepReport| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`long_seq_len` 65 exceeds"),
        "{err}"
    );
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn vision_backbone_is_an_open_clip_dir_with_the_trained_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tiny_world(tmp.path());
    let out = tmp.path().join("vision");
    let cfg = vision_cfg();
    let mut losses = Vec::new();
    let summary = pretrain_vision(&cfg, &world, &out, &Device::Cpu, &mut |r: &StepReport| {
        losses.push(r.loss)
    })
    .unwrap();
    assert_eq!(losses.len(), 30);
    assert_eq!(summary.steps, 30);
    // The stage itself reloads the directory and compares pooled embeddings of real images.
    assert!(summary.reload_max_abs_diff < 1e-4, "{summary:?}");
    assert!(
        mean(&losses[25..]) < mean(&losses[..5]) - 0.3,
        "contrastive loss should fall: {losses:?}"
    );

    let enc = VisionEncoder::load(&out, false, &Device::Cpu).unwrap();
    let c = enc.config();
    assert_eq!(
        (c.image_size, c.patch_size, c.width, c.layers, c.heads),
        (32, 8, 16, 1, 2)
    );
    assert_eq!(c.output_dim, Some(8), "RICES needs the projection");
    let px = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    assert_eq!(enc.embed_image(&px).unwrap().dims(), &[2, 8]);
    assert_eq!(enc.forward_tokens(&px).unwrap().dims(), &[2, 16, 16]);

    // Same seed, same backbone.
    let again = tmp.path().join("again");
    pretrain_vision(&cfg, &world, &again, &Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join("open_clip_model.safetensors")).unwrap(),
        std::fs::read(again.join("open_clip_model.safetensors")).unwrap()
    );
}

/// Pretrains `cfg` on a tiny world, checks that the reload gives the trained logits and that the
/// loss fell, and returns the temp dir (keep it alive), the backbone dir and its `config.json`.
fn pretrain_language_checked(
    cfg: &PretrainLanguage,
) -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let world = tiny_world(tmp.path());
    let out = tmp.path().join("language");
    let mut losses = Vec::new();
    let summary = pretrain_language(cfg, &world, &out, &Device::Cpu, &mut |r: &StepReport| {
        losses.push(r.loss)
    })
    .unwrap();
    assert_eq!(summary.reload_max_abs_diff, 0.0, "{summary:?}");
    assert!(
        mean(&losses[35..]) < 0.8 * mean(&losses[..5]),
        "next-token loss should fall: {losses:?}"
    );
    let config =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    (tmp, out, config)
}

/// Loads the backbone in `out` as Flamingo loads an LM (the table resized to the tokenizer with
/// its added tokens trainable) and returns the shape of the logits of `ids` `(1, n)`.
fn flamingo_logits_dims(out: &Path, tok: &FlamingoTokenizer, ids: &Tensor) -> Vec<usize> {
    let lm = DecoderLm::load(
        out,
        tok.len(),
        SpecialEmbeddingMode::Trainable,
        &tok.trainable_token_ids(),
        &Device::Cpu,
    )
    .unwrap();
    let n = ids.dims()[1];
    let ctx = AttnCtx::unpadded(1, n, 0, &Device::Cpu).unwrap();
    lm.forward(ids, &ctx, None).unwrap().dims().to_vec()
}

#[test]
fn language_backbone_is_an_hf_opt_dir_that_reloads_with_the_trained_logits() {
    let (_tmp, out, config) = pretrain_language_checked(&language_cfg());
    assert_eq!(config["model_type"], "opt");
    assert_eq!(config["architectures"][0], "OPTForCausalLM");
    for key in [
        "vocab_size",
        "hidden_size",
        "ffn_dim",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "word_embed_proj_dim",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ] {
        assert!(config[key].is_u64(), "config.json lacks {key}");
    }
    let weights = Weights::open(&out, &Device::Cpu, DType::F32).unwrap();
    for name in [
        "model.decoder.embed_tokens.weight",
        "model.decoder.embed_positions.weight",
        "model.decoder.layers.1.self_attn.q_proj.weight",
        "model.decoder.layers.1.self_attn_layer_norm.bias",
        "model.decoder.layers.0.fc2.weight",
        "model.decoder.final_layer_norm.weight",
    ] {
        assert!(weights.contains(name), "missing {name}");
    }

    // Loaded as Flamingo loads an LM: the tokenizer adds its tokens, the table is resized.
    let tok = FlamingoTokenizer::from_dir(&out).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    assert_eq!(tok.len(), vocab + 3);
    assert_eq!(
        tok.eos_id(),
        Some(config["eos_token_id"].as_u64().unwrap() as u32)
    );
    let text = "a red circle";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() < text.len(), "BPE merges learned: {ids:?}");
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
    assert_eq!(flamingo_logits_dims(&out, &tok, &ids), [1, n, tok.len()]);
}

#[test]
fn mpt_language_backbone_is_an_hf_mpt_dir_with_alibi_that_reloads_with_the_trained_logits() {
    use runner::config::schema::TinyLmFamily;
    let (_tmp, out, config) = pretrain_language_checked(&PretrainLanguage {
        family: TinyLmFamily::Mpt,
        ..language_cfg()
    });
    assert_eq!(config["model_type"], "mpt");
    assert_eq!(config["attn_config"]["alibi"], true);
    assert_eq!(config["max_seq_len"], 64);
    let weights = Weights::open(&out, &Device::Cpu, DType::F32).unwrap();
    for name in [
        "transformer.wte.weight",
        "transformer.blocks.1.attn.Wqkv.weight",
        "transformer.blocks.0.ffn.down_proj.weight",
        "transformer.norm_f.weight",
    ] {
        assert!(weights.contains(name), "missing {name}");
    }
    assert!(
        !weights.contains("transformer.wpe.weight"),
        "ALiBi: no position table"
    );

    // Flamingo's view: the tokenizer's added tokens resize the table; the whole max_seq_len runs.
    let tok = FlamingoTokenizer::from_dir(&out).unwrap();
    let ids = Tensor::zeros((1, 64), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(flamingo_logits_dims(&out, &tok, &ids), [1, 64, tok.len()]);
}

fn experiment(dir: &Path) -> PathBuf {
    let path = dir.join("e.toml");
    let world = dir.join("world");
    std::fs::write(
        &path,
        format!(
            r#"
name = "pretrain-test"

[model]
vision = "v"
language = "l"

[data.synth]
dir = "{}"
size = "tiny"

[pretrain.vision]
name = "v"
image_size = 32
patch_size = 8
width = 16
layers = 1
heads = 2
embed_dim = 8
steps = 4
batch_size = 8
lr = 5e-3

[pretrain.language]
name = "l"
vocab_size = 300
hidden_size = 16
layers = 1
heads = 2
max_positions = 64
steps = 4
batch_size = 4
seq_len = 16
lr = 5e-3
"#,
            world.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn exec_runs_pretrain_jobs_records_losses_and_redoes_a_deleted_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment(tmp.path());
    let db = tmp.path().join("runs").join("results.sqlite");
    let loaded = config::load(&file, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let plan = runner::plan::plan(&loaded);
    let summary = exec(&plan, &loaded, &db, &ExecOptions::default()).unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.ran, 3);

    let runs = tmp.path().join("runs");
    let store = results::Store::open(&db).unwrap();
    let pretrain: Vec<_> = plan
        .jobs
        .iter()
        .filter(|j| j.kind == runner::plan::JobKind::Pretrain)
        .collect();
    assert_eq!(pretrain.len(), 2);
    for job in &pretrain {
        let which = job.spec["inputs"]["backbone"].as_str().unwrap();
        let dir = backbone_dir(&runs, &job.hash, which);
        assert!(dir.is_dir(), "{}", dir.display());
        let metrics = store.train_metrics(&job.hash).unwrap();
        assert_eq!(metrics.len(), 4, "{which}");
        let source = if which == "vision" {
            "contrastive"
        } else {
            "next_token"
        };
        assert!(
            metrics
                .iter()
                .all(|m| m.source == source && m.loss.is_some())
        );
        // No scratch directory is left behind.
        let siblings: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(siblings, vec![which.to_string()]);
    }

    // Cached: nothing runs again.
    let again = exec(&plan, &loaded, &db, &ExecOptions::default()).unwrap();
    assert_eq!((again.ran, again.already_done), (0, 3));

    // A deleted backbone (or a half-written leftover) makes its job run again.
    let vision = pretrain
        .iter()
        .find(|j| j.spec["inputs"]["backbone"] == "vision")
        .unwrap();
    let dir = backbone_dir(&runs, &vision.hash, "vision");
    std::fs::remove_file(dir.join("open_clip_model.safetensors")).unwrap();
    std::fs::create_dir_all(dir.parent().unwrap().join(".vision.partial")).unwrap();
    let redo = exec(&plan, &loaded, &db, &ExecOptions::default()).unwrap();
    assert_eq!((redo.ran, redo.already_done), (1, 2));
    assert!(VisionEncoder::load(&dir, false, &Device::Cpu).is_ok());
    assert!(!dir.parent().unwrap().join(".vision.partial").exists());
}
