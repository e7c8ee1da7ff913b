//! The trainer on a CUDA GPU: what the CPU tests cannot reach (autocast,
//! TF32, channels-last kernels, fp16 loss scaling, scoring across devices,
//! CUDA graphs).
//!
//! These tests need a GPU, so they are `#[ignore]`d: `cargo test` on a
//! machine without one does not count them as passed. On a GPU machine run
//! them with `--ignored` (`bench/gpu.sh` runs the binary that
//! `make gpu-bundle` builds); there, a missing GPU is a failure.

use crossfold_shared::experiment::prepare;
use crossfold_shared::label::Task;
use crossfold_shared::spec::{Override, Spec};
use crossfold_worker::job::{predict, run_job, JobOptions, JobResult};
use crossfold_worker::train::{Control, Progress};
use std::path::Path;
use std::sync::Mutex;

/// One GPU job at a time: process-wide cuDNN/TF32 settings.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn gpu() -> tch::Device {
    let backend = crossfold_worker::device::init();
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device (libtorch_cuda: {backend:?}): run these tests on a GPU machine"
    );
    tch::Device::Cuda(0)
}

fn spec(dir: &Path, sets: &[&str]) -> Spec {
    let text = "name = \"gpu\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
                [dataset.synthetic]\nnormal = 24\nbenign = 12\nmalignant = 12\nsize = 96\nseed = 5\n\
                [train]\narch = \"resnet18\"\nimage_size = 64\nepochs = 2\nbatch_size = 8\n";
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Spec::load(&path, &overrides).unwrap()
}

fn job(dir: &Path, sets: &[&str], device: tch::Device, out: Option<&Path>) -> JobResult {
    let s = spec(dir, sets);
    let p = prepare(&s).unwrap();
    let options = JobOptions {
        device,
        decode_threads: 4,
        out,
        cancel: None,
        squares: None,
        image_cache: None,
        started: None,
        prepared: None,
    };
    let mut go = |_: &Progress| Control::Continue;
    run_job(&s, &p, Task::Screening, 1, &options, &mut go).unwrap()
}

fn sane(r: &JobResult) {
    assert!(!r.predictions.is_empty());
    for p in &r.predictions {
        assert!((0.0..=1.0).contains(&p.score), "{}: {}", p.image, p.score);
    }
    for e in &r.history {
        assert!(
            e.train_loss.is_finite(),
            "epoch {}: {}",
            e.epoch,
            e.train_loss
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p crossfold-worker --test gpu -- --ignored"]
fn default_precision_trains_on_the_gpu_and_says_how() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = gpu();
    let dir = tempfile::tempdir().unwrap();
    let r = job(dir.path(), &["train.device=cuda"], device, None);
    sane(&r);
    let p = &r.provenance;
    assert_eq!(p.device, "cuda(0)");
    assert!(
        !p.device_name.is_empty() && p.cuda_version.is_some() && p.cudnn_version.is_some(),
        "{p:?}"
    );
    let c = p.compute;
    assert!(c.cuda && c.channels_last && c.fused_optimizer, "{c:?}");
    let cap = crossfold_worker::device::capability_of(device);
    match cap {
        Some((major, _)) if major >= 8 => assert!(c.autocast_bf16 && c.tf32, "{c:?}"),
        Some((7, _)) => assert!(c.autocast_fp16 && !c.tf32, "{c:?}"),
        _ => {}
    }
    println!(
        "{} (capability {cap:?}): {c:?}, {:.0} img/s",
        p.device_name, r.images_per_second
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p crossfold-worker --test gpu -- --ignored"]
fn every_precision_trains_on_the_gpu() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = gpu();
    let ampere = crossfold_worker::device::capability_of(device).is_none_or(|(m, _)| m >= 8);
    let mut precisions = vec!["fp32", "fp16"];
    if ampere {
        precisions.extend(["tf32", "bf16"]);
    }
    for precision in precisions {
        for layout in ["on", "off"] {
            let dir = tempfile::tempdir().unwrap();
            let sets = [
                "train.device=cuda".to_string(),
                format!("train.precision={precision}"),
                format!("train.channels_last={layout}"),
            ];
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let r = job(dir.path(), &sets, device, None);
            sane(&r);
            let c = r.provenance.compute;
            assert_eq!(c.autocast_fp16, precision == "fp16", "{precision}: {c:?}");
            assert_eq!(c.autocast_bf16, precision == "bf16", "{precision}: {c:?}");
            // TF32 for whatever runs in fp32 outside autocast, except in `fp32`.
            assert_eq!(c.tf32, precision != "fp32" && ampere, "{precision}: {c:?}");
            assert_eq!(c.channels_last, layout == "on");
            println!(
                "{precision} channels_last={layout}: {:.0} img/s",
                r.images_per_second
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p crossfold-worker --test gpu -- --ignored"]
fn a_model_scores_the_same_on_the_gpu_and_the_cpu() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = gpu();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Trained in full precision on the GPU: scoring on either device
    // runs fp32, so the scores agree up to summation order.
    let r = job(
        dir.path(),
        &["train.device=cuda", "train.precision=fp32"],
        device,
        Some(&out),
    );
    let root = dir.path().join("data");
    let images: Vec<_> = r.predictions.iter().map(|p| root.join(&p.image)).collect();
    let checkpoint = out.join("model.safetensors");
    let scores = |d| -> Vec<f64> {
        let (_, s) = predict(&checkpoint, &images, d).unwrap();
        s.into_iter().map(Result::unwrap).collect()
    };
    let (on_gpu, on_cpu) = (scores(device), scores(tch::Device::Cpu));
    for ((p, g), c) in r.predictions.iter().zip(&on_gpu).zip(&on_cpu) {
        assert!(
            (p.score - g).abs() < 1e-4,
            "{}: job {} vs predict on GPU {g}",
            p.image,
            p.score
        );
        assert!((g - c).abs() < 1e-3, "{}: GPU {g} vs CPU {c}", p.image);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p crossfold-worker --test gpu -- --ignored"]
fn a_step_replayed_from_a_cuda_graph_trains_as_the_eager_step_does() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = gpu();
    crossfold_worker::graph::available().expect("the graph library loads where CUDA is");
    // fp32 without TF32 or autotuning: the same kernels either way, so the
    // two runs differ only by the order of atomic additions in cuDNN.
    let base = [
        "train.device=cuda",
        "train.precision=fp32",
        "train.epochs=4",
        "train.early_stopping_patience=0",
    ];
    let run = |graph: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut sets = base.to_vec();
        let g = format!("train.cuda_graph={graph}");
        sets.push(&g);
        job(dir.path(), &sets, device, None)
    };
    let (eager, graphed) = (run("off"), run("on"));
    sane(&graphed);
    let p = &graphed.provenance;
    assert!(p.compute.cuda_graph, "{:?}", p.compute);
    assert_eq!(p.cuda_graph_fallback, None);
    // Batch 8: every step but the 3 warm-up ones is a replay.
    let steps = 4 * graphed.n_fit.div_ceil(8) as u64;
    assert_eq!(p.cuda_graph_replays, steps - 3);
    assert_eq!(eager.provenance.cuda_graph_replays, 0);
    // Each replay reads that step's batch, augmentation and learning rate:
    // a graph replaying stale inputs would take another trajectory.
    for (a, b) in eager.history.iter().zip(&graphed.history) {
        let tol = 1e-2 * a.train_loss.abs().max(0.1);
        assert!(
            (a.train_loss - b.train_loss).abs() < tol,
            "epoch {}: eager loss {} vs graph {}",
            a.epoch,
            a.train_loss,
            b.train_loss
        );
        assert_eq!(a.learning_rate, b.learning_rate);
    }
    for (a, b) in eager.predictions.iter().zip(&graphed.predictions) {
        assert_eq!(a.image, b.image);
        assert!(
            (a.score - b.score).abs() < 1e-2,
            "{}: {} vs {}",
            a.image,
            a.score,
            b.score
        );
    }
    // The default precision (bf16 autocast on 8.0+) and fp16 with loss
    // scaling capture too.
    for precision in ["auto", "fp16"] {
        let dir = tempfile::tempdir().unwrap();
        let sets = [
            "train.device=cuda".to_string(),
            format!("train.precision={precision}"),
            "train.cuda_graph=on".to_string(),
        ];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let r = job(dir.path(), &sets, device, None);
        sane(&r);
        assert_eq!(r.provenance.cuda_graph_fallback, None, "{precision}");
        assert!(r.provenance.cuda_graph_replays > 0, "{precision}");
    }
}
