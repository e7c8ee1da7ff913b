//! Importing a folder-per-class tree into a manifest.
//!
//! Layout: `root/{normal,benign,malignant}/...` (class folder names are
//! case-insensitive). A file directly in a class folder is one patient, named
//! by its file stem; files inside a sub-folder of a class folder belong to
//! the patient named by that sub-folder (`root/benign/P17/ap.png`,
//! `root/benign/P17/lat.png`). Files with other extensions than
//! [`super::IMAGE_EXTENSIONS`] are skipped and counted, except files
//! without an extension whose content is DICOM (`IM000001`). Any other folder at
//! the top level is an error, so no data is dropped silently.
//!
//! What `dataset check` would refuse is refused here already, all of it in
//! one error: a patient id under two class folders, and a symbolic link
//! that leads out of the root. Links to folders are not followed (they could
//! loop); they are listed with the skipped files. Hidden files and folders
//! (names starting with `.`, such as macOS's `._P1.png` copies) are skipped
//! too, and listed apart.

use super::{DatasetError, IMAGE_EXTENSIONS};
use crate::label::Label;
use crate::manifest::{Entry, Manifest};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub images: usize,
    pub skipped_files: Vec<PathBuf>,
    /// Hidden files and folders (names starting with `.`) under the class
    /// folders, skipped: a hidden folder's files are not looked at.
    pub hidden: Vec<PathBuf>,
    /// Name prefixes (before the last `_` or `-`) shared by several files
    /// lying directly in class folders, e.g. `P0002` of `P0002_ap.png` and
    /// `P0002_lat.png`: each file became its own patient, which splits a
    /// patient's views across folds if they are one patient's.
    pub shared_prefixes: Vec<String>,
}

/// The prefixes (before the last `_` or `-`) that more than one of `stems`
/// has, sorted.
fn shared_prefixes(stems: &[String]) -> Vec<String> {
    let mut count: std::collections::BTreeMap<&str, usize> = Default::default();
    for stem in stems {
        if let Some(i) = stem.rfind(['_', '-']).filter(|&i| i > 0) {
            *count.entry(&stem[..i]).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(p, _)| p.to_string())
        .collect()
}

/// Scan `root` and return the manifest (root = `root`), rows sorted by label
/// then path. Paths use `/` separators.
pub fn import_tree(root: &Path) -> Result<(Manifest, ImportSummary), DatasetError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DatasetError::Io { path, source }
    };
    let real_root = root.canonicalize().map_err(io(root))?;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut problems = Vec::new();
    let mut hidden = Vec::new();
    let mut found_class = false;
    let mut stems = Vec::new();
    // Hidden entries at the top level (`.git`, `.DS_Store`) are not data.
    for dirent in sorted_dir(root, &mut Vec::new()).map_err(io(root))? {
        let path = dirent;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !path.is_dir() {
            skipped.push(path);
            continue;
        }
        let Ok(label) = name.parse::<Label>() else {
            problems.push(format!(
                "unexpected folder {name:?}: class folders are normal, benign and malignant"
            ));
            continue;
        };
        // A class folder may be a link, but not to a folder outside the root.
        if is_link(&path) && !within(root, &real_root, &path, &mut problems) {
            continue;
        }
        found_class = true;
        for item in sorted_dir(&path, &mut hidden).map_err(io(&path))? {
            if !follow(root, &real_root, &item, &mut skipped, &mut problems) {
                continue;
            }
            if item.is_dir() {
                let patient = item
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let files = walk_files(
                    root,
                    &real_root,
                    &item,
                    &mut skipped,
                    &mut hidden,
                    &mut problems,
                )
                .map_err(io(&item))?;
                for file in files {
                    add(root, &file, label, &patient, &mut entries, &mut skipped);
                }
            } else {
                let patient = item
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let before = entries.len();
                add(root, &item, label, &patient, &mut entries, &mut skipped);
                if entries.len() > before {
                    stems.push(patient);
                }
            }
        }
    }
    problems.extend(conflicting_labels(&entries));
    if !problems.is_empty() {
        return Err(DatasetError::Layout {
            path: root.to_path_buf(),
            message: format!(
                "{} problem(s); no manifest written:\n{}",
                problems.len(),
                crate::listing::indented(&problems)
            ),
        });
    }
    if !found_class {
        return Err(DatasetError::Layout {
            path: root.to_path_buf(),
            message: "no normal/, benign/ or malignant/ folder".into(),
        });
    }
    if entries.is_empty() {
        return Err(DatasetError::Layout {
            path: root.to_path_buf(),
            message: format!("no image files ({})", IMAGE_EXTENSIONS.join(", ")),
        });
    }
    entries.sort_by(|a: &Entry, b: &Entry| (a.label, &a.path).cmp(&(b.label, &b.path)));
    let summary = ImportSummary {
        images: entries.len(),
        skipped_files: skipped,
        hidden,
        shared_prefixes: shared_prefixes(&stems),
    };
    Ok((
        Manifest {
            root: root.to_path_buf(),
            entries,
        },
        summary,
    ))
}

fn add(
    root: &Path,
    file: &Path,
    label: Label,
    patient: &str,
    entries: &mut Vec<Entry>,
    skipped: &mut Vec<PathBuf>,
) {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    // A name that is not UTF-8 cannot be written into the manifest as it
    // is (a lossy copy would name no file, or another one): skipped, listed.
    let rel = file.strip_prefix(root).ok().and_then(|r| {
        r.components()
            .map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("/"))
    });
    match rel {
        Some(rel) if IMAGE_EXTENSIONS.contains(&ext.as_str()) || bare_dicom(file, &ext) => {
            entries.push(Entry::new(rel, label, patient))
        }
        _ => skipped.push(file.to_path_buf()),
    }
}

/// Whether a file without an extension is a DICOM image by its content
/// (DICOM files are often named `IM000001`); a `DICOMDIR` (the index of a
/// DICOM medium, no image) is not.
fn bare_dicom(file: &Path, ext: &str) -> bool {
    use std::io::Read;
    if !ext.is_empty() || file.file_name().is_some_and(|n| n == "DICOMDIR") {
        return false;
    }
    let mut head = Vec::with_capacity(4096);
    let read = std::fs::File::open(file).and_then(|f| f.take(4096).read_to_end(&mut head));
    read.is_ok() && crate::imaging::looks_like_dicom(&head)
}

/// The entries of `dir`, sorted; hidden ones (names starting with `.`)
/// go to `hidden` instead.
fn sorted_dir(dir: &Path, hidden: &mut Vec<PathBuf>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dots = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().as_encoded_bytes().starts_with(b".") {
            dots.push(e.path());
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    dots.sort();
    hidden.extend(dots);
    Ok(out)
}

/// Every file under `dir`. Links are checked as in [`import_tree`]: one
/// that leads out of `real_root` is a problem, one to a folder is skipped.
fn walk_files(
    root: &Path,
    real_root: &Path,
    dir: &Path,
    skipped: &mut Vec<PathBuf>,
    hidden: &mut Vec<PathBuf>,
    problems: &mut Vec<String>,
) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in sorted_dir(dir, hidden)? {
        if !follow(root, real_root, &p, skipped, problems) {
            continue;
        }
        if p.is_dir() {
            out.extend(walk_files(root, real_root, &p, skipped, hidden, problems)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Whether to take `p` (below a class folder): anything but a link, or a
/// link to a file inside the root. A link out of the root, or to nothing,
/// is a problem; a link to a folder is skipped (following it could loop).
fn follow(
    root: &Path,
    real_root: &Path,
    p: &Path,
    skipped: &mut Vec<PathBuf>,
    problems: &mut Vec<String>,
) -> bool {
    if !is_link(p) {
        return true;
    }
    if !within(root, real_root, p, problems) {
        return false;
    }
    if p.is_dir() {
        skipped.push(p.to_path_buf());
        return false;
    }
    true
}

/// Whether the link `p` leads to something inside the root; if not, the
/// problem is recorded, naming `p` relative to the root.
fn within(root: &Path, real_root: &Path, p: &Path, problems: &mut Vec<String>) -> bool {
    match p.canonicalize() {
        Ok(target) if target.starts_with(real_root) => true,
        Ok(target) => {
            problems.push(format!(
                "{}: a symbolic link to {}, outside the root",
                relative(root, p),
                target.display()
            ));
            false
        }
        Err(e) => {
            problems.push(format!(
                "{}: a symbolic link to nothing: {e}",
                relative(root, p)
            ));
            false
        }
    }
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// One line per patient id found under two class folders, naming a file of
/// each (a patient has one label; the split plan would refuse it).
fn conflicting_labels(entries: &[Entry]) -> Vec<String> {
    let mut first: std::collections::BTreeMap<&str, &Entry> = Default::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in entries {
        match first.get(e.patient_id.as_str()) {
            None => {
                first.insert(&e.patient_id, e);
            }
            Some(f) if f.label != e.label && seen.insert((&e.patient_id, e.label)) => {
                out.push(format!(
                    "patient {:?} is under {} ({}) and {} ({}): a patient has one label; rename one of them",
                    e.patient_id, f.label, f.path, e.label, e.path
                ));
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn imports_class_folders_and_patient_subfolders() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("Normal/n1.png"));
        touch(&r.join("benign/P17/ap.png"));
        touch(&r.join("benign/P17/lat.JPG"));
        touch(&r.join("malignant/m1.dcm"));
        touch(&r.join("malignant/notes.txt"));
        // Without an extension: a DICOM data set by its content is taken
        // (its first element, Specific Character Set), text is not, nor
        // is a DICOMDIR.
        let bare = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100";
        touch(&r.join("malignant/P20/IM000001"));
        std::fs::write(r.join("malignant/P20/IM000001"), bare).unwrap();
        std::fs::write(r.join("malignant/P20/DICOMDIR"), bare).unwrap();
        std::fs::write(r.join("malignant/P20/README"), b"scanned 2019").unwrap();
        let (m, summary) = import_tree(r).unwrap();
        let rows: Vec<(String, Label, String)> = m
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.label, e.patient_id.clone()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("Normal/n1.png".into(), Label::Normal, "n1".into()),
                ("benign/P17/ap.png".into(), Label::Benign, "P17".into()),
                ("benign/P17/lat.JPG".into(), Label::Benign, "P17".into()),
                (
                    "malignant/P20/IM000001".into(),
                    Label::Malignant,
                    "P20".into()
                ),
                ("malignant/m1.dcm".into(), Label::Malignant, "m1".into()),
            ]
        );
        assert_eq!(
            summary.skipped_files.len(),
            3,
            "{:?}",
            summary.skipped_files
        );
        assert!(summary.shared_prefixes.is_empty());
    }

    #[test]
    fn a_file_name_that_is_not_utf8_is_skipped_and_listed_not_mangled() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("normal/n1.png"));
        let odd = r
            .join("normal")
            .join(std::ffi::OsStr::from_bytes(b"\xff.png"));
        touch(&odd);
        let (m, summary) = import_tree(r).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["normal/n1.png"]);
        assert_eq!(summary.skipped_files, [odd]);
    }

    #[test]
    fn hidden_files_and_folders_in_class_folders_are_skipped_and_listed_apart() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("normal/n1.png"));
        touch(&r.join("normal/._n1.png"));
        touch(&r.join("benign/P2/.hidden.png"));
        touch(&r.join("benign/.P3/ap.png"));
        touch(&r.join("benign/P2/ap.png"));
        touch(&r.join(".DS_Store"));
        let (m, summary) = import_tree(r).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["normal/n1.png", "benign/P2/ap.png"]);
        assert_eq!(
            summary.hidden,
            [
                r.join("benign/.P3"),
                r.join("benign/P2/.hidden.png"),
                r.join("normal/._n1.png"),
            ]
        );
        assert!(
            summary.skipped_files.is_empty(),
            "{:?}",
            summary.skipped_files
        );
    }

    #[test]
    fn files_that_look_like_views_of_one_patient_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("normal/P0001_ap.png"));
        touch(&r.join("normal/P0001_lat.png"));
        touch(&r.join("benign/P0002-ap.png"));
        touch(&r.join("benign/P0002-lat.png"));
        touch(&r.join("benign/P0003_ap.png"));
        touch(&r.join("malignant/P0004/ap.png"));
        touch(&r.join("malignant/P0004/lat.png"));
        let (m, summary) = import_tree(r).unwrap();
        // Each stem stays its own patient (the documented rule) ...
        assert_eq!(
            m.entries
                .iter()
                .filter(|e| e.patient_id.starts_with("P0001"))
                .count(),
            2
        );
        // ... but the look-alikes are named so the user can fix the layout.
        assert_eq!(summary.shared_prefixes, ["P0001", "P0002"]);
    }

    #[test]
    fn unknown_class_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("normal/a.png"));
        touch(&dir.path().join("tumour/b.png"));
        let err = import_tree(dir.path()).unwrap_err();
        assert!(err.to_string().contains("\"tumour\""), "{err}");
    }

    #[test]
    fn what_check_would_refuse_is_refused_all_at_once_and_nothing_loops() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = dir.path().join("tree");
        touch(&r.join("normal/P0001.png"));
        touch(&r.join("malignant/P0001.png"));
        touch(&r.join("benign/P2/ap.png"));
        touch(&r.join("tumour/x.png"));
        touch(&r.join("other/y.png"));
        touch(&outside.path().join("far.png"));
        std::os::unix::fs::symlink(outside.path().join("far.png"), r.join("benign/link.png"))
            .unwrap();
        // A link back up the tree: followed, it would never end.
        std::os::unix::fs::symlink(&r, r.join("benign/P2/loop")).unwrap();
        // A link out of the root deep in a patient's folder.
        std::os::unix::fs::symlink(outside.path().join("far.png"), r.join("benign/P2/far.png"))
            .unwrap();
        let err = import_tree(&r).unwrap_err().to_string();
        for part in [
            "5 problem(s); no manifest written",
            "\n  benign/P2/far.png: a symbolic link to",
            "patient \"P0001\" is under malignant (malignant/P0001.png) and normal (normal/P0001.png)",
            "benign/link.png: a symbolic link to",
            "outside the root",
            "\"tumour\"",
            "\"other\"",
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
    }

    #[test]
    fn a_class_folder_linked_out_of_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        touch(&dir.path().join("normal/n1.png"));
        touch(&outside.path().join("b1.png"));
        std::os::unix::fs::symlink(outside.path(), dir.path().join("benign")).unwrap();
        let err = import_tree(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("1 problem(s)") && err.contains("\n  benign: a symbolic link to"),
            "{err}"
        );
    }

    #[test]
    fn links_inside_the_root_are_kept_and_links_to_folders_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("normal/n1.png"));
        // A file kept at the top level (itself skipped), linked from a class.
        touch(&r.join("b1-original.png"));
        std::fs::create_dir_all(r.join("benign")).unwrap();
        std::os::unix::fs::symlink(r.join("b1-original.png"), r.join("benign/b1.png")).unwrap();
        std::os::unix::fs::symlink(r.join("normal"), r.join("benign/P9")).unwrap();
        // A class folder that is a link to a (hidden) folder inside the root.
        touch(&r.join(".store/m1.png"));
        std::os::unix::fs::symlink(r.join(".store"), r.join("malignant")).unwrap();
        let (m, summary) = import_tree(r).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["normal/n1.png", "benign/b1.png", "malignant/m1.png"]
        );
        assert!(
            summary.skipped_files.contains(&r.join("benign/P9")),
            "{summary:?}"
        );
        // A link to nothing is a problem, not a silently missing image.
        std::os::unix::fs::symlink(r.join("gone.png"), r.join("benign/b2.png")).unwrap();
        let err = import_tree(r).unwrap_err().to_string();
        assert!(err.contains("benign/b2.png"), "{err}");
    }

    #[test]
    fn empty_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("normal")).unwrap();
        assert!(import_tree(dir.path()).is_err());
    }
}
