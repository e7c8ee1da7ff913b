//! `crossfold coordinator`: serve experiments to workers.

use anyhow::{Context, Result};
use clap::Args;
use crossfold_coordinator::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
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
        c.max_jobs_per_experiment = self.max_jobs;
        for r in &c.data_roots {
            anyhow::ensure!(r.is_dir(), "--data-root {}: not a folder", r.display());
        }
        Ok(c)
    }
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let config = a.config()?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", a.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "crossfold coordinator listening on http://{addr} (db {})",
        a.db.display()
    );
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    crossfold_coordinator::server::serve(config, listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
