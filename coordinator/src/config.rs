//! Coordinator settings.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// SQLite database file.
    pub db: PathBuf,
    /// Manifests must lie under one of these folders.
    pub data_roots: Vec<PathBuf>,
    /// A lease expires when its worker has not heartbeaten for this long.
    pub lease_ttl: Duration,
    /// How often workers are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// A leased job with no training progress for this long is failed (retryable).
    pub stall_timeout: Duration,
    /// A leased job running longer than this is failed (not retried).
    pub job_time_limit: Duration,
    /// After a restart, leased jobs get this long for their workers to report.
    pub restart_grace: Duration,
    /// Most jobs one experiment may have.
    pub max_jobs_per_experiment: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
}

impl Config {
    pub fn new(db: PathBuf, data_roots: Vec<PathBuf>) -> Config {
        Config {
            db,
            data_roots,
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30 * 60),
            job_time_limit: Duration::from_secs(24 * 3600),
            restart_grace: Duration::from_secs(60),
            max_jobs_per_experiment: 10_000,
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
