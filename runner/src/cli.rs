//! The command line: argument parsing and dispatch to library functions (glue only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{self, Overrides};
use crate::exec::{ExecOptions, Only};
use crate::plan;

/// Flamingo-style vision-language experiments: train, evaluate, record, report.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about)]
pub struct Cli {
    /// Results database (default runs/results.sqlite; artifacts go next to it).
    #[arg(long, global = true, env = "RUNNER_DB")]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `runner`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, then run every pending job of an experiment.
    Exec(ExecArgs),
    /// Print the numbered job list with each job's state and hash.
    Plan(PlanArgs),
    /// Pivot tables of the recorded eval cells.
    Report(ReportArgs),
    /// Score a predictions file against annotations with a reference metric.
    Score(ScoreArgs),
    /// In-context generation with an experiment's model (interleaved `<image>` prompts).
    Generate(GenerateArgs),
    /// Data utilities: write the synthetic world, check an experiment's files.
    #[command(subcommand)]
    Data(DataCommand),
}

/// Arguments of `runner exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Experiment file.
    pub file: PathBuf,
    /// Override a value, e.g. --set train.lr=3e-4 (typed: numbers, booleans, [lists]).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run only the training side (synth, pretrain, train) or only the eval cells.
    #[arg(long, value_parser = ["train", "eval"])]
    pub only: Option<String>,
    /// Stop at the first failed job (jobs already running on other workers finish).
    #[arg(long)]
    pub fail_fast: bool,
    /// Jobs run at once (default: the experiment's `jobs`, else 1).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// Arguments of `runner plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Experiment file.
    pub file: PathBuf,
    /// Override a value (as for exec).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved experiment as TOML instead of the job list.
    #[arg(long)]
    pub resolved: bool,
    /// Print the jobs as a JSON array.
    #[arg(long, conflicts_with = "resolved")]
    pub json: bool,
}

/// Arguments of `runner report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Experiments to include (default: all recorded).
    #[arg(long)]
    pub experiment: Vec<String>,
    /// table, markdown, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// `flamingo`: add the published Flamingo / OpenFlamingo columns and "% of Flamingo";
    /// a column, variant or experiment name: show deltas against it (the paper's Table 5 view).
    #[arg(long, value_name = "flamingo|VARIANT|EXPERIMENT")]
    pub vs: Option<String>,
    /// Published model that "% of Flamingo" divides by (a model id of paper_results.csv).
    #[arg(long, value_name = "MODEL", default_value = results::compare::DEFAULT_REFERENCE_MODEL)]
    pub vs_model: String,
    /// Published models shown as columns with `--vs flamingo` (comma-separated model ids).
    #[arg(
        long,
        value_name = "MODEL,...",
        value_delimiter = ',',
        default_values_t = results::compare::DEFAULT_PAPER_MODELS.map(String::from)
    )]
    pub paper_models: Vec<String>,
    /// Show only rows where this run's columns differ by more than --tolerance.
    #[arg(long)]
    pub diff_only: bool,
    /// Tolerance of --diff-only, on the displayed (paper) scale.
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// VQA accuracy by group, as the official VQA evaluation reports it: one row per dataset and
    /// answer type (yes/no, number, other) or question type ("what color is the", ...).
    #[arg(long, value_name = "KIND", value_parser = ["answer_type", "question_type"])]
    pub groups: Option<String>,
    /// Also write plots (loss curves, score vs shots, % of Flamingo) as SVG and PNG into DIR.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

/// Arguments of `runner generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Experiment file (a file with only `name` and `[model]` is enough).
    pub file: PathBuf,
    /// Image files, one per `<image>` in the prompt, in order.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// The prompt, e.g. "<image>Output:".
    #[arg(long)]
    pub prompt: String,
    /// New-token budget.
    #[arg(long, default_value_t = 20)]
    pub max_new_tokens: usize,
    /// Beams (1 = greedy).
    #[arg(long, default_value_t = 3)]
    pub num_beams: usize,
    /// Variant of a swept experiment (default: the first).
    #[arg(long)]
    pub variant: Option<String>,
    /// Override a value (as for exec).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print {prompt_ids, prompt_logprobs, output_ids, output_logprobs, text, weights} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `runner score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// cider, vqa-accuracy or roc-auc.
    #[arg(long)]
    pub metric: String,
    /// Predictions file (COCO results list, VQA results list, or [{"id","score"}]).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Annotations file (COCO captions, VQA annotations, HatefulMemes JSONL or JSON list).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Print one JSON object {"metric","score","count"}.
    #[arg(long)]
    pub json: bool,
}

/// `runner data ...`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the deterministic synthetic world in the real dataset formats.
    Synth(SynthArgs),
    /// Open every evaluation file and image and every training shard an experiment names;
    /// print counts and annotation checksums; exit non-zero on any problem.
    Check(CheckArgs),
}

/// Arguments of `runner data check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Experiment file.
    pub file: PathBuf,
    /// Override a value (as for exec).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Arguments of `runner data synth`.
#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output directory.
    pub dir: PathBuf,
    /// World seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// World size preset or scale.
    #[arg(long, default_value = "default")]
    pub size: String,
}

/// Entry point of the binary: parse, dispatch, print errors with their context chain.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (e.g. `| head`) ends the output quietly.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn db_path(cli_db: &Option<PathBuf>) -> PathBuf {
    cli_db
        .clone()
        .unwrap_or_else(|| Path::new("runs").join("results.sqlite"))
}

fn load(file: &Path, set: &[String]) -> Result<(config::Loaded, plan::Plan)> {
    let loaded = config::load(file, &Overrides::from_process(set))?;
    let plan = plan::plan(&loaded);
    Ok((loaded, plan))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let db = db_path(&cli.db);
    match cli.command {
        Command::Plan(args) => cmd_plan(&args, &db),
        Command::Exec(args) => cmd_exec(&args, &db),
        Command::Report(args) => cmd_report(&args, &db),
        Command::Score(args) => cmd_score(&args),
        Command::Generate(args) => cmd_generate(&args, &db),
        Command::Data(DataCommand::Synth(args)) => cmd_synth(&args),
        Command::Data(DataCommand::Check(args)) => cmd_data_check(&args),
    }
}

fn cmd_data_check(args: &CheckArgs) -> Result<ExitCode> {
    let loaded = config::load(&args.file, &Overrides::from_process(&args.set))?;
    let report = crate::eval::check::check(&loaded);
    let mut out = format!("data check: {}\n", args.file.display());
    for line in &report.lines {
        out.push_str(line);
        out.push('\n');
    }
    emit(&out)?;
    if report.ok() {
        emit("all files readable\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} problem(s):", report.problems.len());
    for p in &report.problems {
        eprintln!("  {p}");
    }
    if let Some(synth) = &loaded.composed.experiment.data.synth {
        let dir = Path::new(&synth.dir);
        if !dir.join(crate::data::synth::MANIFEST_PATH).is_file() {
            eprintln!(
                "note: the synthetic world {} is not written yet; `runner exec` writes it first \
                 (or `runner data synth {}`), so files under it are expected to be missing now",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(ExitCode::FAILURE)
}

fn cmd_plan(args: &PlanArgs, db: &Path) -> Result<ExitCode> {
    let (loaded, plan) = load(&args.file, &args.set)?;
    if args.resolved {
        emit(&config::to_toml(&loaded.composed.experiment))?;
        return Ok(ExitCode::SUCCESS);
    }
    // Reading states never creates the database.
    let statuses = if db.is_file() {
        let store = results::Store::open(db)?;
        let hashes: Vec<String> = plan.jobs.iter().map(|j| j.hash.clone()).collect();
        store.job_status(&hashes)?
    } else {
        Default::default()
    };
    let nvar = plan.variants.len();
    let views: Vec<plan::JobView> = plan
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let st = statuses.get(&j.hash);
            let state = match st {
                Some(s) if s.state == results::JobState::Running && s.lease_expired => "stale",
                Some(s) => s.state.as_str(),
                None => "pending",
            };
            plan::JobView {
                index: i + 1,
                kind: j.kind.as_str(),
                variant: plan::variant_label(j, nvar),
                hash: &j.hash,
                state,
                label: &j.label,
                dataset: j.dataset.as_deref(),
                shots: j.shots,
                seed: j.seed,
                error: st.and_then(|s| s.error.as_deref()),
            }
        })
        .collect();
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&views)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{}: {} variant(s), {} job(s); database {}\n",
        plan.name,
        nvar,
        plan.jobs.len(),
        db.display()
    );
    out.push_str(&format!(
        "{:>5}  {:<9} {:<9} {:<8}  job\n",
        "#", "kind", "hash", "state"
    ));
    for v in &views {
        out.push_str(&format!(
            "{:>5}  {:<9} {:<9} {:<8}  {}\n",
            v.index,
            v.kind,
            &v.hash[..8],
            v.state,
            v.label
        ));
        if let Some(e) = v.error {
            out.push_str(&format!(
                "{:>5}  last error: {}\n",
                "",
                e.lines().next().unwrap_or("")
            ));
        }
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_exec(args: &ExecArgs, db: &Path) -> Result<ExitCode> {
    let (loaded, plan) = load(&args.file, &args.set)?;
    let opts = ExecOptions {
        only: args
            .only
            .as_deref()
            .map(|o| if o == "eval" { Only::Eval } else { Only::Train }),
        fail_fast: args.fail_fast,
        jobs: args.jobs.or(loaded.composed.experiment.jobs).unwrap_or(1),
        lease_ttl: std::env::var("RUNNER_LEASE_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(std::time::Duration::from_secs)
            .unwrap_or(ExecOptions::default().lease_ttl),
    };
    let summary = crate::exec::exec(&plan, &loaded, db, &opts)
        .with_context(|| format!("exec {}", args.file.display()))?;
    println!(
        "{}: ran {} job(s), {} already done, {} failed, {} not run",
        plan.name,
        summary.ran,
        summary.already_done,
        summary.failed.len(),
        summary.blocked
    );
    for (kind, n) in &summary.unavailable {
        println!(
            "  {n} {kind} job(s) pending: the `{kind}` stage is not available in this build yet"
        );
    }
    for (label, err) in &summary.failed {
        println!("  failed: {label}: {err}");
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_report(args: &ReportArgs, db: &Path) -> Result<ExitCode> {
    let format: results::report::Format = args.format.parse().map_err(anyhow::Error::msg)?;
    if !db.is_file() {
        anyhow::bail!(
            "no results database at {} (run `runner exec` first, or pass --db)",
            db.display()
        );
    }
    let store = results::Store::open(db)?;
    let reference = results::reference::Reference::paper()?;
    let opts = results::compare::ReportOptions {
        vs: args.vs.clone(),
        reference_model: args.vs_model.to_ascii_lowercase(),
        paper_models: args.paper_models.clone(),
        diff_only: args.diff_only,
        tolerance: args.tolerance,
        groups: args.groups.clone(),
    };
    let report = results::compare::build(&store, &args.experiment, &opts, &reference)?;
    let text_format = matches!(
        format,
        results::report::Format::Table | results::report::Format::Markdown
    );
    if text_format && report.rows.is_empty() && report.hidden_rows == 0 {
        match &args.groups {
            // Only VQA cells have groups, and only those recorded since groups are stored.
            Some(kind) => println!(
                "no eval cells with {kind} groups in {} (VQA cells recorded by this version have them)",
                db.display()
            ),
            None => println!("no eval cells recorded yet in {}", db.display()),
        }
    } else {
        print!("{}", results::render::render_report(&report, format));
    }
    if let Some(dir) = &args.plot {
        let files = results::plot::write_plots(
            &store,
            &args.experiment,
            &opts.reference_model,
            &reference,
            dir,
        )
        .with_context(|| format!("writing plots into {}", dir.display()))?;
        eprintln!("wrote {} plot files into {}", files.len(), dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_synth(args: &SynthArgs) -> Result<ExitCode> {
    let size: crate::data::synth::WorldSize = args.size.parse()?;
    let opts = crate::data::synth::SynthOptions::new(args.seed, size);
    let start = std::time::Instant::now();
    let summary = crate::data::synth::write_world(&args.dir, &opts)
        .with_context(|| format!("runner data synth {}", args.dir.display()))?;
    let mut out = format!(
        "wrote synthetic world (seed {}, size {}, {} px) to {}: {} files, {:.1} MB in {:.1} s\n",
        summary.seed,
        summary.size,
        summary.image_size,
        args.dir.display(),
        summary.files,
        summary.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    for (key, n) in &summary.counts {
        out.push_str(&format!("  {key:<36} {n}\n"));
    }
    out.push_str(&format!(
        "layout: {}\n",
        args.dir.join(crate::data::synth::MANIFEST_PATH).display()
    ));
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_score(args: &ScoreArgs) -> Result<ExitCode> {
    use crate::eval::metrics::score::{Metric, score_files};
    let metric: Metric = args.metric.parse()?;
    let report = score_files(metric, &args.predictions, &args.annotations)?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string(&report)?))?;
    } else {
        let mut out = format!(
            "{}: {} ({} predictions)\n",
            report.metric, report.score, report.count
        );
        // As the official VQA evaluation prints it: per answer type (question types via --json).
        if !report.by_answer_type.is_empty() {
            out.push_str("per answer type:\n");
            for (name, g) in &report.by_answer_type {
                out.push_str(&format!(
                    "  {name:<14} {} ({} predictions)\n",
                    g.score, g.count
                ));
            }
        }
        emit(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_generate(args: &GenerateArgs, db: &Path) -> Result<ExitCode> {
    let (loaded, plan) = load(&args.file, &args.set)?;
    let req = crate::infer::GenerateRequest {
        images: args.images.clone(),
        prompt: args.prompt.clone(),
        max_new_tokens: args.max_new_tokens,
        num_beams: args.num_beams,
    };
    let out = crate::infer::generate(
        &loaded,
        &plan,
        args.variant.as_deref(),
        &crate::exec::runs_dir(db),
        &req,
    )?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string(&out)?))?;
    } else {
        emit(&format!("{}\n", out.text))?;
    }
    Ok(ExitCode::SUCCESS)
}
