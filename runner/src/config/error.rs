//! Configuration errors that say where: file (and line), key path, what is wrong.

use std::fmt;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A TOML file (an experiment or a template on disk).
    File(std::path::PathBuf),
    /// A template compiled into the binary.
    Builtin(String),
    /// A `RUNNER_*` environment variable.
    Env(String),
    /// A `--set key=value` argument.
    Set(String),
    /// A sweep value of a variant.
    Sweep(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Builtin(name) => write!(f, "built-in template `{name}`"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Set(arg) => write!(f, "--set {arg}"),
            Origin::Sweep(variant) => write!(f, "sweep variant `{variant}`"),
        }
    }
}

/// An invalid experiment: the origin (file and line where known), the key path and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Where the offending value (or the table missing a key) was written; `None` when it comes
    /// from the composition of several layers.
    pub origin: Option<Origin>,
    /// 1-based line in the file, where the parser knows it.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `train.data.1.loss_weight`.
    pub key: String,
    /// What is wrong, with a hint where there is one.
    pub message: String,
}

impl ConfigError {
    /// An error about `key` with no location yet.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            line: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error located in `origin` at `line`.
    pub fn at(mut self, origin: Origin, line: Option<usize>) -> Self {
        self.origin = Some(origin);
        self.line = line;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.line) {
            (Some(o), Some(l)) => write!(f, "{o}:{l}: ")?,
            (Some(o), None) => write!(f, "{o}: ")?,
            (None, _) => {}
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
