//! Advisory whole-file locks (`flock`): held through an open file, and let
//! go by the system when the process ends, however it ends. Used to keep
//! two processes from writing one folder at once.

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// Try to lock `file` (exclusive or shared) without waiting: `Ok(true)`
/// taken, `Ok(false)` held by another open file; `Err` when this file
/// system cannot lock (some network mounts).
pub fn try_lock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    let kind = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a descriptor `file` owns and keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock => Ok(false),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::try_lock;
    use std::fs::File;

    #[test]
    fn a_lock_held_through_one_open_file_keeps_out_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = File::create(&path).unwrap();
        assert!(try_lock(&first, true).unwrap());
        let second = File::open(&path).unwrap();
        assert!(!try_lock(&second, false).unwrap());
        assert!(!try_lock(&second, true).unwrap());
        drop(first);
        assert!(try_lock(&second, false).unwrap());
    }
}
