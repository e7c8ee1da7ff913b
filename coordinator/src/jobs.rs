//! Turning an experiment into jobs: one job per (task, round) of the split
//! plan, in a stable order (tasks in plan order, rounds ascending). Workers
//! are offered them by task name, then round (`scheduler::pick`).

use crossfold_shared::folds::SplitPlan;
use crossfold_shared::label::Task;
use serde::{Deserialize, Serialize};

/// What one job has to do: train on a round's training images and score its
/// test images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Stable within an experiment: `<task>-r<round>`, e.g. `malignancy-r07`.
    pub key: String,
    pub task: Task,
    pub round: u32,
    pub repeat: u32,
    pub n_train: usize,
    pub n_test: usize,
}

/// Every job of a split plan.
pub fn plan_jobs(plan: &SplitPlan) -> Vec<JobSpec> {
    plan.tasks
        .iter()
        .flat_map(|(task, rounds)| {
            rounds.iter().map(move |r| JobSpec {
                key: format!("{}-r{:02}", task, r.round),
                task: *task,
                round: r.round,
                repeat: r.repeat,
                n_train: r.train.len(),
                n_test: r.test.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_shared::folds::make_plan;
    use crossfold_shared::label::Label;
    use crossfold_shared::manifest::{Entry, Manifest};
    use crossfold_shared::spec::ProtocolSpec;

    #[test]
    fn paper_protocol_gives_15_jobs_with_unique_keys() {
        let mut entries = Vec::new();
        for (label, n) in [
            (Label::Normal, 26),
            (Label::Benign, 8),
            (Label::Malignant, 18),
        ] {
            for i in 0..n {
                entries.push(Entry::new(
                    format!("{label}{i}.png"),
                    label,
                    format!("{label}{i}"),
                ));
            }
        }
        let m = Manifest {
            root: ".".into(),
            entries,
        };
        let plan = make_plan(&m, &ProtocolSpec::default()).unwrap();
        let jobs = plan_jobs(&plan);
        assert_eq!(jobs.len(), 15);
        assert_eq!(jobs.iter().filter(|j| j.task == Task::Screening).count(), 5);
        assert_eq!(jobs[5].key, "malignancy-r01");
        let mut keys: Vec<_> = jobs.iter().map(|j| &j.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 15);
        assert!(jobs.iter().all(|j| j.n_test > 0 && j.n_train > 0));
    }
}
