//! The Workers service: register, lease (long poll), heartbeat, complete,
//! fail, release. Every call after the lease names its attempt; calls for any
//! other attempt than the job's current one are refused (fencing).

use super::{spec_of, stored_policy, Coordinator, WorkerInfo};
use crate::aggregate::{round_stats, test_set_mismatch, JobResult, JobTiming, ScoredImage};
use crate::config::now_ms;
use crate::error::{parse_id, CoordinatorError};
use crate::scheduler;
use crate::state::JobState;
use crate::store::{ExperimentId, ExperimentRecord, JobRecord, StoreError};
use crossfold_proto::v1::{self, workers_server::Workers};
use crossfold_shared::label::Task;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Bounds on the warnings one result keeps (they are stored with it).
const MAX_WARNINGS: usize = 20;
/// Bounds on one result's predictions (a round tests part of one cohort)
/// and epochs (a spec allows at most 10,000): the coordinator holds a
/// result whole before storing it.
const MAX_PREDICTIONS: usize = 1_000_000;
const MAX_HISTORY: usize = 10_000;
/// Bounds on the text one result holds (its predictions' names and its
/// provenance): counts alone would let a million predictions each carry
/// megabytes.
const MAX_RESULT_TEXT: usize = 512 << 20;
const MAX_PROVENANCE_BYTES: usize = 1 << 20;
const MAX_WARNING_BYTES: usize = 2000;
/// Bounds on a failed attempt's error as stored (it is kept with the job,
/// rewritten with every heartbeat and sent to every watcher) and on a
/// worker's name.
const MAX_ERROR_BYTES: usize = 4000;
const MAX_NAME_BYTES: usize = 512;

/// A result's timing as stored. It is informational: one that is not
/// made of numbers of at least 0 is dropped (and logged), never costing
/// the round its result.
fn timing_of(t: Option<&v1::JobTiming>, job: &str) -> Option<JobTiming> {
    let t = t?;
    JobTiming {
        preparation: t.preparation,
        startup: t.startup,
        data_loading: t.data_loading,
        training: t.training,
        validation: t.validation,
        evaluation: t.evaluation,
        total: t.total,
        images_per_second: t.images_per_second,
    }
    .checked()
    .map_err(|problem| tracing::warn!(job, "result's timing dropped: {problem}"))
    .ok()
}

/// A result's warnings as stored: at most [`MAX_WARNINGS`], each one line of
/// at most [`MAX_WARNING_BYTES`] (cut at a character boundary). Too much
/// text never costs a finished round its result.
fn bounded_warnings(warnings: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = warnings
        .iter()
        .take(MAX_WARNINGS)
        .map(|w| one_line(w, MAX_WARNING_BYTES))
        .collect();
    if warnings.len() > MAX_WARNINGS {
        kept.push(format!(
            "({} more warnings not kept)",
            warnings.len() - MAX_WARNINGS
        ));
    }
    kept
}

pub struct WorkersService {
    pub coordinator: Arc<Coordinator>,
}

/// `text` on one line (control characters as spaces), cut to at most
/// `max` bytes at a character boundary.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut = line.len().min(max);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line[..cut].to_string()
}

/// A worker's name (its id): not empty, at most [`MAX_NAME_BYTES`], no
/// control characters (it is logged, stored with its leases and shown).
fn check_name(field: &str, name: &str) -> Result<(), CoordinatorError> {
    let problem = if name.trim().is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_BYTES {
        format!("is {} bytes long; at most {MAX_NAME_BYTES}", name.len())
    } else if name.chars().any(char::is_control) {
        "holds a control character".to_string()
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(40).collect();
    Err(CoordinatorError::InvalidArgument(format!(
        "{field} {shown:?}{} {problem}",
        if shown.len() < name.len() { "..." } else { "" }
    )))
}

/// Where every training position lies above: getting ready (fetching,
/// hashing, decoding) counts below it, so a round's first step is always
/// progress over its preparation.
const TRAINING_FROM: u64 = 1 << 48;

/// How far an attempt has got: before epoch 1, the units of preparation
/// done; then [`TRAINING_FROM`] plus the steps done in all. The state
/// machine counts an attempt as progressing while this grows.
fn position(p: &v1::Progress) -> u64 {
    if p.epoch == 0 {
        return p.preparing.min(TRAINING_FROM - 1);
    }
    let steps = u64::from(p.epoch - 1)
        .saturating_mul(u64::from(p.steps_per_epoch))
        .saturating_add(u64::from(p.step));
    TRAINING_FROM.saturating_add(steps)
}

/// The text a result's chunk holds: its predictions' names, warnings and
/// provenance.
fn result_text(c: &v1::CompleteChunk) -> usize {
    let predictions: usize = c
        .predictions
        .iter()
        .map(|p| p.image.len() + p.patient.len() + p.label.len() + p.site.len() + p.subtype.len())
        .sum();
    let warnings: usize = c.warnings.iter().map(String::len).sum();
    predictions + warnings + c.provenance_json.len()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WorkersService {
    /// Note that the worker is alive. A worker unknown here (this
    /// coordinator restarted since it registered) is taken back as it is:
    /// its calls are fenced by attempt numbers, so nothing it says can undo
    /// newer work.
    fn check_worker(&self, id: &str) -> Result<(), CoordinatorError> {
        check_name("worker_id", id)?;
        if !self.coordinator.touch_worker(id) {
            tracing::info!(worker = %id, "worker known from before a restart");
            let _ = self.coordinator.register_worker(
                id.to_string(),
                WorkerInfo {
                    name: id.to_string(),
                    instance: String::new(),
                    devices: Vec::new(),
                    slots: 1,
                    last_seen_ms: now_ms(),
                },
            );
        }
        Ok(())
    }

    /// Fail attempt `attempt` of job `key`, held by `worker`, with `error`,
    /// under the experiment's retry policy; false when the attempt is stale
    /// or held by another worker (nothing to do).
    async fn fail_attempt(
        &self,
        id: ExperimentId,
        key: &str,
        attempt: u32,
        worker: &str,
        error: String,
        retryable: bool,
    ) -> Result<bool, CoordinatorError> {
        let (key, worker) = (key.to_string(), worker.to_string());
        self.coordinator
            .with_store(move |s| {
                let policy = stored_policy(&s.experiment(id)?);
                super::update_with_retry(s, id, &key, |job| {
                    job.state.check_worker(attempt, &worker).ok()?;
                    job.state
                        .clone()
                        .fail(attempt, &error, retryable, now_ms(), &policy)
                        .ok()
                })
                .map(|written| written.is_some())
            })
            .await
    }

    /// Extend the lease that `chunk` (a Complete call's first) reports on,
    /// as a heartbeat without progress would; a lease that is no longer
    /// this attempt's is left alone (the result is refused at the end).
    async fn keep_lease(&self, chunk: &v1::CompleteChunk) {
        let Ok(id) = parse_id(&chunk.experiment_id) else {
            return;
        };
        let ttl = ms(self.coordinator.config.lease_ttl);
        let (key, worker, attempt) = (
            chunk.job_key.clone(),
            chunk.worker_id.clone(),
            chunk.attempt,
        );
        let kept = self
            .coordinator
            .with_store(move |s| {
                super::update_with_retry(s, id, &key, |job| {
                    job.state
                        .clone()
                        .heartbeat(attempt, &worker, now_ms(), ttl, None)
                        .ok()
                })
            })
            .await;
        if let Err(err) = kept {
            tracing::debug!(experiment = %id, job = %chunk.job_key, error = %err, "lease not extended while its result arrives");
        }
    }

    /// Lease the next job this worker may run; `gpu` is what the worker
    /// says of itself (older workers do not: then what it registered), and
    /// `running` what its other slots run (not leased to it again).
    async fn try_lease(
        &self,
        worker: &str,
        gpu: Option<bool>,
        running: &Arc<scheduler::Running>,
    ) -> Result<Option<v1::Lease>, CoordinatorError> {
        let ttl = ms(self.coordinator.config.lease_ttl);
        let has_gpu = gpu.unwrap_or_else(|| self.coordinator.worker_has_gpu(worker));
        // A data set this coordinator has not fingerprinted yet (after a
        // restart) is learned before the lease is written, not after: its
        // hashing may take longer than the lease's time to live, which
        // would run out before the worker even had the lease. Each data set
        // is tried once per call: the next pass leases (and a data set that
        // cannot be read then fails the attempt, saying why).
        let mut tried: HashSet<String> = HashSet::new();
        let leased = loop {
            let worker_id = worker.to_string();
            let known = self.coordinator.known_datasets();
            let passed = tried.clone();
            let running = Arc::clone(running);
            let picked = self
                .coordinator
                .with_store(move |s| {
                    for _ in 0..8 {
                        let (experiments, mut active) = super::active_work(s)?;
                        active.retain(|j| !running.runs_lapsed(j));
                        let now = now_ms();
                        let Some(job) = scheduler::pick(&experiments, &active, now, |e| {
                            scheduler::runs_on(e, has_gpu)
                        }) else {
                            return Ok(Picked::Nothing);
                        };
                        if let Some(e) = experiments.iter().find(|e| e.id == job.experiment) {
                            if !known.contains(&e.dataset_sha256)
                                && !passed.contains(&e.dataset_sha256)
                            {
                                return Ok(Picked::UnknownData(e.dataset_sha256.clone()));
                            }
                        }
                        let next = match job.state.clone().lease(&worker_id, now, ttl) {
                            Ok(n) => n,
                            Err(_) => continue,
                        };
                        match s.update_job(job.experiment, &job.key, job.version, next) {
                            Ok(rec) => {
                                let e = s.experiment(job.experiment)?;
                                return Ok(Picked::Leased(Box::new((e, rec))));
                            }
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(Picked::Nothing)
                })
                .await?;
            match picked {
                Picked::Nothing => return Ok(None),
                Picked::Leased(leased) => break *leased,
                Picked::UnknownData(dataset) => {
                    if let Err(err) = self.coordinator.learn_dataset(&dataset).await {
                        tracing::warn!(dataset = %dataset, error = %err, "data set not learned before leasing");
                    }
                    tried.insert(dataset);
                    // No new lease once the coordinator is shutting down.
                    if *self.coordinator.stopping().borrow() {
                        return Ok(None);
                    }
                }
            }
        };
        let (e, job) = leased;
        let attempt = job.state.attempt().unwrap_or(0);
        // What the lease needs besides the job: if it cannot be had (the
        // data set moved since submission), the attempt fails at once with
        // that reason (retried as the spec allows; not left to expire as
        // "stopped heartbeating"), and the worker is told why.
        let data = async {
            let manifest_csv =
                tokio::fs::read_to_string(&e.manifest_path)
                    .await
                    .map_err(|err| {
                        CoordinatorError::FailedPrecondition(format!(
                            "experiment {}: cannot read its manifest {}: {err}",
                            e.id, e.manifest_path
                        ))
                    })?;
            self.coordinator.learn_dataset(&e.dataset_sha256).await?;
            Ok::<_, CoordinatorError>(manifest_csv)
        };
        let manifest_csv = match data.await {
            Ok(m) => m,
            Err(err) => {
                let failed = self
                    .fail_attempt(e.id, &job.key, attempt, worker, err.to_string(), true)
                    .await
                    .is_ok_and(|f| f);
                tracing::warn!(experiment = %e.id, job = %job.key, attempt, error = %err, failed, "job attempt failed: its data cannot be sent");
                if failed {
                    self.coordinator.metrics.attempt("failed");
                }
                self.coordinator.changed.notify_waiters();
                self.coordinator.finish_soon(e.id).await;
                return Err(err);
            }
        };
        tracing::info!(experiment = %e.id, job = %job.key, attempt, worker = %worker, "job leased");
        self.coordinator.metrics.leases_granted.inc();
        self.coordinator.changed.notify_waiters();
        let files = self
            .coordinator
            .files_of(&e.dataset_sha256)
            .into_iter()
            .map(|(path, sha256)| v1::FileRef { path, sha256 })
            .collect();
        let task = match job.task.parse::<Task>() {
            Ok(Task::Screening) => v1::Task::Screening,
            Ok(Task::Malignancy) => v1::Task::Malignancy,
            Err(_) => v1::Task::Unspecified,
        };
        Ok(Some(v1::Lease {
            experiment_id: e.id.to_string(),
            job_key: job.key.clone(),
            attempt,
            spec_toml: e.spec_toml.clone(),
            plan_json: e.plan_json.clone(),
            task: task as i32,
            round: job.round,
            dataset_sha256: e.dataset_sha256.clone(),
            manifest_path: e.manifest_path.clone(),
            manifest_csv,
            heartbeat_interval_seconds: self.coordinator.config.heartbeat_interval.as_secs_f64(),
            files,
        }))
    }
}

#[tonic::async_trait]
impl Workers for WorkersService {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = request.into_inner();
        check_name("worker_name", &r.worker_name)?;
        // The worker's name is its id (workers make it unique: host, process,
        // random suffix), so a worker that registers again after a
        // coordinator restart keeps its leases.
        let id = r.worker_name.trim().to_string();
        let devices: Vec<String> = r
            .devices
            .iter()
            .take(64)
            .map(|d| one_line(&format!("{} ({})", d.name, d.description), 200))
            .collect();
        let registered = self.coordinator.register_worker(
            id.clone(),
            WorkerInfo {
                name: r.worker_name,
                instance: one_line(&r.instance, 200),
                devices: devices.clone(),
                slots: r.slots.max(1),
                last_seen_ms: now_ms(),
            },
        );
        if let Err(quiet) = registered {
            tracing::warn!(worker = %id, "registration refused: the name is in use");
            return Err(CoordinatorError::FailedPrecondition(format!(
                "worker name {id:?} is in use by another worker process (heard from {quiet:.0} s ago); \
                 give each worker its own --name"
            ))
            .into());
        }
        tracing::info!(worker = %id, devices = ?devices, slots = r.slots, "worker registered");
        let c = &self.coordinator.config;
        Ok(Response::new(v1::RegisterResponse {
            worker_id: id,
            heartbeat_interval_seconds: c.heartbeat_interval.as_secs_f64(),
            lease_ttl_seconds: c.lease_ttl.as_secs_f64(),
        }))
    }

    async fn lease(
        &self,
        request: Request<v1::LeaseRequest>,
    ) -> Result<Response<v1::LeaseResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(&r.worker_id)?;
        if r.free_slots == 0 {
            return Ok(Response::new(v1::LeaseResponse { lease: None }));
        }
        // NaN (from a broken client) waits not at all.
        let wait = Duration::from_secs_f64(if r.wait_seconds.is_finite() {
            r.wait_seconds.clamp(0.0, 30.0)
        } else {
            0.0
        });
        let until = Instant::now() + wait;
        let running = Arc::new(running_attempts(&r.worker_id, &r.running, now_ms())?);
        let mut stopping = self.coordinator.stopping();
        loop {
            if *stopping.borrow_and_update() {
                // Shutting down: no new lease; the worker asks again later.
                return Ok(Response::new(v1::LeaseResponse { lease: None }));
            }
            let notified = self.coordinator.changed.notified();
            if let Some(lease) = self.try_lease(&r.worker_id, r.gpu, &running).await? {
                return Ok(Response::new(v1::LeaseResponse { lease: Some(lease) }));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Response::new(v1::LeaseResponse { lease: None }));
            }
            // Wake on a state change, or re-check at least every second (backoff ends).
            tokio::select! {
                _ = tokio::time::timeout(left.min(Duration::from_secs(1)), notified) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(&r.worker_id)?;
        let id = parse_id(&r.experiment_id)?;
        let ttl = ms(self.coordinator.config.lease_ttl);
        let (key, worker, attempt) = (r.job_key.clone(), r.worker_id.clone(), r.attempt);
        let position = r.progress.as_ref().map(position);
        let keep_going = self
            .coordinator
            .with_store(move |s| {
                // Kept going while the attempt is this worker's lease; a
                // store that keeps conflicting is an error (the worker
                // trains on and tries again), not a stop.
                super::update_with_retry(s, id, &key, |job| {
                    let next = job
                        .state
                        .clone()
                        .heartbeat(attempt, &worker, now_ms(), ttl, position)
                        .ok()?;
                    if matches!(job.state, JobState::Pending(_)) {
                        tracing::info!(experiment = %id, job = %key, attempt, worker = %worker, "expired lease taken up again by its worker");
                    }
                    Some(next)
                })
                .map(|written| written.is_some())
            })
            .await?;
        if let (true, Some(p)) = (keep_going, r.progress) {
            if p.images_per_second > 0.0 {
                self.coordinator
                    .metrics
                    .worker_images_per_second
                    .get_or_create(&crate::metrics::WorkerLabel {
                        worker: r.worker_id.clone(),
                    })
                    .set(p.images_per_second);
            }
            self.coordinator
                .record_progress(id, &r.job_key, r.attempt, p);
            self.coordinator.progressed.notify_waiters();
        }
        Ok(Response::new(v1::HeartbeatResponse { keep_going }))
    }

    async fn complete(
        &self,
        request: Request<Streaming<v1::CompleteChunk>>,
    ) -> Result<Response<v1::CompleteResponse>, Status> {
        let mut stream = request.into_inner();
        let mut head: Option<v1::CompleteChunk> = None;
        let mut predictions = Vec::new();
        let mut history = Vec::new();
        let mut finished = false;
        // A large result on a slow link can take longer to arrive than the
        // lease lives, and its worker sends no heartbeats meanwhile: the
        // chunks arriving keep the lease (a third of its time to live apart).
        let ttl = self.coordinator.config.lease_ttl;
        let mut kept: Option<Instant> = None;
        let mut text = 0usize;
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            text = text.saturating_add(result_text(&chunk));
            if text > MAX_RESULT_TEXT || chunk.provenance_json.len() > MAX_PROVENANCE_BYTES {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "a result holds at most {} MiB of names and text, and a provenance of at most {} KiB",
                    MAX_RESULT_TEXT >> 20,
                    MAX_PROVENANCE_BYTES >> 10
                ))
                .into());
            }
            if let Some(h) = &head {
                if (h.experiment_id.as_str(), h.job_key.as_str(), h.attempt)
                    != (
                        chunk.experiment_id.as_str(),
                        chunk.job_key.as_str(),
                        chunk.attempt,
                    )
                {
                    return Err(CoordinatorError::InvalidArgument(
                        "chunks of one Complete call name different jobs".into(),
                    )
                    .into());
                }
            }
            if head.is_none() {
                // A caller that is no worker is refused before anything
                // it sends is held.
                self.check_worker(&chunk.worker_id)?;
            }
            if predictions.len() + chunk.predictions.len() > MAX_PREDICTIONS
                || history.len() + chunk.history.len() > MAX_HISTORY
            {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "a result holds at most {MAX_PREDICTIONS} predictions and {MAX_HISTORY} epochs"
                ))
                .into());
            }
            predictions.append(&mut chunk.predictions);
            history.append(&mut chunk.history);
            finished = chunk.last;
            if head.is_none() {
                head = Some(chunk);
            }
            // From the first piece of a result in several, then every
            // third of the lease's time to live.
            let due = kept.is_none_or(|k| k.elapsed() >= ttl / 3);
            if let (Some(h), false, true) = (&head, finished, due) {
                kept = Some(Instant::now());
                self.keep_lease(h).await;
            }
        }
        let head = head
            .ok_or_else(|| CoordinatorError::InvalidArgument("Complete sent no chunks".into()))?;
        if !finished {
            return Err(CoordinatorError::InvalidArgument(
                "Complete ended without its last chunk".into(),
            )
            .into());
        }
        self.check_worker(&head.worker_id)?;
        let id = parse_id(&head.experiment_id)?;
        let key = head.job_key.clone();
        let (e, job) = self
            .coordinator
            .with_store({
                let key = key.clone();
                move |s| Ok((s.experiment(id)?, s.job(id, &key)?))
            })
            .await?;
        if let Err(why) = job.state.check_worker(head.attempt, &head.worker_id) {
            tracing::warn!(experiment = %id, job = %key, attempt = head.attempt, worker = %head.worker_id, reason = %why, "result from another worker than the lease's refused");
            return Ok(Response::new(v1::CompleteResponse {
                accepted: false,
                duplicate: false,
                message: format!("refused: {why}"),
            }));
        }
        // A stored spec that no longer parses (a spec format change since
        // submission) must not cost the trained result: the default
        // threshold is used, and said.
        let threshold = match spec_of(&e) {
            Ok(spec) => spec.train.threshold,
            Err(err) => {
                let fallback = crossfold_shared::spec::TrainSpec::default().threshold;
                tracing::warn!(experiment = %id, job = %key, error = %err, threshold = fallback, "stored spec no longer parses: the result's statistics use the default threshold");
                fallback
            }
        };
        // Statistics and serialisation of up to a million predictions: off
        // the async threads.
        let (job_task, job_round) = (job.task.clone(), job.round);
        let (head_for_doc, key_for_doc) = (head.clone(), key.clone());
        let plan_json = e.plan_json.clone();
        let doc = tokio::task::spawn_blocking(move || -> Result<String, CoordinatorError> {
            let (head, key, job_task) = (head_for_doc, key_for_doc, job_task);
            let task: Task = job_task.parse().map_err(CoordinatorError::Internal)?;
            let scored: Vec<ScoredImage> = predictions
                .iter()
                .map(|p| ScoredImage {
                    image: p.image.clone(),
                    patient: p.patient.clone(),
                    label: p.label.clone(),
                    score: p.score,
                    site: p.site.clone(),
                    subtype: p.subtype.clone(),
                })
                .collect();
            let provenance = if head.provenance_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&head.provenance_json).map_err(|err| {
                    CoordinatorError::InvalidArgument(format!("provenance_json: {err}"))
                })?
            };
            // Exactly the round's test images: a missing, stray or doubled
            // prediction would change every count without a trace.
            match test_set_mismatch(&plan_json, &job_task, job_round, &scored) {
                Ok(None) => {}
                Ok(Some(why)) => return Err(CoordinatorError::InvalidArgument(why)),
                Err(why) => {
                    tracing::warn!(experiment = %id, job = %key, reason = %why, "result's images not checked against the split plan")
                }
            }
            let stats =
                round_stats(task, &scored, threshold).map_err(CoordinatorError::InvalidArgument)?;
            let history_json: Vec<serde_json::Value> = history
                .iter()
                .map(|h| {
                    serde_json::json!({"epoch": h.epoch, "train_loss": h.train_loss, "validation_loss": h.validation_loss,
                        "validation_auc": h.validation_auc, "learning_rate": h.learning_rate, "seconds": h.seconds})
                })
                .collect();
            let youden_threshold = match head.youden_threshold {
                Some(t) if !t.is_finite() => {
                    return Err(CoordinatorError::InvalidArgument(format!(
                        "youden_threshold = {t}: must be a finite number"
                    )))
                }
                other => other,
            };
            let result = JobResult {
                task: job_task.clone(),
                round: job_round,
                attempt: head.attempt,
                worker_id: head.worker_id.clone(),
                predictions: scored,
                history: serde_json::Value::Array(history_json),
                stats,
                provenance,
                youden_threshold,
                warnings: bounded_warnings(&head.warnings),
                timing: timing_of(head.timing.as_ref(), &key),
            };
            let doc = serde_json::to_string(&result)
                .map_err(|err| CoordinatorError::Internal(err.to_string()))?;
            Ok(doc)
        })
        .await
        .map_err(|err| CoordinatorError::Internal(format!("result task: {err}")))?;
        let (attempt, worker) = (head.attempt, head.worker_id.clone());
        let doc = match doc {
            Ok(doc) => doc,
            // The lease holder's result cannot be taken: its attempt fails
            // now, saying why (retried as the spec allows), rather than
            // expiring later as "stopped heartbeating".
            Err(err @ CoordinatorError::InvalidArgument(_)) => {
                let why = format!("result refused: {err}");
                let failed = self
                    .fail_attempt(id, &key, attempt, &worker, why.clone(), true)
                    .await
                    .is_ok_and(|f| f);
                tracing::warn!(experiment = %id, job = %key, attempt, worker = %worker, reason = %why, failed, "job attempt failed: its result was refused");
                if failed {
                    self.coordinator.metrics.attempt("failed");
                    self.coordinator.changed.notify_waiters();
                    self.coordinator.finish_soon(id).await;
                }
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        let outcome = self
            .coordinator
            .with_store(move |s| {
                match s.commit_result(id, &key, attempt, &worker, now_ms(), &doc) {
                    Ok(committed) => Ok(Ok(committed)),
                    Err(e @ (StoreError::Conflict { .. } | StoreError::Transition { .. })) => {
                        Ok(Err(e.to_string()))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        match outcome {
            Ok(committed) => {
                tracing::info!(experiment = %id, job = %head.job_key, attempt, committed, "result received");
                if committed {
                    let m = &self.coordinator.metrics;
                    m.attempt("succeeded");
                    let lease = match &job.state {
                        JobState::Leased(l) => Some(l),
                        JobState::Pending(p) => p.lapsed.as_ref(),
                        _ => None,
                    };
                    if let Some(l) = lease {
                        let seconds = (now_ms() - l.leased_at_ms).max(0) as f64 / 1000.0;
                        m.job_duration
                            .get_or_create(&crate::metrics::TaskLabel {
                                task: job.task.clone(),
                            })
                            .observe(seconds);
                    }
                }
                self.coordinator.changed.notify_waiters();
                // The result is stored: the summary's fate is not the worker's.
                self.coordinator.finish_soon(id).await;
                Ok(Response::new(v1::CompleteResponse {
                    accepted: true,
                    duplicate: !committed,
                    message: if committed {
                        "committed".into()
                    } else {
                        "already committed; counted once".into()
                    },
                }))
            }
            Err(why) => {
                tracing::warn!(experiment = %id, job = %head.job_key, attempt, reason = %why, "late or stale result refused");
                Ok(Response::new(v1::CompleteResponse {
                    accepted: false,
                    duplicate: false,
                    message: format!("refused: {why}"),
                }))
            }
        }
    }

    async fn fail(
        &self,
        request: Request<v1::FailRequest>,
    ) -> Result<Response<v1::FailResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(&r.worker_id)?;
        let id = parse_id(&r.experiment_id)?;
        let error = one_line(&r.error, MAX_ERROR_BYTES);
        let changed = self
            .fail_attempt(
                id,
                &r.job_key,
                r.attempt,
                &r.worker_id,
                error.clone(),
                r.retryable,
            )
            .await?;
        tracing::warn!(experiment = %id, job = %r.job_key, attempt = r.attempt, error = %error, stale = !changed, "job attempt failed");
        if changed {
            self.coordinator.metrics.attempt("failed");
        }
        self.coordinator.changed.notify_waiters();
        self.coordinator.finish_soon(id).await;
        Ok(Response::new(v1::FailResponse {}))
    }

    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(&r.worker_id)?;
        let id = parse_id(&r.experiment_id)?;
        let (key, attempt, worker) = (r.job_key.clone(), r.attempt, r.worker_id.clone());
        let changed = self
            .coordinator
            .with_store(move |s| {
                super::update_with_retry(s, id, &key, |job| {
                    job.state.clone().release(attempt, &worker).ok()
                })
                .map(|written| written.is_some())
            })
            .await?;
        tracing::info!(experiment = %id, job = %r.job_key, attempt = r.attempt, stale = !changed, "lease released");
        if changed {
            self.coordinator.metrics.attempt("released");
        }
        self.coordinator.changed.notify_waiters();
        Ok(Response::new(v1::ReleaseResponse {}))
    }
}

/// A gap between reaper passes (ms) taken for a pause of the process.
pub const REAPER_GAP_MS: i64 = 10_000;

/// The most attempts a lease request may list as running: far more slots
/// than one worker process has.
const MAX_RUNNING: usize = 1024;

/// How long before a lease request came the worker may have made its list
/// of running attempts.
const RUNNING_LIST_AGE_MS: i64 = 2_000;

/// What a lease request, received at `received_ms`, says the worker's
/// other slots run. An entry whose experiment id is not a UUID names no
/// job here and is left out.
fn running_attempts(
    worker: &str,
    running: &[v1::RunningAttempt],
    received_ms: i64,
) -> Result<scheduler::Running, CoordinatorError> {
    if running.len() > MAX_RUNNING {
        return Err(CoordinatorError::InvalidArgument(format!(
            "running lists {} attempts; at most {MAX_RUNNING}",
            running.len()
        )));
    }
    let attempts = running
        .iter()
        .filter_map(|a| match parse_id(&a.experiment_id) {
            Ok(id) => Some((id, a.job_key.clone(), a.attempt)),
            Err(err) => {
                tracing::warn!(worker = %worker, error = %err, "running attempt left out of a lease request");
                None
            }
        })
        .collect();
    Ok(scheduler::Running {
        worker_id: worker.to_string(),
        attempts,
        listed_at_ms: received_ms - RUNNING_LIST_AGE_MS,
    })
}

/// What one pass of [`WorkersService::try_lease`] found.
enum Picked {
    Nothing,
    Leased(Box<(ExperimentRecord, JobRecord)>),
    /// The next job's data set, not fingerprinted by this coordinator yet.
    UnknownData(String),
}

/// Expire, stall-check and time-limit every leased job; cancel the jobs of
/// cancelled experiments (left by coordinators older than the one-transaction cancel). Run periodically by the server.
pub async fn reap(coordinator: &Coordinator) -> Result<(), CoordinatorError> {
    let cfg = coordinator.config.clone();
    // The reaper runs every 500 ms. A much longer gap since the end of its
    // last pass means the coordinator was not running (a laptop suspended,
    // SIGSTOP) or the wall clock jumped: its workers were no more silent
    // than it was, so their leases get a grace period, as after a restart,
    // instead of all expiring at once before the first heartbeat gets
    // through. (Measured from the end of a pass: a slow pass is no pause.)
    let now = now_ms();
    let last = coordinator
        .last_reap_ms
        .load(std::sync::atomic::Ordering::SeqCst);
    let pass_done = || {
        coordinator
            .last_reap_ms
            .store(now_ms(), std::sync::atomic::Ordering::SeqCst)
    };
    if last > 0 && now.saturating_sub(last) > REAPER_GAP_MS {
        let grace = ms(cfg.restart_grace).max(ms(cfg.lease_ttl));
        let renewed = coordinator
            .with_store(move |s| reclaim_leases(s, now, grace, Reclaim::Pause(now - last)))
            .await?;
        tracing::warn!(gap_seconds = (now - last) / 1000, leases = renewed, "the reaper had not run for a while (coordinator suspended or stopped, or the clock jumped): leases get a grace period instead of expiring");
        pass_done();
        return Ok(());
    }
    let (changed, leased) = coordinator
        .with_store(move |s| {
            let (experiments, active) = super::active_work(s)?;
            let mut changed = Vec::new();
            // The attempts leased as the reaper found them (one reaped now
            // is forgotten at the next pass).
            let mut leased = std::collections::HashSet::new();
            let by_id: std::collections::HashMap<_, _> =
                experiments.iter().map(|e| (e.id, e)).collect();
            // Each experiment's retry policy read from its spec once a pass.
            let mut policies = std::collections::HashMap::new();
            for job in active {
                if let JobState::Leased(l) = &job.state {
                    leased.insert((job.experiment, job.key.clone(), l.attempt));
                }
                let Some(e) = by_id.get(&job.experiment) else {
                    continue;
                };
                // A pending job can neither expire nor stall.
                if !e.cancelled && !matches!(job.state, JobState::Leased(_)) {
                    continue;
                }
                let now = now_ms();
                let next = if e.cancelled {
                    Some(job.state.cancel())
                } else {
                    let policy = *policies.entry(e.id).or_insert_with(|| stored_policy(e));
                    let st = job.state.clone();
                    st.clone()
                        .expire(now, &policy)
                        .or_else(|_| st.clone().stall(now, ms(cfg.stall_timeout), &policy))
                        .or_else(|_| st.time_limit(now, ms(cfg.job_time_limit), &policy))
                        .ok()
                };
                if let Some(next) = next {
                    if next != job.state
                        && s.update_job(job.experiment, &job.key, job.version, next.clone())
                            .is_ok()
                    {
                        let was_leased = matches!(job.state, JobState::Leased(_));
                        changed.push((job.experiment, job.key.clone(), next, was_leased));
                    }
                }
            }
            Ok((changed, leased))
        })
        .await?;
    coordinator.forget(&leased, now_ms());
    for (id, key, state, was_leased) in &changed {
        tracing::warn!(experiment = %id, job = %key, state = state.name(), "lease reaped");
        if !matches!(state, JobState::Cancelled(_)) {
            coordinator.metrics.leases_expired.inc();
            coordinator.metrics.attempt("reaped");
        } else if *was_leased {
            coordinator.metrics.attempt("cancelled");
        }
        if state.is_terminal() {
            coordinator.finish_soon(*id).await;
        }
    }
    if !changed.is_empty() {
        coordinator.changed.notify_waiters();
    }
    coordinator.retry_unfinished(now_ms()).await;
    pass_done();
    Ok(())
}

/// What [`reclaim_leases`] does with a leased job.
#[derive(Debug, Clone, Copy)]
enum Reclaim {
    /// After a restart: a grace period for its worker to report.
    Restart,
    /// After a restart whose workers went with the coordinator: queued
    /// again without counting an attempt.
    Release,
    /// After the coordinator was paused this many ms: a grace period, and
    /// the pause is not counted towards the per-job time limit.
    Pause(i64),
}

/// Give every leased job a grace period of `grace` ms from `now` for its
/// worker to report (after a restart, or a pause of the coordinator), or
/// queue it again without counting an attempt (its worker is gone with the
/// coordinator that leased it: a release by the lease's own attempt and
/// worker is never refused). Returns how many changed.
fn reclaim_leases(
    s: &dyn crate::store::Store,
    now: i64,
    grace: i64,
    how: Reclaim,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for job in s.active_jobs()? {
        if let JobState::Leased(l) = &job.state {
            let released = matches!(how, Reclaim::Release)
                .then(|| job.state.release(l.attempt, &l.worker_id).ok())
                .flatten();
            let next = released.unwrap_or_else(|| match how {
                Reclaim::Pause(gap) => job.state.reclaim_after_pause(now, grace, gap),
                _ => job.state.reclaim_after_restart(now, grace),
            });
            n += usize::from(
                s.update_job(job.experiment, &job.key, job.version, next)
                    .is_ok(),
            );
        }
    }
    Ok(n)
}

/// After a restart, give every leased job a grace period for its worker.
pub async fn recover(coordinator: &Coordinator) -> Result<usize, CoordinatorError> {
    let grace = ms(coordinator.config.restart_grace);
    let release = coordinator.config.release_leases_on_start;
    let n = coordinator
        .with_store(move |s| {
            let how = if release {
                Reclaim::Release
            } else {
                Reclaim::Restart
            };
            // Experiments whose last job ended just before a crash get their
            // summary; one that cannot (an unreadable row) costs that
            // experiment its summary, not the coordinator its start.
            for e in s.experiment_heads()? {
                if e.summary_json.is_some() {
                    continue;
                }
                let summarised = (|| -> Result<(), CoordinatorError> {
                    let jobs = s.jobs(e.id)?;
                    if !jobs.iter().all(|j| j.state.is_terminal()) {
                        return Ok(());
                    }
                    let mut results = super::parse_results(&s.results(e.id)?)?;
                    let full = s.experiment(e.id)?;
                    let summary = super::summary_of(&mut results, &full);
                    s.set_summary_if_unchanged(e.id, &summary.to_string(), &jobs)?;
                    Ok(())
                })();
                if let Err(err) = summarised {
                    tracing::error!(experiment = %e.id, error = %err, "summary not made at start");
                }
            }
            // Last, so that the workers' grace period is counted from when
            // this coordinator is about to serve, not spent on the above.
            reclaim_leases(s, now_ms(), grace, how)
        })
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::tests::{experiment, jobs};
    use crate::store::{MemoryStore, Store};

    /// A coordinator over a store with one experiment whose job "a" is
    /// leased (attempt 1, worker "gone") and "b" pending.
    fn restarted(release: bool) -> (Arc<Coordinator>, uuid::Uuid) {
        let store = Arc::new(MemoryStore::new());
        let (e, _) = store
            .create_experiment(experiment(1), jobs(&["a", "b"]))
            .unwrap();
        let a = &store.jobs(e.id).unwrap()[0];
        let leased = a.state.lease("gone", now_ms(), 30_000).unwrap();
        store.update_job(e.id, "a", a.version, leased).unwrap();
        let mut config = Config::new("unused.db".into(), Vec::new());
        config.release_leases_on_start = release;
        (Coordinator::new(store, config), e.id)
    }

    #[test]
    fn a_results_timing_is_kept_when_sound_and_dropped_when_not() {
        let sent = v1::JobTiming {
            preparation: 0.3,
            startup: 0.1,
            data_loading: 0.05,
            training: 3.5,
            validation: Some(0.25),
            evaluation: 0.02,
            total: 4.25,
            images_per_second: 2650.0,
        };
        let kept = timing_of(Some(&sent), "screening-r01").unwrap();
        assert_eq!(
            (kept.total, kept.images_per_second, kept.validation),
            (4.25, 2650.0, Some(0.25))
        );
        assert_eq!(timing_of(None, "screening-r01"), None);
        // A worker older than the validation phase sends none.
        let older = v1::JobTiming {
            validation: None,
            ..sent
        };
        assert_eq!(
            timing_of(Some(&older), "screening-r01").unwrap().validation,
            None
        );
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let t = v1::JobTiming {
                training: bad,
                ..sent
            };
            assert_eq!(timing_of(Some(&t), "screening-r01"), None, "{bad}");
            let t = v1::JobTiming {
                validation: Some(bad),
                ..sent
            };
            assert_eq!(timing_of(Some(&t), "screening-r01"), None, "{bad}");
        }
        let negative = JobTiming {
            training: -2.0,
            ..kept
        };
        assert_eq!(
            negative.checked().unwrap_err(),
            "timing.training = -2: not a number of at least 0"
        );
    }

    /// A store with one experiment whose one job, "a", is leased to "w".
    fn one_leased_job() -> (Arc<MemoryStore>, crate::store::ExperimentRecord) {
        let store = Arc::new(MemoryStore::new());
        let (e, _) = store
            .create_experiment(experiment(1), jobs(&["a"]))
            .unwrap();
        let a = store.job(e.id, "a").unwrap();
        let leased = a.state.lease("w", now_ms(), 30_000).unwrap();
        store.update_job(e.id, "a", a.version, leased).unwrap();
        (store, e)
    }

    /// A coordinator with one experiment over a data set of `rows` (file,
    /// label, patient) written in `dir`, each file holding its own name,
    /// under the data-set id `id` (its fingerprint when `None`); and that id.
    fn one_data_set(
        dir: &std::path::Path,
        rows: &[(&str, &str, &str)],
        id: Option<String>,
    ) -> (Arc<Coordinator>, String) {
        let mut csv = String::from("path,label,patient_id\n");
        for (file, label, patient) in rows {
            std::fs::write(dir.join(file), file.as_bytes()).unwrap();
            csv.push_str(&format!("{file},{label},{patient}\n"));
        }
        let manifest = dir.join("manifest.csv");
        std::fs::write(&manifest, csv).unwrap();
        let ds = id.unwrap_or_else(|| {
            crossfold_shared::dataset::fingerprint(
                &crossfold_shared::manifest::Manifest::load(&manifest).unwrap(),
            )
            .unwrap()
            .sha256
        });
        let store = Arc::new(MemoryStore::new());
        let mut e = experiment(1);
        e.manifest_path = manifest.display().to_string();
        e.dataset_sha256 = ds.clone();
        store.create_experiment(e, jobs(&["a"])).unwrap();
        let c = Coordinator::new(store, Config::new("unused.db".into(), Vec::new()));
        (c, ds)
    }

    #[tokio::test]
    async fn a_data_set_is_learned_even_when_its_first_caller_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [("a.png", "normal", "p1"), ("b.png", "benign", "p2")];
        let (c, ds) = one_data_set(dir.path(), &rows, None);
        // While another data set is being learned (the lock held), a
        // data set no experiment uses is refused at once.
        let held = Arc::clone(&c.learning).lock_owned().await;
        let limit = Duration::from_secs(10);
        let err = tokio::time::timeout(limit, c.learn_dataset("nope"))
            .await
            .expect("not kept waiting")
            .unwrap_err();
        assert!(
            err.to_string().contains("no experiment uses data set nope"),
            "{err}"
        );
        // A caller that gives up while it waits...
        let first = tokio::spawn({
            let c = c.clone();
            let ds = ds.clone();
            async move { c.learn_dataset(&ds).await }
        });
        tokio::task::yield_now().await;
        first.abort();
        drop(held);
        // ... leaves nothing half-done: the data set is learned.
        tokio::time::timeout(limit, c.learn_dataset(&ds))
            .await
            .unwrap()
            .unwrap();
        assert!(c.knows_dataset(&ds));
        assert_eq!(c.files_of(&ds).len(), 2);
    }

    #[tokio::test]
    async fn a_data_set_changed_since_submission_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = one_data_set(
            dir.path(),
            &[("a.png", "normal", "p1")],
            Some("0".repeat(64)),
        );
        let err = c.learn_dataset(&"0".repeat(64)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, CoordinatorError::FailedPrecondition(_))
                && text.contains("changed since it was submitted")
                && text.contains("manifest.csv"),
            "{text}"
        );
        // Asked again soon: the same answer, without reading the files
        // (they are gone now; reading them would say so instead).
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        let again = c.learn_dataset(&"0".repeat(64)).await.unwrap_err();
        assert_eq!(again.to_string(), text);
        assert!(!c.knows_dataset(&"0".repeat(64)));
    }

    #[tokio::test]
    async fn a_data_set_that_cannot_be_read_now_is_read_again_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ds) = one_data_set(dir.path(), &[("a.png", "normal", "p1")], None);
        let manifest = dir.path().join("manifest.csv");
        // The manifest away for a moment (a network file system's blip)...
        let away = dir.path().join("manifest.away");
        std::fs::rename(&manifest, &away).unwrap();
        assert!(c.learn_dataset(&ds).await.is_err());
        // ... and back: read again, not answered from memory.
        std::fs::rename(&away, &manifest).unwrap();
        c.learn_dataset(&ds).await.unwrap();
        assert!(c.knows_dataset(&ds));
    }

    #[tokio::test]
    async fn after_a_pause_of_the_coordinator_leases_get_a_grace_period_instead_of_expiring() {
        for (paused, want) in [(true, "leased"), (false, "pending")] {
            let store = Arc::new(MemoryStore::new());
            let (e, _) = store
                .create_experiment(experiment(1), jobs(&["a"]))
                .unwrap();
            // Leased two minutes ago with a 30 s lease: its deadline passed.
            let a = store.job(e.id, "a").unwrap();
            let leased = a.state.lease("w", now_ms() - 120_000, 30_000).unwrap();
            store.update_job(e.id, "a", a.version, leased).unwrap();
            let c = Coordinator::new(store.clone(), Config::new("unused.db".into(), Vec::new()));
            let gap = if paused { 60_000 } else { 500 };
            c.last_reap_ms
                .store(now_ms() - gap, std::sync::atomic::Ordering::SeqCst);
            reap(&c).await.unwrap();
            let a = store.job(e.id, "a").unwrap();
            assert_eq!(a.state.name(), want, "paused {paused}: {:?}", a.state);
            if let JobState::Leased(l) = &a.state {
                assert!(l.deadline_ms >= now_ms() + 50_000, "{l:?}");
                // The next pass, on time, leaves it alone.
                reap(&c).await.unwrap();
                assert_eq!(store.job(e.id, "a").unwrap().state.name(), "leased");
            }
        }
    }

    #[test]
    fn a_write_between_the_read_and_the_write_is_read_again_not_refused() {
        let (store, e) = one_leased_job();
        let store = store.as_ref();
        // A heartbeat lands between the release's read and its write.
        let beat = |job: &crate::store::JobRecord| {
            let attempt = job.state.attempt().unwrap();
            let next = job
                .state
                .clone()
                .heartbeat(attempt, "w", now_ms(), 30_000, None);
            store
                .update_job(e.id, "a", job.version, next.unwrap())
                .unwrap();
        };
        let mut reads = 0;
        let written = super::super::update_with_retry(store, e.id, "a", |job| {
            reads += 1;
            if reads == 1 {
                beat(job);
            }
            job.state.clone().release(1, "w").ok()
        })
        .unwrap();
        assert_eq!(reads, 2);
        assert_eq!(written.unwrap().state.name(), "pending");
        // A job written under it every time: given up after 8 reads.
        let b = store.job(e.id, "a").unwrap();
        let leased = b.state.lease("w", now_ms(), 30_000).unwrap();
        store.update_job(e.id, "a", b.version, leased).unwrap();
        let mut reads = 0;
        let busy = super::super::update_with_retry(store, e.id, "a", |job| {
            reads += 1;
            beat(job);
            job.state.clone().release(2, "w").ok()
        });
        assert!(matches!(busy, Err(StoreError::Conflict { .. })), "{busy:?}");
        assert_eq!(reads, 8);
        // Declined: nothing written.
        let before = store.job(e.id, "a").unwrap();
        let none = super::super::update_with_retry(store, e.id, "a", |_| None).unwrap();
        assert!(none.is_none());
        assert_eq!(store.job(e.id, "a").unwrap(), before);
    }

    #[tokio::test]
    async fn a_summary_that_cannot_be_made_is_tried_again_later_not_returned() {
        let (store, e) = one_leased_job();
        // A stored result that does not parse: aggregating fails.
        assert!(store
            .commit_result(e.id, "a", 1, "w", now_ms(), "{}")
            .unwrap());
        let c = Coordinator::new(store.clone(), Config::new("unused.db".into(), Vec::new()));
        assert!(c.maybe_finish(e.id).await.is_err());
        c.finish_soon(e.id).await;
        assert_eq!(c.unfinished(), [e.id]);
        // Not before its time; then tried again (and, failing, kept).
        c.retry_unfinished(now_ms()).await;
        assert_eq!(c.unfinished(), [e.id]);
        c.retry_unfinished(now_ms() + Coordinator::FINISH_RETRY_MS + 1)
            .await;
        assert_eq!(c.unfinished(), [e.id]);
        assert_eq!(store.experiment(e.id).unwrap().summary_json, None);
        // Nor does it stop a coordinator from starting on that store.
        assert_eq!(recover(&c).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_restart_keeps_leases_for_their_workers_or_releases_them() {
        // A standalone coordinator: the lease waits for its worker.
        let (c, id) = restarted(false);
        assert_eq!(recover(&c).await.unwrap(), 1);
        let jobs = c.with_store(move |s| s.jobs(id)).await.unwrap();
        assert_eq!(jobs[0].state.name(), "leased");
        // `crossfold run`'s: the job is queued again at once, and the lost
        // attempt does not count against the retry budget.
        let (c, id) = restarted(true);
        assert_eq!(recover(&c).await.unwrap(), 1);
        let jobs = c.with_store(move |s| s.jobs(id)).await.unwrap();
        assert_eq!(
            jobs[0].state,
            JobState::Pending(crate::state::Pending {
                attempts: 1,
                released: 1,
                not_before_ms: 0,
                last_error: None,
                lapsed: None,
            })
        );
        assert_eq!(jobs[1].state.name(), "pending");
    }

    fn fail_request(id: uuid::Uuid, worker: &str) -> Request<v1::FailRequest> {
        Request::new(v1::FailRequest {
            worker_id: worker.into(),
            experiment_id: id.to_string(),
            job_key: "a".into(),
            attempt: 1,
            error: "out of memory".into(),
            retryable: true,
        })
    }

    #[tokio::test]
    async fn a_failure_from_another_worker_than_the_leases_is_ignored() {
        let (c, id) = restarted(false);
        let service = WorkersService {
            coordinator: c.clone(),
        };
        service.fail(fail_request(id, "intruder")).await.unwrap();
        let a = c.with_store(move |s| s.job(id, "a")).await.unwrap();
        assert_eq!(a.state.name(), "leased", "{:?}", a.state);
        // A long error with a backtrace is kept as one bounded line.
        let mut long = fail_request(id, "gone");
        long.get_mut().error = format!("out of memory\n{}", "at frame\n".repeat(10_000));
        service.fail(long).await.unwrap();
        let a = c.with_store(move |s| s.job(id, "a")).await.unwrap();
        match a.state {
            JobState::Pending(p) => {
                let e = p.last_error.unwrap_or_default();
                assert!(e.starts_with("out of memory at frame"), "{e}");
                assert_eq!(e.len(), MAX_ERROR_BYTES);
                assert!(!e.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_is_held_by_its_worker_for_a_lease_ttl_and_not_after_the_clock_steps_back() {
        let c = Coordinator::new(
            Arc::new(MemoryStore::new()),
            Config::new("unused.db".into(), Vec::new()),
        );
        let worker = |instance: &str, last_seen_ms| WorkerInfo {
            name: "w".into(),
            instance: instance.into(),
            devices: Vec::new(),
            slots: 1,
            last_seen_ms,
        };
        c.register_worker("w".into(), worker("one", now_ms()))
            .unwrap();
        // Another process of that name while the first is heard from: refused.
        assert!(c
            .register_worker("w".into(), worker("two", now_ms()))
            .is_err());
        // The first one "heard from" an hour ahead (the clock stepped back
        // since): no reason to refuse the name.
        c.register_worker("w".into(), worker("one", now_ms() + 3_600_000))
            .unwrap();
        c.register_worker("w".into(), worker("two", now_ms()))
            .unwrap();
    }

    #[test]
    fn preparation_counts_as_progress_and_training_always_counts_past_it() {
        let prep = |n| v1::Progress {
            preparing: n,
            ..Default::default()
        };
        let at = |epoch, step| v1::Progress {
            epoch,
            epochs: 30,
            step,
            steps_per_epoch: 13,
            preparing: 5_000_000,
            ..Default::default()
        };
        assert!(position(&prep(0)) < position(&prep(1)));
        assert!(position(&prep(u64::MAX)) < position(&at(1, 0)));
        assert!(position(&at(1, 0)) < position(&at(1, 1)));
        assert!(position(&at(1, 13)) <= position(&at(2, 0)));
        assert!(position(&at(2, 1)) < position(&at(30, 13)));
        // Counts from the network do not overflow.
        let huge = v1::Progress {
            epoch: u32::MAX,
            step: u32::MAX,
            steps_per_epoch: u32::MAX,
            ..Default::default()
        };
        assert!(position(&huge) > position(&at(30, 13)));
    }

    #[test]
    fn a_results_text_counts_every_name_it_carries() {
        let chunk = v1::CompleteChunk {
            predictions: vec![v1::Prediction {
                image: "a.png".into(),
                label: "normal".into(),
                patient: "p1".into(),
                site: "femur".into(),
                subtype: String::new(),
                score: 0.5,
            }],
            warnings: vec!["w".repeat(10)],
            provenance_json: "{}".into(),
            ..Default::default()
        };
        assert_eq!(result_text(&chunk), 5 + 6 + 2 + 5 + 10 + 2);
    }

    #[test]
    fn a_worker_name_is_one_bounded_line() {
        for ok in ["w", "node-7.cluster.example.org-1234-ab12"] {
            assert!(check_name("worker_name", ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "is empty"),
            ("  ", "is empty"),
            ("a\nb", "control character"),
        ] {
            let err = check_name("worker_name", bad).unwrap_err().to_string();
            assert!(err.contains("worker_name") && err.contains(says), "{err}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let err = check_name("worker_id", &long).unwrap_err().to_string();
        assert!(err.contains("513 bytes long; at most 512"), "{err}");
        assert!(err.len() < 200, "the name is echoed cut short: {err}");
    }

    #[tokio::test]
    async fn leases_of_an_experiment_whose_stored_spec_no_longer_parses_still_end() {
        let store = Arc::new(MemoryStore::new());
        let e = crate::store::ExperimentRecord {
            spec_toml: "[train]\narch = \"resnet1000\"\n".into(),
            ..experiment(1)
        };
        let (e, _) = store.create_experiment(e, jobs(&["a"])).unwrap();
        let a = &store.jobs(e.id).unwrap()[0];
        // Leased long ago: the lease's deadline has passed.
        let leased = a.state.lease("gone", now_ms() - 60_000, 1_000).unwrap();
        store.update_job(e.id, "a", a.version, leased).unwrap();
        let c = Coordinator::new(store, Config::new("unused.db".into(), Vec::new()));
        assert!(spec_of(&c.store.experiment(e.id).unwrap()).is_err());
        reap(&c).await.unwrap();
        let a = c.store.job(e.id, "a").unwrap();
        // Expired under the default policy (3 attempts): queued again.
        assert_eq!(a.state.name(), "pending", "{:?}", a.state);
        // And a worker's failure report is taken, not refused.
        let service = WorkersService {
            coordinator: c.clone(),
        };
        // Leased again after its backoff.
        let later = now_ms() + crate::state::MAX_BACKOFF_MS;
        let leased = a.state.lease("w", later, 30_000).unwrap();
        c.store.update_job(e.id, "a", a.version, leased).unwrap();
        let mut failed = fail_request(e.id, "w");
        failed.get_mut().attempt = 2;
        failed.get_mut().retryable = false;
        service.fail(failed).await.unwrap();
        assert_eq!(c.store.job(e.id, "a").unwrap().state.name(), "failed");
    }

    #[tokio::test]
    async fn the_reaper_forgets_finished_progress_and_long_gone_workers() {
        let (c, id) = restarted(false);
        let progress = v1::Progress::default();
        // Attempt 1 of "a" is leased; "b" is not (its attempt is over).
        c.record_progress(id, "a", 1, progress);
        c.record_progress(id, "b", 1, progress);
        let worker = |last_seen_ms| WorkerInfo {
            name: String::new(),
            instance: String::new(),
            devices: Vec::new(),
            slots: 1,
            last_seen_ms,
        };
        let hour = crate::service::FORGET_WORKERS_AFTER.as_millis() as i64;
        c.register_worker("recent".into(), worker(now_ms() - hour / 2))
            .unwrap();
        c.register_worker("gone".into(), worker(now_ms() - 2 * hour))
            .unwrap();
        assert_eq!(c.remembered(), (2, 2));
        reap(&c).await.unwrap();
        assert_eq!(c.remembered(), (1, 1));
        assert!(c.progress_of(id, "a", 1).is_some());
        assert!(c.progress_of(id, "b", 1).is_none());
        assert!(c.touch_worker("recent") && !c.touch_worker("gone"));
    }

    #[test]
    fn warnings_are_kept_as_bounded_single_lines() {
        assert!(bounded_warnings(&[]).is_empty());
        let kept = bounded_warnings(&["a\nb\tc".to_string()]);
        assert_eq!(kept, ["a b c"]);
        // Cut at a character boundary: 'é' is two bytes.
        let long = "é".repeat(MAX_WARNING_BYTES);
        let kept = bounded_warnings(&[long]);
        assert!(kept[0].len() <= MAX_WARNING_BYTES && kept[0].len() >= MAX_WARNING_BYTES - 1);
        assert!(kept[0].chars().all(|c| c == 'é'));
        let many: Vec<String> = (0..MAX_WARNINGS + 3).map(|i| i.to_string()).collect();
        let kept = bounded_warnings(&many);
        assert_eq!(kept.len(), MAX_WARNINGS + 1);
        assert_eq!(kept[MAX_WARNINGS], "(3 more warnings not kept)");
    }
}
