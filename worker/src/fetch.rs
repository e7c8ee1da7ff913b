//! Getting a leased job's data set: straight from a shared file system when
//! the manifest's path is visible here and its fingerprint matches, else
//! from the coordinator's Data service into a cache keyed by the data set's
//! fingerprint, every fetched file checked against its SHA-256. Files
//! already there are hashed once per worker process, then trusted while
//! unchanged ([`HashCache`]).

use crossfold_proto::client::ClientSecurity;
use crossfold_proto::v1::{self, data_client::DataClient};
use crossfold_shared::dataset::{
    contained_path, fingerprint_cancellable, DatasetError, Fingerprint,
};
use crossfold_shared::hash::{HashCache, HashingWriter};
use crossfold_shared::imaging::MAX_FILE_BYTES;
use crossfold_shared::manifest::Manifest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {path} from the coordinator: {source}")]
    Rpc { path: String, source: tonic::Status },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: the coordinator sent a file with sha256 {got}, but the experiment's data set has {want}: the file changed after the experiment was submitted (submit the spec again, or run `crossfold run` again, to use the new file)")]
    Corrupt {
        path: String,
        got: String,
        want: String,
    },
    #[error("{path}: the coordinator sent more than {} MiB, more than any image crossfold reads", MAX_FILE_BYTES >> 20)]
    TooLarge { path: String },
    #[error("data set: {0}")]
    Dataset(String),
    #[error("the data set here has fingerprint {got}, the coordinator's is {want}")]
    Fingerprint { got: String, want: String },
    /// The lease's data-set hash is not one: it names the cache folder,
    /// so anything else could lead out of it.
    #[error("the lease names data set {0:?}, which is not a SHA-256 (64 lowercase hex digits)")]
    BadDatasetId(String),
    /// Told to stop (the job cancelled, or the worker shutting down)
    /// before the data set was ready.
    #[error("cancelled while getting the data set")]
    Cancelled,
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

/// Where a job's data set comes from and where it may go.
pub struct FetchFrom<'a> {
    pub coordinator: &'a str,
    pub security: &'a ClientSecurity,
    /// Folder of data sets fetched from the coordinator.
    pub cache: &'a Path,
    /// Fetch even when the coordinator's manifest path is visible here.
    pub always_fetch: bool,
    /// Files' hashes from earlier jobs of this worker.
    pub hashes: &'a HashCache,
    /// Counts the files fetched and hashed (the job's progress while it
    /// prepares, which the worker's heartbeats report).
    pub done: &'a AtomicU64,
    /// The most bytes the cache may hold (`--cache-max-gib`), kept by
    /// removing the least recently used data sets before a fetch.
    pub cache_limit: Option<u64>,
}

/// The data set of `lease`, ready to load (runs on the training thread).
/// Ends with [`FetchError::Cancelled`] soon after `cancel` is set: between
/// files while hashing, and within 0.1 s while fetching. A file unchanged
/// since an earlier job (see [`HashCache`]) is not hashed again.
pub fn materialise(
    from: &FetchFrom,
    lease: &v1::Lease,
    cancel: &AtomicBool,
) -> Result<(Manifest, Fingerprint), FetchError> {
    let FetchFrom {
        coordinator,
        security,
        cache,
        always_fetch,
        hashes,
        done,
        cache_limit,
    } = *from;
    let id = &lease.dataset_sha256;
    if !crossfold_shared::hash::is_sha256_hex(id) {
        return Err(FetchError::BadDatasetId(id.clone()));
    }
    let fingerprint = |m: &Manifest| {
        fingerprint_cancellable(m, cancel, Some(hashes), Some(done)).map_err(|e| match e {
            DatasetError::Cancelled => FetchError::Cancelled,
            other => FetchError::Dataset(other.to_string()),
        })
    };
    let shared = Path::new(&lease.manifest_path);
    if shared.exists() && !always_fetch {
        if let Ok(m) = Manifest::load(shared) {
            match fingerprint(&m) {
                Ok(fp) if fp.sha256 == lease.dataset_sha256 => return Ok((m, fp)),
                Err(FetchError::Cancelled) => return Err(FetchError::Cancelled),
                // Not the submitted data, or unreadable here: fetch it.
                _ => {}
            }
        }
    }
    let dir = cache.join(&lease.dataset_sha256);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    crate::cache_limit::mark_used(&dir);
    let manifest_path = dir.join("manifest.csv");
    // Jobs of one data set running side by side in this process (several
    // slots) share the cache: files are replaced atomically, never truncated
    // under a reader.
    if std::fs::read(&manifest_path).ok().as_deref() != Some(lease.manifest_csv.as_bytes()) {
        write_atomic(&manifest_path, lease.manifest_csv.as_bytes())?;
    }
    let mut missing: Vec<&v1::FileRef> = Vec::new();
    for f in &lease.files {
        if cancel.load(Ordering::Relaxed) {
            return Err(FetchError::Cancelled);
        }
        let cached = contained_path(&dir, &f.path)
            .ok()
            .and_then(|p| hashes.sha256_file(&p).ok());
        done.fetch_add(1, Ordering::Relaxed);
        if cached.is_none_or(|sha| sha != f.sha256) {
            missing.push(f);
        }
    }
    if !missing.is_empty() {
        remove_stale_partials(&dir, &missing);
        if let Some(limit) = cache_limit {
            for gone in crate::cache_limit::enforce(cache, limit, &dir) {
                tracing::info!(folder = %gone.display(), limit_bytes = limit, "data set removed from the cache (--cache-max-gib): least recently used");
            }
        }
        tracing::info!(files = missing.len(), dataset = %lease.dataset_sha256, "fetching data-set files from the coordinator");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&dir))?;
        rt.block_on(async {
            // Each file is written whole (atomically) or not at all, so
            // stopping between awaits leaves the cache sound. A coordinator
            // that cannot be reached (restarting) is waited for a while
            // before the attempt is given up: its heartbeats keep the lease.
            let mut wait = Duration::from_secs(1);
            let mut todo = missing.clone();
            loop {
                let got = tokio::select! {
                    got = fetch_all(coordinator, security, &dir, &lease.dataset_sha256, &todo, done) => got,
                    _ = crate::runtime::until_set(cancel) => Err(FetchError::Cancelled),
                };
                match got {
                    Err(FetchError::Rpc { source, .. })
                        if matches!(
                            source.code(),
                            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                        ) && wait <= FETCH_RETRY_MAX =>
                    {
                        // What came before the break is kept, not fetched again.
                        todo.retain(|f| {
                            contained_path(&dir, &f.path)
                                .ok()
                                .and_then(|p| hashes.sha256_file(&p).ok())
                                .is_none_or(|sha| sha != f.sha256)
                        });
                        tracing::warn!(error = %source, retry_in_seconds = wait.as_secs(), "the coordinator cannot be reached while fetching; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = crate::runtime::until_set(cancel) => return Err(FetchError::Cancelled),
                        }
                        wait *= 2;
                    }
                    other => return other,
                }
            }
        })?;
    }
    let m = Manifest::load(&manifest_path).map_err(|e| FetchError::Dataset(e.to_string()))?;
    let fp = fingerprint(&m)?;
    // Again once fetched and checked (which may take long): the job decodes
    // its images from here next, within the hour `cache_limit` leaves it.
    crate::cache_limit::mark_used(&dir);
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
    done: &AtomicU64,
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
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Streamed to disk as it comes, hashed on the way: a file is never
        // held whole in memory, and one that does not hash right is never
        // where a reader looks.
        let partial = Partial::create(&target)?;
        let mut out = HashingWriter::new(partial);
        while let Some(chunk) = stream.next().await {
            let data = chunk.map_err(|e| FetchError::rpc(&f.path, e))?.data;
            if out.written() + data.len() as u64 > MAX_FILE_BYTES {
                return Err(FetchError::TooLarge {
                    path: f.path.clone(),
                });
            }
            let before = out.written();
            out.write_all(&data).map_err(io(&target))?;
            // A large file on a slow link is progress as it comes: a unit
            // per MiB.
            let mib = (out.written() >> 20) - (before >> 20);
            if mib > 0 {
                done.fetch_add(mib, Ordering::Relaxed);
            }
        }
        let (partial, got) = out.finish();
        if got != f.sha256 {
            return Err(FetchError::Corrupt {
                path: f.path.clone(),
                got,
                want: f.sha256.clone(),
            });
        }
        partial.commit()?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The longest of the waits (1 s, doubling) between tries to fetch from a
/// coordinator that cannot be reached: about a minute in all.
const FETCH_RETRY_MAX: Duration = Duration::from_secs(32);

/// How long a download's temporary file may go unwritten before it is
/// taken for one a killed worker left (a live download writes it as the
/// bytes come).
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// Remove the temporary files ([`Partial`]'s) that killed downloads left
/// beside the files about to be fetched. The cache may be shared with
/// other worker processes, in other pid namespaces too: a temporary file is
/// judged by its age, not by its process id.
fn remove_stale_partials(dir: &Path, missing: &[&v1::FileRef]) {
    let folders: std::collections::BTreeSet<PathBuf> = missing
        .iter()
        .filter_map(|f| contained_path(dir, &f.path).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_PARTIAL);
            if name.starts_with('.') && name.ends_with(".partial") && stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Write `bytes` to `path` atomically (see [`Partial`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let mut partial = Partial::create(path)?;
    partial.write_all(bytes).map_err(io(path))?;
    partial.commit()
}

/// A file being written to `path` through a temporary file beside it, of
/// a name no other writer uses (process id and a per-process counter),
/// renamed over `path` by [`Partial::commit`] and removed if dropped
/// before: readers see the old or the new file, and two writers of the
/// same file do not disturb each other.
struct Partial {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl Partial {
    fn create(path: &Path) -> Result<Partial, FetchError> {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(
            ".{name}.{}.{}.partial",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        Ok(Partial {
            file,
            tmp,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self) -> Result<(), FetchError> {
        self.file.flush().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        self.committed = true;
        Ok(())
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_shared_data_set_is_fingerprinted_through_the_workers_hash_memory() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        let mut csv = String::from("path,label,patient_id\n");
        for i in 0..3 {
            let f = dir.path().join(format!("{i}.png"));
            std::fs::write(&f, [i as u8; 10]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(old)
                .unwrap();
            csv.push_str(&format!("{i}.png,normal,p{i}\n"));
        }
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(&manifest, csv).unwrap();
        let want = crossfold_shared::dataset::fingerprint(&Manifest::load(&manifest).unwrap())
            .unwrap()
            .sha256;
        let lease = v1::Lease {
            manifest_path: manifest.display().to_string(),
            dataset_sha256: want.clone(),
            ..Default::default()
        };
        let security = ClientSecurity::plaintext();
        // Files just written are remembered only after a settling time:
        // none here.
        let hashes = HashCache::with_settle(Duration::ZERO);
        let cache = tempfile::tempdir().unwrap();
        let from = FetchFrom {
            coordinator: "http://127.0.0.1:9",
            security: &security,
            cache: cache.path(),
            always_fetch: false,
            hashes: &hashes,
            done: &AtomicU64::new(0),
            cache_limit: None,
        };
        let stop = AtomicBool::new(false);
        for _ in 0..2 {
            let (_, fp) = materialise(&from, &lease, &stop).unwrap();
            assert_eq!(fp.sha256, want);
        }
        assert_eq!(hashes.remembered(), 3);
    }

    #[test]
    fn a_lease_whose_data_set_id_is_not_a_hash_writes_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let security = ClientSecurity::plaintext();
        let hashes = HashCache::new();
        let from = FetchFrom {
            coordinator: "http://127.0.0.1:1",
            security: &security,
            cache: cache.path(),
            always_fetch: true,
            hashes: &hashes,
            done: &AtomicU64::new(0),
            cache_limit: None,
        };
        let escape = outside.path().join("x").display().to_string();
        for id in [
            escape.as_str(),
            "../../x",
            "",
            &"D".repeat(64),
            &"d".repeat(63),
        ] {
            let lease = v1::Lease {
                dataset_sha256: id.to_string(),
                manifest_csv: "path,label,patient_id\na.png,normal,p1\n".into(),
                ..Default::default()
            };
            let got = materialise(&from, &lease, &AtomicBool::new(false));
            assert!(
                matches!(&got, Err(FetchError::BadDatasetId(_))),
                "{id}: {got:?}"
            );
        }
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn a_stop_ends_getting_the_data_set_even_when_the_coordinator_is_silent() {
        let cache = tempfile::tempdir().unwrap();
        // A coordinator that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let lease = v1::Lease {
            manifest_path: "/nonexistent/manifest.csv".into(),
            dataset_sha256: "d".repeat(64),
            manifest_csv: "path,label,patient_id\na.png,normal,p1\n".into(),
            files: vec![v1::FileRef {
                path: "a.png".into(),
                sha256: "0".repeat(64),
            }],
            ..Default::default()
        };
        let stop = AtomicBool::new(false);
        let security = ClientSecurity::plaintext();
        let hashes = HashCache::new();
        let from = FetchFrom {
            coordinator: &url,
            security: &security,
            cache: cache.path(),
            always_fetch: false,
            hashes: &hashes,
            done: &AtomicU64::new(0),
            cache_limit: None,
        };
        let started = std::time::Instant::now();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
            });
            materialise(&from, &lease, &stop)
        });
        assert!(matches!(got, Err(FetchError::Cancelled)), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Set before it starts: nothing is read.
        let got = materialise(&from, &lease, &stop);
        assert!(matches!(got, Err(FetchError::Cancelled)), "{got:?}");
        drop(silent);
    }

    /// A Data service that answers every file with `chunks`.
    struct Sends(Vec<Vec<u8>>);

    #[tonic::async_trait]
    impl v1::data_server::Data for Sends {
        type FetchFileStream = std::pin::Pin<
            Box<dyn tokio_stream::Stream<Item = Result<v1::FileChunk, tonic::Status>> + Send>,
        >;

        async fn fetch_file(
            &self,
            _: tonic::Request<v1::FetchFileRequest>,
        ) -> Result<tonic::Response<Self::FetchFileStream>, tonic::Status> {
            let chunks: Vec<_> = self
                .0
                .iter()
                .map(|c| {
                    Ok(v1::FileChunk {
                        data: c.clone(),
                        ..Default::default()
                    })
                })
                .collect();
            Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
        }
    }

    /// What [`fetch_all`] leaves in a fresh cache when the coordinator
    /// answers `a.png` (of SHA-256 `want`) with `chunks`.
    fn fetched(chunks: Vec<Vec<u8>>, want: &str) -> (Result<(), FetchError>, Vec<String>) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(v1::data_server::DataServer::new(Sends(chunks)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let cache = tempfile::tempdir().unwrap();
        let file = v1::FileRef {
            path: "sub/a.png".into(),
            sha256: want.into(),
        };
        let done = AtomicU64::new(0);
        let got = rt.block_on(fetch_all(
            &url,
            &ClientSecurity::plaintext(),
            cache.path(),
            &"d".repeat(64),
            &[&file],
            &done,
        ));
        let mut left: Vec<String> = walk(cache.path());
        left.sort();
        // A file is counted once it is in place.
        assert_eq!(done.load(Ordering::Relaxed), u64::from(got.is_ok()));
        (got, left)
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[test]
    fn a_fetched_file_is_streamed_to_disk_and_kept_only_when_its_hash_is_right() {
        let chunks = vec![b"hello ".to_vec(), b"world".to_vec()];
        let want = crossfold_shared::hash::sha256_hex(b"hello world");
        let (got, left) = fetched(chunks.clone(), &want);
        got.unwrap();
        assert_eq!(left, ["a.png"]);
        // Other bytes than the data set's: refused, and nothing left behind.
        let (got, left) = fetched(chunks, &"0".repeat(64));
        assert!(
            matches!(&got, Err(FetchError::Corrupt { path, got, .. }) if path == "sub/a.png" && *got == want),
            "{got:?}"
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_killed_downloads_temporary_is_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let old = sub.join(".a.png.123.0.partial");
        let live = sub.join(".b.png.456.1.partial");
        let image = sub.join("c.png");
        for f in [&old, &live, &image] {
            std::fs::write(f, b"x").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - 2 * STALE_PARTIAL;
        for f in [&old, &image] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let file = v1::FileRef {
            path: "sub/a.png".into(),
            sha256: "0".repeat(64),
        };
        remove_stale_partials(dir.path(), &[&file]);
        assert!(!old.exists());
        assert!(live.exists() && image.exists());
    }

    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub").join("a.png");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let content = vec![7u8; 256 * 1024];
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        write_atomic(&target, &content).unwrap();
                        // A reader never sees a partial file.
                        assert_eq!(std::fs::read(&target).unwrap().len(), content.len());
                    }
                });
            }
        });
        assert_eq!(std::fs::read(&target).unwrap(), content);
        let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.png")]);
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing-dir").join("m.csv");
        let err = write_atomic(&target, b"x").unwrap_err().to_string();
        assert!(err.contains("missing-dir"), "{err}");
    }
}
