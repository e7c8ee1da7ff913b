//! Text tables of an experiment's results and the files `run` writes.

use super::report::{mean_sd_cells, missing_rounds, round_warnings};
use super::{num, pct, table};
use serde_json::Value;

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Per task: the rounds and the summary (mean ± SD with n - 1), the pooled AUC.
pub fn tables(doc: &Value) -> String {
    let mut out = String::new();
    if doc.get("tasks").and_then(Value::as_object).is_none() {
        return "no results yet\n".into();
    }
    // Screening first, as in report.md and report.html.
    let tasks = super::report::tasks_in_order(doc);
    for line in super::report::protocol_lines(doc) {
        out.push_str(&format!("{line}\n"));
    }
    for line in missing_rounds(doc) {
        out.push_str(&format!("no result: {line}\n"));
    }
    for line in round_warnings(doc) {
        out.push_str(&format!("warning: {line}\n"));
    }
    for line in super::report::several_views(doc) {
        out.push_str(&format!("note: {line}\n"));
    }
    for (task, t) in tasks {
        let rounds = t
            .get("rounds")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        out.push_str(&format!("\n{task}: {} round(s)\n", rounds.len()));
        let mut rows: Vec<Vec<String>> = rounds
            .iter()
            .map(|r| {
                vec![
                    r.get("round").map(|v| v.to_string()).unwrap_or_default(),
                    format!("{}/{}/{}/{}", r["tp"], r["fp"], r["tn"], r["fn"]),
                    pct(f(r, "accuracy")),
                    pct(f(r, "sensitivity")),
                    pct(f(r, "specificity")),
                    pct(f(r, "ppv")),
                    pct(f(r, "npv")),
                    format!(
                        "{} ({}-{})",
                        num(f(r, "auc"), 3),
                        num(f(r, "auc_ci_low"), 3),
                        num(f(r, "auc_ci_high"), 3)
                    ),
                ]
            })
            .collect();
        let s = t.get("summary").cloned().unwrap_or(Value::Null);
        let mut summary_row = vec!["mean ± SD".to_string(), String::new()];
        summary_row.extend(mean_sd_cells(&s, rounds.len()));
        rows.push(summary_row);
        out.push_str(&table::render(
            &[
                "round",
                "TP/FP/TN/FN",
                "accuracy %",
                "sensitivity %",
                "specificity %",
                "PPV %",
                "NPV %",
                "AUC (95% CI, DeLong)",
            ],
            &rows,
        ));
        if let Some(p) = t.get("pooled").filter(|p| !p.is_null()) {
            out.push_str(&format!(
                "pooled out-of-fold AUC {} (95% CI {}-{}) over {} predictions\n",
                num(f(p, "auc"), 3),
                num(f(p, "auc_ci_low"), 3),
                num(f(p, "auc_ci_high"), 3),
                p["n"]
            ));
        }
        let planned = super::report::planned_rounds(doc, task);
        if let Some(line) = super::report::per_repeat_line(t, &planned, num, "-") {
            out.push_str(&format!("{line}\n"));
        }
    }
    out.push_str("SD is the sample standard deviation (n - 1); '-' marks an undefined value.\n");
    out
}
