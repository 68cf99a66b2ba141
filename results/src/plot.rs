//! Plots of a report with `plotters`, each written as SVG and PNG: training loss per source per
//! variant (the paper's Figure 5), score vs shots per dataset with seed error bars (Figure 6), and
//! "% of Flamingo" per variant with error bars over settings (Figure 1).
//!
//! Text is drawn with the bundled DejaVu Sans (`assets/`), registered for plotters' `ab_glyph`
//! font backend, so plots look the same on any machine. PNGs are rendered into a buffer and
//! encoded with the `image` crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::compare::{
    DEFAULT_PAPER_MODELS, Origin, Report, ReportError, ReportOptions, RunColumn, build_from_runs,
    load_runs,
};
use crate::reference::{Reference, canonical_metric, model_display_name};
use crate::store::{Store, StoreError};

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Size of every plot in pixels.
pub const PLOT_SIZE: (u32, u32) = (960, 600);

/// Errors of writing plots; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Building the report data failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Reading training metrics failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundled font could not be registered.
    #[error("the bundled font assets/DejaVuSans.ttf is not a valid font")]
    Font,
    /// Creating the directory or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Drawing failed.
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// File being drawn.
        path: PathBuf,
        /// The backend's error.
        message: String,
    },
    /// PNG encoding failed.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        source: image::ImageError,
    },
}

fn register_font() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that can be drawn on any plotters backend.
pub trait Chart {
    /// Draws the chart on the whole area.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Training loss per data source of one variant's training job(s).
#[derive(Debug, Clone)]
pub struct LossChart {
    /// Caption.
    pub title: String,
    /// One `(label, [(step, loss)])` per source (and job, when several).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Score against shots for one dataset, one line per column, with seed std error bars.
#[derive(Debug, Clone)]
pub struct ShotsChart {
    /// Caption.
    pub title: String,
    /// Y axis description.
    pub y_desc: String,
    /// Shot counts on the x axis, evenly spaced as in the paper.
    pub shots: Vec<i64>,
    /// One `(label, points)` per column.
    pub series: Vec<(String, Vec<ShotsPoint>)>,
}

/// One point of a [`ShotsChart`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShotsPoint {
    /// Number of in-context examples.
    pub shots: i64,
    /// Mean over seeds.
    pub mean: f64,
    /// Std over seeds (error bar half-height).
    pub std: f64,
}

/// One bar of a [`PctChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// Height (percent).
    pub mean: f64,
    /// Error bar half-height.
    pub std: f64,
    /// Whether the bar is a published number (drawn grey).
    pub paper: bool,
}

/// "% of Flamingo" per column, with std over settings.
#[derive(Debug, Clone)]
pub struct PctChart {
    /// Caption.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// Legend entry of this run's bars (names the origin).
    pub run_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
}

fn padded(lo: f64, hi: f64, floor_zero: bool) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let mut a = lo - 0.08 * span;
    if floor_zero && lo >= 0.0 {
        a = a.max(0.0);
    }
    (a, hi + 0.08 * span)
}

fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

const PAPER_GREY: RGBColor = RGBColor(150, 150, 150);

impl Chart for LossChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let pts = self.series.iter().flat_map(|(_, p)| p.iter());
        let (x0, x1) = pts
            .clone()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let (y0, y1) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let (x0, x1) = if x1 > x0 {
            (x0, x1)
        } else {
            (x0 - 1.0, x0 + 1.0)
        };
        let (y0, y1) = padded(y0, y1, true);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("optimizer step")
            .y_desc("loss (unweighted, per source)")
            .label_style((FAMILY, 14))
            .draw()?;
        for (i, (label, points)) in self.series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()
    }
}

impl Chart for ShotsChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let n = self.shots.len().max(1);
        let pos = |s: i64| self.shots.iter().position(|&x| x == s).unwrap_or(0) as f64;
        let all = self.series.iter().flat_map(|(_, p)| p.iter());
        let (y0, y1) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.mean - p.std), b.max(p.mean + p.std))
        });
        let (y0, y1) = padded(y0, y1, true);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)?;
        let shots = self.shots.clone();
        let fmt = move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < shots.len() {
                shots[i as usize].to_string()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&fmt)
            .x_desc("number of in-context examples (shots)")
            .y_desc(self.y_desc.as_str())
            .label_style((FAMILY, 14))
            .disable_x_mesh()
            .draw()?;
        let k = self.series.len() as f64;
        for (i, (label, points)) in self.series.iter().enumerate() {
            let c = colour(i);
            // Small horizontal offsets keep overlapping error bars apart.
            let dx = (i as f64 - (k - 1.0) / 2.0) * 0.05;
            let line: Vec<(f64, f64)> =
                points.iter().map(|p| (pos(p.shots) + dx, p.mean)).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
            for p in points {
                if p.std > 0.0 {
                    let x = pos(p.shots) + dx;
                    chart.draw_series(error_bar(x, p.mean - p.std, p.mean + p.std, 0.04, c))?;
                }
            }
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()
    }
}

/// A vertical error bar from `lo` to `hi` at `x` with caps of half-width `cap`.
fn error_bar(x: f64, lo: f64, hi: f64, cap: f64, c: RGBColor) -> Vec<PathElement<(f64, f64)>> {
    let s = c.stroke_width(2);
    vec![
        PathElement::new(vec![(x, lo), (x, hi)], s),
        PathElement::new(vec![(x - cap, lo), (x + cap, lo)], s),
        PathElement::new(vec![(x - cap, hi), (x + cap, hi)], s),
    ]
}

impl Chart for PctChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let n = self.bars.len().max(1);
        // Headroom above the tallest bar keeps the legend clear of the bars.
        let top = self
            .bars
            .iter()
            .map(|b| b.mean + b.std)
            .fold(110.0_f64, f64::max)
            * 1.22;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 18))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)?;
        let names: Vec<String> = self.bars.iter().map(|b| b.label.clone()).collect();
        let fmt = move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&fmt)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style((FAMILY, 13))
            .disable_x_mesh()
            .draw()?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 100.0), (n as f64 - 0.5, 100.0)],
            BLACK.mix(0.5).stroke_width(1),
        )))?;
        for paper in [false, true] {
            let c = if paper { PAPER_GREY } else { colour(0) };
            let bars: Vec<(usize, &Bar)> = self
                .bars
                .iter()
                .enumerate()
                .filter(|(_, b)| b.paper == paper)
                .collect();
            if bars.is_empty() {
                continue;
            }
            let label = if paper {
                "paper: published, real benchmarks".to_string()
            } else {
                self.run_label.clone()
            };
            chart
                .draw_series(bars.iter().map(|(i, b)| {
                    let x = *i as f64;
                    Rectangle::new([(x - 0.32, 0.0), (x + 0.32, b.mean)], c.filled())
                }))?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
            for (i, b) in &bars {
                let x = *i as f64;
                if b.std > 0.0 {
                    chart.draw_series(error_bar(x, b.mean - b.std, b.mean + b.std, 0.08, BLACK))?;
                }
                let style = TextStyle::from((FAMILY, 14).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                chart.draw_series(std::iter::once(Text::new(
                    format!("{:.0}%", b.mean),
                    (x, b.mean + b.std + top * 0.01),
                    style,
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()
    }
}

/// Writes `<stem>.svg` and `<stem>.png` of a chart into `dir`; returns both paths.
pub fn write_chart<C: Chart>(dir: &Path, stem: &str, chart: &C) -> Result<Vec<PathBuf>, PlotError> {
    register_font()?;
    let (w, h) = PLOT_SIZE;
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart.draw(&root).map_err(|e| PlotError::Draw {
            path: svg_path.clone(),
            message: e.to_string(),
        })?;
    }
    std::fs::write(&svg_path, svg).map_err(|source| PlotError::Io {
        path: svg_path.clone(),
        source,
    })?;

    let png_path = dir.join(format!("{stem}.png"));
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        chart.draw(&root).map_err(|e| PlotError::Draw {
            path: png_path.clone(),
            message: e.to_string(),
        })?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| PlotError::Draw {
        path: png_path.clone(),
        message: "pixel buffer has the wrong size".into(),
    })?;
    img.save_with_format(&png_path, image::ImageFormat::Png)
        .map_err(|source| PlotError::Encode {
            path: png_path.clone(),
            source,
        })?;
    Ok(vec![svg_path, png_path])
}

/// A file-name-safe form of a column or dataset name.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Y axis text of a metric on the paper's scale.
fn metric_axis(metric: &str) -> String {
    match canonical_metric(metric).as_str() {
        "cider" => "CIDEr (x100, paper scale)".into(),
        "vqa_accuracy" => "VQA accuracy (%)".into(),
        "roc_auc" => "ROC AUC (x100, paper scale)".into(),
        other => other.to_string(),
    }
}

/// Loss curves of one variant from its training jobs' metrics rows, one series per source (and
/// job, when the variant has several); None when nothing was recorded.
pub fn loss_chart(store: &Store, run: &RunColumn) -> Result<Option<LossChart>, StoreError> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for job in &run.train_jobs {
        for m in store.train_metrics(job)? {
            let Some(loss) = m.loss.filter(|l| l.is_finite()) else {
                continue;
            };
            let label = if run.train_jobs.len() > 1 {
                format!("{} (job {})", m.source, &job[..job.len().min(8)])
            } else {
                m.source.clone()
            };
            series.entry(label).or_default().push((m.step as f64, loss));
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    Ok(Some(LossChart {
        title: format!(
            "Training loss per source: {} [{}]",
            run.name,
            run.origin().label()
        ),
        series: series.into_iter().collect(),
    }))
}

/// Score vs shots charts, one per dataset, from a report's this-run columns.
pub fn shots_charts(report: &Report) -> Vec<(String, ShotsChart)> {
    let run_cols: Vec<usize> = (0..report.columns.len())
        .filter(|&c| report.columns[c].origin.is_run())
        .collect();
    let origin = if report
        .columns
        .iter()
        .any(|c| c.origin == Origin::ThisRunSynthetic)
    {
        Origin::ThisRunSynthetic
    } else {
        Origin::ThisRun
    };
    let mut datasets: Vec<&str> = report.rows.iter().map(|r| r.dataset.as_str()).collect();
    datasets.dedup();
    let mut out = Vec::new();
    for ds in datasets {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.dataset == ds).collect();
        let mut shots: Vec<i64> = rows.iter().map(|r| r.shots).collect();
        shots.sort();
        shots.dedup();
        let series: Vec<(String, Vec<ShotsPoint>)> = run_cols
            .iter()
            .map(|&c| {
                let pts = rows
                    .iter()
                    .filter_map(|r| {
                        r.cells[c].as_ref().map(|x| ShotsPoint {
                            shots: r.shots,
                            mean: x.mean,
                            std: x.std.unwrap_or(0.0),
                        })
                    })
                    .collect();
                (report.columns[c].name.clone(), pts)
            })
            .filter(|(_, p): &(String, Vec<_>)| !p.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        out.push((
            ds.to_string(),
            ShotsChart {
                title: format!(
                    "{ds}: score vs shots [{}], ± std over seeds",
                    origin.label()
                ),
                y_desc: metric_axis(&rows[0].metric),
                shots,
                series,
            },
        ));
    }
    out
}

/// The "% of Flamingo" chart of a report built with `--vs flamingo`; None without summaries.
pub fn pct_chart(report: &Report) -> Option<PctChart> {
    let reference = model_display_name(report.reference_model.as_deref()?);
    if report.pct_of_reference.is_empty() {
        return None;
    }
    let settings = report
        .pct_of_reference
        .iter()
        .map(|s| s.settings)
        .max()
        .unwrap_or(0);
    let origin = report
        .pct_of_reference
        .iter()
        .find(|s| s.origin.is_run())
        .map_or(Origin::ThisRun, |s| s.origin);
    Some(PctChart {
        title: format!("% of paper {reference}, mean ± std over settings (cf. Figure 1)"),
        x_desc: format!(
            "averaged over up to {settings} dataset x shots settings that have a {reference} number"
        ),
        y_desc: format!("% of {reference}"),
        run_label: origin.label().to_string(),
        bars: report
            .pct_of_reference
            .iter()
            .map(|s| {
                let paper = s.origin == Origin::Paper;
                let label = if paper {
                    model_display_name(&s.column).replace("OpenFlamingo", "OF")
                } else {
                    s.column.clone()
                };
                Bar {
                    label,
                    mean: s.mean,
                    std: s.std,
                    paper,
                }
            })
            .collect(),
    })
}

/// Writes every plot of the named experiments (all when empty) into `dir`: `loss_<variant>`,
/// `shots_<dataset>` and `pct_flamingo`, each `.svg` and `.png`. Returns the files written.
pub fn write_plots(
    store: &Store,
    experiments: &[String],
    reference_model: &str,
    reference: &Reference,
    dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let runs = load_runs(store, experiments)?;
    let mut written = Vec::new();
    for run in &runs {
        if let Some(chart) = loss_chart(store, run)? {
            written.extend(write_chart(
                dir,
                &format!("loss_{}", file_stem(&run.name)),
                &chart,
            )?);
        }
    }
    let opts = ReportOptions {
        vs: Some(crate::compare::VS_FLAMINGO.into()),
        reference_model: reference_model.to_string(),
        paper_models: DEFAULT_PAPER_MODELS.iter().map(|m| m.to_string()).collect(),
        diff_only: false,
        tolerance: 0.0,
        groups: None,
    };
    let report = build_from_runs(&runs, &opts, reference)?;
    for (ds, chart) in shots_charts(&report) {
        written.extend(write_chart(
            dir,
            &format!("shots_{}", file_stem(&ds)),
            &chart,
        )?);
    }
    if let Some(chart) = pct_chart(&report) {
        written.extend(write_chart(dir, "pct_flamingo", &chart)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_charts_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let one = ShotsChart {
            title: "one point".into(),
            y_desc: metric_axis("vqa-accuracy"),
            shots: vec![0],
            series: vec![(
                "v".into(),
                vec![ShotsPoint {
                    shots: 0,
                    mean: 12.5,
                    std: 0.0,
                }],
            )],
        };
        let loss = LossChart {
            title: "one step".into(),
            series: vec![("all".into(), vec![(1.0, 2.0)])],
        };
        let bars = PctChart {
            title: "no paper bars".into(),
            x_desc: String::new(),
            y_desc: "%".into(),
            run_label: Origin::ThisRun.label().into(),
            bars: vec![Bar {
                label: "v".into(),
                mean: 0.0,
                std: 0.0,
                paper: false,
            }],
        };
        let mut files = write_chart(dir.path(), "shots", &one).unwrap();
        files.extend(write_chart(dir.path(), "loss", &loss).unwrap());
        files.extend(write_chart(dir.path(), "pct", &bars).unwrap());
        for f in files {
            assert!(
                std::fs::metadata(&f).unwrap().len() > 500,
                "{}",
                f.display()
            );
        }
        assert_eq!(file_stem("exp/variant a"), "exp_variant_a");
    }
}
