//! The experiment DSL: TOML files composed with `extends` templates, `RUNNER_*` environment
//! variables and `--set` overrides; validated strictly; expanded into sweep variants.

pub mod compose;
pub mod error;
pub mod schema;
pub mod sweep;
pub mod templates;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use compose::{Composed, Overrides, compose};
pub use error::{ConfigError, Origin};
pub use schema::Experiment;
pub use sweep::Variant;

/// One or more configuration errors, printed one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        if n > 1 {
            writeln!(f, "{n} problems in the experiment:")?;
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}{e}", if n > 1 { "  " } else { "" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded experiment: the composition and its validated variants.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The composed (unswept) experiment.
    pub composed: Composed,
    /// Its variants (one named `default` without a sweep).
    pub variants: Vec<Variant>,
}

/// Reads, composes, validates and expands an experiment file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Loaded, ConfigErrors> {
    let composed = compose(path, overrides).map_err(|e| ConfigErrors(vec![e]))?;
    let variants = sweep::expand(&composed).map_err(ConfigErrors)?;
    Ok(Loaded { composed, variants })
}

/// The resolved experiment as TOML (what `runner plan --resolved` prints).
pub fn to_toml(exp: &Experiment) -> String {
    toml::to_string(exp).unwrap_or_else(|e| format!("# cannot print the experiment as TOML: {e}\n"))
}
