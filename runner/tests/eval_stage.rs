//! The eval stage end to end through `runner exec`: a tiny Flamingo built from random backbones in
//! the real on-disk layouts (open_clip ViT, HF MPT + tokenizer.json, an OpenFlamingo-named
//! checkpoint) evaluated on the tiny synthetic world: cells of each task type, resume after a
//! partial run, vision-encoder calls equal to distinct images, the 0-shot rule, RICES ordering,
//! and classification prompt ensembling. An ignored benchmark measures captioning throughput.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use runner::config::{self, Overrides};
use runner::data::synth::{SynthOptions, WorldSize, write_world};
use runner::eval::cell::{self, CellSpec};
use runner::eval::datasets::EvalExample;
use runner::eval::demos::{RandomDemos, effective_shots};
use runner::eval::prompts;
use runner::eval::stage;
use runner::exec::{ExecOptions, exec};
use serde_json::{Value, json};

/// The tests share the process-wide model and media caches: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

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

/// A random open_clip ViT (`open_clip_config.json` + `open_clip_model.safetensors`).
pub fn write_vision(dir: &Path, width: usize, layers: usize, image: usize, patch: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let d = width;
    let s = 0.5 / (d as f32).sqrt();
    let grid = image / patch;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |k: String, shape: &[usize], scale: f32, off: f32| {
        t.insert(k, rand_tensor(&mut rng, shape, scale, off));
    };
    put(
        "visual.conv1.weight".into(),
        &[d, 3, patch, patch],
        0.05,
        0.0,
    );
    put("visual.class_embedding".into(), &[d], 0.1, 0.0);
    put(
        "visual.positional_embedding".into(),
        &[grid * grid + 1, d],
        0.1,
        0.0,
    );
    put("visual.proj".into(), &[d, 16], s, 0.0);
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
        put(format!("{b}.attn.in_proj_weight"), &[3 * d, d], s, 0.0);
        put(format!("{b}.attn.in_proj_bias"), &[3 * d], 0.1, 0.0);
        put(format!("{b}.attn.out_proj.weight"), &[d, d], s, 0.0);
        put(format!("{b}.attn.out_proj.bias"), &[d], 0.1, 0.0);
        put(format!("{b}.mlp.c_fc.weight"), &[4 * d, d], s, 0.0);
        put(format!("{b}.mlp.c_fc.bias"), &[4 * d], 0.1, 0.0);
        put(format!("{b}.mlp.c_proj.weight"), &[d, 4 * d], s / 2.0, 0.0);
        put(format!("{b}.mlp.c_proj.bias"), &[d], 0.1, 0.0);
    }
    candle_core::safetensors::save(&t, dir.join("open_clip_model.safetensors")).unwrap();
    let cfg = json!({"model_cfg": {"embed_dim": 16, "quick_gelu": true,
        "vision_cfg": {"image_size": image, "layers": layers, "width": d, "patch_size": patch,
            "head_width": 16}}});
    std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
}

/// Every word of the world's annotation files plus the prompt words: the LM's vocabulary.
fn world_words(world: &Path) -> Vec<String> {
    let mut words: BTreeSet<String> = [
        "Output", ":", "Question", "Short", "answer", "Answer", "is", "an", "image", "with", "'",
        "written", "on", "it", ".", "Is", "hateful", "?", "yes", "no", ",",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let re = regex::Regex::new(r"[A-Za-z]+").unwrap();
    let mut stack = vec![world.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json" || x == "jsonl") {
                let text = std::fs::read_to_string(&p).unwrap();
                for m in re.find_iter(&text) {
                    words.insert(m.as_str().to_string());
                }
            }
        }
    }
    words.into_iter().take(600).collect()
}

/// A random MPT LM (`config.json`, `model.safetensors`) with a word-level `tokenizer.json`.
pub fn write_lm(dir: &Path, d: usize, layers: usize, words: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let vocab = words.len() + 1;
    let s = 1.0 / (d as f32).sqrt();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |k: String, shape: &[usize], scale: f32, off: f32| {
        t.insert(k, rand_tensor(&mut rng, shape, scale, off));
    };
    put("transformer.wte.weight".into(), &[vocab, d], 0.5, 0.0);
    for i in 0..layers {
        let p = format!("transformer.blocks.{i}");
        put(format!("{p}.norm_1.weight"), &[d], 0.1, 1.0);
        put(format!("{p}.attn.Wqkv.weight"), &[3 * d, d], s, 0.0);
        put(format!("{p}.attn.out_proj.weight"), &[d, d], s, 0.0);
        put(format!("{p}.norm_2.weight"), &[d], 0.1, 1.0);
        put(format!("{p}.ffn.up_proj.weight"), &[4 * d, d], s, 0.0);
        put(
            format!("{p}.ffn.down_proj.weight"),
            &[d, 4 * d],
            s / 2.0,
            0.0,
        );
    }
    put("transformer.norm_f.weight".into(), &[d], 0.1, 1.0);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let cfg = json!({"model_type": "mpt", "d_model": d, "n_heads": 4, "n_layers": layers,
        "expansion_ratio": 4, "max_seq_len": 2048, "vocab_size": vocab, "no_bias": true,
        "norm_type": "low_precision_layernorm",
        "attn_config": {"alibi": true, "alibi_bias_max": 8, "qk_ln": false,
            "attn_type": "multihead_attention", "prefix_lm": false}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut v = serde_json::Map::new();
    v.insert("[UNK]".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        v.insert(w.clone(), (i + 1).into());
    }
    let tok = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "[UNK]"}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

/// An OpenFlamingo-named checkpoint of the tiny model with open gates (so images matter).
pub fn write_checkpoint(vision: &Path, lm: &Path, path: &Path) {
    let spec = model::FlamingoSpec::new(vision, lm);
    let (m, _, _, _) = model::Flamingo::load(&spec, &Device::Cpu).unwrap();
    for (name, var) in m.varmap().data().lock().unwrap().iter() {
        if name.ends_with("_gate") {
            var.set(&Tensor::new(&[0.8f32], &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    m.save_trainable(path).unwrap();
}

/// A scratch directory with the world, the model files and an experiment writer.
struct Fixture {
    root: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.root).ok();
    }
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("runner-eval-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&root).ok();
        std::fs::create_dir_all(&root).unwrap();
        write_world(&root.join("world"), &SynthOptions::new(0, WorldSize::Tiny)).unwrap();
        let words = world_words(&root.join("world"));
        write_vision(&root.join("vision"), 32, 2, 32, 8);
        write_lm(&root.join("lm"), 32, 2, &words);
        write_checkpoint(
            &root.join("vision"),
            &root.join("lm"),
            &root.join("ckpt.safetensors"),
        );
        Fixture { root }
    }

    fn paths(&self) -> String {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/synthetic-world.toml"),
        )
        .unwrap();
        let start = template.find("[eval.paths.coco]").unwrap();
        template[start..].replace("runs/world", &self.root.join("world").display().to_string())
    }

    /// Writes an eval-only experiment; `eval` holds the `[eval]` keys.
    fn experiment(&self, name: &str, eval: &str) -> PathBuf {
        let r = self.root.display();
        let text = format!(
            "name = \"{name}\"\n[model]\nvision = \"{r}/vision\"\nlanguage = \"{r}/lm\"\n\
             checkpoint = \"{r}/ckpt.safetensors\"\ncross_attn_every_n_layers = 1\n\
             [eval]\n{eval}\n{}",
            self.paths()
        );
        let path = self.root.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn exec(&self, file: &Path, db: &str) -> (runner::plan::Plan, results::Store) {
        let loaded = config::load(file, &Overrides::default()).unwrap();
        let plan = runner::plan::plan(&loaded);
        let db = self.root.join(db).join("results.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let summary = exec(&plan, &loaded, &db, &ExecOptions::default()).unwrap();
        assert!(summary.failed.is_empty(), "{:?}", summary.failed);
        (plan, results::Store::open(&db).unwrap())
    }
}

fn eval_jobs(plan: &runner::plan::Plan) -> Vec<&runner::plan::Job> {
    plan.jobs
        .iter()
        .filter(|j| j.kind == runner::plan::JobKind::Eval)
        .collect()
}

fn cell_json(store: &results::Store, job: &runner::plan::Job) -> Value {
    let dir = store
        .path()
        .parent()
        .unwrap()
        .join("jobs")
        .join(format!("eval-{}", &job.hash[..12]));
    serde_json::from_str(&std::fs::read_to_string(dir.join("cell.json")).unwrap()).unwrap()
}

fn extra(p: &results::Prediction) -> Value {
    serde_json::from_str(p.extra.as_deref().unwrap()).unwrap()
}

/// The images the prompts of a random-demo cell refer to, computed from the public pieces.
fn cell_images(file: &Path, job: &runner::plan::Job) -> HashSet<PathBuf> {
    let loaded = config::load(file, &Overrides::default()).unwrap();
    let ev = loaded.composed.experiment.eval.clone().unwrap();
    let spec: CellSpec = stage::cell_spec(&job.spec, ev.batch_size as usize).unwrap();
    let data = stage::load_dataset(&spec.dataset, &ev.paths[&spec.dataset]).unwrap();
    let random = RandomDemos::new(
        &spec.dataset,
        spec.seed,
        data.train.len(),
        spec.query_set_size,
    );
    let mut out = HashSet::new();
    for q in cell::queries(&data, &spec) {
        let idx = random
            .for_query(&q.id, effective_shots(spec.shots))
            .unwrap();
        let demos: Vec<&EvalExample> = idx.iter().map(|&i| &data.train[i]).collect();
        let p = prompts::build(data.info.task, &demos, q, spec.shots, spec.protocol).unwrap();
        out.extend(p.images);
    }
    out
}

#[test]
fn one_cell_per_task_type_stores_predictions_and_a_value_and_encodes_each_image_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new("tasks");
    let file = fx.experiment(
        "tasks",
        "datasets = [\"coco\", \"okvqa\", \"hatefulmemes\"]\nshots = [0, 4]\nseeds = [3]\n\
         num_samples = 5\nquery_set_size = 12\nbatch_size = 2\nnum_beams = 3",
    );
    let loads_before = runner::eval::model_cache::loads();
    let (plan, store) = fx.exec(&file, "runs");
    let jobs = eval_jobs(&plan);
    assert_eq!(jobs.len(), 6);
    // The model is loaded once for the whole sweep.
    assert_eq!(runner::eval::model_cache::loads() - loads_before, 1);
    let hashes: Vec<String> = jobs.iter().map(|j| j.hash.clone()).collect();
    let cells = store.eval_cells(&hashes).unwrap();
    assert_eq!(cells.len(), 6);
    let mut all_images = HashSet::new();
    for job in &jobs {
        let cell = cells.iter().find(|c| c.job_hash == job.hash).unwrap();
        assert!(cell.value.is_finite(), "{cell:?}");
        assert_eq!(cell.count, 5);
        let preds = store.predictions(&job.hash).unwrap();
        assert_eq!(preds.len(), 5);
        let ds = job.dataset.as_deref().unwrap();
        let shots = job.shots.unwrap();
        for p in &preds {
            let x = extra(p);
            // The 0-shot rule: two text-only demonstrations, only the query image (paper).
            assert_eq!(
                x["demos"].as_array().unwrap().len(),
                if shots == 0 { 2 } else { 4 }
            );
            assert_eq!(x["images"], if shots == 0 { 1 } else { 5 });
            match ds {
                "hatefulmemes" => {
                    assert!(p.prediction == "yes" || p.prediction == "no");
                    let s = p.score.unwrap();
                    assert!((0.0..=1.0).contains(&s));
                    // Paper protocol: min(6, k!) demonstration orders averaged.
                    assert_eq!(x["orders"], if shots == 0 { 2 } else { 6 });
                }
                _ => {
                    assert!(x["raw"].is_string());
                    assert!(x["new_tokens"].as_u64().unwrap() <= 20);
                }
            }
        }
        let metric = match ds {
            "coco" => "cider",
            "okvqa" => "vqa-accuracy",
            _ => "roc-auc",
        };
        assert_eq!(cell.metric, metric);
        // VQA cells keep the official evaluation's per-answer-type and per-question-type scores.
        match cell.groups.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(groups)) => {
                assert_eq!(metric, "vqa-accuracy", "{groups}");
                for key in ["answer_type", "question_type"] {
                    let counted: i64 = groups[key]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|g| g["count"].as_i64().unwrap())
                        .sum();
                    assert_eq!(counted, cell.count, "{key}: {groups}");
                }
            }
            Some(Err(e)) => panic!("groups of {ds}: {e}"),
            None => assert_ne!(metric, "vqa-accuracy"),
        }
        let fp: Value = serde_json::from_str(&cell.fingerprint).unwrap();
        assert_eq!(fp["seed"]["value"], 3);
        assert!(fp["annotations"].as_object().unwrap().len() >= 2);
        assert_eq!(fp["decoding"]["num_beams"].as_u64().unwrap_or(3), 3);
        all_images.extend(cell_images(&file, job));
    }
    // Each distinct image went through the vision encoder exactly once for the whole sweep.
    let calls = stage::vision_encoder_calls(&jobs[0].spec);
    assert_eq!(calls as usize, all_images.len());
    let total: u64 = jobs
        .iter()
        .map(|j| {
            cell_json(&store, j)["fingerprint"]["run"]["stats"]["images_encoded"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, calls);
}

#[test]
fn a_resumed_cell_equals_an_uninterrupted_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new("resume");
    for (ds, eval) in [("coco", "shots = [4]"), ("hatefulmemes", "shots = [4]")] {
        let file = fx.experiment(
            &format!("resume-{ds}"),
            &format!(
                "datasets = [\"{ds}\"]\n{eval}\nseeds = [1]\nnum_samples = 7\n\
                 query_set_size = 12\nbatch_size = 3\nnum_beams = 3"
            ),
        );
        let (plan, full) = fx.exec(&file, &format!("full-{ds}"));
        let job = eval_jobs(&plan)[0].clone();
        let full_cell = full
            .eval_cells(std::slice::from_ref(&job.hash))
            .unwrap()
            .remove(0);
        let full_preds = full.predictions(&job.hash).unwrap();

        // A killed run: the first batch (queries 1-3) and one query of the second were flushed.
        let db = fx.root.join(format!("killed-{ds}")).join("results.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let killed = results::Store::open(&db).unwrap();
        runner::exec::record_plan(&killed, &plan).unwrap();
        let loaded = config::load(&file, &Overrides::default()).unwrap();
        let ev = loaded.composed.experiment.eval.clone().unwrap();
        let spec = stage::cell_spec(&job.spec, 3).unwrap();
        let data = stage::load_dataset(ds, &ev.paths[ds]).unwrap();
        let order: Vec<String> = cell::queries(&data, &spec)
            .iter()
            .map(|q| q.id.clone())
            .collect();
        let flushed: Vec<results::Prediction> = full_preds
            .iter()
            .filter(|p| order[..4].contains(&p.example_id))
            .cloned()
            .collect();
        assert_eq!(flushed.len(), 4);
        killed.put_predictions(&job.hash, &flushed).unwrap();
        drop(killed);

        let (_, resumed) = fx.exec(&file, &format!("killed-{ds}"));
        let cell = resumed
            .eval_cells(std::slice::from_ref(&job.hash))
            .unwrap()
            .remove(0);
        assert_eq!(cell.value, full_cell.value, "{ds}");
        assert_eq!(resumed.predictions(&job.hash).unwrap(), full_preds, "{ds}");
        let stats = &cell_json(&resumed, &job)["fingerprint"]["run"]["stats"];
        // Batch 1 was skipped; batch 2 (partly stored) and batch 3 were computed whole.
        assert_eq!(stats["resumed"], 3, "{ds}");
        assert_eq!(stats["computed"], 4, "{ds}");
        // Same fingerprint apart from how it was run.
        let strip = |fp: &str| {
            let mut v: Value = serde_json::from_str(fp).unwrap();
            v.as_object_mut().unwrap().remove("run");
            v
        };
        assert_eq!(strip(&cell.fingerprint), strip(&full_cell.fingerprint));
    }
}

#[test]
fn rices_demonstrations_are_the_most_similar_training_images_most_similar_last() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new("rices");
    let file = fx.experiment(
        "rices",
        "datasets = [\"vqav2\"]\nshots = [4]\nseeds = [0]\nnum_samples = 4\n\
         demos = \"rices\"\nbatch_size = 4\nnum_beams = 1",
    );
    let (plan, store) = fx.exec(&file, "runs");
    let job = eval_jobs(&plan)[0];
    // The bank is cached on disk.
    let cache_dir = fx.root.join("runs/cache/rices");
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 1);

    // Independent check: embed every image with the model's vision encoder, rank by cosine.
    let loaded = config::load(&file, &Overrides::default()).unwrap();
    let ev = loaded.composed.experiment.eval.clone().unwrap();
    let data = stage::load_dataset("vqav2", &ev.paths["vqav2"]).unwrap();
    let spec = model::FlamingoSpec::new(fx.root.join("vision"), fx.root.join("lm"));
    let (m, _, proc_, _) = model::Flamingo::load(&spec, &Device::Cpu).unwrap();
    let embed = |p: &Path| -> Vec<f32> {
        let px = proc_.open(p, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mut v = m
            .vision()
            .embed_image(&px)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let train: Vec<Vec<f32>> = data.train.iter().map(|e| embed(&e.image)).collect();
    let by_id: HashMap<String, usize> = data
        .train
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.clone(), i))
        .collect();
    for p in store.predictions(&job.hash).unwrap() {
        let q = data.test.iter().find(|e| e.id == p.example_id).unwrap();
        let qv = embed(&q.image);
        let sims: Vec<f32> = train
            .iter()
            .map(|t| t.iter().zip(&qv).map(|(a, b)| a * b).sum())
            .collect();
        let demos: Vec<usize> = extra(&p)["demos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| by_id[d.as_str().unwrap()])
            .collect();
        assert_eq!(demos.len(), 4);
        // Ascending similarity: the most similar demonstration is last, next to the query.
        for w in demos.windows(2) {
            assert!(sims[w[0]] <= sims[w[1]] + 1e-5, "{demos:?}");
        }
        // And nothing outside the chosen four is more similar than the least similar chosen.
        let least = sims[demos[0]];
        let better = (0..train.len())
            .filter(|i| !demos.contains(i) && sims[*i] > least + 1e-5)
            .count();
        assert_eq!(better, 0, "query {}", p.example_id);
    }
}

#[test]
fn code_protocol_zero_shot_classification_passes_the_demo_images_without_ensembling() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new("code");
    let file = fx.experiment(
        "code",
        "datasets = [\"hatefulmemes\"]\nshots = [0, 4]\nseeds = [0]\nnum_samples = 4\n\
         protocol = \"code\"\nbatch_size = 4",
    );
    let (plan, store) = fx.exec(&file, "runs");
    for job in eval_jobs(&plan) {
        for p in store.predictions(&job.hash).unwrap() {
            let x = extra(&p);
            assert_eq!(x["orders"], 1);
            assert_eq!(x["images"], if job.shots == Some(0) { 3 } else { 5 });
        }
    }
}

#[test]
fn released_model_presets_name_every_missing_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, interval) in [
        ("3b", 1),
        ("3b_instruct", 1),
        ("4b", 2),
        ("4b_instruct", 2),
        ("9b", 4),
    ] {
        let file = root.join(format!("experiments/openflamingo_{name}_eval.toml"));
        let composed = config::compose(&file, &Overrides::default()).unwrap();
        let m = &composed.experiment.model;
        assert_eq!(m.cross_attn_every_n_layers, interval, "{name}");
        assert!(m.checkpoint.ends_with("checkpoint.pt"), "{name}");
        assert_eq!(m.precision, runner::config::schema::Precision::Bf16);
        let ev = composed.experiment.eval.as_ref().unwrap();
        assert_eq!(ev.datasets.len(), 7);
        assert_eq!(ev.shots, vec![0, 4, 8, 16, 32]);
        assert_eq!(ev.num_beams, 3);
        // Without the files, loading lists each one with what it must hold.
        let msg = config::load(&file, &Overrides::default())
            .unwrap_err()
            .to_string();
        for expected in [
            "open_clip_config.json",
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
            "tokenizer.json",
            "checkpoint.pt",
            "dataset_coco.json",
            "captions_val2014.json",
            "v2_OpenEnded_mscoco_val2014_questions.json",
            "test_seen.jsonl",
        ] {
            assert!(msg.contains(expected), "{name}: {expected} not in\n{msg}");
        }
    }
}

/// Eval throughput (ignored; run by hand with
/// `cargo test -p runner --test eval_stage bench_ -- --ignored --nocapture`): COCO captioning
/// with 3 beams, 0-shot and 4-shot, on a small model (ViT width 128 x 4 layers on 64px / 8px
/// patches, OpenFlamingo-sized perceiver and cross-attention, MPT d=256 x 4 layers, x-attn every
/// layer), each measurement with a cold media cache. Writes the model, world and every prompt to
/// `RUNNER_BENCH_DIR` (default: a temp dir) for `scripts/bench/eval_throughput.py`, which runs
/// open_flamingo on the same files and prompts.
#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn bench_captioning_throughput() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::env::var("RUNNER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("runner-eval-bench"));
    std::fs::create_dir_all(&root).unwrap();
    let world = root.join("world");
    if !world.join("manifest.json").is_file() {
        write_world(&world, &SynthOptions::new(0, WorldSize::Tiny)).unwrap();
    }
    let (vision, lm, ckpt) = (
        root.join("vision"),
        root.join("lm"),
        root.join("ckpt.safetensors"),
    );
    write_vision(&vision, 128, 4, 64, 8);
    write_lm(&lm, 256, 4, &world_words(&world));
    write_checkpoint(&vision, &lm, &ckpt);
    let spec = runner::train::assemble::ModelSpec {
        vision_dir: vision.clone(),
        language_dir: lm.clone(),
        checkpoint: Some(ckpt.clone()),
        cross_attn_every_n_layers: 1,
        special_embeddings: model::SpecialEmbeddingMode::Trainable,
        ln_post_tokens: false,
        sizes: runner::config::schema::FlamingoSizes::OPEN_FLAMINGO,
        init_seed: model::flamingo::DEFAULT_INIT_SEED,
    };
    let m = runner::eval::model_cache::load(
        &format!("bench:{}", root.display()),
        || Ok(spec),
        &Device::Cpu,
    )
    .unwrap();
    let fx = Fixture { root: root.clone() };
    let paths: toml::Table = toml::from_str(&fx.paths()).unwrap();
    let coco: runner::config::schema::DatasetPaths =
        paths["eval"]["paths"]["coco"].clone().try_into().unwrap();
    std::mem::forget(fx); // keep the files for the Python side
    let data = stage::load_dataset("coco", &coco).unwrap();
    let n = std::env::var("RUNNER_BENCH_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut dump = serde_json::Map::new();
    for shots in [0usize, 4] {
        let spec = CellSpec {
            dataset: "coco".into(),
            shots,
            seed: 0,
            demos: runner::config::schema::Demos::Random,
            num_samples: Some(n),
            query_set_size: 2048,
            batch_size: 8,
            num_beams: 3,
            protocol: runner::config::schema::Protocol::Paper,
        };
        // Best of 3 (the build machine is shared and noisy), each with a cold media cache.
        let mut best: Option<(cell::CellStats, Vec<results::Prediction>)> = None;
        for _ in 0..3 {
            let media = runner::eval::media_cache::MediaCache::new(1 << 30);
            let inputs = cell::CellInputs {
                model: &m,
                data: &data,
                spec: &spec,
                rices_bank: None,
                media: &media,
            };
            let mut preds = Vec::new();
            let stats = cell::run(
                &inputs,
                &HashSet::new(),
                &mut |p| {
                    preds.extend_from_slice(p);
                    Ok(())
                },
                &mut |_, _| {},
            )
            .unwrap();
            if best.as_ref().is_none_or(|(b, _)| stats.seconds < b.seconds) {
                best = Some((stats, preds));
            }
        }
        let (stats, preds) = best.unwrap();
        println!(
            "runner (candle, CPU): coco {shots}-shot, 3 beams, batch 8: {} queries in {:.3} s = {:.2} queries/s; {} images encoded",
            stats.queries,
            stats.seconds,
            stats.queries as f64 / stats.seconds,
            stats.images_encoded
        );
        // The same prompts for the reference.
        let random = RandomDemos::new("coco", 0, data.train.len(), 2048);
        let rows: Vec<Value> = cell::queries(&data, &spec)
            .iter()
            .map(|q| {
                let idx = random.for_query(&q.id, effective_shots(shots)).unwrap();
                let demos: Vec<&EvalExample> = idx.iter().map(|&i| &data.train[i]).collect();
                let p = prompts::build(data.info.task, &demos, q, shots, spec.protocol).unwrap();
                let pred = preds.iter().find(|x| x.example_id == q.id).unwrap();
                json!({"id": q.id, "text": p.text, "images": p.images,
                    "raw": extra(pred)["raw"], "prediction": pred.prediction})
            })
            .collect();
        dump.insert(
            format!("{shots}"),
            json!({"rows": rows, "seconds": stats.seconds, "queries": stats.queries}),
        );
    }
    std::fs::write(
        root.join("bench_inputs.json"),
        serde_json::to_string_pretty(&dump).unwrap(),
    )
    .unwrap();
    println!("wrote {}", root.join("bench_inputs.json").display());
}
