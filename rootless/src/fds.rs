//! The process boundary between the host and a container: what a nook process may carry
//! across it, for every path in (`nook run`'s first process and its `--init` reaper,
//! `nook exec`'s joiner and new process, the OCI commands).
//!
//! A process that enters a container's namespaces brings everything it holds: open
//! descriptors (a file of the caller, a directory of the host's /proc, nook's own pipes)
//! and, while it is dumpable, its /proc entries (fd/, cwd, root, exe, environ), which a
//! process of the container with the same uid may open and walk to the host's root
//! (CVE-2024-21626, CVE-2019-5736). So such a process closes every descriptor but the
//! ones passed on purpose, and one that shares the container's pid namespace with other
//! processes before it execs is made non-dumpable: its /proc entries then belong to the
//! host's root and need CAP_SYS_PTRACE of the host's user namespace, which no container
//! has. After the chdir to the working directory, the process checks that it is still
//! inside the container's root. Passed on purpose are stdio, the pty, `--preserve-fds N`
//! (fds 3..3+N, runc's and podman's spelling) and socket activation (LISTEN_FDS).

use std::ops::Range;
use std::os::fd::RawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// The first descriptor passed on purpose (systemd's SD_LISTEN_FDS_START, runc's and
/// podman's `--preserve-fds`).
pub const FIRST_PASSED: RawFd = 3;

/// Descriptors handed to the container's command on purpose: fds 3..3+count of the nook
/// process that started it, which keep their numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassedFds {
    pub count: u32,
    /// Socket activation: the command's LISTEN_PID is set to its own pid at exec (1, or
    /// the command's pid under `--init`), so sd_listen_fds(3) accepts them.
    pub listen: bool,
}

impl PassedFds {
    /// `--preserve-fds N`.
    pub fn preserve(count: u32) -> PassedFds {
        PassedFds {
            count,
            listen: false,
        }
    }

    pub fn range(&self) -> Range<RawFd> {
        FIRST_PASSED..FIRST_PASSED.saturating_add(self.count.min(i32::MAX as u32 - 3) as RawFd)
    }

    /// The first descriptor of the range that this process does not have open, if any:
    /// a caller asking for more than it passes gets a clear error instead of a command
    /// that finds one of nook's own descriptors at that number.
    pub fn first_missing(&self) -> Option<RawFd> {
        self.range().find(|&fd| !is_open(fd))
    }
}

/// Socket activation handed to this process (sd_listen_fds(3)): LISTEN_FDS counts the
/// descriptors from 3, and they are ours only when LISTEN_PID is our pid (as runc and
/// systemd's own library check: a variable inherited from a socket-activated parent
/// names descriptors that are not ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFds {
    pub count: u32,
    /// LISTEN_FDNAMES, passed on as it is.
    pub names: Option<String>,
}

/// LISTEN_FDS of this process, if it was socket-activated.
pub fn listen_fds() -> Option<ListenFds> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let count: u32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    (count > 0).then(|| ListenFds {
        count,
        names: std::env::var("LISTEN_FDNAMES").ok(),
    })
}

/// Whether `fd` is an open descriptor of this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn close_range(first: u32, last: u32, flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: close_range takes two descriptor numbers and flags. Callers only close
    // descriptors that nothing alive in this process refers to any more (see their docs).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The descriptors this process has open, from /proc/self/fd (None without /proc).
fn open_fds() -> Option<Vec<RawFd>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is among them; it is closed once `dir` is dropped,
    // and closing a number that is no longer open is harmless.
    Some(fds)
}

/// Closes every descriptor of this process except `keep`.
///
/// For a process about to enter (or already in) a container's namespaces, forked from a
/// single-threaded nook: nothing in it refers to the closed descriptors any more (the
/// copies of their owners in its memory are never dropped, the process execs or exits).
/// close_range(2) where the kernel has it (5.9), else /proc/self/fd, else every number up
/// to the descriptor limit.
pub fn close_all_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd >= 0)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 0u32;
    let mut ranges = Vec::with_capacity(keep.len() + 1);
    for &k in &keep {
        if k > from {
            ranges.push((from, k - 1));
        }
        from = k + 1;
    }
    ranges.push((from, u32::MAX));
    if ranges.iter().all(|&(a, b)| close_range(a, b, 0).is_ok()) {
        return;
    }
    let open = open_fds().unwrap_or_else(|| (0..fd_limit()).collect());
    for fd in open {
        if keep.binary_search(&(fd as u32)).is_err() {
            // SAFETY: see the function's doc; EBADF for a number not open is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// The soft descriptor limit (at least 1024), for the last-resort close loop.
fn fd_limit() -> RawFd {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    soft.clamp(1024, 1 << 20) as RawFd
}

/// Marks every descriptor from `first` up close-on-exec: whatever nook execs (its
/// supervisor, logger, FUSE server, store helper, hooks, ID-map helpers) starts without
/// the descriptors of nook's caller. Done once at nook's start; the container's command
/// gets the ones passed on purpose back through [`make_inheritable`].
pub fn mark_cloexec_from(first: RawFd) {
    const CLOSE_RANGE_CLOEXEC: libc::c_int = 1 << 2;
    if close_range(first as u32, u32::MAX, CLOSE_RANGE_CLOEXEC).is_ok() {
        return;
    }
    // Before Linux 5.11: one fcntl per open descriptor.
    for fd in open_fds().unwrap_or_default() {
        if fd >= first {
            // SAFETY: F_GETFD/F_SETFD only change the descriptor's close-on-exec flag.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// Clears close-on-exec on `fds`, the descriptors passed on purpose, right before the
/// exec that hands them on (a number not open is skipped: the caller checked them).
pub fn make_inheritable(fds: Range<RawFd>) {
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change the descriptor's close-on-exec flag.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
        }
    }
}

/// PR_SET_DUMPABLE 0: this process's /proc entries become the host root's and need
/// CAP_SYS_PTRACE in the host's user namespace (its memory's), out of any container's
/// reach. An exec of the command makes it dumpable again, as a process of the container.
pub fn make_undumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| Error::sys("making the process non-dumpable (PR_SET_DUMPABLE)", e))
}

/// After the chdir to the working directory `cwd`: refuses a directory outside the
/// container's root, which only a descriptor or a /proc link of the host can lead to
/// (CVE-2024-21626: `-w /proc/self/fd/N`). The kernel then reports the directory as
/// "(unreachable)/...", not as an absolute path.
///
/// `checked_before_filter`: [`enter_cwd_before_filter`] found the same path inside the
/// root before the seccomp filter went on. A profile may deny getcwd(2) itself (or answer
/// it with any errno, or 0): a failing getcwd then tells nothing and is not taken as a
/// refusal (runtime-tools' linux_seccomp does that). An answer of the kernel that the
/// directory is unreachable is refused whatever.
pub fn check_cwd_inside_root(cwd: &Path, checked_before_filter: bool) -> Result<()> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: getcwd writes at most `buf.len()` bytes into `buf`. The raw system call is
    // used because it returns the kernel's answer as it is, whatever the C library does
    // with an unreachable directory. A path the kernel cannot return (longer than
    // PATH_MAX) is refused too: nothing tells where it leads.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if r > 0 && buf[0] == b'/' {
        return Ok(());
    }
    if r <= 0 && checked_before_filter {
        return Ok(());
    }
    if r < 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Setup(format!(
            "the working directory {}: cannot tell whether it is inside the container's \
             root (getcwd: {err}; a seccomp profile that denies getcwd is fine only where \
             the directory can be entered before the profile goes on): refused",
            cwd.display()
        )));
    }
    Err(Error::Setup(format!(
        "the working directory {} is outside the container's root (it leads through a \
         descriptor or link to the host): refused",
        cwd.display()
    )))
}

/// Before a seccomp filter goes on: enters the working directory and checks it
/// ([`check_cwd_inside_root`]) while getcwd(2) still answers. Returns whether it did; a
/// directory that this process cannot enter yet (it may be the container user's only) is
/// left to the chdir before the exec, which reports the error.
pub fn enter_cwd_before_filter(cwd: &Path) -> Result<bool> {
    if nix::unistd::chdir(cwd).is_err() {
        return Ok(false);
    }
    check_cwd_inside_root(cwd, false)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn passed_range_and_missing() {
        assert_eq!(PassedFds::preserve(2).range(), 3..5);
        assert_eq!(PassedFds::default().range(), 3..3);
        assert_eq!(PassedFds::default().first_missing(), None);
        // A number far above anything a test process has open.
        let far = PassedFds::preserve(100_000);
        assert!(far.first_missing().is_some());
    }

    #[test]
    fn cwd_inside_is_accepted() {
        check_cwd_inside_root(Path::new("."), false).unwrap();
    }

    /// A profile that denies getcwd(2), on a thread of its own (a filter binds only the
    /// thread that installs it): the check tells nothing then, and passes only when the
    /// directory was checked before the filter.
    #[test]
    fn getcwd_denied_by_the_profile() {
        let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        let filter = crate::seccomp::Filter::compile(&profile).unwrap();
        std::thread::spawn(move || {
            // Before the filter: entered and found inside.
            assert!(enter_cwd_before_filter(Path::new(".")).unwrap());
            nix::sys::prctl::set_no_new_privs().unwrap();
            filter.install().unwrap();
            let e = check_cwd_inside_root(Path::new("/w"), false).unwrap_err();
            assert!(e.to_string().contains("cannot tell"), "{e}");
            assert!(e.to_string().contains("getcwd"), "{e}");
            check_cwd_inside_root(Path::new("/w"), true).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn cloexec_then_inheritable() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_raw_fd();
        let flags = || unsafe { libc::fcntl(fd, libc::F_GETFD) };
        make_inheritable(fd..fd + 1);
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        mark_cloexec_from(fd);
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn listen_fds_need_our_pid() {
        // The test harness's environment has no LISTEN_PID naming this process.
        if std::env::var("LISTEN_PID").ok() != Some(std::process::id().to_string()) {
            assert_eq!(listen_fds(), None);
        }
    }
}
