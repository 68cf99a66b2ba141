//! The command line: argument parsing and dispatch to library functions (glue only).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Flamingo-style vision-language experiments: train, evaluate, record, report.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `runner`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score a predictions file against annotations with a reference metric.
    Score(ScoreArgs),
    /// Data utilities: write the synthetic world, check an experiment's files.
    #[command(subcommand)]
    Data(DataCommand),
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Score(args) => {
            use crate::eval::metrics::score::{Metric, score_files};
            let metric: Metric = args.metric.parse()?;
            let report = score_files(metric, &args.predictions, &args.annotations)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: {} ({} predictions)",
                    report.metric, report.score, report.count
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Synth(_args)) => {
            anyhow::bail!("runner data synth: not built yet")
        }
    }
}
