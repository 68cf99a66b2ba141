//! Parity with the reference implementation (`open_flamingo` 2.0.1 + `open_clip` 2.22 +
//! `transformers` 4.33, fp32 CPU).
//!
//! The fixtures under `tests/fixtures/parity/` are tiny random OpenFlamingo models written by
//! `scripts/fixtures/make_model_fixtures.py` (layout and field meanings in the README there): an
//! HF LM directory, a vision directory (open_clip or HF CLIP layout), a `checkpoint.pt` and the
//! reference outputs. Every model is loaded through [`Flamingo::load`], the entry point users
//! call, and compared with the reference: log-probs within [`TOL`], identical token ids for
//! greedy, 3-beam and batched left-padded generation, rank-scoring log-likelihoods.

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, IndexOp, Tensor};
use model::checkpoint::LoadReport;
use model::tokenizer::{BatchOptions, Padding, PaddingSide};
use model::vision::VisionEncoder;
use model::{
    AttnCtx, DecoderLm, Flamingo, FlamingoSpec, FlamingoTokenizer, GenerateConfig, ImageProcessor,
    PromptBatch, SpecialEmbeddingMode, generate, rank_scores,
};
use serde_json::Value;

/// Largest accepted absolute difference of a log-prob (and of pixels/features, which are O(1)).
const TOL: f64 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array of strings")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

/// Asserts `got` and `want` have the same length and differ by at most `tol` everywhere.
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    // Visible with `--nocapture`: how close parity actually is.
    eprintln!("{what}: max |diff| {worst:.2e}");
    assert!(
        worst <= tol,
        "{what}: max |diff| {worst:e} at {at} (got {}, reference {}), tolerance {tol:e}",
        got[at],
        want[at]
    );
}

/// Reference generation rows are padded after `<|endofchunk|>` by HF; keep up to and including it.
fn trim_at(ids: &[u32], eos: u32) -> Vec<u32> {
    match ids.iter().position(|&t| t == eos) {
        Some(p) => ids[..=p].to_vec(),
        None => ids.to_vec(),
    }
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor to host")
}

/// `lp[b][t] = log p(ids[b][t+1] | ids[b][..=t])` from logits `(B, T, V)`.
fn target_logprobs(logits: &Tensor, ids: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32).unwrap(), D::Minus1).unwrap();
    ids.iter()
        .enumerate()
        .map(|(b, row)| {
            let rows = lp.i(b).unwrap().to_vec2::<f32>().unwrap();
            (1..row.len())
                .map(|t| rows[t - 1][row[t] as usize] as f64)
                .collect()
        })
        .collect()
}

/// One fixture case loaded through the user-facing entry point.
struct Case {
    name: String,
    dir: PathBuf,
    exp: Value,
    model: Flamingo,
    tok: FlamingoTokenizer,
    processor: ImageProcessor,
    report: LoadReport,
    device: Device,
}

impl Case {
    fn load(name: &str, checkpoint: Option<&str>) -> Self {
        let dir = root().join(name);
        let exp = read_json(&dir.join("expected.json"));
        let device = Device::Cpu;
        let mut spec = FlamingoSpec::new(
            dir.join(exp["vision_dir"].as_str().expect("vision_dir")),
            dir.join(exp["lm_dir"].as_str().expect("lm_dir")),
        );
        let ckpt = checkpoint.unwrap_or_else(|| exp["checkpoint"].as_str().expect("checkpoint"));
        spec.checkpoint = Some(dir.join(ckpt));
        spec.cross_attn_every_n_layers =
            exp["cross_attn_every_n_layers"].as_u64().expect("n") as usize;
        let (model, tok, processor, report) = Flamingo::load(&spec, &device)
            .unwrap_or_else(|e| panic!("{name}: Flamingo::load: {e}"));
        Self {
            name: format!("{name}/{ckpt}"),
            dir,
            exp,
            model,
            tok,
            processor,
            report,
            device,
        }
    }

    fn image_dir(&self) -> PathBuf {
        root().join("images")
    }

    /// `(B, T_img, 3, S, S)` pixels for per-row image lists, zero images padding short rows.
    fn pixels(&self, rows: &[Vec<String>]) -> Tensor {
        let examples: Vec<Vec<Tensor>> = rows
            .iter()
            .map(|files| {
                files
                    .iter()
                    .map(|f| {
                        self.processor
                            .open(&self.image_dir().join(f), &self.device)
                            .unwrap_or_else(|e| panic!("{f}: {e}"))
                    })
                    .collect()
            })
            .collect();
        self.processor
            .batch(&examples, &self.device)
            .expect("stack images")
    }

    fn eoc(&self) -> u32 {
        self.exp["tokens"]["endofchunk"]
            .as_u64()
            .expect("endofchunk") as u32
    }

    fn gen_cfg(&self, num_beams: usize) -> GenerateConfig {
        let g = &self.exp["generation"];
        let mut cfg = GenerateConfig::open_flamingo(
            g["eos_token_id"].as_u64().expect("eos") as u32,
            self.tok.pad_id(),
            g["max_new_tokens"].as_u64().expect("max_new_tokens") as usize,
            num_beams,
        );
        cfg.length_penalty = g["length_penalty"].as_f64().expect("length_penalty");
        cfg
    }

    /// Full forward (`Flamingo.forward`) log-probs of padded `rows`.
    fn forward_logprobs(
        &self,
        pixels: &Tensor,
        rows: &[Vec<u32>],
        mask: &[Vec<u32>],
    ) -> Vec<Vec<f64>> {
        let (b, l) = (rows.len(), rows[0].len());
        let ids = Tensor::from_vec(rows.concat(), (b, l), &self.device).unwrap();
        let mask = Tensor::from_vec(mask.concat(), (b, l), &self.device).unwrap();
        let logits = self
            .model
            .forward(pixels, &ids, &mask)
            .unwrap_or_else(|e| panic!("{}: forward: {e}", self.name));
        target_logprobs(&logits, rows)
    }
}

/// Which reference generations a test compares.
#[derive(Clone, Copy, PartialEq)]
enum Gens {
    /// Those where no decoding step fed `<image>` back into the model (the default suite).
    Regular,
    /// Only those where one did (see [`parity_generations_feeding_image_token`]).
    FeedingImageToken,
}

impl Gens {
    fn covers(self, feeds_image_token: &Value) -> bool {
        let feeds = feeds_image_token.as_bool().expect("feeds_image_token flag");
        feeds == (self == Gens::FeedingImageToken)
    }
}

/// Everything a case's `expected.json` holds, checked against the loaded model.
fn check_case(name: &str) {
    check_case_with(name, Gens::Regular);
}

fn check_case_with(name: &str, mode: Gens) {
    let case = Case::load(name, None);
    let exp = &case.exp;
    let n = &case.name;

    // Tokenizer: the Flamingo special tokens and the tokenizer length (= embedding rows).
    let t = &exp["tokens"];
    assert_eq!(
        case.tok.eoc_id() as u64,
        t["endofchunk"].as_u64().unwrap(),
        "{n}: <|endofchunk|> id"
    );
    assert_eq!(
        case.tok.image_id() as u64,
        t["image"].as_u64().unwrap(),
        "{n}: <image> id"
    );
    assert_eq!(
        case.tok.pad_id() as u64,
        t["pad"].as_u64().unwrap(),
        "{n}: pad id"
    );
    assert_eq!(
        case.tok.eos_id().map(u64::from),
        t["eos"].as_u64(),
        "{n}: eos id"
    );
    // `bos` is the token the tokenizer prepends (null when none: the prompt ids check that).
    if let Some(bos) = t["bos"].as_u64() {
        assert_eq!(case.tok.bos_id().map(u64::from), Some(bos), "{n}: bos id");
    }
    assert_eq!(
        case.tok.len() as u64,
        t["tokenizer_len"].as_u64().unwrap(),
        "{n}: tokenizer length"
    );
    assert_eq!(
        case.model.lm().vocab_len() as u64,
        t["tokenizer_len"].as_u64().unwrap(),
        "{n}: vocab rows"
    );

    // Cross-attention placement.
    let placed: Vec<u64> = case
        .model
        .cross_attn_layers()
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_some())
        .map(|(i, _)| i as u64)
        .collect();
    let want: Vec<u64> = exp["xattn_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(placed, want, "{n}: layers with gated cross-attention");

    check_load_report(&case);

    let cfg_greedy = GenerateConfig {
        prompt_logprobs: true,
        ..case.gen_cfg(1)
    };
    let cfg_beam = case.gen_cfg(3);
    for (k, p) in exp["prompts"].as_array().unwrap().iter().enumerate() {
        let text = p["text"].as_str().unwrap();
        let ids = case.tok.encode(text).unwrap();
        assert_eq!(ids, u32s(&p["ids"]), "{n}: prompt {k} token ids");
        let pixels = case.pixels(&[strings(&p["images"])]);

        let lp = case.forward_logprobs(&pixels, std::slice::from_ref(&ids), &[vec![1; ids.len()]]);
        assert_close(
            &format!("{n}: prompt {k} forward log-probs"),
            &lp[0],
            &f64s(&p["logprobs"]),
            TOL,
        );

        if let Some(po) = p.get("perceiver_out") {
            let media = case.model.encode_media(&pixels).unwrap();
            assert_eq!(
                media.dims().iter().map(|&d| d as u64).collect::<Vec<_>>(),
                po["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect::<Vec<_>>(),
                "{n}: perceiver output shape"
            );
            assert_close(
                &format!("{n}: perceiver output"),
                &to_f64(&media),
                &f64s(&po["values"]),
                TOL,
            );
        }

        let batch = PromptBatch::left_padded(
            std::slice::from_ref(&ids),
            case.tok.pad_id(),
            pixels.clone(),
        )
        .unwrap();
        let g = &generate(&case.model, &batch, &cfg_greedy).unwrap()[0];
        let plp: Vec<f64> = g.prompt_logprobs.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("{n}: prompt {k} generate prompt log-probs"),
            &plp,
            &f64s(&p["logprobs"]),
            TOL,
        );
        if mode.covers(&p["greedy"]["feeds_image_token"]) {
            assert_eq!(
                g.tokens,
                u32s(&p["greedy"]["new_ids"]),
                "{n}: prompt {k} greedy tokens"
            );
            let glp: Vec<f64> = g.token_logprobs.iter().map(|&v| v as f64).collect();
            assert_close(
                &format!("{n}: prompt {k} greedy log-probs"),
                &glp,
                &f64s(&p["greedy"]["logprobs"]),
                TOL,
            );
        }

        if mode.covers(&p["beam3"]["feeds_image_token"]) {
            let b = &generate(&case.model, &batch, &cfg_beam).unwrap()[0];
            assert_eq!(
                b.tokens,
                u32s(&p["beam3"]["new_ids"]),
                "{n}: prompt {k} 3-beam tokens"
            );
            let want = p["beam3"]["sequence_score"].as_f64().unwrap();
            assert_close(
                &format!("{n}: prompt {k} 3-beam score"),
                &[b.score],
                &[want],
                TOL,
            );
        }
    }

    check_batch(&case, mode);
    if mode == Gens::Regular {
        check_rank(&case);
        check_lm_only(&case);
    }
}

/// The checkpoint set every trainable tensor, and anything else it held is a known buffer.
fn check_load_report(case: &Case) {
    let n = &case.name;
    let r = &case.report;
    // The trainer never saves a frozen untied head whose name lacks "embed" (LLaMA `lm_head`): it
    // comes from the LM directory, so it may be reported missing; nothing else may.
    assert!(
        r.missing.iter().all(|k| k.ends_with("lm_head.weight")),
        "{n}: trainable keys missing from the checkpoint: {:?}",
        r.missing
    );
    assert!(
        r.unexpected
            .iter()
            .all(|k| k.ends_with("rotary_emb.inv_freq")),
        "{n}: unexpected checkpoint keys: {:?}",
        r.unexpected
    );
    let ckpt_keys = strings(&case.exp["checkpoint_keys"]);
    for k in ckpt_keys.iter().filter(|k| !k.ends_with("inv_freq")) {
        assert!(
            r.loaded.contains(k) || r.ignored_frozen.contains(k),
            "{n}: checkpoint key {k} neither loaded nor accounted for"
        );
    }
}

/// The left-padded batch: tokenizer padding, forward log-probs, batched greedy and beam search.
fn check_batch(case: &Case, mode: Gens) {
    let n = &case.name;
    let eb = &case.exp["batch"];
    let prompts = case.exp["prompts"].as_array().unwrap();
    let idx: Vec<usize> = eb["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let texts: Vec<&str> = idx
        .iter()
        .map(|&i| prompts[i]["text"].as_str().unwrap())
        .collect();
    let opts = BatchOptions {
        add_special_tokens: true,
        padding: Padding::Longest,
        side: PaddingSide::Left,
        max_length: None,
    };
    let enc = case.tok.encode_batch(&texts, &opts).unwrap();
    let want_ids: Vec<Vec<u32>> = eb["ids"].as_array().unwrap().iter().map(u32s).collect();
    let want_mask: Vec<Vec<u32>> = eb["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(u32s)
        .collect();
    assert_eq!(enc.ids, want_ids, "{n}: batch ids (left padded)");
    assert_eq!(enc.attention_mask, want_mask, "{n}: batch attention mask");
    let images: Vec<Vec<String>> = eb["images_per_row"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let pixels = case.pixels(&images);

    let lp = case.forward_logprobs(&pixels, &enc.ids, &enc.attention_mask);
    for (b, (row, want)) in lp
        .iter()
        .zip(eb["logprobs"].as_array().unwrap())
        .enumerate()
    {
        let want = want.as_array().unwrap();
        let (got, want): (Vec<f64>, Vec<f64>) = row
            .iter()
            .zip(want)
            .filter_map(|(g, w)| w.as_f64().map(|w| (*g, w)))
            .unzip();
        assert_close(
            &format!("{n}: batch row {b} forward log-probs"),
            &got,
            &want,
            TOL,
        );
    }

    let batch =
        PromptBatch::from_padded(enc.ids.clone(), enc.attention_mask.clone(), pixels).unwrap();
    let eoc = case.eoc();
    if mode.covers(&eb["greedy_feeds_image_token"]) {
        let greedy = generate(&case.model, &batch, &case.gen_cfg(1)).unwrap();
        for (b, g) in greedy.iter().enumerate() {
            let want = trim_at(&u32s(&eb["greedy_new_ids"][b]), eoc);
            assert_eq!(g.tokens, want, "{n}: batch row {b} greedy tokens");
            let wlp = f64s(&eb["greedy_logprobs"][b]);
            let glp: Vec<f64> = g.token_logprobs.iter().map(|&v| v as f64).collect();
            assert_close(
                &format!("{n}: batch row {b} greedy log-probs"),
                &glp,
                &wlp[..glp.len()],
                TOL,
            );
        }
    }
    if mode.covers(&eb["beam3_feeds_image_token"]) {
        let beams = generate(&case.model, &batch, &case.gen_cfg(3)).unwrap();
        for (b, g) in beams.iter().enumerate() {
            let want = trim_at(&u32s(&eb["beam3_new_ids"][b]), eoc);
            assert_eq!(g.tokens, want, "{n}: batch row {b} 3-beam tokens");
            let ws = eb["beam3_sequence_scores"][b].as_f64().unwrap();
            assert_close(
                &format!("{n}: batch row {b} 3-beam score"),
                &[g.score],
                &[ws],
                TOL,
            );
        }
    }
}

/// Rank scoring of `"no"` / `"yes"` after a shared context (batch of one, KV cache reused).
fn check_rank(case: &Case) {
    let n = &case.name;
    let prompts = case.exp["prompts"].as_array().unwrap();
    for r in case.exp["rank"].as_array().unwrap() {
        let k = r["prompt"].as_u64().unwrap() as usize;
        let ids = u32s(&prompts[k]["ids"]);
        let pixels = case.pixels(&[strings(&prompts[k]["images"])]);
        let batch = PromptBatch::left_padded(&[ids], case.tok.pad_id(), pixels).unwrap();
        let classes = r["classes"].as_object().unwrap();
        let names = ["no", "yes"];
        let cands: Vec<Vec<u32>> = names
            .iter()
            .map(|c| {
                let ids = case.tok.encode_with(c, false, None).unwrap();
                assert_eq!(ids, u32s(&classes[*c]["ids"]), "{n}: class name {c:?} ids");
                ids
            })
            .collect();
        let sums = rank_scores(&case.model, &batch, &cands, false).unwrap();
        let means = rank_scores(&case.model, &batch, &cands, true).unwrap();
        for (j, c) in names.iter().enumerate() {
            let what = format!("{n}: prompt {k} class {c:?}");
            assert_close(
                &format!("{what} sum"),
                &[sums[0][j]],
                &[classes[*c]["sum"].as_f64().unwrap()],
                TOL,
            );
            assert_close(
                &format!("{what} mean"),
                &[means[0][j]],
                &[classes[*c]["mean"].as_f64().unwrap()],
                TOL,
            );
        }
    }
}

/// The LM alone, as loaded from its directory (no Flamingo resize), on a text prompt.
fn check_lm_only(case: &Case) {
    let n = &case.name;
    let e = &case.exp["lm_only"];
    let ids = u32s(&e["ids"]);
    assert_eq!(
        case.tok.encode(e["text"].as_str().unwrap()).unwrap(),
        ids,
        "{n}: LM-only prompt ids"
    );
    let lm_dir = case.dir.join(case.exp["lm_dir"].as_str().unwrap());
    let rows = case.exp["tokens"]["lm_vocab_size_in_config"]
        .as_u64()
        .unwrap() as usize;
    let lm = DecoderLm::load(
        &lm_dir,
        rows,
        SpecialEmbeddingMode::Frozen,
        &[],
        &case.device,
    )
    .unwrap();
    let x = Tensor::new(ids.as_slice(), &case.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ctx = AttnCtx::sequential(
        Tensor::ones((1, ids.len()), DType::U32, &case.device).unwrap(),
        0,
    );
    let logits = lm.forward(&x, &ctx, None).unwrap();
    let lp = target_logprobs(&logits, &[ids]);
    assert_close(
        &format!("{n}: LM-only log-probs"),
        &lp[0],
        &f64s(&e["logprobs"]),
        TOL,
    );
}

#[test]
fn parity_opt_n1() {
    check_case("opt_n1");
}

#[test]
fn parity_gpt_neox_n1() {
    check_case("gpt_neox_n1");
}

#[test]
fn parity_mpt_n1() {
    check_case("mpt_n1");
}

#[test]
fn parity_mosaic_gpt_n1() {
    check_case("mosaic_gpt_n1");
}

/// Also the HF CLIP vision layout (its `vision_dir` is `../vision/hf_clip`).
#[test]
fn parity_llama_n1() {
    check_case("llama_n1");
}

#[test]
fn parity_gpt_neox_n2() {
    check_case("gpt_neox_n2");
}

#[test]
fn parity_mpt_n2() {
    check_case("mpt_n2");
}

/// Generations where a decoding step fed `<image>` back in (a generated `<image>`, in any beam or
/// batch row). The reference (`FlamingoLMMixin.forward` under `generate`) then recomputes the media
/// locations from that step's tokens for EVERY row: rows whose token is not `<image>` get no
/// cross-attention output from then on (text_time 0), the row(s) with it attend to image 1; the
/// stored locations are indexed by row and not reordered with the beams; `generate` reproduces
/// this (see `Generation::fed_media_token`).
#[test]
fn parity_generations_feeding_image_token() {
    for name in [
        "opt_n1",
        "gpt_neox_n1",
        "mpt_n1",
        "mosaic_gpt_n1",
        "llama_n1",
        "gpt_neox_n2",
        "mpt_n2",
    ] {
        check_case_with(name, Gens::FeedingImageToken);
    }
}

/// MosaicGPT rank scoring as the eval code really computes it: the MosaicGPT forward writes the
/// extended KV cache back into the list it was given, so every class name after the first is
/// scored after the previous class names' tokens (`classes_reference_shared_cache`), which
/// `RankOptions { shared_cache: true }` reproduces.
#[test]
fn parity_rank_scores_mosaic_gpt_shared_cache() {
    let case = Case::load("mosaic_gpt_n1", None);
    let prompts = case.exp["prompts"].as_array().unwrap();
    for r in case.exp["rank"].as_array().unwrap() {
        let quirk = r["classes_reference_shared_cache"]
            .as_object()
            .expect("quirk values");
        let k = r["prompt"].as_u64().unwrap() as usize;
        let pixels = case.pixels(&[strings(&prompts[k]["images"])]);
        let batch =
            PromptBatch::left_padded(&[u32s(&prompts[k]["ids"])], case.tok.pad_id(), pixels)
                .unwrap();
        let cands: Vec<Vec<u32>> = ["no", "yes"]
            .iter()
            .map(|c| u32s(&quirk[*c]["ids"]))
            .collect();
        let sums = model::generate::rank_scores_with(
            &case.model,
            &batch,
            &cands,
            &model::generate::RankOptions {
                normalize_length: false,
                shared_cache: true,
            },
        )
        .unwrap();
        for (j, c) in ["no", "yes"].iter().enumerate() {
            let want = quirk[*c]["sum"].as_f64().unwrap();
            assert_close(
                &format!("mosaic_gpt_n1: prompt {k} class {c:?} sum (shared cache)"),
                &[sums[0][j]],
                &[want],
                TOL,
            );
        }
    }
}

/// The trainer's `{"model_state_dict": ...}` with `module.` prefixes, and a full `state_dict()`
/// with the wrapper's alias keys and the vision encoder, give the same model as the released layout.
#[test]
fn parity_checkpoint_layouts() {
    for (name, file) in [
        ("mosaic_gpt_n1", "checkpoint_trainer.pt"),
        ("gpt_neox_n2", "checkpoint_full.pt"),
    ] {
        let case = Case::load(name, Some(file));
        check_load_report(&case);
        let p = &case.exp["prompts"][0];
        let ids = u32s(&p["ids"]);
        let pixels = case.pixels(&[strings(&p["images"])]);
        let lp = case.forward_logprobs(&pixels, std::slice::from_ref(&ids), &[vec![1; ids.len()]]);
        assert_close(
            &format!("{}: prompt 0 forward log-probs", case.name),
            &lp[0],
            &f64s(&p["logprobs"]),
            TOL,
        );
        let batch = PromptBatch::left_padded(&[ids], case.tok.pad_id(), pixels).unwrap();
        let g = &generate(&case.model, &batch, &case.gen_cfg(1)).unwrap()[0];
        if Gens::Regular.covers(&p["greedy"]["feeds_image_token"]) {
            assert_eq!(
                g.tokens,
                u32s(&p["greedy"]["new_ids"]),
                "{}: prompt 0 greedy tokens",
                case.name
            );
        }
    }
}

/// Preprocessing and patch tokens of every image through both vision layouts, with and without
/// `ln_post` on the tokens.
#[test]
fn parity_vision_encoders() {
    let exp = read_json(&root().join("vision/expected.json"));
    let device = Device::Cpu;
    for (layout, ln_post, key) in [
        ("open_clip", false, "tokens"),
        ("hf_clip", false, "tokens"),
        ("open_clip", true, "tokens_ln_post"),
        ("hf_clip", true, "tokens_ln_post"),
    ] {
        let dir = root().join("vision").join(layout);
        let enc =
            VisionEncoder::load(&dir, ln_post, &device).unwrap_or_else(|e| panic!("{layout}: {e}"));
        let processor = ImageProcessor::from_vision_config(enc.config());
        for img in exp["images"].as_array().unwrap() {
            let file = img["file"].as_str().unwrap();
            let what = format!("{layout} (ln_post {ln_post}) {file}");
            let px = processor
                .open(&root().join("images").join(file), &device)
                .unwrap();
            assert_close(
                &format!("{what}: pixels"),
                &to_f64(&px),
                &f64s(&img["pixels"]),
                TOL,
            );
            let tokens = enc.forward_tokens(&px.unsqueeze(0).unwrap()).unwrap();
            assert_close(
                &format!("{what}: {key}"),
                &to_f64(&tokens),
                &f64s(&img[key]),
                TOL,
            );
        }
    }
}
