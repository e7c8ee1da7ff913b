//! The training loop: mini-batches gathered and augmented on the device,
//! class-weighted (or class-balanced sampled) cross-entropy with optional
//! label smoothing, warm-up + cosine/step schedule, validation AUC per epoch,
//! early stopping and the best epoch's weights restored at the end.
//!
//! Nothing waits on the CPU per batch: the loss is summed on the device and
//! read once per epoch. The progress callback is called after every step and
//! every epoch; returning [`Control::Stop`] cancels within one step.

mod graphed;
mod optim;
mod schedule;

pub use optim::{LossScale, Optim, OptimError};
pub use schedule::LrSchedule;

use crate::data::{gather, Augmenter};
use crate::evaluate::{log_loss, score, Normalise, ScoreError};
use crate::precision::{Compute, ShimError};
use crossfold_shared::metrics::auc;
use crossfold_shared::spec::{ClassWeighting, TrainSpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::nn::{self, ModuleT};
use tch::{Kind, Reduction, Tensor};

/// Where training is, for progress bars and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub epoch: u32,
    pub epochs: u32,
    pub step: u32,
    pub steps_per_epoch: u32,
    /// Mean training loss of the last finished epoch.
    pub train_loss: Option<f64>,
    pub validation_auc: Option<f64>,
    pub images_per_second: f64,
    pub eta_seconds: f64,
    /// True for the report at the end of an epoch (after validation), when
    /// `train_loss` and `validation_auc` are that epoch's.
    pub epoch_done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// One epoch of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: u32,
    pub train_loss: f64,
    pub validation_loss: Option<f64>,
    pub validation_auc: Option<f64>,
    /// The rate of the epoch's last step (with warm-up, the epoch's steps
    /// ran below it).
    pub learning_rate: f64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Precision(#[from] ShimError),
    #[error("{0}")]
    Optim(#[from] OptimError),
    #[error("{0}")]
    Compute(#[from] crate::precision::ComputeError),
    #[error("{0}")]
    Gate(#[from] crate::precision::GateError),
    #[error("{0}")]
    Score(crate::evaluate::ScoreError),
    #[error("{0}")]
    Graph(#[from] crate::graph::GraphError),
    #[error("cancelled")]
    Cancelled,
    #[error("training diverged in epoch {epoch}: {what} (train.lr = {lr}); try a lower train.lr")]
    Diverged { epoch: u32, what: String, lr: f64 },
    #[error("no images to train on (the split plan gives this round no training images)")]
    EmptyTraining,
    #[error("only {0} image(s) to train on; at least 2 are needed")]
    TooFewImages(usize),
    #[error(
        "no {0} images to train on; both classes are needed (see the split plan, and \
         train.validation_fraction, which moves whole patients to validation)"
    )]
    OneClass(&'static str),
}

/// Scoring told to stop is the job cancelled, as training told to stop is.
impl From<ScoreError> for TrainError {
    fn from(e: ScoreError) -> Self {
        match e {
            ScoreError::Cancelled => TrainError::Cancelled,
            other => TrainError::Score(other),
        }
    }
}

/// A mean two-class cross-entropy above this ends the job as diverged: a
/// learning network starts near ln 2 = 0.69, and 100 means the true class
/// scores about 100 logits below the other on average, from which training
/// does not come back (seen with train.lr = 10: 7.7e3, 2.8e7, 1.2e10).
pub const DIVERGED_LOSS: f64 = 100.0;

/// What training needs: all images of the job on the device, their labels
/// (int64 0/1 on the device, indexed like `images`), which images fit and
/// which validate, and the seed of batch order and augmentation.
pub struct TrainData<'a> {
    pub seed: u64,
    pub compute: Compute,
    pub images: &'a Tensor,
    pub labels: &'a Tensor,
    pub fit: Vec<i64>,
    pub fit_labels: Vec<bool>,
    pub validation: Vec<i64>,
    pub validation_labels: Vec<bool>,
    /// Set to stop while the validation images are scored (the training
    /// steps stop through the progress callback).
    pub cancel: Option<&'a AtomicBool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub history: Vec<EpochRecord>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: u32,
    pub stopped_early: bool,
    pub normalise: Normalise,
    /// Training throughput (fit images per second of optimisation steps).
    pub images_per_second: f64,
    /// The epochs' batches (order, augmentation, steps) and the read-back
    /// of each epoch's loss.
    pub training_seconds: f64,
    /// Scoring the validation images after each epoch, keeping the best
    /// epoch's weights, and restoring them at the end.
    pub validation_seconds: f64,
    /// Steps replayed from a CUDA graph (`train.cuda_graph`; 0 without).
    pub graph_replays: u64,
    /// Why CUDA graphs were not used although the compute settings asked
    /// for them (not available in this worker, or the capture failed).
    pub graph_fallback: Option<String>,
}

/// Whether an epoch with validation AUC `auc` and loss `loss` is better
/// than the best so far, `(AUC, loss, epoch)`: a higher AUC is; so is an
/// equal AUC (within 1e-9, e.g. both 1.0 once validation is separated) with
/// a lower loss. The best epoch's weights are kept, and early stopping's
/// patience counts from it.
fn improves(best: Option<(f64, f64, u32)>, auc: f64, loss: f64) -> bool {
    best.is_none_or(|(b, bl, _)| auc > b + 1e-9 || ((auc - b).abs() <= 1e-9 && loss < bl))
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(k, v)| (k, v.copy()))
            .collect()
    })
}

fn restore(vs: &nn::VarStore, saved: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if let Some(src) = saved.get(&name) {
                var.copy_(src);
            }
        }
    })
}

/// Whether images with these labels (true = positive) can be trained on:
/// at least two, of both classes. Checked before any image is decoded.
pub fn check_fit_set(fit_labels: &[bool]) -> Result<(), TrainError> {
    let n_fit = fit_labels.len();
    if n_fit == 0 {
        return Err(TrainError::EmptyTraining);
    }
    if n_fit < 2 {
        return Err(TrainError::TooFewImages(n_fit));
    }
    let n_pos = fit_labels.iter().filter(|&&y| y).count();
    if n_pos == 0 {
        return Err(TrainError::OneClass("positive"));
    }
    if n_pos == n_fit {
        return Err(TrainError::OneClass("negative"));
    }
    Ok(())
}

/// One epoch's batch order: `per_epoch` image indices (a whole number of
/// batches). Every fit image once in a random order, the last batch filled
/// up from the order's start; or, with balanced sampling, draws with
/// replacement, half from each class on average.
fn epoch_order(
    fit: &[i64],
    fit_labels: &[bool],
    weighting: ClassWeighting,
    per_epoch: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<i64> {
    let n_fit = fit.len();
    let order: Vec<i64> = match weighting {
        // Balanced sampling: half the draws from each class, with replacement.
        ClassWeighting::Sampler => (0..n_fit)
            .map(|_| {
                let want = rng.random::<bool>();
                loop {
                    let i = rng.random_range(0..n_fit);
                    if fit_labels[i] == want {
                        break fit[i];
                    }
                }
            })
            .collect(),
        _ => {
            let mut o = fit.to_vec();
            o.shuffle(rng);
            o
        }
    };
    let fill: Vec<i64> = order[..per_epoch - n_fit].to_vec();
    [order, fill].concat()
}

/// The mean cross-entropy of a batch (class-weighted: normalised by the
/// weights of the batch's labels, as PyTorch's `mean` is), with label
/// smoothing. With both weights and smoothing, libtorch's `mean` selects
/// the labels with `masked_select`, whose data-dependent size waits on the
/// device (and cannot be captured in a CUDA graph): the same mean is
/// computed here from the per-image losses instead.
fn step_loss(
    logits: &Tensor,
    y: &Tensor,
    weight: Option<&Tensor>,
    smoothing: f64,
) -> Result<Tensor, tch::TchError> {
    match weight {
        Some(w) if smoothing > 0.0 => logits
            .f_cross_entropy_loss(y, Some(w), Reduction::None, -100, smoothing)?
            .f_sum(Kind::Float)?
            .f_div(&w.f_index_select(0, y)?.f_sum(Kind::Float)?),
        _ => logits.f_cross_entropy_loss(y, weight, Reduction::Mean, -100, smoothing),
    }
}

/// Train `net` (whose variables live in `vs`) and leave the best epoch's
/// weights in `vs`. The caller holds the process-wide compute settings
/// (`Compute::apply_globals`).
pub fn train(
    net: &impl ModuleT,
    vs: &nn::VarStore,
    data: &TrainData,
    t: &TrainSpec,
    on_progress: &mut dyn FnMut(&Progress) -> Control,
) -> Result<Trained, TrainError> {
    check_fit_set(&data.fit_labels)?;
    let n_fit = data.fit.len();
    let n_pos = data.fit_labels.iter().filter(|&&y| y).count();
    let device = data.images.device();
    let fit = Tensor::f_from_slice(&data.fit)?.f_to_device(device)?;
    let validation = Tensor::f_from_slice(&data.validation)?.f_to_device(device)?;
    let (mean, std) = crate::data::pixel_stats(data.images, &fit)?;
    let normalise = Normalise { mean, std };
    let augmenter = Augmenter::new(&t.augment);

    data.compute.prepare_model(vs)?;
    let batch = (t.batch_size as usize).min(n_fit);
    // Every step has exactly `batch` images: the last batch of an epoch is
    // filled up from the start of the epoch's order. One input shape means
    // cuDNN autotunes once (each new shape costs seconds on a GPU), and
    // batch norm never sees a batch of one.
    let steps = n_fit.div_ceil(batch);
    let per_epoch = steps * batch;
    let schedule = LrSchedule::from_spec(t, steps);
    let loss_scale = if data.compute.autocast_fp16 {
        Some(LossScale::new(
            device,
            LossScale::INITIAL,
            LossScale::INTERVAL,
        )?)
    } else {
        None
    };
    let mut opt = Optim::new(vs, t, data.compute.fused_optimizer, loss_scale)?;

    let n_neg = n_fit - n_pos;
    let class_weight = match t.class_weighting {
        ClassWeighting::Balanced => Some(
            Tensor::f_from_slice(&[
                n_fit as f32 / (2.0 * n_neg as f32),
                n_fit as f32 / (2.0 * n_pos as f32),
            ])?
            .f_to_device(device)?,
        ),
        _ => None,
    };
    // All randomness of batch order and augmentation comes from the job's
    // own generator, drawn on the CPU: jobs running side by side in one
    // process cannot disturb each other, and CPU runs are reproducible.
    let mut rng = ChaCha8Rng::seed_from_u64(data.seed);
    // A CUDA graph of the step (train.cuda_graph): every step reads its
    // batch, augmentation and learning rate from fixed tensors. Without one
    // the step runs eagerly on the current stream.
    let mut graphed = None;
    let mut graph_fallback = None;
    if let (true, tch::Device::Cuda(index)) = (data.compute.cuda_graph, device) {
        let params = if augmenter.enabled() {
            Augmenter::PARAMS as i64
        } else {
            0
        };
        match graphed::Graphed::start(index, device, batch as i64, params) {
            Ok(g) => graphed = Some(g),
            Err(reason) => {
                tracing::warn!(reason = %reason, "training without a cuda graph");
                graph_fallback = Some(reason);
            }
        }
    }
    // The epoch's summed loss, added to in place: a captured step adds to
    // this very tensor when replayed.
    let loss_sum = Tensor::f_zeros([], (Kind::Float, device))?;

    let epochs = t.epochs;
    let mut history = Vec::new();
    // Best epoch so far: (validation AUC, validation loss, epoch).
    let mut best: Option<(f64, f64, u32)> = None;
    let mut saved = None;
    let mut stopped_early = false;
    let mut train_seconds = 0.0;
    let mut validation_seconds = 0.0;
    let mut images_seen = 0usize;
    let mut last_loss = None;
    let mut last_auc = None;
    let mut step_global = 0usize;
    let started = Instant::now();
    for epoch in 1..=epochs {
        let epoch_start = Instant::now();
        let order = epoch_order(
            &data.fit,
            &data.fit_labels,
            t.class_weighting,
            per_epoch,
            &mut rng,
        );
        // One upload per epoch (order and augmentation parameters): a
        // host-to-device copy synchronises the stream, so none happens per batch.
        let order = Tensor::f_from_slice(&order)?.f_to_device(device)?;
        let uniforms = if augmenter.enabled() {
            let u: Vec<f32> = (0..per_epoch * Augmenter::PARAMS)
                .map(|_| rng.random::<f32>())
                .collect();
            Some(
                Tensor::f_from_slice(&u)?
                    .f_view([per_epoch as i64, Augmenter::PARAMS as i64])?
                    .f_to_device(device)?,
            )
        } else {
            None
        };
        let _ = loss_sum.shallow_clone().f_zero_()?;
        let mut lr = schedule.at(step_global);
        for step in 0..steps {
            let start = step * batch;
            let len = batch;
            let idx = order.f_narrow(0, start as i64, len as i64)?;
            let u = match &uniforms {
                Some(all) => all.f_narrow(0, start as i64, len as i64)?,
                None => Tensor::f_zeros([len as i64, 0], (Kind::Float, device))?,
            };
            lr = schedule.at(step_global);
            // Batch, augmentation and loss of one step; the optimiser's
            // rate from `device_lr` when given, else `lr`.
            let mut body = |idx: &Tensor, u: &Tensor, device_lr: Option<&Tensor>| {
                let x = normalise.apply(&augmenter.apply(&gather(data.images, idx)?, u)?)?;
                let y = data.labels.f_index_select(0, idx)?;
                let logits = data.compute.forward(net, &x, true)?;
                let loss = step_loss(&logits, &y, class_weight.as_ref(), t.label_smoothing)?;
                match device_lr {
                    Some(r) => opt.backward_step_device_lr(&loss, r)?,
                    None => opt.backward_step(&loss, lr)?,
                }
                let _ = loss_sum.shallow_clone().f_add_(&loss.f_detach()?)?;
                Ok::<(), TrainError>(())
            };
            match graphed.as_mut() {
                Some(g) => {
                    g.idx.shallow_clone().f_copy_(&idx)?;
                    if augmenter.enabled() {
                        g.u.shallow_clone().f_copy_(&u)?;
                    }
                    let _ = g.lr.shallow_clone().f_fill_(lr)?;
                    g.step(&mut |idx, u, r| body(idx, u, Some(r)))?;
                }
                None => body(&idx, &u, None)?,
            }
            step_global += 1;
            images_seen += len;
            let elapsed = train_seconds + epoch_start.elapsed().as_secs_f64();
            let done = (epoch - 1) as f64 + (step + 1) as f64 / steps as f64;
            // The ETA from the wall time, validation included, as at the
            // end of an epoch: the two kinds of report agree.
            let wall = started.elapsed().as_secs_f64();
            let progress = Progress {
                epoch,
                epochs,
                step: step as u32 + 1,
                steps_per_epoch: steps as u32,
                train_loss: last_loss,
                validation_auc: last_auc,
                images_per_second: images_seen as f64 / elapsed.max(1e-9),
                eta_seconds: wall / done * (epochs as f64 - done),
                epoch_done: false,
            };
            if on_progress(&progress) == Control::Stop {
                return Err(TrainError::Cancelled);
            }
        }
        let train_loss = loss_sum.f_double_value(&[])? / steps as f64;
        if !train_loss.is_finite() || train_loss > DIVERGED_LOSS {
            return Err(TrainError::Diverged {
                epoch,
                what: if train_loss.is_finite() {
                    format!(
                        "the mean training loss is {train_loss:.3e}, over {DIVERGED_LOSS} \
                         (a two-class network that is confidently wrong)"
                    )
                } else {
                    format!("the training loss is {train_loss}")
                },
                lr: t.lr,
            });
        }
        train_seconds += epoch_start.elapsed().as_secs_f64();
        let validation_started = Instant::now();
        let (validation_loss, validation_auc) = if data.validation.is_empty() {
            (None, None)
        } else {
            let s = score(
                net,
                data.images,
                &validation,
                normalise,
                batch as i64,
                data.compute,
                &|| data.cancel.is_some_and(|c| c.load(Ordering::Relaxed)),
            )?;
            if s.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::Diverged {
                    epoch,
                    what: "the score of a validation image is not a number".into(),
                    lr: t.lr,
                });
            }
            (
                log_loss(&data.validation_labels, &s),
                auc(&data.validation_labels, &s).ok().flatten(),
            )
        };
        last_loss = Some(train_loss);
        last_auc = validation_auc;
        history.push(EpochRecord {
            epoch,
            train_loss,
            validation_loss,
            validation_auc,
            learning_rate: lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
        });
        if let Some(v) = validation_auc {
            let loss = validation_loss.unwrap_or(f64::INFINITY);
            if improves(best, v, loss) {
                best = Some((v, loss, epoch));
                saved = Some(snapshot(vs));
            }
        }
        validation_seconds += validation_started.elapsed().as_secs_f64();
        let elapsed = started.elapsed().as_secs_f64();
        let progress = Progress {
            epoch,
            epochs,
            step: steps as u32,
            steps_per_epoch: steps as u32,
            train_loss: last_loss,
            validation_auc: last_auc,
            images_per_second: images_seen as f64 / train_seconds.max(1e-9),
            eta_seconds: elapsed / epoch as f64 * (epochs - epoch) as f64,
            epoch_done: true,
        };
        if on_progress(&progress) == Control::Stop {
            return Err(TrainError::Cancelled);
        }
        if let Some((_, _, b)) = best {
            if t.early_stopping_patience > 0
                && epoch - b >= t.early_stopping_patience
                && epoch < epochs
            {
                stopped_early = true;
                break;
            }
        }
    }
    let best_epoch = match (best, &saved) {
        (Some((_, _, b)), Some(s)) => {
            let restoring = Instant::now();
            restore(vs, s);
            validation_seconds += restoring.elapsed().as_secs_f64();
            b
        }
        _ => history.len() as u32,
    };
    // After the restore, which reads the snapshot on the graph's stream:
    // the snapshot is freed only once that stream is done with it.
    let (graph_replays, graph_fallback) = match graphed.as_mut() {
        Some(g) => {
            g.finish()?;
            (g.replays, g.fallback.take())
        }
        None => (0, graph_fallback),
    };
    drop(saved);
    Ok(Trained {
        history,
        best_epoch,
        stopped_early,
        normalise,
        images_per_second: images_seen as f64 / train_seconds.max(1e-9),
        training_seconds: train_seconds,
        validation_seconds,
        graph_replays,
        graph_fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_shared::spec::{Optimizer, Schedule};
    use tch::Device;

    /// 64 images of 16x16 px: positives have a faint square in the middle,
    /// negatives do not, both under uniform noise; fit on 48, validate on
    /// 16. Drawn from the seed alone (not libtorch's global generator, which
    /// tests running alongside also draw from).
    fn toy(seed: u64) -> (Tensor, Tensor, Vec<i64>, Vec<bool>, Vec<i64>, Vec<bool>) {
        let n = 64usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        let mut pixels = Vec::with_capacity(n * 256);
        for &positive in &labels {
            for p in 0..256 {
                let (r, c) = (p / 16, p % 16);
                let inside = (4..12).contains(&r) && (4..12).contains(&c);
                let bump = if positive && inside { 12 } else { 0 };
                pixels.push(rng.random_range(0..200u8) + bump);
            }
        }
        let images = Tensor::from_slice(&pixels).view([n as i64, 1, 16, 16]);
        let y = Tensor::from_slice(&labels.iter().map(|&b| b as i64).collect::<Vec<_>>());
        let fit: Vec<i64> = (0..48).collect();
        let val: Vec<i64> = (48..n as i64).collect();
        let fl = fit.iter().map(|&i| labels[i as usize]).collect();
        let vl = val.iter().map(|&i| labels[i as usize]).collect();
        (images, y, fit, fl, val, vl)
    }

    fn tiny_net(vs: &nn::VarStore) -> impl ModuleT {
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(
            vs.root() / "fc",
            256,
            2,
            Default::default(),
        ))
    }

    fn spec(epochs: u32, lr: f64, patience: u32) -> TrainSpec {
        let mut t = TrainSpec {
            epochs,
            batch_size: 16,
            optimizer: Optimizer::Sgd,
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule: Schedule::Cosine,
            warmup_epochs: 0,
            early_stopping_patience: patience,
            ..TrainSpec::default()
        };
        t.augment.enabled = false;
        t
    }

    fn run(
        t: &TrainSpec,
        seed: u64,
        progress: &mut dyn FnMut(&Progress) -> Control,
    ) -> (Trained, Vec<f64>, Vec<bool>) {
        run_with(t, seed, Compute::plain(), progress)
    }

    fn run_with(
        t: &TrainSpec,
        seed: u64,
        compute: Compute,
        progress: &mut dyn FnMut(&Progress) -> Control,
    ) -> (Trained, Vec<f64>, Vec<bool>) {
        try_run_with(t, seed, compute, 0.05, progress).unwrap()
    }

    /// Train the toy network from weights drawn in `[-init, init)` (all NaN
    /// when `init` is NaN).
    fn try_run_with(
        t: &TrainSpec,
        seed: u64,
        compute: Compute,
        init: f32,
        progress: &mut dyn FnMut(&Progress) -> Control,
    ) -> Result<(Trained, Vec<f64>, Vec<bool>), TrainError> {
        let (images, labels, fit, fit_labels, validation, validation_labels) = toy(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = tiny_net(&vs);
        // Starting weights from the seed too.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (_, mut v) in vars {
                let w: Vec<f32> = (0..v.numel())
                    .map(|_| {
                        if init.is_nan() {
                            f32::NAN
                        } else {
                            rng.random_range(-init..init)
                        }
                    })
                    .collect();
                v.copy_(&Tensor::from_slice(&w).view(v.size().as_slice()));
            }
        });
        let data = TrainData {
            seed,
            compute,
            images: &images,
            labels: &labels,
            fit,
            fit_labels,
            validation: validation.clone(),
            validation_labels: validation_labels.clone(),
            cancel: None,
        };
        let trained = train(&net, &vs, &data, t, progress)?;
        // Score the validation images with the weights train() left behind.
        let idx = Tensor::from_slice(&validation);
        let s = score(&net, &images, &idx, trained.normalise, 16, compute, &|| {
            false
        })
        .unwrap();
        Ok((trained, s, validation_labels))
    }

    #[test]
    fn cancelling_during_validation_stops_before_the_epoch_ends() {
        let (images, labels, fit, fit_labels, validation, validation_labels) = toy(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = tiny_net(&vs);
        let cancel = AtomicBool::new(false);
        let data = TrainData {
            seed: 5,
            compute: Compute::plain(),
            images: &images,
            labels: &labels,
            fit,
            fit_labels,
            validation,
            validation_labels,
            cancel: Some(&cancel),
        };
        // The flag is set after the first epoch's last step, as a worker
        // told to stop at that moment would set it; the callback itself
        // goes on saying continue.
        let mut epochs_done = 0;
        let err = train(&net, &vs, &data, &spec(3, 0.05, 0), &mut |p| {
            if !p.epoch_done && p.step == p.steps_per_epoch {
                cancel.store(true, Ordering::Relaxed);
            }
            epochs_done += u32::from(p.epoch_done);
            Control::Continue
        })
        .unwrap_err();
        assert!(matches!(err, TrainError::Cancelled), "{err}");
        assert_eq!(epochs_done, 0, "stopped inside the first validation");
    }

    #[test]
    fn a_diverging_run_fails_naming_the_epoch_and_the_learning_rate() {
        // Weights that are not numbers (where a far too high learning rate
        // leads within a few epochs: train.lr = 10 on a ResNet18 did): the
        // loss is NaN from the first step. The job must fail, not keep a
        // broken model.
        let t = spec(6, 0.05, 0);
        let mut epochs = 0;
        let err = try_run_with(&t, 3, Compute::plain(), f32::NAN, &mut |p| {
            epochs += u32::from(p.epoch_done);
            Control::Continue
        })
        .unwrap_err();
        let TrainError::Diverged { epoch, lr, .. } = &err else {
            panic!("expected divergence, got {err}");
        };
        assert_eq!((*epoch, epochs), (1, 0), "fails in the first epoch");
        assert_eq!(*lr, 0.05);
        assert!(err.to_string().contains("train.lr = 0.05"), "{err}");
        assert!(err.to_string().contains("try a lower train.lr"), "{err}");
        assert!(err.to_string().contains("loss is NaN"), "{err}");
        // Weights so large that the loss is finite but huge (about 5e30):
        // the network is confidently wrong and does not recover.
        let err =
            try_run_with(&t, 3, Compute::plain(), 1e30, &mut |_| Control::Continue).unwrap_err();
        assert!(
            matches!(err, TrainError::Diverged { epoch: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("over 100"), "{err}");
        // A run that learns is not stopped.
        let (trained, _, _) = run(&t, 3, &mut |_| Control::Continue);
        assert!(trained.history.iter().all(|h| h.train_loss < 1.0));
    }

    #[test]
    fn fp16_with_loss_scaling_trains_like_fp32() {
        let t = spec(8, 0.05, 0);
        let fp16 = Compute {
            autocast_fp16: true,
            fused_optimizer: true,
            ..Compute::plain()
        };
        let (half, scores, labels) = run_with(&t, 4, fp16, &mut |_| Control::Continue);
        let (full, _, _) = run(&t, 4, &mut |_| Control::Continue);
        let (h0, h1) = (half.history[0].train_loss, half.history[7].train_loss);
        assert!(h1 < h0, "fp16 loss did not fall: {h0} -> {h1}");
        // The same trajectory as fp32, to fp16's precision.
        for (a, b) in half.history.iter().zip(&full.history) {
            assert!(
                (a.train_loss - b.train_loss).abs() < 0.02 * b.train_loss.max(0.1),
                "epoch {}: fp16 {} vs fp32 {}",
                a.epoch,
                a.train_loss,
                b.train_loss
            );
        }
        assert!(auc(&labels, &scores).unwrap().unwrap() > 0.5);
    }

    #[test]
    fn early_stopping_ends_after_patience_epochs_without_a_better_validation_auc() {
        // lr 0: the weights never change, so epoch 1 stays the best.
        let t = spec(20, 0.0, 3);
        let (trained, _, _) = run(&t, 1, &mut |_| Control::Continue);
        assert!(trained.stopped_early);
        assert_eq!(trained.best_epoch, 1);
        assert_eq!(trained.history.len(), 4, "epoch 1 and 3 more");
        // Patience 0 never stops early.
        let t = spec(5, 0.0, 0);
        let (trained, _, _) = run(&t, 1, &mut |_| Control::Continue);
        assert!(!trained.stopped_early);
        assert_eq!(trained.history.len(), 5);
    }

    #[test]
    fn a_better_epoch_has_a_higher_auc_or_an_equal_one_with_a_lower_loss() {
        assert!(improves(None, 0.5, f64::INFINITY));
        let best = Some((0.9, 0.30, 4));
        assert!(
            improves(best, 0.91, 0.90),
            "a higher AUC, whatever the loss"
        );
        assert!(
            !improves(best, 0.89, 0.01),
            "a lower AUC, whatever the loss"
        );
        assert!(improves(best, 0.9 + 1e-12, 0.29), "a tie with a lower loss");
        assert!(!improves(best, 0.9, 0.30), "a tie with the same loss");
        assert!(!improves(best, 0.9, 0.31), "a tie with a higher loss");
        // Without a validation loss (infinite), a tie never improves.
        assert!(!improves(Some((1.0, f64::INFINITY, 2)), 1.0, f64::INFINITY));
    }

    #[test]
    fn the_best_epochs_weights_are_restored() {
        // A large learning rate makes the validation AUC go up and down.
        let t = spec(12, 3.0, 0);
        for seed in 0..20 {
            let (trained, scores, labels) = run(&t, seed, &mut |_| Control::Continue);
            let best = trained.best_epoch as usize;
            if best == trained.history.len() {
                continue; // the last epoch was the best: try another seed
            }
            let at_best = trained.history[best - 1].validation_auc.unwrap();
            let last = trained.history.last().unwrap().validation_auc.unwrap();
            // The weights left behind score validation as the best epoch did,
            // not as the last one did.
            let now = auc(&labels, &scores).unwrap().unwrap();
            assert!((now - at_best).abs() < 1e-12, "{now} vs best {at_best}");
            let max = trained
                .history
                .iter()
                .filter_map(|h| h.validation_auc)
                .fold(f64::MIN, f64::max);
            assert_eq!(at_best, max);
            eprintln!("seed {seed}: best epoch {best} AUC {at_best}, last {last}");
            if (last - at_best).abs() > 1e-9 {
                return;
            }
        }
        panic!("no seed gave a best epoch with a different AUC than the last");
    }

    #[test]
    fn progress_reports_every_step_and_epoch() {
        let t = spec(3, 0.05, 0);
        let mut seen: Vec<Progress> = Vec::new();
        let (trained, _, _) = run(&t, 2, &mut |p| {
            seen.push(p.clone());
            Control::Continue
        });
        // 48 fit images, batch 16: 3 steps per epoch, then the epoch report.
        assert_eq!(seen.len(), 3 * (3 + 1));
        let epoch_ends: Vec<&Progress> = seen.iter().filter(|p| p.epoch_done).collect();
        assert_eq!(epoch_ends.len(), 3);
        for (p, h) in epoch_ends.iter().zip(&trained.history) {
            assert_eq!(p.epoch, h.epoch);
            assert_eq!(p.train_loss, Some(h.train_loss));
            assert_eq!(p.validation_auc, h.validation_auc);
            assert_eq!((p.step, p.steps_per_epoch, p.epochs), (3, 3, 3));
        }
        assert!(seen.iter().all(|p| p.images_per_second > 0.0));
        assert_eq!(seen.last().unwrap().eta_seconds, 0.0);
        assert!(seen[0].eta_seconds > 0.0);
        // A step report carries the last finished epoch's figures.
        assert_eq!(seen[4].train_loss, Some(trained.history[0].train_loss));
        assert!(seen[0].train_loss.is_none());
    }

    #[test]
    fn epoch_order_covers_every_image_or_balances_the_classes() {
        let fit: Vec<i64> = (100..150).collect();
        // 10% positive.
        let labels: Vec<bool> = (0..50).map(|i| i % 10 == 0).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let o = epoch_order(&fit, &labels, ClassWeighting::Balanced, 64, &mut rng);
        assert_eq!(o.len(), 64);
        let mut first: Vec<i64> = o[..50].to_vec();
        first.sort();
        assert_eq!(first, fit, "each image once, then the fill");
        assert_eq!(&o[50..], &o[..14]);
        // Balanced sampling: about half positive, drawn from the fit set.
        let mut positives = 0;
        let mut draws = 0;
        for _ in 0..40 {
            let o = epoch_order(&fit, &labels, ClassWeighting::Sampler, 50, &mut rng);
            assert!(o.iter().all(|i| fit.contains(i)));
            positives += o.iter().filter(|&&i| (i - 100) % 10 == 0).count();
            draws += o.len();
        }
        let share = positives as f64 / draws as f64;
        assert!((0.45..0.55).contains(&share), "{share}");
    }

    #[test]
    fn the_step_loss_is_pytorchs_mean_cross_entropy() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.3, -0.7, 1.2, 0.0, 0.1, 3.0, -2.0])
            .view([5, 2]);
        let y = Tensor::from_slice(&[0i64, 1, 1, 0, 0]);
        let w = Tensor::from_slice(&[0.8f32, 1.4]);
        for (weight, smoothing) in [(None, 0.0), (None, 0.1), (Some(&w), 0.0), (Some(&w), 0.1)] {
            let ours = step_loss(&logits, &y, weight, smoothing)
                .unwrap()
                .double_value(&[]);
            let mean = logits
                .cross_entropy_loss(&y, weight, Reduction::Mean, -100, smoothing)
                .double_value(&[]);
            assert!(
                (ours - mean).abs() < 1e-6,
                "{weight:?} {smoothing}: {ours} vs {mean}"
            );
        }
        // By hand, weighted and smoothed: per image (1 - e) w_y (-log p_y)
        // + e/2 (w_0 (-log p_0) + w_1 (-log p_1)), summed, over the sum of w_y.
        let lp = logits.log_softmax(1, Kind::Float);
        let lp: Vec<f64> = Vec::<f32>::try_from(lp.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let (wv, labels, e) = ([0.8, 1.4], [0usize, 1, 1, 0, 0], 0.1);
        let (mut sum, mut norm) = (0.0, 0.0);
        for (i, &c) in labels.iter().enumerate() {
            let nll = -wv[c] * lp[2 * i + c];
            let smooth = -(wv[0] * lp[2 * i] + wv[1] * lp[2 * i + 1]);
            sum += (1.0 - e) * nll + e / 2.0 * smooth;
            norm += wv[c];
        }
        let ours = step_loss(&logits, &y, Some(&w), e)
            .unwrap()
            .double_value(&[]);
        assert!((ours - sum / norm).abs() < 1e-6, "{ours} vs {}", sum / norm);
    }

    #[test]
    fn a_fit_set_needs_two_images_of_both_classes() {
        assert!(matches!(check_fit_set(&[]), Err(TrainError::EmptyTraining)));
        assert!(matches!(
            check_fit_set(&[true]),
            Err(TrainError::TooFewImages(1))
        ));
        let e = check_fit_set(&[false, false, false]).unwrap_err();
        assert!(matches!(e, TrainError::OneClass("positive")));
        assert!(e.to_string().contains("train.validation_fraction"), "{e}");
        assert!(matches!(
            check_fit_set(&[true, true]),
            Err(TrainError::OneClass("negative"))
        ));
        assert!(check_fit_set(&[true, false]).is_ok());
    }
}
