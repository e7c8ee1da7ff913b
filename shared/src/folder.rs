//! Creating an output folder, saying which path is in the way when one of
//! its parents is a file (rather than the system's "File exists").

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot create the folder {}: {} is a file", dir.display(), file.display())]
    FileInTheWay { dir: PathBuf, file: PathBuf },
    #[error("cannot create the folder {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Create `dir` and its parents.
pub fn create(dir: &Path) -> Result<(), FolderError> {
    std::fs::create_dir_all(dir).map_err(|source| {
        match dir.ancestors().find(|p| p.exists() && !p.is_dir()) {
            Some(file) => FolderError::FileInTheWay {
                dir: dir.to_path_buf(),
                file: file.to_path_buf(),
            },
            None => FolderError::Io {
                dir: dir.to_path_buf(),
                source,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, "x").unwrap();
        let err = create(&file.join("a").join("b")).unwrap_err();
        assert!(
            matches!(&err, FolderError::FileInTheWay { file: f, .. } if *f == file),
            "{err}"
        );
        create(&dir.path().join("c").join("d")).unwrap();
        assert!(dir.path().join("c/d").is_dir());
    }
}
