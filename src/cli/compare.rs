//! `crossfold compare A B`: two experiments on the same data set and split
//! plan, side by side, with a paired DeLong test on their pooled out-of-fold
//! scores, clustered by patient.

use super::remote::{client, fetch_results, Target};
use super::{num, table, Format};
use anyhow::{bail, Result};
use clap::Args;
use crossfold_shared::label::{Label, Task};
use crossfold_shared::metrics::clustered_paired_delong;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// A prediction as compared: its label, score and cluster (its patient, or
/// its image when the manifest names no patient).
struct Scored {
    label: String,
    score: f64,
    cluster: String,
}

/// (task, round, image) -> the experiment's prediction.
fn scores(doc: &Value) -> BTreeMap<(String, u64, String), Scored> {
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
                let cluster = match p["patient"].as_str() {
                    Some(patient) if !patient.is_empty() => format!("patient {patient}"),
                    _ => format!("image {image}"),
                };
                m.insert(
                    (task.clone(), round, image.to_string()),
                    Scored {
                        label: label.to_string(),
                        score,
                        cluster,
                    },
                );
            }
        }
    }
    m
}

/// A task's predictions both experiments made (a round and an image each):
/// label, A's score, B's score, cluster and image.
#[derive(Default)]
struct Pairs {
    labels: Vec<bool>,
    a: Vec<f64>,
    b: Vec<f64>,
    clusters: Vec<String>,
    images: Vec<String>,
}

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

/// Per task: both experiments' pooled out-of-fold AUCs on the predictions
/// both made (each round's test images), and DeLong's paired test of the
/// difference with its variance clustered by patient (Obuchowski 1997): an
/// image tested in several rounds, and a patient's several images, are one
/// case, not several. Refuses unfinished experiments unless `partial`.
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
    let mut tasks: BTreeMap<String, Pairs> = BTreeMap::new();
    for (k, x) in &sa {
        let Some(y) = sb.get(k) else {
            continue;
        };
        let (Ok(task), Ok(l)) = (k.0.parse::<Task>(), x.label.parse::<Label>()) else {
            continue;
        };
        let p = tasks.entry(k.0.clone()).or_default();
        p.labels.push(task.is_positive(l));
        p.a.push(x.score);
        p.b.push(y.score);
        // A's patient, or B's where A's results name none (older
        // workers'): the data set's fingerprint covers the patient ids,
        // so where both name one they agree.
        let cluster = if x.cluster.starts_with("image ") {
            &y.cluster
        } else {
            &x.cluster
        };
        p.clusters.push(cluster.clone());
        p.images.push(k.2.clone());
    }
    if tasks.is_empty() {
        bail!("no image was scored in a round both experiments finished: nothing to compare");
    }
    let mut out = serde_json::Map::new();
    for (task, p) in tasks {
        let mut per_image: HashMap<&str, usize> = HashMap::new();
        for image in &p.images {
            *per_image.entry(image).or_default() += 1;
        }
        let clusters: HashSet<&String> = p.clusters.iter().collect();
        let t = clustered_paired_delong(&p.labels, &p.a, &p.b, &p.clusters)?;
        out.insert(
            task,
            json!({
                "n": p.labels.len(),
                "images": per_image.len(),
                "clusters": clusters.len(),
                "rounds_per_image_max": per_image.values().max(),
                "auc_a": t.map(|t| t.auc_a), "auc_b": t.map(|t| t.auc_b),
                "difference": t.map(|t| t.difference), "se": t.map(|t| t.se),
                // A standard error of 0 with a difference gives z = ±inf,
                // which JSON cannot hold: null there, with p = 0.
                "z": t.map(|t| t.z).filter(|z| z.is_finite()), "p_value": t.map(|t| t.p_value),
                "test": "paired DeLong on the pooled out-of-fold scores, clustered by patient (Obuchowski 1997)",
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
                "paired DeLong test on the pooled out-of-fold scores both experiments made; n counts \
                 predictions (an image once per round that tested it), and the test's variance counts \
                 each patient's predictions as one case (clustered, Obuchowski 1997)"
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
    fn an_image_tested_in_several_rounds_is_pooled_and_one_cluster() {
        let round = |r: u64, s: &[(&str, &str, f64)]| {
            let preds: Vec<Value> = s
                .iter()
                .map(|(img, label, s)| {
                    json!({"image": img, "patient": format!("p-{img}"), "label": label, "score": s})
                })
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
        // Six predictions of four images, each its own patient.
        assert_eq!(
            (
                &t["n"],
                &t["images"],
                &t["clusters"],
                &t["rounds_per_image_max"]
            ),
            (&json!(6), &json!(4), &json!(4), &json!(2))
        );
        // By hand, pooled as the reports pool. Malignant A: 0.9, 0.7, 0.1;
        // benign 0.2, 0.6, 0.3: 0.9 and 0.7 beat all three, 0.1 none: 6/9.
        // B: 0.6, 0.7, 0.6 against the same: 2.5 + 3 + 2.5 = 8/9.
        assert!(
            (t["auc_a"].as_f64().unwrap() - 6.0 / 9.0).abs() < 1e-12,
            "{t}"
        );
        assert!(
            (t["auc_b"].as_f64().unwrap() - 8.0 / 9.0).abs() < 1e-12,
            "{t}"
        );
        // The variance counts m1's and b1's two predictions each as one
        // case: not the plain paired test of six independent predictions.
        let labels = [true, false, true, true, false, false];
        let (xa, xb) = (
            [0.9, 0.2, 0.7, 0.1, 0.6, 0.3],
            [0.6, 0.2, 0.7, 0.6, 0.6, 0.3],
        );
        let plain = crossfold_shared::metrics::paired_delong(&labels, &xa, &xb)
            .unwrap()
            .unwrap();
        let se = t["se"].as_f64().unwrap();
        assert!((se - plain.se).abs() > 1e-3, "{se} vs {}", plain.se);
        // Two patients of each class are the fewest it takes.
        let mut one_benign = two("A", 0.9, 0.1);
        for r in one_benign["predictions"].as_array_mut().unwrap() {
            for p in r["predictions"].as_array_mut().unwrap() {
                if p["label"] == "benign" {
                    p["patient"] = json!("pb");
                }
            }
        }
        let c = compare(&one_benign, &two("B", 0.6, 0.6), false).unwrap();
        let t = &c["tasks"]["malignancy"];
        assert_eq!(
            (&t["clusters"], &t["p_value"]),
            (&json!(3), &Value::Null),
            "{t}"
        );
        // A from workers that sent no patient ids: B's are used.
        let mut anonymous = two("B", 0.6, 0.6);
        for r in anonymous["predictions"].as_array_mut().unwrap() {
            for p in r["predictions"].as_array_mut().unwrap() {
                p.as_object_mut().unwrap().remove("patient");
            }
        }
        let c = compare(&anonymous, &one_benign, false).unwrap();
        assert_eq!(c["tasks"]["malignancy"]["clusters"], 3);
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
