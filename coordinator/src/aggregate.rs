//! Aggregating an experiment's committed results: per task, the rounds'
//! statistics, their summary (mean, sample SD with n - 1, min, max) and the
//! pooled out-of-fold AUC with its DeLong CI clustered by patient, and with
//! repeats, the pooled AUC of each repeat.

use crossfold_shared::label::{Label, Task};
use crossfold_shared::metrics::{
    clustered_delong, summarize_optional, Pooled, RoundStats, SUMMARY_KEYS,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// One test image's score, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredImage {
    pub image: String,
    #[serde(default)]
    pub patient: String,
    pub label: String,
    pub score: f64,
    /// The manifest's site and subtype ("" when it has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subtype: String,
}

/// The document stored for one committed job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub task: String,
    pub round: u32,
    pub attempt: u32,
    pub worker_id: String,
    pub predictions: Vec<ScoredImage>,
    pub history: Value,
    pub stats: RoundStats,
    /// Where the result came from (worker versions, device, precision,
    /// seed, hashes), as the worker reported it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub provenance: Value,
    /// The threshold the worker chose on the round's validation images
    /// (Youden's J), if it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub youden_threshold: Option<f64>,
    /// What the worker reported as going other than the spec intended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Where the job's time went, as the worker measured it (absent from
    /// older workers' results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<JobTiming>,
}

/// Seconds of one job by phase, and its training throughput (images/s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobTiming {
    pub preparation: f64,
    pub startup: f64,
    pub data_loading: f64,
    pub training: f64,
    /// Per-epoch validation scoring and the best weights kept and
    /// restored (absent from older workers' results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<f64>,
    pub evaluation: f64,
    pub total: f64,
    pub images_per_second: f64,
}

impl JobTiming {
    /// The timing itself, or the first field that is not a finite number
    /// of at least 0.
    pub fn checked(self) -> Result<JobTiming, String> {
        for (name, v) in [
            ("preparation", self.preparation),
            ("startup", self.startup),
            ("data_loading", self.data_loading),
            ("training", self.training),
            ("validation", self.validation.unwrap_or(0.0)),
            ("evaluation", self.evaluation),
            ("total", self.total),
            ("images_per_second", self.images_per_second),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("timing.{name} = {v}: not a number of at least 0"));
            }
        }
        Ok(self)
    }
}

/// Statistics of one round from its predictions.
pub fn round_stats(
    task: Task,
    predictions: &[ScoredImage],
    threshold: f64,
) -> Result<RoundStats, String> {
    let mut labels = Vec::with_capacity(predictions.len());
    let mut scores = Vec::with_capacity(predictions.len());
    for p in predictions {
        let l: Label = p
            .label
            .parse()
            .map_err(|e| format!("image {}: {e}", p.image))?;
        // A probability; a logit or a percentage would make every count
        // at the threshold, and the calibration, meaningless.
        if !(0.0..=1.0).contains(&p.score) {
            return Err(format!(
                "image {}: score {} is not a probability in [0, 1]",
                p.image, p.score
            ));
        }
        labels.push(task.is_positive(l));
        scores.push(p.score);
    }
    RoundStats::compute(&labels, &scores, threshold).map_err(|e| e.to_string())
}

/// Why `predictions` are not exactly the test images the stored split plan
/// gives round `round` of `task` (each once, none missing, none other), or
/// `None` when they are. `Err` when the plan cannot say (it does not parse,
/// or lacks the round): the caller cannot check, which is not the result's
/// fault.
pub fn test_set_mismatch(
    plan_json: &str,
    task: &str,
    round: u32,
    predictions: &[ScoredImage],
) -> Result<Option<String>, String> {
    let plan: Value = serde_json::from_str(plan_json)
        .map_err(|e| format!("the stored split plan does not parse: {e}"))?;
    let planned = plan["tasks"][task]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["round"].as_u64() == Some(round.into()))
        })
        .and_then(|r| r["test"].as_array())
        .ok_or_else(|| format!("the stored split plan has no {task} round {round}"))?;
    let test: BTreeSet<&str> = planned.iter().filter_map(Value::as_str).collect();
    let mut seen = HashSet::new();
    let (mut other, mut twice) = (Vec::new(), Vec::new());
    for p in predictions {
        let image = p.image.as_str();
        if !test.contains(image) {
            other.push(image);
        } else if !seen.insert(image) {
            twice.push(image);
        }
    }
    let missing: Vec<&str> = test.iter().copied().filter(|i| !seen.contains(i)).collect();
    let parts: Vec<String> = [
        (missing, "missing"),
        (other, "not in it"),
        (twice, "scored twice"),
    ]
    .into_iter()
    .filter(|(images, _)| !images.is_empty())
    .map(|(images, what)| format!("{} {what} (first: {})", images.len(), images[0]))
    .collect();
    Ok((!parts.is_empty()).then(|| {
        format!(
            "the predictions are not {task} round {round}'s test set of {} images: {}",
            test.len(),
            parts.join("; ")
        )
    }))
}

/// The repeat of each task's round, from the stored split plan document
/// (rounds it does not name are taken as repeat 1).
pub fn repeats_of(plan_json: &str) -> BTreeMap<(String, u32), u32> {
    let plan: Value = serde_json::from_str(plan_json).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    for (task, rounds) in plan["tasks"].as_object().into_iter().flatten() {
        for r in rounds.as_array().into_iter().flatten() {
            if let (Some(round), Some(repeat)) = (r["round"].as_u64(), r["repeat"].as_u64()) {
                out.insert((task.clone(), round as u32), repeat as u32);
            }
        }
    }
    out
}

/// The summary of a stored experiment from its results: [`summarize`] with
/// the record's hashes and its plan's repeats.
pub fn summarize_record(results: &[JobResult], e: &crate::store::ExperimentRecord) -> Value {
    summarize(
        results,
        &e.plan_sha256,
        &e.dataset_sha256,
        &repeats_of(&e.plan_json),
    )
}

/// The pooled AUC of the test predictions of `rounds`, with DeLong's CI
/// clustered by patient (Obuchowski 1997): an image tested in several
/// rounds, and a patient's several images, are one cluster, not
/// independent cases. A prediction without a patient id is its image's
/// own cluster.
fn pooled_of(task: Task, rounds: &[&JobResult]) -> Option<Value> {
    let mut cases = Cases::default();
    let mut images = BTreeSet::new();
    for p in rounds.iter().flat_map(|r| &r.predictions) {
        if cases.push(task, p) {
            images.insert(p.image.as_str());
        }
    }
    let pooled = Pooled::from_rounds([(&cases.labels[..], &cases.scores[..])]).ok()?;
    let (low, high) = cases.clustered_ci();
    Some(json!({
        "n": cases.labels.len(),
        "images": images.len(),
        "clusters": cases.distinct_clusters(),
        "auc": pooled.auc().ok().flatten(),
        "auc_ci_low": low,
        "auc_ci_high": high,
        "auc_ci_method": POOLED_CI_METHOD,
    }))
}

/// Pooled predictions as the clustered CI needs them: label (positive or
/// not), score and cluster of each.
#[derive(Default)]
struct Cases {
    labels: Vec<bool>,
    scores: Vec<f64>,
    clusters: Vec<String>,
}

impl Cases {
    /// Add `p`; false (and left out) when its label is not one crossfold knows.
    fn push(&mut self, task: Task, p: &ScoredImage) -> bool {
        let Ok(l) = p.label.parse::<Label>() else {
            return false;
        };
        self.labels.push(task.is_positive(l));
        self.scores.push(p.score);
        self.clusters.push(cluster_of(p));
        true
    }

    /// The 95% CI of the AUC, DeLong's clustered by patient (`None`s
    /// where it is undefined).
    fn clustered_ci(&self) -> (Option<f64>, Option<f64>) {
        let d = clustered_delong(&self.labels, &self.scores, &self.clusters)
            .ok()
            .flatten();
        (d.map(|d| d.ci(0.95).0), d.map(|d| d.ci(0.95).1))
    }

    fn distinct_clusters(&self) -> usize {
        self.clusters.iter().collect::<HashSet<_>>().len()
    }
}

/// How the pooled AUC's CI is computed, as `report.json` names it.
pub const POOLED_CI_METHOD: &str = "delong-clustered-by-patient";

/// The cluster a pooled prediction belongs to: its patient, or its image
/// when the manifest names no patient.
fn cluster_of(p: &ScoredImage) -> String {
    if p.patient.is_empty() {
        format!("image {}", p.image)
    } else {
        format!("patient {}", p.patient)
    }
}

/// The experiment's summary document from its jobs' results; `repeats`
/// (from [`repeats_of`]) gives each round's repeat.
pub fn summarize(
    results: &[JobResult],
    plan_sha256: &str,
    dataset_sha256: &str,
    repeats: &BTreeMap<(String, u32), u32>,
) -> Value {
    let mut by_task: BTreeMap<&str, Vec<&JobResult>> = BTreeMap::new();
    for r in results {
        by_task.entry(&r.task).or_default().push(r);
    }
    let mut tasks = Map::new();
    for (task, mut rounds) in by_task {
        rounds.sort_by_key(|r| r.round);
        let rows: Vec<Value> = rounds
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r.stats).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("round".into(), r.round.into());
                    o.insert("n".into(), (r.stats.n_pos + r.stats.n_neg).into());
                    o.insert("attempt".into(), r.attempt.into());
                    o.insert("worker_id".into(), r.worker_id.clone().into());
                    if !r.provenance.is_null() {
                        o.insert("provenance".into(), r.provenance.clone());
                    }
                    if !r.warnings.is_empty() {
                        o.insert("warnings".into(), r.warnings.clone().into());
                    }
                    if let Some(t) = &r.timing {
                        o.insert(
                            "timing".into(),
                            serde_json::to_value(t).unwrap_or(Value::Null),
                        );
                    }
                    if let (Some(th), Ok(kind)) = (r.youden_threshold, task.parse::<Task>()) {
                        o.insert("youden_threshold".into(), th.into());
                        // Clamped as the worker clamps it for its own
                        // predictions: a threshold outside [0, 1] is refused.
                        if let Ok(at) = round_stats(kind, &r.predictions, th.clamp(0.0, 1.0)) {
                            o.insert(
                                "at_youden".into(),
                                serde_json::to_value(at).unwrap_or(Value::Null),
                            );
                        }
                    }
                }
                v
            })
            .collect();
        // The summarised metrics, and the test-set size per round.
        let keys: Vec<&str> = SUMMARY_KEYS.iter().copied().chain(["n"]).collect();
        let summary = summary_of(rows.iter(), &keys);
        let task_kind: Option<Task> = task.parse().ok();
        let pooled = task_kind.and_then(|t| pooled_of(t, &rounds));
        let mut entry = json!({"rounds": rows, "summary": summary, "sd": "sample standard deviation (n - 1)", "pooled": pooled});
        // The same at each round's validation-chosen threshold (the AUC
        // does not depend on it), over the rounds that have one.
        if rows.iter().any(|r| r.get("at_youden").is_some()) {
            let at = rows
                .iter()
                .map(|r| r.get("at_youden").unwrap_or(&Value::Null));
            let s = summary_of(at, &SUMMARY_KEYS[..5]);
            if let Some(o) = entry.as_object_mut() {
                o.insert("summary_at_youden".into(), Value::Object(s));
            }
        }
        // With repeats, each repeat's own pooled AUC: every image as often
        // as one repeat tests it (once in k-fold, 4 times in the 2-of-5
        // design).
        let mut by_repeat: BTreeMap<u32, Vec<&JobResult>> = BTreeMap::new();
        for r in &rounds {
            let repeat = repeats
                .get(&(task.to_string(), r.round))
                .copied()
                .unwrap_or(1);
            by_repeat.entry(repeat).or_default().push(r);
        }
        if let (Some(t), Some(o), true) = (task_kind, entry.as_object_mut(), by_repeat.len() > 1) {
            let per: Vec<Value> = by_repeat
                .iter()
                .filter_map(|(repeat, rs)| {
                    let mut v = pooled_of(t, rs)?;
                    let o = v.as_object_mut()?;
                    o.insert("repeat".into(), (*repeat).into());
                    o.insert("rounds".into(), rs.len().into());
                    Some(v)
                })
                .collect();
            o.insert("pooled_by_repeat".into(), per.into());
        }
        if let (Some(t), Some(o)) = (task_kind, entry.as_object_mut()) {
            let mut breakdowns = Map::new();
            for (field, get) in [
                (
                    "site",
                    (|p: &ScoredImage| p.site.as_str()) as fn(&ScoredImage) -> &str,
                ),
                ("subtype", |p: &ScoredImage| p.subtype.as_str()),
            ] {
                if let Some(rows) = breakdown(t, &rounds, get) {
                    breakdowns.insert(field.into(), rows);
                }
            }
            if !breakdowns.is_empty() {
                o.insert("breakdowns".into(), Value::Object(breakdowns));
            }
        }
        tasks.insert(task.to_string(), entry);
    }
    json!({"plan_sha256": plan_sha256, "dataset_sha256": dataset_sha256, "tasks": tasks})
}

/// Mean, SD (n - 1), min and max of each of `keys` over `rounds` (a round
/// without a value is left out and `n` says how many had one).
fn summary_of<'a>(
    rounds: impl Iterator<Item = &'a Value> + Clone,
    keys: &[&str],
) -> Map<String, Value> {
    let mut summary = Map::new();
    for m in keys {
        let values: Vec<Option<f64>> = rounds
            .clone()
            .map(|r| r.get(m).and_then(Value::as_f64))
            .collect();
        if let Some(s) = summarize_optional(&values) {
            summary.insert(
                m.to_string(),
                json!({"mean": s.mean, "sd": s.sd, "min": s.min, "max": s.max, "n": s.n}),
            );
        }
    }
    summary
}

/// The pooled out-of-fold predictions of a task split by one manifest
/// column (site or subtype), each group with its confusion counts at the
/// rounds' threshold, sensitivity, specificity and AUC (where both classes
/// occur), its CI clustered by patient as the pooled AUC's is (an image
/// tested in several rounds is one case, not several). `None` when no
/// prediction has a value in that column.
fn breakdown(task: Task, rounds: &[&JobResult], get: fn(&ScoredImage) -> &str) -> Option<Value> {
    let threshold = rounds.first()?.stats.threshold;
    let mut groups: BTreeMap<&str, Cases> = BTreeMap::new();
    let mut any = false;
    for p in rounds.iter().flat_map(|r| &r.predictions) {
        let key = get(p);
        if groups.entry(key).or_default().push(task, p) {
            any |= !key.is_empty();
        }
    }
    if !any {
        return None;
    }
    let rows = groups
        .into_iter()
        .filter_map(|(value, cases)| {
            let mut s = RoundStats::compute(&cases.labels, &cases.scores, threshold).ok()?;
            (s.auc_ci_low, s.auc_ci_high) = cases.clustered_ci();
            s.auc_ci_method = POOLED_CI_METHOD.into();
            let mut v = serde_json::to_value(&s).ok()?;
            let o = v.as_object_mut()?;
            o.insert("value".into(), value.into());
            o.insert("n".into(), cases.labels.len().into());
            o.insert("clusters".into(), cases.distinct_clusters().into());
            Some(v)
        })
        .collect();
    Some(Value::Array(rows))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A screening round's result with these (label, score) predictions.
    pub(crate) fn result(round: u32, preds: &[(&str, f64)]) -> JobResult {
        let predictions: Vec<ScoredImage> = preds
            .iter()
            .enumerate()
            .map(|(i, (l, s))| ScoredImage {
                image: format!("{round}-{i}.png"),
                patient: format!("p{round}-{i}"),
                label: l.to_string(),
                score: *s,
                site: String::new(),
                subtype: String::new(),
            })
            .collect();
        let stats = round_stats(Task::Screening, &predictions, 0.5).unwrap();
        JobResult {
            task: "screening".into(),
            round,
            attempt: 1,
            worker_id: "w".into(),
            predictions,
            history: Value::Null,
            stats,
            provenance: Value::Null,
            youden_threshold: None,
            warnings: Vec::new(),
            timing: None,
        }
    }

    #[test]
    fn summary_by_hand() {
        // Round 1: all correct (accuracy 1); round 2: one of four wrong (0.75).
        let r1 = result(
            1,
            &[
                ("normal", 0.1),
                ("benign", 0.9),
                ("malignant", 0.8),
                ("normal", 0.2),
            ],
        );
        let r2 = result(
            2,
            &[
                ("normal", 0.6),
                ("benign", 0.9),
                ("malignant", 0.8),
                ("normal", 0.2),
            ],
        );
        let v = summarize(&[r2, r1], "p", "d", &BTreeMap::new());
        let acc = &v["tasks"]["screening"]["summary"]["accuracy"];
        assert!((acc["mean"].as_f64().unwrap() - 0.875).abs() < 1e-12);
        // Sample SD of (1, 0.75) = 0.25 / sqrt(2).
        assert!((acc["sd"].as_f64().unwrap() - 0.25 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(v["tasks"]["screening"]["rounds"][0]["round"], 1);
        assert_eq!(v["tasks"]["screening"]["pooled"]["n"], 8);
        // Pooled: positives 0.9 0.8 0.9 0.8; negatives 0.1 0.2 0.6 0.2: AUC 1.
        assert_eq!(v["tasks"]["screening"]["pooled"]["auc"], 1.0);
    }

    /// A round of the same six images (and patients), at `site`, with the
    /// same scores whatever the round: as in the 2-of-5 design, where each
    /// image is tested in 4 of 10 rounds.
    fn six_images(round: u32, site: &str) -> JobResult {
        let preds = [
            ("normal", 0.1),
            ("normal", 0.4),
            ("normal", 0.7),
            ("benign", 0.3),
            ("benign", 0.6),
            ("malignant", 0.9),
        ];
        let mut r = result(round, &preds);
        for (i, p) in r.predictions.iter_mut().enumerate() {
            p.image = format!("{i}.png");
            p.patient = format!("p{i}");
            p.site = site.into();
        }
        r
    }

    #[test]
    fn the_pooled_ci_counts_an_image_tested_twice_as_one_case() {
        let same_images = |round| six_images(round, "");
        let twice = summarize(
            &[same_images(1), same_images(2)],
            "p",
            "d",
            &BTreeMap::new(),
        );
        let once = summarize(&[same_images(1)], "p", "d", &BTreeMap::new());
        let (p2, p1) = (
            &twice["tasks"]["screening"]["pooled"],
            &once["tasks"]["screening"]["pooled"],
        );
        assert_eq!(
            (&p2["n"], &p2["images"], &p2["clusters"]),
            (&json!(12), &json!(6), &json!(6))
        );
        assert_eq!(p2["auc_ci_method"], POOLED_CI_METHOD);
        // The same interval as the six images tested once: not narrower.
        for end in ["auc_ci_low", "auc_ci_high"] {
            let (a, b) = (p2[end].as_f64().unwrap(), p1[end].as_f64().unwrap());
            assert!((a - b).abs() < 1e-12, "{end}: {a} vs {b}");
        }
        assert!(p1["auc_ci_low"].as_f64().unwrap() > 0.0);
        // Two images of one patient are one cluster.
        let mut r = same_images(1);
        r.predictions[1].patient = "p0".into();
        let v = summarize(&[r], "p", "d", &BTreeMap::new());
        assert_eq!(v["tasks"]["screening"]["pooled"]["clusters"], 5);
    }

    #[test]
    fn a_breakdowns_ci_counts_an_image_tested_twice_as_one_case() {
        let at_one_site = |round| six_images(round, "femur");
        let site = |v: &Value| v["tasks"]["screening"]["breakdowns"]["site"][0].clone();
        let once = site(&summarize(&[at_one_site(1)], "p", "d", &BTreeMap::new()));
        let twice = site(&summarize(
            &[at_one_site(1), at_one_site(2)],
            "p",
            "d",
            &BTreeMap::new(),
        ));
        assert_eq!((&twice["n"], &twice["clusters"]), (&json!(12), &json!(6)));
        assert_eq!(twice["auc_ci_method"], POOLED_CI_METHOD);
        // Tested once, the clustered interval is plain DeLong's (each image
        // its own cluster); tested twice, the same interval, not narrower.
        let plain = RoundStats::compute(
            &[false, false, false, true, true, true],
            &[0.1, 0.4, 0.7, 0.3, 0.6, 0.9],
            0.5,
        )
        .unwrap();
        let low = once["auc_ci_low"].as_f64().unwrap();
        assert!((low - plain.auc_ci_low.unwrap()).abs() < 1e-12);
        assert!(low > 0.0);
        for end in ["auc_ci_low", "auc_ci_high"] {
            let (a, b) = (twice[end].as_f64().unwrap(), once[end].as_f64().unwrap());
            assert!((a - b).abs() < 1e-12, "{end}: {a} vs {b}");
        }
    }

    #[test]
    fn with_repeats_each_repeat_gets_its_own_pooled_auc() {
        // The same two images tested once per repeat: repeat 1 ranks them
        // right (AUC 1), repeat 2 wrong (AUC 0); pooled over both, each
        // image counts twice.
        let r1 = result(1, &[("normal", 0.2), ("benign", 0.8)]);
        let r2 = result(2, &[("normal", 0.9), ("benign", 0.1)]);
        let repeats = repeats_of(
            r#"{"tasks": {"screening": [{"round": 1, "repeat": 1}, {"round": 2, "repeat": 2}]}}"#,
        );
        let v = summarize(&[r1.clone(), r2.clone()], "p", "d", &repeats);
        let t = &v["tasks"]["screening"];
        assert_eq!(t["pooled"]["n"], 4);
        let per = t["pooled_by_repeat"].as_array().unwrap();
        assert_eq!(per.len(), 2);
        assert_eq!(
            (&per[0]["repeat"], &per[0]["n"], &per[0]["auc"]),
            (&json!(1), &json!(2), &json!(1.0))
        );
        assert_eq!(
            (&per[1]["repeat"], &per[1]["auc"]),
            (&json!(2), &json!(0.0))
        );
        assert_eq!(per[1]["rounds"], 1);
        // One repeat: nothing more than the pooled AUC.
        let v = summarize(&[r1, r2], "p", "d", &BTreeMap::new());
        assert!(v["tasks"]["screening"].get("pooled_by_repeat").is_none());
    }

    #[test]
    fn rounds_show_the_validation_chosen_threshold_and_its_statistics() {
        // At 0.5 the normal image scored 0.6 is a false positive; at the
        // validation-chosen 0.7 it is not, and every tumour is still found.
        let mut r = result(
            1,
            &[
                ("normal", 0.6),
                ("benign", 0.9),
                ("malignant", 0.8),
                ("normal", 0.2),
            ],
        );
        r.youden_threshold = Some(0.7);
        let mut warned = result(2, &[("normal", 0.1), ("benign", 0.9)]);
        warned.warnings = vec!["the validation set lacks a class".into()];
        let v = summarize(&[r, warned], "p", "d", &BTreeMap::new());
        let rounds = &v["tasks"]["screening"]["rounds"];
        assert!(rounds[0].get("warnings").is_none(), "none: none listed");
        assert_eq!(rounds[1]["warnings"][0], "the validation set lacks a class");
        assert_eq!(rounds[0]["youden_threshold"], 0.7);
        assert_eq!(rounds[0]["fp"], 1);
        let at = &rounds[0]["at_youden"];
        assert_eq!(
            (at["threshold"].as_f64(), at["fp"].as_u64()),
            (Some(0.7), Some(0))
        );
        assert_eq!(
            (at["tp"].as_u64(), at["accuracy"].as_f64()),
            (Some(2), Some(1.0))
        );
        // A round without a validation set has neither.
        assert!(rounds[1].get("youden_threshold").is_none());
        assert!(rounds[1].get("at_youden").is_none());
        // Summarised over the one round that has it: accuracy 4/4 there.
        let s = &v["tasks"]["screening"]["summary_at_youden"];
        assert_eq!(
            (s["accuracy"]["mean"].as_f64(), s["accuracy"]["n"].as_u64()),
            (Some(1.0), Some(1))
        );
        assert!(s.get("auc").is_none());
        // Without any, no such summary.
        let plain = summarize(&[result(1, &[("normal", 0.1)])], "p", "d", &BTreeMap::new());
        assert!(plain["tasks"]["screening"]
            .get("summary_at_youden")
            .is_none());
        // A threshold beyond 1 is taken as 1 (as the worker takes it), not
        // dropped.
        let mut above = result(1, &[("normal", 0.6), ("benign", 1.0)]);
        above.youden_threshold = Some(1.2);
        let v = summarize(&[above], "p", "d", &BTreeMap::new());
        let at = &v["tasks"]["screening"]["rounds"][0]["at_youden"];
        assert_eq!(
            (at["threshold"].as_f64(), at["tp"].as_u64()),
            (Some(1.0), Some(1))
        );
    }

    #[test]
    fn unknown_labels_are_reported() {
        let p = vec![ScoredImage {
            image: "x.png".into(),
            patient: "p".into(),
            label: "tumor".into(),
            score: 0.5,
            site: String::new(),
            subtype: String::new(),
        }];
        let err = round_stats(Task::Screening, &p, 0.5).unwrap_err();
        assert!(err.contains("x.png"), "{err}");
    }

    #[test]
    fn a_score_that_is_not_a_probability_is_refused_naming_the_image() {
        for bad in [-0.01, 1.5, 3.2] {
            let mut r = result(1, &[("normal", 0.2), ("benign", 0.5)]);
            r.predictions[1].score = bad;
            let err = round_stats(Task::Screening, &r.predictions, 0.5).unwrap_err();
            assert!(err.contains("1-1.png") && err.contains("[0, 1]"), "{err}");
        }
        let ends = result(1, &[("normal", 0.0), ("benign", 1.0)]);
        assert!(round_stats(Task::Screening, &ends.predictions, 0.5).is_ok());
    }

    #[test]
    fn predictions_must_be_the_rounds_test_set() {
        let plan = r#"{"tasks": {"screening": [
            {"round": 1, "test": ["a.png", "b.png", "c.png"]},
            {"round": 2, "test": ["d.png"]}]}}"#;
        let scored = |images: &[&str]| -> Vec<ScoredImage> {
            let mut r = result(1, &vec![("normal", 0.5); images.len()]);
            for (p, image) in r.predictions.iter_mut().zip(images) {
                p.image = image.to_string();
            }
            r.predictions
        };
        let check = |task: &str, round, images: &[&str]| {
            test_set_mismatch(plan, task, round, &scored(images))
        };
        // In any order, each once: fine.
        assert_eq!(
            check("screening", 1, &["c.png", "a.png", "b.png"]),
            Ok(None)
        );
        let why = check("screening", 1, &["a.png", "a.png", "x.png"])
            .unwrap()
            .unwrap();
        assert_eq!(
            why,
            "the predictions are not screening round 1's test set of 3 images: \
             2 missing (first: b.png); 1 not in it (first: x.png); 1 scored twice (first: a.png)"
        );
        // Another round's images.
        let why = check("screening", 2, &["a.png"]).unwrap().unwrap();
        assert!(
            why.contains("1 missing (first: d.png); 1 not in it (first: a.png)"),
            "{why}"
        );
        // A plan that cannot say is not the result's fault.
        assert!(check("screening", 3, &["a.png"]).is_err());
        assert!(check("malignancy", 1, &["a.png"]).is_err());
        assert!(test_set_mismatch("not json", "screening", 1, &[]).is_err());
    }
}
