//! The embedded default end to end, reduced (a tiny world, few steps and samples) but through the
//! same code path: `runner exec experiments/frozen_embeddings.toml`, then `runner report`,
//! `runner report --vs flamingo` and `runner report --plot`.

use std::path::Path;
use std::process::Command;

use results::Store;

const RUNNER: &str = env!("CARGO_BIN_EXE_runner");

/// Overrides that shrink the default run to seconds.
const REDUCED: &[&str] = &[
    "data.synth.size=tiny",
    "pretrain.vision.steps=4",
    "pretrain.language.steps=4",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "eval.shots=[0,4]",
    "eval.seeds=[42,43]",
    "eval.num_samples=3",
    "eval.query_set_size=16",
];

/// Runs `runner` in `dir`: the experiment's data paths are relative to the working directory.
fn runner(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(RUNNER)
        .current_dir(dir)
        .args(args)
        .env("RUNNER_LEASE_SECS", "30")
        .output()
        .unwrap()
}

#[test]
fn reduced_default_run_exec_report_plot() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    std::fs::copy(
        repo.join("experiments/frozen_embeddings.toml"),
        dir.join("experiments/frozen_embeddings.toml"),
    )
    .unwrap();

    let mut args = vec!["exec", "experiments/frozen_embeddings.toml"];
    for s in REDUCED {
        args.push("--set");
        args.push(s);
    }
    let out = runner(dir, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exec failed:\n{stdout}\n{stderr}");

    let store = Store::open(&dir.join("runs/results.sqlite")).unwrap();
    let count = |sql: &str| store.count(sql).unwrap();
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state != 'done'"),
        0,
        "{stdout}"
    );
    assert_eq!(count("SELECT COUNT(*) FROM eval_cells"), 2 * 7 * 2 * 2);
    assert_eq!(
        count("SELECT COUNT(*) FROM eval_cells WHERE value IS NULL"),
        0
    );
    assert!(count("SELECT COUNT(*) FROM predictions") >= 2 * 7 * 2 * 2 * 3);
    assert!(count("SELECT COUNT(*) FROM train_metrics WHERE loss IS NOT NULL") > 0);
    assert!(dir.join("runs/world/manifest.json").is_file());
    // The default runs two jobs at once (`jobs = 2`): both workers claimed jobs.
    assert_eq!(
        count("SELECT COUNT(DISTINCT owner) FROM job_events WHERE owner IS NOT NULL"),
        2,
        "{stdout}"
    );

    // Running it again does nothing: every job is done.
    let again = runner(dir, &args);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("ran 0 job(s)"));

    let report = runner(dir, &["report", "--format", "json"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(json.to_string().contains("special_embeddings=frozen"));

    let vs = runner(dir, &["report", "--vs", "flamingo", "--format", "markdown"]);
    assert!(
        vs.status.success(),
        "{}",
        String::from_utf8_lossy(&vs.stderr)
    );
    let text = String::from_utf8_lossy(&vs.stdout);
    assert!(
        text.contains("synthetic world") && text.contains("Flamingo-3B"),
        "{text}"
    );

    // The four VQA tasks of the synthetic world carry answer types: rows per task and type.
    let groups = runner(
        dir,
        &["report", "--groups", "answer_type", "--format", "csv"],
    );
    assert!(
        groups.status.success(),
        "{}",
        String::from_utf8_lossy(&groups.stderr)
    );
    let text = String::from_utf8_lossy(&groups.stdout);
    for row in ["vqav2: ", "okvqa: ", "vizwiz: ", "textvqa: other"] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    assert!(
        !text.contains("coco") && !text.contains("hatefulmemes"),
        "{text}"
    );

    let plots = dir.join("plots");
    let p = runner(dir, &["report", "--plot", plots.to_str().unwrap()]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    for name in [
        "pct_flamingo.svg",
        "pct_flamingo.png",
        "shots_coco.svg",
        "shots_coco.png",
    ] {
        let f = plots.join(name);
        assert!(
            f.is_file() && std::fs::metadata(&f).unwrap().len() > 100,
            "{name} missing"
        );
    }
    let losses: Vec<_> = std::fs::read_dir(&plots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loss_"))
        .collect();
    assert!(!losses.is_empty(), "no loss curve plotted");
}
