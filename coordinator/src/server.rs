//! Serving the coordinator: the three services, gRPC health and reflection,
//! TLS (and mutual TLS), bearer tokens, keepalive, message limits, the lease
//! reaper, Prometheus metrics over HTTP, and graceful shutdown (stop
//! accepting, let calls in flight finish, stop the reaper; SQLite commits
//! every change as it happens, so nothing is left to flush).

use crate::auth::AuthLayer;
use crate::config::Config;
use crate::error::CoordinatorError;
use crate::metrics::GrpcMetricsLayer;
use crate::service::{Coordinator, DataService, ExperimentsService, WorkersService};
use crate::store::{SqliteStore, Store};
use crossfold_proto::v1::{
    data_server::DataServer, experiments_server::ExperimentsServer, workers_server::WorkersServer,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The largest Experiments answer (results) sent; the CLI reads up to this.
const RESULTS_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Open the store named in `config` and serve gRPC on `listener` (and the
/// metrics on `metrics`, when given) until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let opened = OpenedDatabase::open(&config.db).await?;
    opened.serve(config, listener, metrics, shutdown).await
}

/// A coordinator's database, locked and opened: opening it first lets a
/// caller report a database in use (or not a database) before it says it
/// is listening or starts anything else.
pub struct OpenedDatabase {
    store: Arc<dyn Store>,
    /// Held until the coordinator stops; see [`lock_database`].
    _lock: std::fs::File,
}

impl OpenedDatabase {
    pub async fn open(db: &std::path::Path) -> Result<OpenedDatabase, CoordinatorError> {
        let lock = lock_database(db)?;
        let db = db.to_path_buf();
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || SqliteStore::open(&db))
                .await
                .map_err(|e| CoordinatorError::Internal(e.to_string()))??,
        );
        Ok(OpenedDatabase { store, _lock: lock })
    }

    /// [`serve_with_store`] on this database, holding its lock throughout.
    pub async fn serve(
        self,
        config: Config,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CoordinatorError> {
        let OpenedDatabase { store, _lock } = self;
        let served = serve_with_store(config, store, listener, metrics, shutdown).await;
        drop(_lock);
        served
    }
}

/// One coordinator per database: a second one would run the same jobs and
/// move the first one's lease deadlines. Held (as `DB.lock`, beside the
/// database) until the returned file is dropped; the operating system
/// releases it when the process ends, however it ends.
fn lock_database(db: &std::path::Path) -> Result<std::fs::File, CoordinatorError> {
    let path = std::path::PathBuf::from(format!("{}.lock", db.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            CoordinatorError::FailedPrecondition(format!(
                "--db {}: cannot open its lock file {}: {e}",
                db.display(),
                path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CoordinatorError::DatabaseInUse {
            db: db.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(CoordinatorError::FailedPrecondition(format!(
            "--db {}: cannot lock {}: {e}",
            db.display(),
            path.display()
        ))),
    }
}

pub async fn serve_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let max = config.max_message_bytes;
    let tls = config.tls.clone();
    let tokens = config.tokens.clone();
    let coordinator = Coordinator::new(store, config);
    let recovered = crate::service::workers::recover(&coordinator).await?;
    if recovered > 0 {
        tracing::info!(
            leases = recovered,
            "restarted: leased jobs get a grace period for their workers"
        );
    }
    let reaper = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Err(e) = crate::service::workers::reap(&c).await {
                    tracing::error!(error = %e, "reaper");
                }
            }
        })
    };
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = metrics.map(|listener| {
        let c = coordinator.clone();
        tokio::spawn(crossfold_proto::metrics_http::serve(
            listener,
            move || {
                let c = c.clone();
                async move { c.render_metrics().await }
            },
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExperimentsServer<ExperimentsService>>()
        .await;
    health.set_serving::<WorkersServer<WorkersService>>().await;
    // An experiment's results may be tens of MB (one row per test image and
    // round): answers up to what the CLI accepts (64 MiB).
    let experiments = ExperimentsServer::new(ExperimentsService {
        coordinator: coordinator.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max.max(RESULTS_MAX_BYTES));
    let workers = WorkersServer::new(WorkersService {
        coordinator: coordinator.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let data = DataServer::new(DataService {
        coordinator: coordinator.clone(),
    })
    .max_encoding_message_size(max);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crossfold_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordinatorError::Internal(format!("reflection: {e}")))?;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|e| CoordinatorError::Internal(format!("TLS: {e}")))?;
    }
    let result = builder
        .layer(GrpcMetricsLayer::new(coordinator.metrics.clone()))
        .layer(AuthLayer::new(tokens))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(experiments)
        .add_service(workers)
        .add_service(data)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), {
            let c = coordinator.clone();
            let reaper = reaper.abort_handle();
            async move {
                shutdown.await;
                // No lease is reaped while calls drain (workers cannot
                // reach a stopping server to heartbeat; a restart gives
                // them a grace period instead), and long polls and watch
                // streams end now rather than hold the drain open.
                reaper.abort();
                c.begin_shutdown();
            }
        })
        .await;
    reaper.abort();
    let _ = stop_metrics.send(());
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    result.map_err(|e| CoordinatorError::Internal(format!("server: {e}")))
}
