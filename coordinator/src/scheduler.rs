//! Which pending job a free worker slot gets.
//!
//! Experiments are served in submission order with fair sharing: among the
//! experiments that have a job ready to run, the one with the fewest jobs
//! currently leased goes first (ties: the earlier submission); within it,
//! the first ready job by task and round number. Experiments whose spec asks for
//! `train.device = "cuda"` are served to GPU workers only. A job whose lease
//! expired while its worker may only be cut off (a lapsed lease, which that
//! worker can still take up) is served only when no other job is ready,
//! and never to that worker while one of its slots still runs the attempt
//! ([`Running`]): that slot takes it up again with its next heartbeat.

use crate::state::JobState;
use crate::store::{ExperimentRecord, JobRecord};
use crossfold_shared::spec::{Device, Spec};
use std::collections::{HashMap, HashSet};

/// The attempts a worker asking for a lease says its other slots run.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub worker_id: String,
    /// (experiment, job key, attempt).
    pub attempts: HashSet<(uuid::Uuid, String, u32)>,
    /// Since when the list may be out of date: a lease granted after it
    /// (while the request waited) is one the list cannot name.
    pub listed_at_ms: i64,
}

impl Running {
    /// Whether `job` waits for this worker: its lease lapsed while one of
    /// the worker's slots ran it, and that slot runs it still (or may: the
    /// lease came after the list was made).
    pub fn runs_lapsed(&self, job: &JobRecord) -> bool {
        let JobState::Pending(p) = &job.state else {
            return false;
        };
        p.lapsed.as_ref().is_some_and(|l| {
            l.worker_id == self.worker_id
                && (l.leased_at_ms >= self.listed_at_ms
                    || self
                        .attempts
                        .contains(&(job.experiment, job.key.clone(), l.attempt)))
        })
    }
}

/// Whether a worker (with or without a GPU) may run the experiment's jobs:
/// `train.device = "cuda"` (or `cuda:N`) needs a GPU; `auto` and `cpu` run
/// anywhere (a GPU worker trains a `cpu` job on its CPU).
pub fn runs_on(e: &ExperimentRecord, worker_has_gpu: bool) -> bool {
    worker_has_gpu
        || !Spec::parse_stored(&e.spec_toml, "stored spec")
            .is_ok_and(|s| matches!(s.device(), Device::Cuda(_)))
}

/// Pick the next job to lease at time `now_ms` for a worker that may run
/// the experiments `eligible` accepts, or `None`.
pub fn pick<'a>(
    experiments: &[ExperimentRecord],
    active: &'a [JobRecord],
    now_ms: i64,
    eligible: impl Fn(&ExperimentRecord) -> bool,
) -> Option<&'a JobRecord> {
    let mut leased: HashMap<uuid::Uuid, usize> = HashMap::new();
    for j in active {
        if matches!(j.state, JobState::Leased(_)) {
            *leased.entry(j.experiment).or_default() += 1;
        }
    }
    let mut order: Vec<&ExperimentRecord> = experiments.iter().filter(|e| !e.cancelled).collect();
    order.sort_by_key(|e| (leased.get(&e.id).copied().unwrap_or(0), e.seq));
    // The first ready job with a lapsed lease, served if no other is ready.
    let mut lapsed = None;
    for e in order {
        let mut jobs: Vec<(bool, &JobRecord)> = active
            .iter()
            .filter(|j| j.experiment == e.id)
            .filter_map(|j| match &j.state {
                JobState::Pending(p) if p.not_before_ms <= now_ms => Some((p.lapsed.is_some(), j)),
                _ => None,
            })
            .collect();
        jobs.sort_by(|(la, a), (lb, b)| {
            (la, &a.task, a.round, &a.key).cmp(&(lb, &b.task, b.round, &b.key))
        });
        // Checked only for experiments with a job ready (it parses the spec).
        match jobs.first().filter(|_| eligible(e)) {
            Some(&(false, j)) => return Some(j),
            Some(&(true, j)) => {
                lapsed.get_or_insert(j);
            }
            None => {}
        }
    }
    lapsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Leased, Pending};

    fn exp(seq: i64) -> ExperimentRecord {
        ExperimentRecord {
            id: uuid::Uuid::from_u128(seq as u128),
            name: format!("e{seq}"),
            request_id: None,
            spec_sha256: String::new(),
            dataset_sha256: String::new(),
            plan_sha256: String::new(),
            spec_toml: String::new(),
            plan_json: String::new(),
            manifest_path: String::new(),
            submitted_ms: 0,
            seq,
            cancelled: false,
            summary_json: None,
        }
    }

    fn job(e: &ExperimentRecord, key: &str, state: JobState) -> JobRecord {
        JobRecord {
            experiment: e.id,
            key: key.into(),
            task: "screening".into(),
            round: 1,
            state,
            version: 0,
        }
    }

    fn pending(not_before_ms: i64) -> JobState {
        JobState::Pending(Pending {
            not_before_ms,
            ..Pending::default()
        })
    }

    fn leased() -> JobState {
        JobState::Leased(Leased {
            attempt: 1,
            worker_id: "w".into(),
            leased_at_ms: 0,
            deadline_ms: 10,
            last_progress_ms: 0,
            last_position: 0,
            last_error: None,
            released: 0,
        })
    }

    fn any(_: &ExperimentRecord) -> bool {
        true
    }

    #[test]
    fn experiments_that_need_a_gpu_go_to_gpu_workers_only() {
        let spec = |device: &str| {
            format!(
                "name = \"t\"\n[dataset]\nmanifest = \"m.csv\"\n[train]\ndevice = \"{device}\"\n"
            )
        };
        let (mut gpu, mut cpu) = (exp(1), exp(2));
        gpu.spec_toml = spec("cuda");
        cpu.spec_toml = spec("cpu");
        let mut indexed = exp(3);
        indexed.spec_toml = spec("cuda:1");
        let mut auto = exp(4);
        auto.spec_toml = spec("auto");
        for (e, on_cpu) in [
            (&gpu, false),
            (&indexed, false),
            (&cpu, true),
            (&auto, true),
        ] {
            assert_eq!(runs_on(e, false), on_cpu, "{}", e.spec_toml);
            assert!(runs_on(e, true), "{}", e.spec_toml);
        }
        // The GPU experiment was first, but a CPU worker gets the CPU one.
        let jobs = vec![
            job(&gpu, "s-r01", pending(0)),
            job(&cpu, "s-r01", pending(0)),
        ];
        let exps = vec![gpu.clone(), cpu.clone()];
        let j = pick(&exps, &jobs, 5, |e| runs_on(e, false)).unwrap();
        assert_eq!(j.experiment, cpu.id);
        let j = pick(&exps, &jobs, 5, |e| runs_on(e, true)).unwrap();
        assert_eq!(j.experiment, gpu.id);
        assert!(pick(&exps[..1], &jobs, 5, |e| runs_on(e, false)).is_none());
    }

    #[test]
    fn submission_order_then_fair_share() {
        let (a, b) = (exp(1), exp(2));
        let jobs = vec![
            job(&a, "s-r02", pending(0)),
            job(&a, "s-r01", pending(0)),
            job(&b, "s-r01", pending(0)),
        ];
        let exps = vec![b.clone(), a.clone()];
        // Nothing leased: the earlier experiment, its first key.
        let j = pick(&exps, &jobs, 5, any).unwrap();
        assert_eq!((j.experiment, j.key.as_str()), (a.id, "s-r01"));
        // One of a's jobs leased: b goes next.
        let jobs2 = vec![
            job(&a, "s-r01", leased()),
            job(&a, "s-r02", pending(0)),
            job(&b, "s-r01", pending(0)),
        ];
        let j = pick(&exps, &jobs2, 5, any).unwrap();
        assert_eq!(j.experiment, b.id);
    }

    #[test]
    fn a_job_whose_worker_may_come_back_waits_while_others_are_ready() {
        let (a, b) = (exp(1), exp(2));
        let lapsed = match leased() {
            JobState::Leased(l) => JobState::Pending(Pending {
                attempts: 1,
                last_error: Some("lease expired".into()),
                lapsed: Some(l),
                ..Pending::default()
            }),
            _ => unreachable!(),
        };
        let exps = vec![a.clone(), b.clone()];
        // a's first round lapsed: a's second round, then b's, go first.
        let jobs = vec![
            job(&a, "s-r01", lapsed.clone()),
            job(&a, "s-r02", pending(0)),
            job(&b, "s-r01", pending(0)),
        ];
        assert_eq!(pick(&exps, &jobs, 5, any).unwrap().key, "s-r02");
        let jobs = vec![
            job(&a, "s-r01", lapsed.clone()),
            job(&b, "s-r01", pending(0)),
        ];
        assert_eq!(pick(&exps, &jobs, 5, any).unwrap().experiment, b.id);
        // Nothing else ready: it is served.
        let jobs = vec![job(&a, "s-r01", lapsed), job(&b, "s-r01", pending(100))];
        assert_eq!(pick(&exps, &jobs, 5, any).unwrap().experiment, a.id);
    }

    #[test]
    fn a_lapsed_job_waits_for_the_slot_that_still_runs_it() {
        let a = exp(1);
        let lapsed = |worker: &str, attempt: u32| match leased() {
            JobState::Leased(l) => JobState::Pending(Pending {
                attempts: attempt,
                lapsed: Some(Leased {
                    worker_id: worker.into(),
                    attempt,
                    ..l
                }),
                ..Pending::default()
            }),
            _ => unreachable!(),
        };
        let running = Running {
            worker_id: "w".into(),
            attempts: [(a.id, "s-r01".to_string(), 2)].into_iter().collect(),
            listed_at_ms: 1_000,
        };
        assert!(running.runs_lapsed(&job(&a, "s-r01", lapsed("w", 2))));
        // Another attempt, job, worker or experiment: not this slot's.
        assert!(!running.runs_lapsed(&job(&a, "s-r01", lapsed("w", 1))));
        assert!(!running.runs_lapsed(&job(&a, "s-r02", lapsed("w", 2))));
        assert!(!running.runs_lapsed(&job(&a, "s-r01", lapsed("v", 2))));
        assert!(!running.runs_lapsed(&job(&exp(2), "s-r01", lapsed("w", 2))));
        // Only a lapsed lease waits: a plain pending or a leased job does not.
        assert!(!running.runs_lapsed(&job(&a, "s-r01", pending(0))));
        assert!(!running.runs_lapsed(&job(&a, "s-r01", leased())));
        // A lease of this worker's granted after its list was made waits
        // too (a slot may run it); another worker's does not.
        let late = |worker: &str| match lapsed(worker, 1) {
            JobState::Pending(mut p) => {
                if let Some(l) = p.lapsed.as_mut() {
                    l.leased_at_ms = 1_000;
                }
                JobState::Pending(p)
            }
            _ => unreachable!(),
        };
        assert!(running.runs_lapsed(&job(&a, "s-r02", late("w"))));
        assert!(!running.runs_lapsed(&job(&a, "s-r02", late("v"))));
    }

    #[test]
    fn backoff_and_cancellation_are_respected() {
        let a = exp(1);
        let jobs = vec![job(&a, "s-r01", pending(100))];
        assert!(pick(std::slice::from_ref(&a), &jobs, 50, any).is_none());
        assert!(pick(std::slice::from_ref(&a), &jobs, 100, any).is_some());
        let mut c = a.clone();
        c.cancelled = true;
        assert!(pick(&[c], &jobs, 100, any).is_none());
    }
}
