//! Sweep expansion: the cartesian product of `[sweep]` axes and `[[sweep.tied]]` bundles, each
//! variant named after the values it sets.

use super::compose::{Composed, Layer, locate};
use super::error::{ConfigError, Origin};
use super::schema::Experiment;
use super::validate::validate;

/// One variant of an experiment.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Name made of the values the sweep sets (`default` without a sweep).
    pub name: String,
    /// Dotted key and value for each value the sweep sets.
    pub overrides: Vec<(String, toml::Value)>,
    /// The experiment with the sweep values applied.
    pub experiment: Experiment,
}

/// One sweep axis: either a single key or a tied bundle of keys; each position sets all its keys.
struct Axis {
    keys: Vec<String>,
    values: Vec<Vec<toml::Value>>,
}

/// Expands the composed experiment into its validated variants.
pub fn expand(composed: &Composed) -> Result<Vec<Variant>, Vec<ConfigError>> {
    let sweep = &composed.experiment.sweep;
    let mut axes: Vec<Axis> = sweep
        .axes
        .iter()
        .map(|(k, vs)| Axis {
            keys: vec![k.clone()],
            values: vs.iter().map(|v| vec![v.clone()]).collect(),
        })
        .collect();
    for bundle in &sweep.tied {
        let keys: Vec<String> = bundle.keys().cloned().collect();
        let n = bundle.values().map(Vec::len).min().unwrap_or(0);
        let values = (0..n)
            .map(|i| bundle.values().map(|vs| vs[i].clone()).collect())
            .collect();
        axes.push(Axis { keys, values });
    }
    // A malformed sweep is reported by validation of the base experiment.
    if axes.iter().any(|a| a.values.is_empty()) {
        let errs = validate(&composed.experiment);
        return Err(errs
            .into_iter()
            .map(|e| locate(&composed.layers, e))
            .collect());
    }

    let leaves: Vec<&str> = axes
        .iter()
        .flat_map(|a| a.keys.iter().map(|k| leaf(k)))
        .collect();
    let label = |key: &str| {
        let l = leaf(key);
        if leaves.iter().filter(|x| **x == l).count() > 1 {
            key.to_string()
        } else {
            l.to_string()
        }
    };

    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for axis in &axes {
        let mut next = Vec::new();
        for combo in &combos {
            for pos in &axis.values {
                let mut c = combo.clone();
                c.extend(axis.keys.iter().cloned().zip(pos.iter().cloned()));
                next.push(c);
            }
        }
        combos = next;
    }

    let mut variants = Vec::new();
    let mut errors = Vec::new();
    for overrides in combos {
        let name = if overrides.is_empty() {
            "default".to_string()
        } else {
            overrides
                .iter()
                .map(|(k, v)| format!("{}={}", label(k), show(v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut layers = composed.layers.clone();
        for (k, v) in &overrides {
            layers.push(Layer::single(Origin::Sweep(name.clone()), k, v.clone()));
        }
        match Composed::extract(&layers) {
            Err(e) => errors.push(to_sweep_entry(&composed.layers, e, &overrides)),
            Ok(experiment) => {
                let errs = validate(&experiment);
                if errs.is_empty() {
                    variants.push(Variant {
                        name,
                        overrides,
                        experiment,
                    });
                } else {
                    errors.extend(errs.into_iter().map(|e| {
                        to_sweep_entry(&composed.layers, locate(&layers, e), &overrides)
                    }));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(variants)
    } else {
        // The same bad sweep value fails every variant that uses it: report it once.
        let mut seen = Vec::new();
        errors.retain(|e| {
            let k = (e.key.clone(), e.message.clone());
            let new = !seen.contains(&k);
            seen.push(k);
            new
        });
        Err(errors)
    }
}

/// An error caused by a sweep value points at the `[sweep]` entry that sets it (file and line),
/// keeping the swept key path.
fn to_sweep_entry(layers: &[Layer], err: ConfigError, overrides: &[(String, toml::Value)]) -> ConfigError {
    if !matches!(err.origin, Some(Origin::Sweep(_))) {
        return err;
    }
    let Some((key, value)) = overrides
        .iter()
        .find(|(k, _)| err.key == *k || err.key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{}.", err.key)))
    else {
        return err;
    };
    let mut located = ConfigError::new(format!("sweep.{key}"), String::new());
    located = locate(layers, located);
    ConfigError {
        origin: located.origin,
        line: located.line,
        key: err.key.clone(),
        message: format!("{} (sweep value {})", err.message, value),
    }
}

fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A sweep value as it appears in a variant name.
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
