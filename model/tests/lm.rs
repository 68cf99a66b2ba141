//! Decoder LM tests: tiny configs written as HF `config.json` + seeded random safetensors, loaded through
//! `DecoderLm::load` exactly as users load real models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use model::lm::{AttnCtx, DecoderLm, KvCache};
use model::{ModelError, SpecialEmbeddingMode};
use rand::{Rng, SeedableRng};

const VOCAB: usize = 50;

/// A fresh temporary directory (removed by the OS; names are unique per test and process).
fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-lm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tensor names and shapes of each tiny family, with the config.json that goes with them.
struct Tiny {
    config: serde_json::Value,
    tensors: Vec<(String, Vec<usize>)>,
}

fn tiny(kind: &str) -> Tiny {
    sized(kind, 16, 2, VOCAB, 32)
}

/// A family config of width `d` (4 heads), `layers` layers, `vocab` rows and `max_pos` positions.
fn sized(kind: &str, d: usize, layers: usize, vocab: usize, max_pos: usize) -> Tiny {
    let v = vocab;
    let (f, kv, li) = (2 * d, d / 2, 3 * d / 2);
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |n: String, s: &[usize]| t.push((n, s.to_vec()));
    let config = match kind {
        "opt" | "opt_proj" => {
            let e = if kind == "opt_proj" { d / 2 } else { d };
            add("model.decoder.embed_tokens.weight".into(), &[v, e]);
            add(
                "model.decoder.embed_positions.weight".into(),
                &[max_pos + 2, d],
            );
            if e != d {
                add("model.decoder.project_in.weight".into(), &[d, e]);
                add("model.decoder.project_out.weight".into(), &[e, d]);
            }
            for i in 0..layers {
                let p = format!("model.decoder.layers.{i}");
                for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    add(format!("{p}.self_attn.{n}.weight"), &[d, d]);
                    add(format!("{p}.self_attn.{n}.bias"), &[d]);
                }
                for n in ["self_attn_layer_norm", "final_layer_norm"] {
                    add(format!("{p}.{n}.weight"), &[d]);
                    add(format!("{p}.{n}.bias"), &[d]);
                }
                add(format!("{p}.fc1.weight"), &[f, d]);
                add(format!("{p}.fc1.bias"), &[f]);
                add(format!("{p}.fc2.weight"), &[d, f]);
                add(format!("{p}.fc2.bias"), &[d]);
            }
            add("model.decoder.final_layer_norm.weight".into(), &[d]);
            add("model.decoder.final_layer_norm.bias".into(), &[d]);
            serde_json::json!({"model_type": "opt", "vocab_size": v, "hidden_size": d,
                "num_hidden_layers": layers, "num_attention_heads": 4, "ffn_dim": f,
                "max_position_embeddings": max_pos, "word_embed_proj_dim": e, "do_layer_norm_before": true,
                "activation_function": "relu", "init_std": 0.02})
        }
        "gpt_neox" | "gpt_neox_seq" => {
            add("gpt_neox.embed_in.weight".into(), &[v, d]);
            for i in 0..layers {
                let p = format!("gpt_neox.layers.{i}");
                for n in ["input_layernorm", "post_attention_layernorm"] {
                    add(format!("{p}.{n}.weight"), &[d]);
                    add(format!("{p}.{n}.bias"), &[d]);
                }
                add(format!("{p}.attention.query_key_value.weight"), &[3 * d, d]);
                add(format!("{p}.attention.query_key_value.bias"), &[3 * d]);
                add(format!("{p}.attention.dense.weight"), &[d, d]);
                add(format!("{p}.attention.dense.bias"), &[d]);
                add(format!("{p}.mlp.dense_h_to_4h.weight"), &[f, d]);
                add(format!("{p}.mlp.dense_h_to_4h.bias"), &[f]);
                add(format!("{p}.mlp.dense_4h_to_h.weight"), &[d, f]);
                add(format!("{p}.mlp.dense_4h_to_h.bias"), &[d]);
            }
            add("gpt_neox.final_layer_norm.weight".into(), &[d]);
            add("gpt_neox.final_layer_norm.bias".into(), &[d]);
            add("embed_out.weight".into(), &[v, d]);
            serde_json::json!({"model_type": "gpt_neox", "vocab_size": v, "hidden_size": d,
                "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": f,
                "rotary_pct": 0.5, "rotary_emb_base": 10000, "hidden_act": "gelu",
                "use_parallel_residual": kind == "gpt_neox", "tie_word_embeddings": false})
        }
        "mpt" | "mosaic_gpt" => {
            let mpt = kind == "mpt";
            add("transformer.wte.weight".into(), &[v, d]);
            for i in 0..layers {
                let p = format!("transformer.blocks.{i}");
                let (n1, n2, up, down) = if mpt {
                    ("norm_1", "norm_2", "ffn.up_proj", "ffn.down_proj")
                } else {
                    ("ln_1", "ln_2", "mlp.mlp_up", "mlp.mlp_down")
                };
                add(format!("{p}.{n1}.weight"), &[d]);
                add(format!("{p}.attn.Wqkv.weight"), &[3 * d, d]);
                add(format!("{p}.attn.q_ln.weight"), &[d]);
                add(format!("{p}.attn.k_ln.weight"), &[d]);
                add(format!("{p}.attn.out_proj.weight"), &[d, d]);
                add(format!("{p}.{n2}.weight"), &[d]);
                add(format!("{p}.{up}.weight"), &[2 * d, d]);
                add(format!("{p}.{down}.weight"), &[d, 2 * d]);
            }
            add(
                if mpt {
                    "transformer.norm_f.weight"
                } else {
                    "transformer.ln_f.weight"
                }
                .into(),
                &[d],
            );
            if mpt {
                serde_json::json!({"model_type": "mpt", "d_model": d, "n_heads": 4, "n_layers": layers,
                    "expansion_ratio": 2, "max_seq_len": max_pos, "vocab_size": v, "no_bias": true,
                    "norm_type": "low_precision_layernorm",
                    "attn_config": {"alibi": true, "alibi_bias_max": 8, "qk_ln": true,
                        "attn_type": "multihead_attention", "prefix_lm": false}})
            } else {
                serde_json::json!({"model_type": "mosaic_gpt", "d_model": d, "n_heads": 4,
                    "n_layers": layers, "mlp_ratio": 2, "max_seq_len": max_pos, "vocab_size": v,
                    "attn_qk_ln": true, "alibi": true, "alibi_bias_max": 8, "no_bias": true,
                    "low_precision_layernorm": true, "attn_impl": "torch"})
            }
        }
        "llama" => {
            add("model.embed_tokens.weight".into(), &[v, d]);
            for i in 0..layers {
                let p = format!("model.layers.{i}");
                add(format!("{p}.input_layernorm.weight"), &[d]);
                add(format!("{p}.post_attention_layernorm.weight"), &[d]);
                add(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
                add(format!("{p}.self_attn.k_proj.weight"), &[kv, d]);
                add(format!("{p}.self_attn.v_proj.weight"), &[kv, d]);
                add(format!("{p}.self_attn.o_proj.weight"), &[d, d]);
                add(format!("{p}.mlp.gate_proj.weight"), &[li, d]);
                add(format!("{p}.mlp.up_proj.weight"), &[li, d]);
                add(format!("{p}.mlp.down_proj.weight"), &[d, li]);
            }
            add("model.norm.weight".into(), &[d]);
            add("lm_head.weight".into(), &[v, d]);
            serde_json::json!({"model_type": "llama", "vocab_size": v, "hidden_size": d,
                "intermediate_size": li, "num_hidden_layers": layers, "num_attention_heads": 4,
                "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "hidden_act": "silu"})
        }
        other => panic!("unknown tiny family {other}"),
    };
    Tiny { config, tensors: t }
}

/// Seeded random tensors for the names of `tiny`: norms near 1, everything else N(0, 0.3²).
fn random_tensors(tiny: &Tiny, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    tiny.tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm") || name.contains("ln") && !name.contains("mlp");
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    let u: f32 = rng.random::<f32>() * 2.0 - 1.0;
                    if is_norm && name.ends_with("weight") {
                        1.0 + 0.2 * u
                    } else {
                        0.5 * u
                    }
                })
                .collect();
            (
                name.clone(),
                Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn write_model(kind: &str, dir: &Path) -> HashMap<String, Tensor> {
    let t = tiny(kind);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&t.config).unwrap(),
    )
    .unwrap();
    let tensors = random_tensors(&t, 7);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    tensors
}

fn load(dir: &Path, vocab_len: usize, mode: SpecialEmbeddingMode) -> DecoderLm {
    DecoderLm::load(
        dir,
        vocab_len,
        mode,
        &[VOCAB as u32, VOCAB as u32 + 1],
        &Device::Cpu,
    )
    .unwrap()
}

const FAMILIES: [&str; 7] = [
    "opt",
    "opt_proj",
    "gpt_neox",
    "gpt_neox_seq",
    "mpt",
    "mosaic_gpt",
    "llama",
];

fn ids(rows: &[&[u32]]) -> Tensor {
    let b = rows.len();
    let t = rows[0].len();
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
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

#[test]
fn shapes_and_config() {
    for kind in FAMILIES {
        let dir = tmp_dir(&format!("shapes-{kind}"));
        write_model(kind, &dir);
        let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
        assert_eq!(lm.num_layers(), 2, "{kind}");
        assert_eq!(lm.hidden_size(), 16, "{kind}");
        assert_eq!(lm.config().vocab_size, VOCAB, "{kind}");
        let ctx = AttnCtx::unpadded(2, 5, 0, &Device::Cpu).unwrap();
        let input = ids(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]);
        let x = lm.embed(&input, &ctx).unwrap();
        assert_eq!(x.dims(), &[2, 5, 16], "{kind}");
        let y = lm.layer(0, &x, &ctx, None).unwrap();
        assert_eq!(y.dims(), &[2, 5, 16], "{kind}");
        let logits = lm.forward(&input, &ctx, None).unwrap();
        assert_eq!(logits.dims(), &[2, 5, VOCAB + 3], "{kind}");
        assert!(
            logits
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .is_finite(),
            "{kind}"
        );
    }
}

/// Prefill 3 tokens, then decode 1 token at a time: logits equal those of the full forward.
#[test]
fn kv_cache_matches_full_forward() {
    for kind in FAMILIES {
        let dir = tmp_dir(&format!("cache-{kind}"));
        write_model(kind, &dir);
        let lm = load(&dir, VOCAB + 2, SpecialEmbeddingMode::Trainable);
        let input = ids(&[&[3, 1, 4, 1, 5, 9, 2], &[2, 7, 1, 8, 2, 8, 1]]);
        let full = lm
            .forward(
                &input,
                &AttnCtx::unpadded(2, 7, 0, &Device::Cpu).unwrap(),
                None,
            )
            .unwrap();
        let mut cache = lm.new_cache();
        let mut pieces = Vec::new();
        let mut start = 0;
        for len in [3, 1, 1, 2] {
            let chunk = input.narrow(1, start, len).unwrap();
            let ctx = AttnCtx::unpadded(2, len, start, &Device::Cpu).unwrap();
            pieces.push(lm.forward(&chunk, &ctx, Some(&mut cache)).unwrap());
            start += len;
        }
        assert_eq!(cache.past_len(), 7);
        let incremental = Tensor::cat(&pieces, 1).unwrap();
        let diff = max_diff(&full, &incremental);
        assert!(diff < 1e-5, "{kind}: cache mismatch {diff}");
    }
}

/// A left-padded row gives the logits of its unpadded sequence, in a full forward and while decoding
/// with the cache (generation semantics).
#[test]
fn left_padding_is_invisible() {
    for kind in FAMILIES {
        let dir = tmp_dir(&format!("pad-{kind}"));
        write_model(kind, &dir);
        let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
        let pad = VOCAB as u32 + 2;
        let batch = ids(&[&[5, 6, 7, 8, 9, 10], &[pad, pad, pad, 11, 12, 13]]);
        let mask = ids(&[&[1, 1, 1, 1, 1, 1], &[0, 0, 0, 1, 1, 1]]);
        let ctx = AttnCtx::new(mask.clone(), 0);
        let padded = lm.forward(&batch, &ctx, None).unwrap();
        let alone = lm
            .forward(
                &ids(&[&[11, 12, 13]]),
                &AttnCtx::unpadded(1, 3, 0, &Device::Cpu).unwrap(),
                None,
            )
            .unwrap();
        let row = padded.get(1).unwrap().narrow(0, 3, 3).unwrap();
        let diff = max_diff(&row, &alone.get(0).unwrap());
        assert!(diff < 1e-5, "{kind}: left padding changes logits by {diff}");
        let first = lm
            .forward(
                &ids(&[&[5, 6, 7, 8, 9, 10]]),
                &AttnCtx::unpadded(1, 6, 0, &Device::Cpu).unwrap(),
                None,
            )
            .unwrap();
        assert!(
            max_diff(&padded.get(0).unwrap(), &first.get(0).unwrap()) < 1e-5,
            "{kind}: row 0"
        );

        // Decode two more tokens with the cache, extending the mask as HF generate does.
        let mut cache = lm.new_cache();
        lm.forward(&batch, &ctx, Some(&mut cache)).unwrap();
        let mut alone_cache = lm.new_cache();
        lm.forward(
            &ids(&[&[11, 12, 13]]),
            &AttnCtx::unpadded(1, 3, 0, &Device::Cpu).unwrap(),
            Some(&mut alone_cache),
        )
        .unwrap();
        let mut mask = mask;
        for (step, tok) in [14u32, 15].into_iter().enumerate() {
            mask = Tensor::cat(
                &[
                    &mask,
                    &Tensor::ones((2, 1), DType::U32, &Device::Cpu).unwrap(),
                ],
                1,
            )
            .unwrap();
            let ctx = AttnCtx::new(mask.clone(), 6 + step);
            let out = lm
                .forward(&ids(&[&[tok], &[tok]]), &ctx, Some(&mut cache))
                .unwrap();
            let ctx1 = AttnCtx::unpadded(1, 1, 3 + step, &Device::Cpu).unwrap();
            let out1 = lm
                .forward(&ids(&[&[tok]]), &ctx1, Some(&mut alone_cache))
                .unwrap();
            let diff = max_diff(&out.get(1).unwrap(), &out1.get(0).unwrap());
            assert!(
                diff < 1e-5,
                "{kind}: cached decoding with left padding differs by {diff}"
            );
        }
    }
}

/// Beam reordering of the cache selects the right rows.
#[test]
fn cache_reorder_selects_rows() {
    let dir = tmp_dir("reorder");
    write_model("llama", &dir);
    let lm = load(&dir, VOCAB + 2, SpecialEmbeddingMode::Frozen);
    let input = ids(&[&[1, 2, 3], &[4, 5, 6]]);
    let mut cache = lm.new_cache();
    lm.forward(
        &input,
        &AttnCtx::unpadded(2, 3, 0, &Device::Cpu).unwrap(),
        Some(&mut cache),
    )
    .unwrap();
    cache
        .reorder(&Tensor::new(&[1u32, 1, 0], &Device::Cpu).unwrap())
        .unwrap();
    let next = ids(&[&[7], &[7], &[7]]);
    let out = lm
        .forward(
            &next,
            &AttnCtx::unpadded(3, 1, 3, &Device::Cpu).unwrap(),
            Some(&mut cache),
        )
        .unwrap();
    let mut single = lm.new_cache();
    lm.forward(
        &ids(&[&[4, 5, 6]]),
        &AttnCtx::unpadded(1, 3, 0, &Device::Cpu).unwrap(),
        Some(&mut single),
    )
    .unwrap();
    let want = lm
        .forward(
            &ids(&[&[7]]),
            &AttnCtx::unpadded(1, 1, 3, &Device::Cpu).unwrap(),
            Some(&mut single),
        )
        .unwrap();
    assert!(max_diff(&out.get(0).unwrap(), &want.get(0).unwrap()) < 1e-6);
    assert!(max_diff(&out.get(1).unwrap(), &want.get(0).unwrap()) < 1e-6);
    assert!(max_diff(&out.get(2).unwrap(), &want.get(0).unwrap()) > 1e-4);
}

/// Plain-forward position ids (no position_ids) and generate-style ones shift a padded row's positions;
/// rotary attention is relative, so real tokens get the same logits up to rounding.
#[test]
fn sequential_positions_rule() {
    let dir = tmp_dir("sequential");
    write_model("gpt_neox", &dir);
    let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Frozen);
    let batch = ids(&[&[5, 6, 7], &[52, 11, 12]]);
    let mask = ids(&[&[1, 1, 1], &[0, 1, 1]]);
    let a = lm
        .forward(&batch, &AttnCtx::new(mask.clone(), 0), None)
        .unwrap();
    let b = lm
        .forward(&batch, &AttnCtx::sequential(mask, 0), None)
        .unwrap();
    assert!(max_diff(&a.get(0).unwrap(), &b.get(0).unwrap()) < 1e-6);
    let real = |t: &Tensor| t.get(1).unwrap().narrow(0, 1, 2).unwrap();
    assert!(max_diff(&real(&a), &real(&b)) < 1e-4);
}

#[test]
fn resize_copies_rows_and_appends_or_truncates() {
    let dir = tmp_dir("resize");
    let tensors = write_model("gpt_neox", &dir);
    let table = &tensors["gpt_neox.embed_in.weight"];
    let head = &tensors["embed_out.weight"];
    let grown = load(&dir, VOCAB + 4, SpecialEmbeddingMode::Frozen);
    let full = grown.embeddings().full_table().unwrap();
    assert_eq!(full.dims(), &[VOCAB + 4, 16]);
    assert_eq!(max_diff(&full.narrow(0, 0, VOCAB).unwrap(), table), 0.0);
    let added = full.narrow(0, VOCAB, 4).unwrap();
    let std = added
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    assert!(std > 0.002 && std < 0.06, "added rows std {std}");
    let out = grown.output_head().unwrap();
    assert_eq!(out.dims(), &[VOCAB + 4, 16]);
    assert_eq!(max_diff(&out.narrow(0, 0, VOCAB).unwrap(), head), 0.0);
    // Deterministic: a second load draws the same rows.
    let again = load(&dir, VOCAB + 4, SpecialEmbeddingMode::Frozen);
    assert_eq!(
        max_diff(&again.embeddings().full_table().unwrap(), &full),
        0.0
    );
    // Shrinking keeps the first rows (OpenFlamingo's 50432 → 50280).
    let shrunk = DecoderLm::load(
        &dir,
        VOCAB - 5,
        SpecialEmbeddingMode::Trainable,
        &[40, 41],
        &Device::Cpu,
    )
    .unwrap();
    let t = shrunk.embeddings().full_table().unwrap();
    assert_eq!(max_diff(&t, &table.narrow(0, 0, VOCAB - 5).unwrap()), 0.0);
}

#[test]
fn sharded_loading_matches_single_file() {
    for kind in ["mpt", "opt"] {
        let dir = tmp_dir(&format!("single-{kind}"));
        let tensors = write_model(kind, &dir);
        let sharded = tmp_dir(&format!("sharded-{kind}"));
        std::fs::copy(dir.join("config.json"), sharded.join("config.json")).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let (a, b) = names.split_at(names.len() / 2);
        let mut map = serde_json::Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            let shard: HashMap<String, Tensor> = part
                .iter()
                .map(|n| ((*n).clone(), tensors[*n].clone()))
                .collect();
            candle_core::safetensors::save(&shard, sharded.join(file)).unwrap();
            for n in part {
                map.insert((*n).clone(), serde_json::Value::String(file.into()));
            }
        }
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(
            sharded.join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let one = load(&dir, VOCAB + 2, SpecialEmbeddingMode::Trainable);
        let two = load(&sharded, VOCAB + 2, SpecialEmbeddingMode::Trainable);
        let input = ids(&[&[1, 2, 3, 4]]);
        let ctx = AttnCtx::unpadded(1, 4, 0, &Device::Cpu).unwrap();
        let diff = max_diff(
            &one.forward(&input, &ctx, None).unwrap(),
            &two.forward(&input, &ctx, None).unwrap(),
        );
        assert_eq!(diff, 0.0, "{kind}");
        // A shard named by the index but missing is an error naming it.
        std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
        let err = DecoderLm::load(
            &sharded,
            VOCAB,
            SpecialEmbeddingMode::Frozen,
            &[],
            &Device::Cpu,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("model-00002-of-00002.safetensors"),
            "{err}"
        );
    }
}

fn load_err(dir: &Path) -> ModelError {
    DecoderLm::load(
        dir,
        VOCAB + 2,
        SpecialEmbeddingMode::Trainable,
        &[50, 51],
        &Device::Cpu,
    )
    .unwrap_err()
}

#[test]
fn bad_inputs_are_clear_errors() {
    // Missing directory / config.json.
    let dir = tmp_dir("bad-missing");
    let err = load_err(&dir);
    assert!(err.to_string().contains("config.json"), "{err}");

    // Unknown model_type names the file and the type.
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 4}"#,
    )
    .unwrap();
    let err = load_err(&dir);
    let msg = err.to_string();
    assert!(msg.contains("config.json") && msg.contains("bert"), "{msg}");

    // Invalid JSON.
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(load_err(&dir).to_string().contains("config.json"));

    // Config without weights.
    let dir = tmp_dir("bad-noweights");
    write_model("llama", &dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Wrong tensor shape names file and tensor.
    let dir = tmp_dir("bad-shape");
    let mut tensors = write_model("llama", &dir);
    tensors.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((23, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("model.layers.1.mlp.up_proj.weight"),
        "{msg}"
    );

    // Missing tensor.
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains("model.layers.1.mlp.up_proj.weight") && msg.contains("missing"),
        "{msg}"
    );

    // Truncated safetensors names the file.
    let dir = tmp_dir("bad-truncated");
    write_model("mpt", &dir);
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    std::fs::write(&path, &bytes[..20]).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");

    // Unsupported option in a known family.
    let dir = tmp_dir("bad-option");
    write_model("mpt", &dir);
    let mut cfg = tiny("mpt").config;
    cfg["attn_config"]["prefix_lm"] = serde_json::Value::Bool(true);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains("config.json") && msg.contains("prefix_lm"),
        "{msg}"
    );

    // Special id outside the table.
    let dir = tmp_dir("bad-special");
    write_model("opt", &dir);
    let err = DecoderLm::load(
        &dir,
        VOCAB,
        SpecialEmbeddingMode::Trainable,
        &[VOCAB as u32],
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");

    // Mask of the wrong shape, and a past_len the cache does not hold.
    write_model("opt", &dir);
    std::fs::write(dir.join("config.json"), tiny("opt").config.to_string()).unwrap();
    let lm = load(&dir, VOCAB + 2, SpecialEmbeddingMode::Frozen);
    let bad = AttnCtx::new(ids(&[&[1, 1]]), 0);
    assert!(lm.forward(&ids(&[&[1, 2, 3]]), &bad, None).is_err());
    let ctx = AttnCtx::unpadded(1, 1, 2, &Device::Cpu).unwrap();
    let mut cache: KvCache = lm.new_cache();
    assert!(lm.forward(&ids(&[&[1]]), &ctx, Some(&mut cache)).is_err());
}

/// Training flows gradients through the frozen LM: to a Var upstream of its input and to the special rows.
#[test]
fn gradients_reach_trainable_vars_through_the_lm() {
    for kind in FAMILIES {
        let dir = tmp_dir(&format!("grad-{kind}"));
        write_model(kind, &dir);
        let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
        let vars = lm.trainable_vars();
        assert_eq!(vars.len(), 1, "{kind}");
        let upstream =
            candle_core::Var::from_tensor(&Tensor::full(0.1f32, (16,), &Device::Cpu).unwrap())
                .unwrap();
        // <image> (50) and <|endofchunk|> (51) in the input; PAD (52) masked out.
        let input = ids(&[&[1, 50, 3, 4, 51, 6], &[52, 52, 50, 7, 8, 51]]);
        let mask = ids(&[&[1, 1, 1, 1, 1, 1], &[0, 0, 1, 1, 1, 1]]);
        let ctx = AttnCtx::new(mask, 0);
        let mut x = lm.embed(&input, &ctx).unwrap();
        x = x.broadcast_add(upstream.as_tensor()).unwrap();
        for i in 0..lm.num_layers() {
            x = lm.layer(i, &x, &ctx, None).unwrap();
        }
        let logits = lm.logits(&x).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let loss = logp
            .narrow(2, 0, 10)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in [("upstream", &upstream), ("special rows", &vars[0])] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{kind}: no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{kind}: gradient of {name} is {norm}"
            );
        }
        // Frozen mode exposes nothing to train.
        let frozen = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Frozen);
        assert!(frozen.trainable_vars().is_empty());
    }
}

/// An AdamW step with weight decay changes the trainable rows and no frozen row.
#[test]
fn adamw_changes_only_special_rows() {
    for kind in ["mpt", "gpt_neox"] {
        let dir = tmp_dir(&format!("adamw-{kind}"));
        write_model(kind, &dir);
        let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
        let before = lm.embeddings().full_table().unwrap();
        let mut opt = AdamW::new(
            lm.trainable_vars(),
            ParamsAdamW {
                lr: 1e-2,
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let input = ids(&[&[1, 50, 3, 51, 5]]);
        let ctx = AttnCtx::unpadded(1, 5, 0, &Device::Cpu).unwrap();
        for _ in 0..2 {
            let logits = lm.forward(&input, &ctx, None).unwrap();
            let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
                .unwrap()
                .mean_all()
                .unwrap()
                .neg()
                .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let after = lm.embeddings().full_table().unwrap();
        let row_change = (&after - &before)
            .unwrap()
            .abs()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (row, change) in row_change.iter().enumerate() {
            if row == 50 || row == 51 {
                assert!(*change > 0.0, "{kind}: trainable row {row} did not change");
            } else {
                assert_eq!(*change, 0.0, "{kind}: frozen row {row} changed");
            }
        }
        // The base table handed out never changes.
        assert_eq!(lm.embeddings().base_table().dims(), &[VOCAB + 3, 16]);
    }
}

/// `set_full_table` (checkpoint loading) replaces base and trainable rows.
#[test]
fn set_full_table_round_trips() {
    let dir = tmp_dir("settable");
    write_model("mosaic_gpt", &dir);
    let mut lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
    let table = Tensor::arange(0f32, ((VOCAB + 3) * 16) as f32, &Device::Cpu)
        .unwrap()
        .reshape((VOCAB + 3, 16))
        .unwrap();
    lm.embeddings_mut().set_full_table(&table).unwrap();
    assert_eq!(
        max_diff(&lm.embeddings().full_table().unwrap(), &table),
        0.0
    );
    let looked_up = lm.embeddings().forward(&ids(&[&[50, 2]])).unwrap();
    assert_eq!(
        max_diff(
            &looked_up.get(0).unwrap().get(0).unwrap(),
            &table.get(50).unwrap()
        ),
        0.0
    );
    assert!(
        lm.embeddings_mut()
            .set_full_table(&table.narrow(0, 0, 10).unwrap())
            .is_err()
    );
}

/// Parity with HF transformers 4.33 (OPT pre/post-LN and projected, GPT-NeoX parallel/sequential, LLaMA with
/// GQA, HF-native MPT) and llm-foundry's MosaicGPT (MPT-1B code), from fixtures written by
/// `tests/fixtures/make_lm_hf_fixtures.py`. Each case holds an HF model plus `reference.safetensors` with
/// `input_ids`, `attention_mask` (row 1 left-padded), `fwd` (plain forward logits), `gen` (forward with
/// generate-style position ids) and `step` (one cached decoding step on `next_ids`). `LM_CROSSCHECK_DIR`
/// points the test at another directory of such cases.
#[test]
fn matches_hf_reference_logits() {
    let root = std::env::var("LM_CROSSCHECK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_hf"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
            .unwrap();
        let input = r["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
        let (b, t) = input.dims2().unwrap();
        let vocab = r["fwd"].dim(2).unwrap();
        let lm =
            DecoderLm::load(&dir, vocab, SpecialEmbeddingMode::Frozen, &[], &Device::Cpu).unwrap();
        let real = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let masked_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .broadcast_mul(&real)
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let fwd = lm
            .forward(&input, &AttnCtx::sequential(mask.clone(), 0), None)
            .unwrap();
        let mut cache = lm.new_cache();
        let generated = lm
            .forward(&input, &AttnCtx::new(mask.clone(), 0), Some(&mut cache))
            .unwrap();
        let mask2 = Tensor::cat(
            &[
                &mask,
                &Tensor::ones((b, 1), DType::U32, &Device::Cpu).unwrap(),
            ],
            1,
        )
        .unwrap();
        let next = r["next_ids"].to_dtype(DType::U32).unwrap();
        let step = lm
            .forward(&next, &AttnCtx::new(mask2, t), Some(&mut cache))
            .unwrap();
        let d_fwd = masked_diff(&fwd, &r["fwd"]);
        let d_gen = masked_diff(&generated, &r["gen"]);
        let d_step = max_diff(&step, &r["step"]);
        eprintln!(
            "{}: fwd {d_fwd:.2e} gen {d_gen:.2e} step {d_step:.2e}",
            dir.display()
        );
        assert!(
            d_fwd < 1e-4 && d_gen < 1e-4 && d_step < 1e-4,
            "{}",
            dir.display()
        );
    }
}

/// Older HF checkpoints ship only `pytorch_model.bin`: it loads through candle's pickle reader and gives HF's
/// logits (fixture written by `tests/fixtures/make_lm_pth_fixture.py` with transformers 4.33).
#[test]
fn pytorch_bin_checkpoint_matches_hf() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_pth");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let rows =
        |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(expected[key].clone()).unwrap() };
    let flat = |v: Vec<Vec<u32>>| {
        let (b, t) = (v.len(), v[0].len());
        Tensor::from_vec(v.concat(), (b, t), &Device::Cpu).unwrap()
    };
    let input = flat(rows("input_ids"));
    let mask = flat(rows("attention_mask"));
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let want = Tensor::new(want, &Device::Cpu).unwrap();
    let lm = DecoderLm::load(&dir, 40, SpecialEmbeddingMode::Frozen, &[], &Device::Cpu).unwrap();
    let got = lm
        .forward(&input, &AttnCtx::sequential(mask.clone(), 0), None)
        .unwrap();
    let real = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .broadcast_mul(&real)
        .unwrap()
        .flatten_all()
        .unwrap();
    let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(
        diff < 1e-5,
        "pytorch_model.bin logits differ from HF by {diff}"
    );
}

/// Rough CPU timings of the LM alone (d=256, 4 layers, 4 heads, vocab 2000): prefill of 128 tokens and cached
/// decoding of 32 tokens for 3 rows (beam-like). Run by hand:
/// `cargo test -p model --test lm bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_prefill_and_decode() {
    for kind in ["opt", "gpt_neox", "mpt", "llama"] {
        let dir = tmp_dir(&format!("bench-{kind}"));
        let t = sized(kind, 256, 4, 2000, 512);
        std::fs::write(dir.join("config.json"), t.config.to_string()).unwrap();
        candle_core::safetensors::save(&random_tensors(&t, 1), dir.join("model.safetensors"))
            .unwrap();
        let lm = DecoderLm::load(
            &dir,
            2003,
            SpecialEmbeddingMode::Trainable,
            &[2000, 2001],
            &Device::Cpu,
        )
        .unwrap();
        let b = 3;
        let prompt: Vec<u32> = (0..b * 128).map(|i| (i * 7 % 2000) as u32).collect();
        let prompt = Tensor::from_vec(prompt, (b, 128), &Device::Cpu).unwrap();
        let mut cache = lm.new_cache();
        let start = std::time::Instant::now();
        lm.forward(
            &prompt,
            &AttnCtx::unpadded(b, 128, 0, &Device::Cpu).unwrap(),
            Some(&mut cache),
        )
        .unwrap();
        let prefill = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        for step in 0..32 {
            let next = Tensor::full(5u32, (b, 1), &Device::Cpu).unwrap();
            let ctx = AttnCtx::unpadded(b, 1, 128 + step, &Device::Cpu).unwrap();
            lm.forward(&next, &ctx, Some(&mut cache)).unwrap();
        }
        let decode = start.elapsed().as_secs_f64();
        eprintln!(
            "{kind}: prefill {b}x128 tokens {:.1} ms ({:.0} tok/s); decode {b} rows x 32 steps {:.1} ms/step ({:.0} tok/s)",
            prefill * 1e3,
            (b * 128) as f64 / prefill,
            decode * 1e3 / 32.0,
            (b * 32) as f64 / decode
        );
    }
}

/// The tied head assembles the table for many rows and patches special columns for few rows: same logits,
/// and gradients reach the special rows both ways.
#[test]
fn tied_logits_paths_agree() {
    let dir = tmp_dir("tied-paths");
    write_model("mpt", &dir);
    let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Trainable);
    let emb = lm.embeddings();
    let x = Tensor::from_vec(
        (0..20 * 16)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect::<Vec<_>>(),
        (1, 20, 16),
        &Device::Cpu,
    )
    .unwrap();
    let many = emb.tied_logits(&x).unwrap();
    let few: Vec<Tensor> = (0..20)
        .map(|i| emb.tied_logits(&x.narrow(1, i, 1).unwrap()).unwrap())
        .collect();
    let few = Tensor::cat(&few, 1).unwrap();
    assert!(max_diff(&many, &few) < 1e-5);
    for logits in [many, few] {
        let grads = logits
            .narrow(2, 50, 2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads
            .get(lm.trainable_vars()[0].as_tensor())
            .expect("gradient on special rows");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}

/// The config.json layouts of the released MPT-7B (remote code) and MPT-1B (MosaicGPT), keys and nulls as
/// published, shrunk to the tiny sizes.
#[test]
fn released_mpt_config_layouts_load() {
    let mpt7b = serde_json::json!({
        "architectures": ["MPTForCausalLM"], "model_type": "mpt",
        "attn_config": {"alibi": true, "alibi_bias_max": 8, "attn_impl": "torch", "attn_pdrop": 0,
            "attn_type": "multihead_attention", "attn_uses_sequence_id": false, "clip_qkv": null,
            "prefix_lm": false, "qk_ln": true, "softmax_scale": null},
        "d_model": 16, "emb_pdrop": 0, "embedding_fraction": 1.0, "expansion_ratio": 2,
        "init_config": {"emb_init_std": null, "emb_init_uniform_lim": null, "fan_mode": "fan_in",
            "init_div_is_residual": true, "init_gain": 0, "init_nonlinearity": "relu", "init_std": 0.02,
            "name": "kaiming_normal_", "verbose": 0},
        "init_device": "cpu", "learned_pos_emb": true, "logit_scale": null, "max_seq_len": 32,
        "n_heads": 4, "n_layers": 2, "no_bias": true, "norm_type": "low_precision_layernorm",
        "resid_pdrop": 0, "tokenizer_name": "EleutherAI/gpt-neox-20b", "torch_dtype": "bfloat16",
        "use_cache": false, "verbose": 0, "vocab_size": VOCAB});
    let mpt1b = serde_json::json!({
        "architectures": ["MosaicGPT"], "model_type": "mosaic_gpt", "alibi": true, "alibi_bias_max": 8,
        "attn_clip_qkv": null, "attn_impl": "torch", "attn_pdrop": 0, "attn_qk_ln": true,
        "attn_uses_sequence_id": false, "d_model": 16, "emb_init_std": null, "emb_init_uniform_lim": null,
        "emb_pdrop": 0, "embedding_fraction": 1.0, "fan_mode": "fan_in", "init_device": "cpu",
        "init_div_is_residual": true, "init_gain": 0, "init_nonlinearity": "relu", "init_std": null,
        "logit_scale": null, "low_precision_layernorm": true, "max_seq_len": 32, "mlp_ratio": 2,
        "n_heads": 4, "n_layers": 2, "no_bias": true, "param_init_fn": "kaiming_normal_",
        "prefix_lm": false, "resid_pdrop": 0, "softmax_scale": null, "torch_dtype": "bfloat16",
        "use_cache": false, "verbose": 0, "vocab_size": VOCAB});
    for (kind, cfg) in [("mpt", mpt7b), ("mosaic_gpt", mpt1b)] {
        let dir = tmp_dir(&format!("released-{kind}"));
        write_model(kind, &dir);
        let tiny_logits = {
            let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Frozen);
            lm.forward(
                &ids(&[&[1, 2, 3]]),
                &AttnCtx::unpadded(1, 3, 0, &Device::Cpu).unwrap(),
                None,
            )
            .unwrap()
        };
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let lm = load(&dir, VOCAB + 3, SpecialEmbeddingMode::Frozen);
        let logits = lm
            .forward(
                &ids(&[&[1, 2, 3]]),
                &AttnCtx::unpadded(1, 3, 0, &Device::Cpu).unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(max_diff(&logits, &tiny_logits), 0.0, "{kind}");
    }
}
