//! Keeping a worker's data-set cache (`--cache`) under `--cache-max-gib`:
//! whole data sets are removed, the least recently used first.
//!
//! A data set's folder (`<cache>/<sha256>/`) is marked used (its
//! [`LAST_USED`] file touched) each time a job takes it. One used within
//! [`IN_USE_FOR`] is never removed: the cache may be shared by other worker
//! processes (`crossfold run`'s, or pods on one volume), whose jobs may be
//! reading it now, and which this process cannot ask.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Touched in a data set's folder each time a job takes it.
pub const LAST_USED: &str = ".last-used";

/// How recently used a data set's folder may be and still be removed.
pub const IN_USE_FOR: Duration = Duration::from_secs(3600);

/// Mark `folder` (a data set's in the cache) used now.
pub fn mark_used(folder: &Path) {
    let _ = std::fs::write(folder.join(LAST_USED), b"");
}

/// Remove data sets from `cache`, least recently used first, until what
/// is left takes at most `limit` bytes; never `keep` (the one a job is
/// about to fetch) nor one used within [`IN_USE_FOR`]. Returns the folders
/// removed. Best effort: what cannot be read or removed is left, and the
/// bound holds before a fetch (the set then fetched adds to it).
pub fn enforce(cache: &Path, limit: u64, keep: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut sets: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_data_set(p))
        .map(|p| (last_used(&p), size_of(&p), p))
        .collect();
    let mut total: u64 = sets.iter().map(|(_, size, _)| size).sum();
    sets.sort();
    let mut removed = Vec::new();
    for (used, size, path) in sets {
        if total <= limit {
            break;
        }
        let recent = |used: SystemTime| {
            now.duration_since(used)
                .map_or(true, |age| age < IN_USE_FOR)
        };
        // Looked at again just before: another process may have taken it
        // since the scan.
        if recent(used) || path == keep || recent(last_used(&path)) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            total = total.saturating_sub(size);
            removed.push(path);
        }
    }
    removed
}

/// Whether `p` is named as a data set's folder (64 lowercase hex digits):
/// nothing else under `--cache` is touched.
fn is_data_set(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(crossfold_shared::hash::is_sha256_hex)
}

/// When the folder was last used: its mark, else the folder's own time.
fn last_used(p: &Path) -> SystemTime {
    std::fs::metadata(p.join(LAST_USED))
        .or_else(|_| std::fs::metadata(p))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Bytes of the files under `dir` (links not followed).
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_set(cache: &Path, n: u8, bytes: usize, used_ago: Duration) -> PathBuf {
        let dir = cache.join(format!("{n:x}").repeat(64));
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(dir.join("images/a.png"), vec![0u8; bytes]).unwrap();
        mark_used(&dir);
        std::fs::File::options()
            .write(true)
            .open(dir.join(LAST_USED))
            .unwrap()
            .set_modified(SystemTime::now() - used_ago)
            .unwrap();
        dir
    }

    #[test]
    fn the_least_recently_used_data_sets_go_first_and_recent_ones_never() {
        let cache = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let oldest = data_set(cache.path(), 1, 1000, 3 * day);
        let older = data_set(cache.path(), 2, 1000, 2 * day);
        let recent = data_set(cache.path(), 3, 1000, Duration::from_secs(60));
        let kept = data_set(cache.path(), 4, 1000, 4 * day);
        // Not a data set's folder: never touched.
        let other = cache.path().join("notes");
        std::fs::create_dir_all(&other).unwrap();
        // Under the limit: nothing goes.
        assert!(enforce(cache.path(), 10_000, &kept).is_empty());
        // 4,000 bytes against 3,500: the oldest that may go, alone.
        let removed = enforce(cache.path(), 3_500, &kept);
        assert_eq!(removed, vec![oldest.clone()]);
        // Down to nothing: all but the one kept and the one in use.
        let removed = enforce(cache.path(), 0, &kept);
        assert_eq!(removed, [older]);
        assert!(!oldest.exists() && recent.exists() && kept.exists() && other.exists());
    }
}
