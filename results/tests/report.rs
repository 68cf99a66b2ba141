//! Reports over a store filled through the Store API with a small frozen-embeddings experiment:
//! pivot values, "% of Flamingo" against numbers hand-copied from the paper CSV, the Table 5 delta
//! view, --diff-only, every format, and the plot files.

use std::time::Duration;

use results::compare::{Origin, Report, ReportOptions, build};
use results::reference::Reference;
use results::render::{CSV_HEADER, render_report};
use results::report::{Format, pivot};
use results::{EvalCell, NewJob, Store, TrainMetric};

const SHOTS: [i64; 3] = [0, 4, 8];

/// Mean per shot setting (stored scale) of (trainable, frozen), and the seed spread.
fn means(dataset: &str) -> (&'static str, [f64; 3], [f64; 3], f64) {
    match dataset {
        "coco" => ("cider", [0.42, 0.50, 0.55], [0.38, 0.46, 0.55], 0.01),
        "vqav2" => ("vqa-accuracy", [30.0, 34.0, 36.0], [20.0, 25.0, 30.0], 1.0),
        _ => ("roc-auc", [0.55, 0.56, 0.57], [0.55, 0.56, 0.57], 0.02),
    }
}

/// Records an experiment with two variants, three datasets x three shot settings x three seeds,
/// and loss curves of both training jobs. `bump` is added to trainable's COCO CIDEr.
fn record(store: &Store, name: &str, bump: f64) {
    let synth = format!("{name}-synth");
    let pretrain = format!("{name}-pretrain");
    let mut jobs = vec![
        NewJob {
            hash: synth.clone(),
            kind: "synth".into(),
            spec: "{}".into(),
        },
        NewJob {
            hash: pretrain.clone(),
            kind: "pretrain".into(),
            spec: "{}".into(),
        },
    ];
    let mut variants = Vec::new();
    let mut cells = Vec::new();
    for (vi, variant) in ["trainable", "frozen"].iter().enumerate() {
        let train = format!("{name}-{variant}-train");
        jobs.push(NewJob {
            hash: train.clone(),
            kind: "train".into(),
            spec: "{}".into(),
        });
        let mut hashes = vec![synth.clone(), pretrain.clone(), train.clone()];
        for ds in ["coco", "vqav2", "hatefulmemes"] {
            let (metric, tr, fr, d) = means(ds);
            for (si, shots) in SHOTS.iter().enumerate() {
                for (k, seed) in [1i64, 2, 3].iter().enumerate() {
                    let hash = format!("{name}-{variant}-{ds}-{shots}-{seed}");
                    let mut mean = if vi == 0 { tr[si] } else { fr[si] };
                    if vi == 0 && ds == "coco" {
                        mean += bump;
                    }
                    jobs.push(NewJob {
                        hash: hash.clone(),
                        kind: "eval".into(),
                        spec: "{}".into(),
                    });
                    hashes.push(hash.clone());
                    cells.push(EvalCell {
                        job_hash: hash,
                        dataset: ds.into(),
                        shots: *shots,
                        seed: *seed,
                        metric: metric.into(),
                        value: mean + (k as f64 - 1.0) * d,
                        count: 200,
                        fingerprint: format!(
                            "{{\"checkpoint\":\"{train}\",\"seed\":{seed},\"split\":\"test\",\"shots\":{shots}}}"
                        ),
                        // VQA cells carry per-answer-type scores: number 10 below the cell's
                        // value, yes/no 5 above.
                        groups: (ds == "vqav2").then(|| {
                            let v = mean + (k as f64 - 1.0) * d;
                            serde_json::json!({"answer_type": {
                                "number": {"score": v - 10.0, "count": 80},
                                "yes/no": {"score": v + 5.0, "count": 120},
                            }})
                            .to_string()
                        }),
                    });
                }
            }
        }
        variants.push((
            variant.to_string(),
            format!("{{\"freeze\":{}}}", vi == 1),
            hashes,
        ));
    }
    store
        .record_experiment(
            name,
            &format!("{name}-cfg"),
            "name = \"x\"",
            &variants,
            &jobs,
        )
        .unwrap();
    for c in &cells {
        assert!(
            store
                .try_claim(&c.job_hash, "test", Duration::from_secs(60), None)
                .unwrap()
        );
        assert!(store.finish_eval_cell("test", c, 0.1).unwrap());
    }
    for variant in ["trainable", "frozen"] {
        let rows: Vec<TrainMetric> = (1..=30)
            .flat_map(|step| {
                ["laion", "mmc4"]
                    .into_iter()
                    .enumerate()
                    .map(move |(i, src)| TrainMetric {
                        step,
                        source: src.into(),
                        loss: Some(1.0 + (4.0 + i as f64) * (-(step as f64) / 10.0).exp()),
                        lr: Some(1e-4),
                        grad_norm: Some(1.0),
                        tokens_per_s: Some(1000.0),
                        samples_per_s: Some(10.0),
                    })
            })
            .collect();
        store
            .put_train_metrics(&format!("{name}-{variant}-train"), &rows)
            .unwrap();
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("results.sqlite")).unwrap();
    record(&s, "frozen_embeddings", 0.0);
    (dir, s)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-8
}

fn pop_mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt(),
    )
}

fn report(store: &Store, exps: &[&str], vs: Option<&str>, diff_only: bool) -> Report {
    let opts = ReportOptions {
        vs: vs.map(String::from),
        diff_only,
        ..ReportOptions::default()
    };
    let exps: Vec<String> = exps.iter().map(|e| e.to_string()).collect();
    build(store, &exps, &opts, &Reference::paper().unwrap()).unwrap()
}

fn col(r: &Report, name: &str) -> usize {
    r.columns
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn row<'a>(r: &'a Report, ds: &str, shots: i64) -> &'a results::compare::Row {
    r.rows
        .iter()
        .find(|x| x.dataset == ds && x.shots == shots)
        .unwrap()
}

#[test]
fn the_pivot_averages_seeds_and_the_report_uses_the_paper_scale() {
    let (_d, s) = store();
    let p = pivot(&s, &[]).unwrap();
    assert_eq!(p.columns, ["trainable", "frozen"]);
    assert_eq!(p.rows.len(), 9);
    assert_eq!(p.rows[0].key.dataset, "coco", "paper order");
    let a = p.rows[0].values[0].unwrap();
    assert!(close(a.mean, 0.42) && a.n == 3);
    assert!(close(a.std, (2.0f64 / 3.0).sqrt() * 0.01));

    let r = report(&s, &[], None, false);
    assert_eq!(r.columns.len(), 2);
    assert!(
        r.columns
            .iter()
            .all(|c| c.origin == Origin::ThisRunSynthetic)
    );
    let coco0 = row(&r, "coco", 0);
    let c = coco0.cells[0].as_ref().unwrap();
    assert!(close(c.mean, 42.0) && close(coco0.scale, 100.0));
    assert!(close(c.std.unwrap(), (2.0f64 / 3.0).sqrt()));
    let vqa = row(&r, "vqav2", 4).cells[1].as_ref().unwrap();
    assert!(close(vqa.mean, 25.0), "VQA accuracy is stored in percent");
    let hm = row(&r, "hatefulmemes", 8).cells[0].as_ref().unwrap();
    assert!(close(hm.mean, 57.0), "ROC AUC x100");
    assert!(r.pct_of_reference.is_empty() && r.reference_model.is_none());
}

#[test]
fn percent_of_flamingo_matches_hand_computed_numbers_from_the_csv() {
    let (_d, s) = store();
    let r = report(&s, &[], Some("flamingo"), false);
    assert_eq!(r.reference_model.as_deref(), Some("flamingo-3b"));
    let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "trainable",
            "frozen",
            "flamingo-3b",
            "flamingo-9b",
            "openflamingo-3b",
            "openflamingo-4b",
            "openflamingo-9b"
        ]
    );
    assert_eq!(r.columns[2].label, "Flamingo-3B [paper]");
    assert_eq!(r.columns[0].label, "trainable [this run (synthetic world)]");
    // Paper Table 4, Flamingo-3B: COCO 73.0 / 85.0, VQAv2 49.2 / 53.2, HatefulMemes 53.7 / 53.6
    // at 0 / 4 shots (no 8-shot number in the CSV).
    let f3b = [73.0, 85.0, 49.2, 53.2, 53.7, 53.6];
    let trainable = [42.0, 50.0, 30.0, 34.0, 55.0, 56.0];
    let frozen = [38.0, 46.0, 20.0, 25.0, 55.0, 56.0];
    let of3b = [74.9, 77.3, 44.6, 45.8, 51.2, 50.6];
    let pct = |ours: &[f64; 6]| -> Vec<f64> {
        ours.iter().zip(f3b).map(|(o, f)| 100.0 * o / f).collect()
    };
    let coco0 = row(&r, "coco", 0);
    assert!(close(
        coco0.cells[0].as_ref().unwrap().pct_of_reference.unwrap(),
        100.0 * 42.0 / 73.0
    ));
    assert!(close(coco0.cells[2].as_ref().unwrap().mean, 73.0));
    assert!(
        coco0.cells[2].as_ref().unwrap().pct_of_reference.is_none(),
        "the reference itself"
    );
    assert!(close(coco0.cells[3].as_ref().unwrap().mean, 79.4));
    assert_eq!(coco0.cells[4].as_ref().unwrap().std, Some(0.2));
    assert!(
        row(&r, "coco", 8).cells[0]
            .as_ref()
            .unwrap()
            .pct_of_reference
            .is_none()
    );
    assert!(
        row(&r, "coco", 8).cells[2].is_none(),
        "no published 8-shot number"
    );

    for (name, ours) in [
        ("trainable", trainable),
        ("frozen", frozen),
        ("openflamingo-3b", of3b),
    ] {
        let s = r
            .pct_of_reference
            .iter()
            .find(|s| s.column == name)
            .unwrap();
        let (m, sd) = pop_mean_std(&pct(&ours));
        assert_eq!(s.settings, 6, "{name}");
        assert!(
            close(s.mean, m) && close(s.std, sd),
            "{name}: {} ± {} vs {m} ± {sd}",
            s.mean,
            s.std
        );
    }
    // The same numbers, computed once with Python's statistics module: trainable 74.690 ± 20.440 %,
    // OpenFlamingo-3B 93.339 ± 5.107 %.
    let t = r
        .pct_of_reference
        .iter()
        .find(|s| s.column == "trainable")
        .unwrap();
    assert!(
        (t.mean - 74.69027).abs() < 1e-4 && (t.std - 20.43961).abs() < 1e-4,
        "{t:?}"
    );
    let of = r
        .pct_of_reference
        .iter()
        .find(|s| s.column == "openflamingo-3b")
        .unwrap();
    assert!(
        (of.mean - 93.33867).abs() < 1e-4 && (of.std - 5.10708).abs() < 1e-4,
        "{of:?}"
    );
    assert!(r.pct_of_reference.iter().all(|s| s.column != "flamingo-3b"));

    // Choosing another reference model.
    let opts = ReportOptions {
        vs: Some("flamingo".into()),
        reference_model: "flamingo-9b".into(),
        ..ReportOptions::default()
    };
    let r9 = build(&s, &[], &opts, &Reference::paper().unwrap()).unwrap();
    let c = row(&r9, "vqav2", 4).cells[0].as_ref().unwrap();
    assert!(close(c.pct_of_reference.unwrap(), 100.0 * 34.0 / 56.3));
    assert_eq!(
        r9.columns[2].name, "flamingo-9b",
        "the reference comes first"
    );
    let bad = ReportOptions {
        vs: Some("flamingo".into()),
        reference_model: "gpt-4".into(),
        ..ReportOptions::default()
    };
    let e = build(&s, &[], &bad, &Reference::paper().unwrap()).unwrap_err();
    assert!(e.to_string().contains("`gpt-4` is not in"), "{e}");
}

#[test]
fn the_table_5_view_shows_deltas_and_diff_only_hides_equal_rows() {
    let (_d, s) = store();
    let r = report(&s, &[], Some("trainable"), false);
    let fr = col(&r, "frozen");
    assert_eq!(r.columns[fr].delta_vs.as_deref(), Some("trainable"));
    assert_eq!(r.columns[col(&r, "trainable")].delta_vs, None);
    assert!(close(
        row(&r, "coco", 0).cells[fr]
            .as_ref()
            .unwrap()
            .delta
            .unwrap(),
        -4.0
    ));
    assert!(close(
        row(&r, "vqav2", 4).cells[fr]
            .as_ref()
            .unwrap()
            .delta
            .unwrap(),
        -9.0
    ));
    assert!(
        row(&r, "coco", 0).cells[0]
            .as_ref()
            .unwrap()
            .delta
            .is_none()
    );
    let md = render_report(&r, Format::Markdown);
    assert!(md.contains("| 38.0 ± 0.8 (−4.0) "), "{md}");
    assert!(md.contains("| 42.0 ± 0.8 "), "{md}");

    let d = report(&s, &[], Some("trainable"), true);
    let kept: Vec<(String, i64)> = d
        .rows
        .iter()
        .map(|r| (r.dataset.clone(), r.shots))
        .collect();
    assert_eq!(
        kept,
        [
            ("coco".to_string(), 0),
            ("coco".into(), 4),
            ("vqav2".into(), 0),
            ("vqav2".into(), 4),
            ("vqav2".into(), 8)
        ]
    );
    assert_eq!(d.hidden_rows, 4);
    assert!(d.notes.iter().any(|n| n.contains("4 of 9 rows hidden")));
    // Without --vs, --diff-only compares this run's columns with each other.
    assert_eq!(report(&s, &[], None, true).rows.len(), 5);
    // Unknown names are errors that list what exists.
    let opts = ReportOptions {
        vs: Some("nope".into()),
        ..ReportOptions::default()
    };
    let e = build(&s, &[], &opts, &Reference::paper().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trainable, frozen") && e.contains("frozen_embeddings"),
        "{e}"
    );
}

#[test]
fn groups_split_vqa_cells_into_answer_type_rows() {
    let (_d, s) = store();
    record(&s, "exp", 0.0);
    let opts = ReportOptions {
        groups: Some("answer_type".into()),
        ..ReportOptions::default()
    };
    let r = build(&s, &[], &opts, &Reference::paper().unwrap()).unwrap();
    let names: std::collections::BTreeSet<&str> =
        r.rows.iter().map(|row| row.dataset.as_str()).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["vqav2: number", "vqav2: yes/no"],
        "only VQA cells have groups"
    );
    let plain = report(&s, &[], None, false);
    for shots in SHOTS {
        let whole = row(&plain, "vqav2", shots).cells[0].as_ref().unwrap().mean;
        let number = row(&r, "vqav2: number", shots).cells[0].as_ref().unwrap();
        assert!(
            close(number.mean, whole - 10.0),
            "{} vs {whole}",
            number.mean
        );
        assert_eq!(number.n, Some(3), "averaged over the three seeds");
        let yes_no = row(&r, "vqav2: yes/no", shots).cells[0].as_ref().unwrap();
        assert!(close(yes_no.mean, whole + 5.0));
    }
    // Question types were not stored: nothing to show.
    let opts = ReportOptions {
        groups: Some("question_type".into()),
        ..ReportOptions::default()
    };
    let r = build(&s, &[], &opts, &Reference::paper().unwrap()).unwrap();
    assert!(r.rows.is_empty());
}

#[test]
fn vs_an_experiment_pairs_variants_by_name() {
    let (_d, s) = store();
    record(&s, "frozen_embeddings_v2", 0.03);
    let r = report(
        &s,
        &["frozen_embeddings_v2"],
        Some("frozen_embeddings"),
        false,
    );
    let v2t = col(&r, "frozen_embeddings_v2/trainable");
    let v2f = col(&r, "frozen_embeddings_v2/frozen");
    assert_eq!(r.columns.len(), 4, "the compared experiment is brought in");
    assert_eq!(
        r.columns[v2t].delta_vs.as_deref(),
        Some("frozen_embeddings/trainable")
    );
    assert_eq!(
        r.columns[v2f].delta_vs.as_deref(),
        Some("frozen_embeddings/frozen")
    );
    assert!(
        (row(&r, "coco", 4).cells[v2t]
            .as_ref()
            .unwrap()
            .delta
            .unwrap()
            - 3.0)
            .abs()
            < 1e-6
    );
    assert!(
        row(&r, "vqav2", 4).cells[v2f]
            .as_ref()
            .unwrap()
            .delta
            .unwrap()
            .abs()
            < 1e-9
    );
    let d = report(
        &s,
        &["frozen_embeddings_v2"],
        Some("frozen_embeddings"),
        true,
    );
    assert_eq!(d.rows.len(), 3, "only the COCO rows differ");
    assert!(d.rows.iter().all(|r| r.dataset == "coco"));
}

/// Splits one CSV line with quoted fields.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn every_format_labels_origins_and_parses() {
    let (_d, s) = store();
    let r = report(&s, &[], Some("flamingo"), false);

    let json: serde_json::Value = serde_json::from_str(&render_report(&r, Format::Json)).unwrap();
    assert!(
        json["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("NOT the paper's"))
    );
    assert_eq!(json["columns"][0]["origin"], "this run (synthetic world)");
    assert_eq!(json["columns"][2]["origin"], "paper");
    assert_eq!(json["rows"][0]["cells"][2]["mean"], 73.0);
    assert_eq!(json["pct_of_reference"].as_array().unwrap().len(), 6);

    let csv = render_report(&r, Format::Csv);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert!(
        rows.iter().all(|f| f.len() == 16),
        "16 fields on every line"
    );
    let cells: Vec<_> = rows.iter().filter(|f| f[0] == "cell").collect();
    // 2 run columns x 9 rows + 5 paper models x 6 published settings.
    assert_eq!(cells.len(), 18 + 30);
    for f in &cells {
        match f[5].as_str() {
            "paper" => assert!(f[14].contains("Table 4") && f[15].contains("not from this run")),
            "this run (synthetic world)" => {
                assert!(f[15].starts_with("synthetic-world score of this run"))
            }
            other => panic!("origin {other}"),
        }
        let _: f64 = f[6].parse().unwrap();
    }
    let coco0 = cells
        .iter()
        .find(|f| f[1] == "coco" && f[2] == "0" && f[4] == "trainable")
        .unwrap();
    assert_eq!(coco0[11], "flamingo-3b");
    assert!((coco0[12].parse::<f64>().unwrap() - 100.0 * 42.0 / 73.0).abs() < 1e-8);
    assert_eq!(coco0[6], "42", "no float noise from rescaling");
    assert_eq!(rows.iter().filter(|f| f[0] == "pct_summary").count(), 6);
    assert_eq!(
        rows.iter().filter(|f| f[0] == "note").count(),
        r.notes.len()
    );

    for format in [Format::Table, Format::Markdown] {
        let t = render_report(&r, format);
        assert!(
            t.contains("[this run (synthetic world)]") && t.contains("Flamingo-3B [paper]"),
            "{t}"
        );
        assert!(
            t.contains("[% of paper Flamingo-3B]") && t.contains("57.5%"),
            "{t}"
        );
        assert!(t.contains("74.7% ± 20.4"), "the Figure 1 summary: {t}");
        assert!(t.contains("NOT the paper's numbers"), "{t}");
    }
    let plain = render_report(&report(&s, &[], None, false), Format::Table);
    assert!(
        plain.contains("CIDEr x100") && !plain.contains("[paper]"),
        "{plain}"
    );
}

#[test]
fn plots_are_written_as_svg_and_decodable_png() {
    let (d, s) = store();
    let out = d.path().join("plots");
    let files =
        results::plot::write_plots(&s, &[], "flamingo-3b", &Reference::paper().unwrap(), &out)
            .unwrap();
    let mut names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = [
        "loss_trainable",
        "loss_frozen",
        "shots_coco",
        "shots_vqav2",
        "shots_hatefulmemes",
        "pct_flamingo",
    ]
    .iter()
    .flat_map(|s| [format!("{s}.png"), format!("{s}.svg")])
    .collect();
    want.sort();
    assert_eq!(names, want);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.len() > 1000,
            "{} is {} bytes",
            f.display(),
            bytes.len()
        );
        if f.extension().unwrap() == "png" {
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), results::plot::PLOT_SIZE);
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with("<svg") && text.contains("</svg>"));
        }
    }
    let pct = std::fs::read_to_string(out.join("pct_flamingo.svg")).unwrap();
    assert!(pct.contains("Flamingo-3B") && pct.contains("this run") && pct.contains("paper"));
    let loss = std::fs::read_to_string(out.join("loss_frozen.svg")).unwrap();
    assert!(loss.contains("mmc4") && loss.contains("laion"));
}
