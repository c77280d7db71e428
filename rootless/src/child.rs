//! The container's first process, from clone to exec.
//!
//! It starts with every namespace new (and full capabilities in its own user namespace)
//! but no valid uid until the supervisor has written the ID maps, so it first waits for
//! the `go` byte. Then it builds the container in order: hostname, loopback, mounts and
//! pivot_root, terminal, identity and capabilities, and finally execs the command (or,
//! under `--init`, forks it and becomes the reaper). Any failure is reported once on the
//! report pipe and ends this process; nothing here returns to the caller's code.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::pty::Winsize;
use nix::sys::signal::{SigSet, Signal};
use oci_spec::runtime::{Process, Spec};

use crate::error::{Context, Error, Result};
use crate::options::{RunOptions, StdinMode};
use crate::sync::{send_report, wait_for_go, Report};
use crate::{capabilities, exec, fds, hooks, init, limits, mounts, netns, seccomp, tty};

/// Everything the child needs, prepared by the parent before clone.
pub(crate) struct Child<'a> {
    pub spec: &'a Spec,
    pub options: &'a RunOptions,
    pub rootfs: PathBuf,
    pub go: File,
    pub report: File,
    pub console: Option<UnixStream>,
    pub window: Option<Winsize>,
    pub new_netns: bool,
    pub new_utsns: bool,
    /// Unshare the cgroup namespace after `go`, once in the container's cgroup.
    pub unshare_cgroupns: bool,
    /// OCI `create`: the start gate (a FIFO, open read-write) on which the process,
    /// once set up, waits for `start`'s message before it executes the command.
    pub park: Option<RawFd>,
    /// The creator's uid is not mapped in the new user namespace: switch to the
    /// container's root before the setup, or every file and mount it makes would have
    /// an unmapped owner (EOVERFLOW).
    pub become_root: bool,
    /// Existing namespaces to enter (the spec's namespaces with a path).
    pub joins: &'a [(nix::sched::CloneFlags, PathBuf)],
    /// Non-dumpable from the release on (fds.rs; spawn.rs says when).
    pub undumpable: bool,
    /// The spec's seccomp profile, compiled by the parent.
    pub seccomp: Option<&'a seccomp::Filter>,
}

impl Child<'_> {
    pub(crate) fn main(mut self) -> ! {
        // Born in the container's namespaces with a copy of every descriptor of the
        // supervisor and of its caller: only what the setup and the command need stays.
        fds::close_all_except(&self.own_fds());
        // Die with the supervisor: nothing may outlive a killed `nook run`.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if !wait_for_go(&mut self.go) {
            exit(125);
        }
        // Until the release the supervisor needed our /proc entries (ID maps, network).
        if self.undumpable {
            if let Err(e) = fds::make_undumpable() {
                self.fail(&e);
            }
        }
        // A session of its own: no controlling terminal of the caller (TIOCSTI into it,
        // job-control signals), and not in the caller's process group (signals come
        // through the supervisor, which forwards them). A pty, if any, is its terminal.
        if let Err(e) = nix::unistd::setsid() {
            self.fail(&Error::sys("starting a session (setsid)", e));
        }
        if self.become_root {
            let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
            if let Err(e) = nix::unistd::setresgid(root.0, root.0, root.0)
                .and_then(|()| nix::unistd::setresuid(root.1, root.1, root.1))
            {
                self.fail(&Error::sys(
                    "becoming the container's root (uid 0 must be mapped)",
                    e,
                ));
            }
        }
        for (flag, path) in self.joins {
            let joined = File::open(path)
                .and_then(|ns| nix::sched::setns(&ns, *flag).map_err(std::io::Error::from));
            if let Err(e) = joined {
                let what = format!("joining the namespace {}", path.display());
                self.fail(&Error::sys(what, e));
            }
        }
        if self.unshare_cgroupns {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
                self.fail(&Error::sys("unsharing the cgroup namespace", e));
            }
        }
        if let Err(e) = self.build_container() {
            self.fail(&e);
        }
        let spec = self.spec;
        let process = process_of(spec);
        // Read as the container's root, before the user switch (runc's order).
        let home = exec::home_if_unset(process);
        let profile = self.seccomp;
        let no_new_privs = process.no_new_privileges() == Some(true);
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, so it goes on
        // before the capabilities are cut (runc's order); with it, last, so the profile
        // need not allow the setup's own syscalls. Either way the working directory is
        // entered and checked first (the check's getcwd may be one the profile denies).
        let mut cwd_checked = false;
        if let (Some(profile), false) = (profile, no_new_privs) {
            match fds::enter_cwd_before_filter(process.cwd())
                .and_then(|checked| profile.install().map(|()| checked))
            {
                Ok(checked) => cwd_checked = checked,
                Err(e) => self.fail(&e),
            }
        }
        if let Err(e) = capabilities::apply(process) {
            self.fail(&e);
        }
        if self.park.is_none() {
            // Switching to a non-root user cleared the parent-death signal: arm it again.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        }
        if let Some(gate) = self.park {
            self = self.park(gate, process, cwd_checked);
        }
        if let (Some(profile), true) = (profile, no_new_privs) {
            match fds::enter_cwd_before_filter(process.cwd())
                .and_then(|checked| profile.install().map(|()| checked))
            {
                Ok(checked) => cwd_checked = checked,
                Err(e) => self.fail(&e),
            }
        }
        let exec_fds = ExecFds {
            keep: self.park,
            passed: self.options.passed_fds,
            cwd_checked,
        };
        let home = home.as_deref();
        if self.options.init {
            init::reap_and_forward(self.report, |report| {
                exec_command(process, home, report, &exec_fds)
            })
        }
        exec_command(process, home, self.report, &exec_fds)
    }

    /// The descriptors the setup and the command need: stdio, the two pipes, the pty's
    /// socket, the FUSE socket, the start gate and those passed on purpose.
    fn own_fds(&self) -> Vec<RawFd> {
        let mut keep = vec![0, 1, 2, self.go.as_raw_fd(), self.report.as_raw_fd()];
        keep.extend(self.console.as_ref().map(|c| c.as_raw_fd()));
        keep.extend(self.options.fuse_socket);
        keep.extend(self.park);
        keep.extend(self.options.passed_fds.range());
        keep
    }

    fn fail(mut self, e: &Error) -> ! {
        send_report(&mut self.report, &Report::SetupFailed(e.to_string()));
        exit(125)
    }

    /// OCI `create`: reports the container ready, then waits for `start`. The creating
    /// process exits after the report; once `start`'s message has arrived, a failure
    /// (a startContainer hook, the exec itself) is reported to `start` on the gate,
    /// which it reads once this process has gone (spawn.rs, `start_result`).
    /// `cwd_checked`: as [`ExecFds::cwd_checked`].
    fn park(mut self, gate: RawFd, process: &Process, cwd_checked: bool) -> Self {
        // runc's create fails for a missing command: check while the creator listens.
        if let Err(e) = nix::unistd::chdir(process.cwd()) {
            let msg = format!(
                "changing to the working directory {}: {e}",
                process.cwd().display()
            );
            self.fail(&Error::Setup(msg));
        }
        if let Err(e) = fds::check_cwd_inside_root(process.cwd(), cwd_checked) {
            self.fail(&e);
        }
        let args = process.args().as_deref().unwrap_or_default();
        let env = process.env().as_deref().unwrap_or_default();
        let command = args.first().cloned().unwrap_or_default();
        if let Err(errno) = exec::find_command(&command, env) {
            let errno = errno as i32;
            send_report(&mut self.report, &Report::ExecFailed { errno, command });
            exit(exec::exec_failure_status(errno))
        }
        // The container must outlive its creator; and a signal sent to a created
        // container acts on it now, as on runc's.
        let _ = nix::sys::prctl::set_pdeathsig(None);
        let _ = SigSet::all().thread_unblock();
        send_report(&mut self.report, &Report::Parked);
        match File::open("/dev/null") {
            // Closing the report pipe is what completes the creator's read.
            Ok(null) => self.report = null,
            Err(_) => exit(125),
        }
        // SAFETY: the gate descriptor was opened for this process by the creator and is
        // used only here; the File owns and closes it.
        let mut gate = unsafe { File::from_raw_fd(gate) };
        let state = match read_start_message(&mut gate) {
            Ok(state) => state,
            Err(e) => {
                // stderr is the only way left to say why: the report pipe is closed (the
                // creator has returned), and `start`, if one is waiting, reads the gate
                // for a report only after its message was taken, which failed here.
                eprintln!("nook: waiting for `start`: {e}");
                exit(125)
            }
        };
        // The report goes back through the gate from here on: a close-on-exec
        // duplicate, so that exec closes it with the gate itself.
        match gate.try_clone() {
            Ok(back) => self.report = back,
            Err(e) => {
                // `start` reads the gate for the report once its message was taken.
                let why = format!("duplicating the start gate: {e}");
                send_report(&mut gate, &Report::SetupFailed(why));
                exit(125)
            }
        }
        let start_hooks = self
            .spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_deref())
            .unwrap_or_default();
        if let Err(e) = hooks::run("startContainer", start_hooks, &state) {
            self.fail(&e)
        }
        // Kept open to the exec (it is close-on-exec): `start` waits for this reader to
        // go away, so that poststart hooks run once the command has started.
        std::mem::forget(gate);
        self
    }

    fn build_container(&self) -> Result<()> {
        if self.new_utsns {
            if let Some(name) = self.spec.hostname() {
                nix::unistd::sethostname(name).context(|| format!("setting hostname {name}"))?;
            }
            if let Some(name) = self.spec.domainname() {
                set_domainname(name)?;
            }
        }
        if self.new_netns {
            netns::bring_up_loopback()?;
        }
        mounts::prepare_root(self.spec, &self.rootfs, self.options.fuse_socket)?;
        self.create_workdir()?;
        mounts::pivot_into(&self.rootfs)?;
        // Sysctls before the read-only paths: /proc/sys is one of them.
        limits::apply(self.spec)?;
        mounts::finish_root(self.spec)?;
        if let Some(mask) = self.spec.process().as_ref().and_then(|p| p.user().umask()) {
            // SAFETY: umask only sets this process's file mode creation mask.
            unsafe { libc::umask(mask as libc::mode_t) };
        }
        if self.options.stdin == StdinMode::Null {
            // The container's own /dev/null, so /proc/self/fd/0 reads as it does in podman.
            let null = File::open("/dev/null").context(|| "opening /dev/null".into())?;
            nix::unistd::dup2(null.as_raw_fd(), 0).context(|| "stdin from /dev/null".into())?;
        }
        if let Some(console) = &self.console {
            tty::setup_child_terminal(console, self.window)?;
        }
        Ok(())
    }

    /// podman creates a missing working directory; do it while still root in the
    /// container and before the root may become read-only.
    /// The path is resolved and created inside the root by the one confined resolver: a
    /// symlink or a /proc magic link on the way cannot make it land on the host.
    fn create_workdir(&self) -> Result<()> {
        let cwd = process_of(self.spec).cwd();
        let root = nook_at::Root::open_container(&self.rootfs)
            .context(|| format!("opening the container's root {}", self.rootfs.display()))?;
        match root.open_or_create(cwd, nook_at::Make::Dir) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::Setup(format!(
                "working directory {}: refused: it goes through a symlink loop or a /proc \
                 magic link (/proc/self/fd/N, /proc/self/cwd ...), which could lead out of \
                 the container",
                cwd.display()
            ))),
            Err(e) => Err(Error::sys(
                format!("creating the working directory {}", cwd.display()),
                e,
            )),
        }
    }
}

/// The child of `nook unshare`, once mapped: exec the command with nook's environment.
pub(crate) fn exec_with_own_env(command: &[String], report: File) -> std::convert::Infallible {
    let env: Vec<String> = std::env::vars()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(["NOOK_UNSHARED=1".to_string()])
        .collect();
    exec_args(command, &env, report, None)
}

/// `start`'s message on the gate: a 4-byte little-endian length, then the container's
/// state JSON (for the startContainer hooks).
fn read_start_message(gate: &mut File) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    gate.read_exact(&mut len)?;
    let mut state = vec![0u8; u32::from_le_bytes(len) as usize];
    gate.read_exact(&mut state)?;
    Ok(state)
}

fn process_of(spec: &Spec) -> &Process {
    spec.process()
        .as_ref()
        .expect("spawn checked that the spec has a process")
}

/// What crosses the command's exec besides its stdio: the report pipe (close-on-exec:
/// its EOF tells the supervisor that the command runs), the start gate of a parked OCI
/// container (close-on-exec: `start` waits for it to go) and the descriptors passed on
/// purpose.
pub(crate) struct ExecFds {
    pub keep: Option<RawFd>,
    pub passed: fds::PassedFds,
    /// The working directory was entered and found inside the root before the seccomp
    /// filter went on ([`fds::enter_cwd_before_filter`]).
    pub cwd_checked: bool,
}

/// The last step of the container's setup: chdir, find the command, exec it. `home`:
/// the HOME to add to an environment that has none (exec.rs, `home_if_unset`).
pub(crate) fn exec_command(
    process: &Process,
    home: Option<&str>,
    mut report: File,
    exec_fds: &ExecFds,
) -> ! {
    // Nothing else of nook or of its caller reaches the chdir or the command.
    let mut keep = vec![0, 1, 2, report.as_raw_fd()];
    keep.extend(exec_fds.keep);
    keep.extend(exec_fds.passed.range());
    fds::close_all_except(&keep);
    let cwd = process.cwd();
    if let Err(e) = nix::unistd::chdir(cwd) {
        let msg = format!("changing to the working directory {}: {e}", cwd.display());
        send_report(&mut report, &Report::SetupFailed(msg));
        exit(125);
    }
    if let Err(e) = fds::check_cwd_inside_root(cwd, exec_fds.cwd_checked) {
        send_report(&mut report, &Report::SetupFailed(e.to_string()));
        exit(125);
    }
    let args = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    let with_home: Vec<String>;
    let env = match home {
        Some(home) => {
            with_home = env
                .iter()
                .cloned()
                .chain([format!("HOME={home}")])
                .collect();
            &with_home[..]
        }
        None => env,
    };
    let passed = exec_fds.passed;
    if passed.listen {
        // sd_listen_fds(3) takes the descriptors only in the process LISTEN_PID names.
        let own = format!("LISTEN_PID={}", std::process::id());
        let env: Vec<String> = env
            .iter()
            .filter(|v| !v.starts_with("LISTEN_PID="))
            .cloned()
            .chain([own])
            .collect();
        exec_args(args, &env, report, Some(passed))
    }
    exec_args(args, env, report, Some(passed))
}

/// Finds `args[0]` in the PATH of `env` and execs it; reports why not otherwise. With
/// `container` (the descriptors it is passed), the command is a container's.
fn exec_args(
    args: &[String],
    env: &[String],
    mut report: File,
    container: Option<fds::PassedFds>,
) -> ! {
    let command = args.first().cloned().unwrap_or_default();
    let errno = match exec::find_command(&command, env) {
        Ok(program) if container.is_some() && exec::is_own_binary(&program) => {
            let msg = format!(
                "refusing to run `{command}`: it is nook's own binary (or a script it \
                 interprets), which a process of the container could then reach and \
                 overwrite through /proc/PID/exe"
            );
            send_report(&mut report, &Report::SetupFailed(msg));
            exit(125)
        }
        Ok(program) => {
            if let Some(passed) = container {
                fds::make_inheritable(passed.range());
            }
            restore_signal_defaults();
            exec::execute(&program, args, env)
        }
        Err(errno) => errno,
    };
    send_report(
        &mut report,
        &Report::ExecFailed {
            errno: errno as i32,
            command,
        },
    );
    exit(exec::exec_failure_status(errno as i32))
}

/// The command starts with every signal's default action and an empty mask, whatever
/// nook inherited: its caller may ignore SIGINT and SIGQUIT (a background job of a
/// script, `nohup`, `trap '' INT`), Rust's runtime ignores SIGPIPE, and the supervisor
/// blocks the signals it forwards. An ignored signal and the mask survive exec; handlers
/// do not, but nook installs none.
fn restore_signal_defaults() {
    exec::reset_dispositions();
    let _ = SigSet::all().thread_unblock();
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this process without running the parent's atexit handlers or
    // flushing stdio buffers copied from it.
    unsafe { libc::_exit(code) }
}

/// `domainname` of the spec, in the container's new UTS namespace.
fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes; the kernel copies them.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if r != 0 {
        return Err(Error::sys(
            format!("setting domainname {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
