//! File operations relative to directory descriptors, and path resolution confined to
//! a root directory: the one resolver for every path that comes from an image, a flag or
//! a spec. fs builds the layer unpacker and the copy driver on it; rootless resolves
//! mount destinations, the working directory and masked paths with it; the cli, `nook cp`
//! and the image's /etc/passwd.
//!
//! Every such path is resolved by [`Root::open_in`] as if the root were `/`: `..` stops
//! at the root, absolute symlinks restart at the root, and /proc magic links (fd/N, cwd,
//! root, exe) are refused, so no path can reach outside it, whatever symlinks the tree
//! holds. The kernel does this itself with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` (Linux 5.6+); on older kernels (RHEL 8) the same walk is done
//! here one component at a time with `O_NOFOLLOW`, reading each symlink and resolving its
//! target against the same root. [`Root::open_or_create`] also creates what is missing,
//! inside the root, and returns the descriptor of the object itself: rootless mounts onto
//! that descriptor, so nothing is looked up twice and a component swapped for a symlink
//! after the check cannot redirect the mount. The final component of an image entry is
//! never followed: it is created, replaced or linked through its parent's descriptor.
//!
//! Why not the `pathrs` crate (libpathrs), which does the same: its procfs hardening and
//! handle API are far more than the ~300 lines needed here, with a dependency tree and
//! license to match; this crate is std, libc and nix only, as the setup path of `nook
//! run` wants.
//!
//! [`fstype`] is the one table of filesystem types (statfs magic numbers) that fs and
//! rootless both consult: which ones are network filesystems.

pub mod fstype;

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
    /// RESOLVE_* flags beyond RESOLVE_IN_ROOT and RESOLVE_NO_MAGICLINKS.
    resolve: u64,
    /// Always use the userspace walk (unit tests of the fallback).
    walk_only: bool,
}

/// What [`Root::open_or_create`] creates where a component is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Make {
    /// A directory (0755 whatever the umask), as every missing parent is.
    Dir,
    /// An empty regular file (0644 whatever the umask): the mount point of a file bind
    /// mount.
    File,
}

/// 0 unknown, 1 openat2 works, 2 fall back to the userspace walk.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Retries of one component whose type changed between its lstat and its open (a
/// concurrent swap), and of openat2's EAGAIN (a concurrent rename), before giving up.
const MAX_RETRIES: u32 = 64;

/// Whether openat2 is usable: probed once per process. `NOOK_NO_OPENAT2` forces the
/// walk (tests of the fallback); EPERM counts as missing, as an older seccomp profile
/// (a container runtime nook itself runs under) answers for syscalls it does not know.
fn openat2_usable() -> bool {
    match OPENAT2.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let usable = std::env::var_os("NOOK_NO_OPENAT2").is_none()
        && match raw_openat2(libc::AT_FDCWD, c"/", libc::O_PATH, libc::RESOLVE_IN_ROOT) {
            Ok(_) => true,
            Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)),
        };
    OPENAT2.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
    usable
}

fn raw_openat2(dirfd: RawFd, path: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is valid and the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is NUL-terminated; `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Root {
    /// A layer directory: resolution also stays on its filesystem (RESOLVE_NO_XDEV).
    pub fn open(path: &Path) -> io::Result<Root> {
        Ok(Root {
            fd: open_dir(path)?,
            resolve: libc::RESOLVE_NO_XDEV,
            walk_only: false,
        })
    }

    /// A container's root (before pivot_root its directory on the host, after it `/`):
    /// resolution crosses the mounts made inside it, as the container's own lookups do.
    pub fn open_container(path: &Path) -> io::Result<Root> {
        let fd = openat(
            libc::AT_FDCWD,
            &cstr(path.as_os_str())?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        Ok(Root {
            fd,
            resolve: 0,
            walk_only: false,
        })
    }

    /// A container's root (or a directory in it) from a descriptor already open.
    pub fn container_from_fd(fd: OwnedFd) -> Root {
        Root {
            fd,
            resolve: 0,
            walk_only: false,
        }
    }

    /// The same root, always resolved by the userspace walk (tests of the fallback).
    #[doc(hidden)]
    pub fn walk_only(mut self) -> Root {
        self.walk_only = true;
        self
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The text of `rel` inside the root, at most `limit` bytes of it, when it is a
    /// regular file: a FIFO would block (it is opened O_NONBLOCK and refused), a device
    /// could be endless. Files an image supplies (/etc/passwd, /etc/group) are read so.
    pub fn read_regular(&self, rel: &Path, limit: u64) -> io::Result<String> {
        use std::io::Read;
        let file = std::fs::File::from(self.open_in(rel, libc::O_RDONLY | libc::O_NONBLOCK)?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut text = String::new();
        file.take(limit).read_to_string(&mut text)?;
        Ok(text)
    }

    /// Opens `rel` (relative, no `..` needed but allowed) inside the root. `flags` are
    /// open flags; with `O_NOFOLLOW` a final symlink is not followed. /proc magic links
    /// (/proc/PID/fd/N, cwd, root, exe ...) are refused with ELOOP: they lead to
    /// whatever the process holds, wherever that is.
    pub fn open_in(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        if !self.walk_only && openat2_usable() {
            let path = cstr(if rel.as_os_str().is_empty() {
                OsStr::new(".")
            } else {
                rel.as_os_str()
            })?;
            let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | self.resolve;
            for _ in 0..MAX_RETRIES {
                match raw_openat2(self.fd(), &path, flags, resolve) {
                    // EAGAIN: a concurrent rename raced the lookup; the kernel asks for
                    // a retry. A rename loop could keep that up: the walk holds its own
                    // descriptors for `..` and needs no retry.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {}
                    other => return other,
                }
            }
        }
        self.walk(rel, flags, None)
    }

    /// Opens `rel` inside the root as an `O_PATH` descriptor, creating what is missing
    /// on the way inside the root: directories for the parents, `make` for the final
    /// component. Symlinks are followed inside the root, a final one included (a
    /// dangling `/etc/resolv.conf` gets its target created). What is returned is the
    /// object itself, never a symlink, so it can be mounted on with no second lookup.
    pub fn open_or_create(&self, rel: &Path, make: Make) -> io::Result<OwnedFd> {
        match self.open_in(rel, libc::O_PATH) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        // The common case, only the final component missing: create it through its
        // parent's descriptor, and check that what is opened is what was made.
        if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
            if let Ok(dir) = self.open_in(parent, libc::O_PATH | libc::O_DIRECTORY) {
                let name = cstr(name)?;
                match create(dir.as_raw_fd(), &name, make) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // A directory is opened as one (a symlink fails, ENOTDIR); a file is
                // checked after.
                let flags = match make {
                    Make::Dir => libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
                    Make::File => libc::O_PATH | libc::O_NOFOLLOW,
                };
                match openat(dir.as_raw_fd(), &name, flags, 0) {
                    Ok(fd) if make == Make::Dir || !is_symlink(&fd)? => return Ok(fd),
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                    Err(e) => return Err(e),
                }
                // A (dangling) symlink: the walk follows it and creates its target.
            }
        }
        self.walk(rel, libc::O_PATH, Some(make))
    }

    /// The same resolution as openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), one
    /// component at a time; with `make`, missing components are created on the way.
    /// Every component is opened with O_NOFOLLOW through its parent's descriptor and
    /// `..` pops a descriptor this walk holds, so no kernel lookup ever follows a
    /// symlink or climbs out; a component swapped between its lstat and its open is
    /// looked at again.
    pub(crate) fn walk(
        &self,
        rel: &Path,
        flags: libc::c_int,
        make: Option<Make>,
    ) -> io::Result<OwnedFd> {
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
        let mut retries = 0;
        let mut retry = |todo: &mut Vec<OsString>, comp: OsString| {
            retries += 1;
            todo.push(comp);
            if retries > MAX_RETRIES {
                return Err(io::Error::other(
                    "a path component kept changing while it was resolved",
                ));
            }
            Ok(())
        };
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
            let st = match fstatat(cur, &name, libc::AT_SYMLINK_NOFOLLOW) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make.is_some() => {
                    let what = if last {
                        make.expect("checked")
                    } else {
                        Make::Dir
                    };
                    match create(cur, &name, what) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    retry(&mut todo, comp)?;
                    continue;
                }
                other => other,
            };
            if let Ok(st) = &st {
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK
                    && !(last && flags & libc::O_NOFOLLOW != 0)
                {
                    links += 1;
                    if links > MAX_SYMLINKS || is_magic_link_dir(cur)? {
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
            let was_link = |e: &io::Error| {
                matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
                    && lstat_opt(cur, &name)
                        .ok()
                        .flatten()
                        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            };
            if last {
                match openat(cur, &name, flags | libc::O_NOFOLLOW, 0o600) {
                    Err(e) if flags & libc::O_NOFOLLOW == 0 && was_link(&e) => {
                        retry(&mut todo, comp)?;
                        continue;
                    }
                    // O_PATH without O_NOFOLLOW asked for the object: a symlink that
                    // appeared since the lstat is followed, not returned.
                    Ok(fd)
                        if flags & (libc::O_PATH | libc::O_NOFOLLOW) == libc::O_PATH
                            && is_symlink(&fd)? =>
                    {
                        retry(&mut todo, comp)?;
                        continue;
                    }
                    other => return other,
                }
            }
            match openat(
                cur,
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(next) => stack.push(next),
                Err(e) if was_link(&e) => retry(&mut todo, comp)?,
                Err(e) => return Err(e),
            }
        }
        // Empty path, or one that ended at a directory after `..` or a symlink.
        let cur = stack.last().expect("the root is never popped").as_raw_fd();
        openat(cur, c".", flags & !libc::O_NOFOLLOW, 0)
    }
}

/// Creates `name` in `dirfd` as `make` says, with its mode exactly (0755, 0644): a
/// caller's umask of 077 must not make a directory of the container's tree (a mount
/// point, a layer's missing parent) unreadable to the container's other users.
fn create(dirfd: RawFd, name: &CStr, make: Make) -> io::Result<()> {
    let (mode, open) = match make {
        Make::Dir => {
            mkdirat(dirfd, name, 0o755)?;
            (0o755, libc::O_RDONLY | libc::O_DIRECTORY)
        }
        Make::File => {
            mknodat(dirfd, name, libc::S_IFREG | 0o644, 0)?;
            (0o644, libc::O_RDONLY | libc::O_NONBLOCK)
        }
    };
    // Opened without following: if the name was swapped for a symlink meanwhile, the
    // open fails, nothing is changed, and the caller's lstat sees what is there now.
    if let Ok(fd) = openat(dirfd, name, open | libc::O_NOFOLLOW, 0) {
        fchmod(fd.as_raw_fd(), mode)?;
    }
    Ok(())
}

fn is_symlink(fd: &OwnedFd) -> io::Result<bool> {
    let st = fstatat(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// Whether a symlink in directory `dirfd` is a /proc magic link: every symlink of procfs
/// below its root directory is one (the root's own, `self`, `mounts` ..., are plain).
fn is_magic_link_dir(dirfd: RawFd) -> io::Result<bool> {
    const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
    const PROC_ROOT_INO: libc::ino_t = 1;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid, writable statfs.
    check(unsafe { libc::fstatfs(dirfd, &mut fs) })?;
    if fs.f_type as libc::c_long != PROC_SUPER_MAGIC {
        return Ok(false);
    }
    Ok(fstatat(dirfd, c"", libc::AT_EMPTY_PATH)?.st_ino != PROC_ROOT_INO)
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
    use std::path::PathBuf;

    fn fd_path(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("nook-at-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root")).unwrap();
        base
    }

    /// The two resolvers of one root: openat2 and the userspace walk.
    fn both(root: &Path, container: bool) -> [Root; 2] {
        let open = || {
            if container {
                Root::open_container(root).unwrap()
            } else {
                Root::open(root).unwrap()
            }
        };
        [open(), open().walk_only()]
    }

    /// Both resolvers give the same, confined answers.
    #[test]
    fn resolution_stays_inside_the_root() {
        let base = scratch("confined");
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(base.join("outside"), "x").unwrap();
        symlink("/", root.join("abs")).unwrap();
        symlink("../../../..", root.join("d/up")).unwrap();
        symlink("/d/e", root.join("de")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let canon = root.canonicalize().unwrap();
        for r in both(&root, false) {
            let open = |p: &str, f| r.open_in(Path::new(p), f);
            let dir = libc::O_PATH | libc::O_DIRECTORY;
            assert_eq!(fd_path(&open("abs", dir).unwrap()), canon);
            assert_eq!(fd_path(&open("d/up/d", dir).unwrap()), canon.join("d"));
            assert_eq!(fd_path(&open("../../..", dir).unwrap()), canon);
            assert_eq!(fd_path(&open("/../d", dir).unwrap()), canon.join("d"));
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

    /// Missing components are created inside the root, through symlinks that point
    /// out of it (absolute, dangling, `..` chains), never outside.
    #[test]
    fn created_inside_the_root() {
        let base = scratch("create");
        let root = base.join("root");
        let host = base.join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink(&host, root.join("to-host")).unwrap();
        symlink("../../../../../..", root.join("etc/up")).unwrap();
        symlink("../run/stub/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("/x/../../nowhere/dir", root.join("dangling")).unwrap();
        symlink("l2", root.join("l1")).unwrap();
        symlink("l1", root.join("l2")).unwrap();
        let canon = root.canonicalize().unwrap();
        for (i, r) in both(&root, true).into_iter().enumerate() {
            let made = |p: &str, m| r.open_or_create(Path::new(&format!("{p}{i}")), m);
            let fd = made("/to-host/vol", Make::Dir).unwrap();
            let inside = canon
                .join(host.strip_prefix("/").unwrap())
                .join(format!("vol{i}"));
            assert_eq!(fd_path(&fd), inside);
            assert!(inside.is_dir());
            let fd = made("/etc/up/a/b/file", Make::File).unwrap();
            assert_eq!(fd_path(&fd), canon.join(format!("a/b/file{i}")));
            assert!(canon.join(format!("a/b/file{i}")).is_file());
            let fd = made("/dangling/sub", Make::Dir).unwrap();
            assert_eq!(fd_path(&fd), canon.join(format!("nowhere/dir/sub{i}")));
            let e = made("/l1/x", Make::Dir).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        }
        // A dangling final symlink gets its target created (as runc and podman do for
        // an image's /etc/resolv.conf).
        let r = Root::open_container(&root).unwrap().walk_only();
        let fd = r
            .open_or_create(Path::new("/etc/resolv.conf"), Make::File)
            .unwrap();
        assert_eq!(fd_path(&fd), canon.join("run/stub/resolv.conf"));
        let r = Root::open_container(&root).unwrap();
        let fd = r
            .open_or_create(Path::new("/etc/resolv.conf"), Make::File)
            .unwrap();
        assert_eq!(fd_path(&fd), canon.join("run/stub/resolv.conf"));
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "nothing made on the host"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// What is created has its mode whatever the umask. Checked in a child process
    /// of this test binary (the umask is the whole process's; the other tests run in
    /// threads beside this one).
    #[test]
    fn created_with_their_modes_whatever_the_umask() {
        const CHILD: &str = "NOOK_AT_UMASK_CHILD";
        if let Some(root) = std::env::var_os(CHILD) {
            // SAFETY: umask only sets the process's mask.
            unsafe { libc::umask(0o077) };
            for r in both(Path::new(&root), false) {
                let tag = if r.walk_only { "walk" } else { "openat2" };
                r.open_or_create(Path::new(&format!("{tag}/a/b")), Make::Dir)
                    .unwrap();
                r.open_or_create(Path::new(&format!("{tag}/f")), Make::File)
                    .unwrap();
            }
            return;
        }
        let base = scratch("umask");
        let root = base.join("root");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::created_with_their_modes_whatever_the_umask",
                "--test-threads=1",
            ])
            .env(CHILD, &root)
            .status()
            .unwrap();
        assert!(status.success());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        for tag in ["walk", "openat2"] {
            assert_eq!(mode(&format!("{tag}/a")), 0o755);
            assert_eq!(mode(&format!("{tag}/a/b")), 0o755);
            assert_eq!(mode(&format!("{tag}/f")), 0o644);
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// /proc magic links are refused by both resolvers; /proc/self (a plain symlink in
    /// procfs's root) is followed.
    #[test]
    fn magic_links_refused() {
        for r in both(Path::new("/"), true) {
            for p in ["/proc/self/cwd", "/proc/self/root/etc", "/proc/self/fd/0"] {
                let e = r.open_in(Path::new(p), libc::O_PATH).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{p}");
                let e = r.open_or_create(Path::new(p), Make::Dir).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{p}");
            }
            let fd = r.open_in(Path::new("/proc/self/fd"), libc::O_PATH).unwrap();
            let me = std::process::id().to_string();
            assert_eq!(fd_path(&fd), Path::new("/proc").join(me).join("fd"));
        }
    }

    /// A component flipped between a directory and a symlink to a host directory while
    /// the path is resolved and created: every answer is inside the root, and nothing
    /// is ever created in the host directory.
    #[test]
    fn swapped_component_never_leads_out() {
        let base = scratch("swap");
        let root = base.join("root");
        let host = base.join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::create_dir_all(root.join("mnt/x")).unwrap();
        symlink(&host, root.join("mnt/alt")).unwrap();
        let canon = root.canonicalize().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let (a, b) = (
                cstr(root.join("mnt/x").as_os_str()).unwrap(),
                cstr(root.join("mnt/alt").as_os_str()).unwrap(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: both paths are NUL-terminated; RENAME_EXCHANGE swaps them.
                    unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            })
        };
        for r in both(&root, true) {
            for i in 0..500 {
                let rel = format!("/mnt/x/vol{i}");
                let made = [
                    r.open_or_create(Path::new(&rel), Make::Dir),
                    r.open_in(Path::new(&rel), libc::O_PATH),
                ];
                for fd in made.into_iter().flatten() {
                    assert!(fd_path(&fd).starts_with(&canon), "{:?}", fd_path(&fd));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "nothing made on the host"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
