//! Evaluation data on small generated datasets in each real format: readers (including
//! re-ordered VQA files and bad input), prompts byte for byte, demonstration sampling, RICES
//! ordering, the feature cache and `runner data check`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use runner::config::schema::{DatasetPaths, Protocol};
use runner::eval::datasets::{self, DatasetError, EvalExample, JsonId, Task, karpathy, vqa};
use runner::eval::demos::{self, RandomDemos, effective_shots};
use runner::eval::features::{self, CacheKey, FeatureBank, FeatureError};
use runner::eval::prompts::{self, Prompt};
use runner::eval::protocol;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A tiny world in the real formats.

/// Writes a 2x2 PNG (whatever the extension says).
fn png(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(2, 2, image::Rgb([shade, 0, 255 - shade]))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn karpathy_entry(
    filepath: Option<&str>,
    filename: &str,
    split: &str,
    cocoid: u64,
    raw: &[&str],
) -> Value {
    let mut e = json!({
        "filename": filename,
        "split": split,
        "imgid": cocoid,
        "sentences": raw.iter().map(|r| json!({"raw": r, "tokens": ["x"]})).collect::<Vec<_>>(),
    });
    if let Some(fp) = filepath {
        e["filepath"] = json!(fp);
        e["cocoid"] = json!(cocoid);
    }
    e
}

/// Every dataset's files under `root`; returns the `[eval.paths.*]` tables.
fn write_world(root: &Path) -> Vec<(&'static str, DatasetPaths)> {
    let p = |rel: &str| root.join(rel).display().to_string();
    let mut out = Vec::new();

    // COCO: Karpathy file with train, restval, val and test entries.
    let coco_entries = vec![
        karpathy_entry(
            Some("train2014"),
            "COCO_train2014_000000000001.jpg",
            "train",
            1,
            &[" A red square. ", "x"],
        ),
        karpathy_entry(
            Some("train2014"),
            "COCO_train2014_000000000002.jpg",
            "train",
            2,
            &["A blue circle."],
        ),
        karpathy_entry(
            Some("val2014"),
            "COCO_val2014_000000000003.jpg",
            "train",
            3,
            &["Two dots."],
        ),
        karpathy_entry(
            Some("val2014"),
            "COCO_val2014_000000000004.jpg",
            "restval",
            4,
            &["restval"],
        ),
        karpathy_entry(
            Some("val2014"),
            "COCO_val2014_000000000005.jpg",
            "val",
            5,
            &["val"],
        ),
        karpathy_entry(
            Some("val2014"),
            "COCO_val2014_000000000006.jpg",
            "test",
            6,
            &["A green line."],
        ),
        karpathy_entry(
            Some("val2014"),
            "COCO_val2014_000000000007.jpg",
            "test",
            7,
            &["A star."],
        ),
    ];
    for e in &coco_entries {
        let f = format!(
            "coco/{}/{}",
            e["filepath"].as_str().unwrap(),
            e["filename"].as_str().unwrap()
        );
        png(&root.join(f), e["cocoid"].as_u64().unwrap() as u8 * 10);
    }
    write_json(
        &root.join("coco/dataset_coco.json"),
        &json!({"images": coco_entries, "dataset": "coco"}),
    );
    write_json(
        &root.join("coco/captions_val2014.json"),
        &json!({"images": [{"id": 6}, {"id": 7}], "annotations": [
            {"image_id": 6, "id": 1, "caption": "A green line."},
            {"image_id": 7, "id": 2, "caption": "A star."}]}),
    );
    out.push((
        "coco",
        DatasetPaths {
            images: Some(p("coco")),
            karpathy: Some(p("coco/dataset_coco.json")),
            annotations: Some(p("coco/captions_val2014.json")),
            ..Default::default()
        },
    ));

    // Flickr30K: no filepath, id = file stem.
    let flickr_entries = vec![
        karpathy_entry(None, "1000.jpg", "train", 0, &["A dog runs."]),
        karpathy_entry(None, "1001.jpg", "train", 1, &["A cat sits."]),
        karpathy_entry(None, "1002.jpg", "val", 2, &["val"]),
        karpathy_entry(None, "1003.jpg", "test", 3, &["A bird."]),
    ];
    for (i, e) in flickr_entries.iter().enumerate() {
        png(
            &root
                .join("flickr30k/images")
                .join(e["filename"].as_str().unwrap()),
            i as u8,
        );
    }
    write_json(
        &root.join("flickr30k/dataset_flickr30k.json"),
        &json!({"images": flickr_entries}),
    );
    write_json(
        &root.join("flickr30k/coco_style.json"),
        &json!({"images": [{"id": "1003"}], "annotations": [{"image_id": "1003", "id": 1, "caption": "A bird."}]}),
    );
    out.push((
        "flickr30k",
        DatasetPaths {
            images: Some(p("flickr30k/images")),
            karpathy: Some(p("flickr30k/dataset_flickr30k.json")),
            annotations: Some(p("flickr30k/coco_style.json")),
            ..Default::default()
        },
    ));

    // VQA family: annotations written in reverse order (not index-aligned with the questions).
    for (name, train_dir, test_dir) in [
        ("vqav2", "train2014", "val2014"),
        ("okvqa", "train2014", "val2014"),
        ("textvqa", "train_images", "train_images"),
        ("vizwiz", "train", "val"),
    ] {
        let base = name.to_string();
        for (split, dir, ids) in [
            ("train", train_dir, [11u64, 12, 13]),
            ("test", test_dir, [21, 22, 23]),
        ] {
            let mut qs = Vec::new();
            let mut anns = Vec::new();
            for id in ids.iter() {
                let (image_id, file) = match name {
                    "textvqa" => (json!(format!("tv{id}")), format!("tv{id}.jpg")),
                    "vizwiz" => (
                        json!(format!("VizWiz_{split}_{id:08}.jpg")),
                        format!("VizWiz_{split}_{id:08}.jpg"),
                    ),
                    _ => (json!(id), format!("COCO_{dir}_{id:012}.jpg")),
                };
                png(&root.join(&base).join(dir).join(file), *id as u8);
                qs.push(json!({"image_id": image_id, "question": format!("What is {id}?"), "question_id": id * 10}));
                anns.push(json!({"question_id": id * 10, "image_id": image_id, "answers": (0..3).map(|a| json!({"answer": format!("ans{id}-{a}"), "answer_id": a})).collect::<Vec<_>>(), "multiple_choice_answer": format!("ans{id}-0")}));
            }
            anns.reverse();
            write_json(
                &root.join(&base).join(format!("{split}_questions.json")),
                &json!({"questions": qs}),
            );
            write_json(
                &root.join(&base).join(format!("{split}_annotations.json")),
                &json!({"annotations": anns}),
            );
        }
        out.push((
            name,
            DatasetPaths {
                train_images: Some(p(&format!("{base}/{train_dir}"))),
                test_images: Some(p(&format!("{base}/{test_dir}"))),
                train_questions: Some(p(&format!("{base}/train_questions.json"))),
                train_annotations: Some(p(&format!("{base}/train_annotations.json"))),
                test_questions: Some(p(&format!("{base}/test_questions.json"))),
                test_annotations: Some(p(&format!("{base}/test_annotations.json"))),
                ..Default::default()
            },
        ));
    }

    // HatefulMemes JSONL.
    let mut train = String::new();
    for (id, label, text) in [
        (101, 0, "cats are cute"),
        (102, 1, "hateful words"),
        (103, 0, "sunny day"),
    ] {
        png(&root.join(format!("hatefulmemes/img/{id}.png")), id as u8);
        train.push_str(&format!(
            "{}\n",
            json!({"id": id, "img": format!("img/{id}.png"), "label": label, "text": text})
        ));
    }
    let mut test = String::new();
    for (id, label, text) in [(201, 1, "a meme"), (202, 0, "another meme")] {
        png(&root.join(format!("hatefulmemes/img/{id}.png")), id as u8);
        test.push_str(&format!(
            "{}\n",
            json!({"id": id, "img": format!("img/{id}.png"), "label": label, "text": text})
        ));
    }
    std::fs::write(root.join("hatefulmemes/train.jsonl"), train).unwrap();
    std::fs::write(root.join("hatefulmemes/test_seen.jsonl"), test).unwrap();
    out.push((
        "hatefulmemes",
        DatasetPaths {
            images: Some(p("hatefulmemes/img")),
            train_annotations: Some(p("hatefulmemes/train.jsonl")),
            test_annotations: Some(p("hatefulmemes/test_seen.jsonl")),
            ..Default::default()
        },
    ));
    out
}

fn paths_of<'a>(world: &'a [(&'static str, DatasetPaths)], name: &str) -> &'a DatasetPaths {
    &world.iter().find(|(n, _)| *n == name).unwrap().1
}

// ---------------------------------------------------------------------------------------------
// Readers.

#[test]
fn coco_karpathy_uses_train_and_test_splits_and_filepath_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(dir.path());
    let ds = datasets::load("coco", paths_of(&world, "coco")).unwrap();
    let ids = |xs: &[EvalExample]| xs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&ds.train),
        ["1", "2", "3"],
        "restval and val are not demonstrations"
    );
    assert_eq!(ids(&ds.test), ["6", "7"]);
    assert_eq!(
        ds.test[0].json_id.to_json(),
        json!(6),
        "COCO ids stay numbers"
    );
    assert_eq!(
        ds.train[2].image,
        dir.path()
            .join("coco/val2014/COCO_val2014_000000000003.jpg")
    );
    assert_eq!(
        ds.train[0].demo_target(Task::Captioning),
        Some("A red square."),
        "sentences[0].raw stripped"
    );
    assert_eq!(ds.info.decoding.unwrap().max_new_tokens, 20);
    assert_eq!(ds.info.metric.name(), "cider");
    for ex in ds.train.iter().chain(&ds.test) {
        assert!(ex.image.is_file(), "{}", ex.image.display());
    }
}

#[test]
fn flickr_ids_are_file_stems() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(dir.path());
    let ds = datasets::load("flickr30k", paths_of(&world, "flickr30k")).unwrap();
    assert_eq!(
        ds.train.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["1000", "1001"]
    );
    assert_eq!(ds.test[0].id, "1003");
    assert_eq!(
        ds.test[0].image,
        dir.path().join("flickr30k/images/1003.jpg")
    );
    assert_eq!(
        ds.test[0].json_id.to_json(),
        json!("1003"),
        "Flickr ids are strings"
    );
}

#[test]
fn karpathy_errors_name_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.json");
    write_json(
        &f,
        &json!({"images": [
        {"filepath": "train2014", "filename": "a.jpg", "split": "train", "cocoid": 1, "sentences": [{"raw": "x"}]},
        {"filename": "b.jpg", "split": "test", "cocoid": 2, "sentences": []}]}),
    );
    let e = karpathy::read(&f, dir.path(), karpathy::Layout::Coco)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("k.json") && e.contains("images[1] (b.jpg)") && e.contains("filepath"),
        "{e}"
    );

    write_json(
        &f,
        &json!({"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]}),
    );
    let e = karpathy::read(&f, dir.path(), karpathy::Layout::Flickr)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images[0] (a.jpg)") && e.contains("without sentences"),
        "{e}"
    );

    std::fs::write(&f, "{\"images\": [").unwrap();
    let e = karpathy::read(&f, dir.path(), karpathy::Layout::Flickr).unwrap_err();
    assert!(
        matches!(e, DatasetError::Json { .. }) && e.to_string().contains("k.json"),
        "{e}"
    );
}

#[test]
fn vqa_files_are_joined_on_question_id_not_position() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(dir.path());
    for name in ["vqav2", "okvqa", "textvqa", "vizwiz"] {
        let ds = datasets::load(name, paths_of(&world, name)).unwrap();
        assert_eq!(ds.train.len(), 3);
        assert_eq!(ds.test.len(), 3);
        for ex in ds.train.iter().chain(&ds.test) {
            let id: u64 = ex.id.parse().unwrap();
            assert_eq!(
                ex.text.as_deref(),
                Some(format!("What is {}?", id / 10).as_str())
            );
            assert_eq!(
                ex.answers[0],
                format!("ans{}-0", id / 10),
                "{name}: answers joined by question_id"
            );
            assert_eq!(
                ex.demo_target(Task::Vqa),
                Some(format!("ans{}-0", id / 10).as_str())
            );
            assert!(ex.image.is_file(), "{name}: {}", ex.image.display());
        }
        let max_new = ds.info.decoding.unwrap().max_new_tokens;
        assert_eq!(max_new, if name == "textvqa" { 10 } else { 5 });
        assert_eq!(ds.info.stem_predictions, name == "okvqa");
    }
    // Image naming per dataset.
    let v = datasets::load("vqav2", paths_of(&world, "vqav2")).unwrap();
    assert!(
        v.test[0]
            .image
            .ends_with("val2014/COCO_val2014_000000000021.jpg")
    );
    let t = datasets::load("textvqa", paths_of(&world, "textvqa")).unwrap();
    assert!(t.test[0].image.ends_with("train_images/tv21.jpg"));
    let z = datasets::load("vizwiz", paths_of(&world, "vizwiz")).unwrap();
    assert!(z.test[0].image.ends_with("val/VizWiz_test_00000021.jpg"));
}

#[test]
fn vqa_join_errors_name_files_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (q, a) = (dir.path().join("q.json"), dir.path().join("a.json"));
    let imgs = dir.path().join("val2014");
    let question = |id: u64| json!({"image_id": 1, "question": "?", "question_id": id});
    let ann = |id: u64| json!({"question_id": id, "answers": [{"answer": "x"}]});
    let read = || {
        vqa::read(&q, &a, &imgs, vqa::ImageLayout::CocoSplitDir)
            .unwrap_err()
            .to_string()
    };

    write_json(&q, &json!({"questions": [question(1), question(2)]}));
    write_json(&a, &json!({"annotations": [ann(1)]}));
    let e = read();
    assert!(
        e.contains("q.json")
            && e.contains("question_id 2")
            && e.contains("a.json")
            && e.contains("no annotation"),
        "{e}"
    );

    write_json(&q, &json!({"questions": [question(1)]}));
    write_json(&a, &json!({"annotations": [ann(3), ann(1)]}));
    let e = read();
    assert!(
        e.contains("a.json: annotations[0] (question_id 3)")
            && e.contains("not in")
            && e.contains("q.json"),
        "{e}"
    );

    write_json(&q, &json!({"questions": [question(1), question(1)]}));
    write_json(&a, &json!({"annotations": [ann(1)]}));
    assert!(read().contains("asked twice"), "{}", read());

    write_json(&q, &json!({"questions": [question(1)]}));
    write_json(
        &a,
        &json!({"annotations": [{"question_id": 1, "answers": []}]}),
    );
    assert!(read().contains("has no answers"), "{}", read());

    write_json(
        &a,
        &json!({"annotations": [{"question_id": 1, "image_id": 9, "answers": [{"answer": "x"}]}]}),
    );
    assert!(read().contains("image_id 9 differs"), "{}", read());

    // The COCO file name comes from the directory's own name.
    write_json(&a, &json!({"annotations": [ann(1)]}));
    let e = vqa::read(
        &q,
        &a,
        &dir.path().join("images"),
        vqa::ImageLayout::CocoSplitDir,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("train2014, val2014, test2015") && e.contains("`images`"),
        "{e}"
    );
}

#[test]
fn hateful_memes_reads_jsonl_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(dir.path());
    let ds = datasets::load("hatefulmemes", paths_of(&world, "hatefulmemes")).unwrap();
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.test[0].id, "201");
    assert_eq!(ds.test[0].label, Some(1));
    assert_eq!(
        serde_json::to_value(&ds.test[0].json_id).unwrap(),
        json!(201)
    );
    assert_eq!(ds.test[0].demo_target(Task::Classification), Some("yes"));
    assert_eq!(ds.train[0].demo_target(Task::Classification), Some("no"));
    assert_eq!(
        ds.test[0].image,
        dir.path().join("hatefulmemes/img/201.png")
    );
    assert_eq!(ds.info.metric.name(), "roc-auc");
    assert!(ds.info.decoding.is_none());

    let f = dir.path().join("bad.jsonl");
    std::fs::write(&f, "{\"id\": 1, \"img\": \"img/1.png\", \"label\": 0, \"text\": \"a\"}\n\n{\"id\": 2, \"img\": \"img/2.png\", \"label\": 3, \"text\": \"b\"}\n").unwrap();
    let e = datasets::hateful_memes::read(&f, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.jsonl: line 3 (id 2): label must be 0 or 1, got 3"),
        "{e}"
    );
    std::fs::write(&f, "{\"id\": 1, \"img\": \"img/1.png\"\n").unwrap();
    let e = datasets::hateful_memes::read(&f, dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl: line 1"), "{e}");
}

#[test]
fn images_are_decoded_by_content_not_extension() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("COCO_val2014_000000000001.jpg");
    png(&f, 7);
    let img = datasets::image::decode(&f).unwrap();
    assert_eq!((img.width(), img.height()), (2, 2));
    assert_eq!(datasets::image::probe(&f).unwrap(), (2, 2));
    std::fs::write(&f, b"not an image").unwrap();
    let e = datasets::image::decode(&f).unwrap_err().to_string();
    assert!(e.contains("COCO_val2014_000000000001.jpg"), "{e}");
}

#[test]
fn unknown_dataset_and_missing_paths_are_errors() {
    assert!(matches!(
        datasets::load("imagenet", &DatasetPaths::default()),
        Err(DatasetError::UnknownDataset(_))
    ));
    let e = datasets::load("coco", &DatasetPaths::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("eval.paths.coco.karpathy"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Prompts.

fn ex(id: &str, text: Option<&str>, answers: &[&str], label: Option<u8>) -> EvalExample {
    EvalExample {
        id: id.into(),
        json_id: JsonId::Str(id.into()),
        image: PathBuf::from(format!("{id}.png")),
        text: text.map(str::to_string),
        answers: answers.iter().map(|s| s.to_string()).collect(),
        label,
    }
}

fn images(p: &Prompt) -> Vec<String> {
    p.images.iter().map(|i| i.display().to_string()).collect()
}

#[test]
fn captioning_prompts_golden() {
    let d: Vec<EvalExample> = (1..=4)
        .map(|i| {
            ex(
                &format!("d{i}"),
                None,
                &[&format!(" cap {i} "), "other"],
                None,
            )
        })
        .collect();
    let q = ex("q", None, &["ref"], None);
    let refs: Vec<&EvalExample> = d.iter().collect();

    let p0 = prompts::build(Task::Captioning, &refs[..2], &q, 0, Protocol::Paper).unwrap();
    assert_eq!(
        p0.text,
        "Output:cap 1<|endofchunk|>\nOutput:cap 2<|endofchunk|>\n<image>Output:"
    );
    assert_eq!(images(&p0), ["q.png"]);
    assert_eq!(
        prompts::build(Task::Captioning, &refs[..2], &q, 0, Protocol::Code).unwrap(),
        p0
    );

    let p4 = prompts::build(Task::Captioning, &refs, &q, 4, Protocol::Paper).unwrap();
    assert_eq!(
        p4.text,
        "<image>Output:cap 1<|endofchunk|>\n<image>Output:cap 2<|endofchunk|>\n<image>Output:cap 3<|endofchunk|>\n<image>Output:cap 4<|endofchunk|>\n<image>Output:"
    );
    assert_eq!(
        images(&p4),
        ["d1.png", "d2.png", "d3.png", "d4.png", "q.png"]
    );
}

#[test]
fn vqa_prompts_golden() {
    let d1 = ex("d1", Some("What color?"), &["red", "blue"], None);
    let d2 = ex("d2", Some("How many?"), &["2"], None);
    let q = ex("q", Some("Is it big?"), &[], None);
    let p0 = prompts::build(Task::Vqa, &[&d1, &d2], &q, 0, Protocol::Code).unwrap();
    assert_eq!(
        p0.text,
        "Question:What color? Short answer:red<|endofchunk|>\nQuestion:How many? Short answer:2<|endofchunk|>\n<image>Question:Is it big? Short answer:"
    );
    assert_eq!(images(&p0), ["q.png"]);
    let p4 = prompts::build(Task::Vqa, &[&d2, &d1, &d1, &d2], &q, 4, Protocol::Paper).unwrap();
    assert_eq!(
        p4.text,
        "<image>Question:How many? Short answer:2<|endofchunk|>\n<image>Question:What color? Short answer:red<|endofchunk|>\n<image>Question:What color? Short answer:red<|endofchunk|>\n<image>Question:How many? Short answer:2<|endofchunk|>\n<image>Question:Is it big? Short answer:"
    );
    assert_eq!(
        images(&p4),
        ["d2.png", "d1.png", "d1.png", "d2.png", "q.png"]
    );
}

#[test]
fn hateful_memes_prompts_golden_and_zero_shot_images_per_protocol() {
    let d1 = ex("d1", Some("cats"), &[], Some(0));
    let d2 = ex("d2", Some("hate"), &[], Some(1));
    let q = ex("q", Some("meme text"), &[], Some(1));
    let golden0 = "is an image with: 'cats' written on it. Is it hateful? Answer:no<|endofchunk|>is an image with: 'hate' written on it. Is it hateful? Answer:yes<|endofchunk|><image>is an image with: 'meme text' written on it. Is it hateful? Answer:";
    let paper = prompts::build(Task::Classification, &[&d1, &d2], &q, 0, Protocol::Paper).unwrap();
    assert_eq!(paper.text, golden0);
    assert_eq!(images(&paper), ["q.png"], "paper: only the query image");
    let code = prompts::build(Task::Classification, &[&d1, &d2], &q, 0, Protocol::Code).unwrap();
    assert_eq!(code.text, golden0);
    assert_eq!(
        images(&code),
        ["d1.png", "d2.png", "q.png"],
        "code: the demo images are passed anyway"
    );

    let p4 = prompts::build(
        Task::Classification,
        &[&d1, &d2, &d2, &d1],
        &q,
        4,
        Protocol::Code,
    )
    .unwrap();
    assert_eq!(
        p4.text,
        "<image>is an image with: 'cats' written on it. Is it hateful? Answer:no<|endofchunk|><image>is an image with: 'hate' written on it. Is it hateful? Answer:yes<|endofchunk|><image>is an image with: 'hate' written on it. Is it hateful? Answer:yes<|endofchunk|><image>is an image with: 'cats' written on it. Is it hateful? Answer:no<|endofchunk|><image>is an image with: 'meme text' written on it. Is it hateful? Answer:"
    );
    assert_eq!(
        images(&p4),
        ["d1.png", "d2.png", "d2.png", "d1.png", "q.png"]
    );
}

#[test]
fn prompts_for_every_shot_count_have_one_image_per_demo_plus_query() {
    let pool: Vec<EvalExample> = (0..32)
        .map(|i| ex(&format!("d{i}"), Some("q?"), &["a"], Some((i % 2) as u8)))
        .collect();
    let q = ex("q", Some("q?"), &["a"], Some(0));
    for task in [Task::Captioning, Task::Vqa, Task::Classification] {
        for shots in [0usize, 4, 8, 16, 32] {
            let k = effective_shots(shots);
            let demos: Vec<&EvalExample> = pool.iter().take(k).collect();
            let p = prompts::build(task, &demos, &q, shots, Protocol::Paper).unwrap();
            assert_eq!(
                p.text.matches("<image>").count(),
                shots + 1,
                "{task:?} {shots}"
            );
            assert_eq!(
                p.text.matches("<|endofchunk|>").count(),
                k,
                "{task:?} {shots}"
            );
            assert_eq!(p.images.len(), shots + 1, "{task:?} {shots}");
            for label in ["Output: ", "Question: ", "answer: ", "Answer: "] {
                assert!(
                    !p.text.contains(label),
                    "no space after {label}: {}",
                    p.text
                );
            }
        }
    }
    let e = prompts::build(Task::Vqa, &[&q], &q, 4, Protocol::Paper).unwrap_err();
    assert_eq!(e.to_string(), "4-shot prompt needs 4 demonstrations, got 1");
    let no_q = ex("x", None, &["a"], None);
    assert!(prompts::build(Task::Vqa, &[&no_q, &no_q], &q, 0, Protocol::Paper).is_err());
}

#[test]
fn ensemble_orders_follow_the_protocol() {
    let mut rng = demos::derive_rng("hatefulmemes", 42, &["ensemble", "q1"]);
    let orders = protocol::ensemble_orders(Protocol::Paper, Task::Classification, 4, &mut rng);
    assert_eq!(orders.len(), 6);
    assert_eq!(orders[0], [0, 1, 2, 3]);
    let distinct: HashSet<&Vec<usize>> = orders.iter().collect();
    assert_eq!(distinct.len(), 6);
    for o in &orders {
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, [0, 1, 2, 3]);
    }
    assert_eq!(
        protocol::ensemble_orders(Protocol::Paper, Task::Classification, 2, &mut rng).len(),
        2,
        "0-shot: 2! orders"
    );
    assert_eq!(
        protocol::ensemble_orders(Protocol::Paper, Task::Classification, 3, &mut rng).len(),
        6
    );
    assert_eq!(
        protocol::ensemble_orders(Protocol::Code, Task::Classification, 4, &mut rng).len(),
        1
    );
    assert_eq!(
        protocol::ensemble_orders(Protocol::Paper, Task::Vqa, 4, &mut rng).len(),
        1
    );

    let d1 = ex("d1", Some("a"), &[], Some(0));
    let d2 = ex("d2", Some("b"), &[], Some(1));
    let q = ex("q", Some("c"), &[], None);
    let orders = protocol::ensemble_orders(Protocol::Paper, Task::Classification, 2, &mut rng);
    let ps = prompts::build_ensemble(
        Task::Classification,
        &[&d1, &d2],
        &q,
        0,
        Protocol::Paper,
        &orders,
    )
    .unwrap();
    assert_eq!(ps.len(), 2);
    assert!(ps[0].text.starts_with("is an image with: 'a'"));
    assert!(ps[1].text.starts_with("is an image with: 'b'"));
    assert!(protocol::PROTOCOL_NOTES.contains("min(6, k!)"));
}

// ---------------------------------------------------------------------------------------------
// Demonstrations.

#[test]
fn random_demos_are_deterministic_per_seed_and_independent_across_queries() {
    let a = RandomDemos::new("coco", 42, 10_000, 2048);
    let b = RandomDemos::new("coco", 42, 10_000, 2048);
    let c = RandomDemos::new("coco", 43, 10_000, 2048);
    let other = RandomDemos::new("flickr30k", 42, 10_000, 2048);
    assert_eq!(a, b);
    assert_ne!(a.query_set(), c.query_set());
    assert_ne!(a.query_set(), other.query_set());
    assert_eq!(a.query_set().len(), 2048);
    assert_eq!(
        a.query_set().iter().collect::<HashSet<_>>().len(),
        2048,
        "without replacement"
    );
    assert!(a.query_set().iter().all(|i| *i < 10_000));

    // Per query: same seed and id, same demos, whatever was drawn before.
    let first = a.for_query("q1", 8).unwrap();
    for id in ["q2", "q3", "q4"] {
        a.for_query(id, 8).unwrap();
    }
    assert_eq!(a.for_query("q1", 8).unwrap(), first);
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 8);
    assert!(first.iter().all(|i| a.query_set().contains(i)));
    assert_ne!(c.for_query("q1", 8).unwrap(), first);

    // Independent across queries: no two of 200 queries share their 8 demos, and every query-set
    // element is drawn about equally often (200 * 32 draws over 64 elements: 100 expected).
    let small = RandomDemos::new("vqav2", 7, 64, 2048);
    assert_eq!(
        small.query_set(),
        (0..64).collect::<Vec<_>>(),
        "a split smaller than the query set is used whole"
    );
    let draws: Vec<Vec<usize>> = (0..200)
        .map(|i| small.for_query(&format!("{i}"), 32).unwrap())
        .collect();
    assert_eq!(draws.iter().collect::<HashSet<_>>().len(), 200);
    let mut counts = [0usize; 64];
    draws.iter().flatten().for_each(|i| counts[*i] += 1);
    assert!(counts.iter().all(|c| (60..=140).contains(c)), "{counts:?}");
    let err = small.for_query("x", 65).unwrap_err().to_string();
    assert!(
        err.contains("65 demonstrations") && err.contains("64"),
        "{err}"
    );
}

#[test]
fn test_subsets_are_seeded_or_the_full_split() {
    let s = demos::test_subset("okvqa", 42, 5046, Some(500));
    assert_eq!(s, demos::test_subset("okvqa", 42, 5046, Some(500)));
    assert_ne!(s, demos::test_subset("okvqa", 43, 5046, Some(500)));
    assert_eq!(s.iter().collect::<HashSet<_>>().len(), 500);
    assert_eq!(
        demos::test_subset("okvqa", 42, 10, None),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        demos::test_subset("okvqa", 42, 10, Some(50)),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(effective_shots(0), 2);
    assert_eq!(effective_shots(4), 4);
}

#[test]
fn rices_orders_by_cosine_with_the_most_similar_last() {
    // Unnormalised rows: cosine, not dot product, must decide.
    let bank = FeatureBank::new(
        2,
        vec![
            1.0, 0.0, // 0: angle 0
            0.0, 5.0, // 1: angle 90
            3.0, 3.0, // 2: angle 45
            10.0, 1.0, // 3: angle ~5.7
            -1.0, 0.0, // 4: angle 180
            2.0, 2.0, // 5: angle 45 (tie with 2)
        ],
    )
    .unwrap();
    let q = [2.0, 0.0];
    assert_eq!(demos::rices("coco", &q, &bank, 4).unwrap(), [5, 2, 3, 0]);
    assert_eq!(demos::rices("coco", &q, &bank, 1).unwrap(), [0]);
    // 0 shots: still the top 2 (as text-only demonstrations).
    assert_eq!(
        demos::rices("coco", &q, &bank, effective_shots(0)).unwrap(),
        [3, 0]
    );
    assert_eq!(
        demos::rices("coco", &q, &bank, 6).unwrap(),
        [4, 1, 5, 2, 3, 0]
    );
    assert!(demos::rices("coco", &[1.0, 0.0, 0.0], &bank, 2).is_err());
    assert!(demos::rices("coco", &q, &bank, 7).is_err());
}

#[test]
fn rices_batch_matches_one_query_at_a_time() {
    let (n, d, q) = (3000, 48, 300);
    let mut rng = demos::derive_rng("test", 0, &["bank"]);
    let mut unit = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| demos::uniform_below(&mut rng, 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    let bank = FeatureBank::new(d, unit(n * d)).unwrap();
    let queries = unit(q * d);
    let batch = demos::rices_batch("coco", &queries, &bank, 16).unwrap();
    assert_eq!(batch.len(), q);
    for (i, got) in batch.iter().enumerate() {
        let one = demos::rices("coco", &queries[i * d..(i + 1) * d], &bank, 16).unwrap();
        assert_eq!(*got, one, "query {i}");
    }
    assert!(demos::rices_batch("coco", &queries[..d + 1], &bank, 2).is_err());
}

#[test]
fn feature_cache_round_trips_and_is_keyed_by_encoder_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["1", "2", "3"];
    let key = CacheKey::new("vit-abc", "coco", ids);
    let bank = FeatureBank::new(2, vec![3.0, 4.0, 1.0, 0.0, 0.0, 2.0]).unwrap();
    assert_eq!(bank.row(0), [0.6, 0.8]);
    assert!(features::read_cache(dir.path(), &key).unwrap().is_none());
    let path = features::write_cache(dir.path(), &key, &bank).unwrap();
    assert_eq!(
        features::read_cache(dir.path(), &key).unwrap(),
        Some(bank.clone())
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [path.file_name().unwrap().to_owned()],
        "no temporary file left"
    );

    let other_encoder = CacheKey::new("vit-xyz", "coco", ids);
    assert_ne!(other_encoder.path(dir.path()), path);
    assert!(
        features::read_cache(dir.path(), &other_encoder)
            .unwrap()
            .is_none()
    );
    let other_split = CacheKey::new("vit-abc", "coco", ["1", "2", "4"]);
    assert!(
        features::read_cache(dir.path(), &other_split)
            .unwrap()
            .is_none()
    );

    // Wrong row count, and a file whose metadata does not match its name.
    assert!(features::write_cache(dir.path(), &CacheKey::new("e", "coco", ["1"]), &bank).is_err());
    std::fs::copy(&path, other_encoder.path(dir.path())).unwrap();
    let e = features::read_cache(dir.path(), &other_encoder).unwrap_err();
    assert!(
        matches!(e, FeatureError::Invalid { .. }) && e.to_string().contains("encoder"),
        "{e}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    assert!(features::read_cache(dir.path(), &key).is_err());
}

// ---------------------------------------------------------------------------------------------
// `runner data check`.

fn experiment(dir: &Path, world: &[(&'static str, DatasetPaths)]) -> PathBuf {
    let mut toml = String::from(
        "name = \"check\"\nextends = [\"tiny\"]\n\n[eval]\ndatasets = [\"coco\", \"flickr30k\", \"vqav2\", \"okvqa\", \"textvqa\", \"vizwiz\", \"hatefulmemes\"]\nshots = [0, 4]\nseeds = [42]\n",
    );
    for (name, paths) in world {
        toml.push_str(&format!("\n[eval.paths.{name}]\n"));
        let v = toml::Value::try_from(paths).unwrap();
        for (k, x) in v.as_table().unwrap() {
            toml.push_str(&format!("{k} = {x}\n"));
        }
    }
    let f = dir.join("exp.toml");
    std::fs::write(&f, toml).unwrap();
    f
}

fn data_check(file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["data", "check"])
        .arg(file)
        .env_remove("RUNNER_DB")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn data_check_passes_a_good_experiment_and_lists_every_problem_of_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(&dir.path().join("world"));
    let exp = experiment(dir.path(), &world);
    let (ok, out, err) = data_check(&exp);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "coco (captioning, cider): train 3 examples, test 2 examples, 5 images (0 unreadable)"
        ),
        "{out}"
    );
    assert!(
        out.contains("vqav2 (vqa, vqa-accuracy): train 3 examples, test 3 examples, 6 images"),
        "{out}"
    );
    assert!(
        out.contains("textvqa (vqa, vqa-accuracy): train 3 examples, test 3 examples, 6 images"),
        "{out}"
    );
    assert!(
        out.contains(
            "hatefulmemes (classification, roc-auc): train 3 examples, test 2 examples, 5 images"
        ),
        "{out}"
    );
    let karpathy = paths_of(&world, "coco").karpathy.clone().unwrap();
    let sha = runner::plan::hash::sha256_file(Path::new(&karpathy)).unwrap();
    assert!(
        out.contains(&format!("karpathy           sha256 {sha}  {karpathy}")),
        "{out}"
    );
    assert_eq!(out.matches(" sha256 ").count(), 2 + 2 + 4 * 4 + 2, "{out}");

    // Break it: a missing image, an unanswered question, a test image without references.
    let root = dir.path().join("world");
    std::fs::remove_file(root.join("hatefulmemes/img/202.png")).unwrap();
    let q = root.join("okvqa/test_questions.json");
    let mut qs: Value = serde_json::from_slice(&std::fs::read(&q).unwrap()).unwrap();
    qs["questions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"image_id": 21, "question": "?", "question_id": 999}));
    write_json(&q, &qs);
    write_json(
        &root.join("flickr30k/coco_style.json"),
        &json!({"images": [], "annotations": []}),
    );
    let (ok, out, err) = data_check(&exp);
    assert!(!ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("hatefulmemes: image") && err.contains("202.png"),
        "{err}"
    );
    assert!(
        err.contains("okvqa:")
            && err.contains("test_questions.json")
            && err.contains("question_id 999"),
        "{err}"
    );
    assert!(
        err.contains("flickr30k:")
            && err.contains("1 of 1 test images have no reference caption, e.g. image_id 1003"),
        "{err}"
    );
    assert!(
        out.contains("coco (captioning, cider)"),
        "the good datasets are still reported: {out}"
    );
}

/// Timing at COCO's size (82,783 train images, 768-d ViT-L/14 features):
/// `cargo test -p runner --test eval_data rices_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn rices_timing_at_coco_scale() {
    let (n, d, q, k) = (82_783, 768, 512, 32);
    let fill = |len: usize, phase: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32) * 0.618 + phase).sin())
            .collect()
    };
    let bank = FeatureBank::new(d, fill(n * d, 0.0)).unwrap();
    let queries = fill(q * d, 1.0);
    let t = std::time::Instant::now();
    let batch = demos::rices_batch("coco", &queries, &bank, k).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let one = demos::rices("coco", &queries[..d], &bank, k).unwrap();
    let dt1 = t1.elapsed().as_secs_f64();
    // This structured data has near-ties that summation order may flip; only sizes are checked.
    assert_eq!((batch.len(), batch[0].len(), one.len()), (q, k, k));
    println!(
        "rices_batch: {q} queries x {n} demos x {d}: {dt:.2} s ({:.1} queries/s); one query unbatched: {dt1:.3} s",
        q as f64 / dt
    );
}

#[test]
fn data_check_before_exec_says_the_synthetic_world_is_not_written_yet() {
    let dir = tempfile::tempdir().unwrap();
    let exp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/frozen_embeddings.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir.path())
        .args(["data", "check"])
        .arg(&exp)
        .env_remove("RUNNER_DB")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "the synthetic world runs/world is not written yet; `runner exec` writes it first"
        ),
        "{err}"
    );
}
