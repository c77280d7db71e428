//! Resolving a container path inside a root directory without ever leaving it.
//!
//! A `--rootfs` directory or an image is untrusted: `/proc` in it may be a symlink to
//! `/home/user` on the host, and mounting onto the naive join would mount over the
//! user's own files. Every mount destination is therefore resolved component by
//! component, symlinks interpreted relative to the root (as the container will see
//! them), `..` clamped at the root.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: u32 = 255;

/// Resolves `path` (as seen inside the container) to a host path under `root`.
/// Components that do not exist yet are kept as they are, so the result may be created.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<OsString> = components_reversed(path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(components_reversed(&target));
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Normal components and `..`, last first (a stack to pop from).
fn components_reversed(path: &Path) -> Vec<OsString> {
    let mut parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nook-secure-path-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        dir
    }

    #[test]
    fn absolute_symlink_stays_inside() {
        let root = scratch();
        symlink("/etc", root.join("proc")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("/proc")).unwrap(),
            root.join("etc")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dotdot_is_clamped_at_root() {
        let root = scratch();
        symlink("../../../../home", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("/escape/x")).unwrap(),
            root.join("home/x")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/../../etc")).unwrap(),
            root.join("etc")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn symlink_loops_fail() {
        let root = scratch();
        symlink("/b", root.join("a")).unwrap();
        symlink("/a", root.join("b")).unwrap();
        assert!(resolve_in_root(&root, Path::new("/a")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
