//! Per-user runtime state: `$XDG_RUNTIME_DIR/nook`, or `/tmp/nook-$UID` without one.
//!
//! /tmp is shared: another user could create `/tmp/nook-1000` first and watch or
//! replace what we put there. So the directory must be ours and private (0700), or we
//! refuse to use it and say why.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use crate::error::{Error, Result};

/// The runtime directory nook uses for this user, created if missing.
pub fn runtime_dir() -> Result<PathBuf> {
    let uid = Uid::current().as_raw();
    let (dir, _) = runtime_dir_for(uid);
    ensure_private_dir(&dir, uid)?;
    Ok(dir)
}

/// The runtime directory for `uid`, and why `$XDG_RUNTIME_DIR` was passed over if it was.
pub fn runtime_dir_for(uid: u32) -> (PathBuf, Option<String>) {
    let fallback = PathBuf::from(format!("/tmp/nook-{uid}"));
    let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) else {
        return (fallback, None);
    };
    let xdg = PathBuf::from(xdg);
    match fs::metadata(&xdg) {
        Ok(m) if m.is_dir() && m.uid() == uid => (xdg.join("nook"), None),
        Ok(m) if m.uid() != uid => {
            let why = format!(
                "XDG_RUNTIME_DIR={} belongs to uid {}",
                xdg.display(),
                m.uid()
            );
            (fallback, Some(why))
        }
        Ok(_) => (
            fallback,
            Some(format!(
                "XDG_RUNTIME_DIR={} is not a directory",
                xdg.display()
            )),
        ),
        Err(e) => (
            fallback,
            Some(format!("XDG_RUNTIME_DIR={}: {}", xdg.display(), e)),
        ),
    }
}

/// Creates `dir` 0700 or checks that an existing one is ours and private.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::RuntimeDir {
                path: dir.into(),
                why: format!("cannot create it: {e}"),
            })
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::RuntimeDir {
        path: dir.into(),
        why: e.to_string(),
    })?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::RuntimeDir {
            path: dir.into(),
            why: format!(
                "it exists but is not a directory owned by uid {uid}; someone else may have \
                 created it: remove it, or set XDG_RUNTIME_DIR to a private directory"
            ),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::RuntimeDir {
                path: dir.into(),
                why: format!("cannot make it private (0700): {e}"),
            }
        })?;
    }
    Ok(())
}

/// A container's own directory under the runtime dir; removed on drop when `remove` is
/// set (`--rm`).
pub struct ContainerDir {
    pub path: PathBuf,
    pub remove: bool,
}

impl ContainerDir {
    pub fn create(runtime_dir: &Path, id: &str, remove: bool) -> Result<ContainerDir> {
        let path = runtime_dir.join("containers").join(id);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::RuntimeDir {
                path: path.clone(),
                why: format!("cannot create the container's directory: {e}"),
            })?;
        Ok(ContainerDir { path, remove })
    }
}

impl Drop for ContainerDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_owned_by_someone_else() {
        let uid = Uid::current().as_raw();
        // /proc is a directory owned by root: for a non-root uid it is "someone else's".
        let result = ensure_private_dir(Path::new("/proc"), uid.wrapping_add(1));
        assert!(matches!(result, Err(Error::RuntimeDir { .. })));
    }
}
