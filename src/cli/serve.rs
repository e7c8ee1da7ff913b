//! `crossfold coordinator`: serve experiments to workers.

use anyhow::{Context, Result};
use clap::Args;
use crossfold_coordinator::auth::Tokens;
use crossfold_coordinator::config::{Config, ServerTls};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// SQLite database (created when missing).
    #[arg(long, default_value = "crossfold-data/coordinator.db")]
    pub db: PathBuf,
    /// Folder that manifests must lie under (repeatable).
    #[arg(long = "data-root", required = true)]
    pub data_roots: Vec<PathBuf>,
    /// Lease time-to-live in seconds (a worker silent this long loses its job).
    #[arg(long, default_value_t = 30.0)]
    pub lease_ttl: f64,
    /// Heartbeat interval workers are told to use, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat_interval: f64,
    /// Fail a job with no training progress for this many seconds (retried).
    #[arg(long, default_value_t = 1800.0)]
    pub stall_timeout: f64,
    /// Fail a job running longer than this many seconds (not retried).
    #[arg(long, default_value_t = 86400.0)]
    pub job_time_limit: f64,
    /// Grace period in seconds for workers to report after a restart.
    #[arg(long, default_value_t = 60.0)]
    pub restart_grace: f64,
    /// Most jobs one experiment may have.
    #[arg(long, default_value_t = 10_000)]
    pub max_jobs: usize,
    /// The coordinator's TLS certificate (PEM; with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by this CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext (no TLS): only on a trusted network; logged as a warning.
    #[arg(long, conflicts_with_all = ["tls_cert", "client_ca"])]
    pub insecure: bool,
    /// Bearer tokens: lines of `<scope> <token>`, scope worker, submit or read.
    #[arg(long, env = "CROSSFOLD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

/// Secrets should not be readable by other users of the machine.
fn warn_if_readable_by_others(path: &Path, flag: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "{flag}: readable by other users; `chmod 600` it"
            );
        }
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--{flag} {}: cannot read", path.display()))
}

fn secs(v: f64, flag: &str) -> Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "--{flag} {v}: must be a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config> {
        let mut c = Config::new(self.db.clone(), self.data_roots.clone());
        c.lease_ttl = secs(self.lease_ttl, "lease-ttl")?;
        c.heartbeat_interval = secs(self.heartbeat_interval, "heartbeat-interval")?;
        c.stall_timeout = secs(self.stall_timeout, "stall-timeout")?;
        c.job_time_limit = secs(self.job_time_limit, "job-time-limit")?;
        c.restart_grace = secs(self.restart_grace, "restart-grace")?;
        // A lease lives only as long as heartbeats renew it in time.
        anyhow::ensure!(
            self.lease_ttl >= 2.0 * self.heartbeat_interval,
            "--lease-ttl {} with --heartbeat-interval {}: the lease must last at least two \
             heartbeat intervals, or healthy workers lose their jobs",
            self.lease_ttl,
            self.heartbeat_interval
        );
        c.max_jobs_per_experiment = self.max_jobs;
        for r in &c.data_roots {
            anyhow::ensure!(r.is_dir(), "--data-root {}: not a folder", r.display());
        }
        c.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert_pem: read(cert, "tls-cert")?,
                key_pem: read(key, "tls-key")?,
                client_ca_pem: self
                    .client_ca
                    .as_deref()
                    .map(|p| read(p, "client-ca"))
                    .transpose()?,
            }),
            _ if self.insecure => None,
            _ => anyhow::bail!(
                "no TLS: give --tls-cert and --tls-key (and --client-ca for mutual TLS), \
                 or --insecure to serve plaintext on a trusted network"
            ),
        };
        if let Some(tls) = &c.tls {
            // Bad PEM files fail here, named, before the database is opened.
            tonic::transport::Server::builder()
                .tls_config(tls.server_config())
                .map_err(|e| {
                    let e = crossfold_proto::client::chain(&e);
                    anyhow::anyhow!(
                        "--tls-cert {} / --tls-key {}{}: {e}",
                        self.tls_cert.as_deref().unwrap_or(Path::new("")).display(),
                        self.tls_key.as_deref().unwrap_or(Path::new("")).display(),
                        self.client_ca
                            .as_deref()
                            .map(|p| format!(" / --client-ca {}", p.display()))
                            .unwrap_or_default()
                    )
                })?;
        }
        c.tokens = match &self.tokens_file {
            Some(p) => {
                warn_if_readable_by_others(p, "--tokens-file");
                Some(Arc::new(Tokens::load(p)?))
            }
            None => None,
        };
        if let Some(k) = &self.tls_key {
            warn_if_readable_by_others(k, "--tls-key");
        }
        Ok(c)
    }
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let config = a.config()?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", a.listen))?;
    let metrics = match &a.metrics_listen {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("--metrics-listen {m}: cannot bind"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if config.tls.is_none() {
        tracing::warn!("serving plaintext (--insecure): calls, tokens and data travel unencrypted");
    }
    match &config.tokens {
        None => tracing::warn!("no --tokens-file: every client may submit, read and lease jobs"),
        Some(t) => tracing::info!(tokens = t.len(), "bearer tokens required"),
    }
    tracing::info!(
        listen = %addr,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        metrics = %metrics
            .as_ref()
            .and_then(|m| m.local_addr().ok())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        db = %a.db.display(),
        "coordinator starting"
    );
    // The database is locked and opened before the coordinator says it is
    // listening: one in use or damaged is reported instead.
    let opened = crossfold_coordinator::server::OpenedDatabase::open(&config.db).await?;
    eprintln!(
        "crossfold coordinator listening on {scheme}://{addr} (db {})",
        a.db.display()
    );
    if let Some(m) = &metrics {
        eprintln!("metrics at http://{}/metrics", m.local_addr()?);
    }
    let shutdown = async {
        let sig = super::signal::shutdown().await;
        tracing::info!(
            signal = sig,
            "shutting down: no new calls; waiting for calls in flight"
        );
    };
    opened.serve(config, listener, metrics, shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
