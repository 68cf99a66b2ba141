//! Composition: `extends` templates, the experiment file, `RUNNER_*` environment variables and
//! `--set key=value`, merged in that order (later wins, tables merge deeply) with figment, then
//! extracted into the typed [`Experiment`].

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::{ConfigError, Origin};
use super::schema::Experiment;
use super::templates;

/// Top-level keys an experiment may have; `RUNNER_*` variables whose first segment is not one of
/// them (e.g. `RUNNER_DB`) belong to the program, not to the experiment.
pub const TOP_LEVEL_KEYS: [&str; 9] = [
    "name",
    "description",
    "device",
    "model",
    "data",
    "pretrain",
    "train",
    "eval",
    "sweep",
];

/// Overrides on top of the files, lowest precedence first: environment, then `--set`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `(NAME, value)` pairs of `RUNNER_*` variables (usually `std::env::vars()`).
    pub env: Vec<(String, String)>,
    /// `key=value` arguments.
    pub set: Vec<String>,
}

impl Overrides {
    /// `--set` arguments plus this process's `RUNNER_*` environment.
    pub fn from_process(set: &[String]) -> Self {
        Overrides {
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("RUNNER_"))
                .collect(),
            set: set.to_vec(),
        }
    }
}

/// One source of values: a parsed TOML table and where it came from.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Where the values were written.
    pub origin: Origin,
    /// The values (`extends` removed).
    pub table: toml::Table,
    /// The TOML text, for line numbers.
    pub text: Option<String>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.to_string())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}

impl Layer {
    /// A layer setting one dotted key to a value.
    pub fn single(origin: Origin, key: &str, value: toml::Value) -> Layer {
        let mut value = value;
        for seg in key.split('.').rev() {
            let mut t = toml::Table::new();
            t.insert(seg.to_string(), value);
            value = toml::Value::Table(t);
        }
        let table = match value {
            toml::Value::Table(t) => t,
            _ => toml::Table::new(),
        };
        Layer {
            origin,
            table,
            text: None,
        }
    }

    /// Whether this layer sets the dotted key path (array indices as numbers).
    fn contains(&self, path: &[String]) -> bool {
        lookup(&self.table, path).is_some()
    }

    /// 1-based line of the key in the layer's text, where known.
    fn line_of(&self, path: &[String]) -> Option<usize> {
        let text = self.text.as_ref()?;
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
        let span = span_in_table(doc.as_table(), path)?;
        Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
    }
}

type Span = std::ops::Range<usize>;

fn span_in_table(t: &dyn toml_edit::TableLike, path: &[String]) -> Option<Span> {
    let (seg, rest) = path.split_first()?;
    let (key, item, rest) = match t.get_key_value(seg) {
        Some((k, v)) => (k, v, rest),
        // Sweep keys are quoted dotted strings: the rest of the path is one key.
        None => {
            let (k, v) = t.get_key_value(&path.join("."))?;
            (k, v, &[][..])
        }
    };
    let here = key.span().or_else(|| item.span());
    if rest.is_empty() {
        return here;
    }
    span_in_item(item, rest).or(here)
}

fn span_in_item(item: &toml_edit::Item, path: &[String]) -> Option<Span> {
    match item {
        toml_edit::Item::ArrayOfTables(a) => {
            let t = a.get(path[0].parse::<usize>().ok()?)?;
            if path.len() == 1 {
                t.span()
            } else {
                span_in_table(t, &path[1..]).or(t.span())
            }
        }
        toml_edit::Item::Value(v) => span_in_value(v, path),
        _ => span_in_table(item.as_table_like()?, path),
    }
}

fn span_in_value(v: &toml_edit::Value, path: &[String]) -> Option<Span> {
    match v {
        toml_edit::Value::Array(a) => {
            let x = a.get(path[0].parse::<usize>().ok()?)?;
            if path.len() == 1 {
                x.span()
            } else {
                span_in_value(x, &path[1..]).or(x.span())
            }
        }
        toml_edit::Value::InlineTable(t) => span_in_table(t, path),
        _ => v.span(),
    }
}

/// Looks up a dotted path (array indices as numbers) in a TOML table.
pub fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = match table.get(first) {
        Some(v) => v,
        // Sweep keys are quoted dotted strings.
        None => return table.get(&path.join(".")),
    };
    for (i, seg) in rest.iter().enumerate() {
        v = match v {
            toml::Value::Table(t) => match t.get(seg) {
                Some(x) => x,
                None => return t.get(&rest[i..].join(".")),
            },
            toml::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// An experiment composed from its layers.
#[derive(Debug, Clone)]
pub struct Composed {
    /// The layers in merge order (lowest precedence first).
    pub layers: Vec<Layer>,
    /// The typed experiment.
    pub experiment: Experiment,
}

impl Composed {
    /// Extracts the experiment from `layers` plus `extra` layers on top (sweep values).
    pub fn extract(layers: &[Layer]) -> Result<Experiment, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::new(), |f, l| f.merge(l.clone()));
        figment
            .extract::<Experiment>()
            .map_err(|e| locate(layers, from_figment(e)))
    }
}

/// Reads `path` with its templates and the overrides, and extracts the experiment.
pub fn compose(path: &Path, overrides: &Overrides) -> Result<Composed, ConfigError> {
    let mut layers = Vec::new();
    let mut stack = Vec::new();
    load_file(&Source::Path(path.to_owned()), &mut stack, &mut layers)?;
    layers.extend(override_layers(overrides)?);
    let experiment = Composed::extract(&layers)?;
    Ok(Composed { layers, experiment })
}

enum Source {
    Path(PathBuf),
    Builtin(&'static str, &'static str),
}

fn load_file(
    source: &Source,
    stack: &mut Vec<String>,
    layers: &mut Vec<Layer>,
) -> Result<(), ConfigError> {
    let (origin, text, id, base_dir) = match source {
        Source::Path(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("", format!("cannot read: {e}")).at(Origin::File(p.clone()), None)
            })?;
            let id = std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string();
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (Origin::File(p.clone()), text, id, Some(dir))
        }
        Source::Builtin(name, text) => (
            Origin::Builtin((*name).to_string()),
            (*text).to_string(),
            format!("builtin:{name}"),
            None,
        ),
    };
    if let Some(pos) = stack.iter().position(|s| *s == id) {
        let mut cycle: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
        cycle.push(&id);
        return Err(ConfigError::new(
            "extends",
            format!(
                "templates extend each other in a cycle: {}",
                cycle.join(" -> ")
            ),
        )
        .at(origin, None));
    }
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ConfigError::new("", format!("invalid TOML: {}", e.message())).at(origin.clone(), line)
    })?;
    let extends = match table.remove("extends") {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s],
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(ConfigError::new(
                    "extends",
                    format!(
                        "expected template names (strings), found {}",
                        other.type_str()
                    ),
                )),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| {
                let line = find_line(&text, "extends");
                e.at(origin.clone(), line)
            })?,
        Some(other) => {
            return Err(ConfigError::new(
                "extends",
                format!(
                    "expected a list of template names, found {}",
                    other.type_str()
                ),
            )
            .at(origin.clone(), find_line(&text, "extends")));
        }
    };
    stack.push(id);
    for name in &extends {
        let src = templates::resolve(name, base_dir.as_deref()).ok_or_else(|| {
            ConfigError::new(
                "extends",
                format!(
                    "unknown template `{name}` (looked for templates/{name}.toml and the built-in templates: {})",
                    templates::builtin_names().join(", ")
                ),
            )
            .at(origin.clone(), find_line(&text, "extends"))
        })?;
        let src = match src {
            templates::Found::Path(p) => Source::Path(p),
            templates::Found::Builtin(n, t) => Source::Builtin(n, t),
        };
        load_file(&src, stack, layers)?;
    }
    stack.pop();
    layers.push(Layer {
        origin,
        table,
        text: Some(text),
    });
    Ok(())
}

fn find_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
}

/// Parses a value written on the command line or in the environment: a TOML value when it is
/// one (numbers, booleans, lists, quoted strings), else the raw string.
pub fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn override_layers(overrides: &Overrides) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = Vec::new();
    let mut env: Vec<_> = overrides.env.clone();
    env.sort();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("RUNNER_") else {
            continue;
        };
        let key = rest
            .split("__")
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        let first = key.split('.').next().unwrap_or("");
        if !TOP_LEVEL_KEYS.contains(&first) {
            continue;
        }
        layers.push(Layer::single(
            Origin::Env(var.clone()),
            &key,
            parse_value(&raw),
        ));
    }
    for arg in &overrides.set {
        let (key, raw) = arg.split_once('=').ok_or_else(|| {
            ConfigError::new("", "expected key=value (e.g. --set train.lr=3e-4)")
                .at(Origin::Set(arg.clone()), None)
        })?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(
                ConfigError::new(key, "empty key segment").at(Origin::Set(arg.clone()), None)
            );
        }
        layers.push(Layer::single(
            Origin::Set(arg.clone()),
            key,
            parse_value(raw.trim()),
        ));
    }
    Ok(layers)
}

/// Converts a figment error into a [`ConfigError`] with a full key path and a hint.
fn from_figment(e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            let mut msg = format!("unknown key `{field}`");
            if let Some(best) = suggest(field, expected) {
                msg.push_str(&format!(" (did you mean `{best}`?)"));
            } else if !expected.is_empty() {
                msg.push_str(&format!("; expected one of: {}", expected.join(", ")));
            }
            msg
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            format!("missing required key `{field}`")
        }
        Kind::UnknownVariant(v, expected) => {
            let mut msg = format!("unknown value `{v}`");
            if let Some(best) = suggest(v, expected) {
                msg.push_str(&format!(" (did you mean `{best}`?)"));
            } else {
                msg.push_str(&format!("; expected one of: {}", expected.join(", ")));
            }
            msg
        }
        Kind::InvalidType(actual, expected) => {
            format!("expected {}, found {actual}", plain_type(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {actual}: expected {}", plain_type(expected))
        }
        Kind::InvalidLength(n, expected) => format!("invalid length {n}: expected {expected}"),
        other => other.to_string(),
    };
    ConfigError::new(path.join("."), message)
}

/// Serde's Rust type names in words a TOML author knows.
fn plain_type(expected: &str) -> String {
    match expected {
        "i64" | "i32" | "usize" => "an integer".into(),
        "u64" | "u32" => "a non-negative integer".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        other => other.to_string(),
    }
}

/// Finds the closest candidate, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Attributes an error to the last layer that wrote its key (or the nearest parent key).
pub fn locate(layers: &[Layer], err: ConfigError) -> ConfigError {
    if err.origin.is_some() {
        return err;
    }
    let path: Vec<String> = err
        .key
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for len in (1..=path.len()).rev() {
        let prefix = &path[..len];
        if let Some(layer) = layers.iter().rev().find(|l| l.contains(prefix)) {
            let line = layer.line_of(prefix);
            return err.at(layer.origin.clone(), line);
        }
    }
    // A key nobody wrote (a missing required key): blame the experiment file itself.
    match layers
        .iter()
        .rev()
        .find(|l| matches!(l.origin, Origin::File(_)))
    {
        Some(layer) => err.at(layer.origin.clone(), None),
        None => err,
    }
}
