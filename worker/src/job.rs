//! One job: train on a round's training images and score its test images.
//!
//! Steps: carve a validation set from the training images (patient-grouped,
//! stratified), decode every image of the round once onto the device, build
//! the network (optionally from pretrained weights), train, pick a threshold
//! on the validation set (Youden's J), score the test images, write the
//! outputs. Test images are used only in the final scoring.

use crate::data::load_images;
use crate::evaluate::{score, Normalise, ScoreError};
use crate::model::resnet;
use crate::precision::Compute;
use crate::provenance::{self, Provenance};
use crate::torch_error::without_backtrace;
use crate::train::{check_fit_set, train, Control, EpochRecord, Progress, TrainData, TrainError};
use crate::weights::{load_checkpoint, load_pretrained, WeightsError};
use crossfold_shared::experiment::Prepared;
use crossfold_shared::folds::carve_validation;
use crossfold_shared::label::Task;
use crossfold_shared::manifest::Entry;
use crossfold_shared::metrics::{youden_threshold, RoundStats};
use crossfold_shared::spec::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hashes of pretrained weight files, so a worker's later jobs do not read
/// an unchanged file again to hash it.
static PRETRAINED_HASHES: std::sync::LazyLock<crossfold_shared::hash::HashCache> =
    std::sync::LazyLock::new(crossfold_shared::hash::HashCache::new);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "task {0} is not in this spec's protocol.tasks, so the split plan has no rounds for it"
    )]
    TaskNotPlanned(Task),
    #[error("task {task} has no round {round} in the split plan (its rounds are 1-{available})")]
    NoSuchRound {
        task: Task,
        round: u32,
        available: usize,
    },
    #[error("split plan names {0:?}, which is not in the manifest")]
    UnknownImage(String),
    #[error("task {task}, round {round}: {source}")]
    Train {
        task: Task,
        round: u32,
        source: TrainError,
    },
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("{0}")]
    Weights(#[from] WeightsError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// This worker cannot start the round now (its GPU is held by another
    /// job of other settings): another worker, or this one later, can.
    #[error("not started here: {0}")]
    Busy(String),
    /// The round trained and scored, but its output files could not be
    /// written (`source`): the result is here all the same, for a caller
    /// to whom the files are a copy (a worker's `--outputs`).
    #[error("the round's outputs were not written: {source}")]
    Outputs {
        result: Box<JobResult>,
        source: Box<JobError>,
    },
    #[error("{0}")]
    Metrics(#[from] crossfold_shared::metrics::MetricsError),
    #[error("{0}")]
    Score(#[from] ScoreError),
    /// libtorch failed inside a call tch does not let fail (the network's
    /// forward pass, for one): e.g. the GPU ran out of memory.
    #[error("task {task}, round {round}: libtorch failed: {message}")]
    Aborted {
        task: Task,
        round: u32,
        message: String,
    },
}

impl JobError {
    /// Whether another attempt (maybe on another worker) could succeed.
    /// Not: what the spec, split plan, manifest or image files themselves
    /// get wrong, which every attempt would meet again. Yes: a file that
    /// could not be read (a passing I/O error, a missing mount on this
    /// worker), a setting this worker's GPU cannot honour, libtorch running
    /// out of memory, failures writing outputs.
    pub fn is_retryable(&self) -> bool {
        use crate::data::DataError;
        use crate::precision::ComputeError;
        use crossfold_shared::imaging::ImagingError;
        match self {
            JobError::TaskNotPlanned(_)
            | JobError::NoSuchRound { .. }
            | JobError::UnknownImage(_) => false,
            JobError::Weights(WeightsError::Read { .. }) => true,
            JobError::Weights(WeightsError::Mismatch { .. }) => false,
            JobError::Data(DataError::Image(ImagingError::Io { .. })) => true,
            JobError::Data(DataError::Image(_)) => false,
            JobError::Train { source, .. } => !matches!(
                source,
                TrainError::EmptyTraining
                    | TrainError::TooFewImages(_)
                    | TrainError::OneClass(_)
                    | TrainError::Diverged { .. }
                    | TrainError::Compute(ComputeError::Fp16NeedsFused)
            ),
            _ => true,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            JobError::Train {
                source: TrainError::Cancelled,
                ..
            }
        )
    }
}

/// One scored test image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub image: String,
    pub patient: String,
    pub label: String,
    /// The manifest's `site` and `subtype` ("" when absent).
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub subtype: String,
    pub score: f64,
    /// Predicted positive at threshold 0.5 (the spec's `train.threshold`).
    pub predicted: bool,
    /// Predicted positive at the validation-chosen (Youden) threshold.
    pub predicted_youden: bool,
}

/// Seconds spent in each phase. `total` is the whole job, from preparation
/// to the result (the output files are written after it, since
/// `result.json` holds it); besides the phases it holds only the training
/// loop's set-up (pixel statistics, the weights' layout, the optimiser's
/// state) and the provenance. `training` is the epochs' batches alone
/// (order, augmentation, steps); `validation` the per-epoch scoring of the
/// validation images and the best epoch's weights kept and restored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Before the job proper: the spec, the data set's check (local
    /// `train`: every image decoded and kept resized for data loading) or
    /// its fingerprint and any fetching (a worker), and the split plan.
    #[serde(default)]
    pub preparation: f64,
    /// The model built, pretrained weights loaded, the device readied.
    pub startup: f64,
    /// The round's images onto the device (decoded here unless the check
    /// kept them).
    pub data_loading: f64,
    pub training: f64,
    #[serde(default)]
    pub validation: f64,
    pub evaluation: f64,
    pub total: f64,
}

/// What a checkpoint carries, in its safetensors metadata and as `model.json`
/// beside it: enough to score new images, and where the weights came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub arch: crossfold_shared::spec::Arch,
    pub image_size: u32,
    pub resize: crossfold_shared::spec::Resize,
    /// How 16-bit gray images were scaled in training (cards written
    /// before it was recorded: per image, the only way then).
    #[serde(default)]
    pub gray16: crossfold_shared::imaging::Gray16Scale,
    pub normalise: Normalise,
    pub task: Task,
    pub round: u32,
    pub threshold: f64,
    pub youden_threshold: Option<f64>,
    pub best_epoch: u32,
    pub compute: Compute,
    pub spec_toml: String,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub task: Task,
    pub round: u32,
    /// What went other than the spec intended, e.g. a validation set
    /// without one of the classes (so no early stopping or threshold).
    pub warnings: Vec<String>,
    pub n_fit: usize,
    pub n_validation: usize,
    pub n_test: usize,
    pub predictions: Vec<Prediction>,
    pub history: Vec<EpochRecord>,
    pub best_epoch: u32,
    pub stopped_early: bool,
    pub youden_threshold: Option<f64>,
    pub stats: RoundStats,
    pub stats_youden: Option<RoundStats>,
    pub images_per_second: f64,
    pub timing: Timing,
    pub provenance: Provenance,
}

/// Settings of one job run beyond the spec.
pub struct JobOptions<'a> {
    pub device: Device,
    /// CPU threads for decoding images.
    pub decode_threads: usize,
    /// Where to write the outputs (created), or nowhere.
    pub out: Option<&'a Path>,
    /// Set to stop the job while it decodes images or scores validation and
    /// test images (the training steps stop through the progress callback).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// The images as the data set's check decoded them, if it kept them at
    /// the job's size (`train`): not decoded a second time.
    pub squares: Option<&'a crossfold_shared::dataset::Squares>,
    /// Images a worker's earlier jobs decoded, kept for its later ones (and
    /// filled by this one); `None` decodes every image.
    pub image_cache: Option<&'a crate::data::DecodedCache>,
    /// When the caller began getting the job ready (loading the spec,
    /// checking or fetching the data set, the split plan): counted as the
    /// job's preparation time. `None`: the job starts at `run_job`.
    pub started: Option<Instant>,
    /// Counts the images made ready before training (the job's progress
    /// while it prepares, which a worker's heartbeats report).
    pub prepared: Option<&'a std::sync::atomic::AtomicU64>,
}

/// How long a job waits for another job of this process, which holds
/// other process-wide GPU settings, before it gives its lease back (for
/// another worker; this slot then waits for those settings to be let go
/// before it leases again). Well under any stall time-out.
pub const SETTINGS_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Run one round. `on_progress` is called after every step and epoch;
/// returning [`Control::Stop`] cancels the job within one step.
pub fn run_job(
    spec: &Spec,
    prepared: &Prepared,
    task: Task,
    round: u32,
    options: &JobOptions,
    on_progress: &mut dyn FnMut(&Progress) -> Control,
) -> Result<JobResult, JobError> {
    guarded(task, round, || {
        run_job_unguarded(spec, prepared, task, round, options, on_progress)
    })
}

/// Run `f`, turning a panic inside it (tch panics where libtorch throws in
/// its infallible calls, such as the forward pass running out of GPU
/// memory) into [`JobError::Aborted`] with libtorch's message, so the
/// caller reports it instead of losing the thread.
pub fn guarded<T>(
    task: Task,
    round: u32,
    f: impl FnOnce() -> Result<T, JobError>,
) -> Result<T, JobError> {
    catching(f, |message| JobError::Aborted {
        task,
        round,
        message,
    })
}

/// Run `f`; a panic inside it becomes the error `aborted` makes of its
/// message (without tch's `unwrap()` wrapping).
fn catching<T, E>(
    f: impl FnOnce() -> Result<T, E>,
    aborted: impl FnOnce(String) -> E,
) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = crossfold_shared::logging::panic_text(payload.as_ref())
            .unwrap_or("unknown panic")
            .trim_start_matches("called `Result::unwrap()` on an `Err` value: ");
        Err(aborted(without_backtrace(message)))
    })
}

/// What a round's validation set cannot do: without both classes there is
/// no validation AUC, so no early stopping, best epoch or Youden threshold.
fn validation_warnings(
    t: &crossfold_shared::spec::TrainSpec,
    labels: impl Iterator<Item = bool>,
) -> Vec<String> {
    let (mut pos, mut neg) = (0usize, 0usize);
    for positive in labels {
        if positive {
            pos += 1;
        } else {
            neg += 1;
        }
    }
    if pos > 0 && neg > 0 {
        return Vec::new();
    }
    let what = "so no early stopping, no best-epoch choice (the last epoch is kept) and no Youden threshold";
    vec![if t.validation_fraction == 0.0 {
        format!("train.validation_fraction = 0: no validation set, {what}")
    } else {
        if pos + neg == 0 {
            format!(
                "the validation set is empty: no patient could be spared from the training \
                 groups; {what}"
            )
        } else {
            format!(
                "the validation set ({pos} positive, {neg} negative images) lacks a class: a \
                 class has fewer than 2 patients in the training groups, or cannot spare one; \
                 {what}"
            )
        }
    }]
}

/// The training settings a job uses on `device`: on a CPU, the spec's
/// `[train.cpu]` settings apply.
pub fn settings_on(spec: &Spec, device: Device) -> crossfold_shared::spec::TrainSpec {
    if device.is_cuda() {
        spec.train.clone()
    } else {
        spec.train.for_cpu()
    }
}

/// A round of the split plan, or why there is none.
pub fn find_round(
    plan: &crossfold_shared::folds::SplitPlan,
    task: Task,
    round: u32,
) -> Result<&crossfold_shared::folds::Round, JobError> {
    let rounds = plan.rounds(task);
    if rounds.is_empty() {
        return Err(JobError::TaskNotPlanned(task));
    }
    rounds
        .iter()
        .find(|r| r.round == round)
        .ok_or(JobError::NoSuchRound {
            task,
            round,
            available: rounds.len(),
        })
}

fn run_job_unguarded(
    spec: &Spec,
    prepared: &Prepared,
    task: Task,
    round: u32,
    options: &JobOptions,
    on_progress: &mut dyn FnMut(&Progress) -> Control,
) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let preparation = options
        .started
        .map_or(0.0, |s| started.duration_since(s).as_secs_f64());
    let r = find_round(&prepared.plan, task, round)?;
    let by_path: HashMap<&str, &Entry> = prepared
        .manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let lookup = |p: &String| {
        by_path
            .get(p.as_str())
            .copied()
            .ok_or_else(|| JobError::UnknownImage(p.clone()))
    };
    let train_entries: Vec<&Entry> = r.train.iter().map(lookup).collect::<Result<_, _>>()?;
    let test_entries: Vec<&Entry> = r.test.iter().map(lookup).collect::<Result<_, _>>()?;
    let device = options.device;
    let spec = &Spec {
        train: settings_on(spec, device),
        ..spec.clone()
    };
    let t = &spec.train;
    let seed = t.seed.wrapping_add(round as u64);
    let (fit, val) = carve_validation(&train_entries, task, t.validation_fraction, seed);
    let mut warnings = validation_warnings(
        t,
        val.iter()
            .map(|&i| task.is_positive(train_entries[i].label)),
    );
    for w in &warnings {
        tracing::warn!(task = %task, round, "{w}");
    }

    let train_error = |source| JobError::Train {
        task,
        round,
        source,
    };
    let compute = Compute::for_device(t, device).map_err(|e| train_error(e.into()))?;
    if compute.autocast_fp16 && !compute.cuda {
        // Honoured, but the CPU has no fast fp16: ResNet18 at 32 px trained
        // at 9 images/s in fp16 against 258 in fp32 on the 2-core machine.
        let w = "train.precision = fp16 on the CPU is many times slower than fp32; use auto or fp32 there";
        tracing::warn!(task = %task, round, "{w}");
        warnings.push(w.to_string());
    }
    // Everything that can be refused without the images is checked before
    // they are decoded (minutes on a large cohort): the fitting set, then
    // the network and its pretrained weights.
    let fit_labels: Vec<bool> = fit
        .iter()
        .map(|&i| task.is_positive(train_entries[i].label))
        .collect();
    check_fit_set(&fit_labels).map_err(train_error)?;
    // The process-wide compute settings, held from before anything is put
    // on the device until the job ends (a job waiting for other settings
    // holds no device memory).
    let cancelled = || {
        options
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    };
    // Called every 100 ms while another job of this process holds other
    // settings: after SETTINGS_WAIT_LIMIT the job gives up its lease (not
    // an attempt), for a worker that can start it now.
    let waiting_since = Instant::now();
    let gave_up = std::cell::Cell::new(false);
    let waiting = || {
        if waiting_since.elapsed() >= SETTINGS_WAIT_LIMIT {
            gave_up.set(true);
            return true;
        }
        cancelled()
    };
    let _globals = compute.apply_globals(&waiting).map_err(|e| match e {
        crate::precision::GateError::Cancelled if gave_up.get() => JobError::Busy(format!(
            "another job on this worker's GPU held other process-wide settings (TF32, cuDNN \
             autotuning) for {} min",
            SETTINGS_WAIT_LIMIT.as_secs() / 60
        )),
        crate::precision::GateError::Cancelled => train_error(TrainError::Cancelled),
        other => train_error(other.into()),
    })?;
    // Weight initialisation draws from libtorch's process-wide generator:
    // seed it and build the network under a lock so concurrent jobs in one
    // process cannot interleave their draws.
    let (mut vs, net) = {
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = resnet(&vs.root(), t.arch, 2);
        (vs, net)
    };
    let pretrained_sha256 = match spec.pretrained_path() {
        Some(path) => {
            load_pretrained(&mut vs, t.arch, &path)?;
            let sha = PRETRAINED_HASHES
                .sha256_file(&path)
                .map_err(|e| WeightsError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            Some(sha)
        }
        None => None,
    };

    // Images: the training images then the test images, in one tensor.
    let data_started = Instant::now();
    let all: Vec<&Entry> = train_entries.iter().chain(&test_entries).copied().collect();
    let set = load_images(
        &prepared.manifest,
        &all,
        t.reading(),
        device,
        crate::data::Sources {
            threads: options.decode_threads,
            squares: options.squares,
            cancel: options.cancel,
            done: options.prepared,
            cache: options.image_cache.map(|cache| crate::data::CacheUse {
                cache,
                dataset: &prepared.fingerprint.sha256,
            }),
        },
    )
    .map_err(|e| match e {
        crate::data::DataError::Cancelled => train_error(TrainError::Cancelled),
        other => JobError::Data(other),
    })?;
    tracing::info!(
        task = %task,
        round,
        images = all.len(),
        from_cache = set.from_cache,
        "images loaded"
    );
    let positive: Vec<bool> = all.iter().map(|e| task.is_positive(e.label)).collect();
    let labels = Tensor::f_from_slice(&positive.iter().map(|&p| p as i64).collect::<Vec<_>>())?
        .f_to_device(device)?;
    let data_loading = data_started.elapsed().as_secs_f64();
    let startup = started.elapsed().as_secs_f64() - data_loading;

    let data = TrainData {
        seed,
        compute,
        images: &set.images,
        labels: &labels,
        fit: fit.iter().map(|&i| i as i64).collect(),
        fit_labels: fit.iter().map(|&i| positive[i]).collect(),
        validation: val.iter().map(|&i| i as i64).collect(),
        validation_labels: val.iter().map(|&i| positive[i]).collect(),
        cancel: options.cancel,
    };
    let trained = train(&net, &vs, &data, t, on_progress).map_err(train_error)?;

    let eval_started = Instant::now();
    let batch = t.batch_size as i64;
    // Scores of the images at `index` (into the job's image set) with the
    // kept weights.
    let score_at = |index: &[i64]| -> Result<Vec<f64>, JobError> {
        let idx = Tensor::f_from_slice(index)?.f_to_device(device)?;
        let norm = trained.normalise;
        score(&net, &set.images, &idx, norm, batch, compute, &cancelled)
            .map_err(|e| train_error(e.into()))
    };
    let youden = if data.validation.is_empty() {
        None
    } else {
        let labels = &data.validation_labels;
        let chosen = youden_threshold(labels, &score_at(&data.validation)?)?;
        let both = labels.iter().any(|&l| l) && labels.iter().any(|&l| !l);
        if chosen.is_none() && both {
            let w = "the validation scores separate no positive from a negative (Youden's J is \
                     at most 0 at every threshold): no Youden threshold";
            tracing::warn!(task = %task, round, "{w}");
            warnings.push(w.to_string());
        }
        chosen
    };
    let n_train = train_entries.len();
    let test_idx: Vec<i64> = (n_train..all.len()).map(|i| i as i64).collect();
    let scores = score_at(&test_idx)?;
    let test_labels: Vec<bool> = positive[n_train..].to_vec();
    let stats = RoundStats::compute(&test_labels, &scores, t.threshold)?;
    let stats_youden = match youden {
        Some(th) => Some(RoundStats::compute(
            &test_labels,
            &scores,
            th.clamp(0.0, 1.0),
        )?),
        None => None,
    };
    let predictions: Vec<Prediction> = test_entries
        .iter()
        .zip(&scores)
        .map(|(e, &s)| Prediction {
            image: e.path.clone(),
            patient: e.patient_id.clone(),
            label: e.label_as_written().to_string(),
            site: e.site.clone().unwrap_or_default(),
            subtype: e.subtype.clone().unwrap_or_default(),
            score: s,
            predicted: s >= t.threshold,
            // The same threshold the Youden statistics use.
            predicted_youden: youden.is_some_and(|th| s >= th.clamp(0.0, 1.0)),
        })
        .collect();
    let evaluation = eval_started.elapsed().as_secs_f64();
    let provenance = provenance::Provenance {
        cuda_graph_replays: trained.graph_replays,
        cuda_graph_fallback: trained.graph_fallback.clone(),
        pretrained_sha256,
        ..provenance::collect(
            device,
            seed,
            &prepared.fingerprint.sha256,
            &prepared.plan.plan_sha256,
            compute,
        )
    };
    let result = JobResult {
        task,
        round,
        n_fit: fit.len(),
        n_validation: val.len(),
        warnings,
        n_test: test_entries.len(),
        predictions,
        history: trained.history.clone(),
        best_epoch: trained.best_epoch,
        stopped_early: trained.stopped_early,
        youden_threshold: youden,
        stats,
        stats_youden,
        images_per_second: trained.images_per_second,
        timing: Timing {
            preparation,
            startup,
            data_loading,
            training: trained.training_seconds,
            validation: trained.validation_seconds,
            evaluation,
            total: preparation + started.elapsed().as_secs_f64(),
        },
        provenance: provenance.clone(),
    };
    if let Some(out) = options.out {
        let card = ModelCard {
            arch: t.arch,
            image_size: t.image_size,
            resize: t.resize,
            gray16: t.gray16,
            normalise: trained.normalise,
            task,
            round,
            threshold: t.threshold,
            youden_threshold: youden,
            best_epoch: trained.best_epoch,
            compute,
            spec_toml: spec.to_toml(),
            provenance,
        };
        if let Err(source) = crate::outputs::write_all(out, &result, &card, &vs) {
            return Err(JobError::Outputs {
                result: Box::new(result),
                source: Box::new(source),
            });
        }
    }
    Ok(result)
}

/// The model card of a checkpoint: from the checkpoint's own metadata (so a
/// `model.safetensors` copied alone still works), else from `model.json`
/// beside it.
pub fn model_card(checkpoint: &Path) -> Result<ModelCard, PredictError> {
    // A checkpoint in another format (libtorch's own) has no metadata to
    // read: model.json beside it is the card then.
    match std::fs::metadata(checkpoint) {
        Err(source) => {
            return Err(PredictError::NoCheckpoint {
                path: checkpoint.to_path_buf(),
                source,
            })
        }
        Ok(m) if !m.is_file() => {
            return Err(PredictError::NoCheckpoint {
                path: checkpoint.to_path_buf(),
                source: std::io::Error::other("not a file"),
            })
        }
        Ok(_) => {}
    }
    let embedded = match crate::outputs::read_card(checkpoint) {
        Ok(card) => card,
        // libtorch's own format (tch's .ot) has no metadata to read.
        Err(_)
            if crate::weights::format_of(checkpoint).ok()
                == Some(crate::weights::Format::LibtorchArchive) =>
        {
            None
        }
        // Anything else must be a safetensors file (not, say, model.json).
        Err(e) => return Err(PredictError::NotSafetensors(e.to_string())),
    };
    let (text, from) = match embedded {
        Some(text) => (text, checkpoint.to_path_buf()),
        None => {
            let card_path = checkpoint.with_file_name("model.json");
            let text = std::fs::read_to_string(&card_path).map_err(|source| PredictError::Io {
                path: card_path.clone(),
                source,
            })?;
            (text, card_path)
        }
    };
    parse_card(&text).map_err(|e| PredictError::Card {
        path: from,
        message: e.to_string(),
    })
}

/// A model card, including those of checkpoints written before the
/// provenance carried its own copy of the compute settings (their
/// provenance had `cudnn_benchmark` at its top level).
fn parse_card(text: &str) -> Result<ModelCard, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_str(text)?;
    if let Some(card) = value.as_object_mut() {
        let benchmark = card
            .get("provenance")
            .and_then(|p| p.get("cudnn_benchmark"))
            .cloned();
        if let (Some(benchmark), Some(compute)) = (
            benchmark,
            card.get_mut("compute").and_then(|c| c.as_object_mut()),
        ) {
            compute.entry("cudnn_benchmark").or_insert(benchmark);
        }
        let compute = card.get("compute").cloned();
        if let (Some(compute), Some(provenance)) = (
            compute,
            card.get_mut("provenance").and_then(|p| p.as_object_mut()),
        ) {
            provenance.entry("compute").or_insert(compute);
        }
    }
    serde_json::from_value(value)
}

/// Per image, in the order given: its score, or why it could not be read.
pub type Scores = Vec<Score>;

/// An image's score, or why it could not be read.
pub type Score = Result<f64, crossfold_shared::imaging::ImagingError>;

/// What [`predict_each`] hands each image's score to: with the model card
/// and the image's index.
pub type OnScore<'a> = dyn FnMut(&ModelCard, usize, Score) + 'a;

/// Images decoded and scored at a time, so a folder of any size fits in
/// memory (256 images at 224 px are 51 MB of floats).
pub const PREDICT_CHUNK: usize = 256;

/// Scores of new images with a saved checkpoint (`model.safetensors`,
/// which carries its model card). An image that cannot be read gets its
/// error in its place; the others are scored all the same.
pub fn predict(
    checkpoint: &Path,
    images: &[PathBuf],
    device: Device,
) -> Result<(ModelCard, Scores), PredictError> {
    predict_in_chunks(checkpoint, images, device, PREDICT_CHUNK)
}

/// [`predict`], decoding and scoring `chunk` images at a time (the scores
/// do not depend on it; tests use small chunks to cross their boundaries).
pub fn predict_in_chunks(
    checkpoint: &Path,
    images: &[PathBuf],
    device: Device,
    chunk: usize,
) -> Result<(ModelCard, Scores), PredictError> {
    let mut out: Scores = Vec::with_capacity(images.len());
    let card = predict_each(checkpoint, images, device, chunk, &mut |_, _, s| {
        out.push(s)
    })?;
    Ok((card, out))
}

/// [`predict_in_chunks`], handing each image's score (or why it could not
/// be read), in order, to `on` as soon as its chunk is scored, with the
/// model card and the image's index: a failure later on (a device error)
/// loses none of the scores handed on before it.
pub fn predict_each(
    checkpoint: &Path,
    images: &[PathBuf],
    device: Device,
    chunk: usize,
    on: &mut OnScore<'_>,
) -> Result<ModelCard, PredictError> {
    catching(
        || predict_unguarded(checkpoint, images, device, chunk.max(1), on),
        PredictError::Aborted,
    )
}

fn predict_unguarded(
    checkpoint: &Path,
    images: &[PathBuf],
    device: Device,
    chunk: usize,
    on: &mut OnScore<'_>,
) -> Result<ModelCard, PredictError> {
    let card = model_card(checkpoint)?;
    let mut vs = nn::VarStore::new(device);
    let net = resnet(&vs.root(), card.arch, 2);
    load_checkpoint(&mut vs, card.arch, checkpoint).map_err(|e| PredictError::Checkpoint {
        path: checkpoint.to_path_buf(),
        message: match e {
            WeightsError::Read { message, .. } => message,
            WeightsError::Mismatch { arch, detail, .. } => {
                format!("does not match its model card's arch ({arch}): {detail}")
            }
        },
    })?;
    // New images are read as the training images were.
    let reading = crossfold_shared::imaging::Reading {
        size: card.image_size,
        mode: card.resize.mode(),
        gray16: card.gray16,
    };
    let size = card.image_size as i64;
    // The training run's numerics (autocast, layout, TF32), on this device.
    let compute = predict_compute(card.compute, device);
    let _globals = compute.apply_globals(&|| false)?;
    // The weights in the layout the inputs will have, as in training.
    compute.prepare_model(&vs).map_err(ScoreError::from)?;
    let batch = predict_batch(card.image_size);
    let mut index = 0;
    for chunk in images.chunks(chunk) {
        let mut pixels = Vec::with_capacity(chunk.len() * (size * size) as usize);
        let mut read = Vec::with_capacity(chunk.len());
        for p in chunk {
            let image = crossfold_shared::imaging::load_square(p, reading);
            if let Ok(px) = &image {
                pixels.extend_from_slice(px);
            }
            read.push(image.map(|_| ()));
        }
        let n = read.iter().filter(|r| r.is_ok()).count() as i64;
        let mut scores = Vec::new();
        if n > 0 {
            let stack = Tensor::f_from_slice(&pixels)?
                .f_reshape([n, 1, size, size])?
                .f_to_device(device)?;
            let idx = Tensor::f_arange(n, (Kind::Int64, device))?;
            scores = score(&net, &stack, &idx, card.normalise, batch, compute, &|| {
                false
            })?;
        }
        if scores.len() != n as usize {
            return Err(PredictError::Count {
                got: scores.len(),
                want: n as usize,
            });
        }
        let mut scores = scores.into_iter();
        for r in read {
            on(&card, index, r.map(|()| scores.next().unwrap_or(f64::NAN)));
            index += 1;
        }
    }
    Ok(card)
}

/// Images per forward pass when predicting: 64 at 224 px, fewer for larger
/// images (the activations grow with the pixel count), at least 1.
fn predict_batch(image_size: u32) -> i64 {
    let pixels = i64::from(image_size.max(1)).pow(2);
    (64 * 224 * 224 / pixels).clamp(1, 64)
}

/// The compute settings for scoring on `device` with a network trained
/// under `trained`: the same autocast, layout and TF32 choice, addressed to
/// this device (a model trained on a GPU can score on a CPU and back). On
/// the CPU scoring runs in fp32: its autocast is many times slower (fp16
/// 30x), and fp32 holds every value a bf16 or fp16 network computes.
fn predict_compute(trained: Compute, device: Device) -> Compute {
    predict_compute_on(trained, device, crate::device::capability_of(device))
}

/// [`predict_compute`] for a GPU of `capability`: where it lacks bf16 (or
/// TF32), scoring runs in fp32 instead, which any network trained in bf16
/// can.
fn predict_compute_on(trained: Compute, device: Device, capability: Option<(i32, i32)>) -> Compute {
    let cuda = device.is_cuda();
    let ampere = crate::precision::at_least(cuda, capability, 8);
    Compute {
        cuda,
        tf32: trained.tf32 && cuda && ampere,
        autocast_bf16: trained.autocast_bf16 && cuda && ampere,
        autocast_fp16: trained.autocast_fp16 && cuda,
        cudnn_benchmark: false,
        cuda_graph: false,
        ..trained
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{0}")]
    Precision(#[from] crate::precision::GateError),
    #[error("checkpoint {path}: {source}")]
    NoCheckpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} (a crossfold checkpoint is the model.safetensors a training run writes)")]
    NotSafetensors(String),
    #[error("{path}: {source} (the checkpoint has no model card in its metadata, so it needs its model.json beside it)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a crossfold model card: {message}")]
    Card { path: PathBuf, message: String },
    #[error("{path}: cannot load the checkpoint: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Score(#[from] ScoreError),
    #[error("libtorch failed: {0}")]
    Aborted(String),
    #[error("scoring gave {got} scores for {want} images")]
    Count { got: usize, want: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_every_attempt_would_meet_are_not_retried() {
        use crate::data::DataError;
        use crossfold_shared::imaging::ImagingError;
        let train = |source| JobError::Train {
            task: Task::Screening,
            round: 1,
            source,
        };
        let io = ImagingError::Io {
            path: "a.png".into(),
            source: std::io::Error::other("stale NFS handle"),
        };
        let bad = ImagingError::Undecodable {
            path: "b.png".into(),
            reason: "not a PNG".into(),
        };
        assert!(JobError::Data(DataError::Image(io)).is_retryable());
        assert!(!JobError::Data(DataError::Image(bad)).is_retryable());
        assert!(!train(TrainError::OneClass("positive")).is_retryable());
        assert!(!train(TrainError::EmptyTraining).is_retryable());
        assert!(!JobError::UnknownImage("x.png".into()).is_retryable());
        assert!(!train(TrainError::Compute(
            crate::precision::ComputeError::Fp16NeedsFused
        ))
        .is_retryable());
        let unmounted = WeightsError::Read {
            path: "/mnt/models/r34.safetensors".into(),
            message: "No such file or directory".into(),
        };
        assert!(JobError::Weights(unmounted).is_retryable());
        let wrong = WeightsError::Mismatch {
            path: "r34.safetensors".into(),
            arch: crossfold_shared::spec::Arch::Resnet18,
            detail: "extra weights".into(),
        };
        assert!(!JobError::Weights(wrong).is_retryable());
        // Another worker's GPU may have bf16; libtorch may have run out of memory.
        assert!(train(TrainError::Compute(
            crate::precision::ComputeError::NoBf16 {
                index: 0,
                major: 7,
                minor: 5
            }
        ))
        .is_retryable());
        assert!(JobError::Aborted {
            task: Task::Screening,
            round: 1,
            message: "CUDA out of memory".into()
        }
        .is_retryable());
    }

    #[test]
    fn prediction_batches_shrink_with_the_image_size() {
        assert_eq!(predict_batch(224), 64);
        assert_eq!(predict_batch(64), 64);
        assert_eq!(predict_batch(448), 16);
        assert_eq!(predict_batch(1024), 3);
        assert_eq!(predict_batch(2048), 1);
    }

    #[test]
    fn prediction_keeps_the_training_numerics_on_its_own_device() {
        let gpu_trained = Compute {
            cuda: true,
            autocast_bf16: true,
            autocast_fp16: false,
            tf32: true,
            channels_last: true,
            fused_optimizer: true,
            cudnn_benchmark: true,
            cuda_graph: true,
        };
        let on_cpu = predict_compute(gpu_trained, Device::Cpu);
        assert!(!on_cpu.cuda && !on_cpu.tf32 && !on_cpu.cudnn_benchmark);
        assert!(!on_cpu.cuda_graph, "scoring never replays a training graph");
        assert!(!on_cpu.autocast_bf16 && on_cpu.channels_last);
        // fp16 autocast, from a 7.x GPU, scores in fp32 on the CPU too and
        // in fp16 on a GPU.
        let fp16_trained = Compute {
            autocast_bf16: false,
            autocast_fp16: true,
            ..gpu_trained
        };
        assert!(!predict_compute(fp16_trained, Device::Cpu).autocast_fp16);
        assert!(predict_compute_on(fp16_trained, Device::Cuda(0), Some((7, 0))).autocast_fp16);
        let cpu_trained = Compute::plain();
        let on_gpu = predict_compute_on(cpu_trained, Device::Cuda(1), Some((9, 0)));
        assert!(on_gpu.cuda && !on_gpu.tf32 && !on_gpu.autocast_bf16);
        // A bf16-trained network scores in fp32 on a GPU without bf16.
        let on_t4 = predict_compute_on(gpu_trained, Device::Cuda(0), Some((7, 5)));
        assert!(on_t4.cuda && !on_t4.autocast_bf16 && !on_t4.tf32);
        let on_h100 = predict_compute_on(gpu_trained, Device::Cuda(0), Some((9, 0)));
        assert!(on_h100.autocast_bf16 && on_h100.tf32);
    }

    #[test]
    fn a_libtorch_panic_inside_a_job_becomes_an_error_with_its_message() {
        let err = guarded(Task::Screening, 3, || -> Result<(), JobError> {
            // tch's infallible matmul panics on the shape error libtorch throws.
            let a = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
            let b = Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu));
            let _ = a.matmul(&b);
            Ok(())
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("task screening, round 3: libtorch failed: "),
            "{msg}"
        );
        assert!(msg.contains("cannot be multiplied"), "{msg}");
        assert!(!msg.contains("Result::unwrap()"), "{msg}");
        // No panic: the closure's own result passes through.
        assert_eq!(guarded(Task::Malignancy, 1, || Ok(5)).unwrap(), 5);
        assert!(matches!(
            guarded(Task::Malignancy, 1, || -> Result<(), JobError> {
                Err(JobError::UnknownImage("x.png".into()))
            }),
            Err(JobError::UnknownImage(_))
        ));
    }

    #[test]
    fn a_validation_set_without_both_classes_is_warned_about() {
        let t = crossfold_shared::spec::TrainSpec::default();
        assert!(validation_warnings(&t, [true, false].into_iter()).is_empty());
        let w = validation_warnings(&t, [true, true].into_iter());
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("2 positive, 0 negative") && w[0].contains("no early stopping"));
        let none = crossfold_shared::spec::TrainSpec {
            validation_fraction: 0.0,
            ..t.clone()
        };
        let w = validation_warnings(&none, std::iter::empty());
        assert!(w[0].starts_with("train.validation_fraction = 0"), "{w:?}");
        let w = validation_warnings(&t, std::iter::empty());
        assert!(w[0].starts_with("the validation set is empty"), "{w:?}");
    }

    #[test]
    fn cards_of_older_checkpoints_still_load() {
        // model.json as the first CPU runs wrote it: no fused_optimizer in
        // `compute`, cuDNN autotuning and no compute copy in `provenance`.
        let old = r#"{"arch": "resnet18", "best_epoch": 20,
            "compute": {"autocast_bf16": false, "channels_last": true, "cuda": false, "tf32": false},
            "image_size": 64, "normalise": {"mean": 0.339, "std": 0.256},
            "provenance": {"cpu_threads": 2, "crossfold_version": "0.1.0", "cuda_version": null,
                "cudnn_benchmark": true, "cudnn_version": null, "dataset_sha256": "d3", "device": "cpu",
                "device_name": "AMD EPYC", "git_commit": "ef8c884c10cb", "libtorch_version": "2.11.0",
                "plan_sha256": "c6", "seed": 2022, "tch_version": "0.24.0"},
            "resize": "pad", "round": 1, "spec_toml": "name = \"paper\"", "task": "screening",
            "threshold": 0.5, "youden_threshold": 0.91}"#;
        let card = parse_card(old).unwrap();
        assert_eq!(card.arch, crossfold_shared::spec::Arch::Resnet18);
        assert!(card.compute.channels_last && !card.compute.fused_optimizer);
        assert!(card.compute.cudnn_benchmark);
        assert_eq!(card.provenance.compute, card.compute);
        assert!(!card.provenance.deterministic_algorithms);
        assert_eq!(card.gray16, crossfold_shared::imaging::Gray16Scale::Auto);
        // A card that is not one still fails, naming the missing field.
        let err = parse_card(r#"{"arch": "resnet18"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn checkpoint_errors_name_the_file_and_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.safetensors");
        let err = model_card(&missing).unwrap_err();
        assert!(matches!(err, PredictError::NoCheckpoint { .. }), "{err}");
        assert!(
            err.to_string().contains("checkpoint") && err.to_string().contains("nope.safetensors")
        );
        let err = model_card(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a file"), "{err}");
        // A model card (JSON) given as the checkpoint.
        let json = dir.path().join("card.safetensors");
        std::fs::write(&json, "{\"arch\": \"resnet34\"}").unwrap();
        let err = model_card(&json).unwrap_err();
        assert!(matches!(err, PredictError::NotSafetensors(_)), "{err}");
        assert!(err.to_string().contains("card.safetensors"), "{err}");
        let card = dir.path().join("model.json");
        std::fs::write(&card, "{}").unwrap();
        let err = model_card(&card).unwrap_err();
        assert!(matches!(err, PredictError::NotSafetensors(_)), "{err}");
        // libtorch's archive format is told by content, whatever the name:
        // its card is the model.json beside it (here one that is not a card).
        let vs = nn::VarStore::new(Device::Cpu);
        let _w = vs.root().zeros("w", &[2]);
        let ot = dir.path().join("w.ot");
        vs.save(&ot).unwrap();
        let renamed = dir.path().join("w.safetensors");
        std::fs::rename(&ot, &renamed).unwrap();
        let err = model_card(&renamed).unwrap_err();
        assert!(
            matches!(&err, PredictError::Card { path, .. } if path == &card),
            "{err}"
        );
    }
}
