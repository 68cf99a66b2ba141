//! The report view behind `runner report`: this run's pivot on the paper's scale, optionally with
//! the published Flamingo / OpenFlamingo columns and "% of Flamingo" (per row and averaged over
//! settings as the paper's Figure 1), or with deltas against a reference column (the paper's
//! Table 5), optionally only the rows where columns differ.
//!
//! Every column carries its origin (`this run (synthetic world)`, `this run` or `paper`), and the
//! report carries notes saying what each kind of number is, so synthetic-world scores cannot be
//! mistaken for the paper's.

use serde::Serialize;

use crate::reference::{
    Reference, ReferenceError, canonical_metric, model_display_name, paper_scale, scale_note,
};
use crate::report::{Aggregate, pivot_cells};
use crate::store::{EvalCell, Store, StoreError};

/// The value of `--vs` that adds the published columns.
pub const VS_FLAMINGO: &str = "flamingo";

/// The reference model of "% of Flamingo" unless chosen otherwise (the paper compares the 3B and
/// 4B OpenFlamingo models, the sizes closest to this runner's, to Flamingo-3B).
pub const DEFAULT_REFERENCE_MODEL: &str = "flamingo-3b";

/// Published models shown as columns with `--vs flamingo` unless chosen otherwise.
pub const DEFAULT_PAPER_MODELS: [&str; 5] = [
    "flamingo-3b",
    "flamingo-9b",
    "openflamingo-3b",
    "openflamingo-4b",
    "openflamingo-9b",
];

/// Errors of building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reference CSV is invalid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// `--vs NAME` names no column, variant or experiment.
    #[error(
        "--vs `{name}`: no column, variant or experiment of that name (columns: {columns}; experiments: {experiments}; or `flamingo`)"
    )]
    UnknownVs {
        /// The name given.
        name: String,
        /// Known columns, comma-joined.
        columns: String,
        /// Known experiments, comma-joined.
        experiments: String,
    },
    /// `--vs NAME` matches several columns.
    #[error("--vs `{name}` matches several columns ({candidates}); name one as experiment/variant")]
    AmbiguousVs {
        /// The name given.
        name: String,
        /// Matching columns, comma-joined.
        candidates: String,
    },
    /// A model is not in the reference CSV.
    #[error("reference model `{model}` is not in {file} (models: {known})")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// Reference file.
        file: &'static str,
        /// Known models, comma-joined.
        known: String,
    },
}

/// Where the numbers of a column come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Origin {
    /// Measured by this runner on its synthetic world.
    #[serde(rename = "this run (synthetic world)")]
    ThisRunSynthetic,
    /// Measured by this runner on the data its experiment names.
    #[serde(rename = "this run")]
    ThisRun,
    /// A published number (reference CSV).
    #[serde(rename = "paper")]
    Paper,
}

impl Origin {
    /// The label printed next to the column.
    pub fn label(self) -> &'static str {
        match self {
            Origin::ThisRunSynthetic => "this run (synthetic world)",
            Origin::ThisRun => "this run",
            Origin::Paper => "paper",
        }
    }

    /// Whether the numbers are this run's.
    pub fn is_run(self) -> bool {
        self != Origin::Paper
    }
}

/// One variant of one experiment as read from the store.
#[derive(Debug, Clone)]
pub struct RunColumn {
    /// Column name: the variant, or `experiment/variant` when several experiments are shown.
    pub name: String,
    /// Experiment name.
    pub experiment: String,
    /// Variant name.
    pub variant: String,
    /// Whether the variant's plan includes the synthetic-world stage.
    pub synthetic: bool,
    /// The variant's eval cells.
    pub cells: Vec<EvalCell>,
    /// Hashes of the variant's Flamingo training jobs (for loss curves).
    pub train_jobs: Vec<String>,
}

impl RunColumn {
    /// The origin of this column's numbers.
    pub fn origin(&self) -> Origin {
        if self.synthetic {
            Origin::ThisRunSynthetic
        } else {
            Origin::ThisRun
        }
    }
}

/// Reads the variants of the named experiments (all when empty) with their cells and job kinds.
pub fn load_runs(store: &Store, experiments: &[String]) -> Result<Vec<RunColumn>, StoreError> {
    let variants = store.variants(experiments)?;
    let mut names: Vec<&str> = variants.iter().map(|v| v.experiment.as_str()).collect();
    names.dedup();
    let multi = names.len() > 1;
    let mut out = Vec::new();
    for v in &variants {
        let kinds = store.job_kinds(&v.job_hashes)?;
        let mut train_jobs: Vec<String> = v
            .job_hashes
            .iter()
            .filter(|h| kinds.get(*h).is_some_and(|k| k == "train"))
            .cloned()
            .collect();
        train_jobs.sort();
        out.push(RunColumn {
            name: if multi {
                format!("{}/{}", v.experiment, v.variant)
            } else {
                v.variant.clone()
            },
            experiment: v.experiment.clone(),
            variant: v.variant.clone(),
            synthetic: kinds.values().any(|k| k == "synth"),
            cells: store.eval_cells(&v.job_hashes)?,
            train_jobs,
        });
    }
    Ok(out)
}

/// What `runner report` compares.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// `flamingo` (or a reference model id such as `flamingo-9b`), a column, variant or
    /// experiment name; None for the plain pivot.
    pub vs: Option<String>,
    /// Reference model of "% of Flamingo" (a model id of the reference CSV).
    pub reference_model: String,
    /// Published models shown as columns with `--vs flamingo`.
    pub paper_models: Vec<String>,
    /// Show only rows where this run's columns differ by more than `tolerance`.
    pub diff_only: bool,
    /// Tolerance of `diff_only`, on the displayed (paper) scale.
    pub tolerance: f64,
    /// Split each cell into its stored groups of this kind (`answer_type`, `question_type`):
    /// rows `dataset: group`; cells without such groups are left out.
    pub groups: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            vs: None,
            reference_model: DEFAULT_REFERENCE_MODEL.into(),
            paper_models: DEFAULT_PAPER_MODELS.iter().map(|m| m.to_string()).collect(),
            diff_only: false,
            tolerance: 0.05,
            groups: None,
        }
    }
}

/// A column of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Name: variant, `experiment/variant`, or reference model id.
    pub name: String,
    /// Header text, naming the origin: `frozen [this run (synthetic world)]`, `Flamingo-3B [paper]`.
    pub label: String,
    /// Where the numbers come from.
    pub origin: Origin,
    /// Source: the experiment for this run's columns, the paper table for published ones.
    pub source: String,
    /// The column this one's deltas are taken against (`--vs` a column or experiment).
    pub delta_vs: Option<String>,
}

/// One value of the report, on the paper's scale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Mean over seeds (this run) or the published number.
    pub mean: f64,
    /// Population std over seeds, where known.
    pub std: Option<f64>,
    /// Number of seeds (this run's columns).
    pub n: Option<usize>,
    /// This value minus the `delta_vs` column's on the same row.
    pub delta: Option<f64>,
    /// Mean as a percentage of the reference model's published number on this row.
    pub pct_of_reference: Option<f64>,
    /// Std over seeds as a percentage of the reference number.
    pub pct_std: Option<f64>,
    /// Source of a published number.
    pub source: Option<String>,
}

/// One row: a dataset at a shot count.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Dataset.
    pub dataset: String,
    /// Number of in-context examples.
    pub shots: i64,
    /// Metric (as recorded by this run).
    pub metric: String,
    /// Factor applied to this run's stored values to reach the paper's scale.
    pub scale: f64,
    /// One optional cell per column.
    pub cells: Vec<Option<Cell>>,
}

/// "% of Flamingo" of one column averaged over settings (the paper's Figure 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PctSummary {
    /// Column name.
    pub column: String,
    /// Column header text.
    pub label: String,
    /// Where the column's numbers come from.
    pub origin: Origin,
    /// Mean over settings of the per-row percentage.
    pub mean: f64,
    /// Population std over settings.
    pub std: f64,
    /// Number of dataset x shots settings averaged.
    pub settings: usize,
}

/// A report, ready to render.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One-line title.
    pub title: String,
    /// What the numbers are; rendered in every format.
    pub notes: Vec<String>,
    /// Reference model id of "% of Flamingo" (`--vs flamingo` only).
    pub reference_model: Option<String>,
    /// Columns.
    pub columns: Vec<Column>,
    /// Rows (after `--diff-only`).
    pub rows: Vec<Row>,
    /// "% of Flamingo" per column averaged over settings (`--vs flamingo` only).
    pub pct_of_reference: Vec<PctSummary>,
    /// Rows hidden by `--diff-only`.
    pub hidden_rows: usize,
}

/// Builds the report of the named experiments (all when empty).
pub fn build(
    store: &Store,
    experiments: &[String],
    opts: &ReportOptions,
    reference: &Reference,
) -> Result<Report, ReportError> {
    let mut experiments = experiments.to_vec();
    // `--vs EXPERIMENT` brings that experiment into the report.
    if let Some(vs) = &opts.vs
        && !experiments.is_empty()
        && !experiments.contains(vs)
        && !store.variants(std::slice::from_ref(vs))?.is_empty()
    {
        experiments.push(vs.clone());
    }
    let runs = load_runs(store, &experiments)?;
    build_from_runs(&runs, opts, reference)
}

/// How `--vs` was resolved.
enum Vs {
    None,
    Flamingo(String),
    /// Per run column, the index of the column its deltas are taken against.
    Columns(Vec<Option<usize>>),
}

/// Builds the report from columns already read.
pub fn build_from_runs(
    runs: &[RunColumn],
    opts: &ReportOptions,
    reference: &Reference,
) -> Result<Report, ReportError> {
    let runs: Vec<&RunColumn> = runs.iter().filter(|r| !r.cells.is_empty()).collect();
    let cells: Vec<Vec<EvalCell>> = runs
        .iter()
        .map(|r| match &opts.groups {
            Some(kind) => crate::report::group_cells(&r.cells, kind),
            None => r.cells.clone(),
        })
        .collect();
    let pivot = pivot_cells(runs.iter().map(|r| r.name.clone()).collect(), &cells);
    let vs = resolve_vs(&runs, opts, reference)?;

    let mut columns: Vec<Column> = runs
        .iter()
        .map(|r| Column {
            name: r.name.clone(),
            label: format!("{} [{}]", r.name, r.origin().label()),
            origin: r.origin(),
            source: format!("experiment {}, variant {}", r.experiment, r.variant),
            delta_vs: None,
        })
        .collect();
    if let Vs::Columns(map) = &vs {
        for (c, m) in map.iter().enumerate() {
            columns[c].delta_vs = m.map(|r| runs[r].name.clone());
        }
    }
    let paper_models: Vec<String> = match &vs {
        Vs::Flamingo(reference_model) => {
            let mut models = vec![reference_model.clone()];
            for m in &opts.paper_models {
                let m = m.to_ascii_lowercase();
                if !models.contains(&m) {
                    models.push(m);
                }
            }
            for m in &models {
                check_model(reference, m)?;
            }
            models
        }
        _ => Vec::new(),
    };
    for m in &paper_models {
        let mut sources: Vec<&str> = Vec::new();
        for r in reference.rows().iter().filter(|r| &r.model == m) {
            if !sources.contains(&r.source.as_str()) {
                sources.push(&r.source);
            }
        }
        columns.push(Column {
            name: m.clone(),
            label: format!("{} [paper]", model_display_name(m)),
            origin: Origin::Paper,
            source: sources.join("; "),
            delta_vs: None,
        });
    }

    let reference_model = match &vs {
        Vs::Flamingo(m) => Some(m.clone()),
        _ => None,
    };
    let mut rows: Vec<Row> = Vec::new();
    for pr in &pivot.rows {
        let scale = paper_scale(&pr.metric);
        let metric = canonical_metric(&pr.metric);
        let ref_value = reference_model
            .as_deref()
            .and_then(|m| reference.get(m, &pr.key.dataset, pr.key.shots))
            .filter(|r| r.metric == metric && r.mean > 0.0)
            .map(|r| r.mean);
        let pct = |mean: f64, std: Option<f64>| match ref_value {
            Some(rv) => (
                Some(tidy(100.0 * mean / rv)),
                std.map(|s| tidy(100.0 * s / rv)),
            ),
            None => (None, None),
        };
        let mut cells: Vec<Option<Cell>> = pr
            .values
            .iter()
            .map(|v| {
                v.map(|a: Aggregate| {
                    let mean = tidy(a.mean * scale);
                    let std = Some(tidy(a.std * scale));
                    let (pct_of_reference, pct_std) = pct(mean, std);
                    Cell {
                        mean,
                        std,
                        n: Some(a.n),
                        delta: None,
                        pct_of_reference,
                        pct_std,
                        source: None,
                    }
                })
            })
            .collect();
        if let Vs::Columns(map) = &vs {
            let means: Vec<Option<f64>> =
                cells.iter().map(|c| c.as_ref().map(|c| c.mean)).collect();
            for (c, m) in map.iter().enumerate() {
                if let (Some(r), Some(cell)) = (m, cells[c].as_mut())
                    && let Some(rm) = means[*r]
                {
                    cell.delta = Some(tidy(cell.mean - rm));
                }
            }
        }
        for m in &paper_models {
            let published = reference
                .get(m, &pr.key.dataset, pr.key.shots)
                .filter(|r| r.metric == metric);
            cells.push(published.map(|r| {
                let (pct_of_reference, pct_std) = if Some(m) == reference_model.as_ref() {
                    (None, None)
                } else {
                    pct(r.mean, r.std)
                };
                Cell {
                    mean: r.mean,
                    std: r.std,
                    n: None,
                    delta: None,
                    pct_of_reference,
                    pct_std,
                    source: Some(r.source.clone()),
                }
            }));
        }
        rows.push(Row {
            dataset: pr.key.dataset.clone(),
            shots: pr.key.shots,
            metric: pr.metric.clone(),
            scale,
            cells,
        });
    }

    let pct_of_reference = summarise_pct(&columns, &rows);
    let total_rows = rows.len();
    if opts.diff_only {
        rows.retain(|r| row_differs(r, &columns, &vs, opts.tolerance));
    }
    let hidden_rows = total_rows - rows.len();
    let notes = notes(
        &columns,
        &rows,
        &vs,
        opts,
        reference_model.as_deref(),
        hidden_rows,
        total_rows,
    );
    let title = match (&vs, reference_model.as_deref()) {
        (Vs::Flamingo(_), Some(m)) => format!(
            "This run vs published Flamingo / OpenFlamingo numbers (% of {})",
            model_display_name(m)
        ),
        (Vs::Columns(_), _) => format!("Deltas vs {}", opts.vs.as_deref().unwrap_or_default()),
        _ => "Eval results, mean ± std over seeds".to_string(),
    };
    Ok(Report {
        title,
        notes,
        reference_model,
        columns,
        rows,
        pct_of_reference,
        hidden_rows,
    })
}

/// Rounds away the float noise of rescaling (0.38 * 100 = 38.00000000000001) so CSV and JSON
/// carry clean numbers; 1e-9 is far below any metric's precision.
fn tidy(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn check_model(reference: &Reference, model: &str) -> Result<(), ReportError> {
    if reference.has_model(model) {
        Ok(())
    } else {
        Err(ReportError::UnknownModel {
            model: model.into(),
            file: crate::reference::PAPER_RESULTS_NAME,
            known: reference.models().join(", "),
        })
    }
}

fn resolve_vs(
    runs: &[&RunColumn],
    opts: &ReportOptions,
    reference: &Reference,
) -> Result<Vs, ReportError> {
    let Some(name) = opts.vs.as_deref() else {
        return Ok(Vs::None);
    };
    let lower = name.to_ascii_lowercase();
    if lower == VS_FLAMINGO || lower == "paper" {
        let m = opts.reference_model.to_ascii_lowercase();
        check_model(reference, &m)?;
        return Ok(Vs::Flamingo(m));
    }
    if reference.has_model(&lower) {
        return Ok(Vs::Flamingo(lower));
    }
    let all_to = |r: usize| {
        Vs::Columns(
            (0..runs.len())
                .map(|c| if c == r { None } else { Some(r) })
                .collect(),
        )
    };
    if let Some(r) = runs.iter().position(|c| c.name == name) {
        return Ok(all_to(r));
    }
    let by_variant: Vec<usize> = (0..runs.len())
        .filter(|&c| runs[c].variant == name)
        .collect();
    match by_variant.len() {
        1 => return Ok(all_to(by_variant[0])),
        n if n > 1 => {
            return Err(ReportError::AmbiguousVs {
                name: name.into(),
                candidates: by_variant
                    .iter()
                    .map(|&c| runs[c].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        _ => {}
    }
    let of_exp: Vec<usize> = (0..runs.len())
        .filter(|&c| runs[c].experiment == name)
        .collect();
    if let Some(&first) = of_exp.first() {
        // Each other column against the same-named variant of that experiment, else its first.
        let map = (0..runs.len())
            .map(|c| {
                if runs[c].experiment == name {
                    None
                } else {
                    Some(
                        of_exp
                            .iter()
                            .copied()
                            .find(|&r| runs[r].variant == runs[c].variant)
                            .unwrap_or(first),
                    )
                }
            })
            .collect();
        return Ok(Vs::Columns(map));
    }
    let mut experiments: Vec<&str> = runs.iter().map(|r| r.experiment.as_str()).collect();
    experiments.dedup();
    Err(ReportError::UnknownVs {
        name: name.into(),
        columns: runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        experiments: experiments.join(", "),
    })
}

fn summarise_pct(columns: &[Column], rows: &[Row]) -> Vec<PctSummary> {
    let mut out = Vec::new();
    for (c, col) in columns.iter().enumerate() {
        let pcts: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.cells[c].as_ref().and_then(|cell| cell.pct_of_reference))
            .collect();
        if let Some(a) = Aggregate::of(&pcts) {
            out.push(PctSummary {
                column: col.name.clone(),
                label: col.label.clone(),
                origin: col.origin,
                mean: a.mean,
                std: a.std,
                settings: a.n,
            });
        }
    }
    out
}

/// Whether this run's columns differ on a row: a delta beyond the tolerance, or a value present
/// in one column and absent in another it is compared with.
fn row_differs(row: &Row, columns: &[Column], vs: &Vs, tolerance: f64) -> bool {
    if let Vs::Columns(map) = vs {
        return map.iter().enumerate().any(|(c, m)| match m {
            Some(r) => match (&row.cells[c], &row.cells[*r]) {
                (Some(a), Some(b)) => (a.mean - b.mean).abs() > tolerance,
                (None, None) => false,
                _ => true,
            },
            None => false,
        });
    }
    let run: Vec<Option<f64>> = columns
        .iter()
        .zip(&row.cells)
        .filter(|(col, _)| col.origin.is_run())
        .map(|(_, cell)| cell.as_ref().map(|c| c.mean))
        .collect();
    let present: Vec<f64> = run.iter().flatten().copied().collect();
    if present.len() != run.len() && !present.is_empty() {
        return true;
    }
    let lo = present.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    present.len() > 1 && hi - lo > tolerance
}

/// How this runner's OK-VQA scores differ from the reference's (shown with every report that has
/// OK-VQA rows; the metric itself documents it in `runner::eval::metrics::okvqa_stem`).
pub const OKVQA_STEMMING_NOTE: &str = "OK-VQA predictions are stemmed with open_flamingo's \
168-entry manual table only; the reference additionally lemmatizes other words ending in \"ing\" \
(NLTK WordNet) and singularizes plural nouns (inflection), so OK-VQA accuracy can differ from the \
reference where those rules apply.";

fn notes(
    columns: &[Column],
    rows: &[Row],
    vs: &Vs,
    opts: &ReportOptions,
    reference_model: Option<&str>,
    hidden: usize,
    total: usize,
) -> Vec<String> {
    let mut notes = Vec::new();
    let synthetic = columns.iter().any(|c| c.origin == Origin::ThisRunSynthetic);
    if synthetic {
        notes.push(
            "Columns marked [this run (synthetic world)] are scores of this runner's models on its \
             generated synthetic world, NOT on the real benchmarks and NOT the paper's numbers."
                .to_string(),
        );
    }
    if columns.iter().any(|c| c.origin == Origin::ThisRun) {
        notes.push(
            "Columns marked [this run] are scores measured by this runner on the data its \
             experiment names."
                .to_string(),
        );
    }
    let mut metrics: Vec<String> = rows.iter().map(|r| canonical_metric(&r.metric)).collect();
    metrics.sort();
    metrics.dedup();
    if !metrics.is_empty() {
        let scales: Vec<&str> = metrics.iter().map(|m| scale_note(m)).collect();
        notes.push(format!(
            "This run's values are on the paper's scale: {}; mean ± population std over seeds.",
            scales.join("; ")
        ));
    }
    if rows.iter().any(|r| r.dataset == "okvqa") {
        notes.push(OKVQA_STEMMING_NOTE.to_string());
    }
    if let (Vs::Flamingo(_), Some(m)) = (vs, reference_model) {
        let name = model_display_name(m);
        notes.push(format!(
            "Columns marked [paper] are published numbers on the real benchmarks ({}: Flamingo \
             from Alayrac et al. 2022 via OpenFlamingo Table 4; OpenFlamingo from its Table 4, mean \
             ± std over 3 demo seeds); they were not produced by this run.",
            crate::reference::PAPER_RESULTS_NAME
        ));
        notes.push(format!(
            "% of {name} = this run's mean / paper {name}'s number x 100 on the same dataset and \
             shots; the summary averages it over the dataset x shots settings that have a {name} \
             number (the paper's Figure 1 averages 7 datasets x 5 shot settings with RICES demos; \
             the CSV holds Table 4: 0, 4 and 32 shots with random demos), ± std over those \
             settings."
        ));
        if synthetic {
            notes.push(format!(
                "A synthetic-world score as a % of {name} only puts it on the paper's scale; it is \
                 not a like-for-like comparison of model quality."
            ));
        }
    }
    if let Vs::Columns(_) = vs {
        notes.push(format!(
            "(±x) after a value: that value minus the value of the column it is compared with \
             (`{}`) on the same row, as in the paper's Table 5.",
            opts.vs.as_deref().unwrap_or_default()
        ));
    }
    if opts.diff_only {
        notes.push(format!(
            "--diff-only: showing rows where this run's columns differ by more than {} (or where \
             one has no value); {hidden} of {total} rows hidden.",
            opts.tolerance
        ));
    }
    notes
}
