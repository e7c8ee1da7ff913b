//! Command-line interface: one module per command group.

mod compare;
mod dataset;
mod folds;
mod health;
mod html;
mod metrics;
mod plan;
mod progress;
mod remote;
mod report;
mod run;
mod serve;
mod signal;
mod summarize;
mod summary;
mod table;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use crossfold_shared::spec::{Override, Spec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "crossfold",
    version,
    about = "Cross-validation experiments on radiographs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on standard error: auto (JSON when not a terminal), json or text. `RUST_LOG` sets the level.
    #[arg(
        long,
        global = true,
        default_value = "auto",
        env = "CROSSFOLD_LOG_FORMAT"
    )]
    pub log_format: crossfold_shared::logging::LogFormat,
}

impl Cli {
    pub fn is_coordinator(&self) -> bool {
        matches!(self.command, Command::Coordinator(_))
    }

    /// Commands that work on local files only and print: they may take
    /// SIGPIPE's default action (end quietly when their reader goes away,
    /// `crossfold plan ... | head`). Commands that talk over the network
    /// must not: a peer closing its socket would kill them silently.
    pub fn is_offline(&self) -> bool {
        matches!(
            self.command,
            Command::Dataset(_)
                | Command::Folds(_)
                | Command::Metrics(_)
                | Command::Summarize(_)
                | Command::Plan(_)
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make, import or check a data set.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Print or write the split plan of a protocol on a manifest.
    Folds(folds::FoldsArgs),
    /// Per-round statistics from a CSV of `label,score` (label 0/1).
    Metrics(metrics::MetricsArgs),
    /// Mean, SD (n-1), min and max of each column of a CSV of per-round values.
    Summarize(summarize::SummarizeArgs),
    /// Check a spec and print the experiment's data set, split plan and jobs.
    Plan(plan::PlanArgs),
    /// Run the whole experiment on this machine (embedded coordinator, local workers).
    Run(run::RunArgs),
    /// Serve experiments to workers (gRPC).
    Coordinator(serve::ServeArgs),
    /// Exit 0 when the coordinator's gRPC health check says SERVING, else 1.
    Health(health::HealthArgs),
    /// Submit a spec; prints the experiment id as the last line.
    Submit(remote::SubmitArgs),
    /// State of one experiment, or of all.
    Status(remote::StatusArgs),
    /// Follow an experiment's jobs until it ends.
    Watch(remote::IdArgs),
    /// Cancel an experiment.
    Cancel(remote::IdArgs),
    /// An experiment's results (tables, or --format json).
    Results(remote::IdArgs),
    /// Write an experiment's report files (report.html, report.md, report.json, .svg plots, CSVs, plan, spec).
    Report(report::ReportArgs),
    /// Compare two experiments on the same data and split plan (paired DeLong).
    Compare(compare::CompareArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Dataset(c) => dataset::run(c),
        Command::Folds(a) => folds::run(a),
        Command::Metrics(a) => metrics::run(a),
        Command::Summarize(a) => summarize::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Run(a) => block_on(run::run(a)),
        Command::Coordinator(a) => block_on(serve::run(a)),
        Command::Health(a) => block_on(health::run(a)),
        Command::Submit(a) => block_on(remote::submit(a)),
        Command::Status(a) => block_on(remote::status(a)),
        Command::Watch(a) => block_on(remote::watch(a)),
        Command::Cancel(a) => block_on(remote::cancel(a)),
        Command::Results(a) => block_on(remote::results(a)),
        Command::Report(a) => block_on(report::run(a)),
        Command::Compare(a) => block_on(compare::run(a)),
    }
}

fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(f: F) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?
        .block_on(f)
}

/// The spec's pretrained weights, when it names some, are a file here:
/// checked before any work starts, rather than failing every round. With
/// `local = false` (a plan for workers elsewhere) weights by an absolute
/// path may be on the workers only: a warning, not an error.
pub fn check_pretrained(spec: &Spec, local: bool) -> Result<()> {
    if let (Some(given), Some(path)) = (&spec.train.pretrained, spec.pretrained_path()) {
        let problem = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => return Ok(()),
            Ok(_) => format!(
                "train.pretrained = {given:?}: {} is not a file",
                path.display()
            ),
            Err(e) => format!("train.pretrained = {given:?}: {}: {e}", path.display()),
        };
        if local || !Path::new(given).is_absolute() {
            anyhow::bail!(problem);
        }
        eprintln!("warning: {problem} (fine if the workers have it there)");
    }
    Ok(())
}

/// Refuse to write `out` when it is one of the command's own inputs
/// (`--out` pointed at the spec's or the manifest's folder): the input
/// would be replaced by the output.
pub fn not_an_input(out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let Ok(target) = out.canonicalize() else {
        return Ok(()); // not there yet: nothing to replace
    };
    for (what, input) in inputs {
        if input.canonicalize().is_ok_and(|i| i == target) {
            anyhow::bail!(
                "{}: that is the {what} this command reads; writing there would replace it: give another --out",
                out.display()
            );
        }
    }
    Ok(())
}

/// Load a spec with `--set` overrides.
pub fn load_spec(path: &Path, sets: &[String]) -> Result<Spec> {
    let overrides: Vec<Override> = sets
        .iter()
        .map(|s| s.parse::<Override>())
        .collect::<Result<_, _>>()?;
    Ok(Spec::load(path, &overrides)?)
}

/// Create the folder `dir` and its parents; when one of them is a file,
/// say which.
pub fn create_folder(dir: &Path) -> Result<()> {
    Ok(crossfold_shared::folder::create(dir)?)
}

/// Write `text` to `path`, naming the file on failure.
pub fn write_file(path: &PathBuf, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_folder(parent)?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A fraction as a percentage with one decimal, rounding halves up as the
/// paper does (9/16 = 56.25 % -> 56.3; `format!` alone rounds that tie to
/// even, 56.2). Every table, in the terminal and in the reports, uses it.
pub fn percent(x: f64) -> String {
    format!("{:.1}", (x * 1000.0 + 1e-9).round() / 10.0)
}

/// Format an optional fraction as a percentage with one decimal, or `-`.
pub fn pct(v: Option<f64>) -> String {
    v.map(percent).unwrap_or_else(|| "-".into())
}

/// Format an optional number with `digits` decimals, or `-`.
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}
