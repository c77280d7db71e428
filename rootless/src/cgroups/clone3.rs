//! `clone3(CLONE_INTO_CGROUP)`: the container's first process is born in its cgroup,
//! so not one instruction of it runs outside its limits (Linux 5.7+).
//!
//! Called with fork semantics (no new stack): the child returns here on a copy of the
//! caller's stack, exactly like spawn.rs's clone(2). Kernels (or seccomp filters) that
//! do not know clone3 or the flag make it fail with ENOSYS, E2BIG or EINVAL before any
//! process exists; the caller then clones the old way and moves the child through
//! `cgroup.procs` before releasing it.

use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Clones with `flags` into the cgroup whose directory `cgroup` is open
/// ([`super::Cgroup`]'s leaf). `Ok(None)`: this kernel cannot, nothing was
/// created, fall back. `Ok(Some(0))` in the child, the child's pid in the parent.
///
/// The caller must be single-threaded (the child continues on a copy of this process).
pub(crate) fn clone_into(flags: CloneFlags, cgroup: RawFd) -> Result<Option<Pid>> {
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; stack 0 gives fork
    // semantics (the child runs on a copy of our stack), which is sound because the
    // caller is single-threaded, as for clone(2) in spawn.rs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret >= 0 {
        return Ok(Some(Pid::from_raw(ret as i32)));
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL => {
            Ok(None)
        }
        e => Err(Error::Clone(e)),
    }
}
