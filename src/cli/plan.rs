//! `crossfold plan SPEC`: everything about an experiment short of training:
//! the checked spec, the data set (generated first when the spec asks for
//! the synthetic cohort and it does not exist yet), its fingerprint, the
//! split plan and the jobs the coordinator would run.

use super::{folds::plan_text, load_spec, write_file};
use anyhow::{bail, Context, Result};
use clap::Args;
use crossfold_coordinator::jobs::plan_jobs;
use crossfold_shared::dataset;
use crossfold_shared::folds::make_plan;
use crossfold_shared::manifest::{manifest_root, Manifest};
use crossfold_shared::spec::Spec;
use crossfold_shared::synth::{self, SynthConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct PlanArgs {
    spec: PathBuf,
    /// Spec overrides, e.g. --set protocol.seed=7 (validated like the file).
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Write plan.json, spec.toml and jobs.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Make sure the spec's data set exists (generating the synthetic cohort when
/// the spec asks for it) and passes `dataset check`.
pub fn ensure_dataset(spec: &Spec) -> Result<Manifest> {
    let path = spec.manifest_path();
    if !path.exists() {
        match &spec.dataset.synthetic {
            Some(s) => {
                let dir = manifest_root(&path);
                if path.file_name().is_some_and(|n| n != "manifest.csv") {
                    bail!(
                        "dataset.manifest = {:?}: a synthetic cohort's manifest must be named manifest.csv",
                        spec.dataset.manifest
                    );
                }
                eprintln!("generating the synthetic cohort in {} ...", dir.display());
                let started = Instant::now();
                synth::generate(
                    &SynthConfig {
                        normal: s.normal,
                        benign: s.benign,
                        malignant: s.malignant,
                        size: s.size,
                        seed: s.seed,
                        views_per_patient: 1,
                    },
                    &dir,
                )?;
                eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
            }
            None => bail!(
                "dataset.manifest = {:?}: {} does not exist",
                spec.dataset.manifest,
                path.display()
            ),
        }
    }
    let report = dataset::check(&path, None)?;
    if !report.ok() {
        let lines: Vec<String> = report
            .errors
            .iter()
            .take(20)
            .map(|e| format!("  {e}"))
            .collect();
        bail!(
            "{}: {} error(s) (run `crossfold dataset check {}`):\n{}",
            path.display(),
            report.errors.len(),
            path.display(),
            lines.join("\n")
        );
    }
    Ok(Manifest::load(&path)?)
}

pub fn run(a: PlanArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec, &a.sets)?;
    let manifest = ensure_dataset(&spec)?;
    let fp = dataset::fingerprint(&manifest)?;
    let plan = make_plan(&manifest, &spec.protocol).context("making the split plan")?;
    let jobs = plan_jobs(&plan);
    let [n, b, m] = manifest.counts();
    println!("experiment {:?}: {}", spec.name, spec.description);
    println!(
        "data set {}: {} images ({n} normal, {b} benign, {m} malignant), fingerprint {}",
        spec.manifest_path().display(),
        manifest.entries.len(),
        fp.sha256
    );
    println!(
        "model {:?}, {} px, {} epochs, batch {}, {:?} lr {}, device {}",
        spec.train.arch,
        spec.train.image_size,
        spec.train.epochs,
        spec.train.batch_size,
        spec.train.optimizer,
        spec.train.lr,
        spec.train.device
    );
    print!("\n{}", plan_text(&plan, &manifest));
    println!(
        "\n{} jobs: {}",
        jobs.len(),
        jobs.iter()
            .map(|j| j.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(out) = &a.out {
        write_file(&out.join("plan.json"), &plan.to_json_pretty())?;
        write_file(&out.join("spec.toml"), &spec.to_toml())?;
        write_file(
            &out.join("jobs.json"),
            &serde_json::to_string_pretty(&jobs)?,
        )?;
        println!("wrote {}/{{plan.json,spec.toml,jobs.json}}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
