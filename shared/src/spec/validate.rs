//! Semantic checks of a spec that parsed: ranges and combinations.

use super::{Device, ProtocolKind, ProtocolSpec, Spec, SpecProblem, SPEC_VERSION};
use crate::label::Task;

/// The most rounds a spec may plan (all tasks and repeats together), as
/// many as a coordinator takes per experiment by default: far beyond any
/// study, and short of a plan that would not fit in memory.
pub const MAX_ROUNDS: u128 = 10_000;

/// Rounds `p` plans: per repeat and task, k for k-fold, C(k, p) for
/// leave-p-groups-out (the paper's screening is k-fold, its malignancy
/// task leave-p-groups-out). Saturates instead of overflowing.
pub fn round_count(p: &ProtocolSpec) -> u128 {
    let k = p.groups as u128;
    // C(n, r), or u128::MAX once it no longer fits: acc * (n - i) is
    // divisible by i + 1 at every step, so the division is exact.
    let choose = |n: u128, r: u128| -> u128 {
        let r = r.min(n.saturating_sub(r));
        let mut acc = 1u128;
        for i in 0..r {
            match acc.checked_mul(n - i) {
                Some(v) => acc = v / (i + 1),
                None => return u128::MAX,
            }
        }
        acc
    };
    let per_task = |t: &Task| match (p.kind, t) {
        (ProtocolKind::Kfold, _) | (ProtocolKind::Paper, Task::Screening) => k,
        _ => choose(k, p.test_groups as u128),
    };
    p.tasks
        .iter()
        .map(per_task)
        .fold(0u128, u128::saturating_add)
        .saturating_mul(p.repeats as u128)
}

/// Every problem of a protocol, each naming its `protocol.*` key.
pub fn protocol_problems(p: &ProtocolSpec) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, value: String, message: &str| {
        out.push(SpecProblem::new(field, Some(value), message))
    };
    if p.groups < 2 {
        bad(
            "protocol.groups",
            p.groups.to_string(),
            "must be at least 2",
        );
    }
    let uses_p = matches!(p.kind, ProtocolKind::LeavePGroupsOut | ProtocolKind::Paper);
    // With protocol.groups itself out of range, the bound below means nothing.
    if uses_p && p.groups >= 2 && (p.test_groups < 1 || p.test_groups >= p.groups) {
        bad(
            "protocol.test_groups",
            p.test_groups.to_string(),
            &format!(
                "must be 1..{} (fewer than protocol.groups)",
                p.groups.max(2) - 1
            ),
        );
    }
    if p.repeats < 1 || p.repeats > 100 {
        bad("protocol.repeats", p.repeats.to_string(), "must be 1..100");
    }
    if p.tasks.is_empty() {
        bad("protocol.tasks", "[]".into(), "name at least one task");
    }
    for (i, t) in p.tasks.iter().enumerate() {
        if p.tasks[..i].contains(t) {
            bad("protocol.tasks", t.to_string(), "listed twice");
        }
    }
    let rounds = round_count(p);
    if out.is_empty() && rounds > MAX_ROUNDS {
        // Named as one rule of its own ("protocol"), which experiments
        // stored before it existed are spared (see TIGHTENED).
        let uses_choice = p.kind == ProtocolKind::LeavePGroupsOut
            || (p.kind == ProtocolKind::Paper && p.tasks.contains(&Task::Malignancy));
        let setting = if uses_choice {
            format!(
                "protocol.groups = {}, protocol.test_groups = {}",
                p.groups, p.test_groups
            )
        } else {
            format!("protocol.groups = {}", p.groups)
        };
        out.push(SpecProblem::new(
            "protocol",
            Some(format!("{rounds} rounds")),
            format!(
                "{setting}, {} repeat(s) and {} task(s) would plan {rounds} rounds; at most \
                 {MAX_ROUNDS}",
                p.repeats,
                p.tasks.len()
            ),
        ));
    }
    out
}

/// Every semantic problem of the spec, each naming its field and value.
pub(super) fn problems(spec: &Spec) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, value: String, message: &str| {
        out.push(SpecProblem::new(field, Some(value), message))
    };
    if spec.version != SPEC_VERSION {
        bad(
            "version",
            spec.version.to_string(),
            &format!("this build reads spec version {SPEC_VERSION}"),
        );
    }
    if spec.name.trim().is_empty() {
        bad(
            "name",
            format!("{:?}", spec.name),
            "required: a name for the experiment",
        );
    }
    if spec.dataset.manifest.trim().is_empty() {
        bad(
            "dataset.manifest",
            format!("{:?}", spec.dataset.manifest),
            "required: path of the manifest CSV",
        );
    }
    if let Some(s) = &spec.dataset.synthetic {
        let total = s.normal as u128 + s.benign as u128 + s.malignant as u128;
        if total == 0 {
            bad(
                "dataset.synthetic",
                "0 images".into(),
                "needs at least one image",
            );
        } else if total > 1_000_000 {
            bad(
                "dataset.synthetic",
                format!("{total} images (normal + benign + malignant)"),
                "at most 1000000 images",
            );
        }
        if !(32..=4096).contains(&s.size) {
            bad(
                "dataset.synthetic.size",
                s.size.to_string(),
                "must be 32..4096 pixels",
            );
        }
    }

    out.extend(protocol_problems(&spec.protocol));
    let mut bad = |field: &str, value: String, message: &str| {
        out.push(SpecProblem::new(field, Some(value), message))
    };

    let t = &spec.train;
    if !(32..=2048).contains(&t.image_size) {
        bad(
            "train.image_size",
            t.image_size.to_string(),
            "must be 32..2048 pixels",
        );
    }
    if t.epochs < 1 || t.epochs > 10_000 {
        bad("train.epochs", t.epochs.to_string(), "must be 1..10000");
    }
    if t.batch_size < 2 || t.batch_size > 4096 {
        bad(
            "train.batch_size",
            t.batch_size.to_string(),
            "must be 2..4096 (batch norm needs two images per batch)",
        );
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let fraction = |v: f64| v.is_finite() && (0.0..1.0).contains(&v);
    if !positive(t.lr) || t.lr > 10.0 {
        bad(
            "train.lr",
            t.lr.to_string(),
            "must be a positive number up to 10",
        );
    }
    if !fraction(t.momentum) {
        bad(
            "train.momentum",
            t.momentum.to_string(),
            "must be in [0, 1)",
        );
    }
    if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
        bad(
            "train.weight_decay",
            t.weight_decay.to_string(),
            "must be >= 0",
        );
    }
    // Only against a valid train.epochs: with epochs = 0 that one error says it all.
    if t.epochs >= 1 && t.warmup_epochs >= t.epochs && t.warmup_epochs > 0 {
        bad(
            "train.warmup_epochs",
            t.warmup_epochs.to_string(),
            &format!("must be fewer than train.epochs ({})", t.epochs),
        );
    }
    if t.step_epochs < 1 {
        bad(
            "train.step_epochs",
            t.step_epochs.to_string(),
            "must be at least 1",
        );
    }
    if !(t.step_gamma.is_finite() && t.step_gamma > 0.0 && t.step_gamma <= 1.0) {
        bad(
            "train.step_gamma",
            t.step_gamma.to_string(),
            "must be in (0, 1]",
        );
    }
    if !(t.label_smoothing.is_finite() && (0.0..0.5).contains(&t.label_smoothing)) {
        bad(
            "train.label_smoothing",
            t.label_smoothing.to_string(),
            "must be in [0, 0.5)",
        );
    }
    if !(t.validation_fraction.is_finite() && (0.0..=0.5).contains(&t.validation_fraction)) {
        bad(
            "train.validation_fraction",
            t.validation_fraction.to_string(),
            "must be in [0, 0.5]",
        );
    }
    if !(t.threshold.is_finite() && t.threshold > 0.0 && t.threshold < 1.0) {
        bad(
            "train.threshold",
            t.threshold.to_string(),
            "must be in (0, 1)",
        );
    }
    if let Err(e) = t.device.parse::<Device>() {
        bad("train.device", format!("{:?}", t.device), &e);
    }
    if let Some(pre) = &t.pretrained {
        let lower = pre.to_ascii_lowercase();
        if !(lower.ends_with(".safetensors") || lower.ends_with(".ot")) {
            bad(
                "train.pretrained",
                format!("{pre:?}"),
                "must be a .safetensors or .ot file",
            );
        }
    }
    // Combinations that would pass here and fail in every job.
    if t.precision == super::Precision::Fp16 && t.fused_optimizer == super::Toggle::Off {
        bad(
            "train.fused_optimizer",
            "off".into(),
            "train.precision = \"fp16\" needs the fused optimiser (its loss scaling is \
             done there): set fused_optimizer = \"auto\" or \"on\", or another precision",
        );
    }
    if t.cuda_graph == super::Toggle::On && t.fused_optimizer == super::Toggle::Off {
        bad(
            "train.cuda_graph",
            "on".into(),
            "a CUDA graph needs the fused optimiser (its learning rate is read on the \
             device at every replay): set fused_optimizer = \"auto\" or \"on\", or \
             cuda_graph = \"off\"",
        );
    }
    let cpu_arch = t.cpu.as_ref().and_then(|c| c.arch);
    if let (Some(_), Some(cpu_arch)) = (&t.pretrained, cpu_arch) {
        let cuda_only = matches!(t.device.parse::<Device>(), Ok(Device::Cuda(_)));
        if cpu_arch != t.arch && !cuda_only {
            bad(
                "train.cpu.arch",
                cpu_arch.to_string(),
                &format!(
                    "differs from train.arch ({}) while train.pretrained is set: the weights \
                     fit one architecture, so jobs on a CPU would fail; set train.cpu.arch to \
                     the same, leave it out, or set train.device = \"cuda\"",
                    t.arch
                ),
            );
        }
    }
    let a = &t.augment;
    for (field, v, max) in [
        ("train.augment.rotate_degrees", a.rotate_degrees, 45.0),
        ("train.augment.scale", a.scale, 0.5),
        ("train.augment.translate", a.translate, 0.5),
        ("train.augment.brightness", a.brightness, 1.0),
        ("train.augment.contrast", a.contrast, 1.0),
        ("train.augment.gamma", a.gamma, 1.0),
    ] {
        if !(v.is_finite() && (0.0..=max).contains(&v)) {
            bad(field, v.to_string(), &format!("must be in [0, {max}]"));
        }
    }
    if let Some(c) = &t.cpu {
        if let Some(s) = c.image_size.filter(|s| !(32..=2048).contains(s)) {
            bad(
                "train.cpu.image_size",
                s.to_string(),
                "must be 32..2048 pixels",
            );
        }
        if let Some(e) = c.epochs.filter(|e| !(1..=10_000).contains(e)) {
            bad("train.cpu.epochs", e.to_string(), "must be 1..10000");
        }
        if let Some(b) = c.batch_size.filter(|b| !(2..=4096).contains(b)) {
            bad(
                "train.cpu.batch_size",
                b.to_string(),
                "must be 2..4096 (batch norm needs two images per batch)",
            );
        }
        if let Some(lr) = c.lr.filter(|&lr| !(positive(lr) && lr <= 10.0)) {
            bad("train.cpu.lr", lr.to_string(), "must be in (0, 10]");
        }
    }
    if spec.resources.devices_per_job != 1 {
        bad(
            "resources.devices_per_job",
            spec.resources.devices_per_job.to_string(),
            "must be 1: a job trains on one device (start one worker per GPU, or \
             --slots-per-gpu, to use more)",
        );
    }
    if spec.retry.max_attempts < 1 || spec.retry.max_attempts > 100 {
        bad(
            "retry.max_attempts",
            spec.retry.max_attempts.to_string(),
            "must be 1..100",
        );
    }
    let b = spec.retry.backoff_seconds;
    if !(b.is_finite() && (0.0..=86_400.0).contains(&b)) {
        bad("retry.backoff_seconds", b.to_string(), "must be 0..86400");
    }
    out
}
