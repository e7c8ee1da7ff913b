//! Tests of the SQLite store beyond the shared suite: durability across
//! reopening, integrity after a killed writer, settings, migrations, errors.

use super::*;
use crate::store::tests::{experiment, jobs};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("coordinator.db")).unwrap()
}

/// Create experiment `n` with jobs a and b, lease a and commit its result.
fn create_and_finish_a(store: &SqliteStore, n: u32) -> ExperimentRecord {
    let (e, created) = store
        .create_experiment(experiment(n), jobs(&["a", "b"]))
        .unwrap();
    assert!(created);
    let job = store.job(e.id, "a").unwrap();
    let leased = job.state.lease("w", 0, 60_000).unwrap();
    store.update_job(e.id, "a", job.version, leased).unwrap();
    assert!(store
        .commit_result(e.id, "a", 1, "w", 5, &format!("{{\"n\":{n}}}"))
        .unwrap());
    e
}

#[test]
fn everything_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let e = create_and_finish_a(&store, 1);
    store.set_summary(e.id, "{\"auc\":0.5}").unwrap();
    let (off, _) = store
        .create_experiment(experiment(3), jobs(&["x"]))
        .unwrap();
    assert_eq!(store.cancel(off.id).unwrap(), Some(0));
    let before = (
        store.experiment_heads().unwrap(),
        store.experiment(e.id).unwrap(),
        store.jobs(e.id).unwrap(),
        store.results(e.id).unwrap(),
        store.active_jobs().unwrap(),
    );
    drop(store);
    let store = open(&dir);
    let after = (
        store.experiment_heads().unwrap(),
        store.experiment(e.id).unwrap(),
        store.jobs(e.id).unwrap(),
        store.results(e.id).unwrap(),
        store.active_jobs().unwrap(),
    );
    assert_eq!(after, before);
    assert!(!after.0[0].cancelled && after.0[1].cancelled);
    assert_eq!(after.1.summary_json.as_deref(), Some("{\"auc\":0.5}"));
    assert_eq!(after.2[0].state.name(), "succeeded");
    assert_eq!(keys_of(&after.4), ["b"]);
    assert_eq!(store.job(off.id, "x").unwrap().state.name(), "cancelled");
    // Submission order goes on after a restart.
    let (next, _) = store
        .create_experiment(experiment(2), jobs(&["a"]))
        .unwrap();
    assert_eq!(next.seq, 3);
    // The idempotency check sees the old submission.
    assert!(!store.create_experiment(experiment(1), vec![]).unwrap().1);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

fn keys_of(jobs: &[JobRecord]) -> Vec<&str> {
    jobs.iter().map(|j| j.key.as_str()).collect()
}

#[test]
fn settings_are_wal_full_sync_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let conn = store.lock();
    let get = |pragma: &str| -> String {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| format!("{v:?}"))
        .unwrap()
    };
    assert_eq!(get("journal_mode"), "Text(\"wal\")");
    assert_eq!(get("synchronous"), "Integer(2)");
    assert_eq!(get("foreign_keys"), "Integer(1)");
    assert_eq!(
        get("user_version"),
        format!("Integer({})", schema::SCHEMA_VERSION)
    );
}

#[test]
fn creates_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/deeper/coordinator.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert!(path.is_file());
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn a_directory_is_a_db_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    let shown = dir.path().display().to_string();
    match &err {
        StoreError::Db { path, .. } => assert_eq!(path, &shown),
        other => panic!("expected a Db error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!("database {shown}: ")),
        "{err}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join("coordinator.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_corrupt_row_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (e, _) = store
        .create_experiment(experiment(1), jobs(&["a", "b"]))
        .unwrap();
    store
        .lock()
        .execute(
            "UPDATE jobs SET state_json = '{\"state\":\"nope\"}' WHERE key = 'a'",
            [],
        )
        .unwrap();
    store
        .lock()
        .execute("UPDATE jobs SET state = 'leased' WHERE key = 'b'", [])
        .unwrap();
    for (key, problem) in [("a", "state_json"), ("b", "disagrees")] {
        let err = store.job(e.id, key).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
        assert!(text.contains(&format!("key={key}")), "{text}");
        assert!(text.contains(problem), "{text}");
        assert!(text.contains("coordinator.db"), "{text}");
    }
    store
        .lock()
        .execute("UPDATE experiments SET seq = 'x'", [])
        .unwrap();
    let err = store.experiment_heads().unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("experiments id={}", e.id)),
        "{err}"
    );
}

#[test]
fn two_handles_on_one_file_see_each_other_and_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (open(&dir), open(&dir));
    let (e, _) = one.create_experiment(experiment(1), jobs(&["a"])).unwrap();
    let job = two.job(e.id, "a").unwrap();
    let state = job.state.lease("w", 0, 1).unwrap();
    one.update_job(e.id, "a", job.version, state.clone())
        .unwrap();
    assert!(matches!(
        two.update_job(e.id, "a", job.version, state),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(two.job(e.id, "a").unwrap().version, 1);
}

/// Set in the child process that [`crash_writer_child`] runs in.
const CRASH_ENV: &str = "CROSSFOLD_STORE_CRASH_WRITER_DB";

/// Not a test on its own: the writer loop that
/// [`a_killed_writer_leaves_a_sound_file_with_every_commit`] runs in a child
/// process (this test binary, filtered to this test) and kills. Does nothing
/// without the environment variable.
#[test]
fn crash_writer_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path)).unwrap();
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for n in 0..100_000 {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        let e = create_and_finish_a(&store, n);
        writeln!(out, "COMMITTED {}", e.id).unwrap();
        out.flush().unwrap();
    }
}

#[cfg(unix)]
#[test]
fn a_killed_writer_leaves_a_sound_file_with_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::sqlite::tests::crash_writer_child"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut committed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("COMMITTED ") {
            committed.push(ExperimentId::parse_str(id).unwrap());
            if committed.len() == 40 {
                break;
            }
        }
    }
    // SIGKILL, in the middle of the writer's next transactions.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(committed.len(), 40, "the writer stopped early");

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    for id in &committed {
        let jobs = store.jobs(*id).unwrap();
        assert_eq!(jobs[0].state.name(), "succeeded");
        assert_eq!(store.results(*id).unwrap().len(), 1);
    }
    // Every experiment in the file came with all its jobs (atomic create).
    let all = store.experiment_heads().unwrap();
    assert!(all.len() >= committed.len());
    for e in &all {
        assert_eq!(keys_of(&store.jobs(e.id).unwrap()), ["a", "b"]);
    }
}
