//! Training throughput of crossfold's own training loop, for comparison with
//! the PyTorch reference in `bench/reference.py` (same network, image size,
//! batch, optimiser, precision and thread count).
//!
//! The loop measured is [`crate::train::train`] itself, with augmentation off
//! and no validation set, on random uint8 images held on the device: gather,
//! scale, normalise, forward, class-weighted cross-entropy, backward, step.
//! The first epoch is warm-up; images/s is taken from the second.

use crate::model::resnet;
use crate::precision::Compute;
use crate::train::{train, Control, TrainData, TrainError};
use crossfold_shared::spec::{Arch, ClassWeighting, Optimizer, Precision, Toggle, TrainSpec};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub implementation: &'static str,
    pub arch: Arch,
    pub size: u32,
    pub batch: u32,
    pub device: String,
    pub threads: i32,
    pub compute: Compute,
    pub optimizer: Optimizer,
    pub images_per_second: f64,
    /// Steps replayed from a CUDA graph, and why none were when asked for.
    pub graph_replays: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_fallback: Option<String>,
}

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub arch: Arch,
    pub size: u32,
    pub batch: u32,
    pub steps: u32,
    pub precision: Precision,
    pub channels_last: Toggle,
    pub fused_optimizer: Toggle,
    pub cudnn_benchmark: Toggle,
    pub cuda_graph: Toggle,
    /// AdamW (lr 3e-4, weight decay 1e-4: the PyTorch reference's step) or
    /// SGD with the spec's defaults (what a job trains with).
    pub optimizer: Optimizer,
}

/// Run `steps` training steps of `batch` images (after one warm-up epoch of
/// the same length) and report images/s.
pub fn run(settings: Settings, device: Device) -> Result<BenchResult, TrainError> {
    let Settings {
        arch,
        size,
        batch,
        steps,
        precision,
        channels_last,
        fused_optimizer,
        cudnn_benchmark,
        cuda_graph,
        optimizer,
    } = settings;
    let defaults = TrainSpec::default();
    let (lr, weight_decay) = match optimizer {
        Optimizer::Sgd => (defaults.lr, defaults.weight_decay),
        _ => (3e-4, 1e-4),
    };
    tch::manual_seed(0);
    let n = (steps * batch) as i64;
    let s = size as i64;
    let images = Tensor::f_randint(256, [n, 1, s, s], (Kind::Uint8, device))?;
    let labels_cpu: Vec<i64> = (0..n).map(|i| i % 2).collect();
    let labels = Tensor::f_from_slice(&labels_cpu)?.f_to_device(device)?;
    let vs = nn::VarStore::new(device);
    let net = resnet(&vs.root(), arch, 2);
    let mut spec = TrainSpec {
        arch,
        image_size: size,
        epochs: 2,
        batch_size: batch,
        optimizer,
        lr,
        weight_decay,
        warmup_epochs: 0,
        class_weighting: ClassWeighting::Balanced,
        validation_fraction: 0.0,
        early_stopping_patience: 0,
        precision,
        channels_last,
        fused_optimizer,
        cudnn_benchmark,
        cuda_graph,
        ..TrainSpec::default()
    };
    spec.augment.enabled = false;
    let data = TrainData {
        seed: 0,
        compute: Compute::for_device(&spec, device)?,
        images: &images,
        labels: &labels,
        fit: (0..n).collect(),
        fit_labels: labels_cpu.iter().map(|&y| y == 1).collect(),
        validation: Vec::new(),
        validation_labels: Vec::new(),
        cancel: None,
    };
    let _globals = data.compute.apply_globals(&|| false)?;
    let trained = train(&net, &vs, &data, &spec, &mut |_| Control::Continue)?;
    let second = trained
        .history
        .get(1)
        .map(|h| h.seconds)
        .unwrap_or(f64::NAN);
    Ok(BenchResult {
        implementation: "crossfold",
        arch,
        size,
        batch,
        device: format!("{device:?}").to_lowercase(),
        threads: tch::get_num_threads(),
        compute: data.compute,
        optimizer,
        images_per_second: n as f64 / second,
        graph_replays: trained.graph_replays,
        graph_fallback: trained.graph_fallback,
    })
}
