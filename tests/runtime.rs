//! The distributed runtime with real processes, real sockets and real
//! SQLite: a coordinator and worker processes on loopback.

mod common;
use common::cluster::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(240);

/// The `job_status` entries of a `status --format json` document.
fn jobs(status: &serde_json::Value) -> &Vec<serde_json::Value> {
    status["job_status"].as_array().expect("job_status")
}

fn count_results(doc: &serde_json::Value) -> usize {
    doc["predictions"].as_array().map(|a| a.len()).unwrap_or(0)
}

#[test]
fn two_workers_complete_the_15_job_paper_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let _w1 = start_worker(dir.path(), &url, "w1", &[]);
    let _w2 = start_worker(dir.path(), &url, "w2", &[]);
    let id = submit(&url, &spec, &[]);
    // Idempotent: the same spec and data give the same experiment.
    assert_eq!(submit(&url, &spec, &[]), id);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["jobs"]["succeeded"], 15);
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 15, "each job counted once");
    assert_eq!(
        doc["tasks"]["screening"]["rounds"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        doc["tasks"]["malignancy"]["rounds"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert!(doc["tasks"]["malignancy"]["summary"]["accuracy"]["sd"].is_number());
    assert!(doc["tasks"]["screening"]["pooled"]["auc"].is_number());
    // Both workers took part.
    let workers: std::collections::BTreeSet<String> = doc["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["worker_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    // The report files.
    let out = dir.path().join("report");
    assert_eq!(report(&url, &id, &out), 0);
    for f in [
        "report.json",
        "report.md",
        "rounds.csv",
        "predictions.csv",
        "plan.json",
        "spec.toml",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    // 40 images in 5 screening rounds (each once) + 20 tumours in 10 malignancy rounds (each 4 times).
    assert_eq!(csv.lines().count(), 1 + 40 + 80);
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.split(',').nth(1).is_some_and(|p| p.starts_with('P'))),
        "{csv}"
    );
    // The manifest's site column corrected (no part of the data set's
    // identity): the same experiment, not trained again, but its summary
    // and predictions are broken down by the corrected values once the spec
    // is submitted again.
    let sites = |doc: &serde_json::Value| -> Vec<String> {
        doc["tasks"]["malignancy"]["breakdowns"]["site"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| r["value"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        sites(&doc).contains(&"distal_femur".to_string()),
        "{:?}",
        sites(&doc)
    );
    let manifest = dir.path().join("data/manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("distal_femur", "distal femur")).unwrap();
    assert_eq!(submit(&url, &spec, &[]), id);
    let doc = results(&url, &id);
    let now = sites(&doc);
    assert!(
        now.contains(&"distal femur".to_string()) && !now.contains(&"distal_femur".to_string()),
        "{now:?}"
    );
    assert!(
        doc["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["predictions"].as_array().unwrap())
            .all(|p| p["site"] != "distal_femur"),
        "the predictions are broken down alike"
    );
    assert_eq!(
        status(&url, &id)["jobs"]["succeeded"],
        15,
        "nothing trained again"
    );
    // A second experiment on the same data and plan (another training seed), compared.
    // Without a validation set: every round's worker warns that there was
    // no early stopping and no Youden threshold.
    let id2 = submit(
        &url,
        &spec,
        &["train.seed=7", "train.validation_fraction=0"],
    );
    assert_ne!(id2, id);
    wait_for("the second experiment", LONG, || {
        terminal(&status(&url, &id2))
    });
    let (code, out_json, err) = cli(&[
        "compare",
        &id,
        &id2,
        "--coordinator",
        &url,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let cmp: serde_json::Value = serde_json::from_str(&out_json).unwrap();
    assert_eq!(cmp["tasks"]["screening"]["n"], 40);
    let second = results(&url, &id2);
    for task in ["screening", "malignancy"] {
        for r in second["tasks"][task]["rounds"].as_array().unwrap() {
            let w = r["warnings"][0].as_str().unwrap_or_default();
            assert!(w.starts_with("train.validation_fraction = 0"), "{r}");
        }
    }
    assert!(cmp["tasks"]["malignancy"]["p_value"].is_number(), "{cmp}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## screening")
            && md.contains("## malignancy")
            && md.contains("Pooled out-of-fold AUC")
            && md.contains("### By subtype"),
        "{md}"
    );
    // The real report satisfies its published schema, with each round's
    // provenance as the worker reported it.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let r1 = &report["tasks"]["screening"]["rounds"][0];
    assert_eq!(r1["provenance"]["device"], "cpu", "{r1}");
    assert!(r1["worker_id"].is_string() && r1["attempt"] == 1, "{r1}");
    // And where its time went, the phases within the whole.
    let t = &r1["timing"];
    let secs = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("timing.{k}: {r1}"));
    assert!(
        secs("training") > 0.0 && secs("images_per_second") > 0.0,
        "{r1}"
    );
    let phases: f64 = [
        "preparation",
        "startup",
        "data_loading",
        "training",
        "validation",
        "evaluation",
    ]
    .iter()
    .map(|k| secs(k))
    .sum();
    assert!(phases <= secs("total") + 1e-9, "{r1}");
    let csv = std::fs::read_to_string(out.join("rounds.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",seconds,training_seconds,images_per_second"),
        "{csv}"
    );
    // The first screening round's row ends in its total, training and
    // images/s, as in report.json (to the CSV's three decimals).
    let row = csv.lines().find(|l| l.starts_with("screening,1,")).unwrap();
    let cells: Vec<Option<f64>> = row
        .rsplitn(4, ',')
        .take(3)
        .map(|c| c.parse().ok())
        .collect();
    let want: Vec<Option<f64>> = ["images_per_second", "training", "total"]
        .iter()
        .map(|k| Some(format!("{:.3}", secs(k)).parse().unwrap()))
        .collect();
    assert_eq!(cells, want, "{row}");
    // The workers sent the threshold each round chose on its validation
    // images, and the report shows the round's statistics at it.
    let rounds: Vec<&serde_json::Value> = ["screening", "malignancy"]
        .iter()
        .flat_map(|t| report["tasks"][t]["rounds"].as_array().unwrap())
        .collect();
    let with = rounds
        .iter()
        .filter(|r| r["youden_threshold"].is_number())
        .count();
    assert!(with > 0, "no round reported a validation-chosen threshold");
    for r in rounds.iter().filter(|r| r["youden_threshold"].is_number()) {
        assert_eq!(r["at_youden"]["threshold"], r["youden_threshold"], "{r}");
    }
    // A round without that threshold had a validation set lacking a class,
    // or one its scores did not separate, and its worker said so; the
    // others carry no such warning.
    for r in &rounds {
        let warned = r["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().unwrap().contains("no Youden threshold"))
        });
        assert_eq!(warned, !r["youden_threshold"].is_number(), "{r}");
    }
}

#[test]
fn a_killed_worker_s_job_is_leased_again() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough jobs that the kill lands mid-job.
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let mut victim = start_worker(dir.path(), &url, "victim", &[]);
    let id = submit(&url, &spec, &["train.epochs=60"]);
    wait_for("a job leased to the victim", LONG, || {
        jobs(&status(&url, &id))
            .iter()
            .any(|j| j["worker"] == "victim")
    });
    victim.kill9();
    let _rescuer = start_worker(dir.path(), &url, "rescuer", &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 5);
    // The job the victim held ran again, as attempt 2, on the rescuer.
    let again: Vec<_> = doc["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["attempt"] == 2)
        .collect();
    assert_eq!(again.len(), 1, "{doc}");
    assert_eq!(again[0]["worker_id"], "rescuer");
}

#[test]
fn the_coordinator_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    // A fixed port, so workers reconnect to the restarted coordinator.
    let listen = free_loopback_address();
    let (mut coord, url) = start_coordinator(dir.path(), &listen, &dir.path().join("data"), &[]);
    let _w = start_worker(dir.path(), &url, "w", &[]);
    let id = submit(&url, &spec, &["train.epochs=3"]);
    wait_for("some jobs committed", LONG, || {
        status(&url, &id)["jobs"]["succeeded"].as_u64().unwrap_or(0) >= 3
    });
    let before = status(&url, &id)["jobs"]["succeeded"].as_u64().unwrap();
    coord.kill9();
    let (_coord2, url2) = start_coordinator(dir.path(), &listen, &dir.path().join("data"), &[]);
    assert_eq!(url, url2);
    let after_restart = status(&url, &id)["jobs"]["succeeded"].as_u64().unwrap();
    assert!(
        after_restart >= before,
        "committed results lost: {before} -> {after_restart}"
    );
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 15, "no result lost or duplicated");
    let keys: std::collections::BTreeSet<String> = doc["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}-{}", r["task"], r["round"]))
        .collect();
    assert_eq!(keys.len(), 15);
    drop(_coord2);
    let store = crossfold_coordinator::store::SqliteStore::open(&dir.path().join("coordinator.db"))
        .unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

/// SIGTERM `w` and wait (90 s at most) for it to exit; how long it took.
fn sigterm_and_time_the_exit(w: &mut Proc) -> Duration {
    let stopped = std::time::Instant::now();
    w.signal(libc::SIGTERM);
    wait_for("the worker to exit", Duration::from_secs(90), || {
        matches!(w.child.try_wait(), Ok(Some(_)))
    });
    stopped.elapsed()
}

/// A worker with a job leased from a coordinator that then goes away
/// (`hang`: stops answering, its connections open; else killed) is told to
/// stop: it gives up reporting 30 s after the stop, says so, and exits.
fn stop_with_the_coordinator_gone(hang: bool) {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (mut coord, url) =
        start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let mut w = start_worker(dir.path(), &url, "w", &[]);
    let _id = submit(&url, &spec, &["train.epochs=2"]);
    wait_for("a job leased", LONG, || {
        w.log_text().contains("lease received")
    });
    if hang {
        // Every call now waits for an answer that never comes.
        coord.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(1));
    } else {
        coord.kill9();
        // Backing off (1, 2, 4, 8 s...) before the stop comes: the stop
        // wakes it.
        wait_for("the worker's third try to report", LONG, || {
            w.log_text().matches("report not through; retrying").count() >= 3
        });
    }
    let took = sigterm_and_time_the_exit(&mut w);
    if hang {
        coord.signal(libc::SIGCONT);
    }
    let log = w.log_text();
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(36),
        "exited {took:?} after SIGTERM:\n{log}"
    );
    assert!(
        log.contains("stopping with the outcome unreported"),
        "{log}"
    );
}

#[test]
fn an_idle_worker_stops_within_15_s_when_its_coordinator_stops_answering() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    let (coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let mut w = start_worker(dir.path(), &url, "w", &[]);
    wait_for("the worker to register", LONG, || {
        w.log_text().contains("registered")
    });
    // Its lease request (a long poll of up to 10 s) never gets an answer.
    coord.signal(libc::SIGSTOP);
    let took = sigterm_and_time_the_exit(&mut w);
    coord.signal(libc::SIGCONT);
    // Not the 30 s of keep-alive: the long poll's 10 s and 5 s more.
    assert!(
        took < Duration::from_secs(17),
        "exited {took:?} after SIGTERM"
    );
}

#[test]
fn a_stopping_worker_gives_up_reporting_to_a_gone_coordinator_after_30_s() {
    stop_with_the_coordinator_gone(false);
}

#[test]
fn a_stopping_worker_gives_up_on_a_coordinator_that_never_answers_after_30_s() {
    // The job is cancelled by the stop; its release is the report that
    // never gets an answer (the try in flight at the deadline is cut off,
    // or keep-alive ended it before).
    stop_with_the_coordinator_gone(true);
}

#[test]
fn a_result_finished_while_the_coordinator_is_down_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let listen = free_loopback_address();
    let grace = ["--restart-grace", "40"];
    let data = dir.path().join("data");
    let (mut coord, url) = start_coordinator(dir.path(), &listen, &data, &grace);
    let w = start_worker(dir.path(), &url, "w", &[]);
    let id = submit(&url, &spec, &["train.epochs=2"]);
    wait_for("a job leased", LONG, || {
        w.log_text().contains("lease received")
    });
    coord.kill9();
    // Longer than the worker's old fixed 30 tries of 1 s.
    wait_for(
        "the worker to finish the job and try to report",
        LONG,
        || w.log_text().contains("report not through; retrying"),
    );
    std::thread::sleep(Duration::from_secs(35));
    let (_coord2, _) = start_coordinator(dir.path(), &listen, &data, &grace);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    // The first round's result arrived late but in time: attempt 1, not redone.
    let first = jobs(&s)
        .iter()
        .find(|j| j["key"] == "screening-r01")
        .unwrap()
        .clone();
    assert_eq!(first["attempt"], 1, "{s}");
    assert_eq!(count_results(&results(&url, &id)), 5);
}

#[test]
fn a_late_result_from_a_cut_off_worker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let slow = start_worker(dir.path(), &url, "slow", &[]);
    let id = submit(&url, &spec, &["train.epochs=40"]);
    wait_for("a job leased to the slow worker", LONG, || {
        jobs(&status(&url, &id))
            .iter()
            .any(|j| j["worker"] == "slow")
    });
    // Cut it off (SIGSTOP) for longer than its lease (4 s): the job goes to another worker.
    slow.signal(libc::SIGSTOP);
    let _other = start_worker(dir.path(), &url, "other", &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    slow.signal(libc::SIGCONT);
    // The slow worker wakes up, finishes its stale attempt and reports it: refused.
    wait_for("the slow worker's report", Duration::from_secs(120), || {
        let log = slow.log_text();
        log.contains("result not accepted") || log.contains("no longer wants this attempt")
    });
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 5, "counted once");
    assert_eq!(status(&url, &id)["state"], "succeeded");
}

#[test]
fn a_cut_off_worker_back_before_its_job_is_leased_again_keeps_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let w = start_worker(dir.path(), &url, "w", &[]);
    let id = submit(&url, &spec, &["train.epochs=40"]);
    let leased_to_w = |s: &serde_json::Value| {
        jobs(s)
            .iter()
            .find(|j| j["worker"] == "w")
            .map(|j| j["key"].as_str().unwrap().to_string())
    };
    let mut key = None;
    wait_for("a job leased to the worker", LONG, || {
        key = leased_to_w(&status(&url, &id));
        key.is_some()
    });
    let key = key.unwrap();
    // Cut off (SIGSTOP) for longer than its lease (4 s): the lease expires,
    // and with no other worker the job waits in the queue.
    w.signal(libc::SIGSTOP);
    let job = |s: &serde_json::Value| {
        jobs(s)
            .iter()
            .find(|j| j["key"] == key.as_str())
            .unwrap()
            .clone()
    };
    wait_for("the lease to expire", LONG, || {
        let j = job(&status(&url, &id));
        j["state"] == "pending"
            && j["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("lease expired"))
    });
    w.signal(libc::SIGCONT);
    // Back, it carries on under the same attempt, and its result counts.
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(job(&s)["attempt"], 1, "{s}");
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 5);
    let log = w.log_text();
    assert!(!log.contains("result not accepted"), "{log}");
}

#[test]
fn a_lease_whose_data_cannot_be_read_fails_its_attempt_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(
        dir.path(),
        "[protocol]\ntasks = [\"screening\"]\n[retry]\nmax_attempts = 1\n",
    );
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    // The manifest moves after submission, before any worker comes.
    let manifest = dir.path().join("data/manifest.csv");
    std::fs::rename(&manifest, dir.path().join("data/moved.csv")).unwrap();
    let _w = start_worker(dir.path(), &url, "w", &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "failed", "{s}");
    // Each round failed with the reason, not "stopped heartbeating" after
    // a lease left to expire.
    for j in jobs(&s) {
        let why = j["last_error"].as_str().unwrap_or_default();
        assert!(why.contains("cannot read its manifest"), "{j}");
    }
}

#[test]
fn a_job_that_always_fails_ends_failed_and_the_rest_finish() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(
        dir.path(),
        "[protocol]\ntasks = [\"screening\"]\n[retry]\nmax_attempts = 2\nbackoff_seconds = 0.1\n",
    );
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let w = start_worker(
        dir.path(),
        &url,
        "w",
        &[("CROSSFOLD_FAULT_FAIL_JOB", "screening-r02")],
    );
    let id = submit(&url, &spec, &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["jobs"]["succeeded"], 4);
    assert_eq!(s["jobs"]["failed"], 1);
    let failed = jobs(&s)
        .iter()
        .find(|j| j["state"] == "failed")
        .unwrap()
        .clone();
    assert_eq!(failed["key"], "screening-r02");
    assert_eq!(failed["attempt"], 2, "max attempts used");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{failed}"
    );
    // The other rounds' results are there, and the failed round is named.
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 4);
    let missing = doc["missing_rounds"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{doc}");
    assert_eq!(missing[0]["round"], 2);
    assert_eq!(missing[0]["state"], "failed");
    assert!(missing[0]["error"]
        .as_str()
        .unwrap()
        .contains("injected fault"));
    let out = dir.path().join("report");
    assert_eq!(report(&url, &id, &out), 2, "written, a round missing");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Rounds without a result")
            && md.contains("- screening round 2: failed after 2 attempt(s): injected fault"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("screening round 2: failed after 2 attempt(s)"));

    // The cause fixed (a worker without the fault), the same spec submitted
    // again: the failed round is queued again, the four others are kept.
    drop(w);
    let _w2 = start_worker(dir.path(), &url, "w2", &[]);
    let (code, out, err) = cli(&["submit", spec.to_str().unwrap(), "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id);
    assert!(err.contains("1 round(s) queued again"), "{err}");
    wait_for("the resumed experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["jobs"]["succeeded"], 5, "{s}");
    let round2 = jobs(&s)
        .iter()
        .find(|j| j["key"] == "screening-r02")
        .unwrap()
        .clone();
    assert_eq!(round2["attempt"], 3, "attempt numbers go on: {round2}");
    let doc = results(&url, &id);
    assert_eq!(count_results(&doc), 5);
    assert!(
        doc["missing_rounds"].as_array().unwrap().is_empty(),
        "{doc}"
    );
    // The aggregate was made again: it covers all five rounds.
    let summary = &doc["tasks"]["screening"]["summary"];
    assert_eq!(summary["auc"]["n"], 5, "{summary}");
}

#[test]
fn bad_requests_get_the_right_grpc_codes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    // An invalid spec: every bad field named.
    let (code, _, err) = cli(&[
        "submit",
        spec.to_str().unwrap(),
        "--coordinator",
        &url,
        "--set",
        "train.lr=-1",
        "--set",
        "train.arch=vgg",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("train.lr") && err.contains("train.arch"),
        "{err}"
    );
    // The same through gRPC directly: INVALID_ARGUMENT naming the field.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = |spec_toml: String, overrides: Vec<String>| {
        rt.block_on(async {
            let mut c =
                crossfold_proto::v1::experiments_client::ExperimentsClient::connect(url.clone())
                    .await
                    .unwrap();
            c.submit(crossfold_proto::v1::SubmitRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                spec_toml,
                overrides,
            })
            .await
            .unwrap_err()
        })
    };
    let status = refused(
        "name = \"x\"\n[train]\nepochs = 0\n".into(),
        vec!["train.optimizer=adagrad".into()],
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    for field in ["train.epochs", "train.optimizer", "dataset.manifest"] {
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    // Pretrained weights by a relative path would be looked for in each
    // worker's working folder: refused, naming the field.
    let manifest = dir.path().join("data/manifest.csv").canonicalize().unwrap();
    let status = refused(
        format!(
            "name = \"x\"\n[dataset]\nmanifest = {:?}\n[train]\npretrained = \"w/r18.safetensors\"\n",
            manifest.display().to_string()
        ),
        Vec::new(),
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("train.pretrained = \"w/r18.safetensors\": must be an absolute path"),
        "{}",
        status.message()
    );
    // A manifest outside the data roots.
    let other = tempfile::tempdir().unwrap();
    let spec2 = tiny_spec(other.path(), "");
    make_data(&spec2);
    let (code, _, err) = cli(&["submit", spec2.to_str().unwrap(), "--coordinator", &url]);
    assert_ne!(code, 0);
    assert!(
        err.contains("PermissionDenied") && err.contains("data root"),
        "{err}"
    );
    // One request id for two different submissions: the second is refused,
    // naming the first's experiment, not answered with it.
    let manifest_toml = format!("{:?}", manifest.display().to_string());
    let (first, second) = rt.block_on(async {
        let mut c =
            crossfold_proto::v1::experiments_client::ExperimentsClient::connect(url.clone())
                .await
                .unwrap();
        let submit = |name: &str| crossfold_proto::v1::SubmitRequest {
            request_id: "same-request".into(),
            spec_toml: format!(
                "name = \"{name}\"\n[dataset]\nmanifest = {manifest_toml}\n\
                 [train]\narch = \"resnet18\"\nimage_size = 32\nepochs = 1\nbatch_size = 8\n"
            ),
            overrides: Vec::new(),
        };
        let first = c.submit(submit("one")).await.unwrap().into_inner();
        // The same request again (a retry): its experiment back.
        let again = c.submit(submit("one")).await.unwrap().into_inner();
        assert_eq!(again.experiment_id, first.experiment_id);
        // Cancelled, then submitted again under a new request id: resumed.
        // A retry of that call (its answer lost) resumes nothing more, even
        // with the experiment cancelled again meanwhile.
        let cancel = || crossfold_proto::v1::CancelRequest {
            experiment_id: first.experiment_id.clone(),
        };
        let resubmit = || crossfold_proto::v1::SubmitRequest {
            request_id: "resubmission".into(),
            ..submit("one")
        };
        c.cancel(cancel()).await.unwrap();
        let resumed = c.submit(resubmit()).await.unwrap().into_inner();
        assert_eq!(resumed.experiment_id, first.experiment_id);
        assert!(resumed.resumed > 0, "{resumed:?}");
        c.cancel(cancel()).await.unwrap();
        let retried = c.submit(resubmit()).await.unwrap().into_inner();
        assert_eq!(
            (retried.experiment_id.as_str(), retried.resumed),
            (first.experiment_id.as_str(), 0)
        );
        let second = c.submit(submit("two")).await.unwrap_err();
        (first, second)
    });
    assert_eq!(second.code(), tonic::Code::FailedPrecondition);
    assert!(
        second
            .message()
            .contains("request_id \"same-request\" was used for experiment")
            && second.message().contains(&first.experiment_id),
        "{}",
        second.message()
    );
    // Unknown and malformed ids.
    let (code, _, err) = cli(&[
        "status",
        "00000000-0000-0000-0000-000000000000",
        "--coordinator",
        &url,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");
    let (code, _, err) = cli(&["results", "not-a-uuid", "--coordinator", &url]);
    assert_ne!(code, 0);
    assert!(
        err.contains("InvalidArgument") && err.contains("not-a-uuid"),
        "{err}"
    );
    // A cap on jobs per experiment.
    drop(_coord);
    let (_c2, url2) = start_coordinator(
        dir.path(),
        "127.0.0.1:0",
        &dir.path().join("data"),
        &["--max-jobs", "3"],
    );
    let (code, _, err) = cli(&[
        "submit",
        spec.to_str().unwrap(),
        "--coordinator",
        &url2,
        "--set",
        "name=\"capped\"",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("ResourceExhausted"), "{err}");
}

#[test]
fn sigterm_releases_the_lease_and_a_fetching_worker_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    // Heartbeats 20 s apart: the stop must not wait for the next one.
    let (_coord, url) = start_coordinator(
        dir.path(),
        "127.0.0.1:0",
        &dir.path().join("data"),
        &["--lease-ttl", "40", "--heartbeat-interval", "20"],
    );
    let mut leaver = start_worker(dir.path(), &url, "leaver", &[]);
    let id = submit(&url, &spec, &["train.epochs=60"]);
    wait_for("a job leased to the leaver", LONG, || {
        jobs(&status(&url, &id))
            .iter()
            .any(|j| j["worker"] == "leaver")
    });
    // Past the lease's first heartbeat, so the next is about 20 s away.
    wait_for("the leaver training", LONG, || {
        leaver.log_text().contains("lease received")
    });
    std::thread::sleep(Duration::from_secs(1));
    leaver.signal(libc::SIGTERM);
    let mut exited = None;
    wait_for(
        "the leaver to exit well before its next heartbeat",
        Duration::from_secs(12),
        || {
            exited = leaver.child.try_wait().ok().flatten();
            exited.is_some()
        },
    );
    assert!(exited.unwrap().success(), "{}", leaver.log_text());
    assert!(
        leaver.log_text().contains("lease released"),
        "{}",
        leaver.log_text()
    );
    // Nothing is leased any more, and the release did not count as a failure.
    let s = status(&url, &id);
    assert_eq!(s["jobs"]["leased"], 0, "{s}");
    assert_eq!(s["jobs"]["failed"], 0, "{s}");
    // A worker that fetches the data from the coordinator (no shared files) finishes.
    // It also keeps each job's outputs.
    let outputs = dir.path().join("outputs");
    let _fetcher = start_worker_with(
        dir.path(),
        &url,
        "fetcher",
        &[],
        &["--fetch-data", "--outputs", outputs.to_str().unwrap()],
    );
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    assert_eq!(status(&url, &id)["state"], "succeeded");
    assert_eq!(count_results(&results(&url, &id)), 5);
    let cache = dir.path().join("cache-fetcher");
    let fetched = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert_eq!(fetched, 40, "every image fetched into the cache");
    // The jobs the fetcher ran left their checkpoint and tables under
    // outputs/<experiment>/<task>-round<N>-attempt<A>/.
    let kept: Vec<_> = walk(&outputs.join(&id))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "model.safetensors"))
        .collect();
    assert!(
        !kept.is_empty(),
        "no checkpoint kept under {}",
        outputs.display()
    );
    for model in &kept {
        let job = model.parent().unwrap();
        let name = job.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("screening-round") && name.contains("-attempt"),
            "{name}"
        );
        for f in [
            "model.json",
            "predictions.csv",
            "history.csv",
            "result.json",
        ] {
            assert!(job.join(f).exists(), "{f} missing in {}", job.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn one_worker_with_two_slots_runs_two_jobs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let w = start_worker_with(dir.path(), &url, "packed", &[], &["--slots-per-gpu", "2"]);
    let id = submit(&url, &spec, &["train.epochs=30"]);
    let mut most = 0;
    wait_for("the experiment to finish", LONG, || {
        let s = status(&url, &id);
        let leased = jobs(&s)
            .iter()
            .filter(|j| j["state"] == "leased" && j["worker"] == "packed")
            .count();
        most = most.max(leased);
        terminal(&s)
    });
    assert_eq!(
        most, 2,
        "two jobs should have been leased to the one worker at once"
    );
    assert_eq!(status(&url, &id)["state"], "succeeded");
    assert_eq!(count_results(&results(&url, &id)), 5);
    // Later jobs took the images earlier ones decoded (each job loads all
    // 40 images of the screening task).
    let log = w.log_text();
    assert!(
        log.contains("from_cache=40"),
        "no job took its images from the cache:\n{log}"
    );
}

#[test]
fn max_jobs_bounds_the_whole_worker_not_each_slot() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    let mut w = start_worker_with(
        dir.path(),
        &url,
        "bounded",
        &[],
        &["--slots-per-gpu", "2", "--max-jobs", "1"],
    );
    let mut exit = None;
    wait_for("the worker to exit after its one job", LONG, || {
        exit = w.child.try_wait().unwrap();
        exit.is_some()
    });
    assert!(exit.unwrap().success(), "{}", w.log_text());
    let log = w.log_text();
    assert_eq!(log.matches("lease received").count(), 1, "{log}");
    assert_eq!(count_results(&results(&url, &id)), 1);
}

#[test]
fn cancel_stops_the_experiment_and_watch_ends() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let w = start_worker(dir.path(), &url, "w", &[]);
    let id = submit(&url, &spec, &["train.epochs=200"]);
    // `watch`, not on a terminal: one line per event.
    let watcher = std::process::Command::new(crossfold_bin())
        .args(["watch", &id, "--coordinator", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a job in training", LONG, || {
        jobs(&status(&url, &id))
            .iter()
            .any(|j| j["state"] == "leased")
    });
    let (code, out, err) = cli(&["cancel", &id, "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    let watched = watcher.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&watched.stderr).into_owned();
    assert_eq!(
        watched.status.code(),
        Some(3),
        "watch exits 3 for a cancelled experiment"
    );
    assert_eq!(String::from_utf8_lossy(&watched.stdout).trim(), "cancelled");
    assert!(lines.contains("screening-r01 leased attempt 1"), "{lines}");
    let s = status(&url, &id);
    assert_eq!(s["state"], "cancelled");
    assert_eq!(s["jobs"]["cancelled"], 5, "{s}");
    // Every job is finished: the results are complete (with no rounds).
    let doc = results(&url, &id);
    assert_eq!(doc["complete"], true, "{doc}");
    assert_eq!(doc["missing_rounds"].as_array().unwrap().len(), 5);
    // The worker stops training the cancelled job (keep_going = false).
    wait_for(
        "the worker to drop the job",
        Duration::from_secs(60),
        || w.log_text().contains("no longer wants this attempt"),
    );
    // The same spec submitted again: the same experiment, running again.
    let mut args = vec!["submit", spec.to_str().unwrap(), "--coordinator", &url];
    args.extend(["--set", "train.epochs=200"]);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id);
    assert!(err.contains("5 round(s) queued again"), "{err}");
    wait_for("the resumed experiment to lease a job", LONG, || {
        let s = status(&url, &id);
        s["state"] == "running" && s["jobs"]["leased"] == 1
    });
    // Attempt numbers go on: the resumed round's lease is attempt 2.
    wait_for("attempt 2 of round 1", LONG, || {
        w.log_text().contains("attempt=2")
    });
    let (code, _, err) = cli(&["cancel", &id, "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_finished_experiment_cannot_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let _w = start_worker(dir.path(), &url, "w", &[]);
    let id = submit(&url, &spec, &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    assert_eq!(status(&url, &id)["state"], "succeeded");
    let (code, _, err) = cli(&["cancel", &id, "--coordinator", &url]);
    assert_ne!(code, 0);
    assert!(
        err.contains("already finished (succeeded)") && err.contains("nothing to cancel"),
        "{err}"
    );
    assert_eq!(status(&url, &id)["state"], "succeeded");
    // Submitting it again changes nothing.
    let (code, out, err) = cli(&["submit", spec.to_str().unwrap(), "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id);
    assert!(err.contains("not submitted again"), "{err}");
    assert_eq!(status(&url, &id)["jobs"]["succeeded"], 5);
    // Finished jobs carry no progress (an old ETA would read as running).
    let (code, out, err) = cli(&["watch", &id, "--coordinator", &url, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["job"].is_string())
        .collect();
    assert_eq!(events.len(), 5, "{out}");
    for e in &events {
        assert_eq!(e["state"], "succeeded", "{e}");
        assert!(e["progress"].is_null(), "{e}");
    }
}

/// Worker processes (pid, state letter) whose command line names `dir`.
fn workers_under(dir: &std::path::Path) -> Vec<(i32, char)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("crossfold-worker") && cmdline.contains(&needle) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.trim().chars().next())
                .unwrap_or('?');
            found.push((pid, state));
        }
    }
    found
}

/// Live (not zombie) workers of a `crossfold run` writing to `out`.
fn live_workers(out: &std::path::Path) -> usize {
    workers_under(out).iter().filter(|(_, s)| *s != 'Z').count()
}

#[test]
fn run_refuses_a_worker_count_it_cannot_use_before_doing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    let out = dir.path().join("out");
    for (n, says) in [
        ("0", "--workers 0: at least one worker is needed"),
        (
            "65",
            "--workers 65: at most 64 worker processes on one machine",
        ),
    ] {
        let run = std::process::Command::new(crossfold_bin())
            .args(["run", spec.to_str().unwrap(), "--quiet", "--workers", n])
            .args(["--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(says), "{err}");
    }
    // Nothing was generated or started.
    assert!(!dir.path().join("data").exists());
    assert!(!out.exists());
}

/// `crossfold run` of a 500-epoch experiment into `out` with one worker,
/// once that worker has leased a job.
fn long_run(spec: &std::path::Path, out: &std::path::Path) -> std::process::Child {
    let run = std::process::Command::new(crossfold_bin())
        .args(["run", spec.to_str().unwrap(), "--quiet", "--workers", "1"])
        .args(["--set", "train.epochs=500", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = out.join("worker-0.log");
    wait_for("the worker to lease a job", LONG, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("lease received"))
    });
    run
}

#[test]
fn a_second_signal_stops_run_and_its_workers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let out = dir.path().join("out");
    let run = long_run(&spec, &out);
    // A worker that cannot stop (frozen): `run` would wait 35 s for it.
    let workers = workers_under(&out);
    assert_eq!(workers.len(), 1, "{workers:?}");
    let pid = workers[0].0;
    // SAFETY: kill(2) on processes this test started.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    std::thread::sleep(Duration::from_secs(1));
    let second = std::time::Instant::now();
    // SAFETY: as above.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let ended = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&ended.stderr);
    assert!(!ended.status.success(), "{err}");
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "{:?} after the second signal: {err}",
        second.elapsed()
    );
    assert!(
        err.contains("SIGINT again: stopping the workers at once"),
        "{err}"
    );
    wait_for("the worker to be gone", Duration::from_secs(30), || {
        live_workers(&out) == 0
    });
}

#[test]
fn run_pauses_an_experiment_an_earlier_run_on_its_out_left_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let out = dir.path().join("out");
    // A long run, interrupted with its rounds unfinished.
    let first = long_run(&spec, &out);
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(first.id() as i32, libc::SIGINT);
    }
    let ended = first.wait_with_output().unwrap();
    assert!(!ended.status.success());
    // Another spec's run on the same --out trains its own rounds only, and
    // says what became of the first.
    let second = std::process::Command::new(crossfold_bin())
        .args(["run", spec.to_str().unwrap(), "--quiet", "--workers", "1"])
        .args(["--set", "train.epochs=1", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        err.contains("note: paused experiment") && err.contains("left unfinished"),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["state"], "succeeded", "{report}");
}

#[test]
fn run_stops_its_workers_when_interrupted_or_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let out = dir.path().join(format!("out-{name}"));
        let run = long_run(&spec, &out);
        let log = out.join("worker-0.log");
        assert_eq!(live_workers(&out), 1, "{:?}", workers_under(&out));
        if signal == libc::SIGTERM {
            // A second `run` on the same --out is refused by name, and
            // leaves the first one's worker log as it was.
            let second = std::process::Command::new(crossfold_bin())
                .args(["run", spec.to_str().unwrap(), "--quiet", "--workers", "1"])
                .args(["--out", out.to_str().unwrap()])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&second.stderr);
            assert!(!second.status.success(), "{err}");
            assert!(
                err.contains("another `crossfold run` is using it") && !err.contains("data set"),
                "{err}"
            );
            let text = std::fs::read(&log).unwrap();
            assert!(
                text.first() != Some(&0)
                    && String::from_utf8_lossy(&text).contains("lease received"),
                "the first run's log was truncated"
            );
            assert_eq!(live_workers(&out), 1, "{:?}", workers_under(&out));
        }
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(run.id() as i32, signal);
        }
        let ended = run.wait_with_output().unwrap();
        assert!(
            !ended.status.success(),
            "{name}: run must not report success"
        );
        if signal == libc::SIGTERM {
            assert_eq!(
                ended.status.code(),
                Some(128 + 15),
                "as a shell reports SIGTERM"
            );
            let err = String::from_utf8_lossy(&ended.stderr);
            assert!(
                err.contains("interrupted by SIGTERM") && err.contains("coordinator.db"),
                "{err}"
            );
        }
        wait_for(
            &format!("the worker to end after {name} to run"),
            Duration::from_secs(60),
            || live_workers(&out) == 0,
        );
    }
}

#[test]
fn jobs_that_need_a_gpu_are_not_leased_to_a_cpu_worker() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let listen = free_loopback_address();
    let data = dir.path().join("data");
    let (mut coord, url) = start_coordinator(dir.path(), &listen, &data, &[]);
    let _w = start_worker(dir.path(), &url, "cpu-worker", &[]);
    // Submitted first, but only a GPU worker may take it.
    let gpu = submit(&url, &spec, &["train.device=cuda"]);
    let cpu = submit(&url, &spec, &[]);
    wait_for("the CPU experiment to finish", LONG, || {
        terminal(&status(&url, &cpu))
    });
    assert_eq!(status(&url, &cpu)["state"], "succeeded");
    // A restarted coordinator, which knows the worker only by its id, does
    // not take it for a GPU worker either.
    coord.kill9();
    let (_coord2, _) = start_coordinator(dir.path(), &listen, &data, &[]);
    let cpu2 = submit(&url, &spec, &["train.seed=8"]);
    wait_for("another CPU experiment to finish", LONG, || {
        terminal(&status(&url, &cpu2))
    });
    assert_eq!(status(&url, &cpu2)["state"], "succeeded");
    let s = status(&url, &gpu);
    assert_eq!(s["state"], "pending", "{s}");
    assert_eq!(s["jobs"]["pending"], 5, "{s}");
    // Never leased (a lease and a failure would also leave it pending).
    assert!(
        jobs(&s)
            .iter()
            .all(|j| j["attempt"].as_u64().unwrap_or(0) == 0),
        "{s}"
    );
    // And status says why.
    assert!(
        s["note"]
            .as_str()
            .is_some_and(|n| n.contains("5 job(s) wait for a GPU worker")),
        "{s}"
    );
    let (code, out, err) = cli(&["status", &gpu, "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("note: 5 job(s) wait for a GPU worker"),
        "{out}"
    );
    assert!(status(&url, &cpu2)["note"].is_null());
}

#[test]
fn sigterm_stops_the_coordinator_with_a_watch_open_and_watch_reconnects() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let listen = free_loopback_address();
    let data = dir.path().join("data");
    let (mut coord, url) = start_coordinator(dir.path(), &listen, &data, &[]);
    // No worker: the experiment stays pending and the watch stays open.
    let id = submit(&url, &spec, &[]);
    let mut watcher = std::process::Command::new(crossfold_bin())
        .args(["watch", &id, "--coordinator", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = watcher.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = String::new();
    let mut wait_line = |what: &str, pat: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !seen.contains(pat) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                Err(_) => panic!("timed out waiting for {what}: {seen}"),
            }
        }
    };
    wait_line("the watch to show the jobs", "screening-r01 pending");
    coord.signal(libc::SIGTERM);
    wait_for("the coordinator to exit", Duration::from_secs(15), || {
        matches!(coord.child.try_wait(), Ok(Some(_)))
    });
    let status_code = coord.child.try_wait().unwrap().unwrap();
    assert!(status_code.success(), "{status_code:?}");
    wait_line("the watch to say the connection was lost", "reconnecting");
    let (_coord2, _) = start_coordinator(dir.path(), &listen, &data, &[]);
    wait_line("the watch to reconnect", "reconnected to the coordinator");
    let (code, _, err) = cli(&["cancel", &id, "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cancelled");
}

#[test]
fn a_fetching_worker_gets_every_row_of_a_data_set_with_repeated_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    // One normal image again, under another name and patient (dataset check
    // warns about it; nothing refuses it).
    let data = dir.path().join("data");
    let manifest = data.join("manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains(",normal,"))
        .unwrap()
        .to_string();
    let path = row.split(',').next().unwrap().to_string();
    std::fs::copy(data.join(&path), data.join("images/normal/DUP_ap.png")).unwrap();
    let dup = row.replacen(&path, "images/normal/DUP_ap.png", 1);
    let patient = dup.split(',').nth(2).unwrap().to_string();
    let dup = dup.replacen(&format!(",{patient},"), ",DUP,", 1);
    std::fs::write(&manifest, format!("{text}{dup}\n")).unwrap();
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &data, &[]);
    let _w = start_worker_with(dir.path(), &url, "fetcher", &[], &["--fetch-data"]);
    let id = submit(&url, &spec, &[]);
    wait_for("the experiment to finish", LONG, || {
        terminal(&status(&url, &id))
    });
    let s = status(&url, &id);
    assert_eq!(s["state"], "succeeded", "{s}");
    // The copy was trained on or tested like any other image.
    let doc = results(&url, &id);
    let tested: Vec<&str> = doc["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["predictions"].as_array().unwrap())
        .filter_map(|p| p["image"].as_str())
        .collect();
    assert!(tested.contains(&"images/normal/DUP_ap.png"), "{tested:?}");
}

#[test]
fn a_worker_that_cannot_write_its_folders_stops_before_taking_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "not a folder").unwrap();
    let outputs = file.join("out");
    for (flag, value) in [("--outputs", &outputs), ("--cache", &outputs)] {
        let out = std::process::Command::new(worker_bin())
            .args(["--coordinator", "http://127.0.0.1:9", "--device", "cpu"])
            .arg(flag)
            .arg(value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {err}");
        assert!(
            err.contains(&format!(
                "{flag}: cannot create the folder {}: {} is a file",
                value.display(),
                file.display()
            )),
            "{flag}: {err}"
        );
    }
    // A GPU asked for on the command line is named as such where there is none.
    if !tch_has_cuda() {
        let out = std::process::Command::new(worker_bin())
            .args(["--coordinator", "http://127.0.0.1:9", "--device", "cuda:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device = \"cuda\""), "{err}");
    }
}

#[test]
fn a_worker_waiting_for_its_coordinator_stops_at_once_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: connections are refused, and the worker backs
    // off 0.5, 1, 2, 4 s between tries.
    let mut w = start_worker(dir.path(), "http://127.0.0.1:9", "patient", &[]);
    wait_for("a 4 s wait before the next try", LONG, || {
        w.log_text().contains("retry_in_ms=4000")
    });
    let signalled = std::time::Instant::now();
    w.signal(libc::SIGTERM);
    let mut exited = None;
    wait_for("the worker to exit", Duration::from_secs(10), || {
        exited = w.child.try_wait().ok().flatten();
        exited.is_some()
    });
    assert!(exited.unwrap().success(), "{}", w.log_text());
    // Not at the end of its wait.
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}: {}",
        signalled.elapsed(),
        w.log_text()
    );
}

/// Whether this machine has an NVIDIA GPU (the worker then finds CUDA).
fn tch_has_cuda() -> bool {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

#[test]
fn one_coordinator_per_database_and_leases_outlast_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_coord, _url) = start_coordinator(dir.path(), "127.0.0.1:0", &data, &[]);
    let second = |extra: &[&str]| {
        let out = std::process::Command::new(crossfold_bin())
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--insecure",
                "--db",
            ])
            .arg(dir.path().join("coordinator.db"))
            .arg("--data-root")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = second(&[]);
    assert!(
        !ok && err.contains("another coordinator is using this database"),
        "{err}"
    );
    // It does not claim to be listening first.
    assert!(!err.contains("listening"), "{err}");
    let (ok, err) = second(&["--lease-ttl", "2", "--heartbeat-interval", "5"]);
    assert!(
        !ok && err.contains("--lease-ttl 2 with --heartbeat-interval 5"),
        "{err}"
    );
}

#[test]
fn a_second_worker_process_under_a_live_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &data, &[]);
    let (code, out, err) = cli(&["status", "--coordinator", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.is_empty() && err.contains("no experiments"),
        "{out}{err}"
    );
    let first = start_worker_with(dir.path(), &url, "same", &[], &[]);
    wait_for("the first worker to register", LONG, || {
        first.log_text().contains("registered")
    });
    // The same --name again, from another process (its own cache and log).
    let log = dir.path().join("second.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut second = std::process::Command::new(worker_bin())
        .env("CROSSFOLD_LOG_FORMAT", "text")
        .args([
            "--coordinator",
            &url,
            "--name",
            "same",
            "--device",
            "cpu",
            "--cache",
        ])
        .arg(dir.path().join("cache-second"))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    wait_for("the second worker to be refused", LONG, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("is in use by another worker process")
    });
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        !first.log_text().contains("refused"),
        "{}",
        first.log_text()
    );
}

#[test]
fn run_refuses_a_bad_data_set_and_leaves_no_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    // A row whose file is gone: `dataset check` fails.
    let manifest = dir.path().join("data/manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let first_image = text.lines().nth(1).unwrap().split(',').next().unwrap();
    std::fs::remove_file(dir.path().join("data").join(first_image)).unwrap();
    let out = dir.path().join("runs/out");
    let (code, _, err) = cli(&[
        "run",
        spec.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(first_image), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "the --out folders made for the run were left behind"
    );
}

#[test]
fn run_again_on_one_out_keeps_the_logs_and_names_a_changed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let out = dir.path().join("out");
    let run = |sets: &[&str]| {
        let mut args = vec![
            "run",
            spec.to_str().unwrap(),
            "--quiet",
            "--workers",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        cli(&args)
    };
    let (code, _, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("note:"), "{err}");
    // The same spec again: the same experiment, nothing to run, no note.
    let (code, _, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("not submitted again") && !err.contains("note:"),
        "{err}"
    );
    // Another spec on the same --out: a new experiment, and said so.
    let (code, _, err) = run(&["train.seed=7"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note:") && err.contains("held the report of another"),
        "{err}"
    );
    // Back to the first spec: its experiment again, but the report there was
    // the other one's, so the note too; once more, and the report is its own.
    let (code, _, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("not submitted again") && err.contains("note:"),
        "{err}"
    );
    let (code, _, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("note:"), "{err}");
    // Each run's worker log is kept, one after the other.
    let log = std::fs::read_to_string(out.join("worker-0.log")).unwrap();
    assert_eq!(log.matches("--- crossfold run (pid").count(), 5, "{log}");
}

#[test]
fn status_says_when_no_worker_is_there_to_take_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    let s = status(&url, &id);
    assert!(
        s["note"]
            .as_str()
            .is_some_and(|n| n.contains("5 job(s) wait: no worker has been heard from")),
        "{s}"
    );
    // Once a worker is there, the note goes.
    let _w = start_worker(dir.path(), &url, "w", &[]);
    wait_for("the note to go", LONG, || {
        status(&url, &id)["note"].is_null()
    });
}
