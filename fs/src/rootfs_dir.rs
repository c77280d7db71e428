//! `--rootfs DIR`: a root filesystem the user already has on disk (an unpacked busybox,
//! a debootstrap tree). It is used in place, as podman does; nook only checks it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs {0}: no such directory")]
    Missing(PathBuf),
    #[error("rootfs {0}: not a directory")]
    NotADirectory(PathBuf),
    // Shows its cause rather than returning it as `source()`: a chain printer would
    // say it twice.
    #[error("rootfs {path}: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The absolute, symlink-free path of the root filesystem directory `dir`.
pub fn resolve(dir: &Path) -> Result<PathBuf, RootfsError> {
    let path = dir.canonicalize().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RootfsError::Missing(dir.into()),
        _ => RootfsError::Unreadable {
            path: dir.into(),
            error: source,
        },
    })?;
    if !path.is_dir() {
        return Err(RootfsError::NotADirectory(dir.into()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_file_are_refused() {
        assert!(matches!(
            resolve(Path::new("/no/such/rootfs")),
            Err(RootfsError::Missing(_))
        ));
        assert!(matches!(
            resolve(Path::new("/proc/version")),
            Err(RootfsError::NotADirectory(_))
        ));
        assert_eq!(resolve(Path::new("/")).unwrap(), PathBuf::from("/"));
    }
}
