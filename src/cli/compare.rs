//! `crossfold compare A B`: two experiments on the same data set and split
//! plan, side by side, with a paired DeLong test on their out-of-fold scores.

use super::remote::{client, fetch_results, Target};
use super::{num, table, Format};
use anyhow::{bail, Result};
use clap::Args;
use crossfold_shared::label::{Label, Task};
use crossfold_shared::metrics::paired_delong;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Args)]
pub struct CompareArgs {
    pub a: String,
    pub b: String,
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// (task, round, image) -> (label, score) of an experiment's predictions.
fn scores(doc: &Value) -> BTreeMap<(String, u64, String), (String, f64)> {
    let mut m = BTreeMap::new();
    for r in doc["predictions"].as_array().into_iter().flatten() {
        let (task, round) = (
            r["task"].as_str().unwrap_or("").to_string(),
            r["round"].as_u64().unwrap_or(0),
        );
        for p in r["predictions"].as_array().into_iter().flatten() {
            if let (Some(image), Some(label), Some(score)) = (
                p["image"].as_str(),
                p["label"].as_str(),
                p["score"].as_f64(),
            ) {
                m.insert(
                    (task.clone(), round, image.to_string()),
                    (label.to_string(), score),
                );
            }
        }
    }
    m
}

/// Labels and the two experiments' scores of the images both tested.
type Paired = (Vec<bool>, Vec<f64>, Vec<f64>);

/// Per task: both experiments' pooled AUCs on the images both scored, and
/// DeLong's paired test of the difference.
pub fn compare(a: &Value, b: &Value) -> Result<Value> {
    for key in ["dataset_sha256", "plan_sha256"] {
        if a[key] != b[key] {
            bail!("the experiments differ in {key} ({} vs {}): a paired comparison needs the same data and split plan", a[key], b[key]);
        }
    }
    let (sa, sb) = (scores(a), scores(b));
    let mut tasks: BTreeMap<String, Paired> = BTreeMap::new();
    for (k, (label, score_a)) in &sa {
        let Some((_, score_b)) = sb.get(k) else {
            continue;
        };
        let (Ok(task), Ok(l)) = (k.0.parse::<Task>(), label.parse::<Label>()) else {
            continue;
        };
        let e = tasks.entry(k.0.clone()).or_default();
        e.0.push(task.is_positive(l));
        e.1.push(*score_a);
        e.2.push(*score_b);
    }
    let mut out = serde_json::Map::new();
    for (task, (labels, x, y)) in tasks {
        let t = paired_delong(&labels, &x, &y)?;
        out.insert(
            task,
            json!({
                "n": labels.len(),
                "auc_a": t.map(|t| t.auc_a), "auc_b": t.map(|t| t.auc_b),
                "difference": t.map(|t| t.difference), "se": t.map(|t| t.se),
                "z": t.map(|t| t.z), "p_value": t.map(|t| t.p_value),
                "test": "paired DeLong on pooled out-of-fold scores",
            }),
        );
    }
    Ok(
        json!({"a": a["experiment_id"], "b": b["experiment_id"], "plan_sha256": a["plan_sha256"], "tasks": out}),
    )
}

pub async fn run(args: CompareArgs) -> Result<ExitCode> {
    let mut c = client(&args.target).await?;
    let a = fetch_results(&mut c, &args.a).await?;
    let b = fetch_results(&mut c, &args.b).await?;
    let cmp = compare(&a, &b)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&cmp)?),
        Format::Text => {
            let rows: Vec<Vec<String>> = cmp["tasks"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(task, t)| {
                    vec![
                        task.clone(),
                        t["n"].to_string(),
                        num(t["auc_a"].as_f64(), 3),
                        num(t["auc_b"].as_f64(), 3),
                        num(t["difference"].as_f64(), 3),
                        num(t["z"].as_f64(), 2),
                        num(t["p_value"].as_f64(), 4),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["task", "n", "AUC A", "AUC B", "A - B", "z", "p"], &rows)
            );
            println!("paired DeLong test on the pooled out-of-fold scores of the images both experiments tested");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, plan: &str, scores: &[(&str, &str, f64)]) -> Value {
        let preds: Vec<Value> = scores
            .iter()
            .map(|(img, label, s)| json!({"image": img, "label": label, "score": s}))
            .collect();
        json!({"experiment_id": id, "plan_sha256": plan, "dataset_sha256": "d",
               "predictions": [{"task": "screening", "round": 1, "predictions": preds}]})
    }

    #[test]
    fn identical_experiments_do_not_differ() {
        let rows = [
            ("a", "normal", 0.1),
            ("b", "benign", 0.8),
            ("c", "malignant", 0.4),
            ("d", "normal", 0.5),
        ];
        let c = compare(&doc("A", "p", &rows), &doc("B", "p", &rows)).unwrap();
        let t = &c["tasks"]["screening"];
        assert_eq!(t["n"], 4);
        assert_eq!(t["difference"], 0.0);
        assert_eq!(t["p_value"], 1.0);
    }

    #[test]
    fn different_plans_are_refused() {
        let rows = [("a", "normal", 0.1), ("b", "benign", 0.8)];
        let err = compare(&doc("A", "p1", &rows), &doc("B", "p2", &rows)).unwrap_err();
        assert!(err.to_string().contains("plan_sha256"), "{err}");
    }
}
