//! `exec`: a new process inside a running container (`nook exec`, `nook oci exec`).
//!
//! The container is found by the host pid of its first process. Its namespaces are
//! opened from the host before anything is joined: `pidfd_open` pins that process, the
//! /proc/PID directory is opened while the pidfd shows it alive, and every namespace
//! file is opened through that directory, so a pid recycled in between makes the opens
//! fail instead of joining a stranger. The data path:
//!
//! ```text
//! caller (stays on the host, holds our stdio)   open ns files, cgroup.procs, console
//!   │ fork                                       block forwarded signals first
//!   ├─ joiner: non-dumpable, closes every descriptor it does not need (fds.rs)
//!   │          → [cgroup.procs ← itself] → setns user → mnt → pid → net → uts → ipc
//!   │          → cgroup (only those that differ from ours) → clone(CLONE_PARENT)
//!   │          → sends the new pid, exits
//!   └─ process (our child, in the container's pid namespace, non-dumpable from birth):
//!              closes the namespace files and pipes → own session → [stdin /dev/null]
//!              [pty from the container's devpts] → rlimits → [seccomp] → user, caps,
//!              no_new_privs → [seccomp] → chdir / then cwd, checked inside → exec
//! caller: report pipe (EOF = exec'd; child.rs's protocol) → detach, or supervise.rs:
//!         signals forwarded, pty relayed, exit status 128+N for signal N
//! ```
//!
//! Until it execs, the new process is nook in the container's pid namespace, where every
//! process of the container may look at its /proc entries: so it holds nothing of the
//! host (stdio, the pty and `--preserve-fds` are all that cross) and is non-dumpable.
//!
//! The joiner is a fork so that the caller keeps the host's mount namespace (its paths,
//! its runtime directory) and no credentials of the container. It is single-threaded,
//! as `setns(CLONE_NEWUSER)` requires; the caller must be single-threaded too, because
//! the joiner and the process allocate (see spawn.rs). The cgroup is entered before the
//! cgroup namespace is joined: the kernel checks a migration against the mover's cgroup
//! namespace, whose root is the container's own cgroup once joined.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::pty::Winsize;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{fstatat, Mode};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Process, Spec};

use crate::error::{Context, Error, Result};
use crate::fds::{self, PassedFds};
use crate::options::StdinMode;
use crate::process::{PidFd, Stat};
use crate::spawn::{clone_process, with_signals_blocked};
use crate::supervise::ExitStatus;
use crate::sync::{self, send_report, Report};
use crate::{capabilities, limits, seccomp, supervise, tty};

/// The running container to enter.
#[derive(Debug, Clone)]
pub struct JoinTarget {
    /// Host pid of the container's first process.
    pub pid: i32,
    /// The container's leaf cgroup directory, if it has one.
    pub cgroup: Option<PathBuf>,
}

/// How the new process's stdio is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecIo {
    /// It holds our own stdio, as `nook run` without `-t` (byte-exact, no copy). A
    /// detached process keeps it too, as with `runc exec -d`: callers that return at
    /// once pass the descriptors they want it to have.
    Inherit,
    /// A pty from the container's devpts, relayed to our terminal in raw mode with
    /// window size changes passed on, as `nook run -t`.
    Tty,
    /// OCI `--console-socket`: a pty from the container's devpts whose master is sent
    /// over this unix socket (SCM_RIGHTS), as runc does; we relay nothing.
    ConsoleSocket(PathBuf),
}

/// How to run the process (what is not in the OCI `Process`).
#[derive(Debug, Clone)]
pub struct ExecOptions<'a> {
    pub io: ExecIo,
    /// Return as soon as the command runs, with its pid, instead of waiting for it.
    pub detach: bool,
    /// stdin with [`ExecIo::Inherit`]: ours (`-i`) or /dev/null.
    pub stdin: StdinMode,
    /// The container's seccomp profile, installed in the new process as in the first
    /// one (before the capabilities are cut, or last under no_new_privs).
    pub seccomp: Option<&'a LinuxSeccomp>,
    /// Descriptors of this process the command gets (`--preserve-fds`).
    pub passed_fds: PassedFds,
}

/// How an exec ended, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command ran to its end (not detached).
    Exited(ExitStatus),
    /// The command is running detached; its host pid.
    Detached(i32),
}

/// Runs `process` inside the container of `target` and, unless detached, waits for it,
/// forwarding signals. A command that cannot be executed is `Error::Exec` (126/127); a
/// container whose first process is gone is `Error::NotRunning`.
///
/// The calling process must be single-threaded (module doc).
pub fn exec_in(target: &JoinTarget, process: &Process, opts: &ExecOptions) -> Result<ExecOutcome> {
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Spec("process.args is empty".into()));
    }
    if opts.detach && opts.io == ExecIo::Tty {
        return Err(Error::Spec(
            "a detached process cannot use this terminal: pass a console socket instead".into(),
        ));
    }
    let container = Container::open(target.pid)?;
    let prepared = container.check(|| prepare(target, process, opts))?;
    let outcome =
        with_signals_blocked(|handled| start(&container, process, opts, prepared, handled));
    outcome.map_err(|e| container.explain(e))
}

/// The container's first process, held so that its pid cannot be confused with a new
/// process's.
struct Container {
    pid: i32,
    /// None on kernels before 5.3; the /proc directory then carries the same guarantee
    /// from the moment it is opened.
    pidfd: Option<PidFd>,
    proc_dir: OwnedFd,
    /// The namespaces to join, in the order they must be joined.
    joins: Vec<(CloneFlags, OwnedFd)>,
}

/// The kinds of namespace an exec joins, in order: the user namespace first, because
/// the capabilities for every other setns come from it; cgroup last (after the cgroup
/// itself was entered, see the module doc).
pub const JOIN_ORDER: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("net", CloneFlags::CLONE_NEWNET),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

/// Which namespaces to join, given a namespace identity (device, inode) per kind for
/// the target and for us (None: this kernel has no such namespace file). Refuses a
/// target that shares our user namespace: nook always gives a container its own, so
/// such a process is not a container's (or the pid was reused by a host process).
pub fn namespaces_to_join(
    theirs: impl Fn(&str) -> Option<(u64, u64)>,
    ours: impl Fn(&str) -> Option<(u64, u64)>,
) -> std::result::Result<Vec<(&'static str, CloneFlags)>, String> {
    let differ: Vec<_> = JOIN_ORDER
        .iter()
        .copied()
        .filter(|(kind, _)| theirs(kind).is_some() && theirs(kind) != ours(kind))
        .collect();
    // A container without a user namespace of its own (an OCI spec run by a runtime
    // that is already in one, as podman runs its runtime) is joined in the others.
    if differ.is_empty() {
        return Err("it is not in a container (it shares every namespace with nook)".into());
    }
    Ok(differ)
}

fn pidfd_open(pid: i32) -> Result<Option<PidFd>> {
    match PidFd::open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => match e.raw_os_error() {
            Some(libc::ESRCH) => Err(Error::NotRunning { pid }),
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(Error::sys(format!("pidfd_open({pid})"), e)),
        },
    }
}

fn ns_id(dir: Option<RawFd>, path: &str) -> Option<(u64, u64)> {
    fstatat(dir, path, nix::fcntl::AtFlags::empty())
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

/// The process whose /proc entries stand for the container of `pid` (its first process):
/// `pid` itself, or, when that is nook's `--init` reaper (non-dumpable for the container's
/// lifetime, so the host cannot open its namespace files either, see init.rs), the
/// reaper's first child, the container's command, which shares every namespace with it.
/// The oldest child: an orphan the reaper adopted later may live in namespaces of its own.
pub fn namespace_holder(pid: i32) -> i32 {
    let readable = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/user")).is_ok();
    if readable(pid) {
        return pid;
    }
    children_of(pid)
        .into_iter()
        .filter_map(|c| start_time(c).map(|t| (t, c)))
        .min()
        .map(|(_, c)| c)
        .filter(|&c| readable(c))
        .unwrap_or(pid)
}

/// `pid`'s children: /proc/PID/task/PID/children (CONFIG_PROC_CHILDREN), else a scan.
fn children_of(pid: i32) -> Vec<i32> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return text
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| Stat::of(p).and_then(|s| s.parent()) == Some(pid))
        .collect()
}

/// A process's start time (clock ticks since boot).
fn start_time(pid: i32) -> Option<u64> {
    Stat::of(pid)?.start_time()
}

/// Fails with `Error::NotRunning` unless `pid` is a running (not exited, not zombie)
/// process: for callers that read the container's /proc files before [`exec_in`] and
/// want a failure there told as the container having stopped.
pub fn ensure_running(pid: i32) -> Result<()> {
    let container = Container::pin(pid)?;
    match container.alive() {
        true => Ok(()),
        false => Err(Error::NotRunning { pid }),
    }
}

impl Container {
    fn open(pid: i32) -> Result<Container> {
        let mut container = Container::pin(pid)?;
        let dir = container.proc_dir.as_raw_fd();
        let kinds = namespaces_to_join(
            |kind| ns_id(Some(dir), format!("ns/{kind}").as_str()),
            |kind| ns_id(None, format!("/proc/self/ns/{kind}").as_str()),
        )
        .map_err(|why| container.explain(Error::Setup(format!("process {pid}: {why}"))))?;
        for (kind, flag) in kinds {
            let fd = openat(
                Some(dir),
                format!("ns/{kind}").as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                container.explain(Error::sys(format!("opening /proc/{pid}/ns/{kind}"), e))
            })?;
            // SAFETY: openat just returned this descriptor; we are its only owner.
            container
                .joins
                .push((flag, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Ok(container)
    }

    /// The pidfd and /proc directory of `pid`, checked to be one live process.
    fn pin(pid: i32) -> Result<Container> {
        if pid <= 0 {
            return Err(Error::Spec(format!("invalid container pid {pid}")));
        }
        let pidfd = pidfd_open(pid)?;
        let proc_dir = nix::fcntl::open(
            format!("/proc/{pid}").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT => Error::NotRunning { pid },
            e => Error::sys(format!("opening /proc/{pid}"), e),
        })?;
        // SAFETY: open just returned this descriptor; we are its only owner.
        let proc_dir = unsafe { OwnedFd::from_raw_fd(proc_dir) };
        let container = Container {
            pid,
            pidfd,
            proc_dir,
            joins: Vec::new(),
        };
        // Alive now means the directory is that process's: the pid cannot have been
        // reused while the process the pidfd pins existed.
        if !container.alive() {
            return Err(Error::NotRunning { pid });
        }
        Ok(container)
    }

    /// Whether the container's first process is still running (not exited, not a
    /// zombie): a pidfd turns readable when its process exits.
    fn alive(&self) -> bool {
        match &self.pidfd {
            Some(pidfd) => !pidfd.exited(),
            None => {
                let stat = openat(
                    Some(self.proc_dir.as_raw_fd()),
                    "stat",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                );
                let Ok(fd) = stat else { return false };
                let mut text = String::new();
                // SAFETY: openat just returned this descriptor; the File owns it.
                let read = unsafe { File::from_raw_fd(fd) }.read_to_string(&mut text);
                read.is_ok() && Stat::parse(text).is_some_and(|s| s.state().is_some() && !s.ended())
            }
        }
    }

    /// Any failure while the container's first process is gone is that, whatever
    /// syscall noticed it first.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::Exec { .. } | Error::NotRunning { .. } => e,
            _ if !self.alive() => Error::NotRunning { pid: self.pid },
            e => e,
        }
    }

    fn check<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        f().map_err(|e| self.explain(e))
    }
}

/// Everything the two forks need, made before the first one (so the joiner, once in the
/// container's mount namespace, needs no host path).
struct Prepared {
    cgroup_procs: Option<File>,
    console: Option<(Option<UnixStream>, UnixStream)>,
    window: Option<Winsize>,
    /// process.rlimits and oomScoreAdj, in the form limits.rs applies.
    limits: Spec,
    /// The container's seccomp profile, compiled before the forks.
    seccomp: Option<seccomp::Filter>,
}

fn prepare(target: &JoinTarget, process: &Process, opts: &ExecOptions) -> Result<Prepared> {
    let cgroup_procs = match &target.cgroup {
        Some(dir) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| {
                    Error::Cgroup(format!(
                        "cannot join the container's cgroup {}: {e}",
                        dir.display()
                    ))
                })?,
        ),
        None => None,
    };
    let console = match &opts.io {
        ExecIo::Inherit => None,
        ExecIo::Tty => {
            let (ours, theirs) = UnixStream::pair().context(|| "socketpair for the pty".into())?;
            Some((Some(ours), theirs))
        }
        ExecIo::ConsoleSocket(path) => {
            let sock = UnixStream::connect(path)
                .context(|| format!("connecting to the console socket {}", path.display()))?;
            Some((None, sock))
        }
    };
    let window = (opts.io == ExecIo::Tty)
        .then(|| tty::window_size(0).or_else(|| tty::window_size(1)))
        .flatten();
    let mut limits = Spec::default();
    limits.set_process(Some(process.clone()));
    limits.set_linux(None);
    let seccomp = opts.seccomp.map(seccomp::Filter::compile).transpose()?;
    Ok(Prepared {
        cgroup_procs,
        console,
        window,
        limits,
        seccomp,
    })
}

fn start(
    container: &Container,
    process: &Process,
    opts: &ExecOptions,
    prepared: Prepared,
    handled: &SigSet,
) -> Result<ExecOutcome> {
    let report = sync::pipe()?;
    let pid_pipe = sync::pipe()?;
    let (console_ours, console_theirs) = match prepared.console {
        Some((ours, theirs)) => (ours, Some(theirs)),
        None => (None, None),
    };
    // SAFETY: the caller is single-threaded (module doc), so the child's copy of this
    // process is consistent and may allocate.
    let joiner = match unsafe { nix::unistd::fork() }.context(|| "fork".into())? {
        nix::unistd::ForkResult::Child => Joiner {
            joins: &container.joins,
            cgroup_procs: prepared.cgroup_procs,
            pid_pipe: pid_pipe.write,
            report: report.write,
            new: NewProcess {
                process,
                opts,
                console: console_theirs,
                window: prepared.window,
                limits: &prepared.limits,
                seccomp: prepared.seccomp.as_ref(),
            },
        }
        .main(),
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(report.write);
    drop(pid_pipe.write);
    drop(console_theirs);
    drop(prepared.cgroup_procs);

    let pid = read_pid(pid_pipe.read);
    let _ = waitpid(joiner, None);
    let reap = |pid: Option<Pid>| {
        if let Some(pid) = pid {
            let _ = waitpid(pid, None);
        }
    };
    match sync::read_report(report.read)? {
        Report::Started => {}
        Report::SetupFailed(msg) => {
            reap(pid);
            return Err(Error::Setup(msg));
        }
        Report::ExecFailed { errno, command } => {
            reap(pid);
            return Err(Error::Exec { command, errno });
        }
        Report::Parked => {
            reap(pid);
            return Err(Error::Setup(
                "unexpected report from the exec'd process".into(),
            ));
        }
    }
    let pid =
        pid.ok_or_else(|| Error::Setup("the exec'd process did not report its pid".into()))?;
    if opts.detach {
        return Ok(ExecOutcome::Detached(pid.as_raw()));
    }
    let master = match &console_ours {
        Some(sock) => tty::receive_master(sock)?,
        None => None,
    };
    supervise::supervise(pid, handled, master).map(ExecOutcome::Exited)
}

/// The new process's host pid, from the joiner (None if the joiner failed first).
fn read_pid(mut pipe: File) -> Option<Pid> {
    let mut buf = [0u8; 4];
    pipe.read_exact(&mut buf).ok()?;
    Some(Pid::from_raw(i32::from_le_bytes(buf)))
}

/// The first fork: joins the container and forks the process as the caller's child.
struct Joiner<'a> {
    joins: &'a [(CloneFlags, OwnedFd)],
    cgroup_procs: Option<File>,
    pid_pipe: File,
    report: File,
    new: NewProcess<'a>,
}

impl Joiner<'_> {
    fn main(mut self) -> ! {
        // A short life, but none beyond a killed caller.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        // Before entering anything: the new process is born of this one, already in the
        // container's pid namespace, with a copy of what this one holds.
        if let Err(e) = fds::make_undumpable() {
            send_report(&mut self.report, &Report::SetupFailed(e.to_string()));
            exit(125);
        }
        fds::close_all_except(&self.own_fds());
        if let Err(e) = self.join() {
            send_report(&mut self.report, &Report::SetupFailed(e.to_string()));
            exit(125);
        }
        // CLONE_PARENT: the process is the caller's child, so the caller reaps it and
        // gets its SIGCHLD; this joiner can simply exit.
        match clone_process(CloneFlags::CLONE_PARENT) {
            Ok(pid) if pid.as_raw() == 0 => {
                drop(self.pid_pipe);
                self.new.main(self.report)
            }
            Ok(pid) => {
                let _ = self.pid_pipe.write_all(&pid.as_raw().to_le_bytes());
                exit(0)
            }
            Err(e) => {
                let msg = format!("cannot start a process in the container: {e}");
                send_report(&mut self.report, &Report::SetupFailed(msg));
                exit(125)
            }
        }
    }

    /// Stdio, the namespaces to join, cgroup.procs, the two pipes, the pty's socket and
    /// the descriptors passed on purpose.
    fn own_fds(&self) -> Vec<RawFd> {
        let mut keep = vec![0, 1, 2, self.pid_pipe.as_raw_fd(), self.report.as_raw_fd()];
        keep.extend(self.joins.iter().map(|(_, fd)| fd.as_raw_fd()));
        keep.extend(self.cgroup_procs.as_ref().map(|f| f.as_raw_fd()));
        keep.extend(self.new.console.as_ref().map(|c| c.as_raw_fd()));
        keep.extend(self.new.opts.passed_fds.range());
        keep
    }

    fn join(&mut self) -> Result<()> {
        if let Some(procs) = self.cgroup_procs.as_mut() {
            procs
                .write_all(b"0")
                .map_err(|e| Error::Cgroup(format!("cannot join the container's cgroup: {e}")))?;
        }
        for (flag, fd) in self.joins {
            nix::sched::setns(fd, *flag).map_err(|e| {
                let kind = JOIN_ORDER
                    .iter()
                    .find(|(_, f)| f == flag)
                    .map_or("?", |(k, _)| k);
                Error::sys(format!("joining the container's {kind} namespace"), e)
            })?;
        }
        Ok(())
    }
}

/// The exec'd process, from its birth in the container's pid namespace to exec.
struct NewProcess<'a> {
    process: &'a Process,
    opts: &'a ExecOptions<'a>,
    console: Option<UnixStream>,
    window: Option<Winsize>,
    limits: &'a Spec,
    seccomp: Option<&'a seccomp::Filter>,
}

impl NewProcess<'_> {
    fn main(self, mut report: File) -> ! {
        // The namespace files, cgroup.procs and the pid pipe stay with the joiner.
        let mut keep = vec![0, 1, 2, report.as_raw_fd()];
        keep.extend(self.console.as_ref().map(|c| c.as_raw_fd()));
        keep.extend(self.opts.passed_fds.range());
        fds::close_all_except(&keep);
        let (cwd_checked, home) = match self.setup() {
            Ok(outcome) => outcome,
            Err(e) => {
                send_report(&mut report, &Report::SetupFailed(e.to_string()));
                exit(125);
            }
        };
        let exec_fds = crate::child::ExecFds {
            keep: None,
            passed: self.opts.passed_fds,
            cwd_checked,
        };
        crate::child::exec_command(self.process, home.as_deref(), report, &exec_fds)
    }

    /// Returns whether the working directory was entered and checked before the seccomp
    /// filter went on (child.rs, `ExecFds::cwd_checked`), and the HOME to give a process
    /// whose environment has none.
    fn setup(&self) -> Result<(bool, Option<String>)> {
        // No controlling terminal of the caller, nor its process group (child.rs).
        nix::unistd::setsid().context(|| "starting a session (setsid)".into())?;
        if !self.opts.detach {
            // Like the container's first process, it ends with the one who started it.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        }
        if self.opts.stdin == StdinMode::Null && self.opts.io == ExecIo::Inherit {
            // The container's /dev/null (we are in its mount namespace now).
            let null = File::open("/dev/null").context(|| "opening /dev/null".into())?;
            nix::unistd::dup2(null.as_raw_fd(), 0).context(|| "stdin from /dev/null".into())?;
        }
        if let Some(console) = &self.console {
            tty::setup_child_terminal(console, self.window)?;
        }
        // setns(mnt) left us at the container's root; say so rather than rely on it.
        nix::unistd::chdir("/").context(|| "changing to the container's root".into())?;
        if let Some(mask) = self.process.user().umask() {
            nix::sys::stat::umask(Mode::from_bits_truncate(mask as libc::mode_t));
        }
        limits::apply(self.limits)?;
        // As the container's root, before the user switch, as for the first process.
        let home = crate::exec::home_if_unset(self.process);
        let no_new_privs = self.process.no_new_privileges() == Some(true);
        // The same order as the first process (child.rs): without no_new_privs the filter
        // needs CAP_SYS_ADMIN, so it goes on before the capabilities are cut; the working
        // directory is entered and checked before it either way.
        let mut cwd_checked = false;
        if let (Some(filter), false) = (self.seccomp, no_new_privs) {
            cwd_checked = fds::enter_cwd_before_filter(self.process.cwd())?;
            filter.install()?;
        }
        capabilities::apply(self.process)?;
        if !self.opts.detach {
            // Changing the uid cleared the parent-death signal.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        }
        if let (Some(filter), true) = (self.seccomp, no_new_privs) {
            cwd_checked = fds::enter_cwd_before_filter(self.process.cwd())?;
            filter.install()?;
        }
        Ok((cwd_checked, home))
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this process without running the caller's atexit handlers or
    // flushing stdio buffers copied from it.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pairs: &'static [(&'static str, u64)]) -> impl Fn(&str) -> Option<(u64, u64)> {
        move |kind| pairs.iter().find(|(k, _)| *k == kind).map(|(_, i)| (4, *i))
    }

    #[test]
    fn joins_only_what_differs_user_first() {
        let ours = ids(&[
            ("user", 1),
            ("mnt", 2),
            ("pid", 3),
            ("net", 4),
            ("uts", 5),
            ("ipc", 6),
            ("cgroup", 7),
        ]);
        // --network=host: the net namespace is ours; no cgroup namespace file at all.
        let theirs = ids(&[
            ("cgroup", 17),
            ("ipc", 16),
            ("uts", 15),
            ("net", 4),
            ("pid", 13),
            ("mnt", 12),
            ("user", 11),
        ]);
        let kinds: Vec<&str> = namespaces_to_join(theirs, ours)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, ["user", "mnt", "pid", "uts", "ipc", "cgroup"]);
    }

    #[test]
    fn a_missing_namespace_kind_is_skipped() {
        let ours = ids(&[("user", 1), ("mnt", 2)]);
        let theirs = ids(&[("user", 11), ("mnt", 12)]);
        let joins = namespaces_to_join(theirs, ours).unwrap();
        assert_eq!(joins.len(), 2);
        assert_eq!(joins[0].1, CloneFlags::CLONE_NEWUSER);
        assert_eq!(joins[1].1, CloneFlags::CLONE_NEWNS);
    }

    #[test]
    fn a_host_process_is_refused() {
        let ours = ids(&[("user", 1), ("mnt", 2)]);
        let theirs = ids(&[("user", 1), ("mnt", 2)]);
        let err = namespaces_to_join(theirs, ours).unwrap_err();
        assert!(err.contains("not in a container"), "{err}");
    }

    #[test]
    fn a_container_in_our_user_namespace_is_joined_in_the_others() {
        let ours = ids(&[("user", 1), ("mnt", 2)]);
        let theirs = ids(&[("user", 1), ("mnt", 12)]);
        let joins = namespaces_to_join(theirs, ours).unwrap();
        assert_eq!(joins.len(), 1);
        assert_eq!(joins[0].1, CloneFlags::CLONE_NEWNS);
    }

    #[test]
    fn our_own_process_is_not_a_container() {
        let pid = std::process::id() as i32;
        match Container::open(pid) {
            Err(Error::Setup(msg)) => assert!(msg.contains("not in a container"), "{msg}"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("joined ourselves"),
        }
    }

    #[test]
    fn a_gone_process_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        // Reaped: the pid is free (a reuse within this test is practically impossible).
        match Container::open(pid) {
            Err(Error::NotRunning { pid: p }) => assert_eq!(p, pid),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened a reaped process"),
        }
    }
}
