//! `crossfold folds`: the split-plan contract.

mod common;
use common::*;
use std::collections::BTreeSet;

#[test]
fn paper_plan_json_contract() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    let m = manifest.to_str().unwrap();
    let plan = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--protocol",
        "paper",
        "--seed",
        "3",
        "--format",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(plan["plan_sha256"].as_str().unwrap().len(), 64);
    let groups = plan["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5);
    assert_eq!(
        groups
            .iter()
            .map(|g| g.as_array().unwrap().len())
            .sum::<usize>(),
        25
    );
    let screening = plan["tasks"]["screening"].as_array().unwrap();
    let malignancy = plan["tasks"]["malignancy"].as_array().unwrap();
    assert_eq!(screening.len(), 5);
    assert_eq!(malignancy.len(), 10);
    assert_eq!(screening[0]["round"], 1);
    assert_eq!(screening[0]["test_groups"], serde_json::json!([0]));
    assert_eq!(malignancy[9]["test_groups"], serde_json::json!([3, 4]));
    // Paths as written in the manifest; malignancy holds tumours only.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let normals: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains(",normal,"))
        .map(|l| l.split(',').next().unwrap())
        .collect();
    for r in malignancy {
        for p in r["train"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r["test"].as_array().unwrap())
        {
            assert!(!normals.contains(p.as_str().unwrap()));
        }
    }
    // Same seed, same plan; another seed, another plan.
    let again = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--protocol",
        "paper",
        "--seed",
        "3",
        "--format",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(again["plan_sha256"], plan["plan_sha256"]);
    let other = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--protocol",
        "paper",
        "--seed",
        "4",
        "--format",
        "json",
    ])
    .ok()
    .json();
    assert_ne!(other["plan_sha256"], plan["plan_sha256"]);
}

#[test]
fn a_written_plan_verifies_and_a_leaky_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    let m = manifest.to_str().unwrap();
    let out = dir.path().join("plan.json");
    crossfold(&["folds", "--manifest", m, "--out", out.to_str().unwrap()]).ok();
    crossfold(&["folds", "--manifest", m, "--verify", out.to_str().unwrap()]).ok();
    // --out naming the manifest itself is refused, the manifest kept.
    let before = std::fs::read_to_string(&manifest).unwrap();
    let run = crossfold(&["folds", "--manifest", m, "--out", m]);
    run.failed();
    assert!(
        run.stderr
            .contains("that is the manifest this command reads"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), before);

    // Move a test image into the same round's training set and re-hash: the
    // hash is right, but the patient is on both sides.
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let img = plan["tasks"]["screening"][0]["test"][0].clone();
    plan["tasks"]["screening"][0]["train"]
        .as_array_mut()
        .unwrap()
        .push(img);
    std::fs::write(&out, serde_json::to_string(&plan).unwrap()).unwrap();
    let run = crossfold(&["folds", "--manifest", m, "--verify", out.to_str().unwrap()]);
    run.failed();
    assert!(run.stderr.contains("plan_sha256"), "{}", run.stderr);

    // An edit whose hash is made again is found by rebuilding the plan from
    // its own protocol: here a test image dropped, so it is never tested.
    crossfold(&["folds", "--manifest", m, "--out", out.to_str().unwrap()]).ok();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut plan: crossfold_shared::folds::SplitPlan = serde_json::from_str(&text).unwrap();
    let rounds = plan.tasks.values_mut().next().unwrap();
    let gone = rounds[1].test.remove(0);
    plan.plan_sha256 = plan.compute_hash();
    std::fs::write(&out, plan.to_json_pretty()).unwrap();
    let run = crossfold(&["folds", "--manifest", m, "--verify", out.to_str().unwrap()]);
    run.failed();
    assert!(
        run.stderr
            .contains(&format!("round 2: {gone} is missing from the test set")),
        "{}",
        run.stderr
    );
    // Flags that would contradict the plan's own protocol are refused.
    let run = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--verify",
        out.to_str().unwrap(),
        "--seed",
        "9",
        "--groups",
        "3",
    ]);
    run.failed();
    assert!(
        run.stderr
            .contains("against the protocol written in it; drop --groups, --seed"),
        "{}",
        run.stderr
    );
    // With --spec, the plan must be of the spec's protocol.
    crossfold(&["folds", "--manifest", m, "--out", out.to_str().unwrap()]).ok();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!("name = \"t\"\n[dataset]\nmanifest = {m:?}\n[protocol]\nseed = 99\n"),
    )
    .unwrap();
    let run = crossfold(&[
        "folds",
        "--spec",
        spec.to_str().unwrap(),
        "--verify",
        out.to_str().unwrap(),
    ]);
    run.failed();
    assert!(
        run.stderr.contains("of another protocol than the spec's"),
        "{}",
        run.stderr
    );
}

#[test]
fn protocol_flags_are_checked_as_a_spec_is_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    let m = manifest.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--tasks", "screening,screening"],
            "--tasks screening: listed twice",
        ),
        (vec!["--repeats", "101"], "--repeats 101: must be 1..100"),
        (
            vec!["--groups", "2"],
            "--test-groups 2 (the default; give --test-groups): must be 1..1",
        ),
        (
            vec![
                "--protocol",
                "leave-p-groups-out",
                "--groups",
                "20",
                "--test-groups",
                "10",
            ],
            "protocol = 369512 rounds: protocol.groups = 20, protocol.test_groups = 10",
        ),
    ] {
        let mut all = vec!["folds", "--manifest", m];
        all.extend(&args);
        let run = crossfold(&all);
        run.failed();
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn general_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    let m = manifest.to_str().unwrap();
    // Leave 2 of 4 groups out, screening only.
    let leave_two_out = [
        "folds",
        "--manifest",
        m,
        "--protocol",
        "leave-p-groups-out",
        "--groups",
        "4",
        "--test-groups",
        "2",
        "--tasks",
        "screening",
    ];
    let plan = crossfold(&[&leave_two_out[..], &["--repeats", "2", "--format", "json"]].concat())
        .ok()
        .json();
    assert_eq!(plan["tasks"]["screening"].as_array().unwrap().len(), 12);
    assert!(plan["tasks"].get("malignancy").is_none());
    // The text form numbers groups from 1, as rounds are, and spells the
    // protocol as a spec does.
    let text = crossfold(&leave_two_out).ok().stdout.clone();
    assert!(text.contains("(leave-p-groups-out protocol"), "{text}");
    let test_groups: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|c| c.contains('+'))
        .collect();
    assert_eq!(
        test_groups,
        ["1+2", "1+3", "1+4", "2+3", "2+4", "3+4"],
        "{text}"
    );
    let run = crossfold(&["folds", "--manifest", m, "--groups", "1"]);
    run.failed();
    assert!(run.stderr.contains("--groups 1"), "{}", run.stderr);
    // A setting the protocol does not use is refused, not ignored.
    let run = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--protocol",
        "kfold",
        "--test-groups",
        "2",
    ]);
    run.failed();
    assert!(run.stderr.contains("--test-groups 2"), "{}", run.stderr);
    // 5 benign patients in 5 groups of a leave-2-out design: every round
    // trains on both classes; with 8 groups some malignancy test sets
    // hold no benign image, and each such round is named.
    let run = crossfold(&[
        "folds",
        "--manifest",
        m,
        "--groups",
        "8",
        "--test-groups",
        "1",
    ]);
    run.ok();
    assert!(
        run.stderr.contains("warning: task malignancy, round ")
            && run.stderr.contains("the test set has no benign image"),
        "{}",
        run.stderr
    );
    // 2 groups, 1 in the test set, a cohort with one benign patient: the
    // round testing it cannot train, and the plan is refused by name.
    let one = dir.path().join("one-benign");
    crossfold(&[
        "dataset",
        "synth",
        "--out",
        one.to_str().unwrap(),
        "--normal",
        "6",
        "--benign",
        "1",
        "--malignant",
        "5",
        "--size",
        "64",
        "--seed",
        "1",
    ])
    .ok();
    let run = crossfold(&[
        "folds",
        "--manifest",
        one.join("manifest.csv").to_str().unwrap(),
        "--groups",
        "2",
        "--test-groups",
        "1",
    ]);
    run.failed();
    assert!(
        run.stderr.contains("the training set has no benign image"),
        "{}",
        run.stderr
    );
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let manifest = small_cohort(dir.path());
    // `crossfold folds ... --format json | head -c 1`: the reader goes away
    // after one byte, long before the plan is printed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crossfold"))
        .args(["folds", "--manifest", manifest.to_str().unwrap()])
        .args(["--repeats", "60", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Ended by SIGPIPE, as `head` expects of a Unix tool.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}
