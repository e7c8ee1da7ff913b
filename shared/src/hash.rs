//! SHA-256 helpers.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Lower-case hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Files' SHA-256 remembered by path, size and modification time, for a
/// process that fingerprints the same data set job after job (a worker):
/// a file is read again only when its size or modification time changed.
/// (A file rewritten in place keeping both, to the nanosecond, is not
/// noticed: as with `make` or `rsync`'s quick check.)
#[derive(Debug, Default)]
pub struct HashCache {
    known: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

impl HashCache {
    pub fn new() -> Self {
        HashCache::default()
    }

    /// [`sha256_file`], from memory when the file looks unchanged.
    pub fn sha256_file(&self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let stamp = (meta.len(), meta.modified()?);
        let known = |k: &HashMap<PathBuf, (u64, SystemTime, String)>| {
            k.get(path)
                .filter(|(len, time, _)| (*len, *time) == stamp)
                .map(|(_, _, sha)| sha.clone())
        };
        if let Some(sha) = known(&self.known.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(sha);
        }
        let sha = sha256_file(path)?;
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp.0, stamp.1, sha.clone()));
        Ok(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_again_only_when_its_size_or_time_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.png");
        std::fs::write(&f, b"abc").unwrap();
        let cache = HashCache::new();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(cache.sha256_file(&f).unwrap(), abc);
        // Same size, same modification time: remembered, not read.
        let time = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, b"abd").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(time)
            .unwrap();
        assert_eq!(cache.sha256_file(&f).unwrap(), abc);
        // A new modification time: read again.
        let later = time + std::time::Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(cache.sha256_file(&f).unwrap(), sha256_hex(b"abd"));
        // A new size: read again.
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(cache.sha256_file(&f).unwrap(), sha256_hex(b"abcd"));
        assert!(cache.sha256_file(&dir.path().join("gone.png")).is_err());
    }

    #[test]
    fn known_digest() {
        // FIPS 180-2 example "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
