//! The copy driver: a container root made by copying the image's layer directories, in
//! order, into one fresh directory (whiteouts delete, opaque directories hide what lies
//! below). Every container gets its own copy, so what it writes never reaches the image.
//!
//! This stands in for the union drivers (issue 5: kernel overlayfs with `userxattr`,
//! fuse-overlayfs): the layer directories are already in overlay's form, so those
//! drivers will mount them as they are and this module stays as the fallback for
//! systems with neither. It runs in the user namespace (the cli's store helper), so
//! owners are copied as the container sees them.
//!
//! File data goes through `copy_file_range` (std's `io::copy` between files), which
//! shares extents on btrfs and XFS and copies in the kernel elsewhere. Both trees are
//! walked through descriptors and nothing is followed: the layers are nook's own, but
//! the destination is built from their symlinks, which must never redirect a write.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::at::{self, Root};
use crate::unpack::{OPAQUE_XATTR, WHITEOUT_XATTR};

/// Copies the layers (lowest first) into `dest`, an existing empty directory.
pub fn flatten(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    let dst_root = Root::open(dest)?;
    for layer in layers {
        let src = at::open_dir(layer)?;
        let dst = at::open_dir(dest)?;
        copy_meta(&src, dst.as_raw_fd(), c"", true)?;
        let mut links = HashMap::new();
        copy_dir(&src, &dst, Path::new(""), &dst_root, &mut links).map_err(|e| {
            // A full disk keeps its errno (crate::space reads it); which layer it was
            // does not matter then.
            if crate::space::is_no_space(&e) {
                return e;
            }
            io::Error::new(e.kind(), format!("copying layer {}: {e}", layer.display()))
        })?;
        let st = at::fstatat(src.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
        at::set_times_at(dst.as_raw_fd(), c"", st.st_mtime, false)?;
    }
    Ok(())
}

fn kind(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// Owner, mode, and (for descriptors that allow it) xattrs of `src` onto `dst`/`name`.
fn copy_meta(src: &OwnedFd, dst_dir: RawFd, name: &std::ffi::CStr, xattrs: bool) -> io::Result<()> {
    let st = at::fstatat(src.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
    at::chown_at(dst_dir, name, st.st_uid, st.st_gid)?;
    let fd = if name.is_empty() {
        None
    } else {
        Some(at::openat(
            dst_dir,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )?)
    };
    let target = fd.as_ref().map_or(dst_dir, |f| f.as_raw_fd());
    at::fchmod(target, st.st_mode & 0o7777)?;
    if xattrs {
        for (k, v) in at::list_xattrs(src.as_raw_fd()) {
            if k.as_bytes().starts_with(b"user.overlay.") {
                continue;
            }
            // Best effort, as the unpack was: what the layer has, this filesystem took.
            let _ = at::fsetxattr(target, &k, &v);
        }
    }
    Ok(())
}

fn copy_dir(
    src: &OwnedFd,
    dst: &OwnedFd,
    rel: &Path,
    dst_root: &Root,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    for name in at::read_dir_names(src)? {
        let st = at::fstatat(s, &name, libc::AT_SYMLINK_NOFOLLOW)?;
        let existing = at::lstat_opt(d, &name)?;
        let child_rel = rel.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match kind(&st) {
            libc::S_IFCHR if st.st_rdev == 0 => {
                // A whiteout: what the lower layers had here is gone.
                at::remove_all_at(d, &name)?;
            }
            libc::S_IFDIR => {
                let sub = at::openat(
                    s,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                let opaque =
                    at::fgetxattr(sub.as_raw_fd(), OPAQUE_XATTR).is_some_and(|v| v == b"y");
                let is_dir = existing.is_some_and(|e| kind(&e) == libc::S_IFDIR);
                if existing.is_some() && (!is_dir || opaque) {
                    at::remove_all_at(d, &name)?;
                }
                if !is_dir || opaque {
                    at::mkdirat(d, &name, 0o700)?;
                }
                let dsub = at::openat(
                    d,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                copy_meta(&sub, dsub.as_raw_fd(), c"", true)?;
                copy_dir(&sub, &dsub, &child_rel, dst_root, links)?;
                at::set_times_at(dsub.as_raw_fd(), c"", st.st_mtime, false)?;
            }
            libc::S_IFREG if st.st_size == 0 && is_xattr_whiteout(s, &name) => {
                at::remove_all_at(d, &name)?;
            }
            libc::S_IFREG => {
                if existing.is_some() {
                    at::remove_all_at(d, &name)?;
                }
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&key) {
                        let parent = dst_root.open_in(
                            first.parent().unwrap_or(Path::new("")),
                            libc::O_PATH | libc::O_DIRECTORY,
                        )?;
                        let fname = at::cstr(first.file_name().expect("a file has a name"))?;
                        at::linkat(parent.as_raw_fd(), &fname, d, &name)?;
                        continue;
                    }
                    links.insert(key, child_rel.clone());
                }
                let sf = at::openat(s, &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
                let df = at::openat(
                    d,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )?;
                // SAFETY: both descriptors are freshly opened and owned; File takes them over.
                let (mut sfile, mut dfile) = unsafe {
                    (
                        File::from_raw_fd(sf.into_raw_fd()),
                        File::from_raw_fd(df.into_raw_fd()),
                    )
                };
                io::copy(&mut sfile, &mut dfile)?;
                let sfd: OwnedFd = sfile.into();
                let dfd: OwnedFd = dfile.into();
                copy_meta(&sfd, dfd.as_raw_fd(), c"", true)?;
                at::set_times_at(dfd.as_raw_fd(), c"", st.st_mtime, false)?;
            }
            libc::S_IFLNK => {
                if existing.is_some() {
                    at::remove_all_at(d, &name)?;
                }
                let target = at::readlinkat(s, &name)?;
                at::symlinkat(&at::cstr(&target)?, d, &name)?;
                at::chown_at(d, &name, st.st_uid, st.st_gid)?;
                at::set_times_at(d, &name, st.st_mtime, true)?;
            }
            libc::S_IFIFO => {
                if existing.is_some() {
                    at::remove_all_at(d, &name)?;
                }
                at::mknodat(d, &name, libc::S_IFIFO | (st.st_mode & 0o777), 0)?;
                at::chown_at(d, &name, st.st_uid, st.st_gid)?;
            }
            // Sockets and devices: the unpack never creates them.
            _ => {}
        }
    }
    Ok(())
}

/// An empty file carrying `user.overlay.whiteout`: the whiteout form for old kernels.
fn is_xattr_whiteout(dir: RawFd, name: &std::ffi::CStr) -> bool {
    at::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        .map(|f| at::fgetxattr(f.as_raw_fd(), WHITEOUT_XATTR).is_some())
        .unwrap_or(false)
}
