//! The split plan: groups, and per task the rounds' train and test images.

use super::{assign_groups, FoldsError};
use crate::hash::sha256_hex;
use crate::label::Task;
use crate::manifest::Manifest;
use crate::spec::{ProtocolKind, ProtocolSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const PLAN_VERSION: u32 = 1;

/// One train/test round of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// 1-based, unique within the task.
    pub round: u32,
    /// 1-based repetition this round belongs to.
    pub repeat: u32,
    /// 0-based indices of the groups that form the test set.
    pub test_groups: Vec<usize>,
    /// Manifest paths, in canonical order (patient id, then path).
    pub train: Vec<String>,
    pub test: Vec<String>,
}

/// The groups of one repetition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    pub repeat: u32,
    pub seed: u64,
    pub groups: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub plan_sha256: String,
    pub version: u32,
    pub protocol: ProtocolSpec,
    /// Groups of the first repetition (manifest paths, in canonical order:
    /// patient id, then path).
    pub groups: Vec<Vec<String>>,
    /// Every repetition's groups (the first equals `groups`).
    pub repeats: Vec<Repeat>,
    pub tasks: BTreeMap<Task, Vec<Round>>,
}

#[derive(Serialize)]
struct HashedPart<'a> {
    version: u32,
    protocol: &'a ProtocolSpec,
    groups: &'a Vec<Vec<String>>,
    repeats: &'a Vec<Repeat>,
    tasks: &'a BTreeMap<Task, Vec<Round>>,
}

impl SplitPlan {
    /// SHA-256 (hex) of the compact JSON of every field but `plan_sha256`.
    pub fn compute_hash(&self) -> String {
        let part = HashedPart {
            version: self.version,
            protocol: &self.protocol,
            groups: &self.groups,
            repeats: &self.repeats,
            tasks: &self.tasks,
        };
        sha256_hex(&serde_json::to_vec(&part).unwrap_or_default())
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Read a plan document and check its hash and that no patient is on both
    /// sides of any round.
    pub fn from_json(text: &str, manifest: &Manifest) -> Result<SplitPlan, FoldsError> {
        let plan: SplitPlan =
            serde_json::from_str(text).map_err(|e| FoldsError::Json(e.to_string()))?;
        if plan.version != PLAN_VERSION {
            return Err(FoldsError::Version(plan.version));
        }
        let actual = plan.compute_hash();
        if actual != plan.plan_sha256 {
            return Err(FoldsError::HashMismatch {
                stated: plan.plan_sha256.clone(),
                actual,
            });
        }
        plan.verify(manifest)?;
        Ok(plan)
    }

    /// Refuse a plan that is not the one its own `protocol` gives on
    /// `manifest`. Plans are deterministic, so this finds any edit, even
    /// one whose hash was made again, and a manifest that changed since.
    /// Only the order of paths within a list is free: plans written before
    /// lists were put in canonical order listed them in manifest order.
    pub fn check_rebuilt(&self, manifest: &Manifest) -> Result<(), FoldsError> {
        // The protocol block is as untrusted as the rest of the file: a
        // bad one is named before anything is built from it.
        let problems = crate::spec::protocol_problems(&self.protocol);
        if !problems.is_empty() {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(FoldsError::NotRebuilt(format!(
                "its protocol block is not valid ({})",
                listed.join("; ")
            )));
        }
        let rebuilt = make_plan(manifest, &self.protocol).map_err(|e| {
            FoldsError::NotRebuilt(format!("this build would not make a plan from it ({e})"))
        })?;
        let (mine, theirs) = (self.sorted(), rebuilt.sorted());
        if mine.compute_hash() == theirs.compute_hash() {
            return Ok(());
        }
        Err(FoldsError::NotRebuilt(first_difference(&mine, &theirs)))
    }

    /// This plan with every list of paths sorted.
    fn sorted(&self) -> SplitPlan {
        let mut plan = self.clone();
        for g in plan.groups.iter_mut() {
            g.sort();
        }
        for r in plan.repeats.iter_mut() {
            for g in r.groups.iter_mut() {
                g.sort();
            }
        }
        for rounds in plan.tasks.values_mut() {
            for r in rounds.iter_mut() {
                r.train.sort();
                r.test.sort();
            }
        }
        plan
    }

    /// Refuse a plan that names images missing from the manifest or puts one
    /// patient on both sides of a round.
    pub fn verify(&self, manifest: &Manifest) -> Result<(), FoldsError> {
        let patient: HashMap<&str, &str> = manifest
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.patient_id.as_str()))
            .collect();
        for (task, rounds) in &self.tasks {
            for r in rounds {
                let lookup = |path: &String| {
                    patient
                        .get(path.as_str())
                        .copied()
                        .ok_or_else(|| FoldsError::UnknownImage {
                            task: task.to_string(),
                            round: r.round,
                            path: path.clone(),
                        })
                };
                let train: BTreeSet<&str> = r.train.iter().map(lookup).collect::<Result<_, _>>()?;
                for path in &r.test {
                    let p = lookup(path)?;
                    if train.contains(p) {
                        return Err(FoldsError::Leak {
                            task: task.to_string(),
                            round: r.round,
                            patient: p.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The rounds of a task, or an empty slice.
    pub fn rounds(&self, task: Task) -> &[Round] {
        self.tasks.get(&task).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Every choice of `p` of `0..k`, in lexicographic order.
pub fn combinations(k: usize, p: usize) -> Vec<Vec<usize>> {
    fn rec(start: usize, k: usize, p: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == p {
            out.push(cur.clone());
            return;
        }
        for i in start..k {
            cur.push(i);
            rec(i + 1, k, p, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    if p <= k {
        rec(0, k, p, &mut Vec::with_capacity(p), &mut out);
    }
    out
}

/// Build the split plan of a protocol on a manifest.
impl SplitPlan {
    /// Rounds whose test set holds one class only: their AUC, and
    /// sensitivity or specificity, are undefined, and summaries across
    /// rounds leave them out. One line per round, for `plan` and `run`.
    pub fn warnings(&self, manifest: &Manifest) -> Vec<String> {
        let labels: HashMap<&str, crate::label::Label> = manifest
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.label))
            .collect();
        let mut out = Vec::new();
        for (task, rounds) in &self.tasks {
            let (negative, positive) = task.class_names();
            for r in rounds {
                let positives = r
                    .test
                    .iter()
                    .filter(|p| labels.get(p.as_str()).is_some_and(|&l| task.is_positive(l)))
                    .count();
                let missing = match positives {
                    0 => positive,
                    n if n == r.test.len() => negative,
                    _ => continue,
                };
                out.push(format!(
                    "task {task}, round {}: the test set has no {missing} image, so its AUC \
                     and {} are undefined and summaries across rounds leave them out",
                    r.round,
                    if missing == positive {
                        "sensitivity"
                    } else {
                        "specificity"
                    }
                ));
            }
        }
        out
    }
}

/// Where `plan` first differs from `rebuilt`, in words.
fn first_difference(plan: &SplitPlan, rebuilt: &SplitPlan) -> String {
    let tasks = |p: &SplitPlan| p.tasks.keys().map(Task::to_string).collect::<Vec<_>>();
    if tasks(plan) != tasks(rebuilt) {
        return format!(
            "it has task(s) [{}] where its protocol gives [{}]",
            tasks(plan).join(", "),
            tasks(rebuilt).join(", ")
        );
    }
    for (a, b) in plan.repeats.iter().zip(&rebuilt.repeats) {
        if a.seed != b.seed {
            return format!(
                "repeat {}: split seed {} where its protocol gives {}",
                a.repeat, a.seed, b.seed
            );
        }
        if a != b {
            return format!("repeat {}: its groups differ", a.repeat);
        }
    }
    if plan.repeats.len() != rebuilt.repeats.len() || plan.groups != rebuilt.groups {
        return "its groups differ".into();
    }
    for (task, rounds) in &plan.tasks {
        let theirs = &rebuilt.tasks[task];
        if rounds.len() != theirs.len() {
            return format!(
                "task {task}: {} round(s) where its protocol gives {}",
                rounds.len(),
                theirs.len()
            );
        }
        for (a, b) in rounds.iter().zip(theirs) {
            let at = format!("task {task}, round {}", a.round);
            let differ = |side: &str, mine: &[String], want: &[String]| {
                let mine_set: BTreeSet<&String> = mine.iter().collect();
                let want_set: BTreeSet<&String> = want.iter().collect();
                let extra = mine_set.difference(&want_set).next();
                let missing = want_set.difference(&mine_set).next();
                match (extra, missing) {
                    (Some(p), _) => format!(
                        "{at}: {p} is in the {side} set, where its protocol does not put it"
                    ),
                    (None, Some(p)) => format!("{at}: {p} is missing from the {side} set"),
                    (None, None) => format!("{at}: the {side} set lists an image twice"),
                }
            };
            if a.test != b.test {
                return differ("test", &a.test, &b.test);
            }
            if a.train != b.train {
                return differ("training", &a.train, &b.train);
            }
            if a != b {
                return format!("{at}: its round number, repeat or test groups differ");
            }
        }
    }
    "it differs".into()
}

pub fn make_plan(manifest: &Manifest, protocol: &ProtocolSpec) -> Result<SplitPlan, FoldsError> {
    let k = protocol.groups;
    // Canonical order: a manifest whose rows were reordered is the same
    // data set (its fingerprint ignores order), so it gives the same plan,
    // hash and training order.
    let mut entries = manifest.entries.clone();
    entries.sort_by(|a, b| (&a.patient_id, &a.path).cmp(&(&b.patient_id, &b.path)));
    let mut repeats = Vec::new();
    let mut tasks: BTreeMap<Task, Vec<Round>> = BTreeMap::new();
    for r in 0..protocol.repeats.max(1) {
        let seed = protocol.seed.wrapping_add(r as u64);
        let assignment = assign_groups(&entries, k, seed)?;
        let mut groups = vec![Vec::new(); k];
        for (e, &g) in entries.iter().zip(&assignment) {
            groups[g].push(e.path.clone());
        }
        for &task in &protocol.tasks {
            // A class absent from the data set: no choice of groups helps.
            let (negative, positive) = task.class_names();
            let in_task = entries.iter().filter(|e| task.includes(e.label));
            let positives = in_task
                .clone()
                .filter(|e| task.is_positive(e.label))
                .count();
            let class = match (positives, in_task.count() - positives) {
                (0, _) => Some(positive),
                (_, 0) => Some(negative),
                _ => None,
            };
            if let Some(class) = class {
                return Err(FoldsError::ClassMissing {
                    task: task.to_string(),
                    class,
                    negative,
                    positive,
                });
            }
            let test_sets = match (protocol.kind, task) {
                (ProtocolKind::Kfold, _) | (ProtocolKind::Paper, Task::Screening) => {
                    combinations(k, 1)
                }
                (ProtocolKind::LeavePGroupsOut, _) | (ProtocolKind::Paper, Task::Malignancy) => {
                    combinations(k, protocol.test_groups)
                }
            };
            let rounds = tasks.entry(task).or_default();
            for test_groups in test_sets {
                let number = rounds.len() as u32 + 1;
                let (mut train, mut test) = (Vec::new(), Vec::new());
                let mut train_positives = 0;
                for (e, g) in entries.iter().zip(&assignment) {
                    if task.includes(e.label) {
                        if test_groups.contains(g) {
                            test.push(e.path.clone());
                        } else {
                            train.push(e.path.clone());
                            train_positives += usize::from(task.is_positive(e.label));
                        }
                    }
                }
                for (side, set) in [("training", &train), ("test", &test)] {
                    if set.is_empty() {
                        return Err(FoldsError::EmptySide {
                            task: task.to_string(),
                            round: number,
                            side,
                            groups: k,
                        });
                    }
                }
                let (negative, positive) = task.class_names();
                let missing = match train_positives {
                    0 => Some(positive),
                    n if n == train.len() => Some(negative),
                    _ => None,
                };
                if let (Some(missing), false) = (missing, train.is_empty()) {
                    return Err(FoldsError::OneClassTraining {
                        task: task.to_string(),
                        round: number,
                        missing,
                        groups: k,
                    });
                }
                rounds.push(Round {
                    round: number,
                    repeat: r as u32 + 1,
                    test_groups,
                    train,
                    test,
                });
            }
        }
        repeats.push(Repeat {
            repeat: r as u32 + 1,
            seed,
            groups,
        });
    }
    let mut plan = SplitPlan {
        plan_sha256: String::new(),
        version: PLAN_VERSION,
        protocol: protocol.clone(),
        groups: repeats
            .first()
            .map(|r| r.groups.clone())
            .unwrap_or_default(),
        repeats,
        tasks,
    };
    plan.verify(manifest)?;
    plan.plan_sha256 = plan.compute_hash();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Label;
    use crate::manifest::Entry;
    use std::path::PathBuf;

    /// `n` images of each label, one patient each, in the order given.
    fn cohort_of(counts: &[(Label, usize)]) -> Manifest {
        let mut entries = Vec::new();
        for &(label, n) in counts {
            for i in 0..n {
                entries.push(Entry::new(
                    format!("{label}/{i}.png"),
                    label,
                    format!("{label}{i}"),
                ));
            }
        }
        Manifest {
            root: PathBuf::from("."),
            entries,
        }
    }

    fn paper_cohort() -> Manifest {
        cohort_of(&[
            (Label::Normal, 260),
            (Label::Malignant, 180),
            (Label::Benign, 80),
        ])
    }

    fn cohort(normal: usize, benign: usize, malignant: usize) -> Manifest {
        cohort_of(&[
            (Label::Normal, normal),
            (Label::Benign, benign),
            (Label::Malignant, malignant),
        ])
    }

    #[test]
    fn a_round_that_would_train_on_one_class_is_refused_by_name() {
        let protocol = ProtocolSpec {
            groups: 2,
            test_groups: 1,
            ..ProtocolSpec::default()
        };
        // One benign patient: the round that tests it has none to train on.
        let err = make_plan(&cohort(6, 1, 5), &protocol).unwrap_err();
        assert!(
            matches!(&err, FoldsError::OneClassTraining { task, missing: "benign", groups: 2, .. } if task == "malignancy"),
            "{err}"
        );
        assert!(err.to_string().contains("no benign image"), "{err}");
    }

    #[test]
    fn rounds_testing_one_class_are_named_in_the_warnings() {
        let protocol = ProtocolSpec {
            groups: 8,
            test_groups: 1,
            ..ProtocolSpec::default()
        };
        // 6 benign patients over 8 groups: some malignancy test sets have none.
        let m = cohort(16, 6, 10);
        let plan = make_plan(&m, &protocol).unwrap();
        let warnings = plan.warnings(&m);
        assert!(!warnings.is_empty());
        for w in &warnings {
            assert!(w.starts_with("task malignancy, round "), "{w}");
            assert!(
                w.contains("no benign image") && w.contains("specificity"),
                "{w}"
            );
        }
        // The paper's cohort and design: none.
        let paper = paper_cohort();
        let plan = make_plan(&paper, &ProtocolSpec::default()).unwrap();
        assert!(plan.warnings(&paper).is_empty());
    }

    #[test]
    fn combinations_are_lexicographic() {
        let c = combinations(5, 2);
        assert_eq!(c.len(), 10);
        assert_eq!(c[0], vec![0, 1]);
        assert_eq!(c[4], vec![1, 2]);
        assert_eq!(c[9], vec![3, 4]);
        assert_eq!(combinations(4, 1), vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn paper_protocol_matches_the_papers_split() {
        let m = paper_cohort();
        let plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        let screening = plan.rounds(Task::Screening);
        assert_eq!(screening.len(), 5);
        for r in screening {
            assert_eq!((r.train.len(), r.test.len()), (416, 104));
        }
        let malignancy = plan.rounds(Task::Malignancy);
        assert_eq!(malignancy.len(), 10);
        let label = |p: &String| m.entries.iter().find(|e| &e.path == p).unwrap().label;
        for r in malignancy {
            assert_eq!((r.train.len(), r.test.len()), (156, 104));
            let malignant = r
                .test
                .iter()
                .filter(|p| label(p) == Label::Malignant)
                .count();
            assert_eq!((malignant, r.test.len() - malignant), (72, 32));
            assert!(r
                .train
                .iter()
                .chain(&r.test)
                .all(|p| label(p) != Label::Normal));
        }
        // Every tumour image is tested in exactly 4 of the 10 rounds.
        let mut tested: BTreeMap<&String, usize> = BTreeMap::new();
        for r in malignancy {
            for p in &r.test {
                *tested.entry(p).or_default() += 1;
            }
        }
        assert_eq!(tested.len(), 260);
        assert!(tested.values().all(|&n| n == 4));
        // Every image is tested exactly once in screening.
        let all: BTreeSet<&String> = screening.iter().flat_map(|r| &r.test).collect();
        assert_eq!(all.len(), 520);
    }

    #[test]
    fn plan_hash_is_stable_and_checked() {
        let m = paper_cohort();
        let plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        assert_eq!(
            plan.plan_sha256,
            make_plan(&m, &ProtocolSpec::default()).unwrap().plan_sha256
        );
        let json = plan.to_json_pretty();
        let back = SplitPlan::from_json(&json, &m).unwrap();
        assert_eq!(back, plan);
        let tampered = json.replacen("\"round\": 1", "\"round\": 99", 1);
        assert!(matches!(
            SplitPlan::from_json(&tampered, &m),
            Err(FoldsError::HashMismatch { .. })
        ));
    }

    #[test]
    fn an_edited_plan_with_its_hash_made_again_is_found_by_rebuilding_it() {
        let m = paper_cohort();
        let plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        plan.check_rebuilt(&m).unwrap();
        let rehash = |mut p: SplitPlan| {
            p.plan_sha256 = p.compute_hash();
            SplitPlan::from_json(&p.to_json_pretty(), &m).expect("passes the hash and leak checks")
        };
        // One test image dropped: never tested.
        let mut dropped = plan.clone();
        let gone = dropped.tasks.get_mut(&Task::Screening).unwrap()[2]
            .test
            .remove(0);
        let err = rehash(dropped).check_rebuilt(&m).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "task screening, round 3: {gone} is missing from the test set"
            )),
            "{err}"
        );
        // A task left out.
        let mut one_task = plan.clone();
        one_task.tasks.remove(&Task::Malignancy);
        let err = rehash(one_task).check_rebuilt(&m).unwrap_err().to_string();
        assert!(
            err.contains("task(s) [screening] where its protocol gives [screening, malignancy]"),
            "{err}"
        );
        // The protocol block changed, the rounds kept.
        let mut reseeded = plan.clone();
        reseeded.protocol.seed += 1;
        let err = rehash(reseeded).check_rebuilt(&m).unwrap_err().to_string();
        assert!(
            err.contains("repeat 1: split seed 2021 where its protocol gives 2022"),
            "{err}"
        );
        assert!(err.contains("edited (and its hash made again)"), "{err}");
        // A protocol block that cannot be built from is named, not run.
        let mut broken = plan.clone();
        broken.protocol.groups = 0;
        let err = rehash(broken).check_rebuilt(&m).unwrap_err().to_string();
        assert!(
            err.contains("protocol.groups = 0: must be at least 2"),
            "{err}"
        );
        // The manifest's rows reordered: the same data set, the same plan.
        let mut shuffled = m.clone();
        shuffled.entries.reverse();
        plan.check_rebuilt(&shuffled).unwrap();
        // A plan written in manifest order (before lists were put in
        // canonical order) is still the plan its protocol gives.
        let mut old = plan.clone();
        for rounds in old.tasks.values_mut() {
            for r in rounds.iter_mut() {
                r.train.reverse();
                r.test.reverse();
            }
        }
        rehash(old).check_rebuilt(&m).unwrap();
    }

    #[test]
    fn a_reordered_manifest_gives_the_same_plan_and_hash() {
        let m = paper_cohort();
        let plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        let mut shuffled = m.clone();
        shuffled.entries.reverse();
        shuffled.entries.swap(3, 400);
        let again = make_plan(&shuffled, &ProtocolSpec::default()).unwrap();
        assert_eq!(again, plan);
        // Lists are in (patient id, path) order, whatever the rows' order.
        let by_patient: HashMap<&str, &str> = m
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.patient_id.as_str()))
            .collect();
        let key = |p: &String| (by_patient[p.as_str()], p.clone());
        for r in plan.rounds(Task::Screening) {
            assert!(r.train.windows(2).all(|w| key(&w[0]) < key(&w[1])));
            assert!(r.test.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        }
    }

    #[test]
    fn a_plan_with_a_patient_on_both_sides_is_refused() {
        let m = paper_cohort();
        let mut plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        let moved = plan.tasks.get(&Task::Screening).unwrap()[0].test[0].clone();
        plan.tasks.get_mut(&Task::Screening).unwrap()[0]
            .train
            .push(moved.clone());
        plan.plan_sha256 = plan.compute_hash();
        let err = SplitPlan::from_json(&plan.to_json_pretty(), &m).unwrap_err();
        assert!(matches!(err, FoldsError::Leak { round: 1, .. }), "{err}");
        // A second image of the same patient counts as the same patient.
        let mut m2 = m.clone();
        let mut twin = m2.entries[0].clone();
        twin.path = "normal/twin.png".into();
        m2.entries.push(twin);
        let plan = make_plan(&m2, &ProtocolSpec::default()).unwrap();
        for r in plan.rounds(Task::Screening) {
            let a = r.test.contains(&"normal/0.png".to_string());
            let b = r.test.contains(&"normal/twin.png".to_string());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn general_protocols_and_repeats() {
        let m = paper_cohort();
        let mut p = ProtocolSpec {
            kind: ProtocolKind::LeavePGroupsOut,
            groups: 6,
            test_groups: 3,
            repeats: 2,
            seed: 9,
            tasks: vec![Task::Screening],
        };
        let plan = make_plan(&m, &p).unwrap();
        assert_eq!(plan.rounds(Task::Screening).len(), 2 * 20);
        assert_eq!(plan.repeats.len(), 2);
        assert_eq!(plan.repeats[1].seed, 10);
        assert_eq!(plan.rounds(Task::Screening)[20].repeat, 2);
        assert_ne!(plan.repeats[0].groups, plan.repeats[1].groups);
        p.kind = ProtocolKind::Kfold;
        p.repeats = 1;
        p.tasks = vec![Task::Malignancy];
        let plan = make_plan(&m, &p).unwrap();
        assert_eq!(plan.rounds(Task::Malignancy).len(), 6);
        assert!(plan.rounds(Task::Screening).is_empty());
    }

    #[test]
    fn cohorts_too_small_for_a_task_are_refused() {
        let mut m = paper_cohort();
        m.entries
            .retain(|e| e.label == Label::Normal || e.path == "benign/0.png");
        // Screening: the round testing the one tumour has none to train on.
        let err = make_plan(&m, &ProtocolSpec::default()).unwrap_err();
        assert!(
            matches!(
                err,
                FoldsError::OneClassTraining {
                    missing: "tumour",
                    ..
                }
            ),
            "{err}"
        );
        // Malignancy: one benign image and no malignant one.
        let p = ProtocolSpec {
            tasks: vec![Task::Malignancy],
            ..ProtocolSpec::default()
        };
        let err = make_plan(&m, &p).unwrap_err();
        assert!(
            matches!(
                err,
                FoldsError::ClassMissing {
                    class: "malignant",
                    ..
                }
            ),
            "{err}"
        );
        // Two of each: one tumour image cannot fill both sides.
        let err = make_plan(&cohort(10, 1, 1), &p).unwrap_err();
        assert!(matches!(err, FoldsError::EmptySide { .. }), "{err}");
    }

    #[test]
    fn a_class_absent_from_the_data_set_names_the_task_to_leave_out() {
        let err = make_plan(&cohort(10, 0, 0), &ProtocolSpec::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol.tasks includes screening, but the data set has no tumour image: a \
             screening round needs both normal and tumour images; leave screening out of \
             protocol.tasks, or add tumour images"
        );
        let p = ProtocolSpec {
            tasks: vec![Task::Malignancy],
            ..ProtocolSpec::default()
        };
        let err = make_plan(&cohort(10, 0, 8), &p).unwrap_err();
        assert!(
            matches!(&err, FoldsError::ClassMissing { task, class: "benign", .. } if task == "malignancy"),
            "{err}"
        );
        // Screening alone needs no benign/malignant split.
        let screening = ProtocolSpec {
            tasks: vec![Task::Screening],
            ..ProtocolSpec::default()
        };
        assert!(make_plan(&cohort(10, 0, 8), &screening).is_ok());
    }
}
