//! [`Store`] in memory, for tests: same behaviour as the SQLite store, nothing
//! survives the process.

use super::{
    completed_state, duplicate_key, ExperimentId, ExperimentRecord, JobRecord, NewJob, Store,
    StoreError,
};
use crate::state::JobState;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Inner {
    experiments: BTreeMap<ExperimentId, ExperimentRecord>,
    /// Per experiment, its jobs by key.
    jobs: BTreeMap<ExperimentId, BTreeMap<String, JobRecord>>,
    /// Per experiment, committed results by job key.
    results: BTreeMap<ExperimentId, BTreeMap<String, String>>,
    last_seq: i64,
}

impl Inner {
    fn experiment_mut(&mut self, id: ExperimentId) -> Result<&mut ExperimentRecord, StoreError> {
        self.experiments
            .get_mut(&id)
            .ok_or(StoreError::NoExperiment(id))
    }

    fn jobs_of(&self, id: ExperimentId) -> Result<&BTreeMap<String, JobRecord>, StoreError> {
        self.jobs.get(&id).ok_or(StoreError::NoExperiment(id))
    }

    fn job_mut(&mut self, id: ExperimentId, key: &str) -> Result<&mut JobRecord, StoreError> {
        self.jobs
            .get_mut(&id)
            .ok_or(StoreError::NoExperiment(id))?
            .get_mut(key)
            .ok_or_else(|| StoreError::NoJob {
                experiment: id,
                key: key.to_string(),
            })
    }

    /// The earlier submission `e` repeats, if any.
    fn existing(&self, e: &ExperimentRecord) -> Option<&ExperimentRecord> {
        let by_request = e.request_id.as_ref().and_then(|r| {
            self.experiments
                .values()
                .find(|x| x.request_id.as_ref() == Some(r))
        });
        by_request.or_else(|| {
            self.experiments
                .values()
                .filter(|x| x.spec_sha256 == e.spec_sha256 && x.dataset_sha256 == e.dataset_sha256)
                .min_by_key(|x| x.seq)
        })
    }
}

/// [`Store`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The data, also after a panic in another thread (every write below
    /// checks before it mutates, so a panic leaves no half-written state).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn create_experiment(
        &self,
        mut e: ExperimentRecord,
        jobs: Vec<NewJob>,
    ) -> Result<(ExperimentRecord, bool), StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.existing(&e) {
            return Ok((existing.clone(), false));
        }
        if inner.experiments.contains_key(&e.id) {
            return Err(StoreError::DuplicateExperiment(e.id));
        }
        if let Some(key) = duplicate_key(&jobs) {
            return Err(StoreError::DuplicateJob {
                experiment: e.id,
                key: key.to_string(),
            });
        }
        inner.last_seq += 1;
        e.seq = inner.last_seq;
        let records = jobs
            .into_iter()
            .map(|j| {
                let record = JobRecord {
                    experiment: e.id,
                    key: j.key.clone(),
                    task: j.task,
                    round: j.round,
                    state: JobState::new(),
                    version: 0,
                };
                (j.key, record)
            })
            .collect();
        inner.jobs.insert(e.id, records);
        inner.results.insert(e.id, BTreeMap::new());
        inner.experiments.insert(e.id, e.clone());
        Ok((e, true))
    }

    fn experiment(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError> {
        self.lock()
            .experiments
            .get(&id)
            .cloned()
            .ok_or(StoreError::NoExperiment(id))
    }

    fn experiment_head(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError> {
        let inner = self.lock();
        let e = inner
            .experiments
            .get(&id)
            .ok_or(StoreError::NoExperiment(id))?;
        Ok(head(e))
    }

    fn experiment_heads(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        let mut all: Vec<_> = self.lock().experiments.values().map(head).collect();
        all.sort_by_key(|e| e.seq);
        Ok(all)
    }

    fn jobs(&self, id: ExperimentId) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs: Vec<JobRecord> = self.lock().jobs_of(id)?.values().cloned().collect();
        jobs.sort_by(|a, b| (&a.task, a.round, &a.key).cmp(&(&b.task, b.round, &b.key)));
        Ok(jobs)
    }

    fn job(&self, id: ExperimentId, key: &str) -> Result<JobRecord, StoreError> {
        self.lock().job_mut(id, key).map(|j| j.clone())
    }

    fn update_job(
        &self,
        id: ExperimentId,
        key: &str,
        expected_version: i64,
        state: JobState,
    ) -> Result<JobRecord, StoreError> {
        let mut inner = self.lock();
        let job = inner.job_mut(id, key)?;
        if job.version != expected_version {
            return Err(StoreError::Conflict {
                experiment: id,
                key: key.to_string(),
                expected: expected_version,
                found: job.version,
            });
        }
        job.state = state;
        job.version += 1;
        Ok(job.clone())
    }

    fn commit_result(
        &self,
        id: ExperimentId,
        key: &str,
        attempt: u32,
        worker_id: &str,
        now_ms: i64,
        result_json: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let job = inner.job_mut(id, key)?;
        let Some(done) = completed_state(&job.state, id, key, attempt, worker_id, now_ms)? else {
            return Ok(false);
        };
        job.state = done;
        job.version += 1;
        inner
            .results
            .entry(id)
            .or_default()
            .insert(key.to_string(), result_json.to_string());
        Ok(true)
    }

    fn results(&self, id: ExperimentId) -> Result<Vec<(String, String)>, StoreError> {
        let inner = self.lock();
        inner.jobs_of(id)?;
        let results = inner.results.get(&id).into_iter().flatten();
        Ok(results.map(|(k, r)| (k.clone(), r.clone())).collect())
    }

    fn cancel(&self, id: ExperimentId) -> Result<Option<u32>, StoreError> {
        let mut inner = self.lock();
        let was_cancelled = inner.experiment_mut(id)?.cancelled;
        let jobs = inner
            .jobs
            .get_mut(&id)
            .ok_or(StoreError::NoExperiment(id))?;
        if !was_cancelled && jobs.values().all(|j| j.state.is_terminal()) {
            return Ok(None);
        }
        let mut leased = 0;
        for job in jobs.values_mut().filter(|j| !j.state.is_terminal()) {
            if matches!(job.state, JobState::Leased(_)) {
                leased += 1;
            }
            job.state = job.state.cancel();
            job.version += 1;
        }
        inner.experiment_mut(id)?.cancelled = true;
        Ok(Some(leased))
    }

    fn resume(&self, id: ExperimentId) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        let was_cancelled = inner.experiment_mut(id)?.cancelled;
        let mut resumed = 0;
        for job in inner
            .jobs
            .get_mut(&id)
            .ok_or(StoreError::NoExperiment(id))?
            .values_mut()
        {
            if matches!(job.state, JobState::Cancelled(_) | JobState::Failed(_)) {
                job.state = job.state.resume();
                job.version += 1;
                resumed += 1;
            }
        }
        if was_cancelled || resumed > 0 {
            let e = inner.experiment_mut(id)?;
            e.cancelled = false;
            e.summary_json = None;
        }
        Ok(resumed)
    }

    fn set_summary(&self, id: ExperimentId, summary_json: &str) -> Result<(), StoreError> {
        self.lock().experiment_mut(id)?.summary_json = Some(summary_json.to_string());
        Ok(())
    }

    fn set_summary_if_unchanged(
        &self,
        id: ExperimentId,
        summary_json: &str,
        jobs_read: &[JobRecord],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let finished = match inner.jobs.get(&id) {
            Some(jobs) => super::finished_as_read(jobs.values(), jobs_read),
            None => jobs_read.is_empty(),
        };
        if !finished {
            inner.experiment_mut(id)?;
            return Ok(false);
        }
        inner.experiment_mut(id)?.summary_json = Some(summary_json.to_string());
        Ok(true)
    }

    fn active_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let inner = self.lock();
        let mut experiments: Vec<_> = inner.experiments.values().collect();
        experiments.sort_by_key(|e| e.seq);
        let jobs = experiments
            .into_iter()
            .filter_map(|e| inner.jobs.get(&e.id))
            .flat_map(|jobs| jobs.values())
            .filter(|j| !j.state.is_terminal());
        Ok(jobs.cloned().collect())
    }

    fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let inner = self.lock();
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for job in inner.jobs.values().flat_map(|jobs| jobs.values()) {
            *counts.entry(job.state.name().to_string()).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }
}

/// `e` without its split plan (see [`Store::experiment_head`]).
fn head(e: &ExperimentRecord) -> ExperimentRecord {
    ExperimentRecord {
        id: e.id,
        name: e.name.clone(),
        request_id: e.request_id.clone(),
        spec_sha256: e.spec_sha256.clone(),
        dataset_sha256: e.dataset_sha256.clone(),
        plan_sha256: e.plan_sha256.clone(),
        spec_toml: e.spec_toml.clone(),
        plan_json: String::new(),
        manifest_path: e.manifest_path.clone(),
        submitted_ms: e.submitted_ms,
        seq: e.seq,
        cancelled: e.cancelled,
        summary_json: e.summary_json.as_ref().map(|_| String::new()),
    }
}
