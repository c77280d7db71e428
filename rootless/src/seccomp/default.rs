//! nook's default seccomp profile: podman's policy, written as nook's own data.
//!
//! Source of the policy: containers/common, pkg/seccomp/seccomp.json (generated from
//! its default_linux.go), as of commit 8c41d98b (2025-04-07, "seccomp: allow
//! fanotify_init without CAP_SYS_ADMIN"), the profile podman applies to every
//! container. A test (tests below) converts the copy a distribution installs
//! (/usr/share/containers/seccomp.json) with nook's converter and compares the result
//! with this profile's, entry by entry, for nook's default capabilities.
//!
//! The policy, in words:
//! - an allow-list: a syscall not listed fails with ENOSYS, so a program built for a
//!   newer kernel sees "not implemented" and falls back, as it would on an older one;
//! - syscalls that exist but act on the whole machine (kexec, swap, module loading, the
//!   system clock, accounting, raw I/O ports) or that serve mostly exploits (userfaultfd,
//!   vmsplice, obsolete calls) fail with EPERM; several of them are allowed when the
//!   container keeps the capability that governs them (`--cap-add`);
//! - personality() only with the personas programs set (Linux, 32-bit addresses,
//!   no address randomisation, and the query);
//! - socket() refuses the kernel audit netlink (EINVAL) without CAP_AUDIT_WRITE;
//! - a few syscalls belong to one architecture (arch_prctl, modify_ldt, ARM's cache
//!   calls);
//! - the compat ABIs of the machine are filtered with it (archMap: i386 and x32 on
//!   x86_64, arm on aarch64; compile.rs says what nook does with x32).
//!
//! What podman's profile lets through and nook's other layers handle: clone, clone3,
//! unshare and setns (new namespaces nest inside the container's user namespace, where
//! they can own nothing of the host's), mount (confined by the user namespace and the
//! container's mount namespace), keyctl (add_key and request_key, which make keys, are
//! outside the allow-list: ENOSYS), ptrace (only the container's own processes are
//! visible). Docker's profile filters clone's namespace flags and refuses clone3; podman's
//! does not, and neither does nook's: nested containers (podman, bwrap, nook) work.

use std::borrow::Cow;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
};

use super::profile::{Only, Profile, Rule};

/// A short name for the default profile, for `nook info` and messages.
pub const NAME: &str = "podman's (containers/common 2025-04)";

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;
const EINVAL: u32 = libc::EINVAL as u32;

/// What an entry answers.
#[derive(Clone, Copy)]
enum Answer {
    Allow,
    Errno(u32),
}

/// When an entry applies (podman's `includes` and `excludes`).
#[derive(Clone, Copy)]
enum When {
    Always,
    /// On one of these architectures (Go names: amd64, arm64, x86, ...).
    OnArch(&'static [&'static str]),
    /// With every one of these capabilities in the bounding set.
    With(&'static [&'static str]),
    /// With none of these capabilities in the bounding set.
    Without(&'static [&'static str]),
}

/// An argument condition: index, value, comparison.
type Arg = (usize, u64, LinuxSeccompOperator);

struct Entry {
    names: &'static [&'static str],
    answer: Answer,
    when: When,
    args: &'static [Arg],
}

const fn always(names: &'static [&'static str], answer: Answer) -> Entry {
    Entry {
        names,
        answer,
        when: When::Always,
        args: &[],
    }
}

const fn when(names: &'static [&'static str], answer: Answer, when: When) -> Entry {
    Entry {
        names,
        answer,
        when,
        args: &[],
    }
}

const fn with_args(
    names: &'static [&'static str],
    answer: Answer,
    when: When,
    args: &'static [Arg],
) -> Entry {
    Entry {
        names,
        answer,
        when,
        args,
    }
}

use Answer::{Allow, Errno};
use LinuxSeccompOperator::{ScmpCmpEq as EQ, ScmpCmpNe as NE};

/// Everything a container may call, whatever its capabilities (names of every
/// architecture; each is filtered where it exists).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "_llseek", "_newselect", "accept", "accept4", "access", "adjtimex", "alarm", "bind",
    "brk", "capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
    "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "clone", "clone3",
    "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_init", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsconfig",
    "fsetxattr", "fsmount", "fsopen", "fspick", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futimesat",
    "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc",
    "keyctl", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
    "madvise", "mbind", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
    "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mount",
    "mount_setattr", "move_mount", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "open",
    "open_tree", "openat", "openat2", "pause", "pidfd_getfd", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pivot_root", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "process_vm_readv", "process_vm_writev",
    "pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "reboot", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "set_mempolicy", "set_robust_list", "set_thread_area",
    "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
    "setgid32", "setgroups", "setgroups32", "setitimer", "setns", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signal",
    "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "syslog", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill",
    "truncate", "truncate64", "ugetrlimit", "umask", "umount", "umount2", "uname", "unlink",
    "unlinkat", "unshare", "utime", "utimensat", "utimensat_time64", "utimes", "vfork",
    "wait4", "waitid", "waitpid", "write", "writev",
];

/// Refused with EPERM whatever the capabilities: machine-wide state (kexec, swap,
/// NUMA page moves, PCI config), obsolete calls, and calls that mostly serve exploits
/// (userfaultfd, vmsplice), plus calls newer than the allow-list that podman refuses
/// explicitly.
#[rustfmt::skip]
const REFUSED: &[&str] = &[
    "bdflush", "cachestat", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake",
    "io_pgetevents", "io_pgetevents_time64", "kexec_file_load", "kexec_load",
    "map_shadow_stack", "migrate_pages", "move_pages", "nfsservctl", "nice", "oldfstat",
    "oldlstat", "oldolduname", "oldstat", "olduname", "pciconfig_iobase", "pciconfig_read",
    "pciconfig_write", "sgetmask", "ssetmask", "swapoff", "swapon", "syscall", "sysfs",
    "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "vmsplice",
];

/// Calls governed by a capability: allowed with it, EPERM without it.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &[
            "delete_module",
            "finit_module",
            "init_module",
            "query_module",
        ],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "process_madvise"]),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
];

/// CAP_SYS_ADMIN's calls (allowed with it, EPERM without), minus bpf and
/// perf_event_open, whose rules follow in [`SPECIAL`].
const SYS_ADMIN_ALLOWS: &[&str] = &[
    "bpf",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
];
const SYS_ADMIN_REFUSES: &[&str] = &[
    "lookup_dcookie",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
];

/// personality(2) values programs set: PER_LINUX, PER_LINUX32, ADDR_NO_RANDOMIZE (with
/// either), and 0xffffffff, the query.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// AF_NETLINK and NETLINK_AUDIT, for socket()'s rules.
const AF_NETLINK: u64 = 16;
const NETLINK_AUDIT: u64 = 9;

/// The rest of the policy, entry by entry where the conditions are irregular.
const SPECIAL: &[Entry] = &[
    with_args(
        &["personality"],
        Allow,
        When::Always,
        &[(0, PERSONAS[0], EQ)],
    ),
    with_args(
        &["personality"],
        Allow,
        When::Always,
        &[(0, PERSONAS[1], EQ)],
    ),
    with_args(
        &["personality"],
        Allow,
        When::Always,
        &[(0, PERSONAS[2], EQ)],
    ),
    with_args(
        &["personality"],
        Allow,
        When::Always,
        &[(0, PERSONAS[3], EQ)],
    ),
    with_args(
        &["personality"],
        Allow,
        When::Always,
        &[(0, PERSONAS[4], EQ)],
    ),
    when(
        &["sync_file_range2", "swapcontext"],
        Allow,
        When::OnArch(&["ppc64le"]),
    ),
    when(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
        Allow,
        When::OnArch(&["arm", "arm64"]),
    ),
    when(&["arch_prctl"], Allow, When::OnArch(&["amd64", "x32"])),
    when(
        &["modify_ldt"],
        Allow,
        When::OnArch(&["amd64", "x32", "x86"]),
    ),
    when(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        Allow,
        When::OnArch(&["s390", "s390x"]),
    ),
    when(&["riscv_flush_icache"], Allow, When::OnArch(&["riscv64"])),
    when(SYS_ADMIN_ALLOWS, Allow, When::With(&["CAP_SYS_ADMIN"])),
    when(
        SYS_ADMIN_REFUSES,
        Errno(EPERM),
        When::Without(&["CAP_SYS_ADMIN"]),
    ),
    // Without CAP_AUDIT_WRITE: the audit netlink is refused, every other socket allowed.
    with_args(
        &["socket"],
        Errno(EINVAL),
        When::Without(&["CAP_AUDIT_WRITE"]),
        &[(0, AF_NETLINK, EQ), (2, NETLINK_AUDIT, EQ)],
    ),
    with_args(
        &["socket"],
        Allow,
        When::Without(&["CAP_AUDIT_WRITE"]),
        &[(2, NETLINK_AUDIT, NE)],
    ),
    with_args(
        &["socket"],
        Allow,
        When::Without(&["CAP_AUDIT_WRITE"]),
        &[(0, AF_NETLINK, NE)],
    ),
    when(&["socket"], Allow, When::With(&["CAP_AUDIT_WRITE"])),
    // bpf: CAP_SYS_ADMIN (above) or CAP_BPF. perf_event_open: CAP_PERFMON; as podman
    // has it, its refusal is lifted by CAP_SYS_ADMIN or CAP_BPF, which then leave it to
    // the default (ENOSYS).
    when(
        &["bpf"],
        Errno(EPERM),
        When::Without(&["CAP_SYS_ADMIN", "CAP_BPF"]),
    ),
    when(&["bpf"], Allow, When::With(&["CAP_BPF"])),
    when(
        &["perf_event_open"],
        Errno(EPERM),
        When::Without(&["CAP_SYS_ADMIN", "CAP_BPF"]),
    ),
    when(&["perf_event_open"], Allow, When::With(&["CAP_PERFMON"])),
];

fn names(list: &'static [&'static str]) -> Vec<Cow<'static, str>> {
    list.iter().map(|n| Cow::Borrowed(*n)).collect()
}

fn rule(e: &Entry) -> Rule {
    let (action, errno) = match e.answer {
        Allow => (LinuxSeccompAction::ScmpActAllow, None),
        Errno(n) => (LinuxSeccompAction::ScmpActErrno, Some(n)),
    };
    let (mut includes, mut excludes) = (Only::default(), Only::default());
    match e.when {
        When::Always => {}
        When::OnArch(a) => includes.arches = names(a),
        When::With(c) => includes.caps = names(c),
        When::Without(c) => excludes.caps = names(c),
    }
    Rule {
        names: names(e.names),
        action,
        errno,
        args: e
            .args
            .iter()
            .map(|(index, value, op)| {
                LinuxSeccompArgBuilder::default()
                    .index(*index)
                    .value(*value)
                    .value_two(0u64)
                    .op(*op)
                    .build()
                    .expect("every field is set")
            })
            .collect(),
        includes,
        excludes,
    }
}

/// The default profile in podman's terms (before it is fitted to a container).
pub fn profile() -> Profile {
    let mut entries = vec![always(REFUSED, Errno(EPERM)), always(ALLOWED, Allow)];
    for (cap, calls) in BY_CAPABILITY {
        let cap: &'static [&'static str] = std::slice::from_ref(cap);
        entries.push(when(calls, Allow, When::With(cap)));
        entries.push(when(calls, Errno(EPERM), When::Without(cap)));
    }
    let mut syscalls: Vec<Rule> = entries.iter().map(rule).collect();
    syscalls.extend(SPECIAL.iter().map(rule));
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno: Some(ENOSYS),
        architectures: Vec::new(),
        arch_map: vec![
            (
                Arch::ScmpArchX86_64,
                vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            ),
            (Arch::ScmpArchAarch64, vec![Arch::ScmpArchArm]),
            (
                Arch::ScmpArchMips64,
                vec![Arch::ScmpArchMips, Arch::ScmpArchMips64n32],
            ),
            (
                Arch::ScmpArchMips64n32,
                vec![Arch::ScmpArchMips, Arch::ScmpArchMips64],
            ),
            (
                Arch::ScmpArchMipsel64,
                vec![Arch::ScmpArchMipsel, Arch::ScmpArchMipsel64n32],
            ),
            (
                Arch::ScmpArchMipsel64n32,
                vec![Arch::ScmpArchMipsel, Arch::ScmpArchMipsel64],
            ),
            (Arch::ScmpArchS390x, vec![Arch::ScmpArchS390]),
        ],
        syscalls,
        flags: Vec::new(),
    }
}

/// The default profile for nook's default capabilities, in numbers (for `nook info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Syscalls of this architecture allowed whatever their arguments.
    pub allowed: usize,
    /// The ABIs filtered (libseccomp's names, lower case: x86_64, x86, ...); calls of
    /// any other ABI are killed, x32 calls fail with ENOSYS (compile.rs).
    pub architectures: Vec<&'static str>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} syscalls allowed ({}), the others fail with ENOSYS or EPERM",
            self.allowed,
            self.architectures.join(", ")
        )
    }
}

pub fn summary() -> Summary {
    let bounding: Vec<String> = crate::capabilities::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    let oci = for_capabilities(&bounding);
    Summary {
        allowed: super::compile::allowed_natively(&oci),
        architectures: super::compile::filtered_abis(&oci),
    }
}

/// The OCI profile nook's own commands give a container whose bounding set is
/// `bounding` (`CAP_...` names).
pub fn for_capabilities(bounding: &[String]) -> LinuxSeccomp {
    profile().to_oci(bounding)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::capabilities::DEFAULT_CAPABILITIES;
    use crate::seccomp::compile::tests::{abi_tables, native, nr, run};
    use crate::seccomp::Filter;

    /// Per syscall name, the set of (action, errno, conditions) entries: the OCI result
    /// with the grouping and order of entries (which do not change the filter) left out.
    fn by_name(s: &LinuxSeccomp) -> BTreeMap<String, BTreeSet<String>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in s.syscalls().as_deref().unwrap_or_default() {
            let args = serde_json::to_string(&e.args().clone().unwrap_or_default()).unwrap();
            for n in e.names() {
                map.entry(n.clone()).or_default().insert(format!(
                    "{:?} {:?} {args}",
                    e.action(),
                    e.errno_ret()
                ));
            }
        }
        map
    }

    fn default_caps() -> Vec<String> {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    }

    /// Syscalls whose entries changed in containers/common after the copy Debian 12
    /// installs (containers-common 0.50.1, 2022), each with the upstream commit: a
    /// difference from an installed file is accepted only for these names.
    const CHANGED_UPSTREAM_SINCE_0_50: &[(&str, &str)] = &[
        (
            "cachestat",
            "a3f335c7 explicitly block new syscalls (EPERM, was ENOSYS)",
        ),
        ("futex_requeue", "a3f335c7"),
        ("futex_wait", "a3f335c7"),
        ("futex_waitv", "a3f335c7"),
        ("futex_wake", "a3f335c7"),
        ("io_pgetevents_time64", "a3f335c7"),
        ("map_shadow_stack", "a3f335c7"),
        ("syscall", "d3283f84 block syscall()"),
        ("readdir", "fa18956f deny readdir()"),
        ("timerfd", "aa9e144d remove timerfd"),
        ("sigaction", "fd7d4a38 remove obsolete sigaction family"),
        ("sigpending", "fd7d4a38"),
        ("sigsuspend", "fd7d4a38"),
        ("swapcontext", "68c95796 ppc64le: allow swapcontext"),
        ("fchmodat2", "f5e1fef6 allow fchmodat2"),
        (
            "fanotify_init",
            "8c41d98b allow fanotify_init without CAP_SYS_ADMIN",
        ),
        ("quotactl_fd", "added to the CAP_SYS_ADMIN group"),
        ("bpf", "6dd328a2 allow bpf() with CAP_BPF"),
        (
            "perf_event_open",
            "daa81f13 allow perf_event_open with CAP_PERFMON",
        ),
    ];

    /// Compares nook's profile with a podman profile file for the capability sets
    /// given; `tolerated` names may differ. Returns the names that differ.
    fn compare(file: &str, caps: &[Vec<String>], tolerated: &[&str]) -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap();
        let theirs = Profile::parse(&text).unwrap();
        let mut differ = Vec::new();
        for bounding in caps {
            let (a, b) = (theirs.to_oci(bounding), for_capabilities(bounding));
            assert_eq!(a.default_action(), b.default_action());
            assert_eq!(a.default_errno_ret(), b.default_errno_ret());
            assert_eq!(a.architectures(), b.architectures());
            same_answers(&a, &b, tolerated);
            let (a, b) = (by_name(&a), by_name(&b));
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for n in names {
                if a.get(n) != b.get(n) {
                    assert!(
                        tolerated.contains(&n.as_str()),
                        "{n}: podman's file {file} gives {:?}, nook's profile {:?} \
                         (capabilities {bounding:?})",
                        a.get(n),
                        b.get(n)
                    );
                    differ.push(n.clone());
                }
            }
        }
        differ.sort();
        differ.dedup();
        differ
    }

    /// The filters compiled from `a` and `b` answer every syscall number of every ABI
    /// they filter alike (with the arguments podman's rules look at), but for the
    /// `tolerated` names: the entries' order matters too (the first unconditional one
    /// decides), which the per-name comparison does not see.
    fn same_answers(a: &LinuxSeccomp, b: &LinuxSeccomp, tolerated: &[&str]) {
        let (pa, pb) = (
            Filter::compile(a).unwrap().program,
            Filter::compile(b).unwrap().program,
        );
        let samples: [[u64; 6]; 6] = [
            [0; 6],
            [16, 3, 9, 0, 0, 0],
            [2, 1, 0, 0, 0, 0],
            [0xffff_ffff, 0, 0, 0, 0, 0],
            [0x20008, 0, 0, 0, 0, 0],
            [0x0040_0000, 0, 0, 0, 0, 0],
        ];
        for (arch, number) in abi_tables(a) {
            let skip: Vec<u32> = tolerated.iter().filter_map(|n| number(n)).collect();
            for nr in (0..1024).filter(|nr| !skip.contains(nr)) {
                for args in samples {
                    assert_eq!(
                        run(&pa, arch, nr, args),
                        run(&pb, arch, nr, args),
                        "arch {arch:#x} syscall {nr} args {args:?}"
                    );
                }
            }
        }
    }

    /// podman's installed profile, converted by nook, gives nook's default profile.
    #[test]
    fn matches_the_installed_podman_profile() {
        let file = "/usr/share/containers/seccomp.json";
        if !std::path::Path::new(file).exists() {
            eprintln!(
                "SKIP: matches_the_installed_podman_profile: {file} is absent (install \
                 containers-common / golang-github-containers-common to compare)"
            );
            return;
        }
        let tolerated: Vec<&str> = CHANGED_UPSTREAM_SINCE_0_50
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let differ = compare(file, &[default_caps()], &tolerated);
        if !differ.is_empty() {
            eprintln!(
                "note: {file} is older than nook's source of the policy; it differs only \
                 where containers/common changed since: {differ:?}"
            );
        }
    }

    /// `NOOK_PODMAN_SECCOMP=FILE`: the same comparison against a copy of upstream's
    /// file, which must match exactly, with several capability sets.
    #[test]
    fn matches_a_given_podman_profile_exactly() {
        let Some(file) = std::env::var_os("NOOK_PODMAN_SECCOMP") else {
            eprintln!(
                "SKIP: matches_a_given_podman_profile_exactly: set NOOK_PODMAN_SECCOMP to a \
                 copy of containers/common's pkg/seccomp/seccomp.json"
            );
            return;
        };
        let mut admin = default_caps();
        admin.push("CAP_SYS_ADMIN".into());
        let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        let differ = compare(
            file.to_str().unwrap(),
            &[default_caps(), admin, all, vec![]],
            &[],
        );
        assert!(differ.is_empty());
    }

    #[test]
    fn refuses_and_allows_what_podman_does() {
        let f = Filter::compile(&for_capabilities(&default_caps())).unwrap();
        let p = &f.program;
        let a = native();
        let eperm = libc::SECCOMP_RET_ERRNO | EPERM;
        let enosys = libc::SECCOMP_RET_ERRNO | ENOSYS;
        let allow = libc::SECCOMP_RET_ALLOW;
        for name in [
            "kexec_load",
            "init_module",
            "bpf",
            "perf_event_open",
            "userfaultfd",
        ] {
            assert_eq!(run(p, a, nr(name), [0; 6]), eperm, "{name}");
        }
        assert_eq!(run(p, a, nr("add_key"), [0; 6]), enosys);
        assert_eq!(run(p, a, nr("sethostname"), [0; 6]), eperm);
        // podman lists setns as allowed before its CAP_SYS_ADMIN rule: allowed.
        for name in [
            "read", "keyctl", "unshare", "clone", "mount", "chroot", "getpid", "setns",
        ] {
            assert_eq!(run(p, a, nr(name), [0; 6]), allow, "{name}");
        }
        assert_eq!(
            run(p, a, nr("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            run(p, a, nr("personality"), [0x0040_0000, 0, 0, 0, 0, 0]),
            enosys
        );
        assert_eq!(
            run(p, a, nr("socket"), [16, 3, 9, 0, 0, 0]),
            libc::SECCOMP_RET_ERRNO | EINVAL
        );
        assert_eq!(run(p, a, nr("socket"), [2, 1, 0, 0, 0, 0]), allow);
        // Small enough that installing it stays cheap (module doc of compile.rs).
        assert!(f.len() < 700, "{} instructions", f.len());
    }
}
