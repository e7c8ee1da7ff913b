//! The coordinator's durable state: experiments, their jobs (with each job's
//! [`JobState`]) and the jobs' committed results.
//!
//! [`Store`] is the interface; [`SqliteStore`] keeps everything in one SQLite
//! file (WAL, `synchronous=FULL`: a write is on disk before the call returns),
//! [`MemoryStore`] keeps it in memory for tests. Both behave the same; one
//! test suite runs against each.
//!
//! Job writes are compare-and-set on a per-job `version`, so two coordinator
//! tasks that read the same job cannot both write it: the second gets
//! [`StoreError::Conflict`] and re-reads.
//!
//! The calls block; async callers run them with `tokio::task::spawn_blocking`.

use crate::state::{JobState, TransitionError};
use serde::{Deserialize, Serialize};

pub mod memory;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// An experiment's id.
pub type ExperimentId = uuid::Uuid;

/// A submitted experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub id: ExperimentId,
    pub name: String,
    /// The client's idempotency key, if it sent one.
    pub request_id: Option<String>,
    /// SHA-256 of the resolved spec.
    pub spec_sha256: String,
    pub dataset_sha256: String,
    pub plan_sha256: String,
    pub spec_toml: String,
    pub plan_json: String,
    pub manifest_path: String,
    pub submitted_ms: i64,
    /// Submission order, assigned by the store (ascending from 1); the value
    /// passed to [`Store::create_experiment`] is ignored.
    pub seq: i64,
    pub cancelled: bool,
    /// Aggregated results, once all jobs are terminal.
    pub summary_json: Option<String>,
}

/// One job of an experiment and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub experiment: ExperimentId,
    /// Unique within the experiment, e.g. `malignancy-r07`.
    pub key: String,
    pub task: String,
    pub round: u32,
    pub state: JobState,
    /// Optimistic-concurrency counter: 0 when created, bumped on every write.
    pub version: i64,
}

/// A job to create with its experiment; it starts pending, never attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    pub key: String,
    pub task: String,
    pub round: u32,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("experiment {0} not found")]
    NoExperiment(ExperimentId),
    #[error("job {key} of experiment {experiment} not found")]
    NoJob {
        experiment: ExperimentId,
        key: String,
    },
    /// Creating an experiment whose id is taken (by another request).
    #[error("experiment {0} already exists")]
    DuplicateExperiment(ExperimentId),
    /// Two jobs of one experiment with the same key.
    #[error("job key {key} given twice for experiment {experiment}")]
    DuplicateJob {
        experiment: ExperimentId,
        key: String,
    },
    /// The job's stored version is not the one the caller read.
    #[error("job {key} changed concurrently (version {expected} expected, {found} found)")]
    Conflict {
        experiment: ExperimentId,
        key: String,
        expected: i64,
        found: i64,
    },
    /// The job's state does not allow the operation (e.g. a result for a
    /// stale attempt).
    #[error("job {key} of experiment {experiment}: {source}")]
    Transition {
        experiment: ExperimentId,
        key: String,
        #[source]
        source: TransitionError,
    },
    /// The database could not be opened, read or written.
    #[error("database {path}: {message}")]
    Db { path: String, message: String },
    /// A stored row could not be decoded.
    #[error("database {path}: corrupt row {row}: {message}")]
    Corrupt {
        path: String,
        row: String,
        message: String,
    },
}

/// Durable storage of experiments, jobs and results. Every write is atomic
/// and durable before the call returns.
pub trait Store: Send + Sync + 'static {
    /// Insert the experiment (its `seq` assigned by the store) and all its
    /// jobs (pending, never attempted, version 0) in one transaction.
    ///
    /// Idempotent: if an experiment with the same `request_id` (when `Some`)
    /// or the same `(spec_sha256, dataset_sha256)` exists, return it and
    /// `false`, inserting nothing; otherwise the stored record and `true`.
    /// A request-id match wins over a fingerprint match; among fingerprint
    /// matches the earliest submission is returned.
    fn create_experiment(
        &self,
        e: ExperimentRecord,
        jobs: Vec<NewJob>,
    ) -> Result<(ExperimentRecord, bool), StoreError>;

    /// One experiment.
    fn experiment(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError>;

    /// [`Store::experiment`] without its split plan and its summary
    /// (`plan_json` empty, `summary_json` `Some("")` when there is one, the
    /// rest as stored): what the scheduler, the reaper, watchers and List
    /// read, several times a second; the plan lists every image of every
    /// round, the summary every round's figures and every image's columns.
    fn experiment_head(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError>;

    /// Every experiment without its split plan and summary (as
    /// [`Store::experiment_head`]), in submission order (`seq`).
    fn experiment_heads(&self) -> Result<Vec<ExperimentRecord>, StoreError>;

    /// An experiment's jobs, ordered by task, then round number (round 9
    /// before 10 before 100, which key order would not give).
    fn jobs(&self, id: ExperimentId) -> Result<Vec<JobRecord>, StoreError>;

    /// One job.
    fn job(&self, id: ExperimentId, key: &str) -> Result<JobRecord, StoreError>;

    /// Compare-and-set: write `state` if the stored version equals
    /// `expected_version` (else [`StoreError::Conflict`]); returns the new
    /// record (version + 1). Durable before it returns.
    fn update_job(
        &self,
        id: ExperimentId,
        key: &str,
        expected_version: i64,
        state: JobState,
    ) -> Result<JobRecord, StoreError>;

    /// In one transaction: the job must be leased with `attempt` to
    /// `worker_id` (or pending with that attempt's lapsed lease); it becomes
    /// succeeded (version bumped) and `result_json` is stored. Returns
    /// `Ok(true)` when committed; `Ok(false)`, storing nothing, when the job
    /// already succeeded with that same attempt (a repeat is acknowledged and
    /// counted once). Any other case is [`StoreError::Transition`].
    fn commit_result(
        &self,
        id: ExperimentId,
        key: &str,
        attempt: u32,
        worker_id: &str,
        now_ms: i64,
        result_json: &str,
    ) -> Result<bool, StoreError>;

    /// The experiment's committed results as (job key, result JSON), ordered
    /// by key.
    fn results(&self, id: ExperimentId) -> Result<Vec<(String, String)>, StoreError>;

    /// Cancel the experiment, in one transaction: mark it cancelled and
    /// cancel its pending and leased jobs ([`JobState::cancel`], version
    /// bumped). Returns how many of them were leased (the attempts cut
    /// off), or `None`, changing nothing, when the experiment has finished
    /// (every job terminal and the experiment not cancelled): a finished
    /// experiment keeps its outcome. Cancelling a cancelled experiment again
    /// returns `Some(0)`. One transaction, so a crash leaves all of it or
    /// none, and 10,000 jobs cost one disk sync, not 10,000.
    fn cancel(&self, id: ExperimentId) -> Result<Option<u32>, StoreError>;

    /// The experiment submitted again, in one transaction: its cancelled
    /// and failed jobs are queued again ([`JobState::resume`]) and, when the
    /// experiment was cancelled or any job was queued again, the cancelled
    /// mark and the aggregated results are cleared. Returns how many jobs
    /// were queued again. One transaction, so no job can finish in between
    /// and leave a summary that misses the resumed rounds.
    fn resume(&self, id: ExperimentId) -> Result<u32, StoreError>;

    /// Store the experiment's aggregated results (replacing any earlier).
    fn set_summary(&self, id: ExperimentId, summary_json: &str) -> Result<(), StoreError>;

    /// [`Store::set_summary`], only if every job of the experiment is
    /// terminal and none changed since `jobs_read` (the jobs the summary
    /// was made from; compared by key and version), checked in the same
    /// transaction: a resubmission that queued rounds again between the
    /// aggregation and this write keeps its cleared summary, and a result
    /// that landed meanwhile is not left out. Returns whether it was stored.
    fn set_summary_if_unchanged(
        &self,
        id: ExperimentId,
        summary_json: &str,
        jobs_read: &[JobRecord],
    ) -> Result<bool, StoreError>;

    /// Every job in a non-terminal state (pending or leased) across all
    /// experiments, ordered by experiment submission order, then key (for the
    /// scheduler and restart recovery).
    fn active_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// How many jobs, across all experiments, are in each state, as
    /// (state name, count) sorted by name; states with no job are left out.
    /// Counted by the store itself (for the metrics endpoint), without
    /// reading the jobs.
    fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Whether `now` (an experiment's jobs) are all terminal and the same jobs,
/// at the same versions, as `read`: for [`Store::set_summary_if_unchanged`].
fn finished_as_read<'a>(now: impl Iterator<Item = &'a JobRecord>, read: &[JobRecord]) -> bool {
    let read: std::collections::HashMap<&str, i64> =
        read.iter().map(|j| (j.key.as_str(), j.version)).collect();
    let mut seen = 0;
    for j in now {
        if !j.state.is_terminal() || read.get(j.key.as_str()) != Some(&j.version) {
            return false;
        }
        seen += 1;
    }
    seen == read.len()
}

/// The state a job's committed result moves it to, for `commit_result` of
/// every store: `Some(succeeded)` to commit, `None` when this attempt's
/// result is already committed (store nothing), a transition error
/// otherwise.
fn completed_state(
    state: &JobState,
    id: ExperimentId,
    key: &str,
    attempt: u32,
    worker_id: &str,
    now_ms: i64,
) -> Result<Option<JobState>, StoreError> {
    // The worker is checked in the same transaction as the commit, so it
    // cannot go stale between a read and the write.
    let completion = state
        .check_worker(attempt, worker_id)
        .and_then(|()| state.complete(attempt, now_ms))
        .map_err(|source| StoreError::Transition {
            experiment: id,
            key: key.to_string(),
            source,
        })?;
    Ok(match completion {
        crate::state::Completion::Committed(done) => Some(done.into()),
        crate::state::Completion::AlreadyCommitted => None,
    })
}

/// The first key given twice, if any.
fn duplicate_key(jobs: &[NewJob]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    jobs.iter()
        .map(|j| j.key.as_str())
        .find(|k| !seen.insert(*k))
}
