//! SHA-256 helpers.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Whether `s` is written as [`sha256_hex`] writes a SHA-256: 64 lowercase
/// hex digits (a data set's id, which names folders: nothing else may).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_read(&mut std::fs::File::open(path)?)
}

/// Lower-case hex SHA-256 of what `r` holds, read in 64 KiB pieces.
fn sha256_read(r: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A writer that passes what it is given on to `inner` and takes its
/// SHA-256 on the way, so that a streamed file is hashed as it is written.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// How many bytes were written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The writer and the lower-case hex SHA-256 of everything written.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Files' SHA-256 remembered, for a process that fingerprints the same
/// data set job after job (a worker): a file is read again unless it is the
/// same file (device and inode) with the same size, modification time and
/// status-change time as when it was hashed. The change time cannot be set
/// back (`touch -r`, `cp -p` and `tar x` keep the modification time, not
/// it), and the file is opened before it is looked at, so that NFS clients
/// revalidate its attributes (close-to-open). A hash is not remembered for
/// a file modified within the last [`HashCache::SETTLE`], whose next change
/// could fall in the same tick of a coarse file-system clock (the later of
/// its modification and change times counts).
#[derive(Debug)]
pub struct HashCache {
    known: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    settle: std::time::Duration,
}

impl Default for HashCache {
    fn default() -> Self {
        HashCache::with_settle(HashCache::SETTLE)
    }
}

/// What must not have changed for a remembered hash to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    /// The status-change time (where the system has one).
    changed: SystemTime,
    #[cfg(unix)]
    file: (u64, u64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> io::Result<Stamp> {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        let modified = meta.modified()?;
        #[cfg(unix)]
        let changed = {
            let (secs, nanos) = (meta.ctime(), meta.ctime_nsec());
            let since =
                std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
            SystemTime::UNIX_EPOCH + since
        };
        #[cfg(not(unix))]
        let changed = modified;
        Ok(Stamp {
            len: meta.len(),
            modified,
            changed,
            #[cfg(unix)]
            file: (meta.dev(), meta.ino()),
        })
    }

    /// The last time the file or its metadata changed.
    fn latest(&self) -> SystemTime {
        self.modified.max(self.changed)
    }
}

impl HashCache {
    /// How long a file must have been left alone for its hash to be kept.
    pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

    pub fn new() -> Self {
        HashCache::default()
    }

    /// A cache that remembers only files left alone for `settle`.
    pub fn with_settle(settle: std::time::Duration) -> Self {
        HashCache {
            known: Mutex::default(),
            settle,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, String)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many files' hashes are remembered.
    pub fn remembered(&self) -> usize {
        self.known().len()
    }

    /// [`sha256_file`], from memory when the file is unchanged.
    pub fn sha256_file(&self, path: &Path) -> io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let before = Stamp::of(&file.metadata()?)?;
        if let Some((stamp, sha)) = self.known().get(path) {
            if *stamp == before {
                return Ok(sha.clone());
            }
        }
        let sha = sha256_read(&mut file)?;
        let after = Stamp::of(&file.metadata()?)?;
        let settled = SystemTime::now()
            .duration_since(after.latest())
            .is_ok_and(|age| age >= self.settle);
        let mut known = self.known();
        if after == before && settled {
            known.insert(path.to_path_buf(), (after, sha.clone()));
        } else {
            known.remove(path);
        }
        Ok(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_sha256_hex_writes_is_a_sha256() {
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        for not in [
            "",
            "../../x",
            &"D".repeat(64),
            &"d".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(!is_sha256_hex(not), "{not}");
        }
    }

    #[test]
    fn a_hashing_writer_gives_the_hash_of_what_it_wrote() {
        use std::io::Write;
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.written(), 11);
        let (bytes, sha) = w.finish();
        assert_eq!(bytes, b"hello world");
        // Independent reference: `printf 'hello world' | sha256sum`.
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn a_file_is_hashed_again_unless_it_is_unchanged_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.png");
        let set_time = |t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap()
        };
        // Kernels before 6.13 stamp change times on a clock that moves
        // every few milliseconds: wait past a tick before each change.
        let tick = || std::thread::sleep(std::time::Duration::from_millis(30));
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::write(&f, b"abc").unwrap();
        set_time(old);
        // Remembering at once (the settling wait is tested below).
        let cache = HashCache::with_settle(std::time::Duration::ZERO);
        assert_eq!(cache.sha256_file(&f).unwrap(), sha256_hex(b"abc"));
        // Remembered: the same answer without reading the file again. (The
        // test cannot change the content unseen: any write moves the change
        // time, so it tampers with the memory instead.)
        let planted = "0".repeat(64);
        cache.known().get_mut(&f).unwrap().1 = planted.clone();
        assert_eq!(cache.sha256_file(&f).unwrap(), planted);
        // Rewritten in place with the same size and modification time put
        // back (as `touch -r` does): the change time moved, so read again.
        tick();
        std::fs::write(&f, b"abd").unwrap();
        set_time(old);
        assert_eq!(cache.sha256_file(&f).unwrap(), sha256_hex(b"abd"));
        // Replaced by another file (rename): another inode, read again.
        tick();
        let g = dir.path().join("b.png");
        std::fs::write(&g, b"abe").unwrap();
        std::fs::rename(&g, &f).unwrap();
        set_time(old);
        assert_eq!(cache.sha256_file(&f).unwrap(), sha256_hex(b"abe"));
        assert!(cache.sha256_file(&dir.path().join("gone.png")).is_err());
        // By default a file changed within the last seconds (here its
        // change time, though its modification time is old) is hashed but
        // not remembered: its next change could keep the same times on a
        // coarse clock.
        let fresh = HashCache::new();
        assert_eq!(fresh.sha256_file(&f).unwrap(), sha256_hex(b"abe"));
        assert_eq!(fresh.remembered(), 0);
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
