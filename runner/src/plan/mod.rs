//! Planning: variants x stages -> jobs, each identified by the hash of the resolved inputs that
//! determine its result (design.md §2).
//!
//! Stages, in dependency order: `synth` (the synthetic world), `pretrain` (preset backbones),
//! `train` (Flamingo training per variant), `eval` (one cell per dataset x shots x seed). Jobs with
//! equal hashes are one job, shared by every variant (and experiment) that needs it.

pub mod hash;

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::schema::{DatasetPaths, EvalConfig, TrainConfig};
use crate::config::{Loaded, Variant};
use hash::{hash_json, sha256_file};

/// Bumped when a stage's code changes what it produces, so old results are not reused. The synth
/// stage's is the world's [`FORMAT_VERSION`](crate::data::synth::FORMAT_VERSION): the two moved
/// together, and a world change that bumped only one of them would reuse a stale world.
pub const STAGE_VERSIONS: [(&str, u32); 4] = [
    ("synth", crate::data::synth::FORMAT_VERSION),
    ("pretrain", 2),
    ("train", 1),
    ("eval", 1),
];

fn stage_version(kind: &str) -> u32 {
    STAGE_VERSIONS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// The kind of work a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Write the synthetic world.
    Synth,
    /// Build a preset backbone.
    Pretrain,
    /// Train a Flamingo variant.
    Train,
    /// Evaluate one cell of the grid.
    Eval,
}

impl JobKind {
    /// Lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Synth => "synth",
            JobKind::Pretrain => "pretrain",
            JobKind::Train => "train",
            JobKind::Eval => "eval",
        }
    }
}

/// One job of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// What it does.
    pub kind: JobKind,
    /// Content hash: the job's identity.
    pub hash: String,
    /// Variants that need this job.
    pub variants: Vec<String>,
    /// Hashes of the jobs whose results this one reads.
    pub deps: Vec<String>,
    /// Short human description.
    pub label: String,
    /// For eval cells: dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// For eval cells: number of shots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shots: Option<i64>,
    /// For eval cells: demonstration seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The resolved inputs the hash is computed from (plus the stage version).
    pub spec: Value,
}

/// A plan: its jobs in dependency order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Experiment name.
    pub name: String,
    /// Hash of the resolved experiment (all variants).
    pub experiment_hash: String,
    /// The resolved experiment as TOML.
    pub resolved: String,
    /// Variants with their dotted-key overrides.
    pub variants: Vec<(String, Value)>,
    /// Jobs, dependencies first.
    pub jobs: Vec<Job>,
}

impl Plan {
    /// Hashes of a variant's jobs.
    pub fn variant_jobs(&self, variant: &str) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.variants.iter().any(|v| v == variant))
            .map(|j| j.hash.clone())
            .collect()
    }
}

/// Makes the plan of a loaded experiment.
pub fn plan(loaded: &Loaded) -> Plan {
    let mut jobs: Vec<Job> = Vec::new();
    for v in &loaded.variants {
        for job in variant_jobs(v) {
            match jobs.iter_mut().find(|j| j.hash == job.hash) {
                Some(existing) => existing.variants.push(v.name.clone()),
                None => jobs.push(job),
            }
        }
    }
    // Stable order: by stage, then first appearance.
    jobs.sort_by_key(|j| j.kind);
    let resolved = crate::config::to_toml(&loaded.composed.experiment);
    let mut identity = serde_json::to_value(&loaded.composed.experiment).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut identity {
        m.remove("description");
        // How many jobs run at once changes no result.
        m.remove("jobs");
    }
    Plan {
        name: loaded.composed.experiment.name.clone(),
        experiment_hash: hash_json(&identity),
        resolved,
        variants: loaded
            .variants
            .iter()
            .map(|v| {
                let o: serde_json::Map<String, Value> = v
                    .overrides
                    .iter()
                    .map(|(k, x)| (k.clone(), serde_json::to_value(x).unwrap_or(Value::Null)))
                    .collect();
                (v.name.clone(), Value::Object(o))
            })
            .collect(),
        jobs,
    }
}

fn job(kind: JobKind, variant: &str, deps: Vec<String>, label: String, spec: Value) -> Job {
    let spec =
        json!({"stage": kind.as_str(), "version": stage_version(kind.as_str()), "inputs": spec});
    Job {
        kind,
        hash: hash_json(&spec),
        variants: vec![variant.to_string()],
        deps,
        label,
        dataset: None,
        shots: None,
        seed: None,
        spec,
    }
}

/// The jobs one variant needs, dependencies first.
fn variant_jobs(v: &Variant) -> Vec<Job> {
    let e = &v.experiment;
    let mut out = Vec::new();

    let synth = e.data.synth.as_ref().map(|s| {
        job(
            JobKind::Synth,
            &v.name,
            vec![],
            format!("synthetic world {} (seed {}, {})", s.dir, s.seed, s.size),
            json!({"dir": s.dir, "seed": s.seed, "size": s.size}),
        )
    });
    let synth_hash = synth.as_ref().map(|j| j.hash.clone());
    let synth_dir = e.data.synth.as_ref().map(|s| s.dir.clone());
    let data_deps: Vec<String> = synth_hash.iter().cloned().collect();
    out.extend(synth);

    // Identity of a data file: produced by this experiment's synth stage (its hash), or its bytes.
    let file_identity = |p: &str| -> Value {
        if synth_dir
            .as_deref()
            .is_some_and(|d| Path::new(p).starts_with(d))
        {
            json!({"path": p, "from": synth_hash})
        } else {
            match sha256_file(Path::new(p)) {
                Ok(h) => json!({"path": p, "sha256": h}),
                Err(_) => json!({"path": p}),
            }
        }
    };

    // Backbones: preset (a pretrain job) or a directory (its config).
    let mut backbone = |which: &str, value: &str| -> (Value, Vec<String>) {
        let preset = match which {
            "vision" => e
                .pretrain
                .vision
                .as_ref()
                .filter(|p| p.name == value)
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
            _ => e
                .pretrain
                .language
                .as_ref()
                .filter(|p| p.name == value)
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
        };
        match preset {
            Some(mut cfg) => {
                if let Value::Object(m) = &mut cfg {
                    m.remove("name");
                }
                let j = job(
                    JobKind::Pretrain,
                    &v.name,
                    data_deps.clone(),
                    format!("pretrain {which} backbone `{value}`"),
                    json!({"backbone": which, "config": cfg, "data": synth_hash}),
                );
                let id = json!({"pretrain": j.hash});
                let deps = vec![j.hash.clone()];
                out.push(j);
                (id, deps)
            }
            None => (dir_identity(Path::new(value)), vec![]),
        }
    };
    let (vision_id, mut model_deps) = backbone("vision", &e.model.vision);
    let (lm_id, lm_deps) = backbone("language", &e.model.language);
    model_deps.extend(lm_deps);
    let checkpoint_id = if e.model.checkpoint.is_empty() {
        Value::Null
    } else {
        file_identity(&e.model.checkpoint)
    };
    let model = json!({
        "vision": vision_id,
        "language": lm_id,
        "checkpoint": checkpoint_id,
        "cross_attn_every_n_layers": e.model.cross_attn_every_n_layers,
        "special_embeddings": e.model.special_embeddings,
        "ln_post_tokens": e.model.ln_post_tokens,
        "sizes": e.model.sizes(),
    });

    // The weights evaluation reads: the trained variant, or the model as configured.
    let (weights, weight_deps) = match &e.train {
        Some(t) => {
            let j = job(
                JobKind::Train,
                &v.name,
                [model_deps.clone(), data_deps.clone()].concat(),
                format!("train {}", v.name),
                json!({"model": model, "train": train_identity(t, &file_identity)}),
            );
            let id = json!({"train": j.hash});
            let deps = vec![j.hash.clone()];
            out.push(j);
            (id, deps)
        }
        None => (model, model_deps),
    };

    if let Some(ev) = &e.eval {
        for dataset in &ev.datasets {
            let paths = ev.paths.get(dataset).cloned().unwrap_or_default();
            let data = dataset_identity(dataset, &paths, &file_identity);
            for &shots in &ev.shots {
                for &seed in &ev.seeds {
                    let mut j = job(
                        JobKind::Eval,
                        &v.name,
                        [weight_deps.clone(), data_deps.clone()].concat(),
                        format!("eval {dataset} {shots}-shot seed {seed} [{}]", v.name),
                        json!({
                            "weights": weights,
                            "precision": e.model.precision,
                            "dataset": dataset,
                            "data": data,
                            "shots": shots,
                            "seed": seed,
                            "protocol": eval_identity(ev),
                        }),
                    );
                    j.dataset = Some(dataset.clone());
                    j.shots = Some(shots);
                    j.seed = Some(seed);
                    out.push(j);
                }
            }
        }
    }
    out
}

/// The training settings that change results (not checkpoint cadence or logging).
fn train_identity(t: &TrainConfig, file_identity: &dyn Fn(&str) -> Value) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for k in ["checkpoint_every", "keep_checkpoints", "log_every"] {
            m.remove(k);
        }
        if let Some(Value::Array(sources)) = m.get_mut("data") {
            for (src, cfg) in sources.iter_mut().zip(&t.data) {
                if let Value::Object(s) = src {
                    let files = crate::data::shards::expand_braces(&cfg.shards).unwrap_or_default();
                    // Hash shard identities only when few enough to read cheaply; else their names.
                    let ids: Vec<Value> = if files.len() <= 64 {
                        files.iter().map(|f| file_identity(f)).collect()
                    } else {
                        files.iter().map(|f| json!({ "path": f })).collect()
                    };
                    s.insert("shard_files".into(), Value::Array(ids));
                }
            }
        }
    }
    v
}

/// The evaluation settings that change a cell's value (not its batch size).
fn eval_identity(e: &EvalConfig) -> Value {
    json!({
        "demos": e.demos,
        "num_samples": e.num_samples,
        "query_set_size": e.query_set_size,
        "num_beams": e.num_beams,
        "protocol": e.protocol,
    })
}

fn dataset_identity(
    dataset: &str,
    paths: &DatasetPaths,
    file_identity: &dyn Fn(&str) -> Value,
) -> Value {
    let mut m = serde_json::Map::new();
    for key in crate::config::schema::required_paths(dataset) {
        if let Some(p) = paths.get(key) {
            // Annotation files by content; image directories by path.
            let is_file = !key.ends_with("images");
            m.insert(
                (*key).to_string(),
                if is_file {
                    file_identity(p)
                } else {
                    json!({ "path": p })
                },
            );
        }
    }
    Value::Object(m)
}

/// Identity of a backbone directory: its path and the checksum of its config files.
fn dir_identity(dir: &Path) -> Value {
    let mut files = serde_json::Map::new();
    for name in ["config.json", "open_clip_config.json", "tokenizer.json"] {
        if let Ok(h) = sha256_file(&dir.join(name)) {
            files.insert(name.into(), Value::String(h));
        }
    }
    json!({"dir": dir.display().to_string(), "files": files})
}

/// The experiment view the JSON plan prints for one job.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    /// 1-based position in the plan.
    pub index: usize,
    /// Job kind.
    pub kind: &'a str,
    /// Variants, comma-joined (`all` when every variant shares it).
    pub variant: String,
    /// Full hash.
    pub hash: &'a str,
    /// State in the store.
    pub state: &'a str,
    /// Description.
    pub label: &'a str,
    /// Eval cell dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<&'a str>,
    /// Eval cell shots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shots: Option<i64>,
    /// Eval cell seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Error of the last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// How the plan names a job's variants.
pub fn variant_label(job: &Job, all_variants: usize) -> String {
    if all_variants > 1 && job.variants.len() == all_variants {
        "all".to_string()
    } else {
        job.variants.join(",")
    }
}
