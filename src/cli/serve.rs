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
    /// Fail a job with no progress for this many seconds (retried): before
    /// training, no file fetched or hashed and no image decoded; then no
    /// training step.
    #[arg(long, default_value_t = 1800.0)]
    pub stall_timeout: f64,
    /// Fail a job running longer than this many seconds (not retried).
    #[arg(long, default_value_t = 86400.0)]
    pub job_time_limit: f64,
    /// Grace period in seconds for workers to report after a restart.
    #[arg(long, default_value_t = 60.0)]
    pub restart_grace: f64,
    /// Most jobs one experiment may have (a spec plans at most 10,000
    /// rounds, one job each).
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

/// The longest time setting taken: a year (larger values, meant as "no
/// limit", would overflow the millisecond clock arithmetic).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn secs(v: f64, flag: &str) -> Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v <= MAX_SECONDS,
        "--{flag} {v}: must be a positive number of seconds, at most {MAX_SECONDS} (a year)"
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
                cert_pem: {
                    let pem = read(cert, "tls-cert")?;
                    check_dates(&pem, cert, now_unix())?;
                    pem
                },
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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days before its end that a certificate is warned about.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The coordinator's certificate must be valid at `now` (Unix seconds):
/// every client would refuse one that expired or is not valid yet, and the
/// coordinator itself never sees those refusals. One that ends within
/// [`EXPIRY_WARNING_DAYS`] is warned about. A file that does not parse is
/// left to the TLS set-up, which names it.
fn check_dates(pem: &[u8], path: &Path, now: i64) -> Result<()> {
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem) else {
        return Ok(());
    };
    let Ok(cert) = block.parse_x509() else {
        return Ok(());
    };
    let v = cert.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    anyhow::ensure!(
        now <= to,
        "--tls-cert {}: the certificate expired on {} (clients refuse it); renew it",
        path.display(),
        v.not_after
    );
    anyhow::ensure!(
        now >= from,
        "--tls-cert {}: the certificate is not valid before {} (is this machine's clock right?)",
        path.display(),
        v.not_before
    );
    if to - now < EXPIRY_WARNING_DAYS * 86_400 {
        tracing::warn!(cert = %path.display(), expires = %v.not_after, "the coordinator's TLS certificate expires within {EXPIRY_WARNING_DAYS} days");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from `from` to `to` (y, m, d).
    fn cert(from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    #[test]
    fn time_settings_past_a_year_or_not_positive_are_refused_by_flag() {
        assert_eq!(secs(30.0, "lease-ttl").unwrap(), Duration::from_secs(30));
        assert!(secs(MAX_SECONDS, "job-time-limit").is_ok());
        for bad in [1e16, 1e20, f64::INFINITY, f64::NAN, 0.0, -5.0] {
            let err = secs(bad, "job-time-limit").unwrap_err().to_string();
            assert!(
                err.starts_with("--job-time-limit ") && err.contains("at most 31536000"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_expired_or_future_certificate_is_refused_by_name() {
        let path = Path::new("coordinator.pem");
        let pem = cert((2019, 1, 1), (2020, 1, 2));
        // 2026-11-27 00:00:00 UTC.
        let now = 1_795_737_600;
        let err = check_dates(&pem, path, now).unwrap_err().to_string();
        assert!(
            err.starts_with("--tls-cert coordinator.pem: the certificate expired on")
                && err.contains("2020"),
            "{err}"
        );
        let pem = cert((2030, 1, 1), (2031, 1, 1));
        let err = check_dates(&pem, path, now).unwrap_err().to_string();
        assert!(
            err.contains("not valid before") && err.contains("2030"),
            "{err}"
        );
        // Valid now (also when it ends soon: only a warning).
        assert!(check_dates(&cert((2026, 1, 1), (2027, 1, 1)), path, now).is_ok());
        assert!(check_dates(&cert((2026, 1, 1), (2026, 12, 1)), path, now).is_ok());
        // Not a certificate: left to the TLS set-up, which names the file.
        assert!(check_dates(b"not a pem", path, now).is_ok());
    }
}
