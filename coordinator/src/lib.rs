//! crossfold's coordinator.
//!
//! - [`jobs`]: an experiment (spec + split plan) as the list of jobs to run,
//!   one per task round.
//! - [`state`]: the job state machine (pending, leased, succeeded, failed,
//!   cancelled) with leases, fencing by attempt number, retries and backoff.
//! - [`store`]: durable experiments, job states and results ([`store::Store`]),
//!   in SQLite ([`store::SqliteStore`]) or in memory for tests.
//! - [`scheduler`]: which ready job a free worker slot gets.
//! - [`aggregate`]: per-task statistics once the results are in.
//! - [`service`]: the gRPC services (Experiments, Workers, Data) over one
//!   shared state; [`error`]: their one error type and its gRPC codes.
//! - [`server`]: serving it all, with health, keepalive and the lease reaper.
//! - [`auth`]: bearer tokens with scopes, checked per method.
//! - [`metrics`]: Prometheus metrics, and a layer counting gRPC calls.
//! - [`config`]: the settings.

pub mod aggregate;
pub mod auth;
pub mod columns;
pub mod config;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
