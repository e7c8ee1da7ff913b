//! Getting a leased job's data set: straight from a shared file system when
//! the manifest's path is visible here and its fingerprint matches, else
//! from the coordinator's Data service into a cache keyed by the data set's
//! fingerprint, every file checked against its SHA-256.

use crossfold_proto::client::ClientSecurity;
use crossfold_proto::v1::{self, data_client::DataClient};
use crossfold_shared::dataset::{contained_path, fingerprint, Fingerprint};
use crossfold_shared::hash::sha256_hex;
use crossfold_shared::manifest::Manifest;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {path} from the coordinator: {source}")]
    Rpc { path: String, source: tonic::Status },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: received file has sha256 {got}, expected {want}")]
    Corrupt {
        path: String,
        got: String,
        want: String,
    },
    #[error("data set: {0}")]
    Dataset(String),
    #[error("the data set here has fingerprint {got}, the coordinator's is {want}")]
    Fingerprint { got: String, want: String },
}

impl FetchError {
    fn rpc(path: &str, source: tonic::Status) -> FetchError {
        FetchError::Rpc {
            path: path.to_string(),
            source,
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |e| FetchError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The data set of `lease`, ready to load (runs on the training thread).
pub fn materialise(
    coordinator: &str,
    security: &ClientSecurity,
    cache: &Path,
    lease: &v1::Lease,
    always_fetch: bool,
) -> Result<(Manifest, Fingerprint), FetchError> {
    let shared = Path::new(&lease.manifest_path);
    if shared.exists() && !always_fetch {
        if let Ok(m) = Manifest::load(shared) {
            if let Ok(fp) = fingerprint(&m) {
                if fp.sha256 == lease.dataset_sha256 {
                    return Ok((m, fp));
                }
            }
        }
    }
    let dir = cache.join(&lease.dataset_sha256);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let manifest_path = dir.join("manifest.csv");
    std::fs::write(&manifest_path, &lease.manifest_csv).map_err(io(&manifest_path))?;
    let missing: Vec<&v1::FileRef> = lease
        .files
        .iter()
        .filter(|f| {
            contained_path(&dir, &f.path)
                .ok()
                .and_then(|p| std::fs::read(p).ok())
                .is_none_or(|bytes| sha256_hex(&bytes) != f.sha256)
        })
        .collect();
    if !missing.is_empty() {
        tracing::info!(files = missing.len(), dataset = %lease.dataset_sha256, "fetching data-set files from the coordinator");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&dir))?;
        rt.block_on(fetch_all(
            coordinator,
            security,
            &dir,
            &lease.dataset_sha256,
            &missing,
        ))?;
    }
    let m = Manifest::load(&manifest_path).map_err(|e| FetchError::Dataset(e.to_string()))?;
    let fp = fingerprint(&m).map_err(|e| FetchError::Dataset(e.to_string()))?;
    if fp.sha256 != lease.dataset_sha256 {
        return Err(FetchError::Fingerprint {
            got: fp.sha256,
            want: lease.dataset_sha256.clone(),
        });
    }
    Ok((m, fp))
}

async fn fetch_all(
    coordinator: &str,
    security: &ClientSecurity,
    dir: &Path,
    dataset: &str,
    files: &[&v1::FileRef],
) -> Result<(), FetchError> {
    let channel = security
        .connect(coordinator)
        .await
        .map_err(|e| FetchError::rpc("(connect)", tonic::Status::unavailable(e.to_string())))?;
    let mut client = DataClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    for f in files {
        let target = contained_path(dir, &f.path)
            .map_err(|e| FetchError::Dataset(format!("{}: {e}", f.path)))?;
        let mut stream = client
            .fetch_file(v1::FetchFileRequest {
                dataset_sha256: dataset.to_string(),
                sha256: f.sha256.clone(),
            })
            .await
            .map_err(|e| FetchError::rpc(&f.path, e))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend(chunk.map_err(|e| FetchError::rpc(&f.path, e))?.data);
        }
        let got = sha256_hex(&bytes);
        if got != f.sha256 {
            return Err(FetchError::Corrupt {
                path: f.path.clone(),
                got,
                want: f.sha256.clone(),
            });
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = target.with_extension("partial");
        std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
    }
    Ok(())
}
