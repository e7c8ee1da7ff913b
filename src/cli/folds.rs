//! `crossfold folds`: the split plan of a protocol on a manifest.

use super::{load_spec, table, write_file, Format};
use anyhow::{bail, Result};
use clap::Args;
use crossfold_shared::folds::{make_plan, SplitPlan};
use crossfold_shared::label::{Label, Task};
use crossfold_shared::manifest::Manifest;
use crossfold_shared::spec::{protocol_problems, ProtocolKind, ProtocolSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct FoldsArgs {
    /// The manifest CSV (or give --spec).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Take the manifest and protocol from a spec.
    #[arg(long, conflicts_with = "manifest")]
    spec: Option<PathBuf>,
    /// Spec overrides, e.g. --set protocol.seed=7.
    #[arg(long = "set", requires = "spec")]
    sets: Vec<String>,
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Number of groups k.
    #[arg(long)]
    groups: Option<usize>,
    /// Groups per test set p (leave-p-groups-out; paper's malignancy task).
    #[arg(long)]
    test_groups: Option<usize>,
    #[arg(long)]
    repeats: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Tasks, comma separated (screening,malignancy).
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Also write the plan (JSON) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check an existing plan file against the manifest instead of making one.
    #[arg(long)]
    verify: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProtocolArg {
    Paper,
    Kfold,
    LeavePGroupsOut,
}

pub fn run(a: FoldsArgs) -> Result<ExitCode> {
    if a.verify.is_some() {
        // The plan file names its protocol: flags that would contradict it
        // are refused, not ignored.
        let given: Vec<&str> = [
            ("--protocol", a.protocol.is_some()),
            ("--groups", a.groups.is_some()),
            ("--test-groups", a.test_groups.is_some()),
            ("--repeats", a.repeats.is_some()),
            ("--seed", a.seed.is_some()),
            ("--tasks", a.tasks.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if !given.is_empty() {
            bail!(
                "--verify checks a plan against the protocol written in it; drop {}",
                given.join(", ")
            );
        }
    }
    let (manifest_path, mut protocol) = match (&a.spec, &a.manifest) {
        (Some(spec), _) => {
            let spec = load_spec(spec, &a.sets)?;
            (spec.manifest_path(), spec.protocol)
        }
        (None, Some(m)) => (m.clone(), ProtocolSpec::default()),
        (None, None) => bail!("give --manifest MANIFEST or --spec SPEC"),
    };
    if let Some(p) = a.protocol {
        protocol.kind = match p {
            ProtocolArg::Paper => ProtocolKind::Paper,
            ProtocolArg::Kfold => ProtocolKind::Kfold,
            ProtocolArg::LeavePGroupsOut => ProtocolKind::LeavePGroupsOut,
        };
    }
    if let Some(v) = a.groups {
        protocol.groups = v;
    }
    if let Some(v) = a.test_groups {
        protocol.test_groups = v;
    }
    if let Some(v) = a.repeats {
        protocol.repeats = v;
    }
    if let Some(v) = a.seed {
        protocol.seed = v;
    }
    if let Some(ts) = &a.tasks {
        protocol.tasks = ts
            .iter()
            .map(|t| {
                t.parse::<Task>()
                    .map_err(|e| anyhow::anyhow!("--tasks: {e}"))
            })
            .collect::<Result<_>>()?;
    }
    if let (Some(t), ProtocolKind::Kfold) = (a.test_groups, protocol.kind) {
        bail!(
            "--test-groups {t}: the kfold protocol tests one group per round; \
             --test-groups applies to paper and leave-p-groups-out"
        );
    }
    check_protocol(&protocol, &a)?;
    let manifest = Manifest::load(&manifest_path)?;
    let plan = match &a.verify {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let plan = SplitPlan::from_json(&text, &manifest)
                .and_then(|plan| plan.check_rebuilt(&manifest).map(|()| plan))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if a.spec.is_some() && plan.protocol != protocol {
                bail!(
                    "{}: a sound plan, but of another protocol than the spec's [protocol] ({:?} against {:?})",
                    path.display(),
                    plan.protocol,
                    protocol
                );
            }
            eprintln!("{}: ok (plan_sha256 {})", path.display(), plan.plan_sha256);
            plan
        }
        None => make_plan(&manifest, &protocol)?,
    };
    for w in plan.warnings(&manifest) {
        eprintln!("warning: {w}");
    }
    if let Some(out) = &a.out {
        let mut inputs = vec![("manifest", manifest_path.as_path())];
        if let Some(spec) = &a.spec {
            inputs.push(("spec", spec.as_path()));
        }
        super::not_an_input(out, &inputs)?;
        write_file(out, &plan.to_json_pretty())?;
    }
    match a.format {
        Format::Json => println!("{}", plan.to_json_pretty()),
        Format::Text => print!("{}", plan_text(&plan, &manifest)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The protocol's problems, as a spec's are found, named by the flag (or
/// spec key) that set each value.
fn check_protocol(p: &ProtocolSpec, a: &FoldsArgs) -> Result<()> {
    let problems = protocol_problems(p);
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| {
            if problem.field == "protocol" {
                // A rule of the whole protocol: it names its settings.
                return problem.to_string();
            }
            let key = problem.field.trim_start_matches("protocol.");
            let flag = format!("--{}", key.replace('_', "-"));
            let given = match key {
                "groups" => a.groups.is_some(),
                "test_groups" => a.test_groups.is_some(),
                "repeats" => a.repeats.is_some(),
                "tasks" => a.tasks.is_some(),
                _ => true,
            };
            let value = problem.value.as_deref().unwrap_or("");
            let named = match (given, &a.spec) {
                (true, _) => format!("{flag} {value}"),
                (false, Some(_)) => format!("{} = {value} (from the spec)", problem.field),
                (false, None) => format!("{flag} {value} (the default; give {flag})"),
            };
            format!("{named}: {}", problem.message)
        })
        .collect();
    bail!("{}", lines.join("\n"))
}

/// Groups and rounds as tables.
pub fn plan_text(plan: &SplitPlan, manifest: &Manifest) -> String {
    let label: HashMap<&str, Label> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.label))
        .collect();
    let count = |paths: &[String], l: Label| {
        paths
            .iter()
            .filter(|p| label.get(p.as_str()) == Some(&l))
            .count()
            .to_string()
    };
    // The protocol as a spec spells it (`paper`, `leave-p-groups-out`).
    let kind = serde_json::to_value(plan.protocol.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    // Groups are numbered from 1 here, as rounds are (plan.json keeps the
    // 0-based indices).
    let mut out = format!(
        "split plan {} ({kind} protocol, seed {})\n\n",
        plan.plan_sha256, plan.protocol.seed
    );
    let rows: Vec<Vec<String>> = plan
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            vec![
                (i + 1).to_string(),
                count(g, Label::Normal),
                count(g, Label::Benign),
                count(g, Label::Malignant),
                g.len().to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["group", "normal", "benign", "malignant", "images"],
        &rows,
    ));
    for (task, rounds) in &plan.tasks {
        let (neg, pos) = task.class_names();
        out.push_str(&format!(
            "\n{task}: {} rounds ({pos} vs {neg})\n",
            rounds.len()
        ));
        let rows: Vec<Vec<String>> = rounds
            .iter()
            .map(|r| {
                let test_pos = r
                    .test
                    .iter()
                    .filter(|p| label.get(p.as_str()).is_some_and(|l| task.is_positive(*l)))
                    .count();
                vec![
                    r.round.to_string(),
                    r.test_groups
                        .iter()
                        .map(|g| (g + 1).to_string())
                        .collect::<Vec<_>>()
                        .join("+"),
                    r.train.len().to_string(),
                    r.test.len().to_string(),
                    test_pos.to_string(),
                    (r.test.len() - test_pos).to_string(),
                ]
            })
            .collect();
        let pos_h = format!("test {pos}");
        let neg_h = format!("test {neg}");
        out.push_str(&table::render(
            &["round", "test groups", "train", "test", &pos_h, &neg_h],
            &rows,
        ));
    }
    out
}
