//! Connection settings and schema migrations of the SQLite store.
//!
//! The schema version is SQLite's `PRAGMA user_version`: 0 for a new file,
//! then the number of migrations applied. Each migration runs in its own
//! transaction together with the version bump, so a crash leaves the file at
//! one version or the next, never in between.

use super::DbResult;
use crate::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::time::Duration;

/// How long a write waits for another connection's lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema version 1.
const V1: &str = "
CREATE TABLE experiments (
    id TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    request_id TEXT UNIQUE,
    spec_sha256 TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL,
    plan_sha256 TEXT NOT NULL,
    spec_toml TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    manifest_path TEXT NOT NULL,
    submitted_ms INTEGER NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0,
    summary_json TEXT
);
CREATE INDEX experiments_fingerprint ON experiments (spec_sha256, dataset_sha256);

CREATE TABLE jobs (
    experiment TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    round INTEGER NOT NULL,
    -- JobState::name() of state_json, for finding active jobs
    state TEXT NOT NULL,
    state_json TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (experiment, key)
) WITHOUT ROWID;
CREATE INDEX jobs_state ON jobs (state);

CREATE TABLE results (
    experiment TEXT NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    result_json TEXT NOT NULL,
    committed_ms INTEGER NOT NULL,
    PRIMARY KEY (experiment, key),
    FOREIGN KEY (experiment, key) REFERENCES jobs (experiment, key) ON DELETE CASCADE
) WITHOUT ROWID;
";

/// Every migration, in order: migration i takes the schema from version i to
/// version i + 1.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this code writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// WAL journal, full fsync on commit, foreign keys, busy timeout.
pub(super) fn configure(conn: &Connection, path: &str) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).db(path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .db(path)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Db {
            path: path.to_string(),
            message: format!("could not switch to WAL journal mode (got {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL").db(path)?;
    conn.pragma_update(None, "foreign_keys", "ON").db(path)?;
    Ok(())
}

/// The file's schema version.
pub(super) fn version(conn: &Connection, path: &str) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .db(path)
}

/// Bring the schema up to [`SCHEMA_VERSION`]; refuse a file written by a
/// newer coordinator.
pub(super) fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db(path)?;
        let current = version(&tx, path)?;
        if !(0..=SCHEMA_VERSION).contains(&current) {
            return Err(StoreError::Db {
                path: path.to_string(),
                message: format!(
                    "schema version {current} is not one this coordinator knows (0..={SCHEMA_VERSION}): \
                     written by a newer crossfold?"
                ),
            });
        }
        let Some(sql) = usize::try_from(current)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(sql).db(path)?;
        tx.pragma_update(None, "user_version", current + 1)
            .db(path)?;
        tx.commit().db(path)?;
    }
}
