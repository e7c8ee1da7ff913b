//! Text tables of an experiment's results and the files `run` writes.

use super::report::{mean_sd_cells, missing_rounds, round_warnings};
use super::{num, pct, table};
use serde_json::Value;

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// What a results document with rounds missing says first: that it is
/// partial (the experiment still runs) or incomplete (it failed or was
/// cancelled with rounds unfinished), and how many rounds have no result.
/// `None` when every round has one.
pub fn partial_note(doc: &Value) -> Option<String> {
    let state = doc["state"].as_str().unwrap_or("unfinished");
    let missing = missing_rounds(doc).len();
    if doc["complete"] == false {
        Some(format!(
            "partial results: the experiment is {state}; {missing} round(s) have no result yet"
        ))
    } else if missing > 0 {
        Some(format!(
            "incomplete results: the experiment {state}; {missing} round(s) have no result"
        ))
    } else {
        None
    }
}

/// Per task: the rounds and the summary (mean ± SD with n - 1), the pooled AUC.
pub fn tables(doc: &Value) -> String {
    let mut out = String::new();
    if doc.get("tasks").and_then(Value::as_object).is_none() {
        return "no results yet\n".into();
    }
    // An experiment still running (or stopped with rounds missing) says so
    // first: its tables cover only the rounds with a result.
    if let Some(note) = partial_note(doc) {
        out.push_str(&format!("{note} (listed below)\n"));
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
        if let Some(line) = super::report::pooled_line(t, num, "-") {
            out.push_str(&format!("{line}\n"));
        }
        let planned = super::report::planned_rounds(doc, task);
        if let Some(line) = super::report::per_repeat_line(t, &planned, num, "-") {
            out.push_str(&format!("{line}\n"));
        }
        if let Some(line) = time_line(t, "-") {
            out.push_str(&format!("{line}\n"));
        }
    }
    out.push_str("SD is the sample standard deviation (n - 1); '-' marks an undefined value.\n");
    out
}

/// How long a task's rounds took, as their workers measured it: per round
/// the range and median, the sum, and the range of training throughput;
/// `to` joins a range's ends. None when no round was timed (results of
/// workers older than timing).
pub(super) fn time_line(task: &Value, to: &str) -> Option<String> {
    let rounds = task.get("rounds")?.as_array()?;
    let timed: Vec<&Value> = rounds
        .iter()
        .map(|r| &r["timing"])
        .filter(|t| t["total"].is_number())
        .collect();
    if timed.is_empty() {
        return None;
    }
    let sorted = |key: &str| {
        let mut v: Vec<f64> = timed.iter().filter_map(|t| t[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let range = |v: &[f64], d: usize| match (v.first(), v.last()) {
        (Some(lo), Some(hi)) if format!("{lo:.d$}") != format!("{hi:.d$}") => {
            format!("{lo:.d$}{to}{hi:.d$}")
        }
        (Some(lo), _) => format!("{lo:.d$}"),
        _ => String::new(),
    };
    let totals = sorted("total");
    let n = totals.len();
    let median = (totals[(n - 1) / 2] + totals[n / 2]) / 2.0;
    let all: f64 = totals.iter().sum();
    let rates = sorted("images_per_second");
    let rate = if rates.is_empty() {
        String::new()
    } else {
        format!(", training at {} images/s", range(&rates, 0))
    };
    let partial = if n < rounds.len() {
        format!(" ({n} of {} rounds timed)", rounds.len())
    } else {
        String::new()
    };
    Some(format!(
        "time per round {} s (median {median:.1} s, {all:.1} s in all){rate}, as the workers measured it{partial}",
        range(&totals, 1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_time_line_gives_range_median_sum_and_rates_of_timed_rounds() {
        let timed =
            |total: f64, rate: f64| json!({"timing": {"total": total, "images_per_second": rate}});
        // Totals 4.0, 5.0, 3.0 and 6.0 s: median (4 + 5) / 2 = 4.5, sum 18.
        let task = json!({"rounds": [timed(4.0, 2650.4), timed(5.0, 2870.0), timed(3.0, 2700.0),
            timed(6.0, 2800.0), {"round": 5}]});
        assert_eq!(
            time_line(&task, "-").unwrap(),
            "time per round 3.0-6.0 s (median 4.5 s, 18.0 s in all), training at 2650-2870 images/s, \
             as the workers measured it (4 of 5 rounds timed)"
        );
        // One round: no range.
        let one = json!({"rounds": [timed(42.5, 176.25)]});
        assert_eq!(
            time_line(&one, "–").unwrap(),
            "time per round 42.5 s (median 42.5 s, 42.5 s in all), training at 176 images/s, \
             as the workers measured it"
        );
        // Results without timing: nothing to say.
        assert!(time_line(&json!({"rounds": [{"round": 1}]}), "-").is_none());
    }

    #[test]
    fn unfinished_results_say_so_first() {
        let partial = json!({
            "complete": false, "state": "running", "tasks": {},
            "missing_rounds": [{"task": "screening", "round": 4, "state": "leased", "attempts": 1}],
        });
        let text = tables(&partial);
        assert!(
            text.starts_with(
                "partial results: the experiment is running; 1 round(s) have no result yet"
            ),
            "{text}"
        );
        assert!(
            text.contains("no result: screening round 4: leased (attempt 1)"),
            "{text}"
        );
        let done = json!({"complete": true, "state": "succeeded", "tasks": {}});
        assert!(!tables(&done).contains("partial"));
        assert_eq!(partial_note(&done), None);
    }
}
