//! Data sets on disk: checking a manifest against its files, importing a
//! folder-per-class tree, and fingerprinting.

mod check;
mod fingerprint;
mod import;
pub(crate) mod paths;

pub use check::{check, check_keeping, CheckReport, Issue, IssueKind, Keep, Squares};
pub use fingerprint::{fingerprint, fingerprint_cancellable, fingerprint_known, Fingerprint};
pub use import::{import_tree, ImportSummary};
pub use paths::{contained_in, contained_path, PathEscape};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("{path}: escapes the data root {root}: {reason}")]
    Escape {
        path: String,
        root: PathBuf,
        reason: PathEscape,
    },
    /// Stopped on request before every file was read.
    #[error("cancelled")]
    Cancelled,
}

/// Image file extensions crossfold reads (lower case).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "dcm", "dicom"];

/// Run `f` over `items` on up to `threads` scoped threads, keeping order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

pub(crate) fn available_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
