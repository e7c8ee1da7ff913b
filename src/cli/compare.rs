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
    /// Compare experiments that have not finished every round, on the
    /// rounds both have.
    #[arg(long)]
    pub partial: bool,
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

/// Per image of a task: its label and both experiments' scores, one per
/// round both tested it.
type PerImage = BTreeMap<String, (bool, Vec<f64>, Vec<f64>)>;

/// Why an experiment cannot be compared as a whole yet, if it cannot.
fn incomplete(doc: &Value) -> Option<String> {
    let missing = doc["missing_rounds"].as_array().map_or(0, Vec::len);
    let complete = doc["complete"].as_bool().unwrap_or(true);
    (!complete || missing > 0).then(|| {
        format!(
            "experiment {} is {} with {missing} round(s) without a result",
            doc["experiment_id"].as_str().unwrap_or("?"),
            doc["state"].as_str().unwrap_or("unfinished")
        )
    })
}

/// Per task: both experiments' pooled AUCs on the images both scored, and
/// DeLong's paired test of the difference. An image tested in several
/// rounds (leave-p-groups-out designs) counts once, with its mean score in
/// each experiment: the test assumes one observation per image. Refuses
/// unfinished experiments unless `partial`.
pub fn compare(a: &Value, b: &Value, partial: bool) -> Result<Value> {
    for key in ["dataset_sha256", "plan_sha256"] {
        // A plan hash also covers the order of the manifest's rows and of
        // `protocol.tasks`: the same split made from a reordered manifest
        // is the same split.
        if a[key] != b[key] && !(key == "plan_sha256" && same_split(&a["plan"], &b["plan"])) {
            bail!("the experiments differ in {key} ({} vs {}): a paired comparison needs the same data and split plan", a[key], b[key]);
        }
    }
    if !partial {
        if let Some(why) = incomplete(a).or_else(|| incomplete(b)) {
            bail!("{why}: compare finished experiments, or add --partial to compare the rounds both have");
        }
    }
    let (sa, sb) = (scores(a), scores(b));
    let mut tasks: BTreeMap<String, PerImage> = BTreeMap::new();
    for (k, (label, score_a)) in &sa {
        let Some((_, score_b)) = sb.get(k) else {
            continue;
        };
        let (Ok(task), Ok(l)) = (k.0.parse::<Task>(), label.parse::<Label>()) else {
            continue;
        };
        let e = tasks
            .entry(k.0.clone())
            .or_default()
            .entry(k.2.clone())
            .or_insert_with(|| (task.is_positive(l), Vec::new(), Vec::new()));
        e.1.push(*score_a);
        e.2.push(*score_b);
    }
    if tasks.is_empty() {
        bail!("no image was scored in a round both experiments finished: nothing to compare");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut out = serde_json::Map::new();
    for (task, images) in tasks {
        let labels: Vec<bool> = images.values().map(|i| i.0).collect();
        let x: Vec<f64> = images.values().map(|i| mean(&i.1)).collect();
        let y: Vec<f64> = images.values().map(|i| mean(&i.2)).collect();
        let most = images.values().map(|i| i.1.len()).max().unwrap_or(0);
        let t = paired_delong(&labels, &x, &y)?;
        out.insert(
            task,
            json!({
                "n": labels.len(),
                "rounds_per_image_max": most,
                "auc_a": t.map(|t| t.auc_a), "auc_b": t.map(|t| t.auc_b),
                "difference": t.map(|t| t.difference), "se": t.map(|t| t.se),
                "z": t.map(|t| t.z), "p_value": t.map(|t| t.p_value),
                "test": "paired DeLong on out-of-fold scores, one per image (the mean over the rounds that tested it)",
            }),
        );
    }
    Ok(
        json!({"a": a["experiment_id"], "b": b["experiment_id"], "plan_sha256": a["plan_sha256"], "tasks": out}),
    )
}

pub async fn run(args: CompareArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.a != args.b,
        "A and B are both experiment {}: compare two different experiments",
        args.a
    );
    let mut c = client(&args.target).await?;
    let a = fetch_results(&mut c, &args.a).await?;
    let b = fetch_results(&mut c, &args.b).await?;
    let cmp = compare(&a, &b, args.partial)?;
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
            println!(
                "paired DeLong test on the out-of-fold scores of the images both experiments tested; \
                 n counts images, each once (an image tested in several rounds with its mean score)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether two split plans (the results' `plan`) test and train the same
/// images in each round of each task, whatever their order.
fn same_split(a: &Value, b: &Value) -> bool {
    let rounds = |plan: &Value| -> Option<BTreeMap<String, Vec<[Vec<String>; 2]>>> {
        let tasks = plan.get("tasks")?.as_object()?;
        let mut out = BTreeMap::new();
        for (task, list) in tasks {
            let mut per_round = Vec::new();
            for r in list.as_array()? {
                let sorted = |k: &str| -> Option<Vec<String>> {
                    let mut v: Vec<String> = r
                        .get(k)?
                        .as_array()?
                        .iter()
                        .map(|p| p.as_str().map(str::to_string))
                        .collect::<Option<_>>()?;
                    v.sort();
                    Some(v)
                };
                per_round.push([sorted("train")?, sorted("test")?]);
            }
            out.insert(task.clone(), per_round);
        }
        Some(out)
    };
    matches!((rounds(a), rounds(b)), (Some(x), Some(y)) if x == y && !x.is_empty())
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
        let c = compare(&doc("A", "p", &rows), &doc("B", "p", &rows), false).unwrap();
        let t = &c["tasks"]["screening"];
        assert_eq!(t["n"], 4);
        assert_eq!(t["difference"], 0.0);
        assert_eq!(t["p_value"], 1.0);
    }

    #[test]
    fn different_plans_are_refused() {
        let rows = [("a", "normal", 0.1), ("b", "benign", 0.8)];
        let err = compare(&doc("A", "p1", &rows), &doc("B", "p2", &rows), false).unwrap_err();
        assert!(err.to_string().contains("plan_sha256"), "{err}");
    }

    #[test]
    fn the_same_split_from_a_reordered_manifest_is_the_same_split() {
        let rows = [("a", "normal", 0.1), ("b", "benign", 0.8)];
        let with_plan = |id: &str, hash: &str, test: [&str; 2], train: [&str; 2]| {
            let mut d = doc(id, hash, &rows);
            d["plan"] =
                json!({"tasks": {"screening": [{"round": 1, "test": test, "train": train}]}});
            d
        };
        let a = with_plan("A", "p1", ["a", "b"], ["c", "d"]);
        let b = with_plan("B", "p2", ["b", "a"], ["d", "c"]);
        assert_eq!(
            compare(&a, &b, false).unwrap()["tasks"]["screening"]["n"],
            2
        );
        // Another split: refused.
        let other = with_plan("B", "p2", ["a", "c"], ["b", "d"]);
        let err = compare(&a, &other, false).unwrap_err();
        assert!(err.to_string().contains("plan_sha256"), "{err}");
    }

    #[test]
    fn an_image_tested_in_several_rounds_counts_once_with_its_mean_score() {
        let round = |r: u64, s: &[(&str, &str, f64)]| {
            let preds: Vec<Value> = s
                .iter()
                .map(|(img, label, s)| json!({"image": img, "label": label, "score": s}))
                .collect();
            json!({"task": "malignancy", "round": r, "predictions": preds})
        };
        let two = |id: &str, first: f64, second: f64| {
            json!({"experiment_id": id, "plan_sha256": "p", "dataset_sha256": "d",
            "predictions": [
                round(1, &[("m1", "malignant", first), ("b1", "benign", 0.2), ("m2", "malignant", 0.7)]),
                round(2, &[("m1", "malignant", second), ("b2", "benign", 0.6), ("b1", "benign", 0.3)]),
            ]})
        };
        let c = compare(&two("A", 0.9, 0.1), &two("B", 0.6, 0.6), false).unwrap();
        let t = &c["tasks"]["malignancy"];
        // m1, m2, b1, b2: four images, not six image-rounds.
        assert_eq!(t["n"], 4);
        assert_eq!(t["rounds_per_image_max"], 2);
        // By hand. A's means: m1 0.5, m2 0.7, b1 0.25, b2 0.6; of the four
        // (malignant, benign) pairs only (m1, b2) is out of order: AUC 3/4.
        // B's: m1 0.6 ties b2 0.6 (one half): AUC 3.5/4.
        assert!((t["auc_a"].as_f64().unwrap() - 0.75).abs() < 1e-12, "{t}");
        assert!((t["auc_b"].as_f64().unwrap() - 0.875).abs() < 1e-12, "{t}");
    }

    #[test]
    fn unfinished_experiments_need_partial() {
        let rows = [
            ("a", "normal", 0.1),
            ("b", "benign", 0.8),
            ("c", "normal", 0.3),
            ("d", "benign", 0.6),
        ];
        let mut running = doc("B", "p", &rows);
        running["complete"] = json!(false);
        running["state"] = json!("running");
        running["missing_rounds"] = json!([{"task": "screening", "round": 2}]);
        let err = compare(&doc("A", "p", &rows), &running, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("experiment B is running with 1 round(s) without a result")
                && err.to_string().contains("--partial"),
            "{err}"
        );
        let c = compare(&doc("A", "p", &rows), &running, true).unwrap();
        assert_eq!(c["tasks"]["screening"]["n"], 4);
        // Nothing in common: an error, not an empty table.
        let empty = json!({"experiment_id": "C", "plan_sha256": "p", "dataset_sha256": "d", "predictions": []});
        let err = compare(&doc("A", "p", &rows), &empty, true).unwrap_err();
        assert!(err.to_string().contains("nothing to compare"), "{err}");
    }
}
