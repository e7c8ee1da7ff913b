//! The trainer on CPU with small synthetic images: it learns, it is
//! deterministic, it can be cancelled, and bad input gets clear errors.

use crossfold_shared::experiment::{prepare, prepare_task, Prepared};
use crossfold_shared::label::Task;
use crossfold_shared::spec::{Arch, Override, Spec};
use crossfold_worker::job::{predict, run_job, settings_on, JobOptions};
use crossfold_worker::train::{Control, Progress};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// libtorch's CPU thread pool is shared by everything in a process; two jobs
/// training at once can split reductions differently and so differ in the
/// last bits. Bitwise determinism is promised per job with the pool to
/// itself (one job per worker process on a CPU), so these tests, which all
/// train, take turns. Their order does not matter.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn spec(dir: &Path, cohort: (usize, usize, usize), size: u32, sets: &[&str]) -> Spec {
    let text = format!(
        "name = \"t\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
         [dataset.synthetic]\nnormal = {}\nbenign = {}\nmalignant = {}\nsize = {size}\nseed = 5\n",
        cohort.0, cohort.1, cohort.2
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Spec::load(&path, &overrides).unwrap()
}

fn options(out: Option<&Path>) -> JobOptions<'_> {
    JobOptions {
        device: tch::Device::Cpu,
        decode_threads: 2,
        out,
        cancel: None,
        squares: None,
        image_cache: None,
        started: None,
        prepared: None,
    }
}

fn go(_: &Progress) -> Control {
    Control::Continue
}

const TINY: &[&str] = &[
    "train.arch=resnet18",
    "train.image_size=48",
    "train.epochs=1",
    "train.batch_size=8",
    "train.device=cpu",
    "train.warmup_epochs=0",
];

#[test]
fn same_job_twice_gives_identical_predictions() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), (12, 6, 6), 64, TINY);
    let p = prepare(&s).unwrap();
    let a = run_job(&s, &p, Task::Screening, 1, &options(None), &mut go).unwrap();
    let b = run_job(&s, &p, Task::Screening, 1, &options(None), &mut go).unwrap();
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(a.history[0].train_loss, b.history[0].train_loss);
    // A different training seed changes them.
    let s2 = Spec {
        train: crossfold_shared::spec::TrainSpec {
            seed: 99,
            ..s.train.clone()
        },
        ..s.clone()
    };
    let c = run_job(&s2, &p, Task::Screening, 1, &options(None), &mut go).unwrap();
    assert_ne!(a.predictions, c.predictions);

    // As `crossfold-worker train` runs it: the images the data set's check
    // decoded are kept at the job's size and used, with the same
    // predictions. The files are spoiled after the check, so the job
    // cannot have read them again.
    let t = settings_on(&s, tch::Device::Cpu);
    let keep = Some(t.reading());
    let kept = prepare_task(&s, Task::Screening, keep).unwrap();
    let squares = kept.squares.expect("the check's images kept");
    assert_eq!(squares.len(), 24);
    for e in &kept.prepared.manifest.entries {
        std::fs::write(kept.prepared.manifest.resolve(e), b"spoiled").unwrap();
    }
    let with = JobOptions {
        squares: Some(&squares),
        image_cache: None,
        ..options(None)
    };
    let k = run_job(&s, &kept.prepared, Task::Screening, 1, &with, &mut go).unwrap();
    assert_eq!(a.predictions, k.predictions);
    assert!(squares.is_empty(), "let go once loaded");
}

#[test]
fn outputs_and_predict_agree() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), (12, 6, 6), 64, TINY);
    let first = prepare(&s).unwrap();
    // The manifest spells its labels capitalised: predictions.csv keeps the
    // spelling; the data set (fingerprint) and split plan are the same.
    let manifest = dir.path().join("data/manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text
        .replace(",benign,", ",Benign,")
        .replace(",malignant,", ",MALIGNANT,");
    std::fs::write(&manifest, text).unwrap();
    let p = prepare(&s).unwrap();
    assert_eq!(p.fingerprint.sha256, first.fingerprint.sha256);
    assert_eq!(p.plan.plan_sha256, first.plan.plan_sha256);
    let out = dir.path().join("out");
    let r = run_job(&s, &p, Task::Malignancy, 3, &options(Some(&out)), &mut go).unwrap();
    // Every file the output folder's clean-up knows of.
    for f in crossfold_worker::outputs::OUTPUT_FILES {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(csv.starts_with("image,patient,label,score,"), "{csv}");
    assert_eq!(csv.lines().count(), r.n_test + 1);
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| l.contains(",Benign,") || l.contains(",MALIGNANT,")));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["provenance"]["plan_sha256"], p.plan.plan_sha256);
    assert_eq!(card["provenance"]["dataset_sha256"], p.fingerprint.sha256);
    assert!(card["provenance"]["libtorch_version"]
        .as_str()
        .unwrap()
        .starts_with("2.11.0"));

    // Scoring the test images again through the checkpoint gives the same scores.
    let images: Vec<_> = r
        .predictions
        .iter()
        .map(|x| p.manifest.root.join(&x.image))
        .collect();
    let (_, scores) = predict(&out.join("model.safetensors"), &images, tch::Device::Cpu).unwrap();
    let scores: Vec<f64> = scores.into_iter().map(Result::unwrap).collect();
    for (x, s) in r.predictions.iter().zip(&scores) {
        assert!((x.score - s).abs() < 1e-5, "{} vs {s}", x.score);
    }
    // An unreadable image among them gets its error in its place; the
    // others keep their scores.
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    let mut with_broken = images.clone();
    with_broken.insert(1, broken.clone());
    let (_, mixed) = predict(
        &out.join("model.safetensors"),
        &with_broken,
        tch::Device::Cpu,
    )
    .unwrap();
    assert_eq!(mixed.len(), images.len() + 1);
    let err = mixed[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let rest: Vec<f64> = mixed
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 1)
        .map(|(_, s)| *s.as_ref().unwrap())
        .collect();
    for (a, b) in rest.iter().zip(&scores) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Two images at a time: the unreadable one is alone with a good one in
    // its chunk, and the last chunk is short; the scores are the same.
    let (_, small) = crossfold_worker::job::predict_in_chunks(
        &out.join("model.safetensors"),
        &with_broken,
        tch::Device::Cpu,
        2,
    )
    .unwrap();
    assert_eq!(small.len(), mixed.len());
    for (i, (a, b)) in small.iter().zip(&mixed).enumerate() {
        match (a, b) {
            (Ok(a), Ok(b)) => assert!((a - b).abs() < 1e-5, "image {i}: {a} vs {b}"),
            (Err(_), Err(_)) => assert_eq!(i, 1),
            _ => panic!("image {i}: {a:?} vs {b:?}"),
        }
    }
    // The checkpoint carries its card (spec, provenance) in its metadata:
    // copied alone, without model.json, it still scores the same.
    let alone = dir.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(
        out.join("model.safetensors"),
        alone.join("weights.safetensors"),
    )
    .unwrap();
    let (card, again) = predict(
        &alone.join("weights.safetensors"),
        &images,
        tch::Device::Cpu,
    )
    .unwrap();
    let again: Vec<f64> = again.into_iter().map(Result::unwrap).collect();
    assert_eq!(again, scores);
    let embedded = crossfold_worker::outputs::read_card(&alone.join("weights.safetensors"))
        .unwrap()
        .unwrap();
    let embedded: serde_json::Value = serde_json::from_str(&embedded).unwrap();
    assert_eq!(embedded["provenance"]["plan_sha256"], p.plan.plan_sha256);
    assert_eq!(embedded, serde_json::to_value(&card).unwrap());
    // Without the card anywhere, the error says what is missing.
    let bare = alone.join("bare.safetensors");
    let vs = crossfold_worker::model::weights_of(Arch::Resnet18, 2);
    vs.save(&bare).unwrap();
    let err = predict(&bare, &images, tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.json") && err.contains("no model card"),
        "{err}"
    );

    // New images are read on the training's 16-bit scale, from the card. A
    // dark 16-bit radiograph (nothing above 4095) is read as 12-bit data
    // per image, but as the 16-bit image it is under a "16bit" card: the
    // two scores differ. An 8-bit image scores the same under both.
    assert_eq!(card.gray16, crossfold_shared::imaging::Gray16Scale::Auto);
    let dark = dir.path().join("dark16.png");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(80, 80, |x, y| {
        image::Luma([((x * 37 + y * 11) % 4000) as u16])
    })
    .save(&dark)
    .unwrap();
    let eight = images[0].clone();
    let mut scored = Vec::new();
    for scale in ["auto", "16bit"] {
        let d = dir.path().join(scale);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&bare, d.join("weights.safetensors")).unwrap();
        let mut json = serde_json::to_value(&card).unwrap();
        json["gray16"] = scale.into();
        std::fs::write(d.join("model.json"), json.to_string()).unwrap();
        let (read_card, s) = predict(
            &d.join("weights.safetensors"),
            &[dark.clone(), eight.clone()],
            tch::Device::Cpu,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(read_card.gray16).unwrap(), scale);
        scored.push(s.into_iter().map(Result::unwrap).collect::<Vec<f64>>());
    }
    assert_ne!(scored[0][0], scored[1][0], "the dark 16-bit image");
    assert_eq!(scored[0][1], scored[1][1], "the 8-bit image");
}

#[test]
fn cancellation_stops_within_a_step() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        (12, 6, 6),
        64,
        &[TINY, &["train.epochs=5"]].concat(),
    );
    let p = prepare(&s).unwrap();
    let mut steps = 0;
    let mut stop_at_two = |_: &Progress| {
        steps += 1;
        if steps >= 2 {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    let err = run_job(&s, &p, Task::Screening, 1, &options(None), &mut stop_at_two).unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(steps, 2);

    // Cancelled before training starts (while images decode): no step runs.
    let flag = std::sync::atomic::AtomicBool::new(true);
    let opts = JobOptions {
        cancel: Some(&flag),
        squares: None,
        image_cache: None,
        ..options(None)
    };
    let mut steps = 0;
    let mut count = |_: &Progress| {
        steps += 1;
        Control::Continue
    };
    let err = run_job(&s, &p, Task::Screening, 1, &opts, &mut count).unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(steps, 0);

    // Cancelled once training is over (the flag set at the last epoch's
    // report, which still says continue): the scoring of the validation and
    // test images stops, and nothing is written.
    let s = spec(dir.path(), (12, 6, 6), 64, TINY);
    let p = prepare(&s).unwrap();
    let flag = std::sync::atomic::AtomicBool::new(false);
    let out = dir.path().join("out");
    let opts = JobOptions {
        cancel: Some(&flag),
        ..options(Some(&out))
    };
    let mut finished = 0;
    let mut at_the_end = |p: &Progress| {
        if p.epoch_done && p.epoch == p.epochs {
            finished += 1;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Control::Continue
    };
    let err = run_job(&s, &p, Task::Screening, 1, &opts, &mut at_the_end).unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(finished, 1, "training ran to its end");
    assert!(!out.join("predictions.csv").exists());
}

#[test]
fn bad_inputs_get_clear_errors() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), (12, 6, 6), 64, TINY);
    let p: Prepared = prepare(&s).unwrap();

    // An image that no longer decodes names its file.
    let victim = p.plan.rounds(Task::Screening)[0].train[0].clone();
    let saved = std::fs::read(p.manifest.root.join(&victim)).unwrap();
    std::fs::write(p.manifest.root.join(&victim), b"garbage").unwrap();
    let err = run_job(&s, &p, Task::Screening, 1, &options(None), &mut go).unwrap_err();
    assert!(err.to_string().contains(&victim), "{err}");
    std::fs::write(p.manifest.root.join(&victim), saved).unwrap();

    // A pretrained file of the wrong shape names the setting and the tensor.
    let weights = dir.path().join("w.safetensors");
    let t = tch::Tensor::zeros([64, 1, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("conv1.weight", &t)], &weights).unwrap();
    // The spec with `train.pretrained` and `train.arch` set.
    let with_weights = |name: &str, arch: Arch| Spec {
        train: crossfold_shared::spec::TrainSpec {
            pretrained: Some(name.into()),
            arch,
            ..s.train.clone()
        },
        ..s.clone()
    };
    let s2 = with_weights("w.safetensors", s.train.arch);
    let err = run_job(&s2, &p, Task::Screening, 1, &options(None), &mut go).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("train.pretrained") && msg.contains("conv1.weight"),
        "{msg}"
    );

    // A deeper network's weights for a shallower network are refused (every
    // ResNet18 tensor is in a ResNet34 file with its shape), and before any
    // image is decoded: a broken image is not what the error is about.
    let deep = crossfold_worker::model::weights_of(Arch::Resnet34, 2);
    deep.save(dir.path().join("r34.safetensors")).unwrap();
    let s3 = with_weights("r34.safetensors", Arch::Resnet18);
    let saved = std::fs::read(p.manifest.root.join(&victim)).unwrap();
    std::fs::write(p.manifest.root.join(&victim), b"garbage").unwrap();
    let err = run_job(&s3, &p, Task::Screening, 1, &options(None), &mut go).unwrap_err();
    std::fs::write(p.manifest.root.join(&victim), saved).unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("r34.safetensors") && msg.contains("another architecture"),
        "{msg}"
    );
    assert!(msg.contains("train.arch = resnet18"), "{msg}");

    // A missing file, and a file that is not weights at all, are said in
    // one line each: no Rust debug dump, no C++ stack trace.
    for (name, bytes) in [("gone.safetensors", None), ("junk.ot", Some(&b"junk"[..]))] {
        if let Some(bytes) = bytes {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let s4 = with_weights(name, s.train.arch);
        let err = run_job(&s4, &p, Task::Screening, 1, &options(None), &mut go).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("train.pretrained") && msg.contains(name),
            "{msg}"
        );
        assert!(
            !msg.contains("frame #") && !msg.contains("IoError(") && msg.lines().count() == 1,
            "{msg}"
        );
    }

    // A round whose training images are all of one class names the task,
    // the round and what to look at.
    let mut one_class = p.plan.clone();
    let rounds = one_class.tasks.get_mut(&Task::Screening).unwrap();
    let by_path: std::collections::HashMap<_, _> = p
        .manifest
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.label))
        .collect();
    rounds[0]
        .train
        .retain(|path| !Task::Screening.is_positive(by_path[path]));
    let p1 = Prepared {
        plan: one_class,
        ..p.clone()
    };
    let err = run_job(&s, &p1, Task::Screening, 1, &options(None), &mut go).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("task screening, round 1") && msg.contains("no positive images"),
        "{msg}"
    );
    // And one with no training images at all.
    let mut empty = p.plan.clone();
    empty.tasks.get_mut(&Task::Screening).unwrap()[0]
        .train
        .clear();
    let p2 = Prepared {
        plan: empty,
        ..p.clone()
    };
    let err = run_job(&s, &p2, Task::Screening, 1, &options(None), &mut go).unwrap_err();
    assert!(err.to_string().contains("no training images"), "{err}");

    // A round that does not exist.
    let err = run_job(&s, &p, Task::Screening, 9, &options(None), &mut go).unwrap_err();
    assert!(err.to_string().contains("no round 9"), "{err}");
    assert!(err.to_string().contains("rounds are 1-5"), "{err}");
    // A task the spec does not run names protocol.tasks.
    let mut screening_only = p.plan.clone();
    screening_only.tasks.remove(&Task::Malignancy);
    let p3 = Prepared {
        plan: screening_only,
        ..p.clone()
    };
    let err = run_job(&s, &p3, Task::Malignancy, 1, &options(None), &mut go).unwrap_err();
    assert!(err.to_string().contains("protocol.tasks"), "{err}");

    // Weights that fit are used, and the result says which file they were.
    let fitting = crossfold_worker::model::weights_of(Arch::Resnet18, 2);
    let file = dir.path().join("r18.safetensors");
    fitting.save(&file).unwrap();
    let s5 = with_weights("r18.safetensors", s.train.arch);
    let r = run_job(&s5, &p, Task::Screening, 1, &options(None), &mut go).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        r.provenance.pretrained_sha256.as_deref(),
        Some(crossfold_shared::hash::sha256_hex(&bytes).as_str())
    );
    assert_eq!(
        run_job(&s, &p, Task::Screening, 1, &options(None), &mut go)
            .unwrap()
            .provenance
            .pretrained_sha256,
        None
    );
}

/// Training really learns: on 360 synthetic images at 64 px, 30 epochs of
/// ResNet18 from scratch (about 50 s on 2 cores) give a screening test AUC
/// well above chance.
///
/// Bar: AUC >= 0.70 on the 72 test images (36 + 36). Under the null (AUC
/// 0.5) the standard error of the AUC is about 0.07, so 0.70 is about three
/// standard errors above chance: a model that did not learn would almost
/// never pass.
///
/// A run is deterministic on a given CPU, but another CPU's kernels round
/// differently and the trajectory drifts apart, so the setting must learn
/// on any trajectory, not just one. At lr 0.02 it did not: 0.863 on an
/// earlier machine, 0.896 with train.seed = 7 on a later one, but 0.505 there
/// with the default seed (validation AUC is taken on 29 images, and a lucky
/// epoch 4 was kept). At lr 0.01 (used here) that later machine gave 0.813,
/// 0.887 and 0.779 with seeds 2021, 7 and 11; at 0.005, 0.840.
#[test]
fn training_learns_the_screening_task() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        (180, 60, 120),
        128,
        &[
            "train.arch=resnet18",
            "train.image_size=64",
            "train.epochs=30",
            "train.batch_size=32",
            "train.lr=0.01",
            "train.device=cpu",
            "train.early_stopping_patience=0",
        ],
    );
    let p = prepare(&s).unwrap();
    let r = run_job(&s, &p, Task::Screening, 1, &options(None), &mut go).unwrap();
    let first = r.history.first().unwrap().train_loss;
    let last = r.history.last().unwrap().train_loss;
    eprintln!(
        "loss {first:.4} -> {last:.4}; test AUC {:?}; history {:?}",
        r.stats.auc, r.history
    );
    assert!(
        last < first,
        "training loss did not fall: {first} -> {last}"
    );
    let auc = r.stats.auc.unwrap();
    assert!(auc >= 0.70, "test AUC {auc} below the bar 0.70");
}

#[test]
fn the_train_command_writes_predictions() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let _ = spec(dir.path(), (12, 6, 6), 64, &[]);
    let out = dir.path().join("round");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"));
    cmd.args(["train", "--spec"])
        .arg(dir.path().join("spec.toml"));
    for s in TINY {
        cmd.args(["--set", s]);
    }
    cmd.args([
        "--task",
        "screening",
        "--round",
        "2",
        "--threads",
        "2",
        "--out",
    ])
    .arg(&out);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(csv.starts_with("image,patient,label,score"));
    // The whole job's time includes getting ready (spec, data set check,
    // split plan), and the phases add up to the total.
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    let t = &result["timing_seconds"];
    let phase = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
    // The round has validation images, scored after its epoch (and the
    // weights kept): milliseconds, where the bookkeeping alone is
    // microseconds.
    assert!(
        phase("preparation") > 0.0 && phase("validation") > 1e-3,
        "{t}"
    );
    let sum: f64 = [
        "preparation",
        "startup",
        "data_loading",
        "training",
        "validation",
        "evaluation",
    ]
    .iter()
    .map(|k| phase(k))
    .sum();
    let total = phase("total");
    assert!(
        sum <= total + 1e-6 && total - sum < 0.05 * total + 0.5,
        "{t}"
    );
    // predict prints CSV: a path with a comma is quoted, and both
    // thresholds' classes are given.
    let image = out.join("a,b.png");
    let first = csv.lines().nth(1).unwrap().split(',').next().unwrap();
    std::fs::copy(dir.path().join("data").join(first), &image).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args(["predict", "--checkpoint"])
        .arg(out.join("model.safetensors"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "image,score,predicted,predicted_youden");
    assert!(
        lines[1].starts_with(&format!("\"{}\",", image.display())),
        "{printed}"
    );
    let fields: Vec<&str> = lines[1].rsplitn(4, ',').collect();
    assert!(["normal", "tumour"].contains(&fields[0]), "{printed}");
    assert!(["normal", "tumour"].contains(&fields[1]), "{printed}");
    // The score has every digit, as in predictions.csv: the same image
    // scores the same (up to the batch it was scored in).
    let printed_score: f64 = fields[2].parse().unwrap();
    let trained_score: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (printed_score - trained_score).abs() < 1e-5,
        "{printed_score} vs {trained_score}"
    );
    assert!(fields[2].len() > 8, "{printed}");
    // A serving option before the command would be ignored by it: refused,
    // saying where it goes.
    for (args, said) in [
        (
            &["--device", "cpu", "predict"][..],
            "give it after the command: crossfold-worker predict --device",
        ),
        (
            &["--threads", "1", "predict"][..],
            "give it after the command: crossfold-worker predict --threads",
        ),
        (
            &["--max-jobs", "1", "predict"][..],
            "`crossfold-worker predict` does not take it",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
            .args(args)
            .arg("--checkpoint")
            .arg(out.join("model.safetensors"))
            .arg(&image)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(said), "{err}");
    }
    // After the command they are the command's own.
    let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args([
            "predict",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--checkpoint",
        ])
        .arg(out.join("model.safetensors"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Images that cannot be read are named, the others still scored, and
    // the exit status says that not all were.
    let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args(["predict", "--checkpoint"])
        .arg(out.join("model.safetensors"))
        .arg(dir.path().join("missing.png"))
        .arg(&image)
        .arg(dir.path().join("spec.toml"))
        .output()
        .unwrap();
    let (printed, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success());
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert!(printed.contains("a,b.png"), "{printed}");
    assert!(
        err.contains("missing.png") && err.contains("spec.toml") && err.contains("2 of 3 image(s)"),
        "{err}"
    );
    // An --out with an earlier run in it is not overwritten silently.
    let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args(["train", "--spec"])
        .arg(dir.path().join("spec.toml"))
        .args(["--task", "screening", "--round", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("earlier run's model.safetensors") && err.contains("--force"),
        "{err}"
    );
    // An --out that is a file is refused before any training.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args(["train", "--spec"])
        .arg(dir.path().join("spec.toml"))
        .args(["--task", "screening", "--round", "1", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--out") && err.contains("a-file"), "{err}");
    assert!(!err.contains("epoch"), "trained first: {err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
        .args(["train", "--spec"])
        .arg(dir.path().join("spec.toml"))
        .args([
            "--set",
            "train.arch=vgg16",
            "--task",
            "screening",
            "--round",
            "1",
            "--out",
        ])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("train.arch"));
    // A round or task the spec does not plan: named before any image is read.
    for (task, round, want) in [
        (
            "screening",
            "6",
            "--round 6: the spec plans screening rounds 1 to 5",
        ),
        (
            "screening",
            "0",
            "--round 0: the spec plans screening rounds 1 to 5",
        ),
        (
            "malignancy",
            "11",
            "--round 11: the spec plans malignancy rounds 1 to 10",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_crossfold-worker"))
            .args(["train", "--spec"])
            .arg(dir.path().join("spec.toml"))
            .args(["--task", task, "--round", round, "--out"])
            .arg(dir.path().join("other"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{err}");
    }
}
