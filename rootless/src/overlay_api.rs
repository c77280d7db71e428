//! Overlay roots with more layers than mount(2)'s one page of options holds.
//!
//! mount(2) takes the options as one string of at most a page (4095 bytes): about 40
//! layers of a store under a home directory. The new mount API (fsopen, fsconfig,
//! fsmount, move_mount) takes them one at a time, and since Linux 6.8 overlayfs accepts
//! `lowerdir+` once per layer, so any number of layers fits. nix has no wrapper for
//! these calls, hence the raw syscalls here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};

// From <linux/mount.h>.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// The longest mount data mount(2) accepts.
pub(crate) const MOUNT_DATA_MAX: usize = 4095;

/// One overlay option, with overlayfs's `\` escapes undone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OverlayOption {
    /// A lower layer, topmost first (in `lowerdir=` order).
    Lower(String),
    /// `key=value` (upperdir, workdir, ...).
    Value(String, String),
    /// A flag such as `userxattr`.
    Flag(String),
}

/// Splits `key=value` options; `lowerdir=a:b` into one `Lower` per layer.
pub(crate) fn parse(options: &[String]) -> Vec<OverlayOption> {
    let mut out = Vec::new();
    for opt in options {
        match opt.split_once('=') {
            Some(("lowerdir", layers)) => out.extend(
                split_escaped(layers, ':')
                    .into_iter()
                    .map(OverlayOption::Lower),
            ),
            Some((k, v)) => out.push(OverlayOption::Value(k.into(), unescape(v))),
            None => out.push(OverlayOption::Flag(opt.clone())),
        }
    }
    out
}

fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    parts.last_mut().expect("one part").push(next);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    split_escaped(s, '\0').concat()
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Setup(format!("overlay option {s:?} holds a NUL byte")))
}

fn check(r: libc::c_long, what: &str) -> Result<libc::c_long> {
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Setup(format!("{what}: {e}")));
    }
    Ok(r)
}

/// Mounts overlayfs with `options` on `target` (the root directory, nook's own path)
/// through the new mount API.
pub(crate) fn mount_overlay(options: &[String], target: &Path) -> Result<()> {
    let mnt = overlay_tree(options)?;
    let to = cstr(&target.to_string_lossy())?;
    let empty = cstr("")?;
    // SAFETY: a detached mount fd with an empty path, and an absolute target path.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        },
        "attaching the overlay",
    )?;
    Ok(())
}

/// An overlayfs with `options`, made through the new mount API and not attached yet:
/// the caller moves it onto the root or onto a destination's descriptor.
pub(crate) fn overlay_tree(options: &[String]) -> Result<OwnedFd> {
    let fstype = cstr("overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fs = check(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen(overlay)",
    )?;
    // SAFETY: the kernel just returned this descriptor to us.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |cmd: libc::c_uint, key: &str, value: Option<&str>| -> Result<()> {
        let k = cstr(key)?;
        let v = value.map(cstr).transpose()?;
        let vptr = v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: a valid fs context fd, a command, NUL-terminated key and value (or
        // null for a flag), aux 0.
        let r =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0) };
        check(r, &format!("overlay option {key}")).map(drop)
    };
    for opt in parse(options) {
        match opt {
            OverlayOption::Lower(dir) => set(FSCONFIG_SET_STRING, "lowerdir+", Some(&dir))
                .map_err(|e| {
                    Error::Setup(format!(
                        "{e}: this kernel takes no `lowerdir+` (Linux 6.8 or later does), so an \
                         image with this many layers needs --storage-driver fuse"
                    ))
                })?,
            OverlayOption::Value(k, v) => set(FSCONFIG_SET_STRING, &k, Some(&v))?,
            OverlayOption::Flag(f) => set(FSCONFIG_SET_FLAG, &f, None)?,
        }
    }
    // SAFETY: a valid fs context fd and the create command with no key or value.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        },
        "creating the overlay",
    )?;
    // SAFETY: a configured fs context fd, flags, no mount attributes.
    let mnt = check(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) },
        "fsmount(overlay)",
    )?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_split_and_escapes_undone() {
        let opts = vec![
            r"lowerdir=/l/top:/l/a\:b\,c:/l/base".to_string(),
            r"upperdir=/c/di\:ff".to_string(),
            "userxattr".to_string(),
        ];
        assert_eq!(
            parse(&opts),
            vec![
                OverlayOption::Lower("/l/top".into()),
                OverlayOption::Lower("/l/a:b,c".into()),
                OverlayOption::Lower("/l/base".into()),
                OverlayOption::Value("upperdir".into(), "/c/di:ff".into()),
                OverlayOption::Flag("userxattr".into()),
            ]
        );
    }
}
