//! Rendering a [`Report`] as a terminal table, markdown, CSV (one value per line, with its origin,
//! source and a note) or JSON. Every format carries the report's notes.

use crate::compare::{Cell, Column, Origin, Report};
use crate::reference::{model_display_name, scale_note};
use crate::report::Format;

/// Renders a report in a format.
pub fn render_report(report: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise the report: {e}\"}}")),
        Format::Csv => csv(report),
        Format::Table | Format::Markdown => text(report, format == Format::Markdown),
    }
}

/// A number with one decimal, as the paper prints them, and a true minus sign.
fn num(x: f64) -> String {
    let s = format!("{x:.1}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().any(|c| c != '0' && c != '.') => format!("−{rest}"),
        Some(rest) => rest.to_string(),
        None => s,
    }
}

fn signed(x: f64) -> String {
    let s = num(x);
    if s.starts_with('−') {
        s
    } else {
        format!("+{s}")
    }
}

/// Text of a value cell: `46.5 ± 1.2 (−4.6)`.
pub fn cell_text(cell: &Option<Cell>) -> String {
    let Some(c) = cell else {
        return "-".into();
    };
    let mut s = num(c.mean);
    if let Some(std) = c.std
        && c.n.is_none_or(|n| n > 1)
    {
        s.push_str(&format!(" ± {}", num(std)));
    }
    if let Some(d) = c.delta {
        s.push_str(&format!(" ({})", signed(d)));
    }
    s
}

fn header(col: &Column, markdown: bool) -> String {
    if markdown {
        col.label.clone()
    } else {
        col.label.replacen(" [", "\n[", 1)
    }
}

fn text(report: &Report, markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("**{}**\n\n", report.title));
    } else {
        out.push_str(&format!("{}\n", report.title));
    }
    let ref_name = report.reference_model.as_deref().map(model_display_name);
    let run_cols: Vec<usize> = (0..report.columns.len())
        .filter(|&c| report.columns[c].origin.is_run())
        .collect();
    let paper_cols: Vec<usize> = (0..report.columns.len())
        .filter(|&c| !report.columns[c].origin.is_run())
        .collect();

    let mut b = tabled::builder::Builder::default();
    let mut head = vec!["dataset".to_string(), "shots".into(), "metric".into()];
    head.extend(
        run_cols
            .iter()
            .map(|&c| header(&report.columns[c], markdown)),
    );
    if let Some(r) = &ref_name {
        head.extend(run_cols.iter().map(|&c| {
            let sep = if markdown { " " } else { "\n" };
            format!("{}{sep}[% of paper {r}]", report.columns[c].name)
        }));
    }
    head.extend(
        paper_cols
            .iter()
            .map(|&c| header(&report.columns[c], markdown)),
    );
    b.push_record(head);
    for row in &report.rows {
        let mut rec = vec![
            row.dataset.clone(),
            row.shots.to_string(),
            row.metric.clone(),
        ];
        rec.extend(run_cols.iter().map(|&c| cell_text(&row.cells[c])));
        if ref_name.is_some() {
            rec.extend(run_cols.iter().map(|&c| {
                row.cells[c]
                    .as_ref()
                    .and_then(|x| x.pct_of_reference)
                    .map_or("-".into(), |p| format!("{}%", num(p)))
            }));
        }
        rec.extend(paper_cols.iter().map(|&c| cell_text(&row.cells[c])));
        b.push_record(rec);
    }
    out.push_str(&style(b, markdown));
    out.push('\n');

    if let Some(r) = &ref_name
        && !report.pct_of_reference.is_empty()
    {
        out.push('\n');
        let title = format!(
            "% of paper {r}, averaged over settings (the paper's Figure 1), ± std over settings"
        );
        if markdown {
            out.push_str(&format!("**{title}**\n\n"));
        } else {
            out.push_str(&format!("{title}\n"));
        }
        let mut b = tabled::builder::Builder::default();
        b.push_record(vec![
            "column".to_string(),
            format!("% of paper {r}"),
            "settings".into(),
        ]);
        for s in &report.pct_of_reference {
            b.push_record(vec![
                s.label.clone(),
                format!("{}% ± {}", num(s.mean), num(s.std)),
                s.settings.to_string(),
            ]);
        }
        out.push_str(&style(b, markdown));
        out.push('\n');
    }
    out.push('\n');
    for n in &report.notes {
        if markdown {
            out.push_str(&format!("> {n}\n>\n"));
        } else {
            out.push_str(&format!("note: {n}\n"));
        }
    }
    if markdown && out.ends_with(">\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn style(b: tabled::builder::Builder, markdown: bool) -> String {
    let mut t = b.build();
    if markdown {
        t.with(tabled::settings::Style::markdown());
    } else {
        t.with(tabled::settings::Style::rounded());
    }
    t.to_string()
}

/// The header of the CSV format.
pub const CSV_HEADER: &str = "section,dataset,shots,metric,column,origin,mean,std,n,delta_vs,delta,pct_of,pct,pct_std,source,note";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// One line per value: `section` is `cell` (a value of a column on a row), `pct_summary` (a
/// column's "% of Flamingo" averaged over settings) or `note` (a report note).
fn csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let pct_of = report.reference_model.clone().unwrap_or_default();
    let mut line = |fields: [String; 16]| {
        let f: Vec<String> = fields.iter().map(|s| csv_field(s)).collect();
        out.push_str(&f.join(","));
        out.push('\n');
    };
    for row in &report.rows {
        for (col, cell) in report.columns.iter().zip(&row.cells) {
            let Some(c) = cell else { continue };
            let (source, note) = match col.origin {
                Origin::Paper => (
                    c.source.clone().unwrap_or_else(|| col.source.clone()),
                    "published number on the real benchmark; not from this run".to_string(),
                ),
                Origin::ThisRunSynthetic => (
                    col.source.clone(),
                    format!(
                        "synthetic-world score of this run, not a paper number; {}",
                        scale_note(&row.metric)
                    ),
                ),
                Origin::ThisRun => (
                    col.source.clone(),
                    format!("score of this run; {}", scale_note(&row.metric)),
                ),
            };
            line([
                "cell".into(),
                row.dataset.clone(),
                row.shots.to_string(),
                row.metric.clone(),
                col.name.clone(),
                col.origin.label().into(),
                c.mean.to_string(),
                opt(c.std),
                c.n.map(|n| n.to_string()).unwrap_or_default(),
                col.delta_vs.clone().unwrap_or_default(),
                opt(c.delta),
                if c.pct_of_reference.is_some() {
                    pct_of.clone()
                } else {
                    String::new()
                },
                opt(c.pct_of_reference),
                opt(c.pct_std),
                source,
                note,
            ]);
        }
    }
    for s in &report.pct_of_reference {
        line([
            "pct_summary".into(),
            "all".into(),
            String::new(),
            String::new(),
            s.column.clone(),
            s.origin.label().into(),
            String::new(),
            String::new(),
            s.settings.to_string(),
            String::new(),
            String::new(),
            pct_of.clone(),
            s.mean.to_string(),
            s.std.to_string(),
            String::new(),
            format!(
                "mean ± std over {} dataset x shots settings of value / paper {} x 100",
                s.settings,
                model_display_name(&pct_of)
            ),
        ]);
    }
    for n in &report.notes {
        let mut f: [String; 16] = Default::default();
        f[0] = "note".into();
        f[15] = n.clone();
        line(f);
    }
    out
}
