//! Keeping manifest paths inside the data root.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a manifest path lies outside the data root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEscape {
    Absolute,
    ParentDir,
    /// The manifest's folder is not under the data root (`--data-root`).
    Outside {
        resolved: PathBuf,
    },
    Symlink {
        target: PathBuf,
    },
}

impl fmt::Display for PathEscape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathEscape::Absolute => f.write_str("absolute path"),
            PathEscape::ParentDir => f.write_str("'..' leads outside the root"),
            PathEscape::Outside { resolved } => write!(
                f,
                "it resolves to {}, which is not under the root",
                resolved.display()
            ),
            PathEscape::Symlink { target } => {
                write!(
                    f,
                    "symbolic link resolves outside the root, to {}",
                    target.display()
                )
            }
        }
    }
}

/// Resolve a manifest path under `root`, refusing absolute paths, `..` that
/// climbs out of the root, and (for files that exist) symbolic links whose
/// target lies outside the root. Returns the joined path.
pub fn contained_path(root: &Path, rel: &str) -> Result<PathBuf, PathEscape> {
    contained_in(root, root, rel)
}

/// Like [`contained_path`], for a path written relative to `base` (the
/// manifest's directory) that must stay under `root`.
pub fn contained_in(root: &Path, base: &Path, rel: &str) -> Result<PathBuf, PathEscape> {
    if Path::new(rel).has_root()
        || matches!(
            Path::new(rel).components().next(),
            Some(Component::Prefix(_))
        )
    {
        return Err(PathEscape::Absolute);
    }
    let joined = base.join(rel);
    let lexical = fold(&std::path::absolute(&joined).unwrap_or_else(|_| joined.clone()));
    let lexical_root = fold(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
    if !lexical.starts_with(&lexical_root) {
        let climbs = Path::new(rel)
            .components()
            .any(|c| c == Component::ParentDir);
        return Err(if climbs {
            PathEscape::ParentDir
        } else {
            PathEscape::Outside { resolved: lexical }
        });
    }
    if let (Ok(real), Ok(real_root)) = (joined.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(PathEscape::Symlink { target: real });
        }
    }
    Ok(joined)
}

/// Fold `.` and `..` lexically (no file system access).
fn fold(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A path with `.` removed and `a/../` folded, for comparing manifest rows.
pub(crate) fn normalise(rel: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused() {
        let root = Path::new("/nonexistent-root");
        assert_eq!(
            contained_path(root, "/etc/passwd"),
            Err(PathEscape::Absolute)
        );
        assert_eq!(contained_path(root, "../x.png"), Err(PathEscape::ParentDir));
        assert_eq!(
            contained_path(root, "a/../../x.png"),
            Err(PathEscape::ParentDir)
        );
        assert!(contained_path(root, "a/../b/x.png").is_ok());
        assert!(contained_path(root, "./a/x.png").is_ok());
        // A manifest outside the data root: no '..' to blame.
        let err = contained_in(root, Path::new("/elsewhere"), "images/a.png").unwrap_err();
        assert_eq!(
            err,
            PathEscape::Outside {
                resolved: PathBuf::from("/elsewhere/images/a.png")
            }
        );
        assert!(err.to_string().contains("/elsewhere/images/a.png"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"x").unwrap();
        std::fs::write(root.path().join("inside.png"), b"x").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.png"),
            root.path().join("link.png"),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.path().join("inside.png"), root.path().join("ok.png"))
            .unwrap();
        assert!(matches!(
            contained_path(root.path(), "link.png"),
            Err(PathEscape::Symlink { .. })
        ));
        assert!(contained_path(root.path(), "ok.png").is_ok());
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalise("./a//b/../c.png"), "a/c.png");
        assert_eq!(normalise("a\\c.png"), "a/c.png");
    }
}
