//! Removing an earlier synthetic cohort before a new one is written over it
//! (`crossfold dataset synth --force`): only the images synth writes, and
//! nothing at all when the folder holds anything else.

use super::{SynthError, VIEWS};
use crate::label::Label;
use std::path::{Path, PathBuf};

/// Whether `rel` (a path under `images/`, `/`-separated) is one synth
/// writes: `<class>/P<digits>_<view>.png`.
fn written_by_synth(rel: &str) -> bool {
    let Some((class, file)) = rel.split_once('/') else {
        return false;
    };
    let Some(stem) = file.strip_suffix(".png") else {
        return false;
    };
    let Some((patient, view)) = stem.split_once('_') else {
        return false;
    };
    Label::ALL.iter().any(|l| l.as_str() == class)
        && patient.len() > 1
        && patient.starts_with('P')
        && patient[1..].bytes().all(|b| b.is_ascii_digit())
        && VIEWS.iter().any(|(v, _)| *v == view)
}

/// What a file manager leaves beside images (`.DS_Store`, `._x.png`,
/// `Thumbs.db`): neither a reason to refuse nor anything to remove.
fn clutter(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with('.') || name.eq_ignore_ascii_case("Thumbs.db")
}

/// Every file under `dir`, as paths relative to it joined with `/`.
fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), SynthError> {
    let list_error = |source| SynthError::List {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if entry.file_type().map_err(list_error)?.is_dir() {
            files_under(&entry.path(), &format!("{rel}/"), out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Remove the synthetic images in `out_dir/images/`, the class folders
/// and `images/` itself once empty. When `images/` holds any file synth
/// does not write (notes, real radiographs), nothing is removed and the
/// error names them. Returns how many images were removed.
pub fn remove_earlier(out_dir: &Path) -> Result<usize, SynthError> {
    let images = out_dir.join("images");
    let ours = earlier_images(out_dir)?;
    for f in &ours {
        let path: PathBuf = images.join(f);
        std::fs::remove_file(&path).map_err(|source| SynthError::Remove { path, source })?;
    }
    // Folders left empty go too; one that is not empty stays.
    for label in Label::ALL {
        let _ = std::fs::remove_dir(images.join(label.as_str()));
    }
    let _ = std::fs::remove_dir(&images);
    Ok(ours.len())
}

/// [`remove_earlier`]'s refusal without removing anything: an error naming
/// the files under `out_dir/images/` that synth does not write.
pub fn check_earlier(out_dir: &Path) -> Result<(), SynthError> {
    earlier_images(out_dir).map(|_| ())
}

/// The images synth wrote under `out_dir/images/` (relative to it), or
/// [`SynthError::Foreign`] when anything else is there.
fn earlier_images(out_dir: &Path) -> Result<Vec<String>, SynthError> {
    let images = out_dir.join("images");
    if !images.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    files_under(&images, "", &mut files)?;
    let (ours, foreign): (Vec<String>, Vec<String>) = files
        .into_iter()
        .filter(|f| !clutter(f))
        .partition(|f| written_by_synth(f));
    if !foreign.is_empty() {
        let mut foreign = foreign;
        foreign.sort();
        return Err(SynthError::Foreign {
            dir: images,
            count: foreign.len(),
            examples: foreign
                .iter()
                .take(3)
                .map(|f| format!("images/{f}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(ours)
}

/// Before a cohort is generated into `out_dir` where no manifest is, by
/// the process that holds the folder (`_held`): an earlier synthetic
/// cohort's images there (one stopped before its manifest was written, as
/// `synthetic.partial` or its settings say) are removed; any other file
/// under `images/` refuses it, named.
pub(crate) fn clear_before_generating(out_dir: &Path, _held: &Writing) -> Result<(), SynthError> {
    let images = out_dir.join("images");
    if !images.exists() {
        return Ok(());
    }
    let mut files = Vec::new();
    files_under(&images, "", &mut files)?;
    files.retain(|f| !clutter(f));
    if files.is_empty() {
        return Ok(());
    }
    // An older crossfold still writing its cohort here holds the marker
    // itself (it knows no folder lock): waited for, not undone.
    if held_elsewhere(&out_dir.join(super::SYNTHETIC_PARTIAL)) {
        return Err(SynthError::Busy {
            dir: out_dir.to_path_buf(),
        });
    }
    let ours = [super::SYNTHETIC_PARTIAL, super::SYNTHETIC_SETTINGS]
        .iter()
        .any(|f| out_dir.join(f).exists());
    if ours {
        return remove_earlier(out_dir).map(|_| ());
    }
    files.sort();
    let count = files.len();
    let examples = files
        .iter()
        .take(3)
        .map(|f| format!("images/{f}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(if files.iter().all(|f| written_by_synth(f)) {
        SynthError::Unfinished {
            dir: images,
            count,
            examples,
        }
    } else {
        SynthError::Unrecorded {
            dir: images,
            count,
            examples,
        }
    })
}

/// A process's hold on a folder while it looks at and writes a cohort
/// there: an advisory lock on its [`super::SYNTHETIC_LOCK`], which the
/// system lets go when the process ends however it ends (a pid written in
/// a file would outlive it, or mean another process in another pid
/// namespace). The lock file is never removed: removing it would let two
/// processes hold two files of one name.
pub struct Writing {
    _file: std::fs::File,
}

/// Hold `out_dir` (created if need be) for writing a cohort;
/// [`SynthError::Busy`] while another process holds it. Everything that
/// decides what to write there is looked at after this, so that two
/// processes never both decide.
pub fn begin_writing(out_dir: &Path) -> Result<Writing, SynthError> {
    let lock = out_dir.join(super::SYNTHETIC_LOCK);
    std::fs::create_dir_all(out_dir).map_err(|source| SynthError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| SynthError::Lock { path: lock, source })?;
    // A file system that cannot lock holds nothing, and refuses nothing.
    if crate::flock::try_lock(&file, true).ok() == Some(false) {
        return Err(SynthError::Busy {
            dir: out_dir.to_path_buf(),
        });
    }
    Ok(Writing { _file: file })
}

/// Create `marker` (`synthetic.partial`) and hold it while a cohort is
/// written, as older versions of crossfold, which know no folder lock, do
/// and look for; [`SynthError::Busy`] while one of them holds it.
pub(crate) fn hold_marker(marker: &Path, out_dir: &Path) -> Result<std::fs::File, SynthError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(marker)
        .map_err(|source| SynthError::Lock {
            path: marker.to_path_buf(),
            source,
        })?;
    if crate::flock::try_lock(&file, true).ok() == Some(false) {
        return Err(SynthError::Busy {
            dir: out_dir.to_path_buf(),
        });
    }
    Ok(file)
}

/// Whether another process holds `marker` now (see [`hold_marker`]).
fn held_elsewhere(marker: &Path) -> bool {
    // A file system that cannot lock holds nothing, and refuses nothing.
    std::fs::File::open(marker).is_ok_and(|f| crate::flock::try_lock(&f, false).ok() == Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_synth_writes_are_its_own() {
        for ours in [
            "normal/P0001_ap.png",
            "malignant/P0520_lat.png",
            "benign/P12_ap.png",
        ] {
            assert!(written_by_synth(ours), "{ours}");
        }
        for not in [
            "normal/P0001_ap.dcm",
            "normal/p0001_ap.png",
            "normal/P_ap.png",
            "normal/PX001_ap.png",
            "normal/P0001_side.png",
            "tumour/P0001_ap.png",
            "notes.txt",
            "normal/sub/P0001_ap.png",
        ] {
            assert!(!written_by_synth(not), "{not}");
        }
    }

    #[test]
    fn an_earlier_cohort_is_removed_but_nothing_when_other_files_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::synth::SynthConfig {
            normal: 3,
            benign: 2,
            malignant: 2,
            size: 32,
            seed: 1,
            views_per_patient: 1,
        };
        crate::synth::generate(&cfg, dir.path()).unwrap();
        let real = dir.path().join("images/normal/real1.dcm");
        std::fs::write(&real, b"a radiograph").unwrap();
        std::fs::write(dir.path().join("images/notes.txt"), b"mine").unwrap();
        // A file manager's clutter counts for nothing.
        std::fs::write(dir.path().join("images/benign/.DS_Store"), b"x").unwrap();
        let err = remove_earlier(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("2 file(s) synth did not write")
                && err.contains("images/normal/real1.dcm, images/notes.txt"),
            "{err}"
        );
        // Nothing was removed.
        let mut left = Vec::new();
        files_under(&dir.path().join("images"), "", &mut left).unwrap();
        assert_eq!(left.len(), 7 + 3, "{left:?}");

        std::fs::remove_file(&real).unwrap();
        std::fs::remove_file(dir.path().join("images/notes.txt")).unwrap();
        assert_eq!(remove_earlier(dir.path()).unwrap(), 7);
        // Only the clutter's folder is left.
        let mut left = Vec::new();
        files_under(&dir.path().join("images"), "", &mut left).unwrap();
        assert_eq!(left, ["benign/.DS_Store"]);
        std::fs::remove_dir_all(dir.path().join("images")).unwrap();
        assert_eq!(remove_earlier(dir.path()).unwrap(), 0);
    }
}
