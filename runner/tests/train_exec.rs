//! `runner exec` trains a variant end to end: killed with SIGKILL after a checkpoint and run
//! again, it resumes and records the same per-step losses as an uninterrupted run, and writes the
//! final weights where evaluation reads them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use results::{JobState, Store};

const RUNNER: &str = env!("CARGO_BIN_EXE_runner");

fn experiment(fx: &common::Fixture, path: &Path) {
    let w = fx.world.display();
    let s = common::SIZES;
    let text = format!(
        r#"name = "trainkill"
device = "cpu"

[model]
vision = "{vision}"
language = "{lm}"
perceiver_depth = {pd}
perceiver_latents = {pl}
perceiver_heads = {ph}
perceiver_dim_head = {pdh}
cross_attn_heads = {xh}
cross_attn_dim_head = {xdh}

[train]
steps = 40
lr = 1e-3
warmup_steps = 2
checkpoint_every = 4
keep_checkpoints = 3
seed = 42

[[train.data]]
kind = "pairs"
shards = "{w}/laion/{{000..001}}.tar"
batch_size = 4
loss_weight = 0.2
max_tokens = 24
shuffle_buffer = 8

[[train.data]]
kind = "interleaved"
shards = "{w}/mmc4/{{000..001}}.tar"
batch_size = 2
loss_weight = 1.0
max_tokens = 48
max_images = 2
sim_threshold = 0.0
shuffle_buffer = 8
"#,
        vision = fx.vision.display(),
        lm = fx.lm.display(),
        pd = s.perceiver_depth,
        pl = s.perceiver_latents,
        ph = s.perceiver_heads,
        pdh = s.perceiver_dim_head,
        xh = s.cross_attn_heads,
        xdh = s.cross_attn_dim_head,
    );
    std::fs::write(path, text).unwrap();
}

fn exec(exp: &Path, db: &Path) -> Command {
    let mut c = Command::new(RUNNER);
    c.arg("exec").arg(exp).arg("--db").arg(db);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run_to_end(exp: &Path, db: &Path) -> String {
    let out = exec(exp, db).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// The train job's hash (from `runner plan --json`) and its per-(step, source) losses.
fn losses(exp: &Path, db: &Path) -> (String, BTreeMap<(i64, String), f64>) {
    let out = Command::new(RUNNER)
        .arg("plan")
        .arg(exp)
        .arg("--json")
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "train")
        .and_then(|j| j["hash"].as_str())
        .unwrap()
        .to_string();
    let rows = Store::open(db).unwrap().train_metrics(&hash).unwrap();
    let map = rows
        .into_iter()
        .filter_map(|m| Some(((m.step, m.source), m.loss?)))
        .collect();
    (hash, map)
}

fn train_dir(db: &Path) -> Option<PathBuf> {
    std::fs::read_dir(db.parent()?.join("jobs"))
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("train-"))
        .map(|e| e.path())
}

#[test]
fn sigkilled_training_resumes_to_the_uninterrupted_losses() {
    let fx = common::fixture();
    let exp = fx.root.path().join("exp.toml");
    experiment(&fx, &exp);

    let db_a = fx.root.path().join("a/runs.db");
    let out = run_to_end(&exp, &db_a);
    assert!(out.contains("trainable parameters"), "{out}");
    let (hash_a, la) = losses(&exp, &db_a);
    assert_eq!(la.keys().filter(|(_, s)| s == "all").count(), 40);
    assert!(
        train_dir(&db_a)
            .unwrap()
            .join("weights.safetensors")
            .is_file()
    );

    // Killed once the step-8 checkpoint exists, then run again.
    let db_b = fx.root.path().join("b/runs.db");
    let mut child = exec(&exp, &db_b).spawn().unwrap();
    let started = Instant::now();
    loop {
        let ck = train_dir(&db_b).map(|d| d.join("checkpoints/step-00000008"));
        if ck.is_some_and(|c| c.join("state.json").is_file()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "exec ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = Store::open(&db_b).unwrap();
    let st = store.job_status(std::slice::from_ref(&hash_a)).unwrap();
    assert_ne!(st[&hash_a].state, JobState::Done, "killed before the end");
    assert!(
        !train_dir(&db_b)
            .unwrap()
            .join("weights.safetensors")
            .exists()
    );
    let out = run_to_end(&exp, &db_b);
    assert!(out.contains("resuming from step"), "{out}");
    let (hash_b, lb) = losses(&exp, &db_b);
    assert_eq!(hash_a, hash_b);
    assert_eq!(la.len(), lb.len());
    for (k, a) in &la {
        let b = lb[k];
        assert!((a - b).abs() <= 1e-5, "{k:?}: {a} vs {b}");
    }
    let wa = std::fs::read(train_dir(&db_a).unwrap().join("weights.safetensors")).unwrap();
    let wb = std::fs::read(train_dir(&db_b).unwrap().join("weights.safetensors")).unwrap();
    assert_eq!(wa, wb, "final weights differ");
}
