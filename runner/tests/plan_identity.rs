//! Composition and override precedence, sweep expansion counts, and job-hash stability.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use runner::config::{self, Overrides};
use runner::plan::{self, JobKind, Plan};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn plan_of(path: &Path, o: &Overrides) -> Plan {
    let loaded = config::load(path, o).unwrap_or_else(|e| panic!("{e}"));
    plan::plan(&loaded)
}

fn hashes(p: &Plan, kind: JobKind) -> BTreeMap<String, String> {
    p.jobs
        .iter()
        .filter(|j| j.kind == kind)
        .map(|j| (j.label.clone(), j.hash.clone()))
        .collect()
}

#[test]
fn frozen_embeddings_expands_to_two_variants_and_210_cells() {
    let p = plan_of(
        &repo().join("experiments/frozen_embeddings.toml"),
        &Overrides::default(),
    );
    assert_eq!(p.variants.len(), 2);
    let count = |k| p.jobs.iter().filter(|j| j.kind == k).count();
    assert_eq!(count(JobKind::Eval), 2 * 7 * 5 * 3);
    assert_eq!(count(JobKind::Train), 2);
    assert_eq!(
        count(JobKind::Pretrain),
        2,
        "backbones are shared by both variants"
    );
    assert_eq!(count(JobKind::Synth), 1);
    let names: HashSet<_> = p.variants.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from(["special_embeddings=trainable", "special_embeddings=frozen"])
    );
    // Dependencies come first.
    let pos: BTreeMap<&str, usize> = p
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.hash.as_str(), i))
        .collect();
    for (i, j) in p.jobs.iter().enumerate() {
        for d in &j.deps {
            assert!(pos[d.as_str()] < i, "{} before its dependency", j.label);
        }
    }
}

#[test]
fn cartesian_product_and_tied_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sweep.toml");
    std::fs::write(
        &f,
        r#"name = "s"
extends = ["tiny", "synthetic-world", "synthetic-mix", "flamingo-eval"]
[eval]
datasets = ["coco"]
shots = [0]
seeds = [1]
[sweep]
"model.special_embeddings" = ["trainable", "frozen"]
"train.lr" = [1e-4, 3e-4, 1e-3]
[[sweep.tied]]
"model.cross_attn_every_n_layers" = [1, 2]
"train.steps" = [100, 200]
"#,
    )
    .unwrap();
    let loaded = config::load(&f, &Overrides::default()).unwrap();
    assert_eq!(loaded.variants.len(), 2 * 3 * 2);
    let v = loaded
        .variants
        .iter()
        .find(|v| v.name.contains("cross_attn_every_n_layers=2"))
        .unwrap();
    assert_eq!(
        v.experiment.train.as_ref().unwrap().steps,
        200,
        "tied values move together"
    );
    assert!(v.name.contains("steps=200"));
    let p = plan::plan(&loaded);
    assert_eq!(
        p.jobs.iter().filter(|j| j.kind == JobKind::Train).count(),
        12
    );
}

#[test]
fn precedence_templates_then_file_then_env_then_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/base.toml"),
        "[train]\nsteps = 1\nlr = 0.5\nwarmup_steps = 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/more.toml"),
        "[train]\nsteps = 2\n",
    )
    .unwrap();
    let f = dir.path().join("exp.toml");
    std::fs::write(
        &f,
        "name = \"p\"\nextends = [\"tiny\", \"synthetic-world\", \"synthetic-mix\", \"flamingo-eval\", \"base\", \"more\"]\n[train]\nlr = 0.25\n",
    )
    .unwrap();
    let load = |o: Overrides| config::load(&f, &o).unwrap().composed.experiment;
    let e = load(Overrides::default());
    let t = e.train.as_ref().unwrap();
    // Later templates win over earlier ones; the file wins over templates; deep merge keeps the rest.
    assert_eq!((t.steps, t.lr, t.warmup_steps), (2, 0.25, 7));
    assert_eq!(
        t.data.len(),
        3,
        "arrays of tables come from the mix template"
    );
    let e = load(Overrides {
        env: vec![
            ("RUNNER_TRAIN__LR".into(), "0.125".into()),
            ("RUNNER_DB".into(), "x.sqlite".into()),
        ],
        set: vec![],
    });
    assert_eq!(
        e.train.unwrap().lr,
        0.125,
        "env beats the file; RUNNER_DB is not an experiment key"
    );
    let e = load(Overrides {
        env: vec![("RUNNER_TRAIN__LR".into(), "0.125".into())],
        set: vec![
            "train.lr=0.0625".into(),
            "eval.shots=[0, 4]".into(),
            "model.ln_post_tokens=true".into(),
            "eval.demos=rices".into(),
        ],
    });
    assert_eq!(e.train.as_ref().unwrap().lr, 0.0625, "--set beats env");
    let ev = e.eval.as_ref().unwrap();
    assert_eq!(ev.shots, vec![0, 4]);
    assert_eq!(
        ev.demos,
        runner::config::schema::Demos::Rices,
        "bare strings are strings"
    );
    assert!(e.model.ln_post_tokens);
    // The resolved TOML round-trips to the same experiment.
    let text = config::to_toml(&e);
    assert!(text.contains("lr = 0.0625"), "{text}");
    let again: runner::config::Experiment = toml::from_str(&text).unwrap();
    assert_eq!(again, e);
}

#[test]
fn hashes_ignore_name_description_file_name_and_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("renamed.toml");
    std::fs::write(
        &a,
        "name = \"one\"\ndescription = \"first\"\nextends = [\"tiny\", \"synthetic-world\", \"synthetic-mix\", \"flamingo-eval\"]\n[train]\nsteps = 50\nlr = 2e-4\n[eval]\nnum_samples = 20\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "name = \"two\"\ndescription = \"another text\"\nextends = [\"tiny\", \"synthetic-world\", \"synthetic-mix\", \"flamingo-eval\"]\n[eval]\nnum_samples = 20\n[train]\nlr = 2e-4\nsteps = 50\n",
    )
    .unwrap();
    let pa = plan_of(&a, &Overrides::default());
    let pb = plan_of(&b, &Overrides::default());
    let ha: Vec<_> = pa.jobs.iter().map(|j| &j.hash).collect();
    let hb: Vec<_> = pb.jobs.iter().map(|j| &j.hash).collect();
    assert_eq!(ha, hb);
}

#[test]
fn lr_changes_training_and_eval_hashes_seeds_change_no_training_hash() {
    let f = repo().join("experiments/frozen_embeddings.toml");
    let base = plan_of(&f, &Overrides::default());
    let lr = plan_of(
        &f,
        &Overrides {
            env: vec![],
            set: vec!["train.lr=3e-4".into()],
        },
    );
    let seeds = plan_of(
        &f,
        &Overrides {
            env: vec![],
            set: vec!["eval.seeds=[1,2,3]".into()],
        },
    );
    let cadence = plan_of(
        &f,
        &Overrides {
            env: vec![],
            set: vec![
                "train.checkpoint_every=7".into(),
                "eval.batch_size=3".into(),
            ],
        },
    );

    assert_eq!(hashes(&base, JobKind::Synth), hashes(&lr, JobKind::Synth));
    assert_eq!(
        hashes(&base, JobKind::Pretrain),
        hashes(&lr, JobKind::Pretrain)
    );
    let (bt, lt) = (hashes(&base, JobKind::Train), hashes(&lr, JobKind::Train));
    assert!(
        bt.values().all(|h| !lt.values().any(|x| x == h)),
        "every training hash changes with lr"
    );
    let (be, le) = (hashes(&base, JobKind::Eval), hashes(&lr, JobKind::Eval));
    assert!(
        be.values().all(|h| !le.values().any(|x| x == h)),
        "every eval hash changes with lr"
    );

    assert_eq!(
        hashes(&base, JobKind::Train),
        hashes(&seeds, JobKind::Train)
    );
    assert_ne!(hashes(&base, JobKind::Eval), hashes(&seeds, JobKind::Eval));

    // Checkpoint cadence and eval batch size do not change results, so no hash changes.
    let all = |p: &Plan| p.jobs.iter().map(|j| j.hash.clone()).collect::<Vec<_>>();
    assert_eq!(all(&base), all(&cadence));
}

#[test]
fn eval_hash_follows_annotation_file_contents() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("test.jsonl");
    let train = dir.path().join("train.jsonl");
    std::fs::write(
        &ann,
        "{\"id\": 1, \"img\": \"img/1.png\", \"label\": 0, \"text\": \"a\"}\n",
    )
    .unwrap();
    std::fs::write(
        &train,
        "{\"id\": 2, \"img\": \"img/2.png\", \"label\": 1, \"text\": \"b\"}\n",
    )
    .unwrap();
    let f = dir.path().join("e.toml");
    std::fs::write(
        &f,
        format!(
            "name = \"h\"\nextends = [\"tiny\", \"synthetic-world\", \"synthetic-mix\", \"flamingo-eval\"]\n[eval]\ndatasets = [\"hatefulmemes\"]\nshots = [0]\nseeds = [1]\n[eval.paths.hatefulmemes]\nimages = \"{}\"\ntrain_annotations = \"{}\"\ntest_annotations = \"{}\"\n",
            dir.path().display(),
            train.display(),
            ann.display()
        ),
    )
    .unwrap();
    let before = hashes(&plan_of(&f, &Overrides::default()), JobKind::Eval);
    std::fs::write(
        &ann,
        "{\"id\": 1, \"img\": \"img/1.png\", \"label\": 1, \"text\": \"a\"}\n",
    )
    .unwrap();
    let after = hashes(&plan_of(&f, &Overrides::default()), JobKind::Eval);
    assert_ne!(before, after);
}
