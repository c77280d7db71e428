//! Thin, safe wrappers over the few system calls and libc functions the helpers use: the only
//! module with `unsafe`.
//!
//! Each wrapper does one call, checks its result and returns `io::Result`, so the modules that
//! decide ([`crate::privilege`], [`crate::target`]) read as plain Rust. File descriptors are
//! `OwnedFd` from the moment the kernel returns them, so none leaks or is closed twice, and
//! every open is `O_CLOEXEC` (nothing is exec'd, but a descriptor carrying privilege should
//! never be able to outlive us).

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Turns a -1 return into the errno error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a freshly returned descriptor.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by the kernel for this process, is valid, and nothing
    // else owns it: the OwnedFd becomes its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// open(2) of an absolute path.
pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call; no mode
    // argument is needed because `flags` never contains O_CREAT.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// openat(2) relative to `dir`: the only way the target's /proc files are reached.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is a live descriptor borrowed for the call, `name` a valid C string, and
    // `flags` never contains O_CREAT, so no mode argument is read.
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// fstat(2).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size; the kernel fills it on success.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so the kernel initialized the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// The filesystem magic number of the filesystem holding `fd` (fstatfs(2) f_type).
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is writable memory of the right size; the kernel fills it on success.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs returned 0, so the struct is initialized.
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    Ok(unsafe { st.assume_init() }.f_type as i64)
}

/// ioctl(NS_GET_OWNER_UID) on a user-namespace fd: the uid that created the namespace, as
/// seen from our namespace.
pub fn ns_owner_uid(ns: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes exactly one uid_t through the pointer, which points to
    // a live local of that type.
    check(unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_OWNER_UID, &mut uid) })?;
    Ok(uid)
}

/// ioctl(NS_GET_PARENT) on a namespace fd: a new fd for its parent namespace.
pub fn ns_parent(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor or -1.
    owned(unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_PARENT) })
}

/// (real, effective, saved) uid.
pub fn getresuid() -> (u32, u32, u32) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live locals; getresuid cannot fail with valid
    // pointers.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    (r, e, s)
}

/// (real, effective, saved) gid.
pub fn getresgid() -> (u32, u32, u32) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: as for getresuid.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    (r, e, s)
}

/// setresuid(2). glibc applies it to every thread; this program has only one.
pub fn setresuid(r: u32, e: u32, s: u32) -> io::Result<()> {
    // SAFETY: plain system call on integers.
    check(unsafe { libc::setresuid(r, e, s) }).map(drop)
}

/// setresgid(2).
pub fn setresgid(r: u32, e: u32, s: u32) -> io::Result<()> {
    // SAFETY: plain system call on integers.
    check(unsafe { libc::setresgid(r, e, s) }).map(drop)
}

/// prctl(2) with one integer argument.
pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here (PR_SET_KEEPCAPS, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS)
    // take integers only; the unused arguments must be 0.
    check(unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) }).map(drop)
}

/// The kernel's capability ABI, version 3: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This process's (effective, permitted) capability bits for capabilities 0..32 (the ones
/// this program uses are all below 32).
pub fn capget() -> io::Result<(u32, u32)> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data have the kernel's v3 layout (#[repr(C)], two data elements);
    // pid 0 means this thread.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } as i32)?;
    Ok((data[0].effective, data[0].permitted))
}

/// Sets this process's effective and permitted sets (inheritable cleared) to the given bits
/// of capabilities 0..32, and the upper words to nothing.
pub fn capset(effective: u32, permitted: u32) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective,
            permitted,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: as for capget; the kernel only reads `data`.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } as i32).map(drop)
}

/// Whether descriptor `fd` is open.
pub fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Closes every descriptor from `first` up; falls back to a bounded loop on kernels without
/// close_range (before 5.9).
pub fn close_from(first: libc::c_int) {
    // SAFETY: closes descriptors this program has not opened yet (it runs before any open),
    // so no OwnedFd is invalidated.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, u32::MAX, 0) };
    if ret == 0 {
        return;
    }
    for fd in first..65536 {
        // SAFETY: as above; EBADF for descriptors that are not open is expected and ignored.
        unsafe { libc::close(fd) };
    }
}

/// Opens /dev/null read-write without keeping ownership: used to fill a closed 0/1/2 slot,
/// which must stay open for the life of the process.
pub fn open_dev_null_into_lowest_slot() -> io::Result<()> {
    // SAFETY: valid C string; the descriptor is deliberately not wrapped in OwnedFd because
    // it must stay open as stdin/stdout/stderr.
    check(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) }).map(drop)
}

/// Removes every environment variable. Called first thing, before anything could read one.
pub fn clear_env() {
    // SAFETY: the program is single-threaded at this point (main has just started and
    // spawns no threads), so nothing can be reading the environment concurrently.
    unsafe { libc::clearenv() };
}

/// The system page size: the kernel takes a uid_map write only if shorter than this.
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// A passwd entry: (login name, uid, primary gid).
pub type PasswdEntry = (Vec<u8>, u32, u32);

/// getpwuid_r(3): the passwd entry for `uid` through NSS (files, LDAP, sssd...), or None.
pub fn getpwuid(uid: u32) -> io::Result<Option<PasswdEntry>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut pwd = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `pwd`, `buf` and `result` are live for the call and `buf.len()` is the true
        // size of `buf`; glibc stores the strings inside `buf`.
        let err = unsafe {
            libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if err == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success with a non-null result glibc initialized `pwd`, and pw_name
        // points to a NUL-terminated string inside `buf`, which is still alive here.
        let pwd = unsafe { pwd.assume_init() };
        // SAFETY: as above; the bytes are copied out before `buf` is dropped.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_bytes().to_vec();
        return Ok(Some((name, pwd.pw_uid, pwd.pw_gid)));
    }
}

/// Ends the process at once with `code`, without unwinding or running destructors: used
/// from the panic hook, where returning would abort with a different status.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and takes no pointers.
    unsafe { libc::_exit(code) }
}
