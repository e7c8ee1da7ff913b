//! crossfold's coordinator.
//!
//! - [`jobs`]: an experiment (spec + split plan) as the list of jobs to run,
//!   one per task round.
//!
//! The gRPC service, the job state machine, the store and the scheduler build
//! on these (see the runtime issue).

pub mod jobs;
