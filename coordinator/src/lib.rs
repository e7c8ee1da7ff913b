//! crossfold's coordinator.
//!
//! - [`jobs`]: an experiment (spec + split plan) as the list of jobs to run,
//!   one per task round.
//! - [`state`]: the job state machine (pending, leased, succeeded, failed,
//!   cancelled) with leases, fencing by attempt number, retries and backoff.
//! - [`store`]: durable experiments, job states and results ([`store::Store`]),
//!   in SQLite ([`store::SqliteStore`]) or in memory for tests.
//!
//! The gRPC service and the scheduler build on these (see the runtime issue).

pub mod jobs;
pub mod state;
pub mod store;
