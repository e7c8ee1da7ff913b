//! Serving the coordinator: the three services, gRPC health, keepalive,
//! message limits, the lease reaper, and graceful shutdown.

use crate::config::Config;
use crate::error::CoordinatorError;
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

/// Open the store named in `config` and serve on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let db = config.db.clone();
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || SqliteStore::open(&db))
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))??,
    );
    serve_with_store(config, store, listener, shutdown).await
}

pub async fn serve_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let max = config.max_message_bytes;
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
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExperimentsServer<ExperimentsService>>()
        .await;
    health.set_serving::<WorkersServer<WorkersService>>().await;
    let experiments = ExperimentsServer::new(ExperimentsService {
        coordinator: coordinator.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let workers = WorkersServer::new(WorkersService {
        coordinator: coordinator.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let data = DataServer::new(DataService {
        coordinator: coordinator.clone(),
    })
    .max_encoding_message_size(max);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(experiments)
        .add_service(workers)
        .add_service(data)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    reaper.abort();
    result.map_err(|e| CoordinatorError::Internal(format!("server: {e}")))
}
