//! The only ways the FUSE server reaches into a layer: one name at a time, below a
//! directory descriptor it already holds, never following a symlink.
//!
//! Invariant (docs/security.md): every file the server touches is reached from a layer's
//! root descriptor through a chain of directory descriptors, each opened from the one
//! before with a single component name (no `/`, not `.` or `..`) and `O_NOFOLLOW`; the
//! final component of an operation is acted on through its parent's descriptor with
//! `AT_SYMLINK_NOFOLLOW` / `O_NOFOLLOW`, or through a descriptor of the object itself.
//! No path string with more than one component is ever given to the kernel, so no
//! symlink a container plants (absolute or with `..`) can lead anywhere: a symlink in a
//! layer is data the server returns (readlink), never a path it follows. The server's own
//! `/proc/self/fd/N` links are the one exception, and they name descriptors the server
//! opened this way (the kernel has no descriptor form of chmod, truncate or the xattr
//! calls for O_PATH descriptors on every supported kernel).
//!
//! Why not openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): nothing here resolves a
//! multi-component path, so there is nothing for it to confine; the one-name-at-a-time
//! walk gives the same guarantee on every kernel (RHEL 8's 4.18 has no openat2), and the
//! descriptors it opens are cached for the lookups that follow.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A file name as the kernel passes it: one component. Anything else (a `/`, `.`, `..`,
/// NUL, empty) is refused, so no name can walk out of the directory it is used in.
pub(super) fn component(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`: `name` is one component.
pub(super) fn open_at(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    nook_at::openat(dir, name, flags | libc::O_NOFOLLOW, mode)
}

/// The directory `name` in `dir`, opened for reading (so the xattr and getdents calls
/// work on the descriptor), or as O_PATH where reading is not allowed. Never a symlink.
pub(super) fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    match open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
        }
        r => r,
    }
}

/// lstat of `name` in `dir`.
pub(super) fn stat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` writable.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub(super) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: as in stat_at.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, `st` writable.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `/proc/self/fd/N`: the inode of a descriptor the server opened itself (for the calls
/// that have no form taking an O_PATH descriptor). The kernel resolves the link to that
/// very inode, a symlink included, and follows nothing further.
pub(super) fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

/// Whether a descriptor-taking call failed only because `fd` is O_PATH.
fn o_path(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBADF)
}

pub(super) fn chmod_fd(fd: RawFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    match check(unsafe { libc::fchmod(fd, mode) }) {
        Err(e) if o_path(&e) => {
            // SAFETY: NUL-terminated path naming our own descriptor.
            check(unsafe { libc::chmod(proc_path(fd).as_ptr(), mode) })
        }
        r => r,
    }
}

pub(super) fn chown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: an empty path with AT_EMPTY_PATH acts on `fd` itself (O_PATH included).
    check(unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets the size of the regular file `fd` (truncate(2) refuses anything else).
pub(super) fn truncate_fd(fd: RawFd, size: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    match check(unsafe { libc::ftruncate(fd, size) }) {
        Err(e) if o_path(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: NUL-terminated path naming our own descriptor.
            check(unsafe { libc::truncate(proc_path(fd).as_ptr(), size) })
        }
        r => r,
    }
}

pub(super) fn utimens_fd(fd: RawFd, ts: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: an empty path with AT_EMPTY_PATH acts on `fd` itself; two timespecs.
    match check(unsafe {
        libc::utimensat(
            fd,
            c"".as_ptr(),
            ts.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    }) {
        // Kernels before AT_EMPTY_PATH for utimensat: the descriptor's own inode.
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) =>
        {
            // SAFETY: NUL-terminated path naming our own descriptor; two timespecs.
            check(unsafe {
                libc::utimensat(libc::AT_FDCWD, proc_path(fd).as_ptr(), ts.as_ptr(), 0)
            })
        }
        r => r,
    }
}

pub(super) fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an O_PATH descriptor of a symlink with an empty path reads that link;
    // `buf` is writable for its length.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A hard link `name` in `dir` to the inode of `fd` (linkat with AT_EMPTY_PATH needs
/// CAP_DAC_READ_SEARCH in the initial namespace; the /proc link does not).
pub(super) fn link_fd(fd: RawFd, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated paths; the /proc link names our own descriptor's inode.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path(fd).as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Owner of `name` in `dir`, the final name not followed (a symlink's own owner).
pub(super) fn chown_at(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is one NUL-terminated component below an open directory.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

/// Times of `name` in `dir`, the final name not followed.
pub(super) fn utimens_at(dir: RawFd, name: &CStr, ts: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `name` is one NUL-terminated component below an open directory; two
    // timespecs.
    check(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Moves `old` in `olddir` to `new` in `newdir` (renameat2 `flags`, 0 for none). Neither
/// name is followed: rename acts on the entries themselves.
pub(super) fn rename_at(
    olddir: RawFd,
    old: &CStr,
    newdir: RawFd,
    new: &CStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: single NUL-terminated components below open directories.
    check(unsafe {
        if flags == 0 {
            libc::renameat(olddir, old.as_ptr(), newdir, new.as_ptr())
        } else {
            libc::renameat2(olddir, old.as_ptr(), newdir, new.as_ptr(), flags)
        }
    })
}

/// Reopens the inode of `fd` (an O_PATH descriptor) with `flags`. A symlink cannot be
/// reopened (ELOOP): only regular files and directories are opened this way.
pub(super) fn reopen(fd: RawFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated path naming our own descriptor.
    let r = unsafe { libc::open(proc_path(fd).as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The xattr calls on the inode of `fd`: on the descriptor where the kernel allows it,
/// else (O_PATH) through its /proc link.
pub(super) enum Xattr<'a> {
    Get(&'a CStr, &'a mut [u8]),
    Set(&'a CStr, &'a [u8], libc::c_int),
    List(&'a mut [u8]),
    Remove(&'a CStr),
}

pub(super) fn xattr_fd(fd: RawFd, op: Xattr) -> io::Result<usize> {
    let ptr_of = |b: &mut [u8]| -> *mut libc::c_void {
        if b.is_empty() {
            std::ptr::null_mut()
        } else {
            b.as_mut_ptr().cast()
        }
    };
    let direct = |op: &mut Xattr| -> isize {
        // SAFETY (each arm): NUL-terminated names, buffers valid for their lengths (a
        // null buffer of length 0 only asks for the size).
        unsafe {
            match op {
                Xattr::Get(n, b) => libc::fgetxattr(fd, n.as_ptr(), ptr_of(b), b.len()),
                Xattr::Set(n, v, f) => {
                    libc::fsetxattr(fd, n.as_ptr(), v.as_ptr().cast(), v.len(), *f) as isize
                }
                Xattr::List(b) => libc::flistxattr(fd, ptr_of(b).cast(), b.len()),
                Xattr::Remove(n) => libc::fremovexattr(fd, n.as_ptr()) as isize,
            }
        }
    };
    let mut op = op;
    let r = direct(&mut op);
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    if !o_path(&e) {
        return Err(e);
    }
    let p = proc_path(fd);
    // SAFETY (each arm): as above; `p` names our own descriptor, and the following
    // calls resolve its /proc link to exactly that inode.
    let r = unsafe {
        match &mut op {
            Xattr::Get(n, b) => libc::getxattr(p.as_ptr(), n.as_ptr(), ptr_of(b), b.len()),
            Xattr::Set(n, v, f) => {
                libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), *f) as isize
            }
            Xattr::List(b) => libc::listxattr(p.as_ptr(), ptr_of(b).cast(), b.len()),
            Xattr::Remove(n) => libc::removexattr(p.as_ptr(), n.as_ptr()) as isize,
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// The value of xattr `name` on `fd` (up to 64 KiB), None when absent.
pub(super) fn get_xattr(fd: RawFd, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match xattr_fd(fd, Xattr::Get(name, &mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 => {
                buf.resize(65536, 0)
            }
            Err(_) => return None,
        }
    }
}

/// Every xattr name on `fd`.
pub(super) fn list_xattrs(fd: RawFd) -> io::Result<Vec<u8>> {
    loop {
        let n = xattr_fd(fd, Xattr::List(&mut []))?;
        let mut buf = vec![0u8; n];
        match xattr_fd(fd, Xattr::List(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The list grew in between: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Owner, xattrs (but overlay's own), mode and times of `src` onto `dst`, both
/// descriptors of the same kind of file (best effort, as a copy-up: a chown to an ID not
/// mapped here fails and the copy keeps the server's IDs).
pub(super) fn copy_metadata(src: RawFd, dst: RawFd, symlink: bool) {
    let Ok(st) = fstat(src) else { return };
    let _ = chown_fd(dst, st.st_uid, st.st_gid);
    if let Ok(names) = list_xattrs(src) {
        for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if n.starts_with(b"user.overlay.") || n.starts_with(b"trusted.overlay.") {
                continue;
            }
            let Ok(name) = CString::new(n) else { continue };
            if let Some(v) = get_xattr(src, &name) {
                let _ = xattr_fd(dst, Xattr::Set(&name, &v, 0));
            }
        }
    }
    if !symlink {
        // After chown, which clears setuid/setgid.
        let _ = chmod_fd(dst, st.st_mode & 0o7777);
    }
    let ts = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    let _ = utimens_fd(dst, &ts);
}

/// Names of a directory read through `dir` (a fresh descriptor is opened, so the
/// caller's offset is untouched), `.` and `..` left out, with their d_type.
pub(super) fn read_dir(
    dir: RawFd,
    mut each: impl FnMut(&CStr, u8, u64) -> io::Result<bool>,
) -> io::Result<()> {
    let fd = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = getdents(fd.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        for e in Dirents::new(&buf[..n]) {
            if e.name == c"." || e.name == c".." {
                continue;
            }
            if !each(e.name, e.kind, e.ino)? {
                return Ok(());
            }
        }
    }
}

/// getdents64 into `buf`; returns the bytes filled (0 at the end).
pub(super) fn getdents(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for its length; the kernel writes whole records.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One record of getdents64. Hand-parsed because the FUSE offsets of a streamed listing
/// are the filesystem's own `d_off` cookies, which nix's and std's iterators hide.
pub(super) struct Dirent<'a> {
    pub ino: u64,
    pub off: i64,
    pub kind: u8,
    pub name: &'a CStr,
    /// The record's length in the buffer.
    pub len: usize,
}

pub(super) struct Dirents<'a> {
    buf: &'a [u8],
}

impl<'a> Dirents<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dirents { buf }
    }
}

impl<'a> Iterator for Dirents<'a> {
    type Item = Dirent<'a>;
    fn next(&mut self) -> Option<Dirent<'a>> {
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        const NAME: usize = 19;
        if self.buf.len() < NAME + 1 {
            return None;
        }
        let b = self.buf;
        let ino = u64::from_ne_bytes(b[0..8].try_into().ok()?);
        let off = i64::from_ne_bytes(b[8..16].try_into().ok()?);
        let reclen = u16::from_ne_bytes(b[16..18].try_into().ok()?) as usize;
        if reclen < NAME + 1 || reclen > b.len() {
            return None;
        }
        let name = CStr::from_bytes_until_nul(&b[NAME..reclen]).ok()?;
        self.buf = &b[reclen..];
        Some(Dirent {
            ino,
            off,
            kind: b[18],
            name,
            len: reclen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn components_only() {
        for bad in ["", ".", "..", "a/b", "/abs", "a\0b"] {
            assert!(component(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(component(OsStr::new("a..b")).unwrap().as_bytes(), b"a..b");
    }

    /// Symlinks are never followed: a directory symlink cannot be opened as a directory,
    /// a file symlink not as a file, and a chmod through the descriptor of a symlink's
    /// parent reaches nothing outside.
    #[test]
    fn no_symlink_is_followed() {
        let base = std::env::temp_dir().join(format!("nook-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("layer")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/f"), "x").unwrap();
        symlink(base.join("outside"), base.join("layer/d")).unwrap();
        symlink(base.join("outside/f"), base.join("layer/f")).unwrap();
        let root = crate::at::open_dir(&base.join("layer")).unwrap();
        let r = root.as_raw_fd();
        assert!(open_dir_at(r, c"d").is_err());
        assert!(open_at(r, c"f", libc::O_RDWR, 0).is_err());
        let l = open_at(r, c"f", libc::O_PATH, 0).unwrap();
        assert_eq!(
            readlink_fd(l.as_raw_fd()).unwrap(),
            base.join("outside/f").as_os_str().as_bytes()
        );
        // The link's own inode, not its target: a reopen is refused.
        assert!(reopen(l.as_raw_fd(), libc::O_RDWR).is_err());
        assert!(truncate_fd(l.as_raw_fd(), 0).is_err());
        assert_eq!(std::fs::read(base.join("outside/f")).unwrap(), b"x");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn dirents_parse_and_offsets_resume() {
        let base = std::env::temp_dir().join(format!("nook-dirents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        for i in 0..300 {
            std::fs::write(base.join(format!("f{i}")), "").unwrap();
        }
        let d = crate::at::open_dir(&base).unwrap();
        let mut names = Vec::new();
        read_dir(d.as_raw_fd(), |n, _, _| {
            names.push(n.to_owned());
            Ok(true)
        })
        .unwrap();
        assert_eq!(names.len(), 300);
        // Resuming at an entry's d_off gives the entries after it.
        let mut buf = vec![0u8; 4096];
        let n = getdents(d.as_raw_fd(), &mut buf).unwrap();
        let first: Vec<_> = Dirents::new(&buf[..n])
            .map(|e| (e.name.to_owned(), e.off))
            .collect();
        let (_, off) = first[5].clone();
        // SAFETY: lseek on an open directory descriptor.
        assert_eq!(
            unsafe { libc::lseek(d.as_raw_fd(), off, libc::SEEK_SET) },
            off
        );
        let n = getdents(d.as_raw_fd(), &mut buf).unwrap();
        let next = Dirents::new(&buf[..n]).next().unwrap();
        assert_eq!(next.name, first[6].0.as_c_str());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
