//! The Experiments service: submit, get, list, watch, cancel, results.

use super::{experiment_state, parse_results, proto_state, Coordinator};
use crate::config::now_ms;
use crate::error::{parse_id, CoordinatorError};
use crate::jobs::plan_jobs;
use crate::state::JobState;
use crate::store::{ExperimentId, ExperimentRecord, JobRecord, NewJob};
use crossfold_proto::v1::{self, experiments_server::Experiments};
use crossfold_shared::experiment::prepare;
use crossfold_shared::hash::sha256_hex;
use crossfold_shared::spec::{Override, Spec};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The stack of the thread a submission is checked on (see `submit`).
const SUBMIT_STACK: usize = 256 << 20;

/// A checked submission: the record, its jobs, its data set's root and
/// files (manifest path -> SHA-256), and its manifest's breakdown columns.
type Submission = (
    ExperimentRecord,
    Vec<NewJob>,
    (PathBuf, BTreeMap<String, String>),
    crate::columns::Columns,
);

pub struct ExperimentsService {
    pub coordinator: Arc<Coordinator>,
}

fn counts(jobs: &[JobRecord]) -> v1::JobCounts {
    let mut c = v1::JobCounts::default();
    for j in jobs {
        match j.state {
            JobState::Pending(_) => c.pending += 1,
            JobState::Leased(_) => c.leased += 1,
            JobState::Succeeded(_) => c.succeeded += 1,
            JobState::Failed(_) => c.failed += 1,
            JobState::Cancelled(_) => c.cancelled += 1,
        }
    }
    c
}

impl ExperimentsService {
    fn describe(&self, e: &ExperimentRecord, jobs: &[JobRecord]) -> v1::Experiment {
        v1::Experiment {
            experiment_id: e.id.to_string(),
            name: e.name.clone(),
            state: experiment_state(e, jobs).to_string(),
            jobs: Some(counts(jobs)),
            plan_sha256: e.plan_sha256.clone(),
            dataset_sha256: e.dataset_sha256.clone(),
            job_status: self.job_status(e, jobs),
            submitted_ms: e.submitted_ms,
            note: self.waiting_note(e, jobs),
        }
    }

    /// Each job's state, attempt, worker, last error and (while it runs)
    /// progress: all that `watch` needs, on every change.
    fn job_status(&self, e: &ExperimentRecord, jobs: &[JobRecord]) -> Vec<v1::JobStatus> {
        jobs.iter()
            .map(|j| {
                let (attempt, worker, error) = match &j.state {
                    JobState::Pending(p) => (p.attempts, String::new(), p.last_error.clone()),
                    JobState::Leased(l) => (l.attempt, l.worker_id.clone(), l.last_error.clone()),
                    JobState::Succeeded(s) => (s.attempt, String::new(), None),
                    JobState::Failed(f) => (f.attempts, String::new(), Some(f.last_error.clone())),
                    JobState::Cancelled(c) => (c.attempts, String::new(), None),
                };
                v1::JobStatus {
                    job_key: j.key.clone(),
                    task: j.task.clone(),
                    round: j.round,
                    state: proto_state(&j.state) as i32,
                    attempt,
                    worker_id: worker,
                    last_error: error.unwrap_or_default(),
                    // Only a running job's: a finished one's last progress
                    // (its ETA) would read as still going.
                    progress: matches!(j.state, JobState::Leased(_))
                        .then(|| self.coordinator.progress_of(e.id, &j.key, attempt))
                        .flatten(),
                }
            })
            .collect()
    }

    /// Why the experiment's pending jobs wait, when that can be told: no
    /// worker heard from lately, or none with the GPU its spec asks for.
    fn waiting_note(&self, e: &ExperimentRecord, jobs: &[JobRecord]) -> String {
        let pending = jobs
            .iter()
            .filter(|j| matches!(j.state, JobState::Pending(_)))
            .count();
        if pending == 0 || e.cancelled {
            return String::new();
        }
        let ttl = self.coordinator.config.lease_ttl;
        let (live, gpu, unknown) = self.coordinator.live_workers(ttl.as_millis() as i64);
        if live == 0 {
            format!(
                "{pending} job(s) wait: no worker has been heard from in the last {} s (start one with `crossfold-worker --coordinator URL`)",
                ttl.as_secs()
            )
        } else if gpu == 0 && unknown == 0 && !crate::scheduler::runs_on(e, false) {
            format!(
                "{pending} job(s) wait for a GPU worker: the spec asks for train.device = cuda and none of the {live} worker(s) heard from has a GPU"
            )
        } else {
            String::new()
        }
    }

    async fn load(
        &self,
        id: uuid::Uuid,
    ) -> Result<(ExperimentRecord, Vec<JobRecord>), CoordinatorError> {
        self.coordinator
            .with_store(move |s| Ok((s.experiment_head(id)?, s.jobs(id)?)))
            .await
    }

    /// Check the spec, the data set and the split plan; build the record.
    fn prepare_submission(&self, req: &v1::SubmitRequest) -> Result<Submission, CoordinatorError> {
        let cfg = &self.coordinator.config;
        let overrides: Vec<Override> = req
            .overrides
            .iter()
            .map(|o| o.parse::<Override>())
            .collect::<Result<_, _>>()
            .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        let mut spec = Spec::parse(&req.spec_toml, "spec", &overrides)
            .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        // The coordinator reads data; it does not generate it.
        spec.dataset.synthetic = None;
        let manifest = PathBuf::from(&spec.dataset.manifest);
        if !manifest.is_absolute() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "dataset.manifest = {:?}: must be an absolute path on the coordinator (the CLI resolves it)",
                spec.dataset.manifest
            )));
        }
        // Workers read the weights from their own working folders: only an
        // absolute path means the same file to all of them.
        if let Some(pre) = spec
            .train
            .pretrained
            .as_deref()
            .filter(|p| !std::path::Path::new(p).is_absolute())
        {
            return Err(CoordinatorError::InvalidArgument(format!(
                "train.pretrained = {pre:?}: must be an absolute path on the workers (the CLI resolves it)"
            )));
        }
        let real = manifest.canonicalize().map_err(|e| {
            CoordinatorError::InvalidArgument(format!(
                "dataset.manifest = {:?}: {e}",
                spec.dataset.manifest
            ))
        })?;
        let allowed = cfg
            .data_roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| real.starts_with(r));
        if !allowed {
            return Err(CoordinatorError::PermissionDenied(format!(
                "dataset.manifest = {:?} is not under any data root of this coordinator ({})",
                spec.dataset.manifest,
                cfg.data_roots
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        spec.dataset.manifest = real.display().to_string();
        spec.base_dir = PathBuf::from("/");
        let prepared =
            prepare(&spec).map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        let jobs = plan_jobs(&prepared.plan);
        if jobs.len() > cfg.max_jobs_per_experiment {
            return Err(CoordinatorError::ResourceExhausted(format!(
                "the experiment has {} jobs; this coordinator allows {} per experiment",
                jobs.len(),
                cfg.max_jobs_per_experiment
            )));
        }
        let spec_toml = spec.to_toml();
        let files = (
            prepared.manifest.root.clone(),
            prepared.fingerprint.files.clone(),
        );
        let columns = crate::columns::Columns::of_manifest(&prepared.manifest);
        let record = ExperimentRecord {
            id: uuid::Uuid::new_v4(),
            name: spec.name.clone(),
            request_id: Some(req.request_id.clone()).filter(|r| !r.is_empty()),
            spec_sha256: sha256_hex(spec_toml.as_bytes()),
            dataset_sha256: prepared.fingerprint.sha256.clone(),
            plan_sha256: prepared.plan.plan_sha256.clone(),
            spec_toml,
            plan_json: prepared.plan.to_json_pretty(),
            manifest_path: real.display().to_string(),
            submitted_ms: now_ms(),
            seq: 0,
            cancelled: false,
            summary_json: None,
        };
        let new_jobs = jobs
            .into_iter()
            .map(|j| NewJob {
                key: j.key,
                task: j.task.to_string(),
                round: j.round,
            })
            .collect();
        Ok((record, new_jobs, files, columns))
    }
}

/// The rounds without a result (failed, cancelled or still to run), with
/// why: reports name them instead of summarising fewer rounds silently.
fn missing_rounds(jobs: &[JobRecord]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = jobs
        .iter()
        .filter(|j| !matches!(j.state, JobState::Succeeded(_)))
        .map(|j| {
            let (attempts, error) = match &j.state {
                JobState::Pending(p) => (p.attempts, p.last_error.clone()),
                JobState::Leased(l) => (l.attempt, l.last_error.clone()),
                JobState::Failed(f) => (f.attempts, Some(f.last_error.clone())),
                JobState::Cancelled(c) => (c.attempts, None),
                JobState::Succeeded(s) => (s.attempt, None),
            };
            serde_json::json!({
                "task": j.task,
                "round": j.round,
                "state": j.state.name(),
                "attempts": attempts,
                "error": error,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ExperimentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Experiments for ExperimentsService {
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let req = request.into_inner();
        let this = ExperimentsService {
            coordinator: self.coordinator.clone(),
        };
        // On a thread of its own with a large stack: parsing the spec
        // recurses once per level of nesting (refused past 32 levels, but
        // only once parsed), and the toml parser allows thousands.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("submit".into())
            .stack_size(SUBMIT_STACK)
            .spawn(move || {
                let _ = tx.send(this.prepare_submission(&req));
            })
            .map_err(|e| CoordinatorError::Internal(format!("submit thread: {e}")))?;
        let (record, jobs, files, columns) = rx.await.map_err(|_| {
            CoordinatorError::Internal("submit thread ended without an answer".into())
        })??;
        let dataset = record.dataset_sha256.clone();
        let spec_sha256 = record.spec_sha256.clone();
        let request_id = record.request_id.clone();
        // A resubmission's request id is not stored with the experiment
        // (its first submission's is): remembered here, so that a client's
        // retry of it resumes nothing a second time.
        let earlier = request_id
            .as_deref()
            .and_then(|r| self.coordinator.resubmission(r));
        let (stored, created, replay, resumed) = self
            .coordinator
            .with_store(move |s| {
                let request_id = record.request_id.clone();
                let (stored, created) = s.create_experiment(record, jobs)?;
                // The same spec and data again after a cancel or a failure:
                // the rounds that were cut off or failed are queued again,
                // succeeded ones are kept. A repeat of the same request (a
                // client's retry) only gets the id back.
                let replay = (request_id.is_some() && stored.request_id == request_id)
                    || (!created && earlier == Some(stored.id));
                let resumed = if created || replay {
                    0
                } else {
                    s.resume(stored.id)?
                };
                Ok((stored, created, replay, resumed))
            })
            .await?;
        // A request id used again for another spec or data set is a
        // client's mistake, not a retry: said, not answered with the other
        // experiment.
        if replay && (stored.spec_sha256 != spec_sha256 || stored.dataset_sha256 != dataset) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "request_id {:?} was used for experiment {} with another spec or data set; \
                 give each submission its own request_id",
                stored.request_id.as_deref().unwrap_or_default(),
                stored.id
            ))
            .into());
        }
        if let (Some(r), false, false) = (&request_id, created, replay) {
            self.coordinator.remember_resubmission(r, stored.id);
        }
        self.coordinator
            .remember_files(&dataset, &files.0, &files.1);
        tracing::info!(experiment = %stored.id, name = %stored.name, created, resumed, "experiment submitted");
        self.coordinator.changed.notify_waiters();
        if resumed == 0 && !created && !replay && stored.cancelled {
            // Cancelled with every job already finished: nothing to run, but it is not cancelled any more.
            self.coordinator.finish_soon(stored.id).await;
        }
        // Submitted again with its site or subtype column corrected (no
        // part of the data set's identity, nor of training): the finished
        // experiment's summary is made again with them.
        let corrected = stored
            .summary_json
            .as_deref()
            .is_some_and(|s| crate::columns::summary_differs(s, &columns));
        if resumed == 0 && !created && !replay && corrected {
            tracing::info!(experiment = %stored.id, "breakdown columns changed since the summary: made again");
            if let Err(err) = self.coordinator.summarise_again(stored.id).await {
                tracing::warn!(experiment = %stored.id, error = %err, "summary not made again");
            }
        }
        Ok(Response::new(v1::SubmitResponse {
            experiment_id: stored.id.to_string(),
            created,
            resumed,
        }))
    }

    async fn get(
        &self,
        request: Request<v1::GetExperimentRequest>,
    ) -> Result<Response<v1::Experiment>, Status> {
        let id = parse_id(&request.get_ref().experiment_id)?;
        let (e, jobs) = self.load(id).await?;
        Ok(Response::new(self.describe(&e, &jobs)))
    }

    async fn list(
        &self,
        _: Request<v1::ListExperimentsRequest>,
    ) -> Result<Response<v1::ListExperimentsResponse>, Status> {
        let all = self
            .coordinator
            .with_store(|s| {
                s.experiment_heads()?
                    .into_iter()
                    .map(|e| {
                        let jobs = s.jobs(e.id)?;
                        Ok((e, jobs))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(Response::new(v1::ListExperimentsResponse {
            experiments: all.iter().map(|(e, j)| self.describe(e, j)).collect(),
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = parse_id(&request.get_ref().experiment_id)?;
        self.load(id).await?; // NOT_FOUND before the stream starts
        let coordinator = self.coordinator.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut stopping = coordinator.stopping();
            let this = ExperimentsService { coordinator };
            let mut last: HashMap<String, (i32, u32, Option<(u32, u32, u64)>)> = HashMap::new();
            loop {
                if *stopping.borrow_and_update() {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the coordinator is shutting down; watch again when it is back",
                        )))
                        .await;
                    return;
                }
                let notified = this.coordinator.changed.notified();
                let progressed = this.coordinator.progressed.notified();
                let (e, jobs) = match this.load(id).await {
                    Ok(x) => x,
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        return;
                    }
                };
                // Not the whole description: the note and counts are not
                // streamed, and this runs on every progress report.
                for js in this.job_status(&e, &jobs) {
                    let mark = (
                        js.state,
                        js.attempt,
                        js.progress.as_ref().map(|p| (p.epoch, p.step, p.preparing)),
                    );
                    if last.get(&js.job_key) != Some(&mark) {
                        last.insert(js.job_key.clone(), mark);
                        let event = v1::ExperimentEvent {
                            experiment_id: id.to_string(),
                            job_key: js.job_key,
                            state: js.state,
                            attempt: js.attempt,
                            progress: js.progress,
                            message: js.last_error,
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                let done = e.cancelled
                    || (jobs.iter().all(|j| j.state.is_terminal()) && e.summary_json.is_some());
                if done {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                        tokio::select! {
                            _ = notified => {}
                            _ = progressed => {}
                        }
                    }) => {}
                    _ = stopping.changed() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::Experiment>, Status> {
        let id = parse_id(&request.get_ref().experiment_id)?;
        // (the state of an experiment that had already finished, or the
        // number of running attempts the cancel cut off)
        let (finished, running) = self
            .coordinator
            .with_store(move |s| match s.cancel(id)? {
                Some(running) => Ok((None, running)),
                // A finished experiment keeps its outcome.
                None => {
                    let (e, jobs) = (s.experiment(id)?, s.jobs(id)?);
                    Ok((Some(super::experiment_state(&e, &jobs)), 0))
                }
            })
            .await?;
        if let Some(state) = finished {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "experiment {id} has already finished ({state}); there is nothing to cancel"
            ))
            .into());
        }
        // Every lease granted ends in one outcome: these attempts were cut off.
        for _ in 0..running {
            self.coordinator.metrics.attempt("cancelled");
        }
        // Every job is terminal now (`Store::cancel` ended them all in one
        // transaction): the results get their summary and `complete`.
        self.coordinator.finish_soon(id).await;
        self.coordinator.changed.notify_waiters();
        let (e, jobs) = self.load(id).await?;
        Ok(Response::new(self.describe(&e, &jobs)))
    }

    async fn results(
        &self,
        request: Request<v1::ResultsRequest>,
    ) -> Result<Response<v1::ResultsResponse>, Status> {
        let id = parse_id(&request.get_ref().experiment_id)?;
        let text = self.results_document(id).await?;
        // serde_json writes UTF-8: this never fails, and does not copy.
        let results_json = String::from_utf8(text)
            .map_err(|err| CoordinatorError::Internal(format!("results: {err}")))?;
        Ok(Response::new(v1::ResultsResponse {
            experiment_id: id.to_string(),
            results_json,
        }))
    }

    type ResultsStreamStream = ChunkStream;

    async fn results_stream(
        &self,
        request: Request<v1::ResultsRequest>,
    ) -> Result<Response<Self::ResultsStreamStream>, Status> {
        let id = parse_id(&request.get_ref().experiment_id)?;
        let text = self.results_document(id).await?;
        let pieces = text.len().div_ceil(RESULTS_CHUNK);
        // Each piece is copied out when the client is ready for it.
        let chunks = (0..pieces).map(move |i| {
            let end = ((i + 1) * RESULTS_CHUNK).min(text.len());
            Ok(v1::ResultsChunk {
                json: text[i * RESULTS_CHUNK..end].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// The size of the pieces `ResultsStream` sends: well under any message
/// size limit, so that no limit bounds an experiment's results.
pub const RESULTS_CHUNK: usize = 1 << 20;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::ResultsChunk, Status>> + Send>>;

impl ExperimentsService {
    /// An experiment's results document (JSON): the aggregated results,
    /// what the experiment is, and every round's predictions. Built off the
    /// async threads: for a large experiment it is hundreds of megabytes.
    async fn results_document(&self, id: ExperimentId) -> Result<Vec<u8>, CoordinatorError> {
        let (e, jobs, rows) = self
            .coordinator
            .with_store(move |s| Ok((s.experiment(id)?, s.jobs(id)?, s.results(id)?)))
            .await?;
        tokio::task::spawn_blocking(move || results_document(&e, &jobs, rows))
            .await
            .map_err(|err| CoordinatorError::Internal(format!("results task: {err}")))?
    }
}

fn results_document(
    e: &ExperimentRecord,
    jobs: &[JobRecord],
    rows: Vec<(String, String)>,
) -> Result<Vec<u8>, CoordinatorError> {
    let mut results = parse_results(&rows)?;
    drop(rows);
    let mut doc = match &e.summary_json {
        Some(s) => serde_json::from_str(s)
            .map_err(|err| CoordinatorError::Internal(format!("stored summary: {err}")))?,
        None => super::summary_of(&mut results, e),
    };
    let Some(o) = doc.as_object_mut() else {
        return Err(CoordinatorError::Internal(format!(
            "experiment {}: the stored summary is not a JSON object",
            e.id
        )));
    };
    // The predictions broken down as the summary was: a stored one keeps
    // the values it used; one stored before it kept them, as the manifest
    // has them if those are still the summary's.
    match o.remove(crate::columns::STORED_KEY) {
        Some(stored) => crate::columns::apply_stored(&stored, &mut results),
        None => {
            if let Some(c) = e.summary_json.as_deref().and_then(|s| {
                crate::columns::Columns::read(&e.manifest_path)
                    .filter(|c| !crate::columns::summary_differs(s, c))
            }) {
                c.apply(&mut results);
            }
        }
    }
    o.insert("experiment_id".into(), e.id.to_string().into());
    o.insert("name".into(), e.name.clone().into());
    o.insert("state".into(), experiment_state(e, jobs).into());
    o.insert("complete".into(), e.summary_json.is_some().into());
    o.insert("report_version".into(), 1.into());
    o.insert("spec_toml".into(), e.spec_toml.clone().into());
    o.insert(
        "plan".into(),
        serde_json::from_str(&e.plan_json).unwrap_or(serde_json::Value::Null),
    );
    o.insert("missing_rounds".into(), missing_rounds(jobs));
    o.remove("predictions");
    // The predictions, the bulk of the document, are written straight into
    // its text rather than built as a JSON tree first (several times their
    // size in memory).
    let unwritable = |err: serde_json::Error| CoordinatorError::Internal(format!("results: {err}"));
    let mut text = serde_json::to_vec(&doc).map_err(unwritable)?;
    // An object's text ends with '}', and it has keys (those just inserted).
    text.pop();
    text.extend_from_slice(b",\"predictions\":");
    serde_json::to_writer(&mut text, &results).map_err(unwritable)?;
    text.push(b'}');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::tests::{experiment, jobs};
    use crate::store::{MemoryStore, Store};
    use serde_json::Value;
    use tokio_stream::StreamExt;

    fn result_json(round: u32, n: usize) -> String {
        let preds: Vec<(&str, f64)> = (0..n)
            .map(|i| {
                let label = if i % 2 == 0 { "normal" } else { "malignant" };
                (label, (i % 97) as f64 / 97.0)
            })
            .collect();
        serde_json::to_string(&crate::aggregate::tests::result(round, &preds)).unwrap()
    }

    #[tokio::test]
    async fn results_larger_than_a_piece_arrive_whole_in_pieces() {
        let store = Arc::new(MemoryStore::new());
        let (e, _) = store
            .create_experiment(experiment(1), jobs(&["a", "b"]))
            .unwrap();
        for (key, round) in [("a", 1), ("b", 2)] {
            let j = store.job(e.id, key).unwrap();
            let leased = j.state.lease("w", now_ms(), 30_000).unwrap();
            store.update_job(e.id, key, j.version, leased).unwrap();
            let committed = store
                .commit_result(e.id, key, 1, "w", now_ms(), &result_json(round, 6000))
                .unwrap();
            assert!(committed);
        }
        let service = ExperimentsService {
            coordinator: Coordinator::new(
                store.clone(),
                Config::new("unused.db".into(), Vec::new()),
            ),
        };
        let request = || {
            Request::new(v1::ResultsRequest {
                experiment_id: e.id.to_string(),
            })
        };
        let mut stream = service
            .results_stream(request())
            .await
            .unwrap()
            .into_inner();
        let mut pieces = Vec::new();
        while let Some(chunk) = stream.next().await {
            pieces.push(chunk.unwrap().json);
        }
        assert!(pieces.len() >= 2, "{} piece(s)", pieces.len());
        assert!(pieces
            .iter()
            .all(|p| !p.is_empty() && p.len() <= RESULTS_CHUNK));
        let streamed: Value = serde_json::from_slice(&pieces.concat()).unwrap();
        // The same document as the one-message call, predictions as stored.
        let whole = service.results(request()).await.unwrap().into_inner();
        assert_eq!(
            streamed,
            serde_json::from_str::<Value>(&whole.results_json).unwrap()
        );
        let stored = parse_results(&store.results(e.id).unwrap()).unwrap();
        assert_eq!(
            streamed["predictions"],
            serde_json::to_value(&stored).unwrap()
        );
        assert_eq!(
            streamed["predictions"][1]["predictions"]
                .as_array()
                .unwrap()
                .len(),
            6000
        );
        assert_eq!(streamed["experiment_id"], e.id.to_string());
        assert_eq!(
            streamed["tasks"]["screening"]["rounds"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn results_of_an_unknown_experiment_are_not_found_before_any_piece() {
        let service = ExperimentsService {
            coordinator: Coordinator::new(
                Arc::new(MemoryStore::new()),
                Config::new("unused.db".into(), Vec::new()),
            ),
        };
        let request = Request::new(v1::ResultsRequest {
            experiment_id: uuid::Uuid::new_v4().to_string(),
        });
        let err = service.results_stream(request).await.err().unwrap();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    }
}
