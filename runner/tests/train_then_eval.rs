//! A trained variant is evaluated with its trained weights: `runner exec` on an experiment with
//! `[train]` and `[eval]` trains, then runs the eval cells from `weights.safetensors` of the train
//! job (small perceiver / cross-attention sizes included), and records them.

mod common;

use runner::config::{self, Overrides};
use runner::exec::{ExecOptions, exec};
use runner::plan::JobKind;

#[test]
fn eval_cells_read_the_trained_weights() {
    let fx = common::fixture();
    let w = fx.world.display();
    let s = common::SIZES;
    let path = fx.root.path().join("train-eval.toml");
    let text = format!(
        r#"name = "train-eval"
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
steps = 3
lr = 1e-3
seed = 42

[[train.data]]
kind = "pairs"
shards = "{w}/laion/{{000..001}}.tar"
batch_size = 2
loss_weight = 1.0
max_tokens = 24
shuffle_buffer = 4

[eval]
datasets = ["coco", "hatefulmemes"]
shots = [0]
seeds = [0]
num_samples = 3
batch_size = 3
num_beams = 2

[eval.paths.coco]
images = "{w}/coco"
karpathy = "{w}/coco/dataset_coco.json"
annotations = "{w}/coco/captions_val2014.json"

[eval.paths.hatefulmemes]
images = "{w}/hatefulmemes/img"
train_annotations = "{w}/hatefulmemes/train.jsonl"
test_annotations = "{w}/hatefulmemes/test_seen.jsonl"
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
    std::fs::write(&path, text).unwrap();
    let loaded = config::load(&path, &Overrides::default()).unwrap();
    let plan = runner::plan::plan(&loaded);
    let db = fx.root.path().join("runs/results.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let summary = exec(&plan, &loaded, &db, &ExecOptions::default()).unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let train = plan.jobs.iter().find(|j| j.kind == JobKind::Train).unwrap();
    let evals: Vec<String> = plan
        .jobs
        .iter()
        .filter(|j| j.kind == JobKind::Eval)
        .map(|j| {
            assert_eq!(j.spec["inputs"]["weights"]["train"], train.hash.as_str());
            j.hash.clone()
        })
        .collect();
    let store = results::Store::open(&db).unwrap();
    let cells = store.eval_cells(&evals).unwrap();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        assert!(c.value.is_finite(), "{c:?}");
        assert_eq!(c.count, 3);
        let fp: serde_json::Value = serde_json::from_str(&c.fingerprint).unwrap();
        assert_eq!(fp["weights"]["train"], train.hash.as_str());
    }
}
