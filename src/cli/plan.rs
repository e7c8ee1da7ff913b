//! `crossfold plan SPEC`: everything about an experiment short of training:
//! the checked spec, the data set (generated first when the spec asks for
//! the synthetic cohort and it does not exist yet), its fingerprint, the
//! split plan and the jobs the coordinator would run.

use super::{folds::plan_text, load_spec, write_file};
use anyhow::Result;
use clap::Args;
use crossfold_coordinator::jobs::plan_jobs;
use crossfold_shared::experiment::prepare;
use crossfold_shared::manifest::manifest_root;
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

pub fn run(a: PlanArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec, &a.sets)?;
    super::check_pretrained(&spec, false)?;
    let started = Instant::now();
    let prepared = prepare(&spec)?;
    if prepared.generated {
        // Said plainly: a mistyped manifest path lands here too.
        eprintln!(
            "dataset.manifest = {:?} did not exist: generated the synthetic cohort of \
             [dataset.synthetic] in {} ({:.1} s); if you meant a real data set, fix the path",
            spec.dataset.manifest,
            manifest_root(&spec.manifest_path()).display(),
            started.elapsed().as_secs_f64()
        );
    }
    let (manifest, fp, plan) = (prepared.manifest, prepared.fingerprint, prepared.plan);
    for w in plan.warnings(&manifest) {
        eprintln!("warning: {w}");
    }
    let jobs = plan_jobs(&plan);
    let [n, b, m] = manifest.counts();
    println!("experiment {:?}: {}", spec.name, spec.description);
    println!(
        "data set {}: {} images ({n} normal, {b} benign, {m} malignant), fingerprint {}",
        spec.manifest_path().display(),
        manifest.entries.len(),
        fp.sha256
    );
    // Values as a spec spells them.
    println!(
        "model {}, {} px, {} epoch(s), batch {}, optimizer {}, lr {}, device {}",
        spec.train.arch,
        spec.train.image_size,
        spec.train.epochs,
        spec.train.batch_size,
        format!("{:?}", spec.train.optimizer).to_lowercase(),
        spec.train.lr,
        spec.train.device
    );
    if spec.train.cpu.is_some() {
        let c = spec.train.for_cpu();
        println!(
            "  on a CPU ([train.cpu]): model {}, {} px, {} epoch(s), batch {}, lr {}",
            c.arch, c.image_size, c.epochs, c.batch_size, c.lr
        );
    }
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
        let manifest_path = spec.manifest_path();
        for f in ["plan.json", "spec.toml", "jobs.json"] {
            super::not_an_input(
                &out.join(f),
                &[
                    ("spec", a.spec.as_path()),
                    ("manifest", manifest_path.as_path()),
                ],
            )?;
        }
        write_file(&out.join("plan.json"), &plan.to_json_pretty())?;
        // With absolute paths, as `run` and `report` write it: it runs from
        // wherever it is written.
        let mut resolved = spec.clone();
        super::remote::absolute_paths(&mut resolved)?;
        write_file(&out.join("spec.toml"), &resolved.to_toml())?;
        write_file(
            &out.join("jobs.json"),
            &serde_json::to_string_pretty(&jobs)?,
        )?;
        println!("wrote {}/{{plan.json,spec.toml,jobs.json}}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
