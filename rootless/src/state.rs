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
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(xdg) if owned_by(&xdg, uid) => xdg.join("nook"),
        _ => PathBuf::from(format!("/tmp/nook-{uid}")),
    };
    ensure_private_dir(&dir, uid)?;
    Ok(dir)
}

fn owned_by(path: &Path, uid: u32) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == uid)
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
