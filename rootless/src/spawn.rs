//! `run`: one container from an OCI `Spec`, start to exit status.
//!
//! The supervisor (this process) must be single-threaded when it clones: the child
//! continues on a copy of this process and may allocate, which is only safe when no
//! other thread could have held a lock at the moment of the clone. Signals that will
//! be forwarded are blocked before the clone so none is lost between clone and the
//! signalfd the supervisor reads them from.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::child::Child;
use crate::error::{Context, Error, Result};
use crate::idmap::{write_maps, IdRange};
use crate::options::{RunOptions, StartedHook};
use crate::supervise::{self, ExitStatus};
use crate::sync::{self, Report};
use crate::tty;

/// Signals sent to nook that the container receives.
pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs the container described by `spec` and returns how its command ended.
///
/// A command that cannot be executed is `Error::Exec` (the caller maps it to 126/127).
pub fn run(spec: &Spec, options: &RunOptions) -> Result<ExitStatus> {
    run_in_cgroup(spec, options, None)
}

/// [`run`] with the container's first process born in `cgroup` (from
/// [`crate::cgroups::prepare`]), which the caller removes after the exit.
pub fn run_in_cgroup(
    spec: &Spec,
    options: &RunOptions,
    cgroup: Option<&crate::cgroups::Cgroup>,
) -> Result<ExitStatus> {
    let plan = Plan::from_spec(spec)?;
    with_signals_blocked(|handled| run_blocked(spec, options, &plan, handled, cgroup))
}

/// Runs `f` with the forwarded signals and SIGCHLD blocked (so none is lost between the
/// clone and the supervisor's signalfd), restoring the previous mask afterwards.
pub(crate) fn with_signals_blocked<T>(f: impl FnOnce(&SigSet) -> Result<T>) -> Result<T> {
    let mut handled = SigSet::empty();
    for sig in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        handled.add(*sig);
    }
    let previous_mask = handled
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .context(|| "blocking signals".into())?;
    let result = f(&handled);
    let _ = previous_mask.thread_set_mask();
    result
}

/// Writes the child's ID maps, runs `before_release` (what must exist before the
/// container's setup goes on, such as its network) and lets it go on; kills it if
/// either fails.
fn map_and_release<T>(
    pid: Pid,
    uid_map: &[IdRange],
    gid_map: &[IdRange],
    go: std::fs::File,
    before_release: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // No maps without a new user namespace (a spec run by root that has none).
    let maps = match uid_map.is_empty() {
        true => Ok(()),
        false => write_maps(pid, uid_map, gid_map),
    };
    let prepared = maps.and_then(|_| before_release());
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e);
        }
    };
    sync::send_go(go)?;
    Ok(prepared)
}

/// `--network=nook`: the netns agent joins the new netns and creates tap0, the netstack
/// threads start (this process is still single-threaded here). The container's network
/// lives as long as the returned handle, which the caller drops after the container
/// has exited.
fn start_network(
    pid: Pid,
    options: &RunOptions,
    plan: &Plan,
) -> Result<Option<nook_net::Netstack>> {
    match &options.network {
        Some(cfg) if plan.clone_flags.contains(CloneFlags::CLONE_NEWNET) => {
            Ok(Some(nook_net::Netstack::start(pid.as_raw(), cfg)?))
        }
        _ => Ok(None),
    }
}

/// OCI `create`'s result: the container's process, set up and waiting at its gate.
pub struct Created {
    /// The process id, as the host sees it.
    pub pid: i32,
    /// The pty master when `process.terminal` is set (for the console socket).
    pub console: Option<OwnedFd>,
    _network: Option<nook_net::Netstack>,
}

/// OCI `create`: the same setup as [`run`] up to the command, where the container's
/// process parks until a start message arrives on `gate` (a FIFO opened read-write,
/// see `nook oci start`). Returns once it is parked; the process does not die with the
/// caller. The command is looked up first, so a missing one fails here, as in runc.
pub fn create(
    spec: &Spec,
    options: &RunOptions,
    cgroup: Option<&crate::cgroups::Cgroup>,
    gate: &std::fs::File,
) -> Result<Created> {
    let plan = Plan::from_spec(spec)?;
    with_signals_blocked(|_| {
        let spawned = spawn_child(spec, options, &plan, cgroup, Some(gate.as_raw_fd()))?;
        let pid = spawned.pid;
        match sync::read_report(spawned.report)? {
            Report::Parked => Ok(Created {
                pid: pid.as_raw(),
                console: spawned.master,
                _network: spawned.network,
            }),
            other => Err(failed_start(
                pid,
                other,
                "the container's process ended before it was ready for `start`",
            )),
        }
    })
}

/// OCI `start`, once the container's process has let go of the start gate (it
/// executed its command, which closed the gate, or it ended): what it reported there.
/// After reading `start`'s message (`sent`) the process writes a failure to start (a
/// startContainer hook, the exec) into the same FIFO and exits; nothing there means the
/// command runs. The FIFO is read through a descriptor of its own, opened on `gate`'s
/// (the caller's write end) only now: a reader held earlier would have kept the
/// kernel from telling the caller that the process had gone.
pub fn start_result(gate: &std::fs::File, sent: &[u8]) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", gate.as_raw_fd());
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .context(|| "reopening the start FIFO to read the container's report".into())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Empty (this process still holds a writer): everything was read.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(Error::sys("reading the container's start report", e)),
        }
    }
    if !sent.is_empty() && buf.starts_with(sent) {
        return Err(Error::Setup(
            "the container's process ended before it read the start message (killed?)".into(),
        ));
    }
    match Report::decode(&buf) {
        Report::Started | Report::Parked => Ok(()),
        Report::SetupFailed(msg) => Err(Error::Setup(msg)),
        Report::ExecFailed { errno, command } => Err(Error::Exec { command, errno }),
    }
}

/// The container's first process, released and running its setup.
struct Spawned {
    pid: Pid,
    report: std::fs::File,
    master: Option<OwnedFd>,
    network: Option<nook_net::Netstack>,
}

fn run_blocked(
    spec: &Spec,
    options: &RunOptions,
    plan: &Plan,
    handled: &SigSet,
    cgroup: Option<&crate::cgroups::Cgroup>,
) -> Result<ExitStatus> {
    // The network lives until the container has exited.
    let Spawned {
        pid,
        report,
        master,
        network: _network,
    } = spawn_child(spec, options, plan, cgroup, None)?;
    finish_start(pid, report, handled, master, options.on_started.as_ref())
}

fn spawn_child(
    spec: &Spec,
    options: &RunOptions,
    plan: &Plan,
    cgroup: Option<&crate::cgroups::Cgroup>,
    park: Option<RawFd>,
) -> Result<Spawned> {
    let go = sync::pipe()?;
    let report = sync::pipe()?;
    let console = match plan.terminal {
        true => Some(UnixStream::pair().context(|| "socketpair for the pty".into())?),
        false => None,
    };
    let window = plan
        .terminal
        .then(|| tty::window_size(0).or_else(|| tty::window_size(1)))
        .flatten();

    // With a cgroup, the child unshares its cgroup namespace once inside it (so the
    // namespace's root is the container's cgroup, whichever way it got there).
    let unshare_cgroupns =
        cgroup.is_some() && plan.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP);
    // A pid namespace given by path: setns applies to the children of the caller, so
    // this process enters it for the clone and returns to its own right after.
    let own_pidns = match &plan.pid_join {
        Some(path) => Some(enter_pid_namespace(path)?),
        None => None,
    };
    let cloned = match cgroup {
        Some(cg) => {
            let flags = plan.clone_flags - CloneFlags::CLONE_NEWCGROUP;
            match crate::cgroups::clone_into(flags, cg.dir_fd()) {
                Ok(Some(pid)) => Ok((pid, false)),
                Ok(None) => clone_process(flags).map(|pid| (pid, true)),
                Err(e) => Err(e),
            }
        }
        None => clone_process(plan.clone_flags).map(|pid| (pid, false)),
    };
    if let Some(own) = own_pidns {
        if !matches!(cloned, Ok((pid, _)) if pid == Pid::from_raw(0)) {
            let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
        }
    }
    let (pid, needs_move) = cloned?;
    if pid == Pid::from_raw(0) {
        Child {
            unshare_cgroupns,
            spec,
            options,
            rootfs: plan.rootfs.clone(),
            go: go.read,
            report: report.write,
            console: console.map(|(_, child_end)| child_end),
            window,
            new_netns: plan.clone_flags.contains(CloneFlags::CLONE_NEWNET),
            new_utsns: plan.clone_flags.contains(CloneFlags::CLONE_NEWUTS),
            park,
            // runc's rule: a process that joins namespaces others live in is non-dumpable
            // from the release on; so is one that stays nook there for the container's
            // lifetime (the --init reaper). An OCI container of its own namespaces stays
            // dumpable while parked: it is alone in them, and the caller's network helper
            // (slirp4netns, pasta) joins its network namespace through /proc.
            undumpable: options.init
                || park.is_none()
                || !plan.joins.is_empty()
                || plan.pid_join.is_some(),
            become_root: plan.become_root,
            joins: &plan.joins,
            seccomp: plan.seccomp.as_ref(),
        }
        .main();
    }
    drop(go.read);
    drop(report.write);
    let console = console.map(|(parent_end, _child_end)| parent_end);

    let network = map_and_release(pid, &plan.uid_map, &plan.gid_map, go.write, || {
        if let (Some(cg), true) = (cgroup, needs_move) {
            cg.add_process(pid.as_raw())?;
        }
        let network = start_network(pid, options, plan)?;
        if let Some(hook) = &options.on_spawned {
            (hook.0)(pid.as_raw());
        }
        Ok(network)
    })?;

    let master = match &console {
        Some(sock) => tty::receive_master(sock)?,
        None => None,
    };
    Ok(Spawned {
        pid,
        report: report.read,
        master,
        network,
    })
}

/// `nook unshare`: runs `command` in a new user and mount namespace with these maps,
/// on the host's filesystem, as `podman unshare` does (to inspect or remove files that a
/// container's subordinate IDs own).
pub fn unshare(command: &[String], uid_map: &[IdRange], gid_map: &[IdRange]) -> Result<ExitStatus> {
    in_user_namespace(uid_map, gid_map, |report| {
        crate::child::exec_with_own_env(command, report)
    })
}

/// Runs `work` in a child process inside a new user and mount namespace with these maps
/// and returns its status (`work`'s return value as exit code). For work that must see
/// files with the container's owners, such as unpacking an image layer.
///
/// The calling process must be single-threaded (see the module doc).
pub fn run_in_user_namespace(
    uid_map: &[IdRange],
    gid_map: &[IdRange],
    work: impl FnOnce() -> i32,
) -> Result<ExitStatus> {
    in_user_namespace(uid_map, gid_map, |report| {
        // Closing the report pipe tells the parent the work is under way.
        drop(report);
        let code = work();
        // SAFETY: _exit ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    })
}

fn in_user_namespace(
    uid_map: &[IdRange],
    gid_map: &[IdRange],
    child: impl FnOnce(std::fs::File) -> std::convert::Infallible,
) -> Result<ExitStatus> {
    with_signals_blocked(|handled| {
        let go = sync::pipe()?;
        let report = sync::pipe()?;
        let pid = clone_process(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)?;
        if pid == Pid::from_raw(0) {
            let mut go_read = go.read;
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if !sync::wait_for_go(&mut go_read) {
                // SAFETY: _exit ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(125) }
            }
            let _ = SigSet::all().thread_unblock();
            match child(report.write) {}
        }
        drop(go.read);
        drop(report.write);
        map_and_release(pid, uid_map, gid_map, go.write, || Ok(()))?;
        finish_start(pid, report.read, handled, None, None)
    })
}

/// Waits for the child's start report, then supervises it to the end.
fn finish_start(
    pid: Pid,
    report: std::fs::File,
    handled: &SigSet,
    master: Option<std::os::fd::OwnedFd>,
    on_started: Option<&StartedHook>,
) -> Result<ExitStatus> {
    match sync::read_report(report)? {
        Report::Started => {
            if let Some(hook) = on_started {
                (hook.0)(pid.as_raw());
            }
            supervise::supervise(pid, handled, master)
        }
        other => Err(failed_start(
            pid,
            other,
            "the container's process parked unasked",
        )),
    }
}

/// The error for a start report other than the one awaited, once the child is reaped
/// (killed first if it reported a state it should not be in: `unexpected`).
fn failed_start(pid: Pid, report: Report, unexpected: &str) -> Error {
    let error = match report {
        Report::SetupFailed(msg) => Error::Setup(msg),
        Report::ExecFailed { errno, command } => Error::Exec { command, errno },
        Report::Started | Report::Parked => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            Error::Setup(unexpected.into())
        }
    };
    let _ = waitpid(pid, None);
    error
}

/// The checks [`run`] and [`create`] make on a spec before anything is created (the
/// namespaces, ID maps, command, seccomp profile), on their own: for callers that
/// validate first, and the `oci_config` fuzz target.
pub fn check_plan(spec: &Spec) -> Result<()> {
    Plan::from_spec(spec).map(drop)
}

/// What the spec asks of the process creation, checked before anything is created.
struct Plan {
    clone_flags: CloneFlags,
    rootfs: PathBuf,
    terminal: bool,
    uid_map: Vec<IdRange>,
    gid_map: Vec<IdRange>,
    /// Existing namespaces the spec names by path, joined by the child.
    joins: Vec<(CloneFlags, PathBuf)>,
    /// A pid namespace by path: entered by this process for the clone.
    pid_join: Option<PathBuf>,
    /// The spec's seccomp profile, compiled before the clone (the child installs it).
    seccomp: Option<crate::seccomp::Filter>,
    /// The creator's uid or gid is not mapped in the new user namespace (an OCI bundle
    /// run by root of a user namespace, mapped elsewhere: podman's `--userns=nomap`):
    /// the child acts as the container's root. Decided here, before the clone: in the
    /// child, until the maps are written, every ID reads as the overflow ID.
    become_root: bool,
}

impl Plan {
    fn from_spec(spec: &Spec) -> Result<Plan> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Spec("no process".into()))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::Spec("process.args is empty".into()));
        }
        let gids = process
            .user()
            .additional_gids()
            .as_deref()
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = gids.iter().find(|g| !seen.insert(**g)) {
            return Err(Error::Spec(format!(
                "process.user.additionalGids lists gid {dup} more than once: list each once"
            )));
        }
        // Compiled here, once: a profile the child could not install fails before
        // anything exists, rather than in a container that `create` reported ready.
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(crate::seccomp::Filter::compile)
            .transpose()?;
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::Spec("no root".into()))?;
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| Error::Spec("no linux section".into()))?;
        let mut clone_flags = CloneFlags::empty();
        let mut joins = Vec::new();
        let mut pid_join = None;
        for ns in linux.namespaces().as_deref().unwrap_or_default() {
            let flag = namespace_flag(ns.typ())?;
            match ns.path() {
                Some(path) if ns.typ() == LinuxNamespaceType::Pid => pid_join = Some(path.clone()),
                Some(_) if ns.typ() == LinuxNamespaceType::User => {
                    return Err(Error::Spec(format!(
                        "joining an existing {:?} namespace by path is not supported yet",
                        ns.typ()
                    )))
                }
                Some(path) => joins.push((flag, path.clone())),
                None => clone_flags |= flag,
            }
        }
        // Root (of the host, or of a user namespace) may run a spec without one, as
        // runc does; everyone else needs it for every other namespace.
        let as_root = nix::unistd::geteuid().is_root();
        if !clone_flags.contains(CloneFlags::CLONE_NEWUSER) && !as_root {
            return Err(Error::Spec(
                "nook always creates a user namespace; the spec must list one".into(),
            ));
        }
        let uid_map: Vec<IdRange> = linux
            .uid_mappings()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(IdRange::from)
            .collect();
        let gid_map: Vec<IdRange> = linux
            .gid_mappings()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(IdRange::from)
            .collect();
        let needs_maps = clone_flags.contains(CloneFlags::CLONE_NEWUSER);
        if needs_maps && (uid_map.is_empty() || gid_map.is_empty()) {
            return Err(Error::Spec(
                "the user namespace needs uid and gid mappings".into(),
            ));
        }
        let become_root = needs_maps
            && (crate::idmap::inside_id(&uid_map, nix::unistd::geteuid().as_raw()).is_none()
                || crate::idmap::inside_id(&gid_map, nix::unistd::getegid().as_raw()).is_none());
        Ok(Plan {
            become_root,
            clone_flags,
            rootfs,
            terminal: process.terminal() == Some(true),
            uid_map: if needs_maps { uid_map } else { Vec::new() },
            gid_map: if needs_maps { gid_map } else { Vec::new() },
            joins,
            pid_join,
            seccomp,
        })
    }
}

fn namespace_flag(typ: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match typ {
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => {
            return Err(Error::Spec("time namespaces are not supported yet".into()))
        }
    })
}

/// Makes `path` the pid namespace of this process's next children; returns the
/// current one to come back to.
fn enter_pid_namespace(path: &std::path::Path) -> Result<std::fs::File> {
    let own = std::fs::File::open("/proc/self/ns/pid")
        .context(|| "opening this process's pid namespace".into())?;
    let target = std::fs::File::open(path)
        .context(|| format!("opening the pid namespace {}", path.display()))?;
    nix::sched::setns(&target, CloneFlags::CLONE_NEWPID)
        .context(|| format!("joining the pid namespace {}", path.display()))?;
    Ok(own)
}

/// clone(2) with fork semantics: the child continues here on a copy of the stack.
pub(crate) fn clone_process(flags: CloneFlags) -> Result<Pid> {
    let raw_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a NULL stack makes clone behave as fork (the child runs on a copy of our
    // stack); the caller is single-threaded (module doc), so the copy is consistent.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw_flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(Error::Clone(nix::errno::Errno::last()));
    }
    Ok(Pid::from_raw(ret as i32))
}
