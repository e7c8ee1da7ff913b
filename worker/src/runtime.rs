//! The worker's runtime: register with the coordinator, pull leases, train
//! each job on its own thread (never on the async runtime, so heartbeats keep
//! flowing during long epochs), stream progress in heartbeats, upload the
//! results in chunks, and on SIGTERM/SIGINT stop training, release the lease
//! and exit. Reconnects with backoff when the coordinator is away.

use crate::fetch::{materialise, FetchError};
use crate::job::{run_job, JobError, JobOptions, JobResult};
use crate::metrics::WorkerMetrics;
use crate::train::{Control, Progress};
use crossfold_proto::client::{
    connect_within, AuthChannel, ClientSecurity, ConnectFailure, CONNECT_LIMIT,
};
use crossfold_proto::v1::{self, workers_client::WorkersClient};
use crossfold_shared::experiment::Prepared;
use crossfold_shared::folds::SplitPlan;
use crossfold_shared::label::Task;
use crossfold_shared::spec::{Device as SpecDevice, Spec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub coordinator: String,
    /// Unique name, also the worker's id at the coordinator.
    pub name: String,
    /// Random per process (see the proto's RegisterRequest.instance).
    pub instance: String,
    pub device: tch::Device,
    /// Where data sets fetched from the coordinator are cached.
    pub cache_dir: PathBuf,
    /// The most bytes that cache may hold (`--cache-max-gib`); no limit
    /// when `None`.
    pub cache_limit: Option<u64>,
    /// How long a lease request waits at the coordinator.
    pub lease_wait: Duration,
    /// Exit after this many jobs (tests); `None` runs until stopped.
    pub max_jobs: Option<usize>,
    /// Fetch data sets from the coordinator even when the manifest's path is
    /// visible here.
    pub always_fetch: bool,
    /// Where each job's outputs (checkpoint, CSVs, JSON) are kept, if
    /// anywhere: `<outputs>/<experiment>/<task>-round<N>-attempt<A>/`.
    pub outputs: Option<PathBuf>,
    /// Jobs run at once on the device.
    pub slots: u32,
    /// TLS and bearer token for every call to the coordinator.
    pub security: ClientSecurity,
    pub metrics: Arc<WorkerMetrics>,
    /// Images decoded by earlier jobs, for later ones on the same data set.
    pub image_cache: Arc<crate::data::DecodedCache>,
    /// Data-set files' hashes from earlier jobs (files that look unchanged
    /// are not read again to fingerprint the data set).
    pub hashes: Arc<crossfold_shared::hash::HashCache>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("coordinator URL {0:?} is not valid: {1}")]
    BadUrl(String, String),
    #[error("gRPC {:?}: {}", .0.code(), .0.message())]
    Rpc(tonic::Status),
    /// A TLS problem retrying cannot fix (a refused or expired certificate).
    #[error("coordinator {0}: {1}")]
    Tls(String, String),
    #[error("a worker slot ended abnormally: {0}")]
    SlotPanicked(String),
}

impl From<tonic::Status> for RuntimeError {
    fn from(s: tonic::Status) -> Self {
        RuntimeError::Rpc(s)
    }
}

const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Connect, retrying with exponential backoff (0.5 s doubling to 10 s) until
/// the coordinator answers or `stop` is set.
pub async fn connect(
    url: &str,
    security: &ClientSecurity,
    stop: &AtomicBool,
) -> Result<Option<AuthChannel>, RuntimeError> {
    let endpoint = security
        .endpoint(url)
        .map_err(|e| RuntimeError::BadUrl(url.to_string(), e.to_string()))?;
    let mut wait = Duration::from_millis(500);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match connect_within(&endpoint, CONNECT_LIMIT).await {
            Ok(ch) => {
                let ch = security
                    .wrap(ch)
                    .map_err(|e| RuntimeError::BadUrl(url.to_string(), e.to_string()))?;
                return Ok(Some(ch));
            }
            // This worker's own certificate refused: waiting cannot fix it,
            // so stop, naming it, and an orchestrator shows a failed worker.
            Err(ConnectFailure::Transport(e))
                if crossfold_proto::client::tls_problem(&e).is_some_and(|p| p.client_side) =>
            {
                let why = crossfold_proto::client::describe(&e);
                tracing::error!(coordinator = %url, error = %why, "cannot connect");
                return Err(RuntimeError::Tls(url.to_string(), why));
            }
            // Anything else (the coordinator's certificate included, which a
            // fix there or a clock that syncs may heal, or a coordinator
            // that accepted and said nothing) is retried, named.
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(coordinator = %url, error = %why, retry_in_ms = wait.as_millis() as u64, "coordinator unreachable");
                pause(wait, stop).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn devices(device: tch::Device) -> Vec<v1::DeviceInfo> {
    vec![v1::DeviceInfo {
        name: format!("{device:?}").to_lowercase(),
        description: crate::provenance::device_name(device),
        memory_bytes: crate::provenance::device_memory(device),
    }]
}

/// The jobs a worker may still take (`--max-jobs`), shared by its slots: a
/// slot takes one before asking for a lease and gives it back when no job
/// came, so the whole worker, not each slot, stops after `max_jobs`.
#[derive(Clone, Debug)]
struct JobBudget(Option<Arc<AtomicUsize>>);

impl JobBudget {
    fn new(max_jobs: Option<usize>) -> Self {
        JobBudget(max_jobs.map(|m| Arc::new(AtomicUsize::new(m))))
    }

    /// Take one job from the budget; false when none is left.
    fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// Give back a job taken for a lease that brought none.
    fn give_back(&self) {
        if let Some(left) = &self.0 {
            left.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether no job is left to take.
    fn spent(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|left| left.load(Ordering::SeqCst) == 0)
    }
}

/// The attempts this worker's slots are running, shared by its slots. Each
/// lease request lists them: a job whose lease lapsed while the worker was
/// cut off is then not leased to an idle slot while a busy slot still runs
/// it (and will take it up again with its next heartbeat).
#[derive(Clone, Debug, Default)]
struct Running(Arc<std::sync::Mutex<Vec<v1::RunningAttempt>>>);

impl Running {
    fn attempts(&self) -> std::sync::MutexGuard<'_, Vec<v1::RunningAttempt>> {
        // A slot that panicked holding the lock left the list whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn list(&self) -> Vec<v1::RunningAttempt> {
        self.attempts().clone()
    }

    /// Note `lease` as running until the returned guard is dropped.
    fn start(&self, lease: &v1::Lease) -> RunningGuard {
        let attempt = v1::RunningAttempt {
            experiment_id: lease.experiment_id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
        };
        self.attempts().push(attempt.clone());
        RunningGuard {
            running: self.clone(),
            attempt,
        }
    }
}

struct RunningGuard {
    running: Running,
    attempt: v1::RunningAttempt,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut list = self.running.attempts();
        if let Some(i) = list.iter().position(|a| *a == self.attempt) {
            list.swap_remove(i);
        }
    }
}

/// Run until `stop` is set (or `max_jobs` are done).
pub async fn run(cfg: WorkerConfig, stop: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let budget = JobBudget::new(cfg.max_jobs);
    let running = Running::default();
    // What the worker says of its device, asked once, off the async
    // threads (nvidia-smi can take seconds, or hang on a sick GPU).
    let device = cfg.device;
    // On a thread of its own, not the runtime's blocking pool: one that
    // hangs must not keep the worker from exiting.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(devices(device));
    });
    let described = match tokio::time::timeout(Duration::from_secs(20), rx).await {
        Ok(Ok(d)) => d,
        _ => {
            tracing::warn!(
                "the device's description took too long: registering with its name alone"
            );
            vec![v1::DeviceInfo {
                name: format!("{device:?}").to_lowercase(),
                ..Default::default()
            }]
        }
    };
    let described = Arc::new(described);
    if cfg.slots <= 1 {
        return run_slot(cfg, stop, budget, running, described).await;
    }
    // Several slots on one device (small jobs packed on a big GPU): each slot
    // leases and trains on its own, under the same worker id.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.slots {
        tasks.spawn(run_slot(
            cfg.clone(),
            stop.clone(),
            budget.clone(),
            running.clone(),
            described.clone(),
        ));
    }
    // The first slot to end with an error stops the others (each releases
    // its lease, not left to expire), and that error is the worker's.
    let mut first: Option<RuntimeError> = None;
    while let Some(ended) = tasks.join_next().await {
        let err = match ended {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => RuntimeError::SlotPanicked(e.to_string()),
        };
        tracing::error!(error = %err, "a worker slot ended; stopping the others");
        stop.store(true, Ordering::SeqCst);
        first.get_or_insert(err);
    }
    first.map_or(Ok(()), Err)
}

async fn run_slot(
    cfg: WorkerConfig,
    stop: Arc<AtomicBool>,
    budget: JobBudget,
    running: Running,
    described: Arc<Vec<v1::DeviceInfo>>,
) -> Result<(), RuntimeError> {
    // Between failed registrations: 1 s, doubling to 10 s.
    let mut register_wait = Duration::from_secs(1);
    // Jobs failed in a row on this slot (see `failing_pause`).
    let mut failures = 0u32;
    'connect: loop {
        let Some(channel) = connect(&cfg.coordinator, &cfg.security, &stop).await? else {
            return Ok(());
        };
        let mut client = WorkersClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let reg = v1::RegisterRequest {
            worker_name: cfg.name.clone(),
            devices: described.as_ref().clone(),
            slots: cfg.slots.max(1),
            crossfold_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version: env!("CROSSFOLD_LIBTORCH_VERSION").to_string(),
            instance: cfg.instance.clone(),
        };
        // A coordinator that takes the connection and never answers is
        // tried again after a while; a stop meanwhile ends the worker.
        let answered = tokio::select! {
            r = tokio::time::timeout(REGISTER_LIMIT, client.register(reg)) => r.unwrap_or_else(|_| {
                Err(tonic::Status::unavailable(format!(
                    "no answer to registering within {} s",
                    REGISTER_LIMIT.as_secs()
                )))
            }),
            _ = until_set(&stop) => return Ok(()),
        };
        let registered = match answered {
            Ok(r) => r.into_inner(),
            // Retrying cannot fix a wrong token or a refused --name: say
            // so and stop.
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                ) =>
            {
                tracing::error!(error = %e, "registration refused");
                return Err(RuntimeError::Rpc(e));
            }
            // The name is held by a live process: a duplicate --name, or this
            // worker restarted before its old process was given up on. Wait.
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                tracing::warn!(error = %e, "registration refused; trying again in 5 s");
                pause(Duration::from_secs(5), &stop).await;
                continue 'connect;
            }
            // The handshake happens on the first call: a certificate the
            // coordinator refuses shows up here.
            Err(e) if crossfold_proto::client::tls_problem(&e).is_some_and(|p| p.client_side) => {
                let why = crossfold_proto::client::describe(&e);
                tracing::error!(error = %why, "registration refused");
                return Err(RuntimeError::Tls(cfg.coordinator.clone(), why));
            }
            Err(e) => {
                let mut why = crossfold_proto::client::describe(&e);
                // Something that knows no Workers service answered (another
                // service, or a proxy while the coordinator is redeployed).
                if e.code() == tonic::Code::Unimplemented {
                    why.push_str(" (is --coordinator the coordinator's gRPC address?)");
                }
                tracing::warn!(error = %why, retry_in_ms = register_wait.as_millis() as u64, "register failed; reconnecting");
                pause(register_wait, &stop).await;
                register_wait = (register_wait * 2).min(Duration::from_secs(10));
                continue 'connect;
            }
        };
        tracing::info!(worker = %registered.worker_id, device = ?cfg.device, "registered");
        register_wait = Duration::from_secs(1);
        loop {
            if stop.load(Ordering::SeqCst) || !budget.take() {
                return Ok(());
            }
            let req = v1::LeaseRequest {
                worker_id: registered.worker_id.clone(),
                free_slots: 1,
                wait_seconds: cfg.lease_wait.as_secs_f64(),
                gpu: Some(cfg.device.is_cuda()),
                running: running.list(),
            };
            // Stopping: the answer is still awaited (a job leased meanwhile
            // is then released, not left to expire), but from a coordinator
            // that no longer answers only for the long poll's own time and
            // 5 s more.
            let answer = tokio::select! {
                biased;
                r = client.lease(req) => r,
                _ = async {
                    until_set(&stop).await;
                    tokio::time::sleep(cfg.lease_wait + Duration::from_secs(5)).await;
                } => {
                    tracing::warn!("stopping without the answer to a lease request: the coordinator stopped answering");
                    return Ok(());
                }
            };
            let lease = match answer {
                Ok(r) => r.into_inner().lease,
                Err(e) => {
                    budget.give_back();
                    tracing::warn!(error = %e, "lease request failed; reconnecting");
                    pause(Duration::from_millis(500), &stop).await;
                    continue 'connect;
                }
            };
            let Some(lease) = lease else {
                budget.give_back();
                continue;
            };
            let ended = {
                let _running = running.start(&lease);
                run_lease(&cfg, &mut client, &registered.worker_id, lease, &stop).await
            };
            failures = if ended.failed_here { failures + 1 } else { 0 };
            // Given back because another slot's job holds other GPU
            // settings: not leasing again (the same job would come back to
            // this slot) until that job has let them go. A job given back
            // is no job done (`--max-jobs`).
            if ended.busy {
                budget.give_back();
                while !crate::precision::globals_free() && !stop.load(Ordering::SeqCst) {
                    pause(Duration::from_secs(1), &stop).await;
                }
            }
            // Several jobs in a row failed here: something about this
            // worker (a GPU in a bad state, a missing mount) may fail every
            // job it takes, and this idle worker would ask first for each
            // retry. It waits, longer each time, so that other workers take
            // the retries (not when it has no job left to take: it ends).
            if let Some(wait) = failing_pause(failures).filter(|_| !budget.spent()) {
                tracing::warn!(failures, wait_seconds = wait.as_secs(), "jobs keep failing on this worker: waiting before leasing again, so that other workers take their retries");
                pause(wait, &stop).await;
            }
        }
    }
}

/// After `failures` failed jobs in a row on one slot: how long it waits
/// before leasing again (none for the first two; then 30 s, doubling to
/// 10 min).
fn failing_pause(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(3)?;
    Some(Duration::from_secs(30u64.saturating_mul(1 << over.min(5))).min(Duration::from_secs(600)))
}

/// How long a registration may wait for the coordinator's answer.
const REGISTER_LIMIT: Duration = Duration::from_secs(30);

/// How a job attempt ended, as far as the coordinator must hear.
enum Outcome {
    Done(Box<JobResult>),
    Failed {
        error: String,
        retryable: bool,
        /// The failure was this worker's running of the job (training,
        /// its disk, its decoding), not the spec's, the data set's or the
        /// coordinator's: what tells a worker in a bad state.
        here: bool,
    },
    /// The coordinator said stop (cancelled, or the lease is gone).
    Dropped,
    /// This worker is shutting down: give the lease back.
    Release,
}

async fn run_lease(
    cfg: &WorkerConfig,
    client: &mut WorkersClient<AuthChannel>,
    worker_id: &str,
    lease: v1::Lease,
    stop: &Arc<AtomicBool>,
) -> Ended {
    let job = lease.job_key.clone();
    tracing::info!(experiment = %lease.experiment_id, job = %job, attempt = lease.attempt, "lease received");
    let started = Instant::now();
    cfg.metrics.running.inc();
    let cancel = Arc::new(AtomicBool::new(false));
    let progress: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
    // Before training: files fetched or hashed, images decoded.
    let prepared = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    {
        let (cfg, lease, cancel, progress, prepared) = (
            cfg.clone(),
            lease.clone(),
            cancel.clone(),
            progress.clone(),
            prepared.clone(),
        );
        std::thread::spawn(move || {
            let outcome = train_lease(&cfg, &lease, &cancel, &progress, &prepared);
            let _ = tx.send(outcome);
        });
    }
    // A value that is no number (from a coordinator gone wrong) is 5 s.
    let asked = Some(lease.heartbeat_interval_seconds)
        .filter(|s| s.is_finite())
        .unwrap_or(5.0);
    let interval = Duration::from_secs_f64(asked.clamp(0.2, 60.0));
    let mut ticker = tokio::time::interval(interval);
    // After a heartbeat that waited long, no burst of the missed ticks
    // (and the ticker is reset after each heartbeat: the next one an
    // interval later).
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A SIGTERM reaches the training thread within this, not at the next
    // heartbeat (up to a minute away): the job stops within one step more.
    let mut stop_poll = tokio::time::interval(STOP_POLL);
    let pass_stop = || {
        if stop.load(Ordering::SeqCst) {
            cancel.store(true, Ordering::SeqCst);
        }
    };
    let mut told_to_stop = false;
    let ended = |r: Result<Outcome, _>| {
        r.unwrap_or(Outcome::Failed {
            error: "training thread panicked".into(),
            retryable: true,
            here: true,
        })
    };
    let outcome = loop {
        tokio::select! {
            r = &mut rx => break ended(r),
            _ = stop_poll.tick() => pass_stop(),
            _ = ticker.tick() => {
                let p = progress.lock().ok().and_then(|p| p.clone());
                if let Some(p) = &p {
                    cfg.metrics.images_per_second.set(p.images_per_second);
                }
                let hb = v1::HeartbeatRequest {
                    worker_id: worker_id.to_string(),
                    experiment_id: lease.experiment_id.clone(),
                    job_key: job.clone(),
                    attempt: lease.attempt,
                    progress: Some(heartbeat_progress(p.as_ref(), prepared.load(Ordering::Relaxed))),
                };
                // A stop is passed on while the call waits, too, and a job
                // that ends meanwhile is not kept waiting for the answer (a
                // stalled coordinator can hold the call until keep-alive
                // gives up, 30 s).
                let call = client.heartbeat(hb);
                tokio::pin!(call);
                let reply = loop {
                    tokio::select! {
                        r = &mut call => break Ok(r),
                        r = &mut rx => break Err(ended(r)),
                        _ = stop_poll.tick() => pass_stop(),
                    }
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(outcome) => break outcome,
                };
                ticker.reset();
                match reply {
                    Ok(r) if !r.get_ref().keep_going => {
                        told_to_stop = true;
                        cancel.store(true, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    // Unreachable coordinator: keep training; the lease may still be honoured.
                    Err(e) => tracing::warn!(job = %job, error = %e, "heartbeat failed"),
                }
            }
        }
    };
    let outcome = match outcome {
        Outcome::Dropped if stop.load(Ordering::SeqCst) && !told_to_stop => Outcome::Release,
        o => o,
    };
    cfg.metrics.running.dec();
    cfg.metrics.outcome(
        match &outcome {
            // Trained and sent; a stale attempt's result may still be refused.
            Outcome::Done(_) => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Dropped => "dropped",
            Outcome::Release => "released",
        },
        started.elapsed().as_secs_f64(),
    );
    // Only failures of this worker's own running of a job, which another
    // attempt elsewhere might not meet, say something of it.
    let failed = matches!(
        outcome,
        Outcome::Failed {
            retryable: true,
            here: true,
            ..
        }
    );
    let busy = matches!(outcome, Outcome::Release) && !stop.load(Ordering::SeqCst);
    report(client, worker_id, &lease, outcome, stop).await;
    Ended {
        failed_here: failed,
        busy,
    }
}

/// How a lease ended, as far as its slot's next lease is concerned.
struct Ended {
    /// Failed, by this worker's own running of it (see `Outcome::Failed`).
    failed_here: bool,
    /// Given back, not stopping: this worker could not start it now.
    busy: bool,
}

/// Report the outcome, retrying while the coordinator is unreachable (a
/// restarted coordinator gives leased jobs a grace period for this).
async fn report(
    client: &mut WorkersClient<AuthChannel>,
    worker_id: &str,
    lease: &v1::Lease,
    outcome: Outcome,
    stop: &AtomicBool,
) {
    // A finished result is worth waiting for: retry until the coordinator
    // is back (it keeps the lease for its restart grace), backing off up to
    // REPORT_BACKOFF_MAX; once the worker is told to stop, for at most
    // REPORT_AFTER_STOP more, counted from when the stop is seen, and a try
    // still waiting for an answer then is given up too.
    let mut wait = Duration::from_secs(1);
    let mut stopped_at: Option<std::time::Instant> = None;
    // Tries that failed with an error of the limited kind (see
    // `worth_retrying`): those while the coordinator was unreachable do
    // not count against them.
    let mut limited = 0u64;
    for attempt in 1u64.. {
        let try_once = async {
            match &outcome {
                Outcome::Done(result) => upload(client, worker_id, lease, result).await.map(|resp| {
                    let t = &result.timing;
                    if resp.accepted {
                        tracing::info!(job = %lease.job_key, duplicate = resp.duplicate, message = %resp.message,
                            seconds = t.total, training_seconds = t.training, images_per_second = result.images_per_second, "result uploaded");
                    } else {
                        tracing::warn!(job = %lease.job_key, attempt = lease.attempt, message = %resp.message,
                            "result not accepted by the coordinator (another attempt holds the job, or the result was refused)");
                    }
                }),
                Outcome::Failed {
                    error, retryable, ..
                } => client
                    .fail(v1::FailRequest {
                        worker_id: worker_id.to_string(),
                        experiment_id: lease.experiment_id.clone(),
                        job_key: lease.job_key.clone(),
                        attempt: lease.attempt,
                        error: error.clone(),
                        retryable: *retryable,
                    })
                    .await
                    .map(|_| tracing::warn!(job = %lease.job_key, error = %error, "job failed")),
                Outcome::Release => client
                    .release(v1::ReleaseRequest {
                        worker_id: worker_id.to_string(),
                        experiment_id: lease.experiment_id.clone(),
                        job_key: lease.job_key.clone(),
                        attempt: lease.attempt,
                    })
                    .await
                    .map(|_| tracing::info!(job = %lease.job_key, "lease released")),
                Outcome::Dropped => {
                    tracing::info!(job = %lease.job_key, "stopped: the coordinator no longer wants this attempt");
                    Ok(())
                }
            }
        };
        let unreported = |why: &dyn std::fmt::Display| {
            tracing::error!(job = %lease.job_key, attempt = lease.attempt, error = %why, tries = attempt,
                "stopping with the outcome unreported: the coordinator stayed unreachable (with --outputs the job's files are kept)");
        };
        let r = tokio::select! {
            // An answer that came in time counts, even at the deadline.
            biased;
            r = try_once => r,
            _ = after_stop(stop, &mut stopped_at) => {
                unreported(&"no answer before the time allowed after the stop");
                return;
            }
        };
        match r {
            Ok(()) => return,
            Err(e) if worth_retrying(&e, &mut limited) => {
                tracing::warn!(job = %lease.job_key, error = %e, try_number = attempt, retry_in_seconds = wait.as_secs(), "report not through; retrying");
                tokio::select! {
                    // A stop during the wait ends it: one more try at once.
                    _ = pause(wait, stop), if stopped_at.is_none() => {}
                    _ = tokio::time::sleep(wait), if stopped_at.is_some() => {}
                    _ = after_stop(stop, &mut stopped_at), if stopped_at.is_some() => {
                        unreported(&e);
                        return;
                    }
                }
                wait = (wait * 2).min(REPORT_BACKOFF_MAX);
            }
            Err(e) => {
                tracing::warn!(job = %lease.job_key, error = %e, "report refused");
                return;
            }
        }
    }
}

/// Whether a report that failed with `e` on its `tries`-th try is tried
/// again: while the coordinator cannot be reached, for as long as it takes
/// (a restarted coordinator keeps the lease for its grace period); when the
/// call was cut on the way (a proxy's stream reset) or the coordinator
/// answered with an error of its own (a conflict, a full disk), for a few
/// minutes (a result is hours of training, but a coordinator that fails on
/// this very report must not hold the slot for ever); a refusal (a bad
/// request, no permission) never.
///
/// `limited` counts the tries that failed with an error of the limited
/// kind; this one is added to it.
fn worth_retrying(e: &tonic::Status, limited: &mut u64) -> bool {
    use tonic::Code;
    match e.code() {
        Code::Unavailable => true,
        Code::Unknown
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Internal => {
            *limited += 1;
            *limited < REPORT_TRIES_ON_ERROR
        }
        _ => false,
    }
}

/// How many times a report is tried when the call was cut or the
/// coordinator answered with an error of its own (not a refusal): with
/// the waits between (1 s doubling to 15 s), about four minutes.
const REPORT_TRIES_ON_ERROR: u64 = 20;

/// Resolves REPORT_AFTER_STOP after the stop was first seen (noting that
/// time in `stopped_at`); never before the stop.
async fn after_stop(stop: &AtomicBool, stopped_at: &mut Option<std::time::Instant>) {
    until_set(stop).await;
    let at = *stopped_at.get_or_insert_with(std::time::Instant::now);
    tokio::time::sleep(REPORT_AFTER_STOP.saturating_sub(at.elapsed())).await;
}

/// The longest wait between two tries to report an outcome.
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How often a running job looks whether the worker was told to stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Wait `d`, or less once `stop` is set (the callers then see it and end).
async fn pause(d: Duration, stop: &AtomicBool) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = until_set(stop) => {}
    }
}

/// Resolves once `flag` is set (looked at every [`STOP_POLL`]).
pub(crate) async fn until_set(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// How long a stopping worker keeps trying to report.
const REPORT_AFTER_STOP: Duration = Duration::from_secs(30);

async fn upload(
    client: &mut WorkersClient<AuthChannel>,
    worker_id: &str,
    lease: &v1::Lease,
    result: &JobResult,
) -> Result<v1::CompleteResponse, tonic::Status> {
    const PER_CHUNK: usize = 2000;
    let mut chunks = Vec::new();
    let preds: Vec<v1::Prediction> = result
        .predictions
        .iter()
        .map(|p| v1::Prediction {
            image: p.image.clone(),
            patient: p.patient.clone(),
            label: p.label.clone(),
            score: p.score,
            site: p.site.clone(),
            subtype: p.subtype.clone(),
        })
        .collect();
    let history: Vec<v1::EpochRecord> = result
        .history
        .iter()
        .map(|h| v1::EpochRecord {
            epoch: h.epoch,
            train_loss: h.train_loss,
            validation_loss: h.validation_loss,
            validation_auc: h.validation_auc,
            learning_rate: h.learning_rate,
            seconds: h.seconds,
        })
        .collect();
    let parts: Vec<&[v1::Prediction]> = if preds.is_empty() {
        vec![&[]]
    } else {
        preds.chunks(PER_CHUNK).collect()
    };
    let n = parts.len();
    let provenance_json = serde_json::to_string(&result.provenance).unwrap_or_default();
    for (i, part) in parts.into_iter().enumerate() {
        chunks.push(v1::CompleteChunk {
            worker_id: worker_id.to_string(),
            experiment_id: lease.experiment_id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            predictions: part.to_vec(),
            history: if i == 0 { history.clone() } else { Vec::new() },
            last: i + 1 == n,
            provenance_json: if i == 0 {
                provenance_json.clone()
            } else {
                String::new()
            },
            youden_threshold: if i == 0 {
                result.youden_threshold
            } else {
                None
            },
            warnings: if i == 0 {
                result.warnings.clone()
            } else {
                Vec::new()
            },
            timing: (i == 0).then(|| {
                let t = &result.timing;
                v1::JobTiming {
                    preparation: t.preparation,
                    startup: t.startup,
                    data_loading: t.data_loading,
                    training: t.training,
                    validation: Some(t.validation),
                    evaluation: t.evaluation,
                    total: t.total,
                    images_per_second: result.images_per_second,
                }
            }),
        });
    }
    Ok(client
        .complete(tokio_stream::iter(chunks))
        .await?
        .into_inner())
}

/// Where one attempt of a leased job keeps its outputs under `root`. The
/// experiment id comes from the coordinator; only a UUID is used as a path
/// component.
fn job_output_dir(root: &Path, lease: &v1::Lease, task: Task) -> PathBuf {
    let experiment = uuid::Uuid::parse_str(&lease.experiment_id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "unknown-experiment".to_string());
    root.join(experiment).join(format!(
        "{task}-round{}-attempt{}",
        lease.round, lease.attempt
    ))
}

/// What a heartbeat says of the job: its training progress, or before
/// training (epoch 0) how much of getting ready is done.
fn heartbeat_progress(p: Option<&Progress>, prepared: u64) -> v1::Progress {
    match p {
        Some(p) => v1::Progress {
            epoch: p.epoch,
            epochs: p.epochs,
            step: p.step,
            steps_per_epoch: p.steps_per_epoch,
            train_loss: p.train_loss.unwrap_or(f64::NAN),
            validation_auc: p.validation_auc,
            images_per_second: p.images_per_second,
            eta_seconds: p.eta_seconds,
            preparing: prepared,
        },
        None => v1::Progress {
            train_loss: f64::NAN,
            preparing: prepared,
            ..Default::default()
        },
    }
}

/// On the training thread: get the data, run the job, say how it ended.
fn train_lease(
    cfg: &WorkerConfig,
    lease: &v1::Lease,
    cancel: &AtomicBool,
    progress: &Mutex<Option<Progress>>,
    readied: &AtomicU64,
) -> Outcome {
    let started = std::time::Instant::now();
    let failed = |error: String, retryable: bool| Outcome::Failed {
        error,
        retryable,
        here: false,
    };
    if let Ok(fault) = std::env::var("CROSSFOLD_FAULT_FAIL_JOB") {
        // Fault injection for tests: this job always fails (retryably).
        if fault == lease.job_key {
            return failed(
                format!("injected fault: CROSSFOLD_FAULT_FAIL_JOB={fault}"),
                true,
            );
        }
    }
    // The coordinator read this spec: a worker that cannot is older than
    // it. Another worker may be newer: retryable, saying so.
    let spec = match Spec::parse_stored(&lease.spec_toml, "leased spec") {
        Ok(s) => s,
        Err(e) => {
            let version = env!("CARGO_PKG_VERSION");
            let why = format!(
                "{e} (this worker is crossfold {version}; the coordinator read this spec: are the two of different versions?)"
            );
            // This worker's own lack: it will fail every such job.
            return Outcome::Failed {
                error: why,
                retryable: true,
                here: true,
            };
        }
    };
    // The spec's train.device: `cpu` trains on the CPU even on a GPU worker;
    // `cuda` needs a GPU worker (the coordinator leases such jobs only to
    // one; an older coordinator may not).
    let device = match (spec.device(), cfg.device) {
        (SpecDevice::Cpu, _) => tch::Device::Cpu,
        (SpecDevice::Cuda(_), tch::Device::Cpu) => {
            return failed(
                "train.device = cuda but this worker trains on the CPU".to_string(),
                true,
            )
        }
        (_, d) => d,
    };
    let task = match v1::Task::try_from(lease.task) {
        Ok(v1::Task::Screening) => Task::Screening,
        Ok(v1::Task::Malignancy) => Task::Malignancy,
        _ => return failed(format!("lease names unknown task {}", lease.task), false),
    };
    let from = crate::fetch::FetchFrom {
        coordinator: &cfg.coordinator,
        security: &cfg.security,
        cache: &cfg.cache_dir,
        always_fetch: cfg.always_fetch,
        hashes: &cfg.hashes,
        done: readied,
        cache_limit: cfg.cache_limit,
    };
    let (manifest, fingerprint) = match materialise(&from, lease, cancel) {
        Ok(x) => x,
        Err(FetchError::Cancelled) => return Outcome::Dropped,
        Err(e @ FetchError::Rpc { .. }) => return failed(e.to_string(), true),
        // This worker's disk (full, not writable): another worker may do.
        Err(e @ FetchError::Io { .. }) => {
            return Outcome::Failed {
                error: format!("{e} (this worker's --cache {})", cfg.cache_dir.display()),
                retryable: true,
                here: true,
            }
        }
        Err(e) => return failed(e.to_string(), false),
    };
    let plan: SplitPlan = match SplitPlan::from_json(&lease.plan_json, &manifest) {
        Ok(p) => p,
        Err(e) => return failed(e.to_string(), false),
    };
    let prepared = Prepared {
        manifest,
        fingerprint,
        plan,
        generated: false,
    };
    let out = cfg.outputs.as_ref().map(|d| job_output_dir(d, lease, task));
    let options = JobOptions {
        device,
        decode_threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        out: out.as_deref(),
        cancel: Some(cancel),
        squares: None,
        image_cache: Some(&cfg.image_cache),
        started: Some(started),
        prepared: Some(readied),
    };
    let mut on_progress = |p: &Progress| {
        if let Ok(mut slot) = progress.lock() {
            *slot = Some(p.clone());
        }
        if cancel.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    match run_job(
        &spec,
        &prepared,
        task,
        lease.round,
        &options,
        &mut on_progress,
    ) {
        Ok(r) => Outcome::Done(Box::new(r)),
        // Not startable here now: given back, no attempt spent.
        Err(JobError::Busy(why)) => {
            tracing::info!(job = %lease.job_key, reason = %why, "giving the lease back");
            Outcome::Release
        }
        // --outputs keeps a copy: a full disk there costs the copy, not
        // the trained round, which is sent with a warning.
        Err(JobError::Outputs { mut result, source }) => {
            let w = format!("this worker's --outputs copy was not written: {source}");
            tracing::warn!(job = %lease.job_key, "{w}");
            result.warnings.push(w);
            Outcome::Done(result)
        }
        Err(e) if e.is_cancelled() => Outcome::Dropped,
        Err(e) => Outcome::Failed {
            error: e.to_string(),
            retryable: e.is_retryable(),
            here: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{JobBudget, Running};
    use crossfold_proto::v1;

    #[test]
    fn a_worker_whose_jobs_keep_failing_waits_longer_each_time() {
        assert_eq!(super::failing_pause(0), None);
        assert_eq!(super::failing_pause(2), None);
        let secs = |n| super::failing_pause(n).map(|d| d.as_secs());
        assert_eq!(
            [3, 4, 5, 6, 7, 8, 50].map(secs),
            [
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(600),
                Some(600)
            ]
        );
    }

    #[test]
    fn a_report_is_tried_again_unless_the_coordinator_refused_it() {
        use tonic::Status;
        // Unreachable for as long as it takes, and not counted against the
        // other kind: an outage first, then a reset, is still tried.
        let mut limited = 0;
        for _ in 0..1_000 {
            assert!(super::worth_retrying(
                &Status::unavailable("connection refused"),
                &mut limited
            ));
        }
        assert_eq!(limited, 0);
        for own in [
            Status::unknown("transport error"),
            Status::cancelled("stream reset"),
            Status::internal("h2 protocol error: error reading a body from connection"),
            Status::aborted("conflict"),
            Status::internal("store: disk I/O"),
            Status::resource_exhausted("full"),
            Status::deadline_exceeded("slow"),
        ] {
            let mut limited = 0;
            assert!(super::worth_retrying(&own, &mut limited), "{own}");
            let mut limited = super::REPORT_TRIES_ON_ERROR - 1;
            assert!(!super::worth_retrying(&own, &mut limited), "{own}");
        }
        for refused in [
            Status::invalid_argument("bad result"),
            Status::permission_denied("no token"),
            Status::failed_precondition("x"),
        ] {
            assert!(!super::worth_retrying(&refused, &mut 0), "{refused}");
        }
    }

    #[test]
    fn a_heartbeat_says_how_far_getting_ready_got_until_training_reports() {
        let ready = super::heartbeat_progress(None, 7);
        assert_eq!((ready.epoch, ready.preparing), (0, 7));
        assert!(ready.train_loss.is_nan());
        let training = crate::train::Progress {
            epoch: 2,
            epochs: 30,
            step: 3,
            steps_per_epoch: 13,
            train_loss: Some(0.5),
            validation_auc: None,
            images_per_second: 100.0,
            eta_seconds: 60.0,
            epoch_done: false,
        };
        let p = super::heartbeat_progress(Some(&training), 7);
        assert_eq!((p.epoch, p.step, p.train_loss), (2, 3, 0.5));
    }

    #[test]
    fn running_attempts_are_listed_to_every_slot_until_their_run_ends() {
        let lease = |key: &str, attempt| v1::Lease {
            experiment_id: "e".into(),
            job_key: key.into(),
            attempt,
            ..Default::default()
        };
        let running = Running::default();
        let other_slot = running.clone();
        let first = running.start(&lease("screening-r01", 1));
        {
            let _second = other_slot.start(&lease("screening-r02", 3));
            let listed: Vec<_> = running
                .list()
                .into_iter()
                .map(|a| (a.job_key, a.attempt))
                .collect();
            assert_eq!(
                listed,
                [
                    ("screening-r01".to_string(), 1),
                    ("screening-r02".to_string(), 3)
                ]
            );
        }
        // The second run ended (its guard dropped): only the first is left.
        let keys: Vec<_> = other_slot.list().into_iter().map(|a| a.job_key).collect();
        assert_eq!(keys, ["screening-r01"]);
        drop(first);
        assert!(running.list().is_empty());
    }

    #[test]
    fn the_job_budget_is_shared_and_given_back_when_no_job_came() {
        let unlimited = JobBudget::new(None);
        assert!((0..1000).all(|_| unlimited.take()));

        let budget = JobBudget::new(Some(2));
        let slot = budget.clone();
        assert!(budget.take() && slot.take());
        assert!(
            !budget.take() && !slot.take(),
            "two jobs in all, not per slot"
        );
        // A lease that brought no job gives its share back.
        slot.give_back();
        assert!(budget.take());
        assert!(!slot.take());

        // Slots taking at once never take more than the budget.
        let budget = JobBudget::new(Some(100));
        let taken: usize = std::thread::scope(|s| {
            let hands: Vec<_> = (0..8)
                .map(|_| {
                    let b = budget.clone();
                    s.spawn(move || (0..50).filter(|_| b.take()).count())
                })
                .collect();
            hands.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100);
    }
}
