//! `crossfold dataset synth|import|check|fingerprint`.

use super::{table, Format};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use crossfold_shared::dataset::{self, CheckReport};
use crossfold_shared::manifest::Manifest;
use crossfold_shared::synth::{self, SynthConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Generate the synthetic knee-radiograph cohort (default: the paper's
    /// Table 1, 260 normal + 80 benign + 180 malignant) as PNGs and a manifest.
    Synth(SynthArgs),
    /// Make a manifest from a folder tree ROOT/{normal,benign,malignant}/...
    Import(ImportArgs),
    /// Check a manifest and its images; exits non-zero on any error.
    Check(CheckArgs),
    /// Print the data set's SHA-256 fingerprint.
    Fingerprint { manifest: PathBuf },
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory (gets manifest.csv and images/).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 260)]
    normal: usize,
    #[arg(long, default_value_t = 80)]
    benign: usize,
    #[arg(long, default_value_t = 180)]
    malignant: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    size: u32,
    #[arg(long, default_value_t = 2021)]
    seed: u64,
    /// Views per patient (ap, lat, ...).
    #[arg(long, default_value_t = 1)]
    views: u32,
    /// Replace a synthetic data set already in OUT (its manifest.csv and the
    /// images synth wrote; refused when images/ holds other files).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Root folder holding normal/, benign/ and malignant/.
    root: PathBuf,
    /// Where to write the manifest (must lie in ROOT; default ROOT/manifest.csv).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite a manifest that already exists there.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    manifest: PathBuf,
    /// No image may lie outside this folder (default: the manifest's folder).
    #[arg(long)]
    data_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(cmd: DatasetCommand) -> Result<ExitCode> {
    match cmd {
        DatasetCommand::Synth(a) => synth(a),
        DatasetCommand::Import(a) => import(a),
        DatasetCommand::Check(a) => check(a),
        DatasetCommand::Fingerprint { manifest } => {
            let m = Manifest::load(&manifest)?;
            let fp = dataset::fingerprint(&m)?;
            println!("{}", fp.sha256);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn synth_config(a: &SynthArgs) -> SynthConfig {
    SynthConfig {
        normal: a.normal,
        benign: a.benign,
        malignant: a.malignant,
        size: a.size,
        seed: a.seed,
        views_per_patient: a.views,
    }
}

/// A synth setting's problem, named by the flag that gave it.
fn synth_flag_error(e: synth::SynthError) -> anyhow::Error {
    match e {
        synth::SynthError::InvalidConfig {
            field,
            value,
            reason,
        } => {
            let flag = match field {
                "views_per_patient" => "--views".to_string(),
                "normal+benign+malignant" => "--normal + --benign + --malignant".to_string(),
                other => format!("--{other}"),
            };
            anyhow::anyhow!("{flag} {value}: {reason}")
        }
        other => other.into(),
    }
}

fn synth(a: SynthArgs) -> Result<ExitCode> {
    // Bad settings are refused before anything already there is touched.
    synth_config(&a).validate().map_err(synth_flag_error)?;
    let manifest = a.out.join("manifest.csv");
    let images = a.out.join("images");
    let refuse = || -> Result<()> {
        if (manifest.exists() || images.exists()) && !a.force {
            bail!(
                "{} already holds a data set ({}): choose another --out, or add --force to replace it",
                a.out.display(),
                if manifest.exists() { "manifest.csv" } else { "images/" }
            );
        }
        Ok(())
    };
    // Refused before anything is created there, and again once held:
    // another process generating here is waited for, never written over.
    refuse()?;
    let held = synth::begin_writing(&a.out)?;
    refuse()?;
    if manifest.exists() || images.exists() {
        // Nothing when images/ holds anything synth does not write. Else
        // the manifest goes first, so that a replacement stopped half-way
        // is an unfinished cohort (generated again by the next run), never
        // an old manifest over missing images; then only what synth wrote,
        // so that a larger earlier cohort leaves no stale images.
        synth::check_earlier(&a.out).context("--force")?;
        let marker = a.out.join(synth::SYNTHETIC_PARTIAL);
        std::fs::write(&marker, b"").with_context(|| format!("--force: {}", marker.display()))?;
        for f in ["manifest.csv", synth::SYNTHETIC_SETTINGS] {
            let path = a.out.join(f);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(
                        anyhow::Error::from(e).context(format!("--force: {}", path.display()))
                    );
                }
            }
        }
        synth::remove_earlier(&a.out).context("--force")?;
    }
    let started = Instant::now();
    let manifest = synth::generate_held(&synth_config(&a), &a.out, held)?;
    let [n, b, m] = manifest.counts();
    eprintln!(
        "wrote {} images ({n} normal, {b} benign, {m} malignant) in {:.1} s",
        manifest.entries.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", a.out.join("manifest.csv").display());
    Ok(ExitCode::SUCCESS)
}

fn import(a: ImportArgs) -> Result<ExitCode> {
    let (manifest, summary) = dataset::import_tree(&a.root)?;
    let out = a.out.unwrap_or_else(|| a.root.join("manifest.csv"));
    let out_dir = crossfold_shared::manifest::manifest_root(&out);
    let same = |p: &Path| p.canonicalize().ok();
    if same(&out_dir) != same(&a.root) {
        bail!(
            "--out {}: the manifest must be written in the import root {} (paths in it are relative to its folder)",
            out.display(),
            a.root.display()
        );
    }
    if out.exists() && !a.force {
        bail!(
            "{} already exists: add --force to overwrite it, or --out another file in {}",
            out.display(),
            a.root.display()
        );
    }
    manifest.write(&out)?;
    let [n, b, m] = manifest.counts();
    eprintln!(
        "{} images ({n} normal, {b} benign, {m} malignant); {} other file(s) skipped",
        summary.images,
        summary.skipped_files.len()
    );
    for f in summary.skipped_files.iter().take(10) {
        eprintln!("  skipped {}", f.display());
    }
    if !summary.hidden.is_empty() {
        eprintln!(
            "{} hidden file(s) or folder(s) (names starting with \".\") skipped:",
            summary.hidden.len()
        );
        for f in summary.hidden.iter().take(10) {
            eprintln!("  hidden {}", f.display());
        }
    }
    if !summary.shared_prefixes.is_empty() {
        let shown: Vec<&str> = summary
            .shared_prefixes
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        eprintln!(
            "warning: {} name prefix(es) are shared by several files directly in a class folder ({}{}); \
             each such file is its own patient. If they are views of one patient, put each patient's \
             files in a sub-folder (benign/P0002/ap.png, benign/P0002/lat.png) and import again, \
             or the split plan may put one patient's views on both sides of a round",
            summary.shared_prefixes.len(),
            shown.join(", "),
            if summary.shared_prefixes.len() > shown.len() { ", ..." } else { "" }
        );
    }
    // The files themselves (corrupt, empty, the same image under two
    // patients) are checked now, not at the first submit.
    let report =
        dataset::check(&out, None).with_context(|| format!("checking {}", out.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {}: {w}", out.display());
    }
    for e in &report.errors {
        eprintln!("error: {}: {e}", out.display());
    }
    println!("{}", out.display());
    if !report.ok() {
        eprintln!(
            "{} error(s): {} was written but does not pass `crossfold dataset check`; fix the files \
             (or edit the manifest) and check it again",
            report.errors.len(),
            out.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn check(a: CheckArgs) -> Result<ExitCode> {
    let report = dataset::check(&a.manifest, a.data_root.as_deref()).map_err(|e| {
        // Most errors name the manifest already.
        let text = e.to_string();
        let name = a.manifest.display().to_string();
        let err = if text.contains(&format!("{name}:")) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(format!("checking {name}"))
        };
        if matches!(a.format, Format::Json) {
            // A script reading the JSON gets a document in any case: the
            // manifest as its one error (line 0: the file as a whole).
            let doc = serde_json::json!({
                "manifest": name,
                "rows": 0,
                "errors": [{"kind": "manifest", "line": 0, "path": "", "field": null,
                            "value": null, "message": format!("{err:#}")}],
                "warnings": [],
            });
            println!("{doc:#}");
        }
        err
    })?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", check_text(&report)),
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_text(r: &CheckReport) -> String {
    let mut out = format!(
        "{}: {} rows, {} patients, data root {}\n",
        r.manifest.display(),
        r.rows,
        r.patients,
        r.data_root.display()
    );
    let rows: Vec<Vec<String>> = r
        .counts
        .iter()
        .map(|(l, n)| vec![l.clone(), n.to_string()])
        .collect();
    out.push_str(&table::render(&["label", "images"], &rows));
    for w in &r.warnings {
        out.push_str(&format!("warning: {}: {w}\n", r.manifest.display()));
    }
    for e in &r.errors {
        out.push_str(&format!("error: {}: {e}\n", r.manifest.display()));
    }
    if r.ok() {
        out.push_str("ok: no errors\n");
    } else {
        out.push_str(&format!("{} error(s)\n", r.errors.len()));
    }
    out
}
