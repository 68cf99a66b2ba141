//! `runner generate` on a released-layout model (the open_flamingo parity fixture): the same
//! token ids and log-probs as the reference, through the experiment file users write.

use std::path::Path;
use std::process::Command;

const RUNNER: &str = env!("CARGO_BIN_EXE_runner");

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/parity")
}

fn experiment(dir: &Path) -> std::path::PathBuf {
    let f = fixture();
    let text = format!(
        "name = \"gen\"\n[model]\nvision = \"{0}/vision/open_clip\"\nlanguage = \"{0}/opt_n1/lm\"\ncheckpoint = \"{0}/opt_n1/checkpoint.pt\"\ncross_attn_every_n_layers = 1\n",
        f.display()
    );
    let p = dir.join("gen.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn generate_json_matches_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("opt_n1/expected.json")).unwrap(),
    )
    .unwrap();
    let p = &expected["prompts"][0];
    let mut cmd = Command::new(RUNNER);
    cmd.arg("generate")
        .arg(&exp)
        .arg("--db")
        .arg(tmp.path().join("r.sqlite"));
    for img in p["images"].as_array().unwrap() {
        cmd.arg("--image")
            .arg(fixture().join("images").join(img.as_str().unwrap()));
    }
    let out = cmd
        .args([
            "--prompt",
            p["text"].as_str().unwrap(),
            "--max-new-tokens",
            "8",
            "--num-beams",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["prompt_ids"], p["ids"]);
    assert_eq!(got["output_ids"], p["beam3"]["new_ids"]);
    let (a, b) = (
        got["prompt_logprobs"].as_array().unwrap(),
        p["logprobs"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-4);
    }
    assert!(got["text"].is_string() && got["output_logprobs"].as_array().unwrap().len() == 6);
}

#[test]
fn generate_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let out = Command::new(RUNNER)
        .arg("generate")
        .arg(&exp)
        .args(["--prompt", "<image>Output:", "--db"])
        .arg(tmp.path().join("r.sqlite"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 <image> token(s) but 0 --image"), "{err}");
    let out = Command::new(RUNNER)
        .arg("generate")
        .arg(&exp)
        .args([
            "--prompt",
            "<image>Output:",
            "--image",
            "/nonexistent.png",
            "--db",
        ])
        .arg(tmp.path().join("r.sqlite"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.png"));
}
