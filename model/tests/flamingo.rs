//! Flamingo assembly, masking, generation, rank scoring and checkpoint tests on tiny models written
//! to disk in the real formats (open_clip vision dir, HF LM dir + tokenizer.json) and loaded through
//! the same code users use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::VarMap;
use model::checkpoint::{CheckpointLayout, load_checkpoint};
use model::cross_attn::{CrossAttnConfig, text_time_from_ids};
use model::flamingo::{Flamingo, FlamingoConfig, FlamingoSpec, has_cross_attn};
use model::lm::{AttnCtx, DecoderLm};
use model::perceiver::PerceiverConfig;
use model::vision::VisionEncoder;
use model::{GenerateConfig, ModelError, PromptBatch, SpecialEmbeddingMode, generate, rank_scores};
use rand::{Rng, SeedableRng};

const VOCAB: usize = 50;
const EOC: u32 = 47;
const IMG: u32 = 48;
const PAD: u32 = 49;
const D_MODEL: usize = 16;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-flamingo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// A tiny open_clip ViT: width 16, 2 layers, 2 heads, 8px patches on 16px images.
fn write_vision(dir: &Path) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let d = D_MODEL;
    let mut t = HashMap::new();
    let mut put =
        |k: String, s: &[usize], scale: f32, off: f32, rng: &mut rand_chacha::ChaCha8Rng| {
            t.insert(k, rand_tensor(rng, s, scale, off));
        };
    put(
        "visual.conv1.weight".into(),
        &[d, 3, 8, 8],
        0.1,
        0.0,
        &mut rng,
    );
    put("visual.class_embedding".into(), &[d], 0.5, 0.0, &mut rng);
    put(
        "visual.positional_embedding".into(),
        &[5, d],
        0.5,
        0.0,
        &mut rng,
    );
    put("visual.proj".into(), &[d, 8], 0.3, 0.0, &mut rng);
    for n in ["ln_pre", "ln_post"] {
        put(format!("visual.{n}.weight"), &[d], 0.1, 1.0, &mut rng);
        put(format!("visual.{n}.bias"), &[d], 0.1, 0.0, &mut rng);
    }
    for i in 0..2 {
        let b = format!("visual.transformer.resblocks.{i}");
        for n in ["ln_1", "ln_2"] {
            put(format!("{b}.{n}.weight"), &[d], 0.1, 1.0, &mut rng);
            put(format!("{b}.{n}.bias"), &[d], 0.1, 0.0, &mut rng);
        }
        put(
            format!("{b}.attn.in_proj_weight"),
            &[3 * d, d],
            0.3,
            0.0,
            &mut rng,
        );
        put(
            format!("{b}.attn.in_proj_bias"),
            &[3 * d],
            0.1,
            0.0,
            &mut rng,
        );
        put(
            format!("{b}.attn.out_proj.weight"),
            &[d, d],
            0.3,
            0.0,
            &mut rng,
        );
        put(format!("{b}.attn.out_proj.bias"), &[d], 0.1, 0.0, &mut rng);
        put(
            format!("{b}.mlp.c_fc.weight"),
            &[4 * d, d],
            0.3,
            0.0,
            &mut rng,
        );
        put(format!("{b}.mlp.c_fc.bias"), &[4 * d], 0.1, 0.0, &mut rng);
        put(
            format!("{b}.mlp.c_proj.weight"),
            &[d, 4 * d],
            0.2,
            0.0,
            &mut rng,
        );
        put(format!("{b}.mlp.c_proj.bias"), &[d], 0.1, 0.0, &mut rng);
    }
    candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
    let cfg = serde_json::json!({"model_cfg": {"embed_dim": 8, "quick_gelu": true,
        "vision_cfg": {"image_size": 16, "layers": 2, "width": d, "patch_size": 8, "head_width": 8}}});
    std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
}

/// A tiny HF LM directory (`mpt` with ALiBi and q/k LayerNorm, or `opt`) plus a word-level
/// `tokenizer.json` of 47 tokens (Flamingo adds `<|endofchunk|>`=47, `<image>`=48, `<PAD>`=49).
fn write_lm(kind: &str, dir: &Path) {
    let d = D_MODEL;
    let mut names: Vec<(String, Vec<usize>)> = vec![];
    let mut add = |n: String, s: &[usize]| names.push((n, s.to_vec()));
    let config = match kind {
        "mpt" => {
            add("transformer.wte.weight".into(), &[VOCAB, d]);
            for i in 0..2 {
                let p = format!("transformer.blocks.{i}");
                add(format!("{p}.norm_1.weight"), &[d]);
                add(format!("{p}.attn.Wqkv.weight"), &[3 * d, d]);
                add(format!("{p}.attn.q_ln.weight"), &[d]);
                add(format!("{p}.attn.k_ln.weight"), &[d]);
                add(format!("{p}.attn.out_proj.weight"), &[d, d]);
                add(format!("{p}.norm_2.weight"), &[d]);
                add(format!("{p}.ffn.up_proj.weight"), &[2 * d, d]);
                add(format!("{p}.ffn.down_proj.weight"), &[d, 2 * d]);
            }
            add("transformer.norm_f.weight".into(), &[d]);
            serde_json::json!({"model_type": "mpt", "d_model": d, "n_heads": 4, "n_layers": 2,
                "expansion_ratio": 2, "max_seq_len": 64, "vocab_size": VOCAB, "no_bias": true,
                "norm_type": "low_precision_layernorm",
                "attn_config": {"alibi": true, "alibi_bias_max": 8, "qk_ln": true,
                    "attn_type": "multihead_attention", "prefix_lm": false}})
        }
        "opt" => {
            add("model.decoder.embed_tokens.weight".into(), &[VOCAB, d]);
            add("model.decoder.embed_positions.weight".into(), &[66, d]);
            for i in 0..2 {
                let p = format!("model.decoder.layers.{i}");
                for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    add(format!("{p}.self_attn.{n}.weight"), &[d, d]);
                    add(format!("{p}.self_attn.{n}.bias"), &[d]);
                }
                for n in ["self_attn_layer_norm", "final_layer_norm"] {
                    add(format!("{p}.{n}.weight"), &[d]);
                    add(format!("{p}.{n}.bias"), &[d]);
                }
                add(format!("{p}.fc1.weight"), &[32, d]);
                add(format!("{p}.fc1.bias"), &[32]);
                add(format!("{p}.fc2.weight"), &[d, 32]);
                add(format!("{p}.fc2.bias"), &[d]);
            }
            add("model.decoder.final_layer_norm.weight".into(), &[d]);
            add("model.decoder.final_layer_norm.bias".into(), &[d]);
            serde_json::json!({"model_type": "opt", "vocab_size": VOCAB, "hidden_size": d,
                "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 32,
                "max_position_embeddings": 64, "word_embed_proj_dim": d, "do_layer_norm_before": true,
                "activation_function": "relu", "init_std": 0.02})
        }
        other => panic!("unknown tiny LM {other}"),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let tensors: HashMap<String, Tensor> = names
        .iter()
        .map(|(n, s)| {
            let norm_w = (n.contains("norm") || n.contains("_ln")) && n.ends_with("weight");
            let t = if norm_w {
                rand_tensor(&mut rng, s, 0.2, 1.0)
            } else {
                rand_tensor(&mut rng, s, 0.6, 0.0)
            };
            (n.clone(), t)
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    vocab.insert("<|endoftext|>".into(), 1.into());
    for i in 2..47 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let tok = serde_json::json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 1, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"eos_token": "<|endoftext|>"}"#,
    )
    .unwrap();
}

fn tiny_cfg(n: usize) -> FlamingoConfig {
    FlamingoConfig {
        cross_attn_every_n_layers: n,
        media_token_id: IMG,
        eoc_token_id: EOC,
        perceiver: PerceiverConfig {
            dim: D_MODEL,
            depth: 2,
            dim_head: 4,
            heads: 2,
            num_latents: 3,
            ff_mult: 2,
        },
        cross_attn: CrossAttnConfig {
            dim: D_MODEL,
            dim_visual: D_MODEL,
            dim_head: 4,
            heads: 2,
            ff_mult: 2,
        },
    }
}

struct Dirs {
    vision: PathBuf,
    lm: PathBuf,
}

fn dirs(name: &str, kind: &str) -> Dirs {
    let root = tmp_dir(name);
    let vision = root.join("vision");
    let lm = root.join("lm");
    std::fs::create_dir_all(&vision).unwrap();
    std::fs::create_dir_all(&lm).unwrap();
    write_vision(&vision);
    write_lm(kind, &lm);
    Dirs { vision, lm }
}

/// A tiny Flamingo; with `gates` the gates are set to non-zero values so that x-attn matters.
fn tiny_model(d: &Dirs, n: usize, gates: Option<(f32, f32)>) -> Flamingo {
    let dev = Device::Cpu;
    let vision = VisionEncoder::load(&d.vision, false, &dev).unwrap();
    let lm = DecoderLm::load(
        &d.lm,
        VOCAB,
        SpecialEmbeddingMode::Trainable,
        &[IMG, EOC],
        &dev,
    )
    .unwrap();
    let model = Flamingo::with_config(vision, lm, tiny_cfg(n), VarMap::new(), 3).unwrap();
    if let Some((a, f)) = gates {
        for (name, var) in model.varmap().data().lock().unwrap().iter() {
            if name.ends_with("attn_gate") {
                var.set(&Tensor::new(&[a], &dev).unwrap()).unwrap();
            } else if name.ends_with("ff_gate") {
                var.set(&Tensor::new(&[f], &dev).unwrap()).unwrap();
            }
        }
    }
    model
}

fn pixels(b: usize, t: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rand_tensor(&mut rng, &[b, t, 3, 16, 16], 1.0, 0.0)
}

fn ids(rows: &[Vec<u32>]) -> Tensor {
    Tensor::from_vec(rows.concat(), (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ones(b: usize, t: usize) -> Tensor {
    Tensor::ones((b, t), DType::U32, &Device::Cpu).unwrap()
}

#[test]
fn placement_and_names_for_n_1_and_2() {
    let d = dirs("placement", "mpt");
    for n in [1, 2] {
        let m = tiny_model(&d, n, None);
        let present: Vec<bool> = m.cross_attn_layers().iter().map(Option::is_some).collect();
        let expect: Vec<bool> = (0..2).map(|i| has_cross_attn(i, n)).collect();
        assert_eq!(present, expect);
        assert_eq!(
            present,
            if n == 1 {
                vec![true, true]
            } else {
                vec![false, true]
            }
        );
        let names: Vec<String> = m.varmap().data().lock().unwrap().keys().cloned().collect();
        assert!(
            names.iter().any(|k| k
                == "lang_encoder.transformer.blocks.1.gated_cross_attn_layer.attn.to_kv.weight")
        );
        assert_eq!(
            names
                .iter()
                .any(|k| k.starts_with("lang_encoder.transformer.blocks.0.")),
            n == 1
        );
        assert!(
            names
                .iter()
                .any(|k| k == "perceiver.layers.1.0.to_kv.weight")
        );
        let tv = m.trainable_vars();
        assert!(
            tv.cross_attn
                .iter()
                .all(|(k, _)| k.contains("gated_cross_attn"))
        );
        assert!(
            tv.perceiver
                .iter()
                .all(|(k, _)| k.starts_with("perceiver."))
        );
        assert_eq!(tv.embeddings.len(), 1);
        assert_eq!(tv.cross_attn.len(), if n == 1 { 22 } else { 11 });
    }
    assert!(has_cross_attn(3, 4) && !has_cross_attn(2, 4) && has_cross_attn(0, 1));
}

#[test]
fn shapes_and_zero_gates_leave_lm_unchanged() {
    for kind in ["mpt", "opt"] {
        let d = dirs(&format!("zero-{kind}"), kind);
        let m = tiny_model(&d, 1, None);
        let px = pixels(2, 2, 1);
        let media = m.encode_media(&px).unwrap();
        assert_eq!(media.dims(), &[2, 2, 3, D_MODEL]);
        assert_eq!(m.vision_features(&px).unwrap().dims(), &[2, 2, 4, D_MODEL]);
        let rows = vec![vec![5, IMG, 7, 8, IMG, 9], vec![IMG, 3, 4, 5, 6, 7]];
        let logits = m.forward(&px, &ids(&rows), &ones(2, 6)).unwrap();
        assert_eq!(logits.dims(), &[2, 6, VOCAB]);
        let lm_only = m
            .lm()
            .forward(&ids(&rows), &AttnCtx::sequential(ones(2, 6), 0), None)
            .unwrap();
        assert_eq!(max_diff(&logits, &lm_only), 0.0, "{kind}");
    }
}

#[test]
fn text_before_first_image_gets_no_attention_but_ffw() {
    let d = dirs("mask", "mpt");
    let dev = Device::Cpu;
    let rows = vec![vec![5, 6, IMG, 7, IMG, 9]];
    // Attention gate on, FFW gate off: positions before the first <image> equal the LM alone.
    let m = tiny_model(&d, 1, Some((0.8, 0.0)));
    let px = pixels(1, 2, 2);
    let ctx = AttnCtx::sequential(ones(1, 6), 0);
    let lm_only = m.lm().forward(&ids(&rows), &ctx, None).unwrap();
    let logits = m.forward(&px, &ids(&rows), &ones(1, 6)).unwrap();
    assert!(
        max_diff(
            &logits.i((.., 0..2)).unwrap(),
            &lm_only.i((.., 0..2)).unwrap()
        ) < 1e-6
    );
    assert!(
        max_diff(
            &logits.i((.., 2..)).unwrap(),
            &lm_only.i((.., 2..)).unwrap()
        ) > 1e-4
    );
    // Changing only the second image leaves positions before the second <image> unchanged.
    let px2 = Tensor::cat(&[&px.i((.., 0..1)).unwrap(), &pixels(1, 1, 9)], 1).unwrap();
    let logits2 = m.forward(&px2, &ids(&rows), &ones(1, 6)).unwrap();
    assert!(
        max_diff(
            &logits.i((.., 0..4)).unwrap(),
            &logits2.i((.., 0..4)).unwrap()
        ) < 1e-6
    );
    assert!(
        max_diff(
            &logits.i((.., 4..)).unwrap(),
            &logits2.i((.., 4..)).unwrap()
        ) > 1e-5
    );
    // With the FFW gate on too, text before the first image does change (FFW still applies).
    let m = tiny_model(&d, 1, Some((0.8, 0.6)));
    let logits = m.forward(&px, &ids(&rows), &ones(1, 6)).unwrap();
    assert!(
        max_diff(
            &logits.i((.., 0..2)).unwrap(),
            &lm_only.i((.., 0..2)).unwrap()
        ) > 1e-4
    );
    // An extra (padding) image beyond the <image> tokens is never attended. It lengthens the
    // key axis, which changes how the matmuls tile it: the logits agree to float rounding only.
    let px3 = Tensor::cat(&[&px, &pixels(1, 1, 4)], 1).unwrap();
    let logits3 = m.forward(&px3, &ids(&rows), &ones(1, 6)).unwrap();
    let d3 = max_diff(&logits, &logits3);
    assert!(d3 < 1e-5, "{d3}");
    // More <image> tokens than images is an input error.
    let err = m
        .forward(&px.i((.., 0..1)).unwrap(), &ids(&rows), &ones(1, 6))
        .unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
    let _ = dev;
}

#[test]
fn cached_media_step_equals_full_forward() {
    let d = dirs("cached", "mpt");
    let dev = Device::Cpu;
    let m = tiny_model(&d, 1, Some((0.7, 0.4)));
    let px = pixels(1, 2, 3);
    let prompt = vec![4u32, IMG, 6, 7, IMG, 8];
    let media = m.encode_media(&px).unwrap();
    let mctx = m.media_context(&media).unwrap();
    let mut cache = m.lm().new_cache();
    let mask = mctx
        .mask(
            &text_time_from_ids(std::slice::from_ref(&prompt), IMG),
            &dev,
        )
        .unwrap();
    m.infer_hidden(
        &ids(std::slice::from_ref(&prompt)),
        &mctx,
        &mask,
        &AttnCtx::new(ones(1, 6), 0),
        Some(&mut cache),
    )
    .unwrap();
    // Two new tokens through the cache, attending to the last cached image.
    let mut stepped = vec![];
    for (k, t) in [10u32, 11].iter().enumerate() {
        let mask = mctx
            .mask(&model::cross_attn::text_time_cached(&[2], 1), &dev)
            .unwrap();
        let ctx = AttnCtx::new(ones(1, 7 + k), 6 + k);
        let h = m
            .infer_hidden(&ids(&[vec![*t]]), &mctx, &mask, &ctx, Some(&mut cache))
            .unwrap();
        stepped.push(m.logits(&h).unwrap());
    }
    let full_ids = vec![4u32, IMG, 6, 7, IMG, 8, 10, 11];
    let full = m.forward(&px, &ids(&[full_ids]), &ones(1, 8)).unwrap();
    assert!(max_diff(&stepped[0], &full.i((.., 6..7)).unwrap()) < 1e-4);
    assert!(max_diff(&stepped[1], &full.i((.., 7..8)).unwrap()) < 1e-4);
}

/// Log-probs of the next token after `rows` by a full forward (brute force, no cache).
fn next_logprobs(m: &Flamingo, px: &Tensor, row: &[u32]) -> Vec<f32> {
    let logits = m
        .forward(px, &ids(&[row.to_vec()]), &ones(1, row.len()))
        .unwrap();
    let last = logits.i((0, row.len() - 1)).unwrap();
    candle_nn::ops::log_softmax(&last, D::Minus1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn greedy_equals_brute_force_and_beam1_is_greedy() {
    let d = dirs("greedy", "mpt");
    let m = tiny_model(&d, 1, Some((0.9, 0.5)));
    let px = pixels(1, 1, 5);
    let prompt = vec![IMG, 12, 13, 14];
    let cfg = GenerateConfig {
        prompt_logprobs: true,
        ..GenerateConfig::open_flamingo(EOC, PAD, 6, 1)
    };
    let batch = PromptBatch::left_padded(std::slice::from_ref(&prompt), PAD, px.clone()).unwrap();
    let g = &generate(&m, &batch, &cfg).unwrap()[0];
    let mut seq = prompt.clone();
    let mut expect = vec![];
    for _ in 0..6 {
        let lp = next_logprobs(&m, &px, &seq);
        let t = argmax(&lp) as u32;
        expect.push(t);
        seq.push(t);
        if t == EOC {
            break;
        }
    }
    assert_eq!(g.tokens, expect);
    // Prompt log-probs: token k given its prefix.
    let logits = m
        .forward(&px, &ids(std::slice::from_ref(&prompt)), &ones(1, 4))
        .unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want: Vec<f32> = (1..4).map(|k| lp[k - 1][prompt[k] as usize]).collect();
    assert_eq!(g.prompt_logprobs.len(), 3);
    for (a, b) in g.prompt_logprobs.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4);
    }
}

/// Beam search over 2 steps has a closed form: keep the top-`nb` first tokens (a stop token among
/// them becomes a finished hypothesis), then take the best continuation of any kept beam.
#[test]
fn beam_search_equals_brute_force_two_steps() {
    let d = dirs("beam", "mpt");
    let m = tiny_model(&d, 1, Some((0.9, 0.5)));
    let px = pixels(1, 1, 6);
    let prompt = vec![IMG, 20, 21];
    for eos in [EOC, 0] {
        let lp1 = next_logprobs(&m, &px, &prompt);
        // The stop token is taken to be one of the likely first tokens in the second round.
        let eos = if eos == 0 {
            let mut order: Vec<usize> = (0..VOCAB).collect();
            order.sort_by(|&a, &b| lp1[b].total_cmp(&lp1[a]));
            order[1] as u32
        } else {
            eos
        };
        let nb = 3;
        let mut order: Vec<usize> = (0..VOCAB).collect();
        order.sort_by(|&a, &b| lp1[b].total_cmp(&lp1[a]));
        let mut best: (f64, Vec<u32>) = (f64::NEG_INFINITY, vec![]);
        let mut kept = vec![];
        for &t in order.iter().take(2 * nb) {
            if t as u32 == eos {
                if order.iter().position(|&x| x == t).unwrap() < nb && (lp1[t] as f64) > best.0 {
                    best = (lp1[t] as f64, vec![eos]);
                }
            } else if kept.len() < nb {
                kept.push(t);
            }
        }
        for &t in &kept {
            let mut seq = prompt.clone();
            seq.push(t as u32);
            let lp2 = next_logprobs(&m, &px, &seq);
            for (u, &l) in lp2.iter().enumerate() {
                let s = (lp1[t] + l) as f64;
                if s > best.0 {
                    best = (
                        s,
                        if u as u32 == eos {
                            vec![t as u32, eos]
                        } else {
                            vec![t as u32, u as u32]
                        },
                    );
                }
            }
        }
        let cfg = GenerateConfig::open_flamingo(eos, PAD, 2, nb);
        let batch =
            PromptBatch::left_padded(std::slice::from_ref(&prompt), PAD, px.clone()).unwrap();
        let g = &generate(&m, &batch, &cfg).unwrap()[0];
        assert_eq!(g.tokens, best.1, "eos {eos}");
        assert!((g.score - best.0).abs() < 1e-4);
        let lp_sum: f64 = g.token_logprobs.iter().map(|&v| v as f64).sum();
        assert!((lp_sum - g.score).abs() < 1e-4);
    }
}

#[test]
fn batched_left_padding_equals_one_by_one() {
    // Comparable only while no decoding step feeds <image> back: the reference then re-conditions
    // every row (see `Generation::fed_media_token`), so the batch would matter.
    let mut compared = 0;
    for kind in ["mpt", "opt"] {
        let d = dirs(&format!("batch-{kind}"), kind);
        let m = tiny_model(&d, 2, Some((0.9, 0.5)));
        let prompts = vec![vec![IMG, 5, 6, 7, 8, IMG, 9], vec![IMG, 30, 31]];
        let px = pixels(2, 2, 8);
        // Row 2 has one image: its second image slot is zero padding.
        let row2 = Tensor::cat(
            &[
                &px.i((1, 0..1)).unwrap(),
                &px.i((1, 0..1)).unwrap().zeros_like().unwrap(),
            ],
            0,
        )
        .unwrap();
        let px = Tensor::stack(&[px.i(0).unwrap(), row2], 0).unwrap();
        for nb in [1, 3] {
            let cfg = GenerateConfig::open_flamingo(EOC, PAD, 5, nb);
            let batch = PromptBatch::left_padded(&prompts, PAD, px.clone()).unwrap();
            let together = generate(&m, &batch, &cfg).unwrap();
            for (r, p) in prompts.iter().enumerate() {
                let n_img = if r == 0 { 2 } else { 1 };
                let one = PromptBatch::left_padded(
                    std::slice::from_ref(p),
                    PAD,
                    px.i((r..r + 1, 0..n_img)).unwrap(),
                )
                .unwrap();
                let alone = &generate(&m, &one, &cfg).unwrap()[0];
                if together[r].fed_media_token || alone.fed_media_token {
                    continue;
                }
                compared += 1;
                assert_eq!(
                    together[r].tokens, alone.tokens,
                    "{kind} beams {nb} row {r}"
                );
                assert!(
                    (together[r].score - alone.score).abs() < 1e-3,
                    "{kind} beams {nb} row {r}"
                );
            }
        }
    }
    assert!(compared >= 4, "only {compared} comparisons were possible");
}

#[test]
fn rank_scores_match_full_forward() {
    let d = dirs("rank", "mpt");
    let m = tiny_model(&d, 1, Some((0.9, 0.5)));
    let px = pixels(1, 2, 9);
    let ctx = vec![IMG, 5, 6, EOC, IMG, 7];
    let cands = vec![vec![40u32], vec![41, 42, 43]];
    let batch = PromptBatch::left_padded(std::slice::from_ref(&ctx), PAD, px.clone()).unwrap();
    let sums = rank_scores(&m, &batch, &cands, false).unwrap();
    let err = rank_scores(&m, &batch, &[vec![VOCAB as u32]], false).unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
    let means = rank_scores(&m, &batch, &cands, true).unwrap();
    for (c, cand) in cands.iter().enumerate() {
        let mut full = ctx.clone();
        full.extend(cand);
        let logits = m
            .forward(&px, &ids(std::slice::from_ref(&full)), &ones(1, full.len()))
            .unwrap();
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want: f64 = (0..cand.len())
            .map(|k| lp[ctx.len() - 1 + k][cand[k] as usize] as f64)
            .sum();
        assert!((sums[0][c] - want).abs() < 1e-4, "{} vs {want}", sums[0][c]);
        assert!((means[0][c] - want / cand.len() as f64).abs() < 1e-4);
    }
}

/// The shared-cache mode (MosaicGPT remote code): candidate 2 is scored after the context and all
/// of candidate 1's tokens, except its first token, which the context alone predicts.
#[test]
fn rank_scores_shared_cache_mode() {
    let d = dirs("rank-shared", "mpt");
    let m = tiny_model(&d, 1, Some((0.9, 0.5)));
    let px = pixels(1, 1, 14);
    let ctx = vec![IMG, 5, 6, 7];
    let cands = vec![vec![40u32, 41], vec![42u32, 43, 44]];
    let batch = PromptBatch::left_padded(std::slice::from_ref(&ctx), PAD, px.clone()).unwrap();
    let opts = model::RankOptions {
        normalize_length: false,
        shared_cache: true,
    };
    let got = model::rank_scores_with(&m, &batch, &cands, &opts).unwrap();
    let lp_of = |seq: &[u32]| {
        let logits = m
            .forward(&px, &ids(&[seq.to_vec()]), &ones(1, seq.len()))
            .unwrap();
        candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let first = lp_of(&[ctx.clone(), cands[0].clone()].concat());
    let want0 = (first[3][40] + first[4][41]) as f64;
    let seq = [ctx.clone(), cands[0].clone(), cands[1].clone()].concat();
    let lp = lp_of(&seq);
    let want1 = (first[3][42] + lp[6][43] + lp[7][44]) as f64;
    assert!((got[0][0] - want0).abs() < 1e-4, "{} vs {want0}", got[0][0]);
    assert!((got[0][1] - want1).abs() < 1e-4, "{} vs {want1}", got[0][1]);
}

/// Gradients of the next-token loss on a two-image interleaved row.
fn interleaved_loss_grads(m: &Flamingo) -> candle_core::backprop::GradStore {
    let px = pixels(1, 2, 10);
    let rows = vec![vec![IMG, 5, EOC, IMG, 6, EOC]];
    let logits = m.forward(&px, &ids(&rows), &ones(1, 6)).unwrap();
    let targets = Tensor::new(&[5u32, EOC, IMG, 6, EOC], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits.i((0, 0..5)).unwrap(), &targets).unwrap();
    loss.backward().unwrap()
}

#[test]
fn every_trainable_tensor_gets_a_gradient() {
    let d = dirs("grad", "mpt");
    let m = tiny_model(&d, 1, Some((0.5, 0.5)));
    let grads = interleaved_loss_grads(&m);
    let tv = m.trainable_vars();
    for (name, var) in tv
        .cross_attn
        .iter()
        .chain(&tv.perceiver)
        .chain(&tv.embeddings)
    {
        let g = grads.get(var.as_tensor()).map(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        });
        assert!(g.unwrap_or(0.0) > 0.0, "no gradient for {name}");
    }
    // At initialisation (gates 0) the gates themselves still get a gradient.
    let m0 = tiny_model(&d, 1, None);
    let grads = interleaved_loss_grads(&m0);
    for (name, var) in m0
        .trainable_vars()
        .cross_attn
        .iter()
        .filter(|(n, _)| n.ends_with("_gate"))
    {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(g > 0.0, "no gradient for {name}");
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint")
        .join(name)
}

fn var_value(m: &Flamingo, key: &str) -> Tensor {
    m.varmap().data().lock().unwrap()[key].as_tensor().clone()
}

#[test]
fn checkpoint_layouts_load_with_report() {
    let d = dirs("ckpt", "mpt");
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap();
    for (file, layout) in [
        ("flat.pt", CheckpointLayout::FlatStateDict),
        ("trainer.pt", CheckpointLayout::TrainerDict),
        ("full.pt", CheckpointLayout::FlatStateDict),
    ] {
        let mut m = tiny_model(&d, 1, None);
        let report = load_checkpoint(&mut m, &fixture(file)).unwrap();
        assert_eq!(report.layout, Some(layout), "{file}");
        assert!(
            report.missing.is_empty(),
            "{file}: missing {:?}",
            report.missing
        );
        assert!(
            report.unexpected.is_empty(),
            "{file}: unexpected {:?}",
            report.unexpected
        );
        assert_eq!(report.loaded.len(), expected.len(), "{file}");
        for (k, v) in &expected {
            let got = if k == "lang_encoder.transformer.wte.weight" {
                m.lm().embeddings().full_table().unwrap()
            } else {
                var_value(&m, k)
            };
            assert_eq!(max_diff(&got, v), 0.0, "{file}: {k}");
        }
        assert_eq!(
            m.cross_attn_layers()[1].as_ref().unwrap().gates().unwrap(),
            (1.25, -1.5)
        );
        if file == "full.pt" {
            let ig = &report.ignored_frozen;
            for k in [
                "vision_encoder.conv1.weight",
                "vision_encoder.positional_embedding",
                "lang_encoder.old_decoder_blocks.0.attn.Wqkv.weight",
                "lang_encoder.transformer.blocks.1.decoder_layer.attn.Wqkv.weight",
                "lang_encoder.gated_cross_attn_layers.0.attn.to_q.weight",
                "lang_encoder.transformer.norm_f.weight",
            ] {
                assert!(
                    ig.iter().any(|x| x == k),
                    "{k} not reported as ignored: {ig:?}"
                );
            }
        }
    }
    // A checkpoint for n=2 in an n=1 model: layer 0's block is missing.
    let mut m = tiny_model(&d, 2, None);
    let report = load_checkpoint(&mut m, &fixture("flat.pt")).unwrap();
    assert!(report.missing.is_empty());
    assert!(
        report
            .unexpected
            .iter()
            .any(|k| k.starts_with("lang_encoder.transformer.blocks.0.gated_cross_attn_layer"))
    );
}

#[test]
fn safetensors_round_trip_under_open_flamingo_names() {
    let d = dirs("roundtrip", "mpt");
    let m = tiny_model(&d, 1, Some((0.3, -0.2)));
    let path = tmp_dir("roundtrip-out").join("trained.safetensors");
    m.save_trainable(&path).unwrap();
    let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let fixture_keys =
        candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap();
    let mut a: Vec<&String> = saved.keys().collect();
    let mut b: Vec<&String> = fixture_keys.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "saved keys must be exactly OpenFlamingo's");
    let mut fresh = tiny_model(&d, 1, None);
    let report = load_checkpoint(&mut fresh, &path).unwrap();
    assert_eq!(report.layout, Some(CheckpointLayout::Safetensors));
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let px = pixels(1, 1, 12);
    let rows = vec![vec![IMG, 3, 4, 5]];
    let l1 = m.forward(&px, &ids(&rows), &ones(1, 4)).unwrap();
    let l2 = fresh.forward(&px, &ids(&rows), &ones(1, 4)).unwrap();
    assert_eq!(max_diff(&l1, &l2), 0.0);
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let d = dirs("badckpt", "mpt");
    let dir = tmp_dir("badckpt-files");
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap();
    // Missing file.
    let mut m = tiny_model(&d, 1, None);
    let err = load_checkpoint(&mut m, &dir.join("nope.pt")).unwrap_err();
    assert!(err.to_string().contains("nope.pt"), "{err}");
    // Wrong embedding rows (another tokenizer / LM size).
    let mut t = expected.clone();
    t.insert(
        "lang_encoder.transformer.wte.weight".into(),
        Tensor::zeros((60, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.join("wrong_shape.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let err = load_checkpoint(&mut m, &p).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wrong_shape.safetensors")
            && msg.contains("lang_encoder.transformer.wte.weight"),
        "{msg}"
    );
    // Cross-attention for another LM's layer layout.
    let other: HashMap<String, Tensor> = expected
        .iter()
        .map(|(k, v)| {
            (
                k.replace("transformer.blocks", "gpt_neox.layers")
                    .replace("transformer.wte", "gpt_neox.embed_in"),
                v.clone(),
            )
        })
        .collect();
    let p = dir.join("other_lm.safetensors");
    candle_core::safetensors::save(&other, &p).unwrap();
    let err = load_checkpoint(&mut m, &p).unwrap_err();
    assert!(
        matches!(err, ModelError::CheckpointMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("other_lm.safetensors"));
    // Truncated safetensors.
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let p = dir.join("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_checkpoint(&mut m, &p).unwrap_err();
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");
    // Nothing was changed by the failed loads.
    let fresh = tiny_model(&d, 1, None);
    let k = "perceiver.latents";
    assert_eq!(max_diff(&var_value(&m, k), &var_value(&fresh, k)), 0.0);
}

#[test]
fn load_entry_point_with_defaults() {
    let d = dirs("load", "mpt");
    let dev = Device::Cpu;
    let mut spec = FlamingoSpec::new(&d.vision, &d.lm);
    spec.cross_attn_every_n_layers = 2;
    let (m, tok, proc_, report) = Flamingo::load(&spec, &dev).unwrap();
    assert_eq!(report.checkpoint, None);
    assert_eq!(
        (tok.eoc_id(), tok.image_id(), tok.pad_id(), tok.len()),
        (EOC, IMG, PAD, VOCAB)
    );
    assert_eq!(proc_.image_size, 16);
    assert_eq!(m.config().perceiver.num_latents, 64);
    assert_eq!(m.config().cross_attn.heads, 8);
    let px = pixels(1, 1, 13);
    let rows = vec![vec![IMG, 3, 4]];
    let logits = m.forward(&px, &ids(&rows), &ones(1, 3)).unwrap();
    assert_eq!(logits.dims(), &[1, 3, VOCAB]);
    // Same seed, same initial weights.
    let (m2, ..) = Flamingo::load(&spec, &dev).unwrap();
    assert_eq!(
        max_diff(
            &var_value(&m, "perceiver.latents"),
            &var_value(&m2, "perceiver.latents")
        ),
        0.0
    );
    // Missing directories and unknown model types name the file.
    let bad = FlamingoSpec::new(d.vision.join("nope"), &d.lm);
    let err = Flamingo::load(&bad, &dev).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    std::fs::write(d.lm.join("config.json"), r#"{"model_type": "bloom"}"#).unwrap();
    let err = Flamingo::load(&spec, &dev).unwrap_err();
    assert!(
        err.to_string().contains("config.json") && err.to_string().contains("bloom"),
        "{err}"
    );
}

/// The perceiver and a gated cross-attention block reproduce open_flamingo's own modules (outputs
/// written by `scripts/fixtures/checkpoint_fixture.py` with the weights of `flat.pt`), including
/// the cached-media rule.
#[test]
fn modules_match_open_flamingo_reference_outputs() {
    let d = dirs("refio", "mpt");
    let dev = Device::Cpu;
    let io = candle_core::safetensors::load(fixture("reference_io.safetensors"), &dev).unwrap();
    let mut m = tiny_model(&d, 1, None);
    load_checkpoint(&mut m, &fixture("flat.pt")).unwrap();
    let media = m.perceiver().forward(&io["perceiver_in"]).unwrap();
    assert!(max_diff(&media, &io["perceiver_out"]) < 1e-5);
    let rows = vec![vec![5u32, 6, IMG, 7, IMG, 9]];
    let block = m.cross_attn_layers()[1].as_ref().unwrap();
    let mask =
        model::cross_attn::MediaMask::new(&text_time_from_ids(&rows, IMG), 2, 3, &dev).unwrap();
    let out = block
        .forward(&io["lang_in"], &block.media_kv(&media).unwrap(), &mask)
        .unwrap();
    assert!(max_diff(&out, &io["xattn_out"]) < 1e-5);
    let block0 = m.cross_attn_layers()[0].as_ref().unwrap();
    let counts = model::cross_attn::media_counts(&rows, IMG);
    let mask = model::cross_attn::MediaMask::new(
        &model::cross_attn::text_time_cached(&counts, 2),
        2,
        3,
        &dev,
    )
    .unwrap();
    let out = block0
        .forward(
            &io["lang_cached_in"],
            &block0.media_kv(&media).unwrap(),
            &mask,
        )
        .unwrap();
    assert!(max_diff(&out, &io["xattn_cached_out"]) < 1e-5);
}

/// The vision encoder reproduces open_clip's ViT (fixture from `scripts/fixtures/vision_fixture.py`):
/// patch tokens before `ln_post` (default), after it (switch on) and the pooled projection.
#[test]
fn vision_matches_open_clip_reference() {
    let dev = Device::Cpu;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision");
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &dev).unwrap();
    let v = VisionEncoder::load(&dir, false, &dev).unwrap();
    assert!(max_diff(&v.forward_tokens(&r["pixels"]).unwrap(), &r["tokens"]) < 1e-4);
    assert!(max_diff(&v.embed_image(&r["pixels"]).unwrap(), &r["pooled"]) < 1e-4);
    let v = VisionEncoder::load(&dir, true, &dev).unwrap();
    assert!(
        max_diff(
            &v.forward_tokens(&r["pixels"]).unwrap(),
            &r["tokens_ln_post"]
        ) < 1e-4
    );
    // The same weights saved as `open_clip_pytorch_model.bin` (torch.save) load identically.
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision_bin");
    let v = VisionEncoder::load(&bin, false, &dev).unwrap();
    assert!(max_diff(&v.forward_tokens(&r["pixels"]).unwrap(), &r["tokens"]) < 1e-4);
}

/// The model can be shared across threads (e.g. parallel evaluation workers).
#[test]
fn model_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Flamingo>();
    check::<model::MediaContext>();
    check::<model::FlamingoTokenizer>();
    check::<model::ImageProcessor>();
}

#[test]
fn frozen_weights_hold_no_gradient_memory() {
    // candle's matmul backward leaves a weight-sized gradient for every frozen LM linear in the
    // GradStore (an untracked leaf is never removed); the frozen matmul leaves none. What the store
    // holds besides the trainable variables must be activation-sized only.
    let d = dirs("frozen-grad", "mpt");
    let m = tiny_model(&d, 1, Some((0.5, 0.5)));
    let grads = interleaved_loss_grads(&m);
    let tv = m.trainable_vars();
    let trainable: std::collections::HashSet<_> = tv
        .cross_attn
        .iter()
        .chain(&tv.perceiver)
        .chain(&tv.embeddings)
        .map(|(_, v)| v.as_tensor().id())
        .collect();
    let lm = candle_core::safetensors::load(d.lm.join("model.safetensors"), &Device::Cpu).unwrap();
    let linear_shapes: Vec<(usize, usize)> = lm
        .iter()
        .filter(|(k, t)| t.rank() == 2 && !k.contains("wte"))
        .map(|(_, t)| t.dims2().unwrap())
        .flat_map(|(o, i)| [(o, i), (i, o)])
        .collect();
    assert!(linear_shapes.len() >= 8, "{linear_shapes:?}");
    for id in grads.get_ids().filter(|id| !trainable.contains(id)) {
        let g = grads.get_id(*id).unwrap();
        if let Ok(shape) = g.dims2() {
            assert!(
                !linear_shapes.contains(&shape),
                "the GradStore holds a weight-shaped gradient {shape:?} for a frozen tensor"
            );
        }
    }
}
