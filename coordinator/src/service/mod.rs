//! The coordinator's gRPC services over one shared state: the store, the
//! settings, live progress and registered workers.

mod data;
mod experiments;
pub mod workers;

pub use data::DataService;
pub use experiments::ExperimentsService;
pub use workers::WorkersService;

use crate::aggregate::{self, JobResult};
use crate::config::{now_ms, Config};
use crate::error::CoordinatorError;
use crate::state::{JobState, RetryPolicy};
use crate::store::{ExperimentId, ExperimentRecord, JobRecord, Store, StoreError};
use crossfold_proto::v1;
use crossfold_shared::spec::Spec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A worker not heard from for this long (or ten lease TTLs, if longer)
/// is forgotten.
pub const FORGET_WORKERS_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub name: String,
    /// The worker process's random instance id ("" when unknown).
    pub instance: String,
    pub devices: Vec<String>,
    pub slots: u32,
    pub last_seen_ms: i64,
}

pub struct Coordinator {
    pub store: Arc<dyn Store>,
    pub config: Config,
    progress: Mutex<HashMap<(ExperimentId, String), (u32, v1::Progress)>>,
    workers: Mutex<HashMap<String, WorkerInfo>>,
    /// Files of known data sets: dataset sha256 -> file sha256 -> path.
    files: Mutex<HashMap<String, DataSetFiles>>,
    /// Experiments whose summary could not be made when their last job
    /// ended, with when to try again (ms): the reaper does.
    unfinished: Mutex<HashMap<ExperimentId, i64>>,
    /// When the reaper last ran (ms): a long gap means the process was
    /// paused or the clock jumped, not that every worker went silent.
    pub last_reap_ms: std::sync::atomic::AtomicI64,
    /// Held while a data set is fingerprinted: lease calls arriving
    /// meanwhile wait for that one run instead of hashing it again.
    learning: Arc<tokio::sync::Mutex<()>>,
    /// Data sets whose files are not the submitted data, with when and
    /// why: asked again within [`Coordinator::RELEARN_AFTER`], the answer
    /// is the same without hashing every file again.
    unlearnable: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// Request ids of recent resubmissions (an existing experiment's spec
    /// and data submitted again), with their experiment: see
    /// [`Coordinator::resubmission`].
    resubmissions: Mutex<HashMap<String, (ExperimentId, std::time::Instant)>>,
    /// Woken on every job state change (long polls, watchers).
    pub changed: Notify,
    /// Woken on a running job's progress (watchers only: an idle worker's
    /// long poll has nothing new to lease then).
    pub progressed: Notify,
    /// Set once the server begins to shut down: long polls answer at once
    /// and watch streams end, so the drain does not wait on them.
    stopping: tokio::sync::watch::Sender<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The files of one data set: by manifest path (what a lease lists: two
/// rows may hold the same bytes), and by content (what a worker fetches).
#[derive(Debug, Default)]
struct DataSetFiles {
    by_path: BTreeMap<String, String>,
    by_sha: HashMap<String, PathBuf>,
}

impl Coordinator {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            store,
            config,
            progress: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            learning: Arc::new(tokio::sync::Mutex::new(())),
            unlearnable: Mutex::new(HashMap::new()),
            resubmissions: Mutex::new(HashMap::new()),
            unfinished: Mutex::new(HashMap::new()),
            last_reap_ms: std::sync::atomic::AtomicI64::new(0),
            changed: Notify::new(),
            progressed: Notify::new(),
            stopping: tokio::sync::watch::Sender::new(false),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    /// The server is shutting down: end long polls and watch streams.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Whether the server is shutting down, and a receiver that changes when it does.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Workers heard from within `window_ms`, as (all, with a GPU, devices
    /// unknown). A worker known only from a heartbeat after a coordinator
    /// restart has no device list until it registers again.
    pub fn live_workers(&self, window_ms: i64) -> (usize, usize, usize) {
        let now = now_ms();
        self.workers
            .lock()
            .map(|m| {
                let live: Vec<_> = m
                    .values()
                    .filter(|w| now - w.last_seen_ms <= window_ms)
                    .collect();
                let gpu = live
                    .iter()
                    .filter(|w| w.devices.iter().any(|d| d.starts_with("cuda")))
                    .count();
                let unknown = live.iter().filter(|w| w.devices.is_empty()).count();
                (live.len(), gpu, unknown)
            })
            .unwrap_or((0, 0, 0))
    }

    /// Workers heard from within `window_ms`.
    pub fn workers_seen_within(&self, window_ms: i64) -> usize {
        let now = now_ms();
        self.workers
            .lock()
            .map(|m| {
                m.values()
                    .filter(|w| now - w.last_seen_ms <= window_ms)
                    .count()
            })
            .unwrap_or(0)
    }

    /// The metrics text at this moment: job counts are read from the store.
    pub async fn render_metrics(&self) -> String {
        let counts = self
            .with_store(|s| {
                Ok(s.job_counts()?
                    .into_iter()
                    .collect::<HashMap<String, i64>>())
            })
            .await;
        match counts {
            Ok(counts) => {
                let all: Vec<(&str, i64)> =
                    ["pending", "leased", "succeeded", "failed", "cancelled"]
                        .iter()
                        .map(|s| (*s, counts.get(*s).copied().unwrap_or(0)))
                        .collect();
                self.metrics.set_jobs(&all);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count jobs"),
        }
        let ttl = self.config.lease_ttl.as_millis() as i64;
        self.metrics
            .workers_connected
            .set(self.workers_seen_within(ttl) as i64);
        // Workers gone for a lease time-to-live lose their throughput series
        // (worker names usually hold a process id: restarts make new ones).
        let now = now_ms();
        let gone: Vec<String> = self
            .workers
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, w)| now - w.last_seen_ms > ttl)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.drop_worker_series(gone);
        self.metrics.encode()
    }

    /// Run a store call off the async runtime.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| CoordinatorError::Internal(format!("store task: {e}")))?
            .map_err(CoordinatorError::from)
    }

    pub fn record_progress(&self, id: ExperimentId, key: &str, attempt: u32, p: v1::Progress) {
        if let Ok(mut m) = self.progress.lock() {
            m.insert((id, key.to_string()), (attempt, p));
        }
    }

    /// Drop what is kept in memory for the past: the progress of attempts
    /// no longer in `leased` (experiment, job, attempt), and workers not
    /// heard from for [`FORGET_WORKERS_AFTER`] (a worker that comes back is
    /// taken back as after a coordinator restart). A long-running
    /// coordinator that sees many jobs and many short-lived workers (pods
    /// with new names) keeps its memory bounded.
    pub fn forget(&self, leased: &HashSet<(ExperimentId, String, u32)>, now_ms: i64) {
        if let Ok(mut m) = self.progress.lock() {
            m.retain(|(id, key), (attempt, _)| leased.contains(&(*id, key.clone(), *attempt)));
        }
        let quiet = (FORGET_WORKERS_AFTER.as_millis() as i64)
            .max(10 * self.config.lease_ttl.as_millis() as i64);
        let mut gone = Vec::new();
        if let Ok(mut m) = self.workers.lock() {
            m.retain(|id, w| {
                let keep = now_ms - w.last_seen_ms <= quiet;
                if !keep {
                    gone.push(id.clone());
                }
                keep
            });
        }
        // Their series too, in case no scrape removed them.
        self.drop_worker_series(gone);
    }

    /// Remove the per-worker metric series of `workers`.
    fn drop_worker_series(&self, workers: Vec<String>) {
        for worker in workers {
            self.metrics
                .worker_images_per_second
                .remove(&crate::metrics::WorkerLabel { worker });
        }
    }

    /// How many workers and job progress records are held in memory.
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.workers.lock().map(|m| m.len()).unwrap_or(0),
            self.progress.lock().map(|m| m.len()).unwrap_or(0),
        )
    }

    pub fn progress_of(&self, id: ExperimentId, key: &str, attempt: u32) -> Option<v1::Progress> {
        let m = self.progress.lock().ok()?;
        m.get(&(id, key.to_string()))
            .filter(|(a, _)| *a == attempt)
            .map(|(_, p)| *p)
    }

    /// Register (or re-register) a worker. Refused, with the seconds since
    /// it was last heard from, when another live process holds the name:
    /// same id, a different known instance, heard from within a lease TTL.
    pub fn register_worker(&self, id: String, info: WorkerInfo) -> Result<(), f64> {
        let Ok(mut m) = self.workers.lock() else {
            return Ok(());
        };
        if let Some(old) = m.get(&id) {
            let quiet_ms = now_ms() - old.last_seen_ms;
            let other = !old.instance.is_empty()
                && !info.instance.is_empty()
                && old.instance != info.instance;
            // A negative quiet time is the wall clock stepping back, not a
            // worker heard from in the future: the name is not held then.
            if other && (0..self.config.lease_ttl.as_millis() as i64).contains(&quiet_ms) {
                return Err(quiet_ms as f64 / 1000.0);
            }
        }
        m.insert(id, info);
        Ok(())
    }

    /// Whether the worker trains on a GPU, as it registered (for workers
    /// that do not say so with each lease request). Unknown (a worker known
    /// only from before a coordinator restart): no, so a job that needs a
    /// GPU is never given to a CPU worker; it waits for a worker that says
    /// it has one.
    pub fn worker_has_gpu(&self, id: &str) -> bool {
        self.workers
            .lock()
            .ok()
            .and_then(|m| {
                m.get(id)
                    .map(|w| w.devices.iter().any(|d| d.starts_with("cuda")))
            })
            .unwrap_or(false)
    }

    pub fn touch_worker(&self, id: &str) -> bool {
        match self.workers.lock() {
            Ok(mut m) => match m.get_mut(id) {
                Some(w) => {
                    w.last_seen_ms = now_ms();
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Remember a data set's files: manifest path -> SHA-256, paths relative
    /// to `root`.
    pub fn remember_files(&self, dataset: &str, root: &Path, files: &BTreeMap<String, String>) {
        let by_sha = files
            .iter()
            .map(|(path, sha)| (sha.clone(), root.join(path)))
            .collect();
        if let Ok(mut m) = self.files.lock() {
            m.insert(
                dataset.to_string(),
                DataSetFiles {
                    by_path: files.clone(),
                    by_sha,
                },
            );
        }
    }

    /// A file of the data set with this content.
    pub fn file_path(&self, dataset: &str, sha: &str) -> Option<PathBuf> {
        self.files
            .lock()
            .ok()?
            .get(dataset)?
            .by_sha
            .get(sha)
            .cloned()
    }

    /// The data sets whose files this coordinator knows (fingerprinted).
    pub fn known_datasets(&self) -> HashSet<String> {
        self.files
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn knows_dataset(&self, dataset: &str) -> bool {
        self.files
            .lock()
            .map(|m| m.contains_key(dataset))
            .unwrap_or(false)
    }

    /// Files of a data set by manifest path: (path, sha256), sorted by path;
    /// every row, also rows whose bytes another row holds too.
    pub fn files_of(&self, dataset: &str) -> Vec<(String, String)> {
        let Ok(m) = self.files.lock() else {
            return Vec::new();
        };
        m.get(dataset)
            .map(|f| {
                f.by_path
                    .iter()
                    .map(|(p, sha)| (p.clone(), sha.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Learn a data set's files (after a restart) from an experiment using
    /// it. The hashing runs in a task of its own that holds the learning
    /// lock: a caller that goes away (a worker's lease call given up) does
    /// not abandon it half-way, and callers arriving meanwhile wait for it
    /// instead of hashing the same files again.
    pub async fn learn_dataset(self: &Arc<Self>, dataset: &str) -> Result<(), CoordinatorError> {
        if self.knows_dataset(dataset) {
            return Ok(());
        }
        if let Some(why) = self.refused(dataset) {
            return Err(CoordinatorError::FailedPrecondition(why));
        }
        // Before the lock: a data set no experiment uses waits for nothing.
        let ds = dataset.to_string();
        let manifest = self
            .with_store(move |s| {
                Ok(s.experiment_heads()?
                    .into_iter()
                    .find(|e| e.dataset_sha256 == ds)
                    .map(|e| e.manifest_path))
            })
            .await?
            .ok_or_else(|| {
                CoordinatorError::NotFound(format!("no experiment uses data set {dataset}"))
            })?;
        let me = Arc::clone(self);
        let dataset = dataset.to_string();
        tokio::spawn(async move {
            let _one_at_a_time = Arc::clone(&me.learning).lock_owned().await;
            if me.knows_dataset(&dataset) {
                return Ok(()); // learned while this one waited
            }
            // Refused while this one waited: not hashed again.
            if let Some(why) = me.refused(&dataset) {
                return Err(CoordinatorError::FailedPrecondition(why));
            }
            let dataset_id = dataset.clone();
            // Err((why, whether it is remembered)): only a data set that
            // reads well but is not the submitted one is; a read error may
            // pass (a network file system's blip) and is tried again.
            let learned = tokio::task::spawn_blocking(
                move || -> Result<(PathBuf, BTreeMap<String, String>), (String, bool)> {
                    let m = crossfold_shared::manifest::Manifest::load(Path::new(&manifest))
                        .map_err(|e| (e.to_string(), false))?;
                    let fp = crossfold_shared::dataset::fingerprint(&m)
                        .map_err(|e| (e.to_string(), false))?;
                    // The files as they are now must be the submitted data:
                    // else every worker would fetch them and fail.
                    if fp.sha256 != dataset_id {
                        let why = format!(
                            "the data set of {manifest} changed since it was submitted (its \
                             fingerprint is now {}, the experiment's {dataset_id}): submit \
                             the spec again to run on the new data",
                            fp.sha256
                        );
                        return Err((why, true));
                    }
                    Ok((m.root, fp.files))
                },
            )
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            let (root, files) = match learned {
                Ok(x) => x,
                Err((why, remember)) => {
                    if let (true, Ok(mut m)) = (remember, me.unlearnable.lock()) {
                        m.insert(dataset.clone(), (std::time::Instant::now(), why.clone()));
                    }
                    return Err(CoordinatorError::FailedPrecondition(why));
                }
            };
            if let Ok(mut m) = me.unlearnable.lock() {
                m.remove(&dataset);
            }
            me.remember_files(&dataset, &root, &files);
            Ok(())
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("learning a data set: {e}")))?
    }

    /// How long, and for how many, resubmissions' request ids are kept.
    const RESUBMISSIONS_FOR: std::time::Duration = std::time::Duration::from_secs(3600);
    const MAX_RESUBMISSIONS: usize = 10_000;

    /// The experiment a recent resubmission with `request_id` resumed: a
    /// client retrying that call gets the id back and resumes nothing more.
    /// Kept in memory for an hour (a retry comes within seconds); after a
    /// restart the retry resumes again, as a new submission would.
    pub fn resubmission(&self, request_id: &str) -> Option<ExperimentId> {
        let m = self.resubmissions.lock().ok()?;
        m.get(request_id)
            .filter(|(_, at)| at.elapsed() < Self::RESUBMISSIONS_FOR)
            .map(|(id, _)| *id)
    }

    pub fn remember_resubmission(&self, request_id: &str, id: ExperimentId) {
        if let Ok(mut m) = self.resubmissions.lock() {
            m.retain(|_, (_, at)| at.elapsed() < Self::RESUBMISSIONS_FOR);
            if m.len() < Self::MAX_RESUBMISSIONS {
                m.insert(request_id.to_string(), (id, std::time::Instant::now()));
            }
        }
    }

    /// Why `dataset` was refused, if it was within [`Self::RELEARN_AFTER`].
    fn refused(&self, dataset: &str) -> Option<String> {
        self.unlearnable.lock().ok().and_then(|m| {
            m.get(dataset)
                .filter(|(at, _)| at.elapsed() < Self::RELEARN_AFTER)
                .map(|(_, why)| why.clone())
        })
    }

    /// [`Coordinator::maybe_finish`] for callers whose own change is already
    /// stored (a result committed, a job ended): a summary that cannot be
    /// made now is logged and tried again by the reaper every
    /// [`Coordinator::FINISH_RETRY_MS`], not returned as an error to a
    /// worker or a researcher who could do nothing about it (a watch ends
    /// only once the summary is there).
    pub async fn finish_soon(&self, id: ExperimentId) {
        if let Err(err) = self.maybe_finish(id).await {
            tracing::warn!(experiment = %id, error = %err, "summary not made; tried again later");
            if let Ok(mut m) = self.unfinished.lock() {
                m.insert(id, now_ms() + Self::FINISH_RETRY_MS);
            }
        }
    }

    pub const FINISH_RETRY_MS: i64 = 30_000;

    /// How long a data set that could not be learned is answered from
    /// memory before its files are read again.
    pub const RELEARN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

    /// Try again, at `now`, the summaries [`Coordinator::finish_soon`]
    /// could not make and whose time has come (the reaper's pass).
    pub async fn retry_unfinished(&self, now: i64) {
        let due: Vec<ExperimentId> = match self.unfinished.lock() {
            Ok(mut m) => {
                let due = m
                    .iter()
                    .filter(|(_, &t)| t <= now)
                    .map(|(&id, _)| id)
                    .collect();
                m.retain(|_, t| *t > now);
                due
            }
            Err(_) => Vec::new(),
        };
        for id in due {
            self.finish_soon(id).await;
        }
    }

    /// Experiments waiting for a summary to be tried again.
    pub fn unfinished(&self) -> Vec<ExperimentId> {
        self.unfinished
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// When every job of the experiment is terminal, aggregate and store the summary.
    pub async fn maybe_finish(&self, id: ExperimentId) -> Result<(), CoordinatorError> {
        self.summarise(id, false).await
    }

    /// [`Coordinator::maybe_finish`], making the summary again even when
    /// there is one (its breakdown columns were corrected since).
    pub async fn summarise_again(&self, id: ExperimentId) -> Result<(), CoordinatorError> {
        self.summarise(id, true).await
    }

    async fn summarise(&self, id: ExperimentId, again: bool) -> Result<(), CoordinatorError> {
        self.with_store(move |s| {
            let e = s.experiment(id)?;
            if e.summary_json.is_some() && !again {
                return Ok(());
            }
            let jobs = s.jobs(id)?;
            if !jobs.iter().all(|j| j.state.is_terminal()) {
                return Ok(());
            }
            let mut results = parse_results(&s.results(id)?)?;
            let summary = summary_of(&mut results, &e);
            // Only if no job changed since they were read: a resubmission
            // may have queued rounds again, and one may even have finished.
            // Whatever changed a job calls this again once it is done.
            s.set_summary_if_unchanged(id, &summary.to_string(), &jobs)
                .map(|_| ())
        })
        .await?;
        self.changed.notify_waiters();
        Ok(())
    }
}

/// Every job in a non-terminal state, and the experiments they belong to
/// (in submission order), read in that order: jobs first. Not the whole
/// history of experiments, which grows without bound, for the reaper's and
/// the lease's frequent passes. Reading the jobs first means an experiment
/// cancelled or resumed between the two reads is seen as it is now, never
/// older than its jobs (cancel and resume each change both in one
/// transaction).
pub fn active_work(s: &dyn Store) -> Result<(Vec<ExperimentRecord>, Vec<JobRecord>), StoreError> {
    let active = s.active_jobs()?;
    let mut seen = HashSet::new();
    let mut experiments = Vec::new();
    for j in &active {
        if seen.insert(j.experiment) {
            experiments.push(s.experiment_head(j.experiment)?);
        }
    }
    Ok((experiments, active))
}

/// Read job `key`, make its next state with `next` (`None`: nothing to
/// do), and write that compare-and-set; after a conflict (a heartbeat or
/// the reaper wrote in between) read and try again, up to 8 times. Returns
/// the record written, or `None` when `next` declined. A conflict is not
/// the caller's fault: returned to a worker as ABORTED, it would give up a
/// failure or a release it should have had recorded.
pub fn update_with_retry(
    s: &dyn Store,
    id: ExperimentId,
    key: &str,
    mut next: impl FnMut(&JobRecord) -> Option<JobState>,
) -> Result<Option<JobRecord>, StoreError> {
    let mut tries = 0;
    loop {
        let job = s.job(id, key)?;
        let Some(state) = next(&job) else {
            return Ok(None);
        };
        match s.update_job(id, key, job.version, state) {
            Ok(written) => return Ok(Some(written)),
            Err(StoreError::Conflict { .. }) if tries < 7 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The summary of an experiment's results, broken down by the manifest's
/// site and subtype as they are now ([`crate::columns`]), which it records.
pub fn summary_of(results: &mut [JobResult], e: &ExperimentRecord) -> serde_json::Value {
    let columns = crate::columns::Columns::read(&e.manifest_path);
    if let Some(c) = &columns {
        c.apply(results);
    }
    let mut summary = aggregate::summarize_record(results, e);
    if let Some(o) = summary.as_object_mut() {
        o.insert(
            crate::columns::SUMMARY_KEY.into(),
            columns.map(|c| c.sha256).into(),
        );
        o.insert(
            crate::columns::STORED_KEY.into(),
            crate::columns::as_stored(results),
        );
    }
    summary
}

pub fn parse_results(rows: &[(String, String)]) -> Result<Vec<JobResult>, StoreError> {
    rows.iter()
        .map(|(key, json)| {
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                path: String::new(),
                row: format!("result of job {key}"),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The retry policy and threshold of an experiment's spec.
pub fn spec_of(e: &ExperimentRecord) -> Result<Spec, CoordinatorError> {
    Spec::parse_stored(&e.spec_toml, "stored spec").map_err(|err| {
        CoordinatorError::Internal(format!("experiment {}: stored spec: {err}", e.id))
    })
}

pub fn retry_policy(spec: &Spec) -> RetryPolicy {
    RetryPolicy {
        max_attempts: spec.retry.max_attempts,
        backoff_ms: (spec.retry.backoff_seconds * 1000.0) as i64,
    }
}

/// The experiment's retry policy; the default one when its stored spec no
/// longer parses (a spec format change since it was submitted), so its
/// jobs still expire, fail and end instead of staying leased for ever.
pub fn stored_policy(e: &ExperimentRecord) -> RetryPolicy {
    spec_of(e)
        .map(|spec| retry_policy(&spec))
        .unwrap_or_default()
}

/// Experiment state from its jobs: cancelled, succeeded (all jobs),
/// failed (all terminal, some failed), running (some leased or done), pending.
pub fn experiment_state(e: &ExperimentRecord, jobs: &[JobRecord]) -> &'static str {
    if e.cancelled {
        return "cancelled";
    }
    let all_terminal = jobs.iter().all(|j| j.state.is_terminal());
    if all_terminal
        && jobs
            .iter()
            .all(|j| matches!(j.state, JobState::Succeeded(_)))
    {
        "succeeded"
    } else if all_terminal {
        "failed"
    } else if jobs
        .iter()
        .any(|j| !matches!(j.state, JobState::Pending(_)))
    {
        "running"
    } else {
        "pending"
    }
}

pub fn proto_state(s: &JobState) -> v1::JobState {
    match s {
        JobState::Pending(_) => v1::JobState::Pending,
        JobState::Leased(_) => v1::JobState::Leased,
        JobState::Succeeded(_) => v1::JobState::Succeeded,
        JobState::Failed(_) => v1::JobState::Failed,
        JobState::Cancelled(_) => v1::JobState::Cancelled,
    }
}
