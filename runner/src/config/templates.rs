//! Template lookup for `extends`: a path, a `templates/<name>.toml` on disk, or a built-in copy.

use std::path::{Path, PathBuf};

/// Templates compiled into the binary, so `extends = ["tiny"]` works from any directory.
const BUILTIN: &[(&str, &str)] = &[
    ("tiny", include_str!("../../../templates/tiny.toml")),
    (
        "synthetic-world",
        include_str!("../../../templates/synthetic-world.toml"),
    ),
    (
        "synthetic-mix",
        include_str!("../../../templates/synthetic-mix.toml"),
    ),
    (
        "flamingo-eval",
        include_str!("../../../templates/flamingo-eval.toml"),
    ),
    (
        "openflamingo-eval",
        include_str!("../../../templates/openflamingo-eval.toml"),
    ),
    (
        "openflamingo-eval-data",
        include_str!("../../../templates/openflamingo-eval-data.toml"),
    ),
    (
        "openflamingo-3b",
        include_str!("../../../templates/openflamingo-3b.toml"),
    ),
    (
        "openflamingo-3b-instruct",
        include_str!("../../../templates/openflamingo-3b-instruct.toml"),
    ),
    (
        "openflamingo-4b",
        include_str!("../../../templates/openflamingo-4b.toml"),
    ),
    (
        "openflamingo-4b-instruct",
        include_str!("../../../templates/openflamingo-4b-instruct.toml"),
    ),
    (
        "openflamingo-9b",
        include_str!("../../../templates/openflamingo-9b.toml"),
    ),
];

/// Where a template was found.
pub enum Found {
    /// A file on disk.
    Path(PathBuf),
    /// A built-in template: name and text.
    Builtin(&'static str, &'static str),
}

/// Names of the built-in templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Resolves `name` as written in `extends` by a file in `base_dir` (None for built-ins).
///
/// A name with a `/` or a `.toml` suffix is a path relative to the including file. A bare name is
/// looked up as `templates/<name>.toml` next to the including file, one level above it, and in the
/// current directory; then among the built-in templates.
pub fn resolve(name: &str, base_dir: Option<&Path>) -> Option<Found> {
    if name.contains('/') || name.ends_with(".toml") {
        let p = base_dir
            .map(|d| d.join(name))
            .unwrap_or_else(|| PathBuf::from(name));
        return p.is_file().then_some(Found::Path(p));
    }
    let file = format!("{name}.toml");
    let mut candidates = Vec::new();
    if let Some(d) = base_dir {
        candidates.push(d.join("templates").join(&file));
        candidates.push(d.join("..").join("templates").join(&file));
        if d.file_name().is_some_and(|n| n == "templates") {
            candidates.push(d.join(&file));
        }
    }
    candidates.push(Path::new("templates").join(&file));
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(Found::Path(p));
    }
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| Found::Builtin(n, t))
}
