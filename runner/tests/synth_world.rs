//! The synthetic world on disk: determinism, real formats, counts, joins, shards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use runner::data::synth::{SynthOptions, WorldSize, WorldSummary, write_world};
use serde_json::Value;

/// A fresh scratch directory for one test (removed first if left over).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runner-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny world with seed 7 in its own scratch directory, removed when dropped.
struct World {
    dir: PathBuf,
    summary: WorldSummary,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tiny_with_seed(name: &str, seed: u64) -> World {
    let dir = scratch(name);
    let summary = write_world(&dir, &SynthOptions::new(seed, WorldSize::Tiny)).unwrap();
    World { dir, summary }
}

fn tiny(name: &str) -> World {
    tiny_with_seed(name, 7)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode_image(path: &Path) -> image::DynamicImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_under(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn count(summary: &WorldSummary, key: &str) -> usize {
    *summary
        .counts
        .get(key)
        .unwrap_or_else(|| panic!("no count {key}"))
}

fn path(summary: &WorldSummary, key: &str) -> String {
    summary
        .paths
        .get(key)
        .unwrap_or_else(|| panic!("no path {key}"))
        .clone()
}

/// Members of a tar file in order, with their bytes.
fn tar_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// Expands `prefix/{000..NNN}.tar` into shard paths.
fn expand_shards(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let (prefix, rest) = pattern.split_once("{000..").expect("brace pattern");
    let (last, suffix) = rest.split_once('}').expect("closing brace");
    let last: usize = last.parse().unwrap();
    (0..=last)
        .map(|i| root.join(format!("{prefix}{i:03}{suffix}")))
        .collect()
}

#[test]
fn same_seed_is_byte_identical_and_another_seed_differs() {
    let a = tiny_with_seed("det-a", 11);
    let b = tiny_with_seed("det-b", 11);
    let c = tiny_with_seed("det-c", 12);
    let (fa, fb, fc) = (
        files_under(&a.dir),
        files_under(&b.dir),
        files_under(&c.dir),
    );
    assert!(fa.len() > 100);
    assert!(
        fa.keys().eq(fb.keys()),
        "the two runs wrote different file names"
    );
    for (rel, bytes) in &fa {
        assert!(
            fb[rel] == *bytes,
            "{} differs between two runs",
            rel.display()
        );
    }
    // Another seed: as many files (TextVQA image ids are random, so names may differ), and
    // most files that share a name have different content.
    assert_eq!(fa.len(), fc.len());
    let (mut shared, mut differing) = (0, 0);
    for (rel, bytes) in &fa {
        if let Some(other) = fc.get(rel) {
            shared += 1;
            differing += usize::from(other != bytes);
        }
    }
    assert!(
        differing > shared * 3 / 4,
        "only {differing} of {shared} files differ"
    );
}

#[test]
fn manifest_matches_summary() {
    let world = tiny("t0");
    let (dir, summary) = (&world.dir, &world.summary);
    let manifest = json(&dir.join("manifest.json"));
    assert_eq!(manifest, serde_json::to_value(summary).unwrap());
    assert_eq!(manifest["format_version"], 5);
    assert_eq!(manifest["seed"], 7);
    assert_eq!(manifest["size"], "tiny");
    let counts = WorldSize::Tiny.counts();
    assert_eq!(count(summary, "coco.train_images"), counts.coco_train);
    assert_eq!(
        count(summary, "hatefulmemes.test_memes"),
        counts.hateful_test
    );
}

#[test]
fn coco_karpathy_and_annotations() {
    let world = tiny("t1");
    let (dir, summary) = (&world.dir, &world.summary);
    let counts = WorldSize::Tiny.counts();
    let karpathy = json(&dir.join(path(summary, "coco.karpathy_json")));
    let images = karpathy["images"].as_array().unwrap();
    let mut splits: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for im in images {
        let split = im["split"].as_str().unwrap();
        *splits.entry(split).or_default() += 1;
        let filepath = im["filepath"].as_str().unwrap();
        let filename = im["filename"].as_str().unwrap();
        let cocoid = im["cocoid"].as_u64().unwrap();
        assert!(ids.insert(cocoid), "duplicate cocoid {cocoid}");
        assert_eq!(filename, format!("COCO_{filepath}_{cocoid:012}.jpg"));
        assert_eq!(filepath == "train2014", split == "train");
        let sentences = im["sentences"].as_array().unwrap();
        assert_eq!(sentences.len(), 5);
        for s in sentences {
            assert!(!s["raw"].as_str().unwrap().trim().is_empty());
            assert!(!s["tokens"].as_array().unwrap().is_empty());
        }
        let img = decode_image(&dir.join("coco").join(filepath).join(filename));
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    assert_eq!(splits["train"], counts.coco_train);
    assert_eq!(splits["test"], counts.coco_test);
    assert_eq!(splits["val"], counts.coco_val);
    assert_eq!(splits["restval"], counts.coco_restval);

    // COCO-format ground truth covers every val2014 image, five captions each.
    let gt = json(&dir.join(path(summary, "coco.annotations_json")));
    let n_val = counts.coco_test + counts.coco_val + counts.coco_restval;
    assert_eq!(gt["images"].as_array().unwrap().len(), n_val);
    let anns = gt["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 5 * n_val);
    let test_ids: BTreeSet<u64> = images
        .iter()
        .filter(|im| im["split"] == "test")
        .map(|im| im["cocoid"].as_u64().unwrap())
        .collect();
    let gt_ids: BTreeSet<u64> = anns
        .iter()
        .map(|a| a["image_id"].as_u64().unwrap())
        .collect();
    assert!(test_ids.is_subset(&gt_ids));
}

#[test]
fn flickr_karpathy_and_string_ids() {
    let world = tiny("t2");
    let (dir, summary) = (&world.dir, &world.summary);
    let counts = WorldSize::Tiny.counts();
    let karpathy = json(&dir.join(path(summary, "flickr30k.karpathy_json")));
    let images = karpathy["images"].as_array().unwrap();
    assert_eq!(
        images.len(),
        counts.flickr_train + counts.flickr_val + counts.flickr_test
    );
    let image_dir = dir.join(path(summary, "flickr30k.images"));
    let gt = json(&dir.join(path(summary, "flickr30k.annotations_json")));
    let gt_ids: BTreeSet<&str> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["image_id"].as_str().unwrap())
        .collect();
    let mut tests = 0;
    for im in images {
        assert!(im.get("cocoid").is_none() && im.get("filepath").is_none());
        let filename = im["filename"].as_str().unwrap();
        decode_image(&image_dir.join(filename));
        let stem = filename.split('.').next().unwrap();
        assert!(gt_ids.contains(stem), "{stem} has no reference captions");
        assert_eq!(im["sentences"].as_array().unwrap().len(), 5);
        tests += usize::from(im["split"] == "test");
    }
    assert_eq!(tests, counts.flickr_test);
}

/// How each VQA dataset names the image of a question.
fn vqa_image(dir: &Path, dataset: &str, image_dir: &str, image_id: &Value) -> PathBuf {
    let base = dir.join(image_dir);
    match dataset {
        "vqav2" | "okvqa" => {
            let split = Path::new(image_dir).file_name().unwrap().to_str().unwrap();
            base.join(format!(
                "COCO_{split}_{:012}.jpg",
                image_id.as_u64().unwrap()
            ))
        }
        "vizwiz" => base.join(image_id.as_str().unwrap()),
        _ => base.join(format!("{}.jpg", image_id.as_str().unwrap())),
    }
}

#[test]
fn vqa_files_join_on_question_id_with_ten_answers() {
    let world = tiny("t3");
    let (dir, summary) = (&world.dir, &world.summary);
    for dataset in ["vqav2", "okvqa", "textvqa", "vizwiz"] {
        for split in ["train", "test"] {
            let qfile = path(summary, &format!("{dataset}.{split}_questions"));
            let afile = path(summary, &format!("{dataset}.{split}_annotations"));
            let image_dir = path(summary, &format!("{dataset}.{split}_images"));
            let questions = json(&dir.join(&qfile))["questions"]
                .as_array()
                .unwrap()
                .clone();
            let annotations = json(&dir.join(&afile))["annotations"]
                .as_array()
                .unwrap()
                .clone();
            assert_eq!(
                questions.len(),
                count(summary, &format!("{dataset}.{split}_questions")),
                "{qfile}"
            );
            assert_eq!(questions.len(), annotations.len(), "{qfile} vs {afile}");
            let aligned = questions
                .iter()
                .zip(&annotations)
                .all(|(q, a)| q["question_id"] == a["question_id"]);
            assert!(!aligned, "{qfile} and {afile} are index-aligned");
            let by_id: BTreeMap<u64, &Value> = annotations
                .iter()
                .map(|a| (a["question_id"].as_u64().unwrap(), a))
                .collect();
            assert_eq!(
                by_id.len(),
                annotations.len(),
                "{afile}: duplicate question ids"
            );
            for q in &questions {
                let qid = q["question_id"].as_u64().unwrap();
                let a = by_id
                    .get(&qid)
                    .unwrap_or_else(|| panic!("{afile}: no annotation for question {qid}"));
                assert_eq!(a["image_id"], q["image_id"]);
                let answers = a["answers"].as_array().unwrap();
                assert_eq!(answers.len(), 10, "{afile} question {qid}");
                let majority = a["multiple_choice_answer"].as_str().unwrap();
                let agree = answers.iter().filter(|x| x["answer"] == majority).count();
                assert!(agree >= 7, "{afile} question {qid}: {agree} agree");
                assert!(!q["question"].as_str().unwrap().is_empty());
                decode_image(&vqa_image(dir, dataset, &image_dir, &q["image_id"]));
            }
        }
    }
}

#[test]
fn vqa_train_and_test_images_are_disjoint() {
    let world = tiny("t4");
    let (dir, summary) = (&world.dir, &world.summary);
    for dataset in ["vqav2", "okvqa", "textvqa", "vizwiz"] {
        let ids = |split: &str| -> BTreeSet<String> {
            let qfile = path(summary, &format!("{dataset}.{split}_questions"));
            json(&dir.join(qfile))["questions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["image_id"].to_string())
                .collect()
        };
        assert!(ids("train").is_disjoint(&ids("test")), "{dataset}");
    }
}

#[test]
fn vizwiz_has_unanswerable_questions() {
    let world = tiny("t5");
    let (dir, summary) = (&world.dir, &world.summary);
    let afile = path(summary, "vizwiz.train_annotations");
    let annotations = json(&dir.join(afile))["annotations"]
        .as_array()
        .unwrap()
        .clone();
    let unanswerable = annotations
        .iter()
        .filter(|a| a["multiple_choice_answer"] == "unanswerable")
        .count();
    assert!(unanswerable > 0 && unanswerable < annotations.len());
}

#[test]
fn hateful_memes_are_balanced_jsonl() {
    let world = tiny("t6");
    let (dir, summary) = (&world.dir, &world.summary);
    for (split, n) in [("train", 16), ("test", 8)] {
        let file = dir.join(path(summary, &format!("hatefulmemes.{split}_annotations")));
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), n);
        let ones = lines.iter().filter(|l| l["label"] == 1).count();
        assert_eq!(ones * 2, n, "{}", file.display());
        for l in &lines {
            let id = l["id"].as_u64().unwrap();
            let img = l["img"].as_str().unwrap();
            assert_eq!(img, format!("img/{id:05}.png"));
            assert!(!l["text"].as_str().unwrap().is_empty());
            let name = img.rsplit('/').next().unwrap();
            decode_image(&dir.join(path(summary, "hatefulmemes.images")).join(name));
        }
    }
}

#[test]
fn laion_shards_hold_png_and_txt_pairs() {
    let world = tiny("t7");
    let (dir, summary) = (&world.dir, &world.summary);
    let shards = expand_shards(dir, &path(summary, "laion.shards"));
    assert_eq!(shards.len(), count(summary, "laion.shards"));
    let mut n = 0;
    for shard in shards {
        let members = tar_members(&shard);
        assert_eq!(members.len() % 2, 0);
        for pair in members.chunks(2) {
            let key = format!("{n:09}");
            assert_eq!(pair[0].0, format!("{key}.png"));
            assert_eq!(pair[1].0, format!("{key}.txt"));
            image::load_from_memory(&pair[0].1).unwrap();
            assert!(
                !String::from_utf8(pair[1].1.clone())
                    .unwrap()
                    .trim()
                    .is_empty()
            );
            n += 1;
        }
    }
    assert_eq!(n, count(summary, "laion.samples"));
}

#[test]
fn mmc4_documents_pass_the_reference_filters() {
    let world = tiny("t8");
    let (dir, summary) = (&world.dir, &world.summary);
    let mut docs = 0;
    let mut images = 0;
    for shard in expand_shards(dir, &path(summary, "mmc4.shards")) {
        for (name, data) in tar_members(&shard) {
            assert_eq!(name, format!("{docs:09}.json"));
            let doc: Value = serde_json::from_slice(&data).unwrap();
            assert!(doc.get("is_gpt").is_none());
            let sentences = doc["text_list"].as_array().unwrap().len();
            let info = doc["image_info"].as_array().unwrap();
            let sim = doc["similarity_matrix"].as_array().unwrap();
            assert_eq!(sim.len(), info.len(), "one similarity row per image");
            let mut best_above_threshold = false;
            for (row, image) in sim.iter().zip(info) {
                let row: Vec<f64> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert_eq!(row.len(), sentences);
                let (argmax, max) = row
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f64::MIN), |b, (j, s)| if s > b.1 { (j, s) } else { b });
                assert_eq!(
                    image["matched_text_index"].as_u64().unwrap() as usize,
                    argmax
                );
                assert_eq!(image["matched_sim"].as_f64().unwrap(), max);
                best_above_threshold |= max >= 0.24;
                let raw = BASE64
                    .decode(image["image_base64"].as_str().unwrap())
                    .unwrap();
                // The reference keeps images with len(bytes) // 1000 > 10.
                assert!(raw.len() / 1000 > 10, "image of {} bytes", raw.len());
                image::load_from_memory(&raw).unwrap();
                images += 1;
            }
            assert!(best_above_threshold || info.len() == 1);
            docs += 1;
        }
    }
    assert_eq!(docs, count(summary, "mmc4.documents"));
    assert_eq!(images, count(summary, "mmc4.images"));
}

#[test]
fn chatgpt_sequences_have_matching_placeholders() {
    let world = tiny("t9");
    let (dir, summary) = (&world.dir, &world.summary);
    let mut docs = 0;
    for shard in expand_shards(dir, &path(summary, "chatgpt.shards")) {
        for (name, data) in tar_members(&shard) {
            assert!(name.ends_with(".json"));
            let doc: Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(doc["is_gpt"], true);
            let example = doc["example"].as_str().unwrap();
            let map = doc["image_map"].as_object().unwrap();
            assert!(map.len() >= 2);
            for k in 1..=map.len() {
                let key = format!("_!_IMAGE{k}_!_");
                assert!(example.contains(&key), "{key} missing from the example");
                let b64 = map[&key]["base64_image"].as_str().unwrap();
                image::load_from_memory(&BASE64.decode(b64).unwrap()).unwrap();
            }
            docs += 1;
        }
    }
    assert_eq!(docs, count(summary, "chatgpt.sequences"));
}

#[test]
fn corpus_is_plain_text_lines() {
    let world = tiny("t10");
    let (dir, summary) = (&world.dir, &world.summary);
    let text = std::fs::read_to_string(dir.join(path(summary, "text.corpus"))).unwrap();
    assert_eq!(text.lines().count(), count(summary, "text.lines"));
    assert!(text.lines().all(|l| !l.trim().is_empty()));
    // The evaluation prompt formats, which the frozen LM must know before Flamingo training.
    assert!(text.contains("Question:"));
    assert!(text.contains(" Short answer:"));
    assert!(text.lines().any(|l| l.starts_with("Output:")));
    assert!(text.contains("Is it hateful? Answer:"));
    // Grouped by format: all question lines in one run, in shuffled order.
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("Question:"))
        .unwrap();
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("Question:"))
        .unwrap();
    assert!(
        lines[first..=last]
            .iter()
            .all(|l| l.starts_with("Question:"))
    );
}

#[test]
fn cli_writes_a_world_and_rejects_unknown_sizes() {
    let dir = scratch("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["data", "synth"])
        .arg(&dir)
        .args(["--seed", "3", "--size", "tiny"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = json(&dir.join("manifest.json"));
    assert_eq!(manifest["seed"], 3);
    let bad = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["data", "synth"])
        .arg(&dir)
        .args(["--size", "huge"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("huge"));
    let _ = std::fs::remove_dir_all(dir);
}
