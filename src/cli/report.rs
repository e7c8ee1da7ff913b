//! Report files from an experiment's results document: report.json,
//! report.md (the tables, for papers), report.html (a self-contained page with
//! the tables and inline plots), the plots as SVG files (roc-, training- and
//! calibration-TASK.svg), rounds.csv, predictions.csv, the split plan and the
//! resolved spec. `crossfold report ID --out DIR`, and the
//! end of `crossfold run`.

use super::remote::{client, fetch_results, Target};
use super::write_file;
use anyhow::Result;
use clap::Args;
use crossfold_shared::metrics::{ROUND_KEYS, SUMMARY_KEYS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct ReportArgs {
    pub id: String,
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value = "out/report")]
    pub out: PathBuf,
}

pub async fn run(a: ReportArgs) -> Result<ExitCode> {
    check_out(&a.out)?;
    let mut c = client(&a.target).await?;
    let doc = fetch_results(&mut c, &a.id).await?;
    write_report(&a.out, &doc)?;
    println!(
        "wrote {}/{{report.json,report.md,report.html,*.svg,rounds.csv,predictions.csv,plan.json,spec.toml}}",
        a.out.display()
    );
    // A report of an unfinished experiment is written (an interim look is
    // useful), and said to be partial where a person running it sees it.
    // Exit status 2: written, but with rounds missing (see `partial_note`).
    if let Some(note) = super::summary::partial_note(&doc) {
        eprintln!("{note}: report.md lists them under \"Rounds without a result\"");
        return Ok(super::remote::incomplete());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// A percentage with one decimal ([`super::percent`]), or "–".
pub(super) fn pct(v: Option<f64>) -> String {
    v.map(super::percent).unwrap_or_else(|| "–".into())
}

pub(super) fn dec(v: Option<f64>, d: usize) -> String {
    v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into())
}

/// The pooled AUC of a task, e.g. "Pooled out-of-fold AUC: 0.521 (95% CI
/// 0.45–0.59) over 1040 predictions of 260 images (CI clustered by
/// patient)"; `None` when the task has none. `number` writes a value and
/// `to` joins the CI's ends. Results aggregated before the clustered CI
/// have no image count and say nothing of it.
pub(super) fn pooled_line(
    task: &Value,
    number: fn(Option<f64>, usize) -> String,
    to: &str,
) -> Option<String> {
    let p = task.get("pooled").filter(|p| !p.is_null())?;
    let of_images = match (p["images"].as_u64(), p["n"].as_u64()) {
        (Some(images), Some(n)) if images < n => {
            format!(" of {images} images (CI clustered by patient)")
        }
        (Some(_), _) => " (CI clustered by patient)".to_string(),
        _ => String::new(),
    };
    Some(format!(
        "Pooled out-of-fold AUC: {} (95% CI {}{to}{}) over {} predictions{of_images}",
        number(f(p, "auc"), 3),
        number(f(p, "auc_ci_low"), 3),
        number(f(p, "auc_ci_high"), 3),
        p["n"]
    ))
}

/// With repeats: each repeat's pooled AUC and their mean ± SD, in one sentence; `number` writes a value ("–" or
/// "-" when undefined) and `to` joins a CI's ends.
pub(super) fn per_repeat_line(
    task: &Value,
    planned_rounds: &[Value],
    number: fn(Option<f64>, usize) -> String,
    to: &str,
) -> Option<String> {
    let per = task.get("pooled_by_repeat")?.as_array()?;
    let planned = |repeat: Option<u64>| {
        repeat.map(|rep| {
            planned_rounds
                .iter()
                .filter(|r| r["repeat"].as_u64() == Some(rep))
                .count() as u64
        })
    };
    if per.is_empty() {
        return None;
    }
    let parts: Vec<String> = per
        .iter()
        .map(|p| {
            // A repeat whose rounds are not all in tests only some images.
            let partial = match (p["rounds"].as_u64(), planned(p["repeat"].as_u64())) {
                (Some(have), Some(want)) if have < want => {
                    format!(", {have} of {want} rounds")
                }
                _ => String::new(),
            };
            format!(
                "repeat {} {} (95% CI {}{to}{}{partial})",
                p["repeat"],
                number(f(p, "auc"), 3),
                number(f(p, "auc_ci_low"), 3),
                number(f(p, "auc_ci_high"), 3)
            )
        })
        .collect();
    let aucs: Vec<Option<f64>> = per.iter().map(|p| f(p, "auc")).collect();
    let spread = crossfold_shared::metrics::summarize_optional(&aucs)
        .map(|s| {
            format!(
                "; mean ± SD over repeats {} ± {}",
                number(Some(s.mean), 3),
                number(s.sd, 3)
            )
        })
        .unwrap_or_default();
    Some(format!(
        "Pooled out-of-fold AUC per repeat: {}{spread}.",
        parts.join(", ")
    ))
}

/// "mean ± SD" of a summary metric, with "(k of n rounds)" when some of the
/// task's `rounds` left it undefined; "–" when none defines it.
pub(super) fn mean_sd(summary: &Value, key: &str, percent: bool, rounds: usize) -> String {
    let m = &summary[key];
    let Some(mean) = f(m, "mean") else {
        return "–".into();
    };
    let sd = f(m, "sd");
    let text = if percent {
        format!("{} ± {}", pct(Some(mean)), pct(sd))
    } else {
        format!("{} ± {}", dec(Some(mean), 3), dec(sd, 3))
    };
    match m.get("n").and_then(Value::as_u64) {
        Some(n) if (n as usize) < rounds => format!("{text} ({n} of {rounds} rounds)"),
        _ => text,
    }
}

/// The summary row's cells, in the tables' column order: accuracy,
/// sensitivity, specificity, PPV, NPV (percent) and AUC.
pub(super) fn mean_sd_cells(summary: &Value, rounds: usize) -> [String; 6] {
    SUMMARY_KEYS.map(|k| mean_sd(summary, k, k != "auc", rounds))
}

/// One line per round without a result (failed, cancelled, unfinished),
/// with its last error: left out of every table, so named.
pub(super) fn missing_rounds(doc: &Value) -> Vec<String> {
    doc["missing_rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut line = format!(
                "{} round {}: {}",
                r["task"].as_str().unwrap_or("?"),
                r["round"],
                r["state"].as_str().unwrap_or("?")
            );
            let attempts = r["attempts"].as_u64().unwrap_or(0);
            match r["state"].as_str() {
                // Still going: its attempt number, not a count of finished ones.
                Some("leased") => line.push_str(&format!(" (attempt {attempts})")),
                _ if attempts > 0 => line.push_str(&format!(" after {attempts} attempt(s)")),
                _ => {}
            }
            if let Some(e) = r["error"].as_str() {
                line.push_str(&format!(": {e}"));
            }
            line
        })
        .collect()
}

pub(super) fn class_names(task: &str) -> (&'static str, &'static str) {
    match task {
        "screening" => ("normal", "tumour (benign or malignant)"),
        "malignancy" => ("benign", "malignant"),
        _ => ("negative", "positive"),
    }
}

/// The tables as Markdown, laid out like the paper's Tables 2 and 3 but with
/// every metric under its true name.
/// A task's breakdown tables (by site, by subtype): title and rows of cells,
/// header first. Shared by report.md and report.html.
pub(super) fn breakdowns(t: &Value) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    for (field, title) in [("site", "Site"), ("subtype", "Subtype")] {
        let Some(rows) = t["breakdowns"][field].as_array() else {
            continue;
        };
        let mut table = vec![[
            title,
            "n",
            "TP",
            "FN",
            "TN",
            "FP",
            "Sensitivity %",
            "Specificity %",
            "AUC (95% CI)",
        ]
        .map(String::from)
        .to_vec()];
        for r in rows {
            let value = r["value"].as_str().unwrap_or("");
            let auc = match f(r, "auc") {
                Some(_) => format!(
                    "{} ({}–{})",
                    dec(f(r, "auc"), 3),
                    dec(f(r, "auc_ci_low"), 3),
                    dec(f(r, "auc_ci_high"), 3)
                ),
                None => "–".into(),
            };
            table.push(vec![
                if value.is_empty() {
                    "(not given)".into()
                } else {
                    value.to_string()
                },
                r["n"].to_string(),
                r["tp"].to_string(),
                r["fn"].to_string(),
                r["tn"].to_string(),
                r["fp"].to_string(),
                pct(f(r, "sensitivity")),
                pct(f(r, "specificity")),
                auc,
            ]);
        }
        out.push((format!("By {field}"), table));
    }
    out
}

/// What [`youden_table`]'s thresholds are, under its heading.
pub(super) const YOUDEN_NOTE: &str = "Each round's threshold is the one that maximises Youden's J \
    (sensitivity + specificity − 1) on that round's validation images, which come from its \
    training groups; its test images are scored once, after the choice.";

/// `table` (header first) as a Markdown table: the first column left,
/// the others right-aligned.
fn md_table(out: &mut String, table: &[Vec<String>]) {
    for (i, row) in table.iter().enumerate() {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            out.push_str(&format!("|---|{}\n", "---:|".repeat(row.len() - 1)));
        }
    }
}

/// A task's rounds at their validation-chosen (Youden) thresholds: header,
/// one row per round ("–" for a round without one) and the mean ± SD row.
/// `None` when no round has one. Shared by report.md and report.html.
pub(super) fn youden_table(t: &Value) -> Option<Vec<Vec<String>>> {
    let rounds = t["rounds"].as_array()?;
    if !rounds.iter().any(|r| r.get("at_youden").is_some()) {
        return None;
    }
    let rates = ["accuracy", "sensitivity", "specificity", "ppv", "npv"];
    let mut table = vec![[
        "Round",
        "Threshold",
        "TP",
        "FP",
        "TN",
        "FN",
        "Accuracy %",
        "Sensitivity %",
        "Specificity %",
        "PPV %",
        "NPV %",
    ]
    .map(String::from)
    .to_vec()];
    for r in rounds {
        let at = &r["at_youden"];
        let count = |k: &str| at[k].as_u64().map_or("–".into(), |n| n.to_string());
        let mut row = vec![r["round"].to_string(), dec(f(at, "threshold"), 3)];
        row.extend(["tp", "fp", "tn", "fn"].map(count));
        row.extend(rates.map(|k| pct(f(at, k))));
        table.push(row);
    }
    let mut last = vec!["Mean ± SD".to_string()];
    last.extend(std::iter::repeat_n(String::new(), 5));
    // From the rows, not `summary_at_youden`: summaries stored before that
    // field have the rows only.
    let summary: serde_json::Map<String, Value> = rates
        .iter()
        .filter_map(|k| {
            let values: Vec<Option<f64>> = rounds.iter().map(|r| f(&r["at_youden"], k)).collect();
            let s = crossfold_shared::metrics::summarize_optional(&values)?;
            Some((
                k.to_string(),
                serde_json::json!({"mean": s.mean, "sd": s.sd, "n": s.n}),
            ))
        })
        .collect();
    let summary = Value::Object(summary);
    last.extend(rates.map(|k| mean_sd(&summary, k, true, rounds.len())));
    table.push(last);
    Some(table)
}

/// The document's tasks in the paper's order: screening (its Table 2),
/// malignancy (Table 3), then any other by name.
pub(super) fn tasks_in_order(doc: &Value) -> Vec<(&String, &Value)> {
    let mut tasks: Vec<(&String, &Value)> = doc
        .get("tasks")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .collect();
    tasks.sort_by_key(|(name, _)| task_rank(name));
    tasks
}

/// Where a task goes among others: screening first, then malignancy, then
/// any other by name.
fn task_rank(name: &str) -> (usize, String) {
    let order = ["screening", "malignancy"].iter().position(|t| *t == name);
    (order.unwrap_or(2), name.to_string())
}

/// A planned round's test groups, numbered from 1.
fn test_groups(round: &Value) -> Vec<u64> {
    round["test_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|g| g + 1)
        .collect()
}

/// One line per warning a worker reported for a round (e.g. a validation
/// set without one of the classes: no early stopping, no Youden threshold).
pub(super) fn round_warnings(doc: &Value) -> Vec<String> {
    tasks_in_order(doc)
        .into_iter()
        .flat_map(|(task, t)| {
            t["rounds"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(move |r| {
                    r["warnings"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|w| w.as_str().map(str::to_string))
                        .map(move |w| format!("{task} round {}: {w}", r["round"]))
                })
        })
        .collect()
}

/// What a reader must see before the tables, as (heading, lines), only the
/// non-empty ones: the rounds without a result, and the workers' warnings.
pub(super) fn notices(doc: &Value) -> Vec<(&'static str, Vec<String>)> {
    [
        (
            "Rounds without a result (left out of every table and summary below)",
            missing_rounds(doc),
        ),
        ("Warnings from the workers", round_warnings(doc)),
        ("Several images per patient", several_views(doc)),
    ]
    .into_iter()
    .filter(|(_, lines)| !lines.is_empty())
    .collect()
}

/// A line when some patient has more than one image in a round's test set:
/// every statistic here counts images, which are then not independent.
pub(super) fn several_views(doc: &Value) -> Vec<String> {
    let mut most = 0usize;
    let mut patients = std::collections::HashSet::new();
    for r in doc["predictions"].as_array().into_iter().flatten() {
        let mut per: std::collections::HashMap<&str, usize> = Default::default();
        for p in r["predictions"].as_array().into_iter().flatten() {
            let patient = p["patient"].as_str().unwrap_or_default();
            if !patient.is_empty() {
                *per.entry(patient).or_default() += 1;
            }
        }
        for (patient, n) in per {
            if n > 1 {
                most = most.max(n);
                patients.insert(patient.to_string());
            }
        }
    }
    if patients.is_empty() {
        return Vec::new();
    }
    let breakdowns = breakdown_rows(doc).next().is_some();
    let which = match (clustered_pooled_ci(doc), breakdowns, clustered_breakdowns(doc)) {
        (true, false, _) => "the per-round confidence intervals are narrower than they should be (the pooled ones are clustered by patient)",
        (true, true, true) => "the per-round confidence intervals are narrower than they should be (the pooled and by-site/subtype ones are clustered by patient)",
        (true, true, false) => "the per-round and by-site/subtype confidence intervals are narrower than they should be (the pooled ones are clustered by patient)",
        _ => "the confidence intervals are narrower than they should be",
    };
    vec![format!(
        "{} patient(s) have several images (up to {most}) in a round's test set; every statistic counts images, as the paper did, but a patient's images are not independent, so {which}",
        patients.len()
    )]
}

pub fn markdown(doc: &Value) -> String {
    let mut out = format!(
        "# crossfold report: {}\n\nExperiment `{}` ({}). Split plan `{}`; data set `{}`.\n",
        doc["name"].as_str().unwrap_or("experiment"),
        doc["experiment_id"].as_str().unwrap_or("-"),
        doc["state"].as_str().unwrap_or("-"),
        doc["plan_sha256"].as_str().unwrap_or("-"),
        doc["dataset_sha256"].as_str().unwrap_or("-"),
    );
    let protocol = protocol_lines(doc);
    if !protocol.is_empty() {
        out.push_str("\nSplit protocol:\n\n");
        for line in &protocol {
            out.push_str(&format!("- {line}\n"));
        }
    }
    for (heading, lines) in notices(doc) {
        out.push_str(&format!("\n{heading}:\n\n"));
        for line in &lines {
            out.push_str(&format!("- {line}\n"));
        }
    }
    let mut threshold = None;
    for (task, t) in tasks_in_order(doc) {
        let rounds = t["rounds"].as_array().cloned().unwrap_or_default();
        let (neg, pos) = class_names(task);
        out.push_str(&format!(
            "\n## {task}: {pos} vs {neg}, {} round(s)\n\n",
            rounds.len()
        ));
        out.push_str("| Round | n | TP | FP | TN | FN | Accuracy % | Sensitivity % | Specificity % | PPV % | NPV % | AUC (95% CI) |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in &rounds {
            threshold = threshold.or(f(r, "threshold"));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}–{}) |\n",
                r["round"],
                r["n"],
                r["tp"],
                r["fp"],
                r["tn"],
                r["fn"],
                pct(f(r, "accuracy")),
                pct(f(r, "sensitivity")),
                pct(f(r, "specificity")),
                pct(f(r, "ppv")),
                pct(f(r, "npv")),
                dec(f(r, "auc"), 3),
                dec(f(r, "auc_ci_low"), 3),
                dec(f(r, "auc_ci_high"), 3),
            ));
        }
        out.push_str(&format!(
            "| Mean ± SD | | | | | | {} |\n",
            mean_sd_cells(&t["summary"], rounds.len()).join(" | ")
        ));
        if let Some(line) = pooled_line(t, dec, "–") {
            out.push_str(&format!("\n{line}.\n"));
        }
        if let Some(line) = per_repeat_line(t, &planned_rounds(doc, task), dec, "–") {
            out.push_str(&format!("\n{line}\n"));
        }
        if let Some(line) = super::summary::time_line(t, "–") {
            out.push_str(&format!("\nT{}.\n", &line[1..]));
        }
        if let Some(table) = youden_table(t) {
            out.push_str(&format!(
                "\n### At the validation-chosen threshold\n\n{YOUDEN_NOTE}\n\n"
            ));
            md_table(&mut out, &table);
        }
        for (title, table) in breakdowns(t) {
            out.push_str(&format!(
                "\n### {title} (pooled out-of-fold predictions)\n\n"
            ));
            md_table(&mut out, &table);
        }
    }
    out.push_str(&format!(
        "\n## Definitions\n\n\
         - A case is predicted positive when its score (the model's probability of the positive class) is at least {}.\n\
         - Sensitivity = TP / (TP + FN); specificity = TN / (TN + FP); PPV = TP / (TP + FP); NPV = TN / (TN + FN); accuracy = (TP + TN) / n.\n\
         - AUC is the area under the empirical ROC curve (Mann-Whitney, ties count one half); its 95% CI is DeLong's. Where every positive outscores every negative (AUC 1), DeLong's interval has no width: 1.000 (1.000–1.000) is a point, not a measure of uncertainty.\n\
         - Mean ± SD across rounds; SD is the sample standard deviation (n − 1).\n\
         - The pooled AUC puts every round's test predictions together{}.{} It mixes the scores of the rounds' separately trained models, whose calibration differs, so it is often below the mean of the rounds' AUCs.\n\
         - – marks a value that is undefined for the counts (e.g. PPV with no predicted positives).\n\
         - Breakdowns by site and subtype pool every round's test predictions of a task and split them by the manifest's columns; a subtype only occurs among positives or negatives, so its sensitivity (or specificity) is the detection rate of that subtype{}.\n\
         - The 2021 paper's columns labelled PPV and NPV are in fact sensitivity and specificity; here every metric is under its own name.\n",
        threshold.map(|t| t.to_string()).unwrap_or_else(|| "the threshold".into()),
        repeated_tests(doc),
        pooled_ci_definition(doc),
        if clustered_breakdowns(doc) {
            "; their AUCs' CIs are clustered by patient, as the pooled AUC's is"
        } else {
            ""
        }
    ));
    out
}

/// The split protocol in words, from the plan the report holds: how each
/// task's rounds were made, the repeats with their split seeds, and which
/// groups each round tested where that is not simply group i in round i.
pub fn protocol_lines(doc: &Value) -> Vec<String> {
    let plan = &doc["plan"];
    let p = &plan["protocol"];
    let (Some(kind), Some(k)) = (p["kind"].as_str(), p["groups"].as_u64()) else {
        return Vec::new();
    };
    let repeats = p["repeats"].as_u64().unwrap_or(1);
    let seed = p["seed"].as_u64().unwrap_or(0);
    let seeds = if repeats > 1 {
        format!(
            "{repeats} repeats, each with its own groups (split seeds {seed} to {})",
            seed.wrapping_add(repeats - 1)
        )
    } else {
        format!("1 repeat (split seed {seed})")
    };
    let mut out = vec![format!(
        "Protocol {kind}: {k} groups of patients (all images of a patient in one group), stratified on the label; {seeds}."
    )];
    let mut tasks: Vec<(&String, &Value)> =
        plan["tasks"].as_object().into_iter().flatten().collect();
    // Screening first, as the tables are.
    tasks.sort_by_key(|(name, _)| task_rank(name));
    for (task, rounds) in tasks {
        let rounds = rounds.as_array().cloned().unwrap_or_default();
        let width = rounds.first().map_or(1, |r| test_groups(r).len());
        let how = if width == 1 {
            format!("{k}-fold: round i of a repeat tests group i")
        } else {
            format!("leave-{width}-of-{k}-groups-out: every choice of {width} groups is a test set once per repeat")
        };
        let mut line = format!("{task}: {} round(s), {how}", rounds.len());
        if repeats > 1 {
            let spans: Vec<String> = (1..=repeats)
                .filter_map(|rep| {
                    let nums: Vec<u64> = rounds
                        .iter()
                        .filter(|r| r["repeat"].as_u64() == Some(rep))
                        .filter_map(|r| r["round"].as_u64())
                        .collect();
                    Some(format!(
                        "rounds {}-{} are repeat {rep}",
                        nums.first()?,
                        nums.last()?
                    ))
                })
                .collect();
            line.push_str(&format!("; {}", spans.join(", ")));
        }
        if width > 1 {
            let tested: Vec<String> = rounds
                .iter()
                .filter(|r| r["repeat"].as_u64() == Some(1))
                .map(|r| {
                    let g: Vec<String> = test_groups(r).iter().map(u64::to_string).collect();
                    format!("{} tests {}", r["round"], g.join("+"))
                })
                .collect();
            line.push_str(&format!("; round {}", tested.join(", ")));
        }
        out.push(format!("{line}."));
    }
    if repeats > 1 {
        let per_repeat = doc["tasks"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, t)| t.get("pooled_by_repeat").is_some());
        out.push(format!(
            "Mean ± SD and the pooled AUC take every round of every repeat together: the SD mixes the variation within and between repeats, and the pooled AUC counts each image once per round that tests it{}.",
            if per_repeat { " (each repeat's own pooled AUC is given too)" } else { "" }
        ));
    }
    out
}

/// The plan's rounds of `task` (empty without a plan).
pub(super) fn planned_rounds(doc: &Value, task: &str) -> Vec<Value> {
    doc["plan"]["tasks"][task]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Per task and round: the repeat and the test groups (1-based, as
/// `g1+g3`: never read as a number), for the CSV files.
fn round_layout(doc: &Value) -> std::collections::HashMap<(String, u64), (u64, String)> {
    let mut out = std::collections::HashMap::new();
    for (task, rounds) in doc["plan"]["tasks"].as_object().into_iter().flatten() {
        for r in rounds.as_array().into_iter().flatten() {
            let Some(round) = r["round"].as_u64() else {
                continue;
            };
            let groups: Vec<String> = test_groups(r).iter().map(|g| format!("g{g}")).collect();
            out.insert(
                (task.clone(), round),
                (r["repeat"].as_u64().unwrap_or(1), groups.join("+")),
            );
        }
    }
    out
}

/// For the definition of the pooled AUC: the tasks whose plan tests an
/// image in more than one round and how its CI deals with that, e.g. "; an
/// image tested in several rounds (malignancy: each in 4 of 10) counts once
/// per round, and its CI counts it as one case"; empty when every image is
/// tested once. Results aggregated by a coordinator older than the
/// clustered CI get the old caveat: their CI is optimistic.
fn repeated_tests(doc: &Value) -> String {
    let mut parts = Vec::new();
    for (task, rounds) in doc["plan"]["tasks"].as_object().into_iter().flatten() {
        let rounds = rounds.as_array().cloned().unwrap_or_default();
        let mut times: std::collections::HashMap<&str, usize> = Default::default();
        for r in &rounds {
            for p in r["test"].as_array().into_iter().flatten() {
                *times.entry(p.as_str().unwrap_or_default()).or_default() += 1;
            }
        }
        let (lo, hi) = (times.values().min(), times.values().max());
        if let (Some(&lo), Some(&hi)) = (lo, hi) {
            if hi > 1 {
                let each = if lo == hi {
                    format!("each in {hi}")
                } else {
                    format!("{lo} to {hi}")
                };
                parts.push(format!("{task}: {each} of {}", rounds.len()));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        let how = if clustered_pooled_ci(doc) {
            "and its CI counts it as one case"
        } else {
            "so its CI, which takes the predictions as independent, is optimistic"
        };
        format!(
            "; an image tested in several rounds ({}) counts once per round, {how}",
            parts.join("; ")
        )
    }
}

/// Whether the pooled AUCs' CIs are clustered by patient (results
/// aggregated by a coordinator older than that have plain DeLong CIs).
fn clustered_pooled_ci(doc: &Value) -> bool {
    doc["tasks"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(_, t)| {
            t["pooled"]["auc_ci_method"] == crossfold_coordinator::aggregate::POOLED_CI_METHOD
        })
}

/// The breakdowns' rows (by site, by subtype) of every task.
fn breakdown_rows(doc: &Value) -> impl Iterator<Item = &Value> {
    let tasks = doc["tasks"].as_object().into_iter().flatten();
    tasks
        .flat_map(|(_, t)| t["breakdowns"].as_object().into_iter().flatten())
        .flat_map(|(_, rows)| rows.as_array().into_iter().flatten())
}

/// Whether the breakdowns' CIs are clustered by patient: none of their
/// rows has another method (results aggregated before that have plain
/// DeLong CIs there).
fn clustered_breakdowns(doc: &Value) -> bool {
    let method = crossfold_coordinator::aggregate::POOLED_CI_METHOD;
    breakdown_rows(doc).all(|r| r["auc_ci_method"] == method)
}

/// How the pooled AUC's CI is computed, for the Definitions.
fn pooled_ci_definition(doc: &Value) -> &'static str {
    if clustered_pooled_ci(doc) {
        " Its 95% CI is DeLong's clustered by patient (Obuchowski 1997): the predictions of one patient (an image tested in several rounds, several images of one patient) are one cluster, not independent cases. Like every DeLong interval it takes the trained models as given: the variation between the rounds' models shows in the per-round SD, not in this CI."
    } else {
        ""
    }
}

/// The names of the files a report writes (its plots: every one it may).
fn report_files() -> Vec<String> {
    let mut names: Vec<String> = [
        "report.json",
        "report.md",
        "report.html",
        "predictions.csv",
        "rounds.csv",
        "plan.json",
        "spec.toml",
    ]
    .map(String::from)
    .to_vec();
    names.extend(plot_names());
    names
}

/// Every plot a report may write: `{roc,training,calibration}-TASK.svg`.
fn plot_names() -> Vec<String> {
    crossfold_shared::label::Task::ALL
        .iter()
        .flat_map(|t| ["roc", "training", "calibration"].map(|k| format!("{k}-{t}.svg")))
        .collect()
}

/// `crossfold report --out DIR`: refuses a folder that holds files of a
/// report's names (a spec.toml, a predictions.csv) but no earlier crossfold
/// report, whose files writing this one would replace.
pub(super) fn check_out(dir: &Path) -> Result<()> {
    if dir.is_file() {
        anyhow::bail!("--out {}: is a file; give a folder", dir.display());
    }
    let earlier = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|d| d.get("experiment_id").is_some() && d.get("tasks").is_some());
    if earlier {
        return Ok(());
    }
    let clashes: Vec<String> = report_files()
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    // What `crossfold plan --out` wrote (its plan.json and spec.toml, with
    // its jobs.json): the run of that plan writes over them.
    let planned = std::fs::read_to_string(dir.join("jobs.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|j| {
            j.as_array()
                .is_some_and(|a| a.iter().all(|x| x.get("key").is_some()))
        })
        && clashes.iter().all(|f| f == "plan.json" || f == "spec.toml");
    if !clashes.is_empty() && !planned {
        anyhow::bail!(
            "--out {}: holds {}, not from a crossfold report (no crossfold report.json there); \
             writing the report would replace them: give another --out",
            dir.display(),
            clashes.join(", ")
        );
    }
    Ok(())
}

/// A report written into a folder that holds an earlier one: the plots of
/// that one this report does not have (another task, a curve it lacks) are
/// removed, so the folder holds one report. Only the names crossfold gives
/// its plots are touched.
fn remove_stale_plots<'a>(dir: &Path, keep: impl Iterator<Item = &'a str>) -> Result<()> {
    let keep: std::collections::HashSet<&str> = keep.collect();
    for name in plot_names() {
        let path = dir.join(&name);
        if path.is_file() && !keep.contains(name.as_str()) {
            std::fs::remove_file(&path).map_err(|e| {
                anyhow::anyhow!("cannot remove the earlier report's {}: {e}", path.display())
            })?;
        }
    }
    Ok(())
}

pub fn write_report(dir: &Path, doc: &Value) -> Result<()> {
    write_file(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(doc)?,
    )?;
    write_file(&dir.join("report.md"), &markdown(doc))?;
    write_file(&dir.join("report.html"), &super::html::html(doc))?;
    let plots = super::html::svgs(doc);
    remove_stale_plots(dir, plots.iter().map(|(n, _)| n.as_str()))?;
    for (name, svg) in &plots {
        write_file(&dir.join(name), svg)?;
    }
    let layout = round_layout(doc);
    // A round's repeat and test groups as CSV cells (empty without a plan).
    let placed = |task: &str, round: &Value| -> (String, String) {
        round
            .as_u64()
            .and_then(|n| layout.get(&(task.to_string(), n)))
            .map(|(repeat, groups)| (repeat.to_string(), groups.clone()))
            .unwrap_or_default()
    };
    let mut csv =
        String::from("image,patient,label,task,round,score,predicted,repeat,predicted_youden\n");
    let round_of = |task: &str, round: &Value| -> Option<&Value> {
        doc["tasks"][task]["rounds"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| &r["round"] == round))
    };
    let threshold_of = |task: &str, round: &Value| -> f64 {
        round_of(task, round)
            .and_then(|r| f(r, "threshold"))
            .unwrap_or(0.5)
    };
    // The validation-chosen threshold, as the statistics at it used it.
    let youden_of = |task: &str, round: &Value| -> Option<f64> {
        round_of(task, round).and_then(|r| f(&r["at_youden"], "threshold"))
    };
    for r in doc
        .get("predictions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let task = r["task"].as_str().unwrap_or("");
        let threshold = threshold_of(task, &r["round"]);
        let youden = youden_of(task, &r["round"]);
        for p in r["predictions"].as_array().into_iter().flatten() {
            let score = p["score"].as_f64().unwrap_or(f64::NAN);
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                csv_field(p["image"].as_str().unwrap_or("")),
                csv_field(p["patient"].as_str().unwrap_or("")),
                p["label"].as_str().unwrap_or(""),
                task,
                r["round"],
                score,
                (score >= threshold) as u8,
                placed(task, &r["round"]).0,
                youden.map_or(String::new(), |th| ((score >= th) as u8).to_string())
            ));
        }
    }
    write_file(&dir.join("predictions.csv"), &csv)?;
    // Appended after the metrics: the round's place in the plan, then its
    // time as the worker measured it (empty from workers that did not).
    // The statistics at the validation-chosen threshold (empty for a round
    // without one) come between the metrics and the round's place.
    // The threshold, the counts and the rates (not the AUC, which does
    // not depend on a threshold).
    let at_youden = &ROUND_KEYS[2..12];
    debug_assert_eq!((at_youden[0], at_youden[9]), ("threshold", "npv"));
    let mut rounds = format!(
        "task,round,{},{},repeat,test_groups,seconds,training_seconds,images_per_second\n",
        ROUND_KEYS.join(","),
        at_youden
            .iter()
            .map(|k| format!("youden_{k}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (task, t) in doc
        .get("tasks")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for r in t["rounds"].as_array().into_iter().flatten() {
            let vals: Vec<String> = ROUND_KEYS
                .iter()
                .map(|k| match &r[*k] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            let (repeat, groups) = placed(task, &r["round"]);
            let timing = &r["timing"];
            let time = ["total", "training", "images_per_second"]
                .map(|k| {
                    timing[k]
                        .as_f64()
                        .map(|v| format!("{v:.3}"))
                        .unwrap_or_default()
                })
                .join(",");
            let youden = at_youden
                .iter()
                .map(|&k| match &r["at_youden"][k] {
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join(",");
            rounds.push_str(&format!(
                "{task},{},{},{youden},{repeat},{groups},{time}\n",
                r["round"],
                vals.join(",")
            ));
        }
    }
    write_file(&dir.join("rounds.csv"), &rounds)?;
    // A report without a plan or spec leaves none of an earlier report's
    // beside it (the folder holds one report; see `check_out`).
    match doc.get("plan").filter(|p| !p.is_null()) {
        Some(plan) => write_file(&dir.join("plan.json"), &serde_json::to_string_pretty(plan)?)?,
        None => remove_if_there(&dir.join("plan.json"))?,
    }
    match doc.get("spec_toml").and_then(Value::as_str) {
        Some(spec) => write_file(&dir.join("spec.toml"), spec)?,
        None => remove_if_there(&dir.join("spec.toml"))?,
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(e).context(format!("removing {}", path.display())))
        }
        _ => Ok(()),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn percentages_round_halves_up_the_same_in_the_terminal_and_the_reports() {
        // 9/16, 13/16, 5/32: exact binary fractions whose tie `format!`
        // would round to even.
        for (x, want) in [
            (0.5625, "56.3"),
            (0.8125, "81.3"),
            (0.15625, "15.6"),
            (0.25, "25.0"),
        ] {
            assert_eq!(pct(Some(x)), want, "{x}");
            assert_eq!(super::super::pct(Some(x)), want, "{x}");
        }
        assert_eq!(pct(None), "–");
        assert_eq!(super::super::pct(None), "-");
    }

    #[test]
    fn worker_warnings_are_listed_by_task_and_round() {
        let doc = json!({"tasks": {
            "malignancy": {"rounds": [
                {"round": 1},
                {"round": 2, "warnings": ["the validation set lacks a class"]},
            ]},
            "screening": {"rounds": [{"round": 3, "warnings": ["a", "b"]}]},
        }});
        assert_eq!(
            round_warnings(&doc),
            [
                "screening round 3: a",
                "screening round 3: b",
                "malignancy round 2: the validation set lacks a class"
            ]
        );
        let md = markdown(&doc);
        assert!(
            md.contains("Warnings from the workers:\n\n- screening round 3: a\n"),
            "{md}"
        );
        assert!(round_warnings(&json!({})).is_empty());
    }

    #[test]
    fn summaries_over_fewer_rounds_say_so_and_missing_rounds_are_named() {
        let s = json!({
            "ppv": {"mean": 1.0, "sd": 0.0, "n": 2},
            "auc": {"mean": 0.8126, "sd": 0.05, "n": 3},
            "npv": {"mean": null, "sd": null, "n": 0},
        });
        assert_eq!(mean_sd(&s, "ppv", true, 3), "100.0 ± 0.0 (2 of 3 rounds)");
        assert_eq!(mean_sd(&s, "auc", false, 3), "0.813 ± 0.050");
        assert_eq!(mean_sd(&s, "npv", true, 3), "–");
        let doc = json!({"missing_rounds": [
            {"task": "malignancy", "round": 1, "state": "failed", "attempts": 3, "error": "no benign image"},
            {"task": "screening", "round": 4, "state": "cancelled", "attempts": 0, "error": null},
            {"task": "screening", "round": 5, "state": "leased", "attempts": 1, "error": null},
        ]});
        assert_eq!(
            missing_rounds(&doc),
            [
                "malignancy round 1: failed after 3 attempt(s): no benign image",
                "screening round 4: cancelled",
                "screening round 5: leased (attempt 1)"
            ]
        );
        assert!(missing_rounds(&json!({})).is_empty());
        // The pooled AUC's caveat follows the plan.
        let plan = |tests: &[&[&str]]| {
            let rounds: Vec<Value> = tests.iter().map(|t| json!({"test": t})).collect();
            json!({"plan": {"tasks": {"malignancy": rounds}}})
        };
        assert_eq!(repeated_tests(&plan(&[&["a"], &["b"]])), "");
        assert_eq!(
            repeated_tests(&plan(&[&["a", "b"], &["a", "c"], &["b", "c"]])),
            "; an image tested in several rounds (malignancy: each in 2 of 3) counts once per round, \
             so its CI, which takes the predictions as independent, is optimistic"
        );
        let mut clustered = plan(&[&["a", "b"], &["a", "c"], &["b", "c"]]);
        clustered["tasks"]["malignancy"]["pooled"]["auc_ci_method"] =
            crossfold_coordinator::aggregate::POOLED_CI_METHOD.into();
        assert_eq!(
            repeated_tests(&clustered),
            "; an image tested in several rounds (malignancy: each in 2 of 3) counts once per round, \
             and its CI counts it as one case"
        );
        assert!(pooled_ci_definition(&clustered).contains("clustered by patient"));
        assert_eq!(pooled_ci_definition(&plan(&[&["a"]])), "");
        let md = markdown(&doc);
        assert!(
            md.contains("Rounds without a result") && md.contains("- screening round 4: cancelled"),
            "{md}"
        );
    }

    use crossfold_coordinator::aggregate::{
        round_stats, summarize, JobResult, JobTiming, ScoredImage,
    };
    use crossfold_shared::label::Task;
    use serde_json::json;

    /// A fixed experiment: two screening and two malignancy rounds.
    pub(in crate::cli) fn fixed_doc() -> Value {
        let mk = |task: Task, round: u32, rows: &[(&str, f64)]| {
            let predictions: Vec<ScoredImage> = rows
                .iter()
                .enumerate()
                .map(|(i, (label, score))| ScoredImage {
                    image: format!("images/{label}/P{round}{i:02}_ap.png"),
                    patient: format!("P{round}{i:02}"),
                    label: label.to_string(),
                    score: *score,
                    site: ["distal femur", "proximal tibia"][i % 2].to_string(),
                    subtype: match *label {
                        "normal" => String::new(),
                        "benign" => "giant cell tumour".to_string(),
                        _ => ["osteosarcoma", "Ewing sarcoma"][i % 2].to_string(),
                    },
                })
                .collect();
            JobResult {
                task: task.to_string(),
                round,
                attempt: 1,
                worker_id: "w".into(),
                stats: round_stats(task, &predictions, 0.5).unwrap(),
                predictions,
                history: Value::Null,
                provenance: json!({"crossfold_version": "0.1.0", "libtorch_version": "2.11.0",
                    "device": "cpu", "device_name": "test CPU", "seed": 2021 + round,
                    "compute": {"autocast_bf16": false, "tf32": false, "channels_last": false}}),
                youden_threshold: None,
                warnings: Vec::new(),
                // As a worker reports it; none from round 2 on, as from
                // workers older than timing.
                timing: (round == 1).then_some(JobTiming {
                    preparation: 0.25,
                    startup: 0.5,
                    data_loading: 0.125,
                    training: 40.0,
                    validation: Some(1.25),
                    evaluation: 0.75,
                    total: 42.5,
                    images_per_second: 176.25,
                }),
            }
        };
        let mut results = vec![
            mk(
                Task::Screening,
                1,
                &[
                    ("normal", 0.1),
                    ("normal", 0.6),
                    ("benign", 0.7),
                    ("malignant", 0.9),
                    ("malignant", 0.4),
                ],
            ),
            mk(
                Task::Screening,
                2,
                &[
                    ("normal", 0.2),
                    ("normal", 0.3),
                    ("benign", 0.8),
                    ("malignant", 0.55),
                    ("benign", 0.5),
                ],
            ),
            mk(
                Task::Malignancy,
                1,
                &[
                    ("benign", 0.3),
                    ("benign", 0.7),
                    ("malignant", 0.6),
                    ("malignant", 0.65),
                ],
            ),
            mk(
                Task::Malignancy,
                2,
                &[
                    ("benign", 0.2),
                    ("benign", 0.1),
                    ("malignant", 0.3),
                    ("malignant", 0.35),
                ],
            ),
        ];
        let (plan, data) = (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        );
        // Malignancy round 1 chose 0.62 on its validation images: TP 0.65,
        // FN 0.6, FP 0.7, TN 0.3. Round 2 had no validation set.
        results[2].youden_threshold = Some(0.62);
        let mut doc = summarize(&results, plan, data, &Default::default());
        let o = doc.as_object_mut().unwrap();
        o.insert("report_version".into(), 1.into());
        o.insert("complete".into(), true.into());
        o.insert("spec_toml".into(), "version = 1\nname = \"fixed\"\n".into());
        let rounds = json!([
            {"round": 1, "repeat": 1, "test_groups": [0]},
            {"round": 2, "repeat": 1, "test_groups": [1]}
        ]);
        o.insert(
            "plan".into(),
            json!({
                "plan_sha256": plan,
                "protocol": {"kind": "kfold", "groups": 2, "test_groups": 1, "repeats": 1, "seed": 3,
                             "tasks": ["screening", "malignancy"]},
                "tasks": {"screening": rounds, "malignancy": rounds}
            }),
        );
        o.insert("name".into(), "fixed".into());
        o.insert(
            "experiment_id".into(),
            "00000000-0000-0000-0000-000000000001".into(),
        );
        o.insert("state".into(), "succeeded".into());
        o.insert(
            "predictions".into(),
            serde_json::to_value(&results).unwrap(),
        );
        doc
    }

    /// report.json against docs/report.schema.json; mutated documents fail.
    pub(crate) fn schema_errors(doc: &Value) -> Vec<String> {
        let schema: Value =
            serde_json::from_str(include_str!("../../docs/report.schema.json")).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        v.iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn report_json_matches_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        write_report(dir.path(), &fixed_doc()).unwrap();
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(schema_errors(&doc), Vec::<String>::new());
        // The breakdowns and per-round provenance are there.
        let t = &doc["tasks"]["screening"];
        assert!(
            t["breakdowns"]["site"]
                .as_array()
                .is_some_and(|a| a.len() == 2),
            "{t}"
        );
        assert!(t["rounds"][0]["provenance"]["seed"].is_number(), "{t}");
        // Documents that break the contract are caught.
        let mut bad = doc.clone();
        bad["tasks"]["screening"]["rounds"][0]["accuracy"] = 87.5.into();
        assert!(schema_errors(&bad).iter().any(|e| e.contains("accuracy")));
        let mut bad = doc.clone();
        bad.as_object_mut().unwrap().remove("tasks");
        assert!(!schema_errors(&bad).is_empty());
        let mut bad = doc.clone();
        bad["predictions"][0]["predictions"][0]["label"] = "tumour".into();
        assert!(schema_errors(&bad).iter().any(|e| e.contains("label")));
        // A round's timing, as stored and in the round's row.
        assert_eq!(t["rounds"][0]["timing"]["total"], 42.5, "{t}");
        let mut bad = doc.clone();
        bad["tasks"]["screening"]["rounds"][0]["timing"]["training"] = (-1.0).into();
        assert!(schema_errors(&bad).iter().any(|e| e.contains("timing")));
        // Each repeat's pooled AUC, with repeats.
        let mut repeated = doc;
        let one = json!({"repeat": 1, "n": 4, "auc": 0.75, "auc_ci_low": 0.2, "auc_ci_high": 1.0, "auc_ci_method": "delong"});
        repeated["tasks"]["screening"]["pooled_by_repeat"] = json!([one.clone(), one]);
        assert_eq!(schema_errors(&repeated), Vec::<String>::new());
        repeated["tasks"]["screening"]["pooled_by_repeat"][1]["auc"] = 1.5.into();
        assert!(schema_errors(&repeated)
            .iter()
            .any(|e| e.contains("pooled_by_repeat")));
    }

    /// Golden file: tests/golden/report.md. To accept a deliberate change,
    /// run with CROSSFOLD_BLESS=1 and review the diff.
    #[test]
    fn report_md_matches_the_golden_file() {
        let md = markdown(&fixed_doc());
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/report.md");
        if std::env::var("CROSSFOLD_BLESS").is_ok() {
            std::fs::write(&golden, &md).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(md, want);
    }

    #[test]
    fn report_files_are_written_and_consistent() {
        let dir = tempfile::tempdir().unwrap();
        write_report(dir.path(), &fixed_doc()).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("predictions.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("image,patient,label,task,round,score,predicted,repeat,predicted_youden")
        );
        assert_eq!(csv.lines().count(), 1 + 5 + 5 + 4 + 4);
        // No validation-chosen threshold in that round: the last cell empty.
        assert!(
            csv.contains("images/normal/P101_ap.png,P101,normal,screening,1,0.6,1,1,\n"),
            "{csv}"
        );
        // Malignancy round 1 chose 0.62: 0.6 is positive at 0.5, not at it.
        assert!(
            csv.contains("images/malignant/P102_ap.png,P102,malignant,malignancy,1,0.6,1,1,0\n"),
            "{csv}"
        );
        assert!(csv.contains(",malignancy,1,0.65,1,1,1\n"), "{csv}");
        let rounds = std::fs::read_to_string(dir.path().join("rounds.csv")).unwrap();
        assert!(
            rounds.starts_with("task,round,n_pos,n_neg,threshold,tp,fp,tn,fn,"),
            "{rounds}"
        );
        assert_eq!(rounds.lines().count(), 5);
        // Each round's repeat and (1-based) test groups, from the plan.
        let header = rounds.lines().next().unwrap();
        assert!(
            header.ends_with(",youden_threshold,youden_tp,youden_fp,youden_tn,youden_fn,youden_accuracy,youden_sensitivity,youden_specificity,youden_ppv,youden_npv,\
                 repeat,test_groups,seconds,training_seconds,images_per_second"),
            "{header}"
        );
        let no_youden = ",,,,,,,,,";
        let second = rounds
            .lines()
            .find(|l| l.starts_with("screening,2,"))
            .unwrap();
        assert!(
            second.ends_with(&format!("{no_youden},1,g2,,,")),
            "{second}"
        );
        // The time of a round whose worker reported it.
        let first = rounds
            .lines()
            .find(|l| l.starts_with("screening,1,"))
            .unwrap();
        assert!(
            first.ends_with(&format!("{no_youden},1,g1,42.500,40.000,176.250")),
            "{first}"
        );
        // The statistics at a round's validation-chosen threshold.
        let chosen = rounds
            .lines()
            .find(|l| l.starts_with("malignancy,1,"))
            .unwrap();
        assert!(
            chosen.contains(",0.62,1,1,1,1,0.5,0.5,0.5,0.5,0.5,1,g1,"),
            "{chosen}"
        );
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["tasks"]["screening"]["rounds"][0]["round"], 1);
        // Written again into the same folder with one task only: the other
        // task's plots go; files crossfold did not name stay.
        std::fs::write(dir.path().join("roc-notes.txt"), "mine").unwrap();
        std::fs::write(dir.path().join("roc-final.svg"), "<svg/>").unwrap();
        let mut one = fixed_doc();
        one["tasks"].as_object_mut().unwrap().remove("malignancy");
        write_report(dir.path(), &one).unwrap();
        assert!(!dir.path().join("roc-malignancy.svg").exists());
        assert!(!dir.path().join("calibration-malignancy.svg").exists());
        assert!(dir.path().join("roc-screening.svg").exists());
        assert!(dir.path().join("roc-notes.txt").exists());
        assert!(dir.path().join("roc-final.svg").exists());
    }

    #[test]
    fn a_report_is_not_written_over_files_that_are_not_an_earlier_report() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing there, or not there yet: fine.
        assert!(check_out(dir.path()).is_ok());
        assert!(check_out(&dir.path().join("new")).is_ok());
        // Someone's spec and a plot of the same name: refused, naming them.
        std::fs::write(dir.path().join("spec.toml"), "mine").unwrap();
        std::fs::write(dir.path().join("roc-screening.svg"), "mine").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = check_out(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("holds spec.toml, roc-screening.svg, not from a crossfold report"),
            "{err}"
        );
        // An earlier report there: written over, as before.
        write_report(dir.path(), &fixed_doc()).unwrap();
        assert!(check_out(dir.path()).is_ok());
        // One without a plan or spec leaves none of the earlier one's.
        let mut bare = fixed_doc();
        if let Some(o) = bare.as_object_mut() {
            o.insert("spec_toml".into(), Value::Null);
            o.insert("plan".into(), Value::Null);
        }
        std::fs::write(dir.path().join("plan.json"), "{}").unwrap();
        write_report(dir.path(), &bare).unwrap();
        assert!(!dir.path().join("spec.toml").exists());
        assert!(!dir.path().join("plan.json").exists());
        // What `crossfold plan --out` writes: a run of that plan goes there.
        let planned = tempfile::tempdir().unwrap();
        for f in ["plan.json", "spec.toml"] {
            std::fs::write(planned.path().join(f), "{}").unwrap();
        }
        std::fs::write(
            planned.path().join("jobs.json"),
            r#"[{"key": "screening-r01"}]"#,
        )
        .unwrap();
        assert!(check_out(planned.path()).is_ok());
        std::fs::write(planned.path().join("predictions.csv"), "mine").unwrap();
        assert!(check_out(planned.path()).is_err());
        // A file for a folder.
        let file = dir.path().join("notes.txt");
        assert!(check_out(&file)
            .unwrap_err()
            .to_string()
            .contains("is a file"));
    }

    #[test]
    fn the_protocol_is_said_in_words_with_repeats_and_test_groups() {
        let round = |n: u64, repeat: u64, groups: &[u64]| json!({"round": n, "repeat": repeat, "test_groups": groups});
        // The paper's design on 3 groups: k-fold screening, leave-2-out
        // malignancy.
        let paper = json!({"plan": {
            "protocol": {"kind": "paper", "groups": 3, "test_groups": 2, "repeats": 1, "seed": 5},
            "tasks": {
                "screening": [round(1, 1, &[0]), round(2, 1, &[1]), round(3, 1, &[2])],
                "malignancy": [round(1, 1, &[0, 1]), round(2, 1, &[0, 2]), round(3, 1, &[1, 2])],
            }
        }});
        let lines = protocol_lines(&paper);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("Protocol paper: 3 groups of patients"),
            "{lines:?}"
        );
        assert!(lines[0].contains("1 repeat (split seed 5)"), "{lines:?}");
        assert_eq!(
            lines[2],
            "malignancy: 3 round(s), leave-2-of-3-groups-out: every choice of 2 groups is a test set \
             once per repeat; round 1 tests 1+2, 2 tests 1+3, 3 tests 2+3."
        );
        assert_eq!(
            lines[1],
            "screening: 3 round(s), 3-fold: round i of a repeat tests group i."
        );
        // k-fold twice: which rounds are which repeat, and how they are pooled.
        let twice = json!({"plan": {
            "protocol": {"kind": "kfold", "groups": 2, "test_groups": 2, "repeats": 2, "seed": 7},
            "tasks": {"screening": [
                round(1, 1, &[0]), round(2, 1, &[1]), round(3, 2, &[0]), round(4, 2, &[1])
            ]}
        }});
        let lines = protocol_lines(&twice);
        assert!(
            lines[0].contains("2 repeats, each with its own groups (split seeds 7 to 8)"),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with("rounds 1-2 are repeat 1, rounds 3-4 are repeat 2."),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("mixes the variation within and between repeats"),
            "{lines:?}"
        );
        // No plan (an old report): nothing is made up.
        assert!(protocol_lines(&json!({})).is_empty());
        // Each repeat's own pooled AUC; a repeat with rounds missing says so.
        let entry = |repeat: u64, rounds: u64, auc: f64| {
            json!({"repeat": repeat, "rounds": rounds, "n": 8, "auc": auc, "auc_ci_low": 0.25,
                   "auc_ci_high": 1.0, "auc_ci_method": "delong"})
        };
        let task = json!({"pooled_by_repeat": [entry(1, 2, 0.5), entry(2, 1, 0.75)]});
        let planned = twice["plan"]["tasks"]["screening"]
            .as_array()
            .unwrap()
            .clone();
        let line = per_repeat_line(&task, &planned, dec, "–").unwrap();
        assert_eq!(
            line,
            "Pooled out-of-fold AUC per repeat: repeat 1 0.500 (95% CI 0.250–1.000), \
             repeat 2 0.750 (95% CI 0.250–1.000, 1 of 2 rounds); mean ± SD over repeats 0.625 ± 0.177."
        );
        assert!(per_repeat_line(&json!({}), &planned, dec, "–").is_none());
    }

    #[test]
    fn the_youden_table_summarises_its_rows_even_without_a_stored_summary() {
        let mut doc = fixed_doc();
        let t = &mut doc["tasks"]["malignancy"];
        assert!(t.get("summary_at_youden").is_some());
        // As stored by a coordinator before summary_at_youden.
        t.as_object_mut().unwrap().remove("summary_at_youden");
        let table = youden_table(t).unwrap();
        let last = table.last().unwrap();
        assert_eq!(last[0], "Mean ± SD");
        assert_eq!(last[6], "50.0 ± – (1 of 2 rounds)", "{last:?}");
        // A task no round of which chose a threshold has no table.
        assert!(youden_table(&doc["tasks"]["screening"]).is_none());
    }

    #[test]
    fn several_images_of_a_patient_in_a_test_set_are_pointed_out() {
        let doc = |patients: &[&str]| {
            let predictions: Vec<Value> = patients
                .iter()
                .map(|p| json!({"image": "x.png", "patient": p, "label": "normal", "score": 0.5}))
                .collect();
            json!({"predictions": [{"task": "screening", "round": 1, "predictions": predictions}]})
        };
        assert!(several_views(&doc(&["a", "b", "c"])).is_empty());
        let lines = several_views(&doc(&["a", "b", "a", "a", "c", "c"]));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("2 patient(s) have several images (up to 3)"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("so the confidence intervals are narrower than they should be"));
        // With pooled CIs clustered by patient (from a coordinator before
        // the breakdowns' were), the per-round and breakdown ones are.
        let method = crossfold_coordinator::aggregate::POOLED_CI_METHOD;
        let mut clustered = doc(&["a", "a"]);
        clustered["tasks"]["screening"]["pooled"]["auc_ci_method"] = method.into();
        // No breakdowns (no site or subtype column): none named.
        let lines = several_views(&clustered);
        assert!(
            lines[0].ends_with(
                "so the per-round confidence intervals are narrower than they should be \
                 (the pooled ones are clustered by patient)"
            ),
            "{lines:?}"
        );
        clustered["tasks"]["screening"]["breakdowns"]["site"] =
            json!([{"value": "femur", "auc_ci_method": "delong"}]);
        let lines = several_views(&clustered);
        assert!(
            lines[0]
                .contains("so the per-round and by-site/subtype confidence intervals are narrower"),
            "{lines:?}"
        );
        // With the breakdowns' clustered too, only the per-round ones.
        clustered["tasks"]["screening"]["breakdowns"]["site"] =
            json!([{"value": "femur", "auc_ci_method": method}]);
        let lines = several_views(&clustered);
        assert!(
            lines[0].contains("so the per-round confidence intervals are narrower"),
            "{lines:?}"
        );
        assert_eq!(
            notices(&doc(&["a", "a"]))[0].0,
            "Several images per patient"
        );
    }

    #[test]
    fn percentages_round_halves_up_like_the_paper() {
        // 10/32 = 31.25 % is printed 31.3 in the paper's Table 3.
        assert_eq!(pct(Some(10.0 / 32.0)), "31.3");
        assert_eq!(pct(Some(72.0 / 104.0)), "69.2");
        assert_eq!(pct(None), "–");
    }
}
