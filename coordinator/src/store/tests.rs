//! One test suite, run against every [`Store`]: each test is a function over
//! `&dyn Store`, and `store_suite!` makes a `#[test]` of it per store.

use super::*;
use crate::state::{Completion, JobState, Pending, RetryPolicy};

/// Runs each named test function against a fresh [`MemoryStore`] and a fresh
/// [`SqliteStore`] in a temporary directory.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[test]
            fn $name() {
                super::$name(&crate::store::MemoryStore::new());
            })*
        }
        mod sqlite_store {
            $(#[test]
            fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let store = crate::store::SqliteStore::open(&dir.path().join("coordinator.db")).unwrap();
                super::$name(&store);
            })*
        }
    };
}

store_suite!(
    create_and_read_back,
    create_is_idempotent_by_request_id,
    create_is_idempotent_by_fingerprint,
    create_refuses_a_taken_id_and_duplicate_keys,
    experiments_are_in_submission_order,
    jobs_are_in_task_then_round_order,
    unknown_experiment_and_job,
    update_job_is_compare_and_set,
    concurrent_writers_of_one_version_one_wins,
    commit_result_once_twice_and_wrong_attempt,
    results_are_ordered_by_key,
    cancel_and_summary,
    a_head_is_the_experiment_without_its_plan,
    cancel_ends_the_unfinished_jobs_and_leaves_a_finished_experiment_as_it_was,
    resume_queues_failed_and_cancelled_jobs_again_and_keeps_the_rest,
    active_jobs_are_the_unfinished_ones_in_submission_order,
    job_counts_are_per_state_across_experiments,
);

/// An experiment record; `n` makes its id, request and fingerprint distinct.
pub(crate) fn experiment(n: u32) -> ExperimentRecord {
    ExperimentRecord {
        id: uuid::Uuid::new_v4(),
        name: format!("exp-{n}"),
        request_id: Some(format!("req-{n}")),
        spec_sha256: format!("spec-{n}"),
        dataset_sha256: format!("data-{n}"),
        plan_sha256: format!("plan-{n}"),
        spec_toml: format!("name = \"exp-{n}\"\n"),
        plan_json: "{}".to_string(),
        manifest_path: "data/manifest.csv".to_string(),
        submitted_ms: 1_000 + i64::from(n),
        seq: 0,
        cancelled: false,
        summary_json: None,
    }
}

/// Jobs with the given keys (task "screening", rounds 1, 2, ...).
pub(crate) fn jobs(keys: &[&str]) -> Vec<NewJob> {
    keys.iter()
        .zip(1..)
        .map(|(k, round)| NewJob {
            key: k.to_string(),
            task: "screening".to_string(),
            round,
        })
        .collect()
}

fn create(store: &dyn Store, n: u32, keys: &[&str]) -> ExperimentRecord {
    let (e, created) = store.create_experiment(experiment(n), jobs(keys)).unwrap();
    assert!(created);
    e
}

/// Lease job `key` to worker "w" at t = 0 and store it; returns the record.
fn lease(store: &dyn Store, id: ExperimentId, key: &str) -> JobRecord {
    let job = store.job(id, key).unwrap();
    let leased = job.state.lease("w", 0, 60_000).unwrap();
    store.update_job(id, key, job.version, leased).unwrap()
}

fn keys(jobs: &[JobRecord]) -> Vec<&str> {
    jobs.iter().map(|j| j.key.as_str()).collect()
}

fn create_and_read_back(store: &dyn Store) {
    let input = experiment(1);
    let (e, created) = store
        .create_experiment(input.clone(), jobs(&["b-r02", "a-r01"]))
        .unwrap();
    assert!(created);
    assert_eq!(e.seq, 1);
    assert_eq!(e, ExperimentRecord { seq: 1, ..input });
    assert_eq!(store.experiment(e.id).unwrap(), e);
    // In round order (`jobs` numbers them 1, 2 in the order given).
    let all = store.jobs(e.id).unwrap();
    assert_eq!(keys(&all), ["b-r02", "a-r01"]);
    let a = &all[1];
    assert_eq!((a.task.as_str(), a.round, a.version), ("screening", 2, 0));
    assert_eq!(a.state, JobState::Pending(Pending::new()));
    assert_eq!(store.job(e.id, "b-r02").unwrap(), all[0]);
}

fn create_is_idempotent_by_request_id(store: &dyn Store) {
    let first = create(store, 1, &["a"]);
    // Same request id, different everything else: the first experiment.
    let mut again = experiment(2);
    again.request_id = first.request_id.clone();
    let (e, created) = store.create_experiment(again, jobs(&["x", "y"])).unwrap();
    assert!(!created);
    assert_eq!(e, first);
    assert_eq!(store.experiment_heads().unwrap().len(), 1);
    assert_eq!(keys(&store.jobs(first.id).unwrap()), ["a"]);
}

fn create_is_idempotent_by_fingerprint(store: &dyn Store) {
    let first = create(store, 1, &["a"]);
    // No request id (or a new one), same spec and data set.
    for request_id in [None, Some("other".to_string())] {
        let mut again = experiment(1);
        again.request_id = request_id;
        let (e, created) = store.create_experiment(again, jobs(&["a"])).unwrap();
        assert!(!created);
        assert_eq!(e, first);
    }
    // Same spec, other data set: a new experiment.
    let mut other = experiment(1);
    other.request_id = None;
    other.dataset_sha256 = "data-other".to_string();
    let (e, created) = store.create_experiment(other, jobs(&["a"])).unwrap();
    assert!(created);
    assert_eq!(e.seq, 2);
    // Two experiments without request ids do not match each other by it.
    let mut third = experiment(3);
    third.request_id = None;
    assert!(store.create_experiment(third, jobs(&["a"])).unwrap().1);
}

fn create_refuses_a_taken_id_and_duplicate_keys(store: &dyn Store) {
    let first = create(store, 1, &["a"]);
    let mut same_id = experiment(2);
    same_id.id = first.id;
    let err = store.create_experiment(same_id, jobs(&["a"])).unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateExperiment(id) if id == first.id),
        "{err}"
    );
    let dup = experiment(3);
    let err = store
        .create_experiment(dup.clone(), jobs(&["a", "b", "a"]))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateJob { key, .. } if key == "a"),
        "{err}"
    );
    // Nothing of the refused experiment was stored.
    assert!(matches!(
        store.experiment(dup.id),
        Err(StoreError::NoExperiment(_))
    ));
    assert_eq!(store.experiment_heads().unwrap().len(), 1);
}

fn jobs_are_in_task_then_round_order(store: &dyn Store) {
    let job = |task: &str, round: u32| NewJob {
        key: format!("{task}-r{round:02}"),
        task: task.to_string(),
        round,
    };
    let new = vec![
        job("screening", 100),
        job("screening", 10),
        job("malignancy", 2),
        job("screening", 9),
    ];
    let (e, _) = store.create_experiment(experiment(1), new).unwrap();
    let keys: Vec<String> = store
        .jobs(e.id)
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(
        keys,
        [
            "malignancy-r02",
            "screening-r09",
            "screening-r10",
            "screening-r100"
        ]
    );
}

fn experiments_are_in_submission_order(store: &dyn Store) {
    let ids: Vec<_> = (0..5).map(|n| create(store, n, &["a"]).id).collect();
    let listed = store.experiment_heads().unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let seqs: Vec<_> = listed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

fn a_head_is_the_experiment_without_its_plan(store: &dyn Store) {
    let e = create(store, 1, &["a"]);
    store.set_summary(e.id, "{\"auc\":0.5}").unwrap();
    let full = store.experiment(e.id).unwrap();
    assert!(!full.plan_json.is_empty());
    let want = ExperimentRecord {
        plan_json: String::new(),
        summary_json: Some(String::new()),
        ..full
    };
    assert_eq!(store.experiment_head(e.id).unwrap(), want);
    assert_eq!(store.experiment_heads().unwrap(), [want]);
    let missing = uuid::Uuid::new_v4();
    assert!(
        matches!(store.experiment_head(missing), Err(StoreError::NoExperiment(id)) if id == missing)
    );
}

fn unknown_experiment_and_job(store: &dyn Store) {
    let missing = uuid::Uuid::new_v4();
    assert!(
        matches!(store.experiment(missing), Err(StoreError::NoExperiment(id)) if id == missing)
    );
    assert!(matches!(
        store.jobs(missing),
        Err(StoreError::NoExperiment(_))
    ));
    assert!(matches!(
        store.job(missing, "a"),
        Err(StoreError::NoExperiment(_))
    ));
    assert!(matches!(
        store.results(missing),
        Err(StoreError::NoExperiment(_))
    ));
    assert!(matches!(
        store.cancel(missing),
        Err(StoreError::NoExperiment(_))
    ));
    assert!(matches!(
        store.set_summary(missing, "{}"),
        Err(StoreError::NoExperiment(_))
    ));
    assert!(matches!(
        store.resume(missing),
        Err(StoreError::NoExperiment(_))
    ));
    let e = create(store, 1, &["a"]);
    let err = store.job(e.id, "zz").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job zz of experiment {} not found", e.id)
    );
    assert!(matches!(
        store.update_job(e.id, "zz", 0, JobState::new()),
        Err(StoreError::NoJob { .. })
    ));
    assert!(matches!(
        store.commit_result(e.id, "zz", 1, "w", 0, "{}"),
        Err(StoreError::NoJob { .. })
    ));
}

fn update_job_is_compare_and_set(store: &dyn Store) {
    let e = create(store, 1, &["a"]);
    let job = store.job(e.id, "a").unwrap();
    let leased = job.state.lease("w1", 10, 1_000).unwrap();
    let updated = store
        .update_job(e.id, "a", job.version, leased.clone())
        .unwrap();
    assert_eq!(updated.version, job.version + 1);
    assert_eq!(updated.state, leased);
    assert_eq!(store.job(e.id, "a").unwrap(), updated);
    // A second writer that read the old version loses.
    let other = job.state.lease("w2", 10, 1_000).unwrap();
    let err = store.update_job(e.id, "a", job.version, other).unwrap_err();
    match &err {
        StoreError::Conflict {
            expected,
            found,
            key,
            ..
        } => {
            assert_eq!((*expected, *found, key.as_str()), (0, 1, "a"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "job a changed concurrently (version 0 expected, 1 found)"
    );
    assert_eq!(store.job(e.id, "a").unwrap(), updated);
    // Every write bumps the version.
    let policy = RetryPolicy::default();
    let failed = updated.state.fail(1, "boom", true, 20, &policy).unwrap();
    let again = store
        .update_job(e.id, "a", updated.version, failed)
        .unwrap();
    assert_eq!(again.version, 2);
}

fn concurrent_writers_of_one_version_one_wins(store: &dyn Store) {
    let e = create(store, 1, &["a"]);
    let job = store.job(e.id, "a").unwrap();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let state = job.state.lease(&format!("w{i}"), 0, 1_000).unwrap();
                s.spawn(move || store.update_job(e.id, "a", job.version, state))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 1);
    let lost = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::Conflict { .. })));
    assert_eq!(lost.count(), 7);
    assert_eq!(store.job(e.id, "a").unwrap(), *won[0]);
}

fn commit_result_once_twice_and_wrong_attempt(store: &dyn Store) {
    let e = create(store, 1, &["a", "b"]);
    // Not leased: a pending job has no attempt to commit.
    let err = store.commit_result(e.id, "a", 1, "w", 5, "{}").unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    let leased = lease(store, e.id, "a");
    // Wrong attempt: refused, nothing stored.
    let err = store
        .commit_result(e.id, "a", 2, "w", 5, "{\"x\":2}")
        .unwrap_err();
    assert!(err.to_string().contains("attempt 2 is stale"), "{err}");
    assert_eq!(store.job(e.id, "a").unwrap(), leased);
    assert!(store.results(e.id).unwrap().is_empty());
    // The right attempt from another worker than the lease's: refused in
    // the commit's own transaction, nothing stored.
    let err = store
        .commit_result(e.id, "a", 1, "w2", 5, "{\"x\":3}")
        .unwrap_err();
    assert!(
        err.to_string().contains("leased to worker w, not to w2"),
        "{err}"
    );
    assert_eq!(store.job(e.id, "a").unwrap(), leased);
    assert!(store.results(e.id).unwrap().is_empty());
    // Once: committed.
    assert!(store
        .commit_result(e.id, "a", 1, "w", 5, "{\"x\":1}")
        .unwrap());
    let done = store.job(e.id, "a").unwrap();
    assert_eq!(done.version, leased.version + 1);
    assert_eq!(done.state.name(), "succeeded");
    assert_eq!(done.state.complete(1, 9), Ok(Completion::AlreadyCommitted));
    // Twice: acknowledged, counted once, the first result kept.
    assert!(!store
        .commit_result(e.id, "a", 1, "w", 6, "{\"x\":\"again\"}")
        .unwrap());
    assert_eq!(store.job(e.id, "a").unwrap(), done);
    let results = store.results(e.id).unwrap();
    assert_eq!(results, [("a".to_string(), "{\"x\":1}".to_string())]);
    // Another attempt after success: stale.
    assert!(matches!(
        store.commit_result(e.id, "a", 2, "w", 7, "{}"),
        Err(StoreError::Transition { .. })
    ));
}

fn results_are_ordered_by_key(store: &dyn Store) {
    let e = create(store, 1, &["c", "a", "b"]);
    let other = create(store, 2, &["a"]);
    for key in ["b", "c", "a"] {
        lease(store, e.id, key);
        assert!(store
            .commit_result(e.id, key, 1, "w", 1, &format!("\"{key}\""))
            .unwrap());
    }
    let results = store.results(e.id).unwrap();
    let got: Vec<_> = results
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, [("a", "\"a\""), ("b", "\"b\""), ("c", "\"c\"")]);
    assert!(store.results(other.id).unwrap().is_empty());
}

fn cancel_and_summary(store: &dyn Store) {
    let e = create(store, 1, &["a"]);
    // Job a is pending: a summary made when all looked finished (a
    // resubmission queued it again since) is not stored.
    let jobs = store.jobs(e.id).unwrap();
    assert!(!store
        .set_summary_if_unchanged(e.id, "{\"auc\":0.7}", &jobs)
        .unwrap());
    assert_eq!(store.experiment(e.id).unwrap().summary_json, None);
    assert_eq!(store.cancel(e.id).unwrap(), Some(0));
    // Again: nothing more to do (not "finished": it was cancelled).
    assert_eq!(store.cancel(e.id).unwrap(), Some(0));
    store.set_summary(e.id, "{\"auc\":0.9}").unwrap();
    store.set_summary(e.id, "{\"auc\":0.8}").unwrap();
    let got = store.experiment(e.id).unwrap();
    assert!(got.cancelled);
    assert_eq!(got.summary_json.as_deref(), Some("{\"auc\":0.8}"));
    let a = store.job(e.id, "a").unwrap();
    assert_eq!((a.state.name(), a.version), ("cancelled", 1));
    // Submitted again: running, without the stale summary, its cancelled
    // job queued again.
    assert_eq!(store.resume(e.id).unwrap(), 1);
    let got = store.experiment(e.id).unwrap();
    assert!(!got.cancelled);
    assert_eq!(got.summary_json, None);
    let a = store.job(e.id, "a").unwrap();
    assert_eq!((a.state.name(), a.version), ("pending", 2));
    // Finished again; a summary made from the jobs as read before a result
    // landed (another round resumed and finished meanwhile) is not stored:
    // it would leave that result out.
    lease(store, e.id, "a");
    assert!(store.commit_result(e.id, "a", 1, "w", 1, "{}").unwrap());
    let read = store.jobs(e.id).unwrap();
    let mut older = read.clone();
    older[0].version -= 1;
    assert!(!store
        .set_summary_if_unchanged(e.id, "{\"stale\":true}", &older)
        .unwrap());
    assert!(!store.set_summary_if_unchanged(e.id, "{}", &[]).unwrap());
    assert_eq!(store.experiment(e.id).unwrap().summary_json, None);
    assert!(store
        .set_summary_if_unchanged(e.id, "{\"auc\":0.7}", &read)
        .unwrap());
    assert_eq!(
        store.experiment(e.id).unwrap().summary_json.as_deref(),
        Some("{\"auc\":0.7}")
    );
}

fn cancel_ends_the_unfinished_jobs_and_leaves_a_finished_experiment_as_it_was(store: &dyn Store) {
    let e = create(store, 1, &["done", "run1", "run2", "wait"]);
    lease(store, e.id, "done");
    assert!(store.commit_result(e.id, "done", 1, "w", 1, "{}").unwrap());
    lease(store, e.id, "run1");
    lease(store, e.id, "run2");
    // Two attempts cut off; the finished job and its result kept.
    assert_eq!(store.cancel(e.id).unwrap(), Some(2));
    let states: Vec<(String, &str, i64)> = store
        .jobs(e.id)
        .unwrap()
        .iter()
        .map(|j| (j.key.clone(), j.state.name(), j.version))
        .collect();
    let want = [
        ("done", "succeeded", 2),
        ("run1", "cancelled", 2),
        ("run2", "cancelled", 2),
        ("wait", "cancelled", 1),
    ];
    for (key, state, version) in want {
        assert!(
            states.contains(&(key.to_string(), state, version)),
            "{key}: {states:?}"
        );
    }
    assert!(store.experiment(e.id).unwrap().cancelled);
    assert_eq!(store.results(e.id).unwrap().len(), 1);
    assert!(store.active_jobs().unwrap().is_empty());

    // Every job finished, not cancelled: nothing changes.
    let f = create(store, 2, &["a"]);
    lease(store, f.id, "a");
    assert!(store.commit_result(f.id, "a", 1, "w", 1, "{}").unwrap());
    let before = (store.experiment(f.id).unwrap(), store.jobs(f.id).unwrap());
    assert_eq!(store.cancel(f.id).unwrap(), None);
    assert_eq!(
        (store.experiment(f.id).unwrap(), store.jobs(f.id).unwrap()),
        before
    );
}

fn resume_queues_failed_and_cancelled_jobs_again_and_keeps_the_rest(store: &dyn Store) {
    let e = create(store, 1, &["ok", "bad", "off", "run", "wait"]);
    lease(store, e.id, "ok");
    store.commit_result(e.id, "ok", 1, "w", 1, "{}").unwrap();
    let bad = lease(store, e.id, "bad");
    let failed = bad
        .state
        .fail(1, "bad file", false, 1, &RetryPolicy::default())
        .unwrap();
    store.update_job(e.id, "bad", bad.version, failed).unwrap();
    let off = lease(store, e.id, "off");
    store
        .update_job(e.id, "off", off.version, off.state.cancel())
        .unwrap();
    let run = lease(store, e.id, "run");
    store.set_summary(e.id, "{\"stale\":true}").unwrap();

    assert_eq!(store.resume(e.id).unwrap(), 2);
    let state = |k: &str| store.job(e.id, k).unwrap();
    assert_eq!(state("ok").state.name(), "succeeded");
    assert_eq!(state("run"), run, "a running job is not touched");
    assert_eq!(state("wait").state.name(), "pending");
    for k in ["bad", "off"] {
        let j = state(k);
        assert_eq!(j.state.name(), "pending", "{k}");
        // A compare-and-set version bump, and the next lease is attempt 2.
        assert!(j.version > 0, "{k}");
        let again = j.state.lease("w", 10, 60_000).unwrap();
        assert!(
            matches!(again, JobState::Leased(ref l) if l.attempt == 2),
            "{k}"
        );
    }
    assert_eq!(store.experiment(e.id).unwrap().summary_json, None);
    // Nothing left to resume: the summary of a finished run is kept.
    let jobs = store.jobs(e.id).unwrap();
    assert!(
        !store.set_summary_if_unchanged(e.id, "{}", &jobs).unwrap(),
        "run and wait are not finished"
    );
    store.set_summary(e.id, "{}").unwrap();
    assert_eq!(store.resume(e.id).unwrap(), 0);
    assert_eq!(
        store.experiment(e.id).unwrap().summary_json.as_deref(),
        Some("{}")
    );
}

fn active_jobs_are_the_unfinished_ones_in_submission_order(store: &dyn Store) {
    assert!(store.active_jobs().unwrap().is_empty());
    let first = create(store, 1, &["z", "y", "x"]);
    let second = create(store, 2, &["b", "a"]);
    // x succeeds, y fails, z is cancelled; a is leased, b pending.
    lease(store, first.id, "x");
    store.commit_result(first.id, "x", 1, "w", 1, "{}").unwrap();
    let y = lease(store, first.id, "y");
    let failed = y
        .state
        .fail(1, "bad", false, 1, &RetryPolicy::default())
        .unwrap();
    store.update_job(first.id, "y", y.version, failed).unwrap();
    let z = store.job(first.id, "z").unwrap();
    store
        .update_job(first.id, "z", z.version, z.state.cancel())
        .unwrap();
    lease(store, second.id, "a");
    let active = store.active_jobs().unwrap();
    let got: Vec<_> = active
        .iter()
        .map(|j| (j.experiment, j.key.as_str(), j.state.name()))
        .collect();
    assert_eq!(
        got,
        [(second.id, "a", "leased"), (second.id, "b", "pending")]
    );
    // A later submission's jobs come after.
    let third = create(store, 3, &["0"]);
    let all = store.active_jobs().unwrap();
    let order: Vec<_> = all.iter().map(|j| (j.experiment, j.key.as_str())).collect();
    assert_eq!(order, [(second.id, "a"), (second.id, "b"), (third.id, "0")]);
}

fn job_counts_are_per_state_across_experiments(store: &dyn Store) {
    assert!(store.job_counts().unwrap().is_empty());
    let first = create(store, 1, &["a", "b", "c", "d"]);
    let second = create(store, 2, &["a", "b"]);
    lease(store, first.id, "a");
    store.commit_result(first.id, "a", 1, "w", 1, "{}").unwrap();
    lease(store, first.id, "b");
    lease(store, second.id, "a");
    let c = store.job(first.id, "c").unwrap();
    store
        .update_job(first.id, "c", c.version, c.state.cancel())
        .unwrap();
    let counts = store.job_counts().unwrap();
    let expected = [
        ("cancelled", 1),
        ("leased", 2),
        ("pending", 2),
        ("succeeded", 1),
    ];
    let got: Vec<(&str, i64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(got, expected);
    // The counts agree with the jobs themselves.
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let jobs = store.jobs(first.id).unwrap().len() + store.jobs(second.id).unwrap().len();
    assert_eq!(total, jobs as i64);
}
