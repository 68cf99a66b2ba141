//! `runner data check`: open every file an experiment's evaluation grid and training mix name,
//! count what they hold and report every problem at once.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::Loaded;
use crate::config::schema::{DatasetPaths, required_paths};
use crate::data::shards::expand_braces;
use crate::plan::hash::sha256_file;

use super::datasets::{self, DatasetError, Task, coco_captions};

/// Most image problems listed per dataset (the rest are counted).
const MAX_LISTED: usize = 10;

/// The outcome of a check: what was found, and what is wrong.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Human-readable lines: counts per dataset and split, file checksums, shard counts.
    pub lines: Vec<String>,
    /// One line per problem; empty when everything is readable.
    pub problems: Vec<String>,
    /// SHA-256 of every annotation file read, by path.
    pub sha256: BTreeMap<PathBuf, String>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every dataset of every variant's evaluation grid and every shard of its training mix.
pub fn check(loaded: &Loaded) -> CheckReport {
    let mut report = CheckReport::default();
    let mut datasets: Vec<(String, DatasetPaths)> = Vec::new();
    let mut shard_sets: Vec<(String, String)> = Vec::new();
    for v in &loaded.variants {
        if let Some(ev) = &v.experiment.eval {
            for d in &ev.datasets {
                let paths = ev.paths.get(d).cloned().unwrap_or_default();
                if !datasets.iter().any(|(n, p)| n == d && *p == paths) {
                    datasets.push((d.clone(), paths));
                }
            }
        }
        if let Some(t) = &v.experiment.train {
            for (i, src) in t.data.iter().enumerate() {
                let label = format!("train.data[{i}] ({})", kind_name(src.kind));
                if !shard_sets.iter().any(|(_, s)| *s == src.shards) {
                    shard_sets.push((label, src.shards.clone()));
                }
            }
        }
    }
    if let Some(s) = &loaded.composed.experiment.data.synth
        && !Path::new(&s.dir).exists()
    {
        report.lines.push(format!(
            "note: {} does not exist yet; the synth stage of `runner exec` writes it",
            s.dir
        ));
    }
    for (name, paths) in &datasets {
        check_dataset(name, paths, &mut report);
    }
    for (label, pattern) in &shard_sets {
        check_shards(label, pattern, &mut report);
    }
    if datasets.is_empty() && shard_sets.is_empty() {
        report
            .lines
            .push("the experiment names no evaluation dataset and no training shards".into());
    }
    report
}

fn kind_name(kind: crate::config::schema::SourceKind) -> &'static str {
    use crate::config::schema::SourceKind::*;
    match kind {
        Interleaved => "interleaved",
        Pairs => "pairs",
        Sequences => "sequences",
    }
}

fn check_dataset(name: &str, paths: &DatasetPaths, report: &mut CheckReport) {
    let mut problem = |msg: String| report.problems.push(format!("{name}: {msg}"));
    match datasets::load(name, paths) {
        Err(e) => {
            report
                .lines
                .push(format!("{name}: cannot be read (see the problems below)"));
            report.problems.push(format!("{name}: {e}"));
        }
        Ok(ds) => {
            let task = ds.info.task.as_str();
            // A missing image directory is one problem, not one per image.
            let mut missing_dirs: Vec<&str> = Vec::new();
            for key in required_paths(name)
                .iter()
                .filter(|k| k.ends_with("images"))
            {
                if let Some(d) = paths.get(key)
                    && !Path::new(d).is_dir()
                    && !missing_dirs.contains(&d)
                {
                    missing_dirs.push(d);
                    problem(format!("image directory {d} ({key}) does not exist"));
                }
            }
            let mut images: Vec<&Path> = Vec::new();
            let mut seen: HashSet<&Path> = HashSet::new();
            let mut skipped = 0usize;
            for ex in ds.train.iter().chain(&ds.test) {
                if missing_dirs.iter().any(|d| ex.image.starts_with(d)) {
                    skipped += usize::from(seen.insert(ex.image.as_path()));
                } else if seen.insert(ex.image.as_path()) {
                    images.push(&ex.image);
                }
            }
            let bad = probe_all(&images);
            for e in bad.iter().take(MAX_LISTED) {
                problem(e.to_string());
            }
            if bad.len() > MAX_LISTED {
                problem(format!(
                    "... and {} more unreadable images",
                    bad.len() - MAX_LISTED
                ));
            }
            let bad_count = bad.len() + skipped;
            if ds.info.task == Task::Captioning
                && let Some(ann) = paths.annotations.as_deref()
            {
                match coco_captions::captioned_image_ids(Path::new(ann)) {
                    Err(e) => problem(e.to_string()),
                    Ok(ids) => {
                        let missing: Vec<&str> = ds
                            .test
                            .iter()
                            .map(|e| e.id.as_str())
                            .filter(|id| !ids.contains(*id))
                            .collect();
                        if let Some(first) = missing.first() {
                            problem(format!(
                                "{ann}: {} of {} test images have no reference caption, e.g. image_id {first}",
                                missing.len(),
                                ds.test.len()
                            ));
                        }
                    }
                }
            }
            report.lines.push(format!(
                "{name} ({task}, {}): train {} examples, test {} examples, {} images ({} unreadable)",
                ds.info.metric.name(),
                ds.train.len(),
                ds.test.len(),
                images.len() + skipped,
                bad_count
            ));
        }
    }
    for key in required_paths(name)
        .iter()
        .filter(|k| !k.ends_with("images"))
    {
        let Some(p) = paths.get(key) else { continue };
        match sha256_file(Path::new(p)) {
            Ok(h) => {
                report.lines.push(format!("  {key:<18} sha256 {h}  {p}"));
                report.sha256.insert(PathBuf::from(p), h);
            }
            Err(e) => report
                .lines
                .push(format!("  {key:<18} unreadable ({e})  {p}")),
        }
    }
}

/// Reads every image's header, on a few threads; returns the failures in input order.
fn probe_all(images: &[&Path]) -> Vec<DatasetError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = images.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|p| datasets::image::probe(p).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![DatasetError::Image {
                        path: PathBuf::new(),
                        message: "image check thread panicked".into(),
                    }]
                })
            })
            .collect()
    })
}

fn check_shards(label: &str, pattern: &str, report: &mut CheckReport) {
    let files = match expand_braces(pattern) {
        Ok(f) => f,
        Err(e) => {
            report.problems.push(format!("{label}: {e}"));
            return;
        }
    };
    let mut bytes = 0u64;
    let mut bad: Vec<String> = Vec::new();
    for f in &files {
        match std::fs::File::open(f).and_then(|h| h.metadata()) {
            Ok(m) if m.is_file() => bytes += m.len(),
            Ok(_) => bad.push(format!("{label}: {f}: not a file")),
            Err(e) => bad.push(format!("{label}: {f}: {e}")),
        }
    }
    report.lines.push(format!(
        "{label}: {} shard files, {} readable, {bytes} bytes",
        files.len(),
        files.len() - bad.len()
    ));
    if bad.len() > MAX_LISTED {
        let more = bad.len() - MAX_LISTED;
        bad.truncate(MAX_LISTED);
        bad.push(format!(
            "{label}: ... and {more} more unreadable shard files"
        ));
    }
    report.problems.extend(bad);
}
