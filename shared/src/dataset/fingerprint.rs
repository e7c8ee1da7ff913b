//! The data-set fingerprint: one SHA-256 that changes when any image, label,
//! patient or path changes, and not when rows are reordered.
//!
//! Definition: every row gives the line `path \t label \t patient_id \t
//! sha256(file) \n` (path as written, label in lower case); the lines are
//! sorted bytewise and the fingerprint is the SHA-256 of their
//! concatenation.

use super::paths::normalise;
use super::{available_threads, contained_in, parallel_map, DatasetError};
use crate::hash::{sha256_file, sha256_hex, HashCache};
use crate::manifest::Manifest;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    pub sha256: String,
    /// SHA-256 of each file, by manifest path.
    pub files: BTreeMap<String, String>,
}

pub fn fingerprint(manifest: &Manifest) -> Result<Fingerprint, DatasetError> {
    fingerprint_known(manifest, &HashMap::new())
}

/// [`fingerprint`], taking the SHA-256 of a file from `known` (by
/// normalised path, as [`super::CheckReport::file_sha256`] has them) when
/// it is there, so files just checked are not read again.
pub fn fingerprint_known(
    manifest: &Manifest,
    known: &HashMap<String, String>,
) -> Result<Fingerprint, DatasetError> {
    fingerprint_with(manifest, known, None, None, None)
}

/// [`fingerprint`], ending with [`DatasetError::Cancelled`] soon after
/// `cancel` is set (it is looked at before each file is read): a worker
/// told to stop does not read the rest of a large data set first. With
/// `hashes`, files that look unchanged since an earlier call are not read.
/// `done` counts the files hashed (a worker's progress while it prepares).
pub fn fingerprint_cancellable(
    manifest: &Manifest,
    cancel: &AtomicBool,
    hashes: Option<&HashCache>,
    done: Option<&AtomicU64>,
) -> Result<Fingerprint, DatasetError> {
    fingerprint_with(manifest, &HashMap::new(), Some(cancel), hashes, done)
}

fn fingerprint_with(
    manifest: &Manifest,
    known: &HashMap<String, String>,
    cancel: Option<&AtomicBool>,
    hashes: Option<&HashCache>,
    done: Option<&AtomicU64>,
) -> Result<Fingerprint, DatasetError> {
    let hashes = parallel_map(&manifest.entries, available_threads(), |e| {
        if let Some(h) = known.get(&normalise(&e.path)) {
            return Ok(h.clone());
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(DatasetError::Cancelled);
        }
        let path = contained_in(&manifest.root, &manifest.root, &e.path).map_err(|reason| {
            DatasetError::Escape {
                path: e.path.clone(),
                root: manifest.root.clone(),
                reason,
            }
        })?;
        let sha = match hashes {
            Some(h) => h.sha256_file(&path),
            None => sha256_file(&path),
        }
        .map_err(|source| DatasetError::Io { path, source });
        if let Some(d) = done {
            d.fetch_add(1, Ordering::Relaxed);
        }
        sha
    });
    let mut lines = Vec::with_capacity(hashes.len());
    let mut files = BTreeMap::new();
    for (e, h) in manifest.entries.iter().zip(hashes) {
        let h = h?;
        lines.push(format!(
            "{}\t{}\t{}\t{}\n",
            e.path, e.label, e.patient_id, h
        ));
        files.insert(e.path.clone(), h);
    }
    lines.sort();
    Ok(Fingerprint {
        sha256: sha256_hex(lines.concat().as_bytes()),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Label;
    use crate::manifest::Entry;

    fn setup() -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"aaa").unwrap();
        std::fs::write(dir.path().join("b.png"), b"bbb").unwrap();
        let m = Manifest {
            root: dir.path().to_path_buf(),
            entries: vec![
                Entry::new("a.png", Label::Normal, "p1"),
                Entry::new("b.png", Label::Benign, "p2"),
            ],
        };
        (dir, m)
    }

    #[test]
    fn matches_the_documented_definition() {
        let (_dir, m) = setup();
        let fp = fingerprint(&m).unwrap();
        let expected = sha256_hex(
            format!(
                "a.png\tnormal\tp1\t{}\nb.png\tbenign\tp2\t{}\n",
                sha256_hex(b"aaa"),
                sha256_hex(b"bbb")
            )
            .as_bytes(),
        );
        assert_eq!(fp.sha256, expected);
    }

    #[test]
    fn a_cancelled_fingerprint_ends_without_reading_and_an_uncancelled_one_agrees() {
        let (_dir, m) = setup();
        let stop = AtomicBool::new(true);
        assert!(matches!(
            fingerprint_cancellable(&m, &stop, None, None),
            Err(DatasetError::Cancelled)
        ));
        let go = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        assert_eq!(
            fingerprint_cancellable(&m, &go, Some(&HashCache::new()), Some(&done)).unwrap(),
            fingerprint(&m).unwrap()
        );
        // Every file hashed is counted.
        assert_eq!(done.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn order_independent_but_content_sensitive() {
        let (dir, mut m) = setup();
        let fp = fingerprint(&m).unwrap().sha256;
        m.entries.reverse();
        assert_eq!(fingerprint(&m).unwrap().sha256, fp);
        m.entries[0].label = Label::Malignant;
        assert_ne!(fingerprint(&m).unwrap().sha256, fp);
        m.entries[0].label = Label::Benign;
        std::fs::write(dir.path().join("a.png"), b"aab").unwrap();
        assert_ne!(fingerprint(&m).unwrap().sha256, fp);
    }

    #[test]
    fn the_checks_digests_give_the_same_fingerprint() {
        let (dir, mut m) = setup();
        for (name, v) in [("a.png", 10u8), ("b.png", 20)] {
            image::GrayImage::from_fn(4, 3, |x, _| image::Luma([v + x as u8]))
                .save(dir.path().join(name))
                .unwrap();
        }
        m.entries[1].path = "./b.png".into();
        let fp = fingerprint(&m).unwrap();
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(
            &manifest,
            "path,label,patient_id\na.png,normal,p1\n./b.png,benign,p2\n",
        )
        .unwrap();
        let report = super::super::check(&manifest, None).unwrap();
        assert_eq!(report.file_sha256.len(), 2);
        assert_eq!(fingerprint_known(&m, &report.file_sha256).unwrap(), fp);
        // A digest given is used as it is: the file is not read again.
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        assert_eq!(fingerprint_known(&m, &report.file_sha256).unwrap(), fp);
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let (_dir, mut m) = setup();
        m.entries.push(Entry::new("c.png", Label::Normal, "p3"));
        let err = fingerprint(&m).unwrap_err();
        assert!(err.to_string().contains("c.png"), "{err}");
    }
}
