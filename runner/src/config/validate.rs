//! Semantic validation of a typed experiment: ranges, grids, names, required and existing paths.
//!
//! Every problem found is reported (not just the first), each naming its key path; the caller
//! locates them in the files with [`super::compose::locate`].

use std::path::Path;

use super::compose::suggest;
use super::error::ConfigError;
use super::schema::{DATASETS, Experiment, required_paths};
use crate::data::shards::expand_braces;

/// Checks `exp`; returns every problem found.
pub fn validate(exp: &Experiment) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |key: &str, msg: String| errs.push(ConfigError::new(key, msg));

    if exp.name.trim().is_empty() {
        err("name", "must not be empty".into());
    }
    if !valid_device(&exp.device) {
        err(
            "device",
            format!(
                "unknown device `{}`: expected cpu, cuda or cuda:N",
                exp.device
            ),
        );
    }
    if exp.jobs == Some(0) {
        err("jobs", "must be at least 1".into());
    }

    // Backbones: a preset built by a pretrain stage, or a directory on disk.
    let m = &exp.model;
    let vision_preset = exp.pretrain.vision.as_ref().map(|v| v.name.as_str());
    if vision_preset != Some(m.vision.as_str()) {
        if !Path::new(&m.vision).is_dir() {
            err(
                "model.vision",
                format!(
                    "{}; expected {}",
                    missing_backbone(&m.vision, vision_preset, "[pretrain.vision]"),
                    VISION_FILES
                ),
            );
        } else if let Some(msg) = missing_vision_files(Path::new(&m.vision)) {
            err("model.vision", msg);
        }
    }
    let lm_preset = exp.pretrain.language.as_ref().map(|l| l.name.as_str());
    let lm_depth = if lm_preset == Some(m.language.as_str()) {
        exp.pretrain.language.as_ref().map(|l| l.layers)
    } else if Path::new(&m.language).is_dir() {
        if let Some(msg) = missing_language_files(Path::new(&m.language)) {
            err("model.language", msg);
        }
        match hf_num_layers(Path::new(&m.language)) {
            Ok(n) => Some(n),
            Err(msg) => {
                err("model.language", msg);
                None
            }
        }
    } else {
        err(
            "model.language",
            format!(
                "{}; expected {}",
                missing_backbone(&m.language, lm_preset, "[pretrain.language]"),
                LANGUAGE_FILES
            ),
        );
        None
    };
    let n = m.cross_attn_every_n_layers;
    if n < 1 {
        err(
            "model.cross_attn_every_n_layers",
            format!("must be at least 1, got {n}"),
        );
    } else if let Some(depth) = lm_depth.filter(|d| n > *d) {
        err(
            "model.cross_attn_every_n_layers",
            format!(
                "{n} is larger than the language model's {depth} layers: no layer would get cross-attention"
            ),
        );
    }
    for (k, v) in [
        ("perceiver_depth", m.perceiver_depth),
        ("perceiver_latents", m.perceiver_latents),
        ("perceiver_heads", m.perceiver_heads),
        ("perceiver_dim_head", m.perceiver_dim_head),
        ("cross_attn_heads", m.cross_attn_heads),
        ("cross_attn_dim_head", m.cross_attn_dim_head),
    ] {
        if let Some(x) = v.filter(|x| *x < 1) {
            err(
                &format!("model.{k}"),
                format!("must be at least 1, got {x}"),
            );
        }
    }
    if !m.checkpoint.is_empty() && !Path::new(&m.checkpoint).is_file() {
        err(
            "model.checkpoint",
            format!(
                "no such file: {}; expected an OpenFlamingo checkpoint: a released `checkpoint.pt` \
                 (e.g. from the HF repository openflamingo/OpenFlamingo-3B-vitl-mpt1b) or \
                 safetensors weights with OpenFlamingo key names",
                m.checkpoint
            ),
        );
    }

    let synth_dir = exp.data.synth.as_ref().map(|s| s.dir.clone());
    let produced = |p: &str| {
        synth_dir
            .as_deref()
            .is_some_and(|d| Path::new(p).starts_with(d))
    };

    if let Some(s) = &exp.data.synth
        && s.dir.trim().is_empty()
    {
        err("data.synth.dir", "must not be empty".into());
    }

    if let Some(v) = &exp.pretrain.vision {
        for (k, x) in [
            ("image_size", v.image_size),
            ("patch_size", v.patch_size),
            ("width", v.width),
            ("layers", v.layers),
            ("heads", v.heads),
            ("embed_dim", v.embed_dim),
            ("steps", v.steps),
            ("batch_size", v.batch_size),
        ] {
            if x < 1 {
                err(
                    &format!("pretrain.vision.{k}"),
                    format!("must be at least 1, got {x}"),
                );
            }
        }
        if v.patch_size > 0 && v.image_size % v.patch_size != 0 {
            err(
                "pretrain.vision.patch_size",
                format!(
                    "{} does not divide image_size {}",
                    v.patch_size, v.image_size
                ),
            );
        }
        if v.heads > 0 && v.width % v.heads != 0 {
            err(
                "pretrain.vision.heads",
                format!("{} does not divide width {}", v.heads, v.width),
            );
        }
        if v.lr <= 0.0 || !v.lr.is_finite() {
            err(
                "pretrain.vision.lr",
                format!("must be positive, got {}", v.lr),
            );
        }
    }
    if let Some(l) = &exp.pretrain.language {
        for (k, x) in [
            ("vocab_size", l.vocab_size),
            ("hidden_size", l.hidden_size),
            ("layers", l.layers),
            ("heads", l.heads),
            ("max_positions", l.max_positions),
            ("steps", l.steps),
            ("batch_size", l.batch_size),
            ("seq_len", l.seq_len),
            ("long_seq_len", l.long_seq_len.unwrap_or(1)),
            ("long_every", l.long_every.unwrap_or(1)),
        ] {
            if x < 1 {
                err(
                    &format!("pretrain.language.{k}"),
                    format!("must be at least 1, got {x}"),
                );
            }
        }
        for (k, x) in [
            ("seq_len", l.seq_len),
            ("long_seq_len", l.long_seq_len.unwrap_or(1)),
        ] {
            if x > l.max_positions {
                err(
                    &format!("pretrain.language.{k}"),
                    format!("{x} exceeds max_positions {}", l.max_positions),
                );
            }
        }
        if l.heads > 0 && l.hidden_size % l.heads != 0 {
            err(
                "pretrain.language.heads",
                format!("{} does not divide hidden_size {}", l.heads, l.hidden_size),
            );
        }
        if l.lr <= 0.0 || !l.lr.is_finite() {
            err(
                "pretrain.language.lr",
                format!("must be positive, got {}", l.lr),
            );
        }
    }

    if let Some(t) = &exp.train {
        if t.steps < 1 {
            err(
                "train.steps",
                format!("must be at least 1, got {}", t.steps),
            );
        }
        if t.lr <= 0.0 || !t.lr.is_finite() {
            err("train.lr", format!("must be positive, got {}", t.lr));
        }
        if t.warmup_steps < 0 {
            err(
                "train.warmup_steps",
                format!("must be >= 0, got {}", t.warmup_steps),
            );
        }
        if t.weight_decay < 0.0 || !t.weight_decay.is_finite() {
            err(
                "train.weight_decay",
                format!("must be >= 0, got {}", t.weight_decay),
            );
        }
        if t.grad_accum < 1 {
            err(
                "train.grad_accum",
                format!("must be at least 1, got {}", t.grad_accum),
            );
        }
        if t.max_grad_norm <= 0.0 || !t.max_grad_norm.is_finite() {
            err(
                "train.max_grad_norm",
                format!("must be positive, got {}", t.max_grad_norm),
            );
        }
        if t.checkpoint_every < 0 {
            err(
                "train.checkpoint_every",
                format!("must be >= 0, got {}", t.checkpoint_every),
            );
        }
        if t.keep_checkpoints < 1 {
            err(
                "train.keep_checkpoints",
                format!("must be at least 1, got {}", t.keep_checkpoints),
            );
        }
        if t.log_every < 1 {
            err(
                "train.log_every",
                format!("must be at least 1, got {}", t.log_every),
            );
        }
        if t.data.is_empty() {
            err(
                "train.data",
                "the data mix is empty: add at least one [[train.data]] source".into(),
            );
        }
        for (i, d) in t.data.iter().enumerate() {
            let k = |f: &str| format!("train.data.{i}.{f}");
            if d.batch_size < 1 {
                err(
                    &k("batch_size"),
                    format!("must be at least 1, got {}", d.batch_size),
                );
            }
            if d.loss_weight < 0.0 || !d.loss_weight.is_finite() {
                err(
                    &k("loss_weight"),
                    format!("must be >= 0, got {}", d.loss_weight),
                );
            }
            if let Some(mt) = d.max_tokens.filter(|&m| m < 2) {
                err(&k("max_tokens"), format!("must be at least 2, got {mt}"));
            }
            if !(-1.0..=1.0).contains(&d.sim_threshold) {
                err(
                    &k("sim_threshold"),
                    format!(
                        "must be a cosine similarity in [-1, 1], got {}",
                        d.sim_threshold
                    ),
                );
            }
            if d.max_images < 1 {
                err(
                    &k("max_images"),
                    format!("must be at least 1, got {}", d.max_images),
                );
            }
            if d.shuffle_buffer < 1 {
                err(
                    &k("shuffle_buffer"),
                    format!("must be at least 1, got {}", d.shuffle_buffer),
                );
            }
            match expand_braces(&d.shards) {
                Err(msg) => err(&k("shards"), msg),
                Ok(files) if files.is_empty() => err(&k("shards"), "names no shard".into()),
                Ok(files) => {
                    let missing: Vec<_> = files
                        .iter()
                        .filter(|f| !produced(f) && !Path::new(f).is_file())
                        .collect();
                    if !missing.is_empty() {
                        err(
                            &k("shards"),
                            format!(
                                "{} of {} shard files do not exist, e.g. {}",
                                missing.len(),
                                files.len(),
                                missing[0]
                            ),
                        );
                    }
                }
            }
        }
    }

    if let Some(e) = &exp.eval {
        if e.datasets.is_empty() {
            err(
                "eval.datasets",
                "the grid is empty: name at least one dataset".into(),
            );
        }
        for (i, d) in e.datasets.iter().enumerate() {
            if !DATASETS.contains(&d.as_str()) {
                let hint = suggest(d, &DATASETS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!("; expected one of: {}", DATASETS.join(", ")));
                err(
                    &format!("eval.datasets.{i}"),
                    format!("unknown dataset `{d}`{hint}"),
                );
            } else if e.datasets[..i].contains(d) {
                err(
                    &format!("eval.datasets.{i}"),
                    format!("dataset `{d}` is listed twice"),
                );
            }
        }
        if e.shots.is_empty() {
            err(
                "eval.shots",
                "the grid is empty: give at least one shot count".into(),
            );
        }
        for (i, s) in e.shots.iter().enumerate() {
            if *s < 0 {
                err(
                    &format!("eval.shots.{i}"),
                    format!("shots must be >= 0, got {s}"),
                );
            } else if e.shots[..i].contains(s) {
                err(
                    &format!("eval.shots.{i}"),
                    format!("{s} shots listed twice"),
                );
            }
        }
        if e.seeds.is_empty() {
            err(
                "eval.seeds",
                "the grid is empty: give at least one seed".into(),
            );
        }
        for (i, s) in e.seeds.iter().enumerate() {
            if e.seeds[..i].contains(s) {
                err(&format!("eval.seeds.{i}"), format!("seed {s} listed twice"));
            }
        }
        if let Some(n) = e.num_samples.filter(|n| *n < 1) {
            err(
                "eval.num_samples",
                format!("must be at least 1 (omit it for the full split), got {n}"),
            );
        }
        if e.query_set_size < 1 {
            err(
                "eval.query_set_size",
                format!("must be at least 1, got {}", e.query_set_size),
            );
        }
        if e.batch_size < 1 {
            err(
                "eval.batch_size",
                format!("must be at least 1, got {}", e.batch_size),
            );
        }
        if e.num_beams < 1 {
            err(
                "eval.num_beams",
                format!("must be at least 1, got {}", e.num_beams),
            );
        }
        for name in e.paths.keys() {
            if !DATASETS.contains(&name.as_str()) {
                let hint = suggest(name, &DATASETS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                err(
                    &format!("eval.paths.{name}"),
                    format!("unknown dataset `{name}`{hint}"),
                );
            }
        }
        for d in e.datasets.iter().filter(|d| DATASETS.contains(&d.as_str())) {
            let paths = e.paths.get(d);
            for key in required_paths(d) {
                let full = format!("eval.paths.{d}.{key}");
                match paths.and_then(|p| p.get(key)) {
                    None => err(
                        &full,
                        format!("missing: dataset `{d}` needs its {key} path"),
                    ),
                    Some(p) if p.trim().is_empty() => err(&full, "must not be empty".into()),
                    Some(p) if !produced(p) && !Path::new(p).exists() => err(
                        &full,
                        format!(
                            "no such file or directory: {p}; expected {}",
                            expected_dataset_file(d, key)
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    for (key, values) in &exp.sweep.axes {
        if values.is_empty() {
            err(
                &format!("sweep.{key}"),
                "a sweep axis needs at least one value".into(),
            );
        }
        if key == "name" || key.starts_with("sweep") {
            err(&format!("sweep.{key}"), "this key cannot be swept".into());
        }
    }
    for (i, bundle) in exp.sweep.tied.iter().enumerate() {
        let lens: Vec<usize> = bundle.values().map(Vec::len).collect();
        if bundle.is_empty() || lens[0] == 0 {
            err(
                &format!("sweep.tied.{i}"),
                "a tied bundle needs keys with at least one value".into(),
            );
        } else if lens.iter().any(|l| *l != lens[0]) {
            err(
                &format!("sweep.tied.{i}"),
                format!("the lists of a tied bundle must have equal lengths, got {lens:?}"),
            );
        }
    }
    errs
}

fn valid_device(d: &str) -> bool {
    d == "cpu"
        || d == "cuda"
        || d.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// What a vision encoder directory holds.
pub const VISION_FILES: &str = "a CLIP vision encoder directory: open_clip layout \
    (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin; for \
    the released models open_clip's ViT-L-14 with the `openai` weights) or HF CLIP layout \
    (config.json + model.safetensors)";

/// What a language model directory holds.
pub const LANGUAGE_FILES: &str = "a HF language model directory: config.json, tokenizer.json \
    (for the MPT and RedPajama models, the EleutherAI/gpt-neox-20b tokenizer.json), and weights \
    (model.safetensors, model.safetensors.index.json + shards, pytorch_model.bin or \
    pytorch_model.bin.index.json + shards)";

/// The problem with an existing vision directory that lacks its files.
fn missing_vision_files(dir: &Path) -> Option<String> {
    let has = |f: &str| dir.join(f).is_file();
    let open_clip = has("open_clip_config.json")
        && (has("open_clip_model.safetensors") || has("open_clip_pytorch_model.bin"));
    let hf = has("config.json") && has("model.safetensors");
    (!open_clip && !hf).then(|| {
        format!(
            "{} has no vision encoder files; expected {VISION_FILES}",
            dir.display()
        )
    })
}

/// The problem with an existing language model directory that lacks its files.
fn missing_language_files(dir: &Path) -> Option<String> {
    let has = |f: &str| dir.join(f).is_file();
    let weights = [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ]
    .iter()
    .any(|f| has(f));
    let missing: Vec<&str> = [
        ("config.json", has("config.json")),
        ("tokenizer.json", has("tokenizer.json")),
        ("weights", weights),
    ]
    .iter()
    .filter(|(_, ok)| !ok)
    .map(|(f, _)| *f)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} lacks {}; expected {LANGUAGE_FILES}",
            dir.display(),
            missing.join(", ")
        )
    })
}

/// What an `[eval.paths.<dataset>]` key names, with the reference's file names.
pub fn expected_dataset_file(dataset: &str, key: &str) -> String {
    let s = match (dataset, key) {
        ("coco", "images") => "the COCO image root holding train2014/ and val2014/",
        ("coco", "karpathy") => "the Karpathy split file dataset_coco.json",
        ("coco", "annotations") => "the COCO captions file captions_val2014.json",
        ("flickr30k", "images") => "the Flickr30K image directory flickr30k-images/",
        ("flickr30k", "karpathy") => "the Karpathy split file dataset_flickr30k.json",
        ("flickr30k", "annotations") => {
            "the COCO-style captions file dataset_flickr30k_coco_style.json"
        }
        ("vqav2" | "okvqa", "train_images") => "the COCO train2014/ image directory",
        ("vqav2" | "okvqa", "test_images") => "the COCO val2014/ image directory",
        ("vqav2", "train_questions") => "v2_OpenEnded_mscoco_train2014_questions.json",
        ("vqav2", "train_annotations") => "v2_mscoco_train2014_annotations.json",
        ("vqav2", "test_questions") => "v2_OpenEnded_mscoco_val2014_questions.json",
        ("vqav2", "test_annotations") => "v2_mscoco_val2014_annotations.json",
        ("okvqa", "train_questions") => "OpenEnded_mscoco_train2014_questions.json",
        ("okvqa", "train_annotations") => "mscoco_train2014_annotations.json",
        ("okvqa", "test_questions") => "OpenEnded_mscoco_val2014_questions.json",
        ("okvqa", "test_annotations") => "mscoco_val2014_annotations.json",
        ("textvqa", "train_images" | "test_images") => "the TextVQA train_images/ directory",
        ("textvqa", "train_questions") => "train_questions_vqa_format.json",
        ("textvqa", "train_annotations") => "train_annotations_vqa_format.json",
        ("textvqa", "test_questions") => "val_questions_vqa_format.json",
        ("textvqa", "test_annotations") => "val_annotations_vqa_format.json",
        ("vizwiz", "train_images") => "the VizWiz train/ image directory",
        ("vizwiz", "test_images") => "the VizWiz val/ image directory",
        ("vizwiz", "train_questions") => "train_questions_vqa_format.json",
        ("vizwiz", "train_annotations") => "train_annotations_vqa_format.json",
        ("vizwiz", "test_questions") => "val_questions_vqa_format.json",
        ("vizwiz", "test_annotations") => "val_annotations_vqa_format.json",
        ("hatefulmemes", "images") => "the HatefulMemes img/ directory",
        ("hatefulmemes", "train_annotations") => "train.jsonl",
        ("hatefulmemes", "test_annotations") => "test_seen.jsonl",
        _ => return format!("the {dataset} {key} file"),
    };
    if s.starts_with("the ") {
        s.to_string()
    } else {
        format!("{s} (HF dataset openflamingo/eval_benchmark)")
    }
}

fn missing_backbone(value: &str, preset: Option<&str>, section: &str) -> String {
    match preset {
        Some(p) => format!(
            "`{value}` is neither the preset `{p}` defined by {section} nor an existing directory"
        ),
        None => format!(
            "`{value}` is not an existing directory, and no {section} section defines a preset of that name"
        ),
    }
}

/// Depth of a HF decoder from its `config.json` (`num_hidden_layers`, `n_layers` or `num_layers`).
pub fn hf_num_layers(dir: &Path) -> Result<i64, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    ["num_hidden_layers", "n_layers", "num_layers"]
        .iter()
        .find_map(|k| v.get(k).and_then(serde_json::Value::as_i64))
        .ok_or_else(|| format!("{} has no num_hidden_layers / n_layers", path.display()))
}
