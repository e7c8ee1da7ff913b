//! Decoding rows of the SQLite store. Nothing read from the file is trusted:
//! a value of the wrong type or that does not parse is
//! [`StoreError::Corrupt`], naming the row.

use crate::state::JobState;
use crate::store::{ExperimentId, ExperimentRecord, JobRecord, StoreError};
use rusqlite::types::FromSql;
use rusqlite::Row;

/// The experiments columns that [`experiment`] reads, in order.
pub(super) const EXPERIMENT_COLUMNS: &str = "id, name, request_id, spec_sha256, dataset_sha256, \
     plan_sha256, spec_toml, plan_json, manifest_path, submitted_ms, seq, cancelled, summary_json";

/// [`EXPERIMENT_COLUMNS`] with an empty split plan and an empty summary
/// where there is one (see `Store::experiment_head`), read the same way.
pub(super) const EXPERIMENT_HEAD_COLUMNS: &str = "id, name, request_id, spec_sha256, \
     dataset_sha256, plan_sha256, spec_toml, '' AS plan_json, manifest_path, submitted_ms, seq, \
     cancelled, CASE WHEN summary_json IS NULL THEN NULL ELSE '' END AS summary_json";

/// The jobs columns that [`job`] reads, in order.
pub(super) const JOB_COLUMNS: &str = "experiment, key, task, round, state, state_json, version";

/// One row being decoded: where it is, for error messages.
struct RowRef<'a, 'r> {
    row: &'a Row<'r>,
    path: &'a str,
    name: String,
}

impl RowRef<'_, '_> {
    fn corrupt(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_string(),
            row: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn get<T: FromSql>(&self, idx: usize, column: &str) -> Result<T, StoreError> {
        self.row
            .get(idx)
            .map_err(|e| self.corrupt(format_args!("column {column}: {e}")))
    }
}

/// Parse a stored experiment id.
pub(super) fn parse_id(text: &str, path: &str, row: &str) -> Result<ExperimentId, StoreError> {
    ExperimentId::parse_str(text).map_err(|e| StoreError::Corrupt {
        path: path.to_string(),
        row: row.to_string(),
        message: format!("experiment id {text:?}: {e}"),
    })
}

/// A row of [`EXPERIMENT_COLUMNS`].
pub(super) fn experiment(row: &Row<'_>, path: &str) -> Result<ExperimentRecord, StoreError> {
    let mut r = RowRef {
        row,
        path,
        name: "experiments (unreadable id)".to_string(),
    };
    let id_text: String = r.get(0, "id")?;
    r.name = format!("experiments id={id_text}");
    Ok(ExperimentRecord {
        id: parse_id(&id_text, path, &r.name)?,
        name: r.get(1, "name")?,
        request_id: r.get(2, "request_id")?,
        spec_sha256: r.get(3, "spec_sha256")?,
        dataset_sha256: r.get(4, "dataset_sha256")?,
        plan_sha256: r.get(5, "plan_sha256")?,
        spec_toml: r.get(6, "spec_toml")?,
        plan_json: r.get(7, "plan_json")?,
        manifest_path: r.get(8, "manifest_path")?,
        submitted_ms: r.get(9, "submitted_ms")?,
        seq: r.get(10, "seq")?,
        cancelled: r.get::<i64>(11, "cancelled")? != 0,
        summary_json: r.get(12, "summary_json")?,
    })
}

/// A row of [`JOB_COLUMNS`].
pub(super) fn job(row: &Row<'_>, path: &str) -> Result<JobRecord, StoreError> {
    let mut r = RowRef {
        row,
        path,
        name: "jobs (unreadable key)".to_string(),
    };
    let experiment_text: String = r.get(0, "experiment")?;
    let key: String = r.get(1, "key")?;
    r.name = format!("jobs experiment={experiment_text} key={key}");
    let experiment = parse_id(&experiment_text, path, &r.name)?;
    let round: i64 = r.get(3, "round")?;
    let round = u32::try_from(round).map_err(|_| r.corrupt(format_args!("round {round}")))?;
    let state_name: String = r.get(4, "state")?;
    let state_json: String = r.get(5, "state_json")?;
    let state: JobState = serde_json::from_str(&state_json)
        .map_err(|e| r.corrupt(format_args!("state_json {state_json:?}: {e}")))?;
    if state.name() != state_name {
        return Err(r.corrupt(format_args!(
            "state column {state_name:?} disagrees with state_json ({})",
            state.name()
        )));
    }
    Ok(JobRecord {
        experiment,
        key,
        task: r.get(2, "task")?,
        round,
        state,
        version: r.get(6, "version")?,
    })
}
