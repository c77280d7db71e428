//! The container's first process, from clone to exec.
//!
//! It starts with every namespace new (and full capabilities in its own user namespace)
//! but no valid uid until the supervisor has written the ID maps, so it first waits for
//! the `go` byte. Then it builds the container in order: hostname, loopback, mounts and
//! pivot_root, terminal, identity and capabilities, and finally execs the command (or,
//! under `--init`, forks it and becomes the reaper). Any failure is reported once on the
//! report pipe and ends this process; nothing here returns to the caller's code.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::pty::Winsize;
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use oci_spec::runtime::{Process, Spec};

use crate::error::{Context, Error, Result};
use crate::sync::{send_report, wait_for_go, Report};
use crate::{capabilities, exec, init, mounts, netns, tty, RunOptions, StdinMode};

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
}

impl Child<'_> {
    pub(crate) fn main(mut self) -> ! {
        // Die with the supervisor: nothing may outlive a killed `nook run`.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if !wait_for_go(&mut self.go) {
            exit(125);
        }
        if self.unshare_cgroupns {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
                self.fail(&Error::sys("unsharing the cgroup namespace", e));
            }
        }
        if let Err(e) = self.build_container() {
            self.fail(&e);
        }
        let process = process_of(self.spec);
        if let Err(e) = capabilities::apply(process) {
            self.fail(&e);
        }
        if self.options.init {
            init::reap_and_forward(self.report, |report| exec_command(process, report))
        }
        exec_command(process, self.report)
    }

    fn fail(mut self, e: &Error) -> ! {
        send_report(&mut self.report, &Report::SetupFailed(e.to_string()));
        exit(125)
    }

    fn build_container(&self) -> Result<()> {
        if self.new_utsns {
            if let Some(name) = self.spec.hostname() {
                nix::unistd::sethostname(name).context(|| format!("setting hostname {name}"))?;
            }
        }
        if self.new_netns {
            netns::bring_up_loopback()?;
        }
        mounts::prepare_root(self.spec, &self.rootfs, self.options.fuse_socket)?;
        self.create_workdir()?;
        mounts::pivot_into(&self.rootfs)?;
        mounts::finish_root(self.spec)?;
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
    fn create_workdir(&self) -> Result<()> {
        let cwd = process_of(self.spec).cwd();
        let host = crate::secure_path::resolve_in_root(&self.rootfs, cwd)
            .context(|| format!("resolving the working directory {}", cwd.display()))?;
        if !host.exists() {
            std::fs::create_dir_all(&host)
                .context(|| format!("creating the working directory {}", cwd.display()))?;
        }
        Ok(())
    }
}

/// The child of `nook unshare`, once mapped: exec the command with nook's environment.
pub(crate) fn exec_with_own_env(command: &[String], report: File) -> std::convert::Infallible {
    let env: Vec<String> = std::env::vars()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(["NOOK_UNSHARED=1".to_string()])
        .collect();
    exec_args(command, &env, report)
}

fn process_of(spec: &Spec) -> &Process {
    spec.process()
        .as_ref()
        .expect("spawn checked that the spec has a process")
}

/// The last step of the container's setup: chdir, find the command, exec it.
fn exec_command(process: &Process, mut report: File) -> ! {
    let cwd = process.cwd();
    if let Err(e) = nix::unistd::chdir(cwd) {
        let msg = format!("changing to the working directory {}: {e}", cwd.display());
        send_report(&mut report, &Report::SetupFailed(msg));
        exit(125);
    }
    let args = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    exec_args(args, env, report)
}

/// Finds `args[0]` in the PATH of `env` and execs it; reports why not otherwise.
fn exec_args(args: &[String], env: &[String], mut report: File) -> ! {
    let command = args.first().cloned().unwrap_or_default();
    let errno = match exec::find_command(&command, env) {
        Ok(program) => {
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

/// The supervisor blocks the signals it forwards, and Rust's runtime ignores SIGPIPE;
/// both would be inherited through exec. The command starts as it would from a shell.
fn restore_signal_defaults() {
    // SAFETY: setting SIG_DFL installs no handler code; nothing else runs concurrently.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    let _ = SigSet::all().thread_unblock();
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this process without running the parent's atexit handlers or
    // flushing stdio buffers copied from it.
    unsafe { libc::_exit(code) }
}
