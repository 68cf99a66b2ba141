//! Throughput benchmark (ignored by default; run with
//! `cargo test -p model --test bench_generation -- --ignored --nocapture`): a small random
//! Flamingo (ViT width 256 x 6 layers on 224px / 14px patches, OpenFlamingo perceiver and x-attn
//! sizes, MPT LM d=512 x 8 layers, vocab 8192, x-attn every 2 layers) written to disk and loaded
//! through `Flamingo::load`. Reports vision+perceiver time, prefill time and decoding tokens/s for
//! greedy and 3-beam search, and end-to-end `generate` times (vision is encoded once per prompt,
//! not per beam).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use model::{Flamingo, FlamingoSpec, GenerateConfig, PromptBatch, generate};
use rand::{Rng, SeedableRng};

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

fn write_vision(dir: &Path, d: usize, layers: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut t = HashMap::new();
    let s = 0.5 / (d as f32).sqrt();
    t.insert(
        "visual.conv1.weight".to_string(),
        rand_tensor(&mut rng, &[d, 3, 14, 14], 0.05, 0.0),
    );
    t.insert(
        "visual.class_embedding".into(),
        rand_tensor(&mut rng, &[d], 0.1, 0.0),
    );
    t.insert(
        "visual.positional_embedding".into(),
        rand_tensor(&mut rng, &[257, d], 0.1, 0.0),
    );
    t.insert(
        "visual.proj".into(),
        rand_tensor(&mut rng, &[d, 128], s, 0.0),
    );
    for n in ["ln_pre", "ln_post"] {
        t.insert(
            format!("visual.{n}.weight"),
            rand_tensor(&mut rng, &[d], 0.1, 1.0),
        );
        t.insert(
            format!("visual.{n}.bias"),
            rand_tensor(&mut rng, &[d], 0.1, 0.0),
        );
    }
    for i in 0..layers {
        let b = format!("visual.transformer.resblocks.{i}");
        for n in ["ln_1", "ln_2"] {
            t.insert(
                format!("{b}.{n}.weight"),
                rand_tensor(&mut rng, &[d], 0.1, 1.0),
            );
            t.insert(
                format!("{b}.{n}.bias"),
                rand_tensor(&mut rng, &[d], 0.1, 0.0),
            );
        }
        t.insert(
            format!("{b}.attn.in_proj_weight"),
            rand_tensor(&mut rng, &[3 * d, d], s, 0.0),
        );
        t.insert(
            format!("{b}.attn.in_proj_bias"),
            rand_tensor(&mut rng, &[3 * d], 0.1, 0.0),
        );
        t.insert(
            format!("{b}.attn.out_proj.weight"),
            rand_tensor(&mut rng, &[d, d], s, 0.0),
        );
        t.insert(
            format!("{b}.attn.out_proj.bias"),
            rand_tensor(&mut rng, &[d], 0.1, 0.0),
        );
        t.insert(
            format!("{b}.mlp.c_fc.weight"),
            rand_tensor(&mut rng, &[4 * d, d], s, 0.0),
        );
        t.insert(
            format!("{b}.mlp.c_fc.bias"),
            rand_tensor(&mut rng, &[4 * d], 0.1, 0.0),
        );
        t.insert(
            format!("{b}.mlp.c_proj.weight"),
            rand_tensor(&mut rng, &[d, 4 * d], s / 2.0, 0.0),
        );
        t.insert(
            format!("{b}.mlp.c_proj.bias"),
            rand_tensor(&mut rng, &[d], 0.1, 0.0),
        );
    }
    candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
    let cfg = serde_json::json!({"model_cfg": {"embed_dim": 128, "quick_gelu": true,
        "vision_cfg": {"image_size": 224, "layers": layers, "width": d, "patch_size": 14}}});
    std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
}

fn write_mpt(dir: &Path, d: usize, layers: usize, vocab: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let s = 1.0 / (d as f32).sqrt();
    let mut t = HashMap::new();
    t.insert(
        "transformer.wte.weight".to_string(),
        rand_tensor(&mut rng, &[vocab, d], 0.5, 0.0),
    );
    for i in 0..layers {
        let p = format!("transformer.blocks.{i}");
        t.insert(
            format!("{p}.norm_1.weight"),
            rand_tensor(&mut rng, &[d], 0.1, 1.0),
        );
        t.insert(
            format!("{p}.attn.Wqkv.weight"),
            rand_tensor(&mut rng, &[3 * d, d], s, 0.0),
        );
        t.insert(
            format!("{p}.attn.out_proj.weight"),
            rand_tensor(&mut rng, &[d, d], s, 0.0),
        );
        t.insert(
            format!("{p}.norm_2.weight"),
            rand_tensor(&mut rng, &[d], 0.1, 1.0),
        );
        t.insert(
            format!("{p}.ffn.up_proj.weight"),
            rand_tensor(&mut rng, &[4 * d, d], s, 0.0),
        );
        t.insert(
            format!("{p}.ffn.down_proj.weight"),
            rand_tensor(&mut rng, &[d, 4 * d], s / 2.0, 0.0),
        );
    }
    t.insert(
        "transformer.norm_f.weight".into(),
        rand_tensor(&mut rng, &[d], 0.1, 1.0),
    );
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let cfg = serde_json::json!({"model_type": "mpt", "d_model": d, "n_heads": 8, "n_layers": layers,
        "expansion_ratio": 4, "max_seq_len": 2048, "vocab_size": vocab, "no_bias": true,
        "norm_type": "low_precision_layernorm",
        "attn_config": {"alibi": true, "alibi_bias_max": 8, "qk_ln": false,
            "attn_type": "multihead_attention", "prefix_lm": false}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut v = serde_json::Map::new();
    v.insert("[UNK]".into(), 0.into());
    for i in 1..vocab - 3 {
        v.insert(format!("w{i}"), i.into());
    }
    let tok = serde_json::json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "[UNK]"}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn generation_throughput() {
    let root = std::env::temp_dir().join(format!("model-bench-{}", std::process::id()));
    let (vdir, ldir) = (root.join("vision"), root.join("lm"));
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::create_dir_all(&ldir).unwrap();
    write_vision(&vdir, 256, 6);
    write_mpt(&ldir, 512, 8, 8192);
    let mut spec = FlamingoSpec::new(&vdir, &ldir);
    spec.cross_attn_every_n_layers = 2;
    let dev = Device::Cpu;
    let (m, tok, _proc, _) = Flamingo::load(&spec, &dev).unwrap();
    // Non-zero gates so that cross-attention does real work.
    for (name, var) in m.varmap().data().lock().unwrap().iter() {
        if name.ends_with("_gate") {
            var.set(&Tensor::new(&[0.5f32], &dev).unwrap()).unwrap();
        }
    }
    let n_img = 5;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let pixels = rand_tensor(&mut rng, &[1, n_img, 3, 224, 224], 1.0, 0.0);
    // A 4-shot captioning-like prompt: 5 images, ~40 tokens per demo.
    let mut prompt = vec![];
    for k in 0..n_img {
        prompt.push(tok.image_id());
        for j in 0..36 {
            prompt.push(1 + ((k * 37 + j * 11) % 8000) as u32);
        }
        if k + 1 < n_img {
            prompt.push(tok.eoc_id());
        }
    }
    println!("prompt: {} tokens, {n_img} images", prompt.len());

    // Minimum over 3 runs of each measurement (the build machine is shared and noisy).
    let best = |f: &mut dyn FnMut()| -> f64 {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let vision_s = best(&mut || {
        m.vision_features(&pixels).unwrap();
    });
    let feats = m.vision_features(&pixels).unwrap();
    let perceiver_s = best(&mut || {
        m.perceiver().forward_inference(&feats).unwrap();
    });
    let media = m.perceiver().forward(&feats).unwrap();
    let ctx = m.media_context(&media).unwrap();
    let ids = Tensor::new(prompt.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let tt = model::cross_attn::text_time_from_ids(std::slice::from_ref(&prompt), tok.image_id());
    let mask = ctx.mask(&tt, &dev).unwrap();
    let ones = Tensor::ones((1, prompt.len()), candle_core::DType::U32, &dev).unwrap();
    let actx = model::AttnCtx::new(ones, 0);
    let prefill_s = best(&mut || {
        let mut cache = m.lm().new_cache();
        let h = m
            .infer_hidden(&ids, &ctx, &mask, &actx, Some(&mut cache))
            .unwrap();
        m.logits(&h.narrow(1, prompt.len() - 1, 1).unwrap())
            .unwrap();
    });
    let lm_alone_s = best(&mut || {
        let mut cache = m.lm().new_cache();
        let x = m.lm().embed(&ids, &actx).unwrap();
        let x = (0..m.lm().num_layers()).fold(x, |x, i| {
            m.lm().layer(i, &x, &actx, cache.layers.get_mut(i)).unwrap()
        });
        m.lm()
            .logits(&x.narrow(1, prompt.len() - 1, 1).unwrap())
            .unwrap();
    });
    println!(
        "vision encoder {vision_s:.3} s + perceiver {perceiver_s:.3} s for {n_img} images; \
         prefill {prefill_s:.3} s ({:.0} tokens/s; the LM layers alone take {lm_alone_s:.3} s)",
        prompt.len() as f64 / prefill_s
    );
    // Decoding steps measured directly: after one prefill, 20 single-token steps for 1 row
    // (greedy) and 3 rows (beams, with the per-step KV-cache reorder beam search does).
    for rows in [1usize, 3] {
        let mut cache = m.lm().new_cache();
        m.infer_hidden(&ids, &ctx, &mask, &actx, Some(&mut cache))
            .unwrap();
        let rep = Tensor::new(vec![0u32; rows].as_slice(), &dev).unwrap();
        cache.reorder(&rep).unwrap();
        let mctx = ctx.index_rows(&rep).unwrap();
        let counts = vec![n_img as u32; rows];
        let t = Instant::now();
        for k in 0..20 {
            let past = prompt.len() + k;
            let step_ids = Tensor::new(vec![7u32 + k as u32; rows].as_slice(), &dev)
                .unwrap()
                .unsqueeze(1)
                .unwrap();
            let am = Tensor::ones((rows, past + 1), candle_core::DType::U32, &dev).unwrap();
            let sctx = model::AttnCtx::new(am, past);
            let smask = mctx
                .mask(&model::cross_attn::text_time_cached(&counts, 1), &dev)
                .unwrap();
            let h = m
                .infer_hidden(&step_ids, &mctx, &smask, &sctx, Some(&mut cache))
                .unwrap();
            let lp = candle_nn::ops::log_softmax(
                &m.logits(&h.squeeze(1).unwrap()).unwrap(),
                candle_core::D::Minus1,
            )
            .unwrap();
            lp.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            if rows > 1 {
                let order: Vec<u32> = (0..rows as u32).rev().collect();
                cache
                    .reorder(&Tensor::new(order.as_slice(), &dev).unwrap())
                    .unwrap();
            }
        }
        let per_step = t.elapsed().as_secs_f64() / 20.0;
        println!(
            "decoding with {rows} row(s): {:.1} ms/step -> {:.1} tokens/s per sequence, {:.1} row-tokens/s",
            per_step * 1e3,
            1.0 / per_step,
            rows as f64 / per_step
        );
    }
    let batch =
        PromptBatch::left_padded(std::slice::from_ref(&prompt), tok.pad_id(), pixels.clone())
            .unwrap();
    for nb in [1usize, 3] {
        let mut cfg = GenerateConfig::open_flamingo(tok.eoc_id(), tok.pad_id(), 20, nb);
        // The stop token is forbidden so that every run decodes exactly 20 tokens.
        cfg.min_new_tokens = 20;
        let total = best(&mut || {
            let out = generate(&m, &batch, &cfg).unwrap();
            assert_eq!(out[0].tokens.len(), 20);
        });
        println!(
            "generate(num_beams={nb}, 20 new tokens) end to end: {total:.3} s (one vision pass, one prefill)"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}
