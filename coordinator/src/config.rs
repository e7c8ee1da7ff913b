//! Coordinator settings.

use crate::auth::Tokens;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// A leased job with no progress for this long is failed (retryable):
    /// before training, a file fetched or hashed or an image decoded; then
    /// a training step.
    pub stall_timeout: Duration,
    /// A leased job running longer than this is failed (not retried).
    pub job_time_limit: Duration,
    /// After a restart, leased jobs get this long for their workers to report.
    pub restart_grace: Duration,
    /// At start, give every leased job back to the queue at once (not counted
    /// as an attempt) instead of waiting `restart_grace` for its worker: for
    /// a coordinator whose workers cannot outlive it (`crossfold run`'s,
    /// which listens on a new port each time).
    pub release_leases_on_start: bool,
    /// Most jobs one experiment may have.
    pub max_jobs_per_experiment: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// TLS (and mutual TLS with a client CA); plaintext when `None`.
    pub tls: Option<ServerTls>,
    /// Bearer tokens with scopes; every call is allowed when `None`.
    pub tokens: Option<Arc<Tokens>>,
}

/// The coordinator's certificate and key, and the CA that client
/// certificates must be signed by (mutual TLS), all PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl ServerTls {
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        // A client that opens a connection and never finishes its handshake
        // is dropped instead of holding a task for ever.
        let mut cfg = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(TLS_HANDSHAKE_LIMIT);
        if let Some(ca) = &self.client_ca_pem {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        cfg
    }
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
            release_leases_on_start: false,
            max_jobs_per_experiment: 10_000,
            max_message_bytes: 16 * 1024 * 1024,
            tls: None,
            tokens: None,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
