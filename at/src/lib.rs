//! File operations relative to directory descriptors, and path resolution confined to
//! a root directory: the primitives the unpacker and the copy driver are built from.
//!
//! Every path taken from an image is resolved by [`Root::open`] as if the root were `/`:
//! `..` stops at the root, and absolute symlinks restart at the root, so no entry can
//! reach outside it, whatever symlinks earlier entries planted. The kernel does this
//! itself with `openat2(RESOLVE_IN_ROOT)` (Linux 5.6+); on older kernels (RHEL 8) the
//! same walk is done here one component at a time with `O_NOFOLLOW`, reading each symlink
//! and resolving its target against the same root. The final component of an entry is
//! never followed: it is created, replaced or linked through its parent's descriptor.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS.
const MAX_SYMLINKS: u32 = 40;

pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat(dirfd, name, flags)` for a single component or relative path.
pub fn openat(
    dirfd: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is a valid NUL-terminated string; the fd returned is new and ours.
        let fd = unsafe {
            libc::openat(
                dirfd,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens a directory by path, with no confinement (paths nook chose itself).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    openat(
        libc::AT_FDCWD,
        &cstr(path.as_os_str())?,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
}

pub fn fstatat(dirfd: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is a valid, writable stat.
    check(unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// lstat of `name` in `dirfd`, `None` when it does not exist.
pub fn lstat_opt(dirfd: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    match fstatat(dirfd, name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn readlinkat(dirfd: RawFd, name: &CStr) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its whole length; the kernel writes at most that.
    let n = unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from(std::ffi::OsStr::from_bytes(&buf)))
}

pub fn mkdirat(dirfd: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) }).map(drop)
}

pub fn unlinkat(dirfd: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::unlinkat(dirfd, name.as_ptr(), flags) }).map(drop)
}

pub fn symlinkat(target: &CStr, dirfd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()) }).map(drop)
}

/// A hard link `newdir/newname` to `olddir/oldname`, never following a final symlink.
pub fn linkat(olddir: RawFd, oldname: &CStr, newdir: RawFd, newname: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; flags 0 means the final component is not followed.
    check(unsafe { libc::linkat(olddir, oldname.as_ptr(), newdir, newname.as_ptr(), 0) }).map(drop)
}

pub fn mknodat(dirfd: RawFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::mknodat(dirfd, name.as_ptr(), mode, dev) }).map(drop)
}

/// Owner of `name` in `dirfd` (or of `dirfd` itself with an empty name), not following
/// symlinks. Returns false when the ID is not mapped in this user namespace (a single-ID
/// map squashes such owners to the user).
pub fn chown_at(dirfd: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<bool> {
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: `name` is NUL-terminated.
    match check(unsafe { libc::fchownat(dirfd, name.as_ptr(), uid, gid, flags) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn fchmod(fd: RawFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

/// Sets atime and mtime (seconds) of `name` in `dirfd` (empty name: `dirfd` itself).
pub fn set_times_at(dirfd: RawFd, name: &CStr, mtime: i64, nofollow: bool) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    if name.is_empty() {
        // SAFETY: `times` holds two valid timespecs.
        return check(unsafe { libc::futimens(dirfd, times.as_ptr()) }).map(drop);
    }
    // SAFETY: `name` is NUL-terminated and `times` holds two valid timespecs.
    check(unsafe { libc::utimensat(dirfd, name.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

pub fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is readable for its length.
    check(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// The value of xattr `name` on `fd`, `None` when absent or unsupported.
pub fn fgetxattr(fd: RawFd, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// The names and values of every xattr on `fd` (for copying a file's metadata).
pub fn list_xattrs(fd: RawFd) -> Vec<(CString, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    // SAFETY: `names` is writable for its whole length.
    let n = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let name = CString::new(n).ok()?;
            let mut value = vec![0u8; 65536];
            // SAFETY: `value` is writable for its whole length.
            let len = unsafe {
                libc::fgetxattr(fd, name.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            (len >= 0).then(|| {
                value.truncate(len as usize);
                (name, value)
            })
        })
        .collect()
}

/// Removes `name` in `dirfd`, whatever it is, a whole tree included, without following
/// any symlink.
pub fn remove_all_at(dirfd: RawFd, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_opt(dirfd, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlinkat(dirfd, name, 0);
    }
    let dir = openat(
        dirfd,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    for child in read_dir_names(&dir)? {
        remove_all_at(dir.as_raw_fd(), &child)?;
    }
    drop(dir);
    unlinkat(dirfd, name, libc::AT_REMOVEDIR)
}

/// The names in a directory, `.` and `..` left out.
pub fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes the descriptor over: give it a duplicate.
    let dup = openat(dir.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(dup.as_raw_fd()).map_err(io::Error::from)?;
    std::mem::forget(dup);
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let n = entry.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// A directory that confines path resolution (see the module doc).
pub struct Root {
    fd: OwnedFd,
}

/// 0 unknown, 1 openat2 works, 2 fall back to the userspace walk.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        Ok(Root {
            fd: open_dir(path)?,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `rel` (relative, no `..` needed but allowed) inside the root. `flags` are
    /// open flags; with `O_NOFOLLOW` a final symlink is not followed.
    pub fn open_in(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let state = OPENAT2.load(Ordering::Relaxed);
        if state != 2 && std::env::var_os("NOOK_NO_OPENAT2").is_none() {
            match self.openat2(rel, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    OPENAT2.store(2, Ordering::Relaxed)
                }
                other => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return other;
                }
            }
        }
        self.walk(rel, flags)
    }

    fn openat2(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let path = cstr(if rel.as_os_str().is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        })?;
        // SAFETY: open_how is plain data; all-zero is valid and the fields are set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
        loop {
            // SAFETY: `path` is NUL-terminated; `how` is a valid open_how of the size passed.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: the kernel just returned this descriptor to us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            let e = io::Error::last_os_error();
            // EAGAIN: a concurrent rename raced the lookup; the kernel asks for a retry.
            if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                return Err(e);
            }
        }
    }

    /// The same resolution as openat2(RESOLVE_IN_ROOT), one component at a time.
    pub(crate) fn walk(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        // Pending components, last first; symlink targets are pushed in front of the rest.
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, rel.as_os_str());
        // The directories from the root down to the current one.
        let mut stack: Vec<OwnedFd> = vec![openat(
            self.fd(),
            c".",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?];
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            let cur = stack.last().expect("the root is never popped").as_raw_fd();
            if comp == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let name = cstr(&comp)?;
            let last = todo.is_empty();
            let st = fstatat(cur, &name, libc::AT_SYMLINK_NOFOLLOW);
            if let Ok(st) = &st {
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK
                    && !(last && flags & libc::O_NOFOLLOW != 0)
                {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = readlinkat(cur, &name)?;
                    if target.as_bytes().starts_with(b"/") {
                        stack.truncate(1);
                    }
                    push_components(&mut todo, &target);
                    continue;
                }
            }
            if last {
                return openat(cur, &name, flags | libc::O_NOFOLLOW, 0o600);
            }
            let next = openat(
                cur,
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            stack.push(next);
        }
        // Empty path, or one that ended at a directory after `..` or a symlink.
        let cur = stack.last().expect("the root is never popped").as_raw_fd();
        openat(cur, c".", flags & !libc::O_NOFOLLOW, 0)
    }
}

/// Pushes the components of `path` onto `todo` so that the first is popped first.
fn push_components(todo: &mut Vec<OsString>, path: &OsStr) {
    let parts: Vec<&[u8]> = path
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    for p in parts.into_iter().rev() {
        todo.push(OsStr::from_bytes(p).to_os_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    /// Both resolvers give the same, confined answers.
    #[test]
    fn resolution_stays_inside_the_root() {
        let base = std::env::temp_dir().join(format!("nook-at-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(base.join("outside"), "x").unwrap();
        symlink("/", root.join("abs")).unwrap();
        symlink("../../../..", root.join("d/up")).unwrap();
        symlink("/d/e", root.join("de")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let r = Root::open(&root).unwrap();
        let canon = root.canonicalize().unwrap();
        for walk in [false, true] {
            let open = |p: &str, f| {
                if walk {
                    r.walk(Path::new(p), f)
                } else {
                    r.openat2(Path::new(p), f)
                }
            };
            let dir = libc::O_PATH | libc::O_DIRECTORY;
            assert_eq!(fd_path(&open("abs", dir).unwrap()), canon);
            assert_eq!(fd_path(&open("d/up/d", dir).unwrap()), canon.join("d"));
            assert_eq!(fd_path(&open("../../..", dir).unwrap()), canon);
            assert_eq!(fd_path(&open("de/../e", dir).unwrap()), canon.join("d/e"));
            assert!(open("abs/outside", libc::O_RDONLY).is_err());
            assert!(open("../outside", libc::O_RDONLY).is_err());
            assert_eq!(
                open("loop1", libc::O_RDONLY).unwrap_err().raw_os_error(),
                Some(libc::ELOOP)
            );
            // A final symlink with O_NOFOLLOW is the link itself.
            let l = open("abs", libc::O_PATH | libc::O_NOFOLLOW).unwrap();
            assert_eq!(fd_path(&l), canon.join("abs"));
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
