//! [`Store`] in one SQLite file.
//!
//! WAL journal with `synchronous=FULL`: every write is one transaction,
//! committed (and fsynced) before the call returns, and a crash at any point
//! leaves the file consistent at the last commit. Job states are stored as the
//! JSON of [`JobState`] next to its name (for finding active jobs). Errors
//! name the database file.
//!
//! The connection sits behind a mutex: calls from several threads are
//! serialized. Async callers use `tokio::task::spawn_blocking`.

use super::{
    completed_state, duplicate_key, ExperimentId, ExperimentRecord, JobRecord, NewJob, Store,
    StoreError,
};
use crate::state::JobState;
use rusqlite::{params, Connection, OptionalExtension, Params, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

mod rows;
mod schema;
#[cfg(test)]
mod tests;

use rows::{EXPERIMENT_COLUMNS, EXPERIMENT_HEAD_COLUMNS, JOB_COLUMNS};

/// Turns a rusqlite error into [`StoreError::Db`] naming the database.
pub(crate) trait DbResult<T> {
    fn db(self, path: &str) -> Result<T, StoreError>;
}

impl<T> DbResult<T> for Result<T, rusqlite::Error> {
    fn db(self, path: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Db {
            path: path.to_string(),
            message: e.to_string(),
        })
    }
}

/// [`Store`] in an SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// `path` for error messages.
    label: String,
}

impl SqliteStore {
    /// Open (creating it and its parent directories if needed) and migrate
    /// the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let label = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Db {
                path: label.clone(),
                message: format!("creating directory {}: {e}", parent.display()),
            })?;
        }
        let mut conn = Connection::open(path).db(&label)?;
        schema::configure(&conn, &label)?;
        schema::migrate(&mut conn, &label)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            label,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA integrity_check`: "ok" for a sound file, else the
    /// problems found, one a line.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("PRAGMA integrity_check").db(&self.label)?;
        let lines = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .db(&self.label)?
            .collect::<Result<Vec<_>, _>>()
            .db(&self.label)?;
        Ok(lines.join("\n"))
    }

    /// The connection, also after a panic in another thread (an open
    /// transaction rolls back when dropped, so nothing half-written stays).
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` in a read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().db(&self.label)?;
        f(&tx)
    }

    /// Run `f` in a write transaction, committed when `f` succeeds and
    /// rolled back when it fails.
    /// The experiment's summary, within `tx`.
    fn write_summary(
        &self,
        tx: &Transaction,
        id: ExperimentId,
        summary_json: &str,
    ) -> Result<(), StoreError> {
        let n = tx
            .execute(
                "UPDATE experiments SET summary_json = ?1 WHERE id = ?2",
                params![summary_json, id.to_string()],
            )
            .db(&self.label)?;
        if n == 0 {
            return Err(StoreError::NoExperiment(id));
        }
        Ok(())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db(&self.label)?;
        let out = f(&tx)?;
        tx.commit().db(&self.label)?;
        Ok(out)
    }

    /// Every experiment a query returns.
    fn query_experiments(
        &self,
        tx: &Transaction,
        sql: &str,
        p: impl Params,
    ) -> Result<Vec<ExperimentRecord>, StoreError> {
        let mut stmt = tx.prepare_cached(sql).db(&self.label)?;
        let mut rows = stmt.query(p).db(&self.label)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().db(&self.label)? {
            out.push(rows::experiment(row, &self.label)?);
        }
        Ok(out)
    }

    /// Every job a query returns.
    fn query_jobs(
        &self,
        tx: &Transaction,
        sql: &str,
        p: impl Params,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = tx.prepare_cached(sql).db(&self.label)?;
        let mut rows = stmt.query(p).db(&self.label)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().db(&self.label)? {
            out.push(rows::job(row, &self.label)?);
        }
        Ok(out)
    }

    fn get_experiment(
        &self,
        tx: &Transaction,
        id: ExperimentId,
    ) -> Result<ExperimentRecord, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE id = ?1");
        self.query_experiments(tx, &sql, [id.to_string()])?
            .pop()
            .ok_or(StoreError::NoExperiment(id))
    }

    fn experiment_exists(&self, tx: &Transaction, id: ExperimentId) -> Result<bool, StoreError> {
        tx.query_row(
            "SELECT 1 FROM experiments WHERE id = ?1",
            [id.to_string()],
            |_| Ok(()),
        )
        .optional()
        .db(&self.label)
        .map(|found| found.is_some())
    }

    /// The job, or why there is none.
    fn get_job(
        &self,
        tx: &Transaction,
        id: ExperimentId,
        key: &str,
    ) -> Result<JobRecord, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE experiment = ?1 AND key = ?2");
        if let Some(job) = self
            .query_jobs(tx, &sql, params![id.to_string(), key])?
            .pop()
        {
            return Ok(job);
        }
        if self.experiment_exists(tx, id)? {
            Err(StoreError::NoJob {
                experiment: id,
                key: key.to_string(),
            })
        } else {
            Err(StoreError::NoExperiment(id))
        }
    }

    /// Write a job's new state, bumping its version.
    fn put_state(
        &self,
        tx: &Transaction,
        job: &JobRecord,
        state: &JobState,
    ) -> Result<(), StoreError> {
        let json = state_json(state, &self.label)?;
        tx.prepare_cached(
            "UPDATE jobs SET state = ?1, state_json = ?2, version = version + 1 \
             WHERE experiment = ?3 AND key = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                state.name(),
                json,
                job.experiment.to_string(),
                job.key
            ])
        })
        .db(&self.label)?;
        Ok(())
    }

    /// The earlier submission `e` repeats, if any.
    fn existing(
        &self,
        tx: &Transaction,
        e: &ExperimentRecord,
    ) -> Result<Option<ExperimentRecord>, StoreError> {
        if let Some(request_id) = &e.request_id {
            let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE request_id = ?1");
            if let Some(found) = self.query_experiments(tx, &sql, [request_id])?.pop() {
                return Ok(Some(found));
            }
        }
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments \
             WHERE spec_sha256 = ?1 AND dataset_sha256 = ?2 ORDER BY seq LIMIT 1"
        );
        Ok(self
            .query_experiments(tx, &sql, [&e.spec_sha256, &e.dataset_sha256])?
            .pop())
    }
}

/// The JSON form of a state (serializing a `JobState` cannot fail, but the
/// error is reported rather than unwrapped).
fn state_json(state: &JobState, path: &str) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::Db {
        path: path.to_string(),
        message: format!("encoding job state: {e}"),
    })
}

impl Store for SqliteStore {
    fn create_experiment(
        &self,
        mut e: ExperimentRecord,
        jobs: Vec<NewJob>,
    ) -> Result<(ExperimentRecord, bool), StoreError> {
        self.write(|tx| {
            if let Some(existing) = self.existing(tx, &e)? {
                return Ok((existing, false));
            }
            if self.experiment_exists(tx, e.id)? {
                return Err(StoreError::DuplicateExperiment(e.id));
            }
            if let Some(key) = duplicate_key(&jobs) {
                return Err(StoreError::DuplicateJob {
                    experiment: e.id,
                    key: key.to_string(),
                });
            }
            e.seq = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM experiments", [], |r| r.get(0))
                .db(&self.label)?;
            tx.execute(
                "INSERT INTO experiments (id, seq, name, request_id, spec_sha256, dataset_sha256, \
                 plan_sha256, spec_toml, plan_json, manifest_path, submitted_ms, cancelled, summary_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    e.id.to_string(),
                    e.seq,
                    e.name,
                    e.request_id,
                    e.spec_sha256,
                    e.dataset_sha256,
                    e.plan_sha256,
                    e.spec_toml,
                    e.plan_json,
                    e.manifest_path,
                    e.submitted_ms,
                    e.cancelled,
                    e.summary_json,
                ],
            )
            .db(&self.label)?;
            let state = JobState::new();
            let json = state_json(&state, &self.label)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO jobs (experiment, key, task, round, state, state_json, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                )
                .db(&self.label)?;
            for j in &jobs {
                insert
                    .execute(params![e.id.to_string(), j.key, j.task, j.round, state.name(), json])
                    .db(&self.label)?;
            }
            Ok((e, true))
        })
    }

    fn experiment(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError> {
        self.read(|tx| self.get_experiment(tx, id))
    }

    fn experiment_head(&self, id: ExperimentId) -> Result<ExperimentRecord, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_HEAD_COLUMNS} FROM experiments WHERE id = ?1");
        self.read(|tx| {
            self.query_experiments(tx, &sql, [id.to_string()])?
                .pop()
                .ok_or(StoreError::NoExperiment(id))
        })
    }

    fn experiment_heads(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_HEAD_COLUMNS} FROM experiments ORDER BY seq");
        self.read(|tx| self.query_experiments(tx, &sql, []))
    }

    fn jobs(&self, id: ExperimentId) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE experiment = ?1 ORDER BY task, round, key"
        );
        self.read(|tx| {
            if !self.experiment_exists(tx, id)? {
                return Err(StoreError::NoExperiment(id));
            }
            self.query_jobs(tx, &sql, [id.to_string()])
        })
    }

    fn job(&self, id: ExperimentId, key: &str) -> Result<JobRecord, StoreError> {
        self.read(|tx| self.get_job(tx, id, key))
    }

    fn update_job(
        &self,
        id: ExperimentId,
        key: &str,
        expected_version: i64,
        state: JobState,
    ) -> Result<JobRecord, StoreError> {
        self.write(|tx| {
            let mut job = self.get_job(tx, id, key)?;
            if job.version != expected_version {
                return Err(StoreError::Conflict {
                    experiment: id,
                    key: key.to_string(),
                    expected: expected_version,
                    found: job.version,
                });
            }
            self.put_state(tx, &job, &state)?;
            job.state = state;
            job.version += 1;
            Ok(job)
        })
    }

    fn commit_result(
        &self,
        id: ExperimentId,
        key: &str,
        attempt: u32,
        worker_id: &str,
        now_ms: i64,
        result_json: &str,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let job = self.get_job(tx, id, key)?;
            let Some(done) = completed_state(&job.state, id, key, attempt, worker_id, now_ms)?
            else {
                return Ok(false);
            };
            self.put_state(tx, &job, &done)?;
            tx.execute(
                "INSERT INTO results (experiment, key, attempt, result_json, committed_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id.to_string(), key, attempt, result_json, now_ms],
            )
            .db(&self.label)?;
            Ok(true)
        })
    }

    fn results(&self, id: ExperimentId) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|tx| {
            if !self.experiment_exists(tx, id)? {
                return Err(StoreError::NoExperiment(id));
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, result_json FROM results WHERE experiment = ?1 ORDER BY key",
                )
                .db(&self.label)?;
            let rows = stmt
                .query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                .db(&self.label)?;
            rows.map(|r| {
                r.map_err(|e| StoreError::Corrupt {
                    path: self.label.clone(),
                    row: format!("results experiment={id}"),
                    message: e.to_string(),
                })
            })
            .collect()
        })
    }

    fn cancel(&self, id: ExperimentId) -> Result<Option<u32>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE experiment = ?1 ORDER BY key");
        self.write(|tx| {
            let was_cancelled: bool = tx
                .query_row(
                    "SELECT cancelled FROM experiments WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .db(&self.label)?
                .ok_or(StoreError::NoExperiment(id))?;
            let jobs = self.query_jobs(tx, &sql, [id.to_string()])?;
            if !was_cancelled && jobs.iter().all(|j| j.state.is_terminal()) {
                return Ok(None);
            }
            let mut leased = 0;
            for job in jobs.iter().filter(|j| !j.state.is_terminal()) {
                if matches!(job.state, JobState::Leased(_)) {
                    leased += 1;
                }
                self.put_state(tx, job, &job.state.cancel())?;
            }
            tx.execute(
                "UPDATE experiments SET cancelled = 1 WHERE id = ?1",
                [id.to_string()],
            )
            .db(&self.label)?;
            Ok(Some(leased))
        })
    }

    fn resume(&self, id: ExperimentId) -> Result<u32, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE experiment = ?1 ORDER BY key");
        self.write(|tx| {
            let was_cancelled: bool = tx
                .query_row(
                    "SELECT cancelled FROM experiments WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .db(&self.label)?
                .ok_or(StoreError::NoExperiment(id))?;
            let mut resumed = 0;
            for job in self.query_jobs(tx, &sql, [id.to_string()])? {
                if matches!(job.state, JobState::Cancelled(_) | JobState::Failed(_)) {
                    self.put_state(tx, &job, &job.state.resume())?;
                    resumed += 1;
                }
            }
            if was_cancelled || resumed > 0 {
                tx.execute(
                    "UPDATE experiments SET cancelled = 0, summary_json = NULL WHERE id = ?1",
                    [id.to_string()],
                )
                .db(&self.label)?;
            }
            Ok(resumed)
        })
    }

    fn set_summary(&self, id: ExperimentId, summary_json: &str) -> Result<(), StoreError> {
        self.write(|tx| self.write_summary(tx, id, summary_json))
    }

    fn set_summary_if_unchanged(
        &self,
        id: ExperimentId,
        summary_json: &str,
        jobs_read: &[JobRecord],
    ) -> Result<bool, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE experiment = ?1 ORDER BY key");
        self.write(|tx| {
            let jobs = self.query_jobs(tx, &sql, [id.to_string()])?;
            if !super::finished_as_read(jobs.iter(), jobs_read) {
                return Ok(false);
            }
            self.write_summary(tx, id, summary_json).map(|()| true)
        })
    }

    fn active_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let columns = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("j.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM jobs j JOIN experiments e ON e.id = j.experiment \
             WHERE j.state IN ('pending', 'leased') ORDER BY e.seq, j.key"
        );
        self.read(|tx| self.query_jobs(tx, &sql, []))
    }

    fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
                .db(&self.label)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .db(&self.label)?;
            rows.collect::<Result<Vec<_>, _>>().db(&self.label)
        })
    }
}
