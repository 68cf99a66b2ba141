//! `runner score` end to end: the binary's output on good files and its errors on bad ones
//! (non-zero exit, a message naming the file and the offending entry).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(dir: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("score_cli")
        .join(dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn score(metric: &str, preds: &Path, anns: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.args(["score", "--metric", metric, "--predictions"])
        .arg(preds)
        .arg("--annotations")
        .arg(anns);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run runner")
}

/// Assert failure and that stderr mentions every `needle`.
fn assert_fails(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

const COCO_GT: &str = r#"{"images":[{"id":1},{"id":2},{"id":3}],"annotations":[
 {"id":1,"image_id":1,"caption":"A dog runs on the grass."},{"id":2,"image_id":1,"caption":"a dog playing outside"},
 {"id":3,"image_id":2,"caption":"A red car parked on a street."},{"id":4,"image_id":2,"caption":"a parked red car"}]}"#;

const VQA_GT: &str = r#"{"annotations":[
 {"question_id":7,"answers":[{"answer":"yes","answer_id":1},{"answer":"yes","answer_id":2},{"answer":"yes","answer_id":3},{"answer":"no","answer_id":4}]},
 {"question_id":8,"answers":[]}]}"#;

#[test]
fn json_output_is_one_object() {
    let dir = scratch("json");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(
        &dir,
        "res.json",
        r#"[{"image_id":2,"caption":"a red car"},{"image_id":1,"caption":"a dog"}]"#,
    );
    let out = score("cider", &preds, &anns, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 3, "{stdout}");
    assert_eq!(obj["metric"], "cider");
    assert_eq!(obj["count"], 2);
    assert!(obj["score"].as_f64().expect("score") > 0.0);

    let vqa_anns = write(&dir, "vqa.json", VQA_GT);
    let vqa_preds = write(
        &dir,
        "vqa_res.json",
        r#"[{"question_id":7,"answer":"Yes."}]"#,
    );
    let out = score("vqa-accuracy", &vqa_preds, &vqa_anns, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // Each of the 3 "yes" annotators sees 2 other yes (2/3); the "no" annotator sees 3 (1).
    assert_eq!(v["score"].as_f64(), Some(75.0));
    // No answer_type in the annotations: the reference counts the question as "other"; without
    // question types there is no per-question-type breakdown.
    assert_eq!(v["by_answer_type"]["other"]["score"].as_f64(), Some(75.0));
    assert_eq!(v["by_answer_type"]["other"]["count"], 1);
    assert!(v.get("by_question_type").is_none(), "{v}");
    let text = score("vqa-accuracy", &vqa_preds, &vqa_anns, false);
    let text = String::from_utf8(text.stdout).expect("utf8");
    assert!(text.contains("per answer type:\n  other"), "{text}");
}

#[test]
fn unknown_id_names_file_and_entry() {
    let dir = scratch("unknown");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(
        &dir,
        "res.json",
        r#"[{"image_id":1,"caption":"a dog"},{"image_id":99,"caption":"x"}]"#,
    );
    assert_fails(
        &score("cider", &preds, &anns, false),
        &["res.json", "entry 1", "99", "gt.json"],
    );
}

#[test]
fn duplicate_prediction_is_an_error() {
    let dir = scratch("duplicate");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(
        &dir,
        "res.json",
        r#"[{"image_id":1,"caption":"a"},{"image_id":2,"caption":"b"},{"image_id":1,"caption":"c"}]"#,
    );
    assert_fails(
        &score("cider", &preds, &anns, false),
        &["res.json", "entry 2", "duplicate id 1", "entry 0"],
    );
}

#[test]
fn malformed_files_are_errors() {
    let dir = scratch("malformed");
    let anns = write(&dir, "gt.json", COCO_GT);
    let bad_json = write(&dir, "broken.json", r#"[{"image_id":1,"caption":"a"}"#);
    assert_fails(
        &score("cider", &bad_json, &anns, false),
        &["broken.json", "malformed JSON"],
    );
    let missing = write(
        &dir,
        "missing.json",
        r#"[{"image_id":1,"caption":"a"},{"image_id":2}]"#,
    );
    assert_fails(
        &score("cider", &missing, &anns, false),
        &["missing.json", "entry 1", "\"caption\""],
    );
    let wrong_type = write(&dir, "wrong.json", r#"[{"image_id":1,"caption":5}]"#);
    assert_fails(
        &score("cider", &wrong_type, &anns, false),
        &["wrong.json", "entry 0", "must be a string"],
    );
    let bad_gt = write(
        &dir,
        "bad_gt.json",
        r#"{"images":[{"id":1}],"annotations":[{"image_id":1}]}"#,
    );
    let preds = write(&dir, "res.json", r#"[{"image_id":1,"caption":"a"}]"#);
    assert_fails(
        &score("cider", &preds, &bad_gt, false),
        &["bad_gt.json", "annotations[0]", "\"caption\""],
    );
    let not_found = dir.join("nope.json");
    assert_fails(
        &score("cider", &preds, &not_found, false),
        &["nope.json", "cannot read"],
    );
}

#[test]
fn empty_predictions_are_an_error() {
    let dir = scratch("empty");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(&dir, "res.json", "[]");
    assert_fails(
        &score("cider", &preds, &anns, false),
        &["res.json", "no predictions"],
    );
}

#[test]
fn image_without_references_is_an_error() {
    let dir = scratch("norefs");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(
        &dir,
        "res.json",
        r#"[{"image_id":1,"caption":"a dog"},{"image_id":3,"caption":"x"}]"#,
    );
    assert_fails(
        &score("cider", &preds, &anns, false),
        &["gt.json", "id 3", "no reference captions"],
    );
    let vqa_anns = write(&dir, "vqa.json", VQA_GT);
    let vqa_preds = write(
        &dir,
        "vqa_res.json",
        r#"[{"question_id":8,"answer":"yes"}]"#,
    );
    assert_fails(
        &score("vqa-accuracy", &vqa_preds, &vqa_anns, false),
        &["vqa.json", "id 8", "no reference answers"],
    );
}

#[test]
fn one_class_auc_is_an_error() {
    let dir = scratch("oneclass");
    let anns = write(
        &dir,
        "hm.jsonl",
        "{\"id\":1,\"img\":\"img/1.png\",\"label\":1,\"text\":\"a\"}\n{\"id\":2,\"img\":\"img/2.png\",\"label\":0,\"text\":\"b\"}\n",
    );
    let preds = write(&dir, "scores.json", r#"[{"id":1,"score":0.9}]"#);
    assert_fails(
        &score("roc-auc", &preds, &anns, false),
        &["hm.jsonl", "only one class"],
    );
    let bad_label = write(
        &dir,
        "hm_bad.jsonl",
        "{\"id\":1,\"label\":1}\n{\"id\":2,\"label\":\"yes\"}\n",
    );
    let preds2 = write(
        &dir,
        "scores2.json",
        r#"[{"id":1,"score":0.9},{"id":2,"score":0.1}]"#,
    );
    assert_fails(
        &score("roc-auc", &preds2, &bad_label, false),
        &["hm_bad.jsonl", "entry 1", "\"label\""],
    );
    let ok = score("roc-auc", &preds2, &anns, true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(v["score"].as_f64(), Some(1.0));
}

#[test]
fn unknown_metric_is_an_error() {
    let dir = scratch("metric");
    let anns = write(&dir, "gt.json", COCO_GT);
    let preds = write(&dir, "res.json", r#"[{"image_id":1,"caption":"a"}]"#);
    assert_fails(
        &score("bleu", &preds, &anns, false),
        &["unknown metric", "bleu"],
    );
}
