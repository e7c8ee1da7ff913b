//! `crossfold metrics`: per-round statistics from a CSV of `label,score`.

use super::{num, pct, table, Format};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use crossfold_shared::csv_line::line_at;
use crossfold_shared::label::Label;
use crossfold_shared::metrics::{bootstrap_auc_ci, RoundStats};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// More resamples than this change the CI's third decimal no more, and each
/// costs memory.
const MAX_BOOTSTRAP: usize = 1_000_000;

#[derive(Args)]
pub struct MetricsArgs {
    /// CSV with columns `label` (0/1; 1 = positive class) and `score` (the
    /// positive class's probability). Other columns are ignored.
    file: PathBuf,
    /// Decision threshold: predicted positive when score >= threshold.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Also give a stratified bootstrap 95% CI of the AUC with this many resamples.
    #[arg(long)]
    bootstrap: Option<usize>,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
}

/// Read `label,score` rows; errors name the file, line and field.
pub fn read_scores(path: &Path) -> Result<(Vec<bool>, Vec<f64>)> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {name}: {e}"))?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers = reader
        .headers()
        .map_err(|e| anyhow!("{name}: {e}"))?
        .clone();
    let col = |c: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(c))
    };
    let (Some(li), Some(si)) = (col("label"), col("score")) else {
        bail!(
            "{name}: header must have columns label and score (found: {})",
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    // Every bad row is listed (the first 20), not just the first.
    let mut problems = Vec::new();
    let mut named_classes = false;
    for rec in reader.records() {
        let rec = rec.map_err(|e| anyhow!("{name}: {e}"))?;
        let line = rec
            .position()
            .map(|p| line_at(&bytes, p.byte()))
            .unwrap_or(0);
        let field = |i: usize| rec.get(i).unwrap_or("").trim();
        let label = match field(li) {
            "1" => Some(true),
            "0" => Some(false),
            v => {
                named_classes |= v.parse::<Label>().is_ok();
                problems.push(format!("line {line}: label = {v:?}: expected 0 or 1"));
                None
            }
        };
        let s = field(si);
        let score = match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                problems.push(format!(
                    "line {line}: score = {s:?}: expected a finite number"
                ));
                None
            }
        };
        if let (Some(l), Some(v)) = (label, score) {
            labels.push(l);
            scores.push(v);
        }
    }
    if !problems.is_empty() {
        // crossfold's own predictions.csv names the class.
        let hint = if named_classes {
            "\nthe labels are class names (as in crossfold's predictions.csv): write 1 for the task's \
             positive class and 0 for the other (screening: benign and malignant are 1; \
             malignancy: malignant is 1, benign 0)"
        } else {
            ""
        };
        bail!(
            "{name}: {} bad value(s):\n{}{hint}",
            problems.len(),
            crossfold_shared::listing::indented(&problems)
        );
    }
    if labels.is_empty() {
        bail!("{name}: no rows");
    }
    let outside = scores.iter().filter(|s| !(0.0..=1.0).contains(*s)).count();
    if outside > 0 {
        eprintln!(
            "warning: {name}: {outside} score(s) outside [0, 1] (logits?): the AUC only ranks them, \
             but the statistics at the threshold assume probabilities"
        );
    }
    Ok((labels, scores))
}

pub fn run(a: MetricsArgs) -> Result<ExitCode> {
    let (labels, scores) = read_scores(&a.file)?;
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!("--threshold {}: must be in [0, 1]", a.threshold);
    }
    let stats = RoundStats::compute(&labels, &scores, a.threshold)
        .map_err(|e| anyhow!("{}: {e}", a.file.display()))?;
    let boot = match a.bootstrap {
        Some(n) if n > MAX_BOOTSTRAP => {
            bail!("--bootstrap {n}: at most {MAX_BOOTSTRAP} resamples")
        }
        Some(n) => bootstrap_auc_ci(&labels, &scores, n, 0.95, a.seed)
            .map_err(|e| anyhow!("--bootstrap {n}: {e}"))?,
        None => None,
    };
    match a.format {
        Format::Json => {
            let mut v = serde_json::to_value(&stats)?;
            if let (Some(obj), Some(n)) = (v.as_object_mut(), a.bootstrap) {
                obj.insert("bootstrap_resamples".into(), n.into());
                obj.insert("bootstrap_ci_low".into(), boot.map(|b| b.0).into());
                obj.insert("bootstrap_ci_high".into(), boot.map(|b| b.1).into());
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            let s = &stats;
            let rows = vec![
                vec![
                    "positives / negatives".into(),
                    format!("{} / {}", s.n_pos, s.n_neg),
                ],
                vec!["threshold".into(), format!("{}", s.threshold)],
                vec![
                    "TP / FP / TN / FN".into(),
                    format!("{} / {} / {} / {}", s.tp, s.fp, s.tn, s.fn_),
                ],
                vec!["accuracy %".into(), pct(s.accuracy)],
                vec!["sensitivity %".into(), pct(s.sensitivity)],
                vec!["specificity %".into(), pct(s.specificity)],
                vec!["PPV %".into(), pct(s.ppv)],
                vec!["NPV %".into(), pct(s.npv)],
                vec![
                    "ROC AUC (95% CI, DeLong)".into(),
                    format!(
                        "{} ({}-{})",
                        num(s.auc, 3),
                        num(s.auc_ci_low, 3),
                        num(s.auc_ci_high, 3)
                    ),
                ],
            ];
            let mut rows = rows;
            if let Some(n) = a.bootstrap {
                rows.push(vec![
                    format!("AUC 95% CI, bootstrap ({n})"),
                    format!(
                        "{}-{}",
                        num(boot.map(|b| b.0), 3),
                        num(boot.map(|b| b.1), 3)
                    ),
                ]);
            }
            print!("{}", table::render(&["metric", "value"], &rows));
            println!("'-' marks a value that is undefined for these counts.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
