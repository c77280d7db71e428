//! Seccomp: the spec's profile (`linux.seccomp`) as one kernel BPF filter, nook's
//! default profile, and profile files in podman's (docker's) JSON format.
//!
//! - [`Filter`] compiles an OCI `LinuxSeccomp` (compile.rs: the layout, and why it is
//!   not one seccompiler filter per action) and installs it with seccomp(2);
//! - [`default`] is the profile `nook run` and `nook exec` apply unless told otherwise:
//!   podman's policy, written as nook's own data;
//! - [`profile`] reads `--security-opt seccomp=FILE` (podman's format: `includes` and
//!   `excludes` by capability and architecture, `archMap`, errno names) into an OCI
//!   `LinuxSeccomp`, as containers/common does, refusing a bad file with one line that
//!   names the field.
//!
//! The OCI runtime commands run a bundle's profile as given and add none (runc's
//! behaviour); nook's own commands put the profile into the spec (cli/src/spec.rs).

mod compile;
pub mod default;
pub mod profile;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};
use seccompiler::BpfProgram;

use crate::error::{Error, Result};

pub use compile::MAX_ERRNO;

/// A compiled profile, ready to install (in the container's process, after clone or
/// fork: compiling before keeps allocation and failure out of the child).
#[derive(Clone, Debug)]
pub struct Filter {
    program: BpfProgram,
    flags: libc::c_ulong,
}

impl Filter {
    /// Compiles `seccomp`; refuses what the kernel or nook cannot do (an errno out of
    /// range, SCMP_ACT_NOTIFY, an argument index past 5), naming the spec's field.
    pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
        let mut flags: libc::c_ulong = 0;
        for flag in seccomp.flags().as_deref().unwrap_or_default() {
            flags |= match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // The process is single-threaded here: TSYNC has nothing to synchronise;
                // WAIT_KILLABLE_RECV concerns user notification, which is refused.
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync
                | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        Ok(Filter {
            program: compile::compile(seccomp)?,
            flags,
        })
    }

    /// Installs the filter on the calling thread (inherited by exec and children).
    /// Needs no_new_privs or CAP_SYS_ADMIN in the current user namespace. Not
    /// seccompiler's `apply_filter`: that one also sets no_new_privs, which the spec's
    /// `noNewPrivileges: false` forbids.
    pub fn install(&self) -> Result<()> {
        let filter: Vec<libc::sock_filter> = self
            .program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let len = u16::try_from(filter.len()).map_err(|_| {
            Error::Spec("the seccomp profile compiles to too large a filter".into())
        })?;
        let prog = libc::sock_fprog {
            len,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points to `filter`, alive across the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Error::sys(
                "installing the seccomp profile",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Its length in BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

/// Compiles and installs `seccomp` on the calling thread.
pub fn apply(seccomp: &LinuxSeccomp) -> Result<()> {
    Filter::compile(seccomp)?.install()
}

/// Whether this kernel lets this process install a seccomp filter: tried in a
/// short-lived child (no_new_privs, a filter that allows everything), so that an
/// enclosing container's filter that refuses seccomp(2) shows up too. `Err` says why not.
pub fn filters_work() -> std::result::Result<(), String> {
    // SAFETY: prctl(PR_GET_SECCOMP) reads this thread's mode and touches no memory.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } < 0 {
        return Err("this kernel has no seccomp support (CONFIG_SECCOMP)".into());
    }
    let allow = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the child only makes raw syscalls (prctl, seccomp, _exit) on memory
    // prepared before the fork, so a multi-threaded parent is safe too.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: as above; _exit never returns.
            unsafe {
                let mut code = 0;
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    code = 1;
                } else if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ) != 0
                {
                    code = 2 + (*libc::__errno_location()).clamp(0, 200);
                }
                libc::_exit(code)
            }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return Err("waiting for the probe".into());
                }
            }
            match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
                Some(0) => Ok(()),
                Some(1) => Err("prctl(PR_SET_NO_NEW_PRIVS) is refused".into()),
                Some(c) if c >= 2 => Err(format!(
                    "installing a filter fails: {} (a kernel without CONFIG_SECCOMP_FILTER, \
                     or an enclosing filter that refuses seccomp(2))",
                    std::io::Error::from_raw_os_error(c - 2)
                )),
                _ => Err("the probe died".into()),
            }
        }
    }
}

/// Whether seccomp(2) exists at all (PR_GET_SECCOMP answers): one cheap syscall, for the
/// start path, which leaves the default profile out on a kernel without seccomp.
pub fn kernel_has_seccomp() -> bool {
    // SAFETY: prctl(PR_GET_SECCOMP) reads this thread's mode and touches no memory.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
}
