//! Crash safety of `runner exec`: killed with SIGKILL at several points of a run of real stages and
//! re-run, the store holds every finished result exactly once and nothing half-done is marked
//! done; two concurrent `exec` processes never run the same job twice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use results::{JobState, Store};

const RUNNER: &str = env!("CARGO_BIN_EXE_runner");

/// An experiment whose jobs are four synthetic worlds (a tied sweep over seed and directory):
/// real stages that take a few seconds each, each followed by two short pretraining jobs.
fn experiment(dir: &Path, n: usize) -> PathBuf {
    let seeds: Vec<String> = (0..n).map(|i| (i + 1).to_string()).collect();
    let dirs: Vec<String> = (0..n)
        .map(|i| format!("\"{}/world{i}\"", dir.display()))
        .collect();
    let text = format!(
        r#"name = "crash"
extends = ["tiny"]

[data.synth]
dir = "{}/world0"
size = "small"

# Each world's preset backbones are pretrained too; kept to a few steps here.
[pretrain.vision]
steps = 2
batch_size = 4

[pretrain.language]
steps = 2
batch_size = 2
seq_len = 16

[[sweep.tied]]
"data.synth.seed" = [{}]
"data.synth.dir" = [{}]
"#,
        dir.display(),
        seeds.join(", "),
        dirs.join(", ")
    );
    let path = dir.join("crash.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn exec(exp: &Path, db: &Path) -> Command {
    let mut c = Command::new(RUNNER);
    c.arg("exec")
        .arg(exp)
        .arg("--db")
        .arg(db)
        .env("RUNNER_LEASE_SECS", "30");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn synth_jobs(exp: &Path, db: &Path) -> Vec<(String, String)> {
    let out = Command::new(RUNNER)
        .arg("plan")
        .arg(exp)
        .arg("--db")
        .arg(db)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "synth")
        .map(|j| {
            (
                j["hash"].as_str().unwrap().to_string(),
                j["label"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn world_dir(label: &str) -> PathBuf {
    // "synthetic world <dir> (seed N, small)"
    let rest = label.strip_prefix("synthetic world ").unwrap();
    PathBuf::from(rest.rsplit_once(" (").unwrap().0)
}

/// Every job the store marks done has its complete outputs, and no job is recorded twice.
fn check_invariants(db: &Path, jobs: &[(String, String)]) -> usize {
    if !db.exists() {
        return 0;
    }
    let store = Store::open(db).unwrap();
    let hashes: Vec<String> = jobs.iter().map(|(h, _)| h.clone()).collect();
    let st = store.job_status(&hashes).unwrap();
    let mut done = 0;
    for (hash, label) in jobs {
        let Some(s) = st.get(hash) else { continue };
        if s.state == JobState::Done {
            done += 1;
            let dir = world_dir(label);
            let marker = std::fs::read_to_string(dir.join(".runner-job")).unwrap_or_default();
            assert_eq!(
                marker.trim(),
                hash,
                "{label}: marked done without its complete world"
            );
            assert!(dir.join("manifest.json").is_file(), "{label}: no manifest");
        }
    }
    let rows = store.count("SELECT COUNT(*) FROM jobs").unwrap();
    let distinct = store
        .count("SELECT COUNT(DISTINCT hash) FROM jobs")
        .unwrap();
    assert_eq!(rows, distinct);
    done
}

#[test]
fn sigkill_at_several_points_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), 4);
    let db = tmp.path().join("runs/results.sqlite");
    let jobs = synth_jobs(&exp, &db);
    assert_eq!(jobs.len(), 4);

    let mut kills = 0;
    for delay_ms in [300u64, 1500, 3500, 6000] {
        let mut child = exec(&exp, &db).spawn().unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        check_invariants(&db, &jobs);
    }
    assert!(kills >= 2, "the run finished too fast to be killed");

    let out = exec(&exp, &db).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        check_invariants(&db, &jobs),
        4,
        "every world is done after the final run"
    );

    // Each job completed exactly once, and no partial directories remain.
    let store = Store::open(&db).unwrap();
    for (hash, label) in &jobs {
        let n = store
            .count(&format!(
                "SELECT COUNT(*) FROM job_events WHERE job_hash = '{hash}' AND state = 'done'"
            ))
            .unwrap();
        assert_eq!(n, 1, "{label} finished {n} times");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    // A partial directory of a killed job is replaced when the job re-runs.
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A world deleted by hand is written again by the next exec; the others are skipped.
    let (h0, l0) = &jobs[0];
    std::fs::remove_dir_all(world_dir(l0)).unwrap();
    let out = exec(&exp, &db).output().unwrap();
    assert!(out.status.success());
    assert_eq!(check_invariants(&db, &jobs), 4);
    let runs = |h: &str| {
        store
            .count(&format!(
                "SELECT COUNT(*) FROM job_events WHERE job_hash = '{h}' AND state = 'done'"
            ))
            .unwrap()
    };
    assert_eq!(runs(h0), 2);
    assert_eq!(runs(&jobs[1].0), 1);
}

#[test]
fn two_concurrent_execs_never_run_a_job_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), 4);
    let db = tmp.path().join("runs/results.sqlite");
    let jobs = synth_jobs(&exp, &db);
    let a = exec(&exp, &db).spawn().unwrap();
    let b = exec(&exp, &db).spawn().unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert!(
        ob.status.success(),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    assert_eq!(check_invariants(&db, &jobs), 4);
    let store = Store::open(&db).unwrap();
    for (hash, label) in &jobs {
        let claims = store
            .count(&format!(
                "SELECT COUNT(*) FROM job_events WHERE job_hash = '{hash}' AND state = 'running'"
            ))
            .unwrap();
        assert_eq!(claims, 1, "{label} was claimed {claims} times");
    }
}

/// A failed job is recorded with its error and the run goes on; `--fail-fast` stops at it; the
/// next `exec` retries it.
#[test]
fn failures_are_recorded_and_the_run_goes_on_unless_fail_fast() {
    let tmp = tempfile::tempdir().unwrap();
    // The first world's directory cannot be created: its parent is a regular file.
    std::fs::write(tmp.path().join("blocker"), "not a directory").unwrap();
    let text = format!(
        r#"name = "fail"
extends = ["tiny"]

[data.synth]
dir = "{0}/w"
size = "tiny"

[pretrain.vision]
steps = 2
batch_size = 4

[pretrain.language]
steps = 2
batch_size = 2
seq_len = 16

[[sweep.tied]]
"data.synth.seed" = [1, 2]
"data.synth.dir" = ["{0}/blocker/w1", "{0}/w2"]
"#,
        tmp.path().display()
    );
    let exp = tmp.path().join("fail.toml");
    std::fs::write(&exp, text).unwrap();

    let db = tmp.path().join("ff.sqlite");
    // One worker: with two (`tiny` sets `jobs = 2`), the other world may already be running when
    // the first fails, and a job in flight is finished, not abandoned.
    let out = exec(&exp, &db)
        .args(["--fail-fast", "--jobs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'done'")
            .unwrap(),
        0,
        "--fail-fast stops"
    );

    let db = tmp.path().join("go-on.sqlite");
    let mut cmd = exec(&exp, &db);
    let out = cmd.stdout(Stdio::piped()).output().unwrap();
    assert!(
        !out.status.success(),
        "a failed job makes exec exit non-zero"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED synthetic world") && stdout.contains("blocker"),
        "{stdout}"
    );
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'done' AND kind = 'synth'")
            .unwrap(),
        1,
        "the run went on"
    );
    let err: String = store
        .count("SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND error LIKE '%blocker%'")
        .unwrap()
        .to_string();
    assert_eq!(err, "1", "the error names the path");

    // Fixed, the next exec retries the failed job and skips the done one.
    std::fs::remove_file(tmp.path().join("blocker")).unwrap();
    let out = exec(&exp, &db).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'done' AND kind = 'synth'")
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count("SELECT MAX(attempts) FROM jobs WHERE kind = 'synth'")
            .unwrap(),
        2
    );
}
