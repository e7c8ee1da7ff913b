//! Importing a folder-per-class tree into a manifest.
//!
//! Layout: `root/{normal,benign,malignant}/...` (class folder names are
//! case-insensitive). A file directly in a class folder is one patient, named
//! by its file stem; files inside a sub-folder of a class folder belong to
//! the patient named by that sub-folder (`root/benign/P17/ap.png`,
//! `root/benign/P17/lat.png`). Files with other extensions than
//! [`super::IMAGE_EXTENSIONS`] are skipped and counted. Any other folder at
//! the top level is an error, so no data is dropped silently.

use super::{DatasetError, IMAGE_EXTENSIONS};
use crate::label::Label;
use crate::manifest::{Entry, Manifest};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub images: usize,
    pub skipped_files: Vec<PathBuf>,
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
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut found_class = false;
    let mut stems = Vec::new();
    for dirent in sorted_dir(root).map_err(io(root))? {
        let path = dirent;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !path.is_dir() {
            skipped.push(path);
            continue;
        }
        let label: Label = name.parse().map_err(|_| DatasetError::Layout {
            path: path.clone(),
            message: format!(
                "unexpected folder {name:?}: class folders are normal, benign and malignant"
            ),
        })?;
        found_class = true;
        for item in sorted_dir(&path).map_err(io(&path))? {
            if item.is_dir() {
                let patient = item
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for file in walk_files(&item).map_err(io(&item))? {
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
    let rel = file.strip_prefix(root).ok().map(|r| {
        r.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    });
    match rel {
        Some(rel) if IMAGE_EXTENSIONS.contains(&ext.as_str()) => {
            entries.push(Entry::new(rel, label, patient))
        }
        _ => skipped.push(file.to_path_buf()),
    }
}

fn sorted_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn walk_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in sorted_dir(dir)? {
        if p.is_dir() {
            out.extend(walk_files(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
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
                ("malignant/m1.dcm".into(), Label::Malignant, "m1".into()),
            ]
        );
        assert_eq!(summary.skipped_files.len(), 1);
        assert!(summary.shared_prefixes.is_empty());
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
    fn empty_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("normal")).unwrap();
        assert!(import_tree(dir.path()).is_err());
    }
}
