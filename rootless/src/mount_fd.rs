//! Mounts made onto descriptors, so nothing is looked up between the check and the mount.
//!
//! The destination is the `O_PATH` descriptor that the confined resolver (nook-at's
//! `Root::open_or_create`) returned for the object itself. With the new mount API (Linux
//! 5.2+) the mount is a detached tree first: `open_tree(OPEN_TREE_CLONE)` of the bind
//! source's descriptor, or `fsopen`/`fsconfig`/`fsmount` for a new filesystem; then
//! `move_mount(MOVE_MOUNT_T_EMPTY_PATH)` attaches it onto the destination's descriptor,
//! and `mount_setattr` (5.12+) changes its flags through the tree's descriptor, which
//! refers to the new mount's root from then on.
//!
//! Before 5.2, mount(2) is given `/proc/self/fd/N` of the destination's descriptor: the
//! kernel follows that magic link to the object itself, not to a path. A later remount
//! needs the new mount's root, which no descriptor held before the mount can name: the
//! destination is resolved again inside the root and must be the mount just made (the
//! bind source's inode, or a new filesystem's root), else nook refuses. Before 5.12 the
//! flags are changed by a remount through `/proc/self/fd/N` of that root.
//!
//! nix has no wrappers for these calls, hence the raw syscalls.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::mount::MsFlags;
use nix::sys::statvfs::{fstatvfs, FsFlags};
use nook_at::Root;

/// MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
pub const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);

/// The longest option value fsconfig(2) takes (its strndup_user limit is 256 bytes with
/// the NUL); a longer one goes through mount(2), which takes a page.
const FSCONFIG_VALUE_MAX: usize = 255;

/// Where a mount goes: the resolved descriptor, and the root and path that gave it (the
/// path is resolved again only where the new mount API is missing).
pub(crate) struct Dest<'a> {
    pub fd: OwnedFd,
    pub root: &'a Root,
    pub path: &'a Path,
}

/// The root of a mount just attached, which later flag and propagation changes act on.
pub(crate) struct Top(OwnedFd);

impl Top {
    /// The mount's root, as a bind source (a clone of this very mount).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// 0 not probed yet, 1 present, 2 missing (or refused by a seccomp filter).
static MOUNT_API: AtomicU8 = AtomicU8::new(0);
static SETATTR: AtomicU8 = AtomicU8::new(0);

/// Probes a syscall once per process: `call` makes it with arguments the kernel rejects
/// with `expected` when the call exists. `NOOK_NO_MOUNT_API` forces the fallback (tests).
fn probed(state: &AtomicU8, call: impl FnOnce() -> libc::c_long, expected: i32) -> bool {
    match state.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let present = std::env::var_os("NOOK_NO_MOUNT_API").is_none()
        && call() < 0
        && io::Error::last_os_error().raw_os_error() == Some(expected);
    state.store(if present { 1 } else { 2 }, Ordering::Relaxed);
    present
}

/// open_tree, move_mount, fsopen, fsconfig, fsmount (Linux 5.2).
fn mount_api() -> bool {
    probed(
        &MOUNT_API,
        // SAFETY: a bad descriptor and a relative name: the call fails with EBADF before
        // it touches anything.
        || unsafe { libc::syscall(libc::SYS_open_tree, -1, c"x".as_ptr(), 0) },
        libc::EBADF,
    )
}

/// mount_setattr (Linux 5.12).
fn setattr_api() -> bool {
    probed(
        &SETATTR,
        // SAFETY: a size below MOUNT_ATTR_SIZE_VER0 fails with EINVAL before anything
        // is read.
        || unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<libc::mount_attr>(),
                0,
            )
        },
        libc::EINVAL,
    )
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    // SAFETY: a successful call returned this new descriptor to us.
    check(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `/proc/self/fd/N`: the magic link the kernel follows to the object `fd` holds.
fn fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an option"))
}

fn stat(fd: RawFd) -> io::Result<libc::stat> {
    nook_at::fstatat(fd, c"", libc::AT_EMPTY_PATH)
}

/// mount(2), with C strings (nix's wrapper wants paths).
fn mount2(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags.bits(),
            ptr(data).cast(),
        )
    };
    check(r as libc::c_long).map(drop)
}

/// Attaches a detached mount (from open_tree or fsmount) onto `dest`.
pub(crate) fn attach(tree: OwnedFd, dest: &Dest) -> io::Result<Top> {
    // SAFETY: two valid descriptors with empty paths, as the EMPTY_PATH flags say.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dest.fd.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(Top(tree))
}

/// Before 5.2: after a mount(2) through `/proc/self/fd/N`, the new mount's root, found by
/// resolving the destination again; `made` says whether what was found is that mount.
fn find_top(dest: &Dest, made: impl FnOnce(&libc::stat) -> bool) -> io::Result<Top> {
    let top = dest.root.open_in(dest.path, libc::O_PATH)?;
    if !made(&stat(top.as_raw_fd())?) {
        return Err(io::Error::other(
            "the destination changed while it was mounted on (a symlink swapped in?): refused",
        ));
    }
    Ok(Top(top))
}

/// Bind mounts the object `src` holds onto `dest` (all its submounts with `recursive`).
pub(crate) fn bind_onto(src: BorrowedFd, recursive: bool, dest: &Dest) -> io::Result<Top> {
    if mount_api() {
        let mut flags =
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: a valid descriptor with an empty path, as AT_EMPTY_PATH says.
        let tree = owned(unsafe {
            libc::syscall(libc::SYS_open_tree, src.as_raw_fd(), c"".as_ptr(), flags)
        })?;
        return attach(tree, dest);
    }
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    let from = fd_path(src.as_raw_fd());
    mount2(
        Some(&from),
        &fd_path(dest.fd.as_raw_fd()),
        None,
        flags,
        None,
    )?;
    let want = stat(src.as_raw_fd())?;
    find_top(dest, |st| {
        st.st_dev == want.st_dev && st.st_ino == want.st_ino
    })
}

/// The fs context's error messages ("e tmpfs: Bad value for 'size'"), for a clear error.
fn context_log(fs: &OwnedFd) -> String {
    let mut log = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let msg = String::from_utf8_lossy(&buf[..n as usize]);
        log.push(msg.trim_start_matches("e ").trim().to_string());
    }
    log.join("; ")
}

/// An error of a new filesystem's setup: its errno (EPERM decides the sysfs and cgroup
/// fallbacks), with the kernel's own words when it gave some.
fn with_log(e: io::Error, fs: &OwnedFd) -> io::Error {
    let log = context_log(fs);
    if log.is_empty() {
        return e;
    }
    io::Error::new(e.kind(), Logged { source: e, log })
}

#[derive(Debug)]
struct Logged {
    source: io::Error,
    log: String,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} ({})", self.source, self.log)
    }
}

impl std::error::Error for Logged {}

/// The errno of an error, through the kernel's log wrapper too.
pub(crate) fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Logged>())
            .and_then(|l| l.source.raw_os_error())
    })
}

/// MOUNT_ATTR_* for per-mount flags among `flags` (the atime mode apart).
fn mount_attrs(flags: MsFlags) -> u64 {
    let mut attr = 0;
    for (ms, a) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
        (MS_NOSYMFOLLOW, libc::MOUNT_ATTR_NOSYMFOLLOW),
    ] {
        if flags.contains(ms) {
            attr |= a;
        }
    }
    attr
}

const ATIME: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// The MOUNT_ATTR_ atime mode `flags` ask for, if any.
fn atime_attr(flags: MsFlags) -> Option<u64> {
    if flags.contains(MsFlags::MS_NOATIME) {
        Some(libc::MOUNT_ATTR_NOATIME)
    } else if flags.contains(MsFlags::MS_STRICTATIME) {
        Some(libc::MOUNT_ATTR_STRICTATIME)
    } else if flags.contains(MsFlags::MS_RELATIME) {
        Some(libc::MOUNT_ATTR_RELATIME)
    } else {
        None
    }
}

/// Mounts a new filesystem of type `typ` onto `dest`: `data` are its options (key=value
/// or flags), `flags` the mount(2) flags (MS_RDONLY makes the filesystem read-only too,
/// as mount(2) does).
pub(crate) fn new_fs_onto(
    typ: &str,
    source: &str,
    data: &[String],
    flags: MsFlags,
    dest: &Dest,
) -> io::Result<Top> {
    let long = data.iter().any(|o| o.len() > FSCONFIG_VALUE_MAX);
    if mount_api() && !long {
        let name = cstring(typ)?;
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let fs =
            owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
        let set = |cmd: libc::c_uint, key: &str, value: Option<&str>| -> io::Result<()> {
            let k = cstring(key)?;
            let v = value.map(cstring).transpose()?;
            let vptr = v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
            // SAFETY: a valid fs context, a command, NUL-terminated key and value (or
            // null for a flag), aux 0.
            check(unsafe {
                libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0)
            })
            .map(drop)
            .map_err(|e| with_log(e, &fs))
        };
        set(libc::FSCONFIG_SET_STRING, "source", Some(source))?;
        for opt in data {
            match opt.split_once('=') {
                Some((k, v)) => set(libc::FSCONFIG_SET_STRING, k, Some(v))?,
                None => set(libc::FSCONFIG_SET_FLAG, opt, None)?,
            }
        }
        for (ms, flag) in [
            (MsFlags::MS_RDONLY, "ro"),
            (MsFlags::MS_SYNCHRONOUS, "sync"),
            (MsFlags::MS_DIRSYNC, "dirsync"),
        ] {
            if flags.contains(ms) {
                set(libc::FSCONFIG_SET_FLAG, flag, None)?;
            }
        }
        // SAFETY: a configured fs context and the create command, no key or value.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        })
        .map_err(|e| with_log(e, &fs))?;
        let attrs = mount_attrs(flags) | atime_attr(flags).unwrap_or(0);
        // SAFETY: a created fs context, flags and MOUNT_ATTR_* bits.
        let mnt = owned(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attrs as libc::c_uint,
            )
        })
        .map_err(|e| with_log(e, &fs))?;
        return attach(mnt, dest);
    }
    let data = (!data.is_empty())
        .then(|| cstring(&data.join(",")))
        .transpose()?;
    let below = stat(dest.fd.as_raw_fd())?;
    mount2(
        Some(&cstring(source)?),
        &fd_path(dest.fd.as_raw_fd()),
        Some(&cstring(typ)?),
        flags,
        data.as_deref(),
    )?;
    // A new filesystem has a device of its own.
    find_top(dest, |st| st.st_dev != below.st_dev)
}

/// Flags of the mount `top` that a remount inside a user namespace must keep (they are
/// locked when they come from a more privileged mount namespace).
fn locked_flags(top: &Top) -> MsFlags {
    fstatvfs(&top.0).map_or(MsFlags::empty(), |st| locked_ms_flags(&st))
}

/// The mount flags of a statvfs result that the kernel locks on a mount inherited from a
/// more privileged mount namespace: a remount must repeat them.
pub(crate) fn locked_ms_flags(st: &nix::sys::statvfs::Statvfs) -> MsFlags {
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    flags
}

fn setattr(fd: RawFd, recursive: bool, attr: &libc::mount_attr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a valid descriptor with an empty path, and a mount_attr of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Adds per-mount `flags` (MS_RDONLY, MS_NOSUID ...) to the mount `top`, to its submounts
/// too with `recursive` (mount_setattr, 5.12+; before, a remount of the top mount only).
/// An atime mode asked for where the source's is locked is left as it is (the kernel
/// would refuse the change).
pub(crate) fn set_flags(top: &Top, flags: MsFlags, recursive: bool) -> io::Result<()> {
    let mut flags = flags;
    if flags.intersects(ATIME) && locked_flags(top).intersects(ATIME) {
        flags -= ATIME;
    }
    if setattr_api() {
        let attr = libc::mount_attr {
            attr_set: mount_attrs(flags),
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        if attr.attr_set != 0 {
            setattr(top.0.as_raw_fd(), recursive, &attr)?;
        }
        if let Some(atime) = atime_attr(flags) {
            // The atime mode of the top mount only: a submount's may be locked.
            let attr = libc::mount_attr {
                attr_set: atime,
                attr_clr: libc::MOUNT_ATTR__ATIME,
                propagation: 0,
                userns_fd: 0,
            };
            setattr(top.0.as_raw_fd(), false, &attr)?;
        }
        return Ok(());
    }
    let all = flags | locked_flags(top) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount2(None, &fd_path(top.0.as_raw_fd()), None, all, None)
}

/// Sets the propagation of the mount `top` (MS_PRIVATE, MS_SLAVE, ..., with MS_REC for
/// its submounts too).
pub(crate) fn set_propagation(top: &Top, propagation: MsFlags) -> io::Result<()> {
    if setattr_api() {
        let attr = libc::mount_attr {
            attr_set: 0,
            attr_clr: 0,
            // MS_* flags are a c_ulong, 32 bits on some targets.
            #[allow(clippy::unnecessary_cast)]
            propagation: (propagation - MsFlags::MS_REC).bits() as u64,
            userns_fd: 0,
        };
        return setattr(
            top.0.as_raw_fd(),
            propagation.contains(MsFlags::MS_REC),
            &attr,
        );
    }
    mount2(None, &fd_path(top.0.as_raw_fd()), None, propagation, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_mount_attrs() {
        let f = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert_eq!(
            mount_attrs(f),
            libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC
        );
        assert_eq!(
            atime_attr(MsFlags::MS_STRICTATIME),
            Some(libc::MOUNT_ATTR_STRICTATIME)
        );
        assert_eq!(atime_attr(MsFlags::MS_NOSUID), None);
    }
}
