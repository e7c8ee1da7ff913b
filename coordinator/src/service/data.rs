//! The Data service: data-set files by content hash, in chunks, so workers on
//! other machines need no shared file system.

use super::Coordinator;
use crate::error::CoordinatorError;
use crossfold_proto::v1::{self, data_server::Data};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct DataService {
    pub coordinator: Arc<Coordinator>,
}

const CHUNK: usize = 1 << 20;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::FileChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Data for DataService {
    type FetchFileStream = ChunkStream;

    async fn fetch_file(
        &self,
        request: Request<v1::FetchFileRequest>,
    ) -> Result<Response<Self::FetchFileStream>, Status> {
        let r = request.into_inner();
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(&r.dataset_sha256) || !hex(&r.sha256) {
            return Err(CoordinatorError::InvalidArgument(
                "dataset_sha256 and sha256 must be 64 hex digits".into(),
            )
            .into());
        }
        self.coordinator.learn_dataset(&r.dataset_sha256).await?;
        let path = self
            .coordinator
            .file_path(&r.dataset_sha256, &r.sha256)
            .ok_or_else(|| {
                CoordinatorError::NotFound(format!(
                    "data set {} has no file with sha256 {}",
                    r.dataset_sha256, r.sha256
                ))
            })?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| CoordinatorError::NotFound(format!("{}: {e}", path.display())))?;
        let total = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        let chunk = v1::FileChunk {
                            data: buf,
                            offset,
                            total_size: total,
                        };
                        offset += n as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("{}: {e}", path.display()))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
