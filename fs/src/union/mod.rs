//! Union root filesystems: a container's root as read-only image layers plus its own
//! writable layer, without root.
//!
//! Three drivers share one on-disk format, so a container's writable layer reads the
//! same whichever driver mounted it:
//!
//! * [`overlay`]: kernel overlayfs, mounted by the container's first process inside its
//!   user and mount namespace (Linux >= 5.11, option `userxattr`). Expressed as the
//!   Spec's mount at `/`; the rootless crate performs it like any other mount.
//! * [`fuse`]: nook's own union filesystem on `fuser`. The container's first process
//!   opens /dev/fuse and mounts it at the root (so the connection belongs to the
//!   container's user namespace); the descriptor is passed to the supervisor, whose
//!   threads serve it, operating on the layer directories as the host user.
//! * [`copy`]: every layer copied (reflinked where the filesystem can) into one plain
//!   directory, whiteouts applied; for hosts with neither of the above.
//!
//! [`probe`] decides which to use (once per boot and kernel, cached in the runtime dir);
//! `--storage-driver` overrides it.
//!
//! # The layer format (agreed with the image unpacker)
//!
//! A layer is a plain directory tree. The tar form's `.wh.` entries are converted by the
//! unpacker into the form kernel overlayfs reads in a user namespace with `userxattr`,
//! which is also what it *writes* there (checked on Linux 6.18 as an unprivileged user,
//! see `tests/tests/unionfs_format.rs`):
//!
//! | tar entry            | on disk                                                      |
//! |----------------------|--------------------------------------------------------------|
//! | `dir/.wh.NAME`       | `dir/NAME`: a character device 0/0 ([`WhiteoutForm::Device`]) |
//! | `dir/.wh..wh..opq`   | xattr `user.overlay.opaque` = `y` on `dir`                   |
//!
//! Unprivileged `mknod` of a 0/0 character device is allowed since Linux 5.8 (whiteouts
//! are exempt from CAP_MKNOD). On older kernels, where only the FUSE driver works
//! anyway, the fallback is [`WhiteoutForm::Xattr`]: an empty regular file `dir/NAME`
//! carrying xattr `user.overlay.whiteout` (any value), with `user.overlay.opaque` = `x`
//! on `dir` (overlayfs >= 6.7's marker for "holds xattr whiteouts, not opaque"). Every
//! reader here accepts both forms; [`make_whiteout`] writes the device form when it can.
//! Use [`make_whiteout`] and [`set_opaque`] from the unpacker so both sides stay in step.
//!
//! A container's writable layer is a directory ([`ContainerLayer`]) holding `diff/` (the
//! upper layer, the same format), `work/` (overlayfs's work dir; FUSE and copy-up use
//! it for atomic copies) and `merged/` (the mount point). The copy driver keeps its
//! whole tree in `copy/`.

pub mod copy;
pub mod diff;
pub mod fuse;
pub mod overlay;
pub mod probe;
mod sys;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use probe::{choose, Choice};

/// xattr marking a directory opaque (`y`) or holding xattr whiteouts (`x`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// xattr marking an empty regular file as a whiteout (fallback form).
pub const WHITEOUT_XATTR: &str = "user.overlay.whiteout";

/// Errors of the union drivers.
#[derive(Debug, thiserror::Error)]
pub enum UnionError {
    // Shows its cause rather than returning it as `source()`: a chain printer would
    // say it twice.
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("storage driver {driver} is not usable here: {why}")]
    Unusable { driver: Driver, why: String },
    #[error("layer {0}: not a directory")]
    BadLayer(PathBuf),
    #[error("{0}")]
    Other(String),
}

impl UnionError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        UnionError::Io {
            what: what.into(),
            error: source,
        }
    }
}

pub type Result<T> = std::result::Result<T, UnionError>;

/// Which union driver mounts a container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    Overlay,
    Fuse,
    Copy,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Fuse => "fuse",
            Driver::Copy => "copy",
        }
    }

    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "overlay" => Some(Driver::Overlay),
            "fuse" | "fuse-overlayfs" => Some(Driver::Fuse),
            "copy" | "vfs" => Some(Driver::Copy),
            _ => None,
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The read-only layers of a root, lowest first (the order of an image manifest).
#[derive(Debug, Clone)]
pub struct Layers {
    pub lower: Vec<PathBuf>,
}

impl Layers {
    /// Checks that every layer is a directory and makes the paths absolute.
    pub fn new(lower: Vec<PathBuf>) -> Result<Layers> {
        let mut out = Vec::with_capacity(lower.len());
        for l in lower {
            let abs = l
                .canonicalize()
                .map_err(|e| UnionError::io(format!("layer {}", l.display()), e))?;
            if !abs.is_dir() {
                return Err(UnionError::BadLayer(l));
            }
            out.push(abs);
        }
        Ok(Layers { lower: out })
    }

    /// Topmost first, as union lookups walk them.
    pub fn top_down(&self) -> impl Iterator<Item = &Path> {
        self.lower.iter().rev().map(PathBuf::as_path)
    }
}

/// A container's writable layer: `diff/` (upper), `work/`, `merged/` (mount point),
/// `copy/` (the copy driver's tree).
#[derive(Debug, Clone)]
pub struct ContainerLayer {
    pub dir: PathBuf,
}

impl ContainerLayer {
    /// Creates the directory and its parts (0700 for the container dir: the layer may
    /// hold setuid files of the image).
    pub fn create(dir: &Path) -> Result<ContainerLayer> {
        let mk = |p: &Path, mode: u32| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(p)
                .map_err(|e| UnionError::io(format!("creating {}", p.display()), e))
        };
        mk(dir, 0o700)?;
        let layer = ContainerLayer {
            dir: dir.to_path_buf(),
        };
        mk(&layer.diff(), 0o755)?;
        mk(&layer.work(), 0o700)?;
        mk(&layer.merged(), 0o755)?;
        Ok(layer)
    }

    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
    pub fn copy(&self) -> PathBuf {
        self.dir.join("copy")
    }
}

/// How a whiteout is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutForm {
    /// Character device 0/0 (overlayfs's own form).
    Device,
    /// Empty regular file with `user.overlay.whiteout`; parent has `user.overlay.opaque=x`.
    Xattr,
}

/// True when the entry `meta` (from lstat of `path`) is a whiteout in either form.
pub fn is_whiteout(path: &Path, meta: &std::fs::Metadata) -> bool {
    let ft = meta.file_type();
    if ft.is_char_device() {
        return meta.rdev() == 0;
    }
    ft.is_file() && meta.len() == 0 && sys::has_xattr(path, WHITEOUT_XATTR)
}

/// True when the directory at `path` is opaque (hides the layers below it).
pub fn is_opaque(path: &Path) -> bool {
    sys::get_xattr(path, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

/// Marks the directory at `path` opaque.
pub fn set_opaque(path: &Path) -> Result<()> {
    sys::set_xattr(path, OPAQUE_XATTR, b"y")
        .map_err(|e| UnionError::io(format!("marking {} opaque", path.display()), e))
}

/// Creates a whiteout named `name` in directory `dir` (which must not have that entry),
/// in the device form where the kernel allows it, else the xattr form.
pub fn make_whiteout(dir: &Path, name: &OsStr) -> Result<WhiteoutForm> {
    let path = dir.join(name);
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| UnionError::Other(format!("{}: NUL in path", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    if r == 0 {
        return Ok(WhiteoutForm::Device);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(UnionError::io(
            format!("creating whiteout {}", path.display()),
            err,
        ));
    }
    crate::store::create_private(&path)
        .map_err(|e| UnionError::io(format!("creating whiteout {}", path.display()), e))?;
    sys::set_xattr(&path, WHITEOUT_XATTR, b"y")
        .map_err(|e| UnionError::io(format!("marking whiteout {}", path.display()), e))?;
    if !is_opaque(dir) {
        let _ = sys::set_xattr(dir, OPAQUE_XATTR, b"x");
    }
    Ok(WhiteoutForm::Xattr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nook-union-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn whiteouts_round_trip() {
        let d = tmp("wh");
        let form = make_whiteout(&d, OsStr::new("gone")).unwrap();
        let p = d.join("gone");
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(is_whiteout(&p, &meta), "{form:?}");
        std::fs::write(d.join("file"), b"").unwrap();
        let m2 = std::fs::symlink_metadata(d.join("file")).unwrap();
        assert!(!is_whiteout(&d.join("file"), &m2));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn driver_names() {
        for d in [Driver::Overlay, Driver::Fuse, Driver::Copy] {
            assert_eq!(Driver::parse(d.as_str()), Some(d));
        }
        assert_eq!(Driver::parse("zfs"), None);
    }
}
