//! `crossfold plan SPEC`: spec checking, the synthetic default data set, the
//! split plan and the job list.

mod common;
use common::*;

fn write_spec(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let spec = dir.join("exp.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"small\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
             [dataset.synthetic]\nnormal = 10\nbenign = 5\nmalignant = 10\nsize = 64\nseed = 1\n{extra}"
        ),
    )
    .unwrap();
    spec
}

#[test]
fn plan_generates_the_data_and_lists_15_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "");
    let out = dir.path().join("out");
    let run = crossfold(&[
        "plan",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    run.ok();
    assert!(dir.path().join("data/manifest.csv").exists());
    assert!(
        run.stderr.contains(
            "dataset.manifest = \"data/manifest.csv\" did not exist: generated the synthetic cohort"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("15 jobs"), "{}", run.stdout);
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("jobs.json")).unwrap()).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 15);
    assert!(out.join("plan.json").exists());
    let resolved = std::fs::read_to_string(out.join("spec.toml")).unwrap();
    assert!(resolved.contains("arch = \"resnet34\""), "{resolved}");
    // Written with the manifest's absolute path: it plans (and runs) from
    // where it lies, on the same data.
    let manifest = dir.path().join("data/manifest.csv").canonicalize().unwrap();
    assert!(
        resolved.contains(&format!("manifest = {:?}", manifest.display().to_string())),
        "{resolved}"
    );
    let replan = crossfold(&["plan", out.join("spec.toml").to_str().unwrap()]);
    replan.ok();
    assert!(!replan.stderr.contains("generated"), "{}", replan.stderr);
    // A second run reuses the data set.
    let again = crossfold(&[
        "plan",
        spec.to_str().unwrap(),
        "--set",
        "protocol.tasks=[\"screening\"]",
    ]);
    again.ok();
    assert!(again.stdout.contains("5 jobs"), "{}", again.stdout);
    assert!(!again.stderr.contains("generated"), "{}", again.stderr);
    // --out at the spec's own folder would replace the spec (exp.toml is
    // safe; a spec named spec.toml is not).
    let named = dir.path().join("spec.toml");
    std::fs::copy(&spec, &named).unwrap();
    let before = std::fs::read_to_string(&named).unwrap();
    // plan's own spec.toml, and run's through its report.
    for cmd in ["plan", "run"] {
        let out = dir.path().to_str().unwrap();
        let run = crossfold(&[cmd, named.to_str().unwrap(), "--out", out]);
        run.failed();
        assert!(
            run.stderr
                .contains("spec.toml: that is the spec this command reads"),
            "{cmd}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&named).unwrap(), before);
    }
}

#[test]
fn a_bad_spec_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "[train]\narch = \"resnet35\"\nlr = -1.0\nepochs = 0\n",
    );
    let run = crossfold(&["plan", spec.to_str().unwrap(), "--set", "protocol.seeds=3"]);
    run.failed();
    // Structural problems (unknown keys, bad enum values) and range problems
    // are reported together.
    for needle in [
        "train.arch",
        "\"resnet35\"",
        "protocol.seeds",
        "exp.toml",
        "train.lr = -1",
        "train.epochs = 0",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle} not in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn slots_outside_1_to_64_are_refused_not_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "");
    for slots in ["0", "65"] {
        let run = crossfold(&["run", spec.to_str().unwrap(), "--slots-per-gpu", slots]);
        run.failed();
        assert!(
            run.stderr
                .contains(&format!("invalid value '{slots}' for '--slots-per-gpu"))
                && run.stderr.contains("not in 1..=64"),
            "{}",
            run.stderr
        );
    }
    // Nothing was generated or started.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn missing_pretrained_weights_are_named_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "[train]\npretrained = \"weights/r34.safetensors\"\n",
    );
    for cmd in ["plan", "run"] {
        let run = crossfold(&[cmd, spec.to_str().unwrap()]);
        run.failed();
        assert!(
            run.stderr
                .contains("train.pretrained = \"weights/r34.safetensors\": ")
                && run.stderr.contains("weights/r34.safetensors: No such file"),
            "{cmd}: {}",
            run.stderr
        );
    }
    // Nothing was generated or started.
    assert!(!dir.path().join("data").exists());
    // Weights by an absolute path may be on the workers only: plan warns,
    // a local run refuses.
    let elsewhere = "train.pretrained=\"/models/r34.safetensors\"";
    let run = crossfold(&["run", spec.to_str().unwrap(), "--set", elsewhere]);
    run.failed();
    assert!(
        run.stderr.contains("/models/r34.safetensors: No such file"),
        "{}",
        run.stderr
    );
    let run = crossfold(&["plan", spec.to_str().unwrap(), "--set", elsewhere]);
    run.ok();
    assert!(
        run.stderr
            .contains("warning: train.pretrained = \"/models/r34.safetensors\"")
            && run.stderr.contains("fine if the workers have it there"),
        "{}",
        run.stderr
    );
}

/// A stand-in for crossfold-worker: answers `devices --json` (no GPU) unless
/// `devices_fail`; otherwise writes its environment beside itself, says it
/// cannot start and exits 127.
fn fake_worker(dir: &std::path::Path, devices_fail: bool) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fake-worker");
    let devices = if devices_fail {
        "echo 'error while loading shared libraries: libtorch_cpu.so' >&2; exit 127"
    } else {
        "echo '{\"inventory\": {\"cuda_devices\": 0}}'; exit 0"
    };
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nif [ \"$1\" = devices ]; then {devices}; fi\n\
             env > \"$(dirname \"$0\")/worker-env.txt\"\n\
             echo 'cannot load libtorch here' >&2\nexit 127\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn run_says_why_when_its_workers_cannot_start_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "");
    let out = dir.path().join("out");
    let run = |bin: &std::path::Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_crossfold"))
            .args([
                "run",
                spec.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .env("CROSSFOLD_WORKER_BIN", bin)
            // A remote coordinator's settings, which the local workers
            // must not take.
            .env("CROSSFOLD_CA", "/nonexistent/ca.pem")
            .env("CROSSFOLD_TOKEN", "secret")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // The worker binary cannot even list devices: said before anything starts.
    let (code, err) = run(&fake_worker(dir.path(), true));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the worker cannot start") && err.contains("libtorch_cpu.so"),
        "{err}"
    );
    assert!(!out.exists(), "nothing started");
    // Its workers exit at once: the run ends, naming why, within seconds.
    let started = std::time::Instant::now();
    let (code, err) = run(&fake_worker(dir.path(), false));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("worker 0 exited")
            && err.contains("cannot load libtorch here")
            && err.contains("every worker exited"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let env = std::fs::read_to_string(dir.path().join("worker-env.txt")).unwrap();
    assert!(
        !env.contains("CROSSFOLD_CA=") && !env.contains("CROSSFOLD_TOKEN="),
        "{env}"
    );
}
