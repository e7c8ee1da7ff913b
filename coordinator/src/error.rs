//! The coordinator's one error type, mapped to gRPC status codes in one place.

use crate::state::TransitionError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Another coordinator holds the database's lock file.
    #[error("--db {}: another coordinator is using this database (it holds {}); stop it first", db.display(), lock.display())]
    DatabaseInUse {
        db: std::path::PathBuf,
        lock: std::path::PathBuf,
    },
    /// Its own message says what (the database file, the experiment).
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Transition(#[from] TransitionError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            CoordinatorError::InvalidArgument(_) => Status::invalid_argument(msg),
            CoordinatorError::NotFound(_) => Status::not_found(msg),
            CoordinatorError::FailedPrecondition(_)
            | CoordinatorError::Transition(_)
            | CoordinatorError::DatabaseInUse { .. } => Status::failed_precondition(msg),
            CoordinatorError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            CoordinatorError::PermissionDenied(_) => Status::permission_denied(msg),
            CoordinatorError::Store(StoreError::NoExperiment(_))
            | CoordinatorError::Store(StoreError::NoJob { .. }) => Status::not_found(msg),
            CoordinatorError::Store(StoreError::Conflict { .. }) => Status::aborted(msg),
            CoordinatorError::Store(_) | CoordinatorError::Internal(_) => Status::internal(msg),
        }
    }
}

/// Parse an experiment id from a request, as INVALID_ARGUMENT when malformed.
pub fn parse_id(s: &str) -> Result<uuid::Uuid, CoordinatorError> {
    uuid::Uuid::parse_str(s.trim()).map_err(|_| {
        // Cut short: the message travels in a response header.
        let shown: String = s.chars().take(80).collect();
        let more = if shown.len() < s.len() { "..." } else { "" };
        CoordinatorError::InvalidArgument(format!("experiment_id {shown:?}{more} is not a UUID"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_id_is_named_cut_short() {
        let err = parse_id("not-a-uuid").unwrap_err().to_string();
        assert!(
            err.contains("experiment_id \"not-a-uuid\" is not a UUID"),
            "{err}"
        );
        let long = "x".repeat(1 << 20);
        let err = parse_id(&long).unwrap_err().to_string();
        assert!(
            err.len() < 200 && err.contains("\"... is not a UUID"),
            "{err}"
        );
    }
}
