//! Table-driven: bad experiment files each give an error naming the right key path and file.

use std::path::Path;

use runner::config::{self, Overrides};

/// The embedded default's templates, so each case only writes what is wrong.
const BASE: &str = r#"name = "bad"
extends = ["tiny", "synthetic-world", "synthetic-mix", "flamingo-eval"]
"#;

struct Case {
    what: &'static str,
    toml: &'static str,
    key: &'static str,
    message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "unknown top-level key",
        toml: "modle = 1\n",
        key: "modle",
        message: "did you mean `model`",
    },
    Case {
        what: "unknown train key",
        toml: "[train]\nlrr = 0.1\n",
        key: "train.lrr",
        message: "did you mean `lr`",
    },
    Case {
        what: "unknown eval key",
        toml: "[eval]\nshot = [0]\n",
        key: "eval.shot",
        message: "did you mean `shots`",
    },
    Case {
        what: "unknown model key",
        toml: "[model]\ncross_attn_every = 2\n",
        key: "model.cross_attn_every",
        message: "did you mean `cross_attn_every_n_layers`",
    },
    Case {
        what: "wrong type",
        toml: "[train]\nsteps = \"many\"\n",
        key: "train.steps",
        message: "expected an integer",
    },
    Case {
        what: "wrong enum value",
        toml: "[model]\nspecial_embeddings = \"frozn\"\n",
        key: "model.special_embeddings",
        message: "did you mean `frozen`",
    },
    Case {
        what: "empty datasets",
        toml: "[eval]\ndatasets = []\n",
        key: "eval.datasets",
        message: "grid is empty",
    },
    Case {
        what: "empty shots",
        toml: "[eval]\nshots = []\n",
        key: "eval.shots",
        message: "grid is empty",
    },
    Case {
        what: "empty seeds",
        toml: "[eval]\nseeds = []\n",
        key: "eval.seeds",
        message: "grid is empty",
    },
    Case {
        what: "negative shots",
        toml: "[eval]\nshots = [0, -4]\n",
        key: "eval.shots.1",
        message: "must be >= 0",
    },
    Case {
        what: "unknown dataset",
        toml: "[eval]\ndatasets = [\"coco\", \"vqa2\"]\n",
        key: "eval.datasets.1",
        message: "did you mean `vqav2`",
    },
    Case {
        what: "interval zero",
        toml: "[model]\ncross_attn_every_n_layers = 0\n",
        key: "model.cross_attn_every_n_layers",
        message: "at least 1",
    },
    Case {
        what: "interval deeper than LM",
        toml: "[model]\ncross_attn_every_n_layers = 9\n",
        key: "model.cross_attn_every_n_layers",
        message: "larger than the language model's 4 layers",
    },
    Case {
        what: "negative loss weight",
        toml: "[[train.data]]\nkind = \"pairs\"\nshards = \"runs/world/laion/000.tar\"\nbatch_size = 8\nloss_weight = -0.2\n",
        key: "train.data.0.loss_weight",
        message: "must be >= 0",
    },
    Case {
        what: "missing data path",
        toml: "#full\nname = \"bad\"\nextends = [\"tiny\", \"flamingo-eval\"]\n[eval]\ndatasets = [\"coco\"]\n[eval.paths.coco]\nimages = \"/tmp\"\nannotations = \"/tmp\"\n",
        key: "eval.paths.coco.karpathy",
        message: "missing",
    },
    Case {
        what: "empty data path",
        toml: "[eval.paths.coco]\nkarpathy = \"\"\n",
        key: "eval.paths.coco.karpathy",
        message: "must not be empty",
    },
    Case {
        what: "nonexistent data path",
        toml: "[eval.paths.hatefulmemes]\nimages = \"/nonexistent/img\"\n",
        key: "eval.paths.hatefulmemes.images",
        message: "no such file",
    },
    Case {
        what: "nonexistent shards",
        toml: "[[train.data]]\nkind = \"pairs\"\nshards = \"/nonexistent/{000..003}.tar\"\nbatch_size = 8\nloss_weight = 0.2\n",
        key: "train.data.0.shards",
        message: "4 of 4 shard files do not exist",
    },
    Case {
        what: "bad brace pattern",
        toml: "[[train.data]]\nkind = \"pairs\"\nshards = \"runs/world/laion/{000..003.tar\"\nbatch_size = 8\nloss_weight = 0.2\n",
        key: "train.data.0.shards",
        message: "unbalanced",
    },
    Case {
        what: "zero batch size",
        toml: "[[train.data]]\nkind = \"pairs\"\nshards = \"runs/world/laion/000.tar\"\nbatch_size = 0\nloss_weight = 0.2\n",
        key: "train.data.0.batch_size",
        message: "at least 1",
    },
    Case {
        what: "unknown source kind",
        toml: "[[train.data]]\nkind = \"interleavd\"\nshards = \"runs/world/laion/000.tar\"\nbatch_size = 1\nloss_weight = 1.0\n",
        key: "train.data.0.kind",
        message: "did you mean `interleaved`",
    },
    Case {
        what: "empty data mix",
        toml: "[train]\ndata = []\n",
        key: "train.data",
        message: "data mix is empty",
    },
    Case {
        what: "negative lr",
        toml: "[train]\nlr = -1e-4\n",
        key: "train.lr",
        message: "must be positive",
    },
    Case {
        what: "zero steps",
        toml: "[train]\nsteps = 0\n",
        key: "train.steps",
        message: "at least 1",
    },
    Case {
        what: "long rows longer than the positions",
        toml: "[pretrain.language]\nlong_seq_len = 2048\n",
        key: "pretrain.language.long_seq_len",
        message: "exceeds max_positions 1024",
    },
    Case {
        what: "zero long period",
        toml: "[pretrain.language]\nlong_every = 0\n",
        key: "pretrain.language.long_every",
        message: "at least 1",
    },
    Case {
        what: "bad device",
        toml: "device = \"tpu\"\n",
        key: "device",
        message: "unknown device",
    },
    Case {
        what: "unknown vision preset",
        toml: "[model]\nvision = \"huge-vit\"\n",
        key: "model.vision",
        message: "neither the preset `tiny-vit`",
    },
    Case {
        what: "missing checkpoint file",
        toml: "[model]\ncheckpoint = \"/nonexistent/checkpoint.pt\"\n",
        key: "model.checkpoint",
        message: "no such file",
    },
    Case {
        what: "unknown dataset in paths",
        toml: "[eval.paths.cocoo]\nimages = \"x\"\n",
        key: "eval.paths.cocoo",
        message: "did you mean `coco`",
    },
    Case {
        what: "zero num_samples",
        toml: "[eval]\nnum_samples = 0\n",
        key: "eval.num_samples",
        message: "at least 1",
    },
    Case {
        what: "duplicate seed",
        toml: "[eval]\nseeds = [1, 1]\n",
        key: "eval.seeds.1",
        message: "listed twice",
    },
    Case {
        what: "tied bundle of unequal lengths",
        toml: "[[sweep.tied]]\n\"model.cross_attn_every_n_layers\" = [1, 2]\n\"train.lr\" = [1e-4]\n",
        key: "sweep.tied.0",
        message: "equal lengths",
    },
    Case {
        what: "sweep over an unknown key",
        toml: "[sweep]\n\"train.lrr\" = [1e-4, 3e-4]\n",
        key: "train.lrr",
        message: "did you mean `lr`",
    },
    Case {
        what: "sweep value of the wrong type",
        toml: "[sweep]\n\"model.cross_attn_every_n_layers\" = [\"two\"]\n",
        key: "model.cross_attn_every_n_layers",
        message: "expected an integer",
    },
    Case {
        what: "pretrain patch does not divide",
        toml: "[pretrain.vision]\nname = \"tiny-vit\"\nimage_size = 64\npatch_size = 7\nwidth = 64\nlayers = 1\nheads = 4\nembed_dim = 8\nsteps = 1\nbatch_size = 1\nlr = 0.1\n",
        key: "pretrain.vision.patch_size",
        message: "does not divide",
    },
    Case {
        what: "missing name",
        toml: "",
        key: "name",
        message: "missing required key",
    },
];

#[test]
fn each_bad_file_names_its_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        let text = if let Some(full) = case.toml.strip_prefix("#full\n") {
            full.to_string()
        } else if case.key == "name" {
            BASE.replace("name = \"bad\"\n", "")
        } else {
            format!("{BASE}{}", case.toml)
        };
        std::fs::write(&path, text).unwrap();
        let err = match config::load(&path, &Overrides::default()) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.what));
                continue;
            }
            Err(e) => e,
        };
        let shown = err.to_string();
        let hit = err.0.iter().any(|e| {
            let origin = e.origin.as_ref().map(|o| o.to_string()).unwrap_or_default();
            e.key == case.key
                && e.message.contains(case.message)
                && origin.contains(&format!("case{i}.toml"))
        });
        if !hit {
            failures.push(format!(
                "{}: expected key `{}` with `{}` in case{i}.toml, got:\n{shown}",
                case.what, case.key, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_carry_line_numbers_where_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(&path, format!("{BASE}\n[train]\nsteps = 10\nlrr = 0.1\n")).unwrap();
    let err = config::load(&path, &Overrides::default()).unwrap_err();
    assert_eq!(err.0[0].line, Some(6), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:6: `train.lrr`", path.display())),
        "{err}"
    );
}

#[test]
fn invalid_toml_and_missing_files_and_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.toml");
    std::fs::write(&p, "name = \"x\"\n[model\n").unwrap();
    let e = config::load(&p, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.toml:2") && e.contains("invalid TOML"),
        "{e}"
    );

    let e = config::load(Path::new("/nonexistent/exp.toml"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/exp.toml") && e.contains("cannot read"),
        "{e}"
    );

    std::fs::write(dir.path().join("a.toml"), "extends = [\"b.toml\"]\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "extends = [\"a.toml\"]\n").unwrap();
    let e = config::load(&dir.path().join("a.toml"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cycle") && e.contains("a.toml") && e.contains("b.toml"),
        "{e}"
    );

    let p = dir.path().join("unknown_template.toml");
    std::fs::write(&p, "name = \"x\"\nextends = [\"tinyy\"]\n").unwrap();
    let e = config::load(&p, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown template `tinyy`") && e.contains("unknown_template.toml:2"),
        "{e}"
    );
}

#[test]
fn override_errors_name_the_variable_or_argument() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, BASE).unwrap();
    let env = Overrides {
        env: vec![("RUNNER_TRAIN__STEPS".into(), "abc".into())],
        set: vec![],
    };
    let e = config::load(&p, &env).unwrap_err().to_string();
    assert!(
        e.contains("environment variable RUNNER_TRAIN__STEPS") && e.contains("train.steps"),
        "{e}"
    );
    let set = Overrides {
        env: vec![],
        set: vec!["eval.shots=[0,-1]".into()],
    };
    let e = config::load(&p, &set).unwrap_err().to_string();
    assert!(
        e.contains("--set eval.shots=[0,-1]") && e.contains("eval.shots.1"),
        "{e}"
    );
    let set = Overrides {
        env: vec![],
        set: vec!["train.lr".into()],
    };
    let e = config::load(&p, &set).unwrap_err().to_string();
    assert!(e.contains("expected key=value"), "{e}");
}
