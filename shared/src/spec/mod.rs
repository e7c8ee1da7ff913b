//! The experiment spec: a versioned TOML document.
//!
//! ```toml
//! version = 1
//! name = "paper"
//! [dataset]
//! manifest = "data/manifest.csv"   # relative to the spec file
//! [protocol]
//! kind = "paper"                    # paper | kfold | leave-p-groups-out
//! seed = 2021
//! [train]
//! arch = "resnet34"
//! ```
//!
//! Every key has a default that reproduces the paper's design (ResNet34, five
//! label-stratified groups, five screening rounds and ten C(5,2) malignancy
//! rounds); only `name` and `dataset.manifest` must be given. Unknown keys are
//! refused. [`Spec::load`] and [`Spec::parse`] collect every problem (unknown
//! keys, wrong types, values out of range) and name each field and value.

mod load;
mod validate;

pub use load::{Override, SpecError, SpecProblem};
pub use validate::{protocol_problems, round_count, MAX_ROUNDS};

use crate::label::Task;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The spec format version this build reads and writes.
pub const SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spec {
    pub version: u32,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub dataset: DatasetSpec,
    pub protocol: ProtocolSpec,
    pub train: TrainSpec,
    pub resources: ResourcesSpec,
    pub retry: RetrySpec,
    /// Directory the spec was read from; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: SPEC_VERSION,
            name: String::new(),
            description: String::new(),
            dataset: DatasetSpec::default(),
            protocol: ProtocolSpec::default(),
            train: TrainSpec::default(),
            resources: ResourcesSpec::default(),
            retry: RetrySpec::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetSpec {
    /// Manifest CSV, relative to the spec file's directory.
    pub manifest: String,
    /// When set and the manifest does not exist yet, the synthetic cohort is
    /// generated there with these settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticSpec>,
}

/// Settings of the built-in synthetic cohort (see `crossfold dataset synth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticSpec {
    pub normal: usize,
    pub benign: usize,
    pub malignant: usize,
    pub size: u32,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            normal: 260,
            benign: 80,
            malignant: 180,
            size: 256,
            seed: 2021,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    /// Screening: k-fold over the groups; malignancy: every C(k, p) choice of
    /// test groups among the tumour images (the paper: k = 5, p = 2).
    Paper,
    /// Every task: k rounds, one group tests.
    Kfold,
    /// Every task: one round for every choice of p of the k groups as test set.
    LeavePGroupsOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolSpec {
    pub kind: ProtocolKind,
    /// Number of groups (k).
    pub groups: usize,
    /// Groups per test set (p) for `leave-p-groups-out`, and for the
    /// malignancy task of `paper`.
    pub test_groups: usize,
    /// Repetitions with seeds `seed`, `seed + 1`, ...
    pub repeats: usize,
    pub seed: u64,
    pub tasks: Vec<Task>,
}

impl Default for ProtocolSpec {
    fn default() -> Self {
        ProtocolSpec {
            kind: ProtocolKind::Paper,
            groups: 5,
            test_groups: 2,
            repeats: 1,
            seed: 2021,
            tasks: vec![Task::Screening, Task::Malignancy],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
}

impl std::fmt::Display for Arch {
    /// As a spec spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Keep the aspect ratio and pad to a square.
    Pad,
    /// Stretch to a square.
    Stretch,
}

impl Resize {
    pub fn mode(self) -> crate::imaging::ResizeMode {
        match self {
            Resize::Pad => crate::imaging::ResizeMode::Pad,
            Resize::Stretch => crate::imaging::ResizeMode::Stretch,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeighting {
    None,
    /// Loss weights inversely proportional to class frequency.
    Balanced,
    /// Balanced sampling of training batches.
    Sampler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// On CUDA: bf16 autocast and TF32 on GPUs that have them (compute
    /// capability 8.0 or later), fp16 autocast with loss scaling on 7.x,
    /// fp32 before; fp32 on the CPU.
    Auto,
    /// Full fp32 everywhere (no TF32).
    Fp32,
    /// fp32 storage with TF32 tensor cores for convolutions and matmuls on
    /// CUDA (PyTorch's default for convolutions); fp32 on the CPU.
    Tf32,
    /// bf16 autocast of the forward pass, also on the CPU; refused on GPUs
    /// older than compute capability 8.0.
    Bf16,
    /// fp16 autocast of the forward pass with dynamic loss scaling (needs
    /// the fused optimiser), for GPUs without bf16.
    Fp16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// The worker decides per device and key: channels-last on CUDA and on
    /// the CPU from 128 px, the fused optimiser step on, cuDNN autotuning off.
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentSpec {
    pub enabled: bool,
    pub hflip: bool,
    pub rotate_degrees: f64,
    pub scale: f64,
    pub translate: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub gamma: f64,
}

impl Default for AugmentSpec {
    fn default() -> Self {
        AugmentSpec {
            enabled: true,
            hflip: true,
            rotate_degrees: 10.0,
            scale: 0.1,
            translate: 0.05,
            brightness: 0.1,
            contrast: 0.1,
            gamma: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub arch: Arch,
    pub image_size: u32,
    pub resize: Resize,
    /// How 16-bit gray images are scaled: per image (`auto`), or one scale
    /// for all (`12bit`, `16bit`). Kept in the model card, so `predict`
    /// reads new images as training did. Left out of the stored spec when
    /// `auto`, so specs written before it keep their hash.
    #[serde(skip_serializing_if = "crate::imaging::Gray16Scale::is_auto")]
    pub gray16: crate::imaging::Gray16Scale,
    pub epochs: u32,
    pub batch_size: u32,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    /// SGD: Nesterov momentum (true) or classical momentum, as PyTorch's
    /// default `nesterov=False` (false). No effect with momentum 0.
    pub nesterov: bool,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub warmup_epochs: u32,
    /// For `schedule = "step"`: epochs between decays, and the decay factor.
    pub step_epochs: u32,
    pub step_gamma: f64,
    pub augment: AugmentSpec,
    pub class_weighting: ClassWeighting,
    pub label_smoothing: f64,
    /// Share of each class's training-group images held out, as whole
    /// patients, for early stopping and threshold choice (a patient with
    /// many images can make the share of patients smaller).
    pub validation_fraction: f64,
    /// Stop after this many epochs without a better validation AUC, where an
    /// equal AUC with a lower validation loss also counts as better (once
    /// validation is perfectly separated, AUC 1.0, the loss still ranks
    /// epochs). 0 = never.
    pub early_stopping_patience: u32,
    /// Optional pretrained weights (`.safetensors` or `.ot`), relative to the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    pub precision: Precision,
    /// Channels-last (NHWC) memory layout for weights and batches.
    pub channels_last: Toggle,
    /// libtorch's fused multi-tensor optimiser kernels (a few launches per
    /// step for all parameters) instead of tch's per-parameter loop.
    /// `auto`: on (CPU and CUDA).
    pub fused_optimizer: Toggle,
    /// cuDNN autotuning (kernels chosen by timing each new shape; not
    /// bitwise reproducible). `auto` is off: on an H200 it cost a 30-epoch
    /// screening job 1.1 s and sped up no epoch (bench/README.md).
    pub cudnn_benchmark: Toggle,
    /// On CUDA, capture one training step as a CUDA graph and replay it for
    /// every later step: one launch per step instead of hundreds, so the
    /// CPU's launch rate stops bounding small batches. Needs the fused
    /// optimiser; ignored on the CPU. `auto`: on for CUDA. The default is
    /// `off` until it has been measured on a GPU (bench/README.md).
    pub cuda_graph: Toggle,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Decision threshold on the positive class's probability.
    pub threshold: f64,
    /// Seed of weight initialisation, augmentation and batch order.
    pub seed: u64,
    /// Settings used instead when a job trains on a CPU (no GPU), so that an
    /// experiment sized for GPUs still finishes in minutes on a laptop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSpec>,
}

/// `[train.cpu]`: what changes when a job runs on a CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuSpec {
    pub arch: Option<Arch>,
    pub image_size: Option<u32>,
    pub epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub lr: Option<f64>,
}

impl TrainSpec {
    /// How the job reads its images into the network's input.
    pub fn reading(&self) -> crate::imaging::Reading {
        crate::imaging::Reading {
            size: self.image_size,
            mode: self.resize.mode(),
            gray16: self.gray16,
        }
    }

    /// The settings a job uses on a CPU: `[train.cpu]` applied, if present.
    pub fn for_cpu(&self) -> TrainSpec {
        let mut t = self.clone();
        if let Some(c) = &self.cpu {
            t.arch = c.arch.unwrap_or(t.arch);
            t.image_size = c.image_size.unwrap_or(t.image_size);
            t.epochs = c.epochs.unwrap_or(t.epochs);
            t.batch_size = c.batch_size.unwrap_or(t.batch_size);
            t.lr = c.lr.unwrap_or(t.lr);
            t.warmup_epochs = t.warmup_epochs.min(t.epochs.saturating_sub(1));
        }
        t.cpu = None;
        t
    }
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            arch: Arch::Resnet34,
            image_size: 224,
            resize: Resize::Pad,
            gray16: crate::imaging::Gray16Scale::Auto,
            epochs: 30,
            batch_size: 32,
            // SGD with Nesterov momentum: on the synthetic cohort, from
            // scratch, it learned in 30 epochs where AdamW (3e-4, 1e-3) did
            // not (see worker/tests/training.rs). ResNet34 at lr 0.02 lost
            // one screening round of five on an H200 (AUC 0.37) and did not
            // learn at 64 px on a CPU; at 0.005 it learned every round
            // (bench/README.md).
            optimizer: Optimizer::Sgd,
            lr: 0.005,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            warmup_epochs: 1,
            step_epochs: 10,
            step_gamma: 0.1,
            augment: AugmentSpec::default(),
            class_weighting: ClassWeighting::Balanced,
            label_smoothing: 0.0,
            validation_fraction: 0.1,
            early_stopping_patience: 10,
            pretrained: None,
            precision: Precision::Auto,
            channels_last: Toggle::Auto,
            fused_optimizer: Toggle::Auto,
            cudnn_benchmark: Toggle::Auto,
            cuda_graph: Toggle::Off,
            device: "auto".to_string(),
            threshold: 0.5,
            seed: 2021,
            cpu: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesSpec {
    /// Devices one job trains on: 1 (a job uses one GPU or the CPU; more
    /// GPUs are used by more workers or slots, one job each).
    pub devices_per_job: u32,
}

impl Default for ResourcesSpec {
    fn default() -> Self {
        ResourcesSpec { devices_per_job: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySpec {
    pub max_attempts: u32,
    pub backoff_seconds: f64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 3,
            backoff_seconds: 10.0,
        }
    }
}

/// A compute device named in a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda(Option<usize>),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(Some(n))),
                _ => Err("expected auto, cpu, cuda or cuda:N".to_string()),
            },
        }
    }
}

impl Spec {
    /// The manifest path, resolved against the spec's directory.
    pub fn manifest_path(&self) -> PathBuf {
        resolve(&self.base_dir, &self.dataset.manifest)
    }

    /// The pretrained-weights path, if any, resolved against the spec's directory.
    pub fn pretrained_path(&self) -> Option<PathBuf> {
        self.train
            .pretrained
            .as_deref()
            .map(|p| resolve(&self.base_dir, p))
    }

    /// The device named by `train.device` (validated at load).
    pub fn device(&self) -> Device {
        self.train.device.parse().unwrap_or(Device::Auto)
    }

    /// The resolved spec as TOML, to be saved next to results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests;
