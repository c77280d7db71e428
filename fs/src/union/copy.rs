//! The copy driver: the layers flattened into one plain directory, the container's root,
//! plus the single-entry copy helpers the FUSE driver's copy-up uses.
//!
//! The last resort when neither overlayfs nor FUSE can be mounted. The flattening itself
//! is `crate::flatten` (shared with the image side): each layer, lowest first, applied
//! onto the destination, whiteouts deleting and opaque directories hiding what lies
//! below. Owners are kept, which needs the caller to run this inside a user namespace
//! with the container's ID map (the rootless crate's `run_in_user_namespace`).
//!
//! [`copy_entry`] copies one file, symlink or special file with its owner, mode, xattrs
//! and times; file data is reflinked (FICLONE) where the filesystem shares extents and
//! otherwise copied over its data segments only (SEEK_DATA/SEEK_HOLE), so sparse files
//! stay sparse.
//!
//! The tree is built in `copy.tmp/` and renamed to `copy/` when complete, so an
//! interrupted copy is never mistaken for a finished one; a finished `copy/` is reused
//! (that is how the copy driver's root persists across runs).

use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::union::{sys, ContainerLayer, Layers, Result, UnionError};

/// Builds (or reuses) the container's flattened root and returns its path.
pub fn prepare(layers: &Layers, container: &ContainerLayer) -> Result<PathBuf> {
    let done = container.copy();
    if done.is_dir() {
        return Ok(done);
    }
    let tmp = container.dir.join("copy.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .map_err(|e| UnionError::io(format!("removing {}", tmp.display()), e))?;
    }
    flatten(layers, &tmp)?;
    fs::rename(&tmp, &done)
        .map_err(|e| UnionError::io(format!("renaming {}", tmp.display()), e))?;
    Ok(done)
}

/// Applies every layer of `layers` onto a fresh directory `dest`: the image side's
/// flattener (`crate::flatten`), which walks both trees through descriptors and never
/// follows a symlink of the layers.
pub fn flatten(layers: &Layers, dest: &Path) -> Result<()> {
    // The container's /: 0755 (the layers' own root entry may change it), not the umask's.
    fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .and_then(|()| fs::set_permissions(dest, fs::Permissions::from_mode(0o755)))
        .map_err(|e| UnionError::io(format!("creating {}", dest.display()), e))?;
    crate::flatten::flatten(&layers.lower, dest)
        .map_err(|e| UnionError::io(format!("copying the layers into {}", dest.display()), e))
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| UnionError::io(what.display().to_string(), e))
}

/// Copies one non-directory entry with its metadata.
pub(crate) fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = io(src, fs::read_link(src))?;
        io(dst, std::os::unix::fs::symlink(target, dst))?;
    } else if ft.is_file() {
        let from = io(src, fs::File::open(src))?;
        let to = io(
            dst,
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dst),
        )?;
        io(dst, sys::copy_data(from.as_fd(), to.as_fd(), meta.len()))?;
    } else {
        // fifo, socket, device: mknod (devices other than whiteouts need privilege).
        let c = io(dst, sys::cpath(dst))?;
        // SAFETY: c is a NUL-terminated path.
        let r = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev() as libc::dev_t) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Ok(()); // a device node an unprivileged copy cannot make
            }
            return Err(UnionError::io(dst.display().to_string(), e));
        }
    }
    copy_metadata(src, dst);
    Ok(())
}

/// Owner, mode, xattrs and times of `src` onto `dst` (best effort: a chown outside a
/// user namespace that maps the owner fails and is ignored).
pub(crate) fn copy_metadata(src: &Path, dst: &Path) {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return;
    };
    let Ok(c) = sys::cpath(dst) else { return };
    // SAFETY: c is NUL-terminated; lchown does not follow a final symlink.
    unsafe {
        libc::lchown(c.as_ptr(), meta.uid(), meta.gid());
    }
    sys::copy_xattrs(src, dst);
    if !meta.file_type().is_symlink() {
        // After chown, which clears setuid/setgid.
        let _ = fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    set_times(&c, &meta);
}

pub(crate) fn set_times(c: &CString, meta: &fs::Metadata) {
    let ts = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: c is NUL-terminated and ts points to two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::{make_whiteout, set_opaque};
    use std::ffi::OsStr;

    #[test]
    fn whiteouts_opaque_and_links() {
        let base = std::env::temp_dir().join(format!("nook-copy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (l1, l2, out) = (base.join("l1"), base.join("l2"), base.join("out"));
        fs::create_dir_all(l1.join("d/sub")).unwrap();
        fs::create_dir_all(l1.join("o")).unwrap();
        fs::write(l1.join("d/sub/x"), "x").unwrap();
        fs::write(l1.join("o/old"), "old").unwrap();
        fs::write(l1.join("gone"), "g").unwrap();
        fs::write(l1.join("h1"), "h").unwrap();
        fs::hard_link(l1.join("h1"), l1.join("h2")).unwrap();
        fs::create_dir_all(l2.join("o")).unwrap();
        set_opaque(&l2.join("o")).unwrap();
        fs::write(l2.join("o/new"), "new").unwrap();
        make_whiteout(&l2, OsStr::new("gone")).unwrap();
        fs::write(
            l2.join("d/sub/x").parent().map(|_| l2.join("top")).unwrap(),
            "t",
        )
        .unwrap();
        let layers = Layers::new(vec![l1, l2]).unwrap();
        flatten(&layers, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("d/sub/x")).unwrap(), "x");
        assert!(!out.join("gone").exists());
        assert!(!out.join("o/old").exists());
        assert_eq!(fs::read_to_string(out.join("o/new")).unwrap(), "new");
        assert_eq!(fs::metadata(out.join("h1")).unwrap().nlink(), 2);
        assert_eq!(fs::read_to_string(out.join("top")).unwrap(), "t");
        fs::remove_dir_all(&base).unwrap();
    }
}
