//! Golden tests: the metrics against numbers produced by the reference implementations
//! (pycocoevalcap + its CoreNLP 3.4.1 jar, open_flamingo's vqa_metric.py, scikit-learn).
//! Regenerate the fixtures with `scripts/fixtures/metrics_golden.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use runner::eval::metrics::auc::roc_auc;
use runner::eval::metrics::cider;
use runner::eval::metrics::formats::{SampleId, read_vqa_annotations, read_vqa_predictions};
use runner::eval::metrics::ptb::{PtbLexer, tokenize_captions};
use runner::eval::metrics::python::py_round;
use runner::eval::metrics::score::{Metric, score_files};
use runner::eval::metrics::vqa;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Write `value` as a JSON file under the test's scratch directory.
fn scratch_file(dir: &str, name: &str, value: &Value) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("metrics_golden")
        .join(dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(value).expect("json")).expect("write scratch file");
    path
}

fn assert_rel(actual: f64, expected: f64, tol: f64, what: &str) {
    let scale = expected.abs().max(1e-300);
    let ok = if expected == 0.0 {
        actual.abs() <= tol
    } else {
        ((actual - expected) / scale).abs() <= tol
    };
    assert!(ok, "{what}: got {actual:.17}, expected {expected:.17}");
}

/// Compare our tokenizer with the jar's output on cases the jar tokenized in one run, joined by
/// "\n" (as pycocoevalcap runs it): a case's trailing context may include the line break after it.
fn compare_with_jar(cases: &Value) {
    let list = cases["cases"].as_array().expect("cases");
    let texts: Vec<&str> = list
        .iter()
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    let lexer = PtbLexer::shared().expect("lexer");
    let output = lexer.tokenize_to_text(&texts.join("\n")).expect("tokenize");
    let lines: Vec<&str> = output.split('\n').collect();
    let coco = tokenize_captions(&texts).expect("tokenize captions");
    let mut failures = Vec::new();
    for (i, case) in list.iter().enumerate() {
        let jar = case["line"].as_str().expect("line");
        if lines.get(i).copied() != Some(jar) {
            failures.push(format!(
                "{:?}\n   jar: {jar:?}\n  ours: {:?}",
                texts[i],
                lines.get(i)
            ));
            continue;
        }
        let expected: Vec<&str> = case["coco"]
            .as_str()
            .expect("coco")
            .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
            .filter(|w| !w.is_empty())
            .collect();
        if coco[i] != expected {
            failures.push(format!(
                "{:?}\n  coco: {expected:?}\n  ours: {:?}",
                texts[i], coco[i]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        list.len(),
        failures[..failures.len().min(25)].join("\n")
    );
}

#[test]
fn ptb_tokens_match_the_corenlp_jar() {
    compare_with_jar(&fixture("ptb_tokens.json"));
}

/// A large fuzz file from `metrics_golden.py --fuzz N` (not committed):
/// `PTB_FUZZ_FILE=/tmp/ptb_fuzz.json cargo test -p runner --test metrics_golden -- --ignored`.
#[test]
#[ignore]
fn ptb_fuzz_file_matches_the_corenlp_jar() {
    let path = std::env::var("PTB_FUZZ_FILE").expect("set PTB_FUZZ_FILE");
    let text = std::fs::read_to_string(&path).expect("fuzz file");
    compare_with_jar(&serde_json::from_str(&text).expect("json"));
}

#[test]
fn ptb_batches_reproduce_line_shifts() {
    let cases = fixture("ptb_batches.json");
    for case in cases["cases"].as_array().expect("cases") {
        let captions: Vec<&str> = case["captions"]
            .as_array()
            .expect("captions")
            .iter()
            .map(|c| c.as_str().expect("str"))
            .collect();
        let ours = tokenize_captions(&captions).expect("tokenize");
        let expected: Vec<String> = case["tokenized"]
            .as_array()
            .expect("tokenized")
            .iter()
            .map(|c| c.as_str().expect("str").to_string())
            .collect();
        let ours: Vec<String> = ours.iter().map(|w| w.join(" ")).collect();
        assert_eq!(ours, expected, "captions {captions:?}");
    }
}

fn check_cider(name: &str) {
    let case = fixture(&format!("cider_{name}.json"));
    let ann = scratch_file(name, "captions.json", &case["annotations"]);
    let res = scratch_file(name, "results.json", &case["results"]);
    let report = score_files(Metric::Cider, &res, &ann).expect("score");
    let expected = case["expected"]["mean"].as_f64().expect("mean");
    assert_rel(report.score, expected, 1e-9, &format!("CIDEr {name}"));
    let per_image = case["expected"]["per_image"].as_array().expect("per_image");
    assert_eq!(report.count, per_image.len());

    // The library function, per image, in the reference's image order.
    let id = |v: &Value| match v {
        Value::Number(n) => SampleId::Int(n.as_i64().expect("int id")),
        Value::String(s) => SampleId::Str(s.clone()),
        other => panic!("id {other}"),
    };
    let mut refs: HashMap<SampleId, Vec<String>> = HashMap::new();
    for a in case["annotations"]["annotations"]
        .as_array()
        .expect("annotations")
    {
        refs.entry(id(&a["image_id"]))
            .or_default()
            .push(a["caption"].as_str().expect("caption").to_string());
    }
    let captions: HashMap<SampleId, String> = case["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                id(&r["image_id"]),
                r["caption"].as_str().expect("caption").to_string(),
            )
        })
        .collect();
    let cands: Vec<(SampleId, String)> = per_image
        .iter()
        .map(|p| (id(&p["image_id"]), captions[&id(&p["image_id"])].clone()))
        .collect();
    let result = cider::score(&cands, &refs).expect("cider");
    for (p, got) in per_image.iter().zip(&result.per_image) {
        assert_rel(
            *got,
            p["score"].as_f64().expect("score"),
            1e-9,
            &format!("CIDEr {name} image {}", p["image_id"]),
        );
    }
}

#[test]
fn cider_edge_captions() {
    check_cider("edge");
}

#[test]
fn cider_random_captions() {
    check_cider("random");
}

#[test]
fn cider_string_ids_and_line_shift() {
    check_cider("string_ids_shift");
}

#[test]
fn cider_single_image_is_zero() {
    check_cider("single");
}

fn check_vqa(name: &str) {
    let case = fixture(&format!("vqa_{name}.json"));
    let ann = scratch_file(name, "annotations.json", &case["annotations"]);
    let res = scratch_file(name, "results.json", &case["results"]);
    let report = score_files(Metric::VqaAccuracy, &res, &ann).expect("score");
    let expected = case["expected"]["accuracy"].as_f64().expect("accuracy");
    assert_eq!(report.score, expected, "VQA accuracy {name}");
    for (key, got) in [
        ("per_answer_type", &report.by_answer_type),
        ("per_question_type", &report.by_question_type),
    ] {
        let want = case["expected"][key].as_object().expect(key);
        let got: serde_json::Map<String, serde_json::Value> = got
            .iter()
            .map(|(k, g)| (k.clone(), serde_json::json!(g.score)))
            .collect();
        assert_eq!(&got, want, "VQA {key} {name}");
    }

    let gt = read_vqa_annotations(&ann).expect("annotations").answers;
    let preds: HashMap<SampleId, String> = read_vqa_predictions(&res)
        .expect("predictions")
        .into_iter()
        .collect();
    let mut failures = Vec::new();
    for q in case["expected"]["per_question_rounded"]
        .as_array()
        .expect("per question")
    {
        let qid = SampleId::Int(q["question_id"].as_i64().expect("qid"));
        let got = py_round(100.0 * vqa::question_accuracy(&preds[&qid], &gt[&qid]), 2);
        let want = q["accuracy"].as_f64().expect("acc");
        if got != want {
            let answers: Vec<&str> = gt[&qid].iter().map(|a| a.answer.as_str()).collect();
            failures.push(format!(
                "q {qid}: pred {:?} answers {answers:?}: got {got}, expected {want}",
                preds[&qid]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} questions differ:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn vqa_edge_answers() {
    check_vqa("edge");
}

#[test]
fn vqa_random_answers() {
    check_vqa("random");
}

#[test]
fn roc_auc_matches_sklearn() {
    let cases = fixture("auc_cases.json");
    for (k, case) in cases["cases"].as_array().expect("cases").iter().enumerate() {
        let labels: Vec<bool> = case["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l.as_i64() == Some(1))
            .collect();
        let scores: Vec<f64> = case["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|s| s.as_f64().expect("f64"))
            .collect();
        let expected = case["expected"].as_f64().expect("expected");
        let got = roc_auc(&labels, &scores, "golden").expect("auc");
        assert!(
            (got - expected).abs() <= 1e-12,
            "case {k}: got {got:.17}, expected {expected:.17}"
        );

        // Through the file formats too (JSON lines annotations).
        let ids = case["ids"].as_array().expect("ids");
        let preds: Vec<Value> = ids
            .iter()
            .zip(&scores)
            .map(|(id, s)| serde_json::json!({"id": id, "score": s}))
            .collect();
        let pred_path = scratch_file(&format!("auc{k}"), "scores.json", &Value::Array(preds));
        let lines: Vec<String> = ids
            .iter()
            .zip(&labels)
            .map(|(id, l)| serde_json::json!({"id": id, "img": "img/x.png", "label": u8::from(*l), "text": "t"}).to_string())
            .collect();
        let ann_path = pred_path.with_file_name("annotations.jsonl");
        std::fs::write(&ann_path, lines.join("\n")).expect("write jsonl");
        let report = score_files(Metric::RocAuc, &pred_path, &ann_path).expect("score");
        assert!(
            (report.score - expected).abs() <= 1e-12,
            "case {k} via files"
        );
        assert_eq!(report.count, labels.len());
    }
}
