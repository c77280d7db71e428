//! `exec [--process FILE | CMD...] ID`: another process in a running container, through
//! nook's join path (`nook_rootless::join::exec_in`: the container's namespaces, cgroup,
//! capabilities and seccomp profile). `-d` returns once it runs (with `--pid-file`);
//! otherwise this waits and exits with its status.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use nook_rootless::fds::PassedFds;
use nook_rootless::join::{exec_in, ExecIo, ExecOptions, ExecOutcome, JoinTarget};
use nook_rootless::StdinMode;

use super::container::{Container, Status};
use super::global::Global;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The container's ID
    pub id: String,
    /// The process to run (a runtime-spec `process` JSON file)
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Write the new process's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Do not wait for the process (detach)
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Unix socket to which the pty master is sent
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Allocate a terminal
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Working directory (without --process)
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (without --process)
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Pass descriptors 3..3+N of this command to the process (no others cross)
    #[arg(long, value_name = "N")]
    pub preserve_fds: Option<u32>,
    /// Accepted for runc compatibility (the process file says it)
    #[arg(long, hide = true)]
    pub no_new_privs: bool,
    /// The command, when no --process is given
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(global: &Global, args: &ExecArgs) -> Result<i32> {
    let c = Container::load(global, &args.id)?;
    let status = c.status();
    if !matches!(status, Status::Running | Status::Created) {
        bail!(
            "container {} is {}: exec needs a running one",
            args.id,
            status.as_str()
        );
    }
    let spec = c.spec();
    let process = match &args.process {
        Some(file) => {
            let text = std::fs::read(file)
                .with_context(|| format!("reading the process file {}", file.display()))?;
            let process = nook_rootless::bundle::parse_process(&text)
                .and_then(|p| nook_rootless::bundle::check_process(&p).map(|()| p));
            process.map_err(|e| anyhow::anyhow!("the process file {}: {e}", file.display()))?
        }
        None => {
            if args.command.is_empty() {
                bail!("give the command to run, or --process FILE");
            }
            let mut p = spec
                .as_ref()
                .and_then(|s| s.process().clone())
                .unwrap_or_default();
            p.set_args(Some(args.command.clone()));
            p.set_terminal(Some(args.tty));
            if let Some(cwd) = &args.cwd {
                p.set_cwd(cwd.clone());
            }
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(args.env.iter().cloned());
            p.set_env(Some(env));
            p
        }
    };
    let terminal = args.tty || process.terminal() == Some(true);
    let io = match (&args.console_socket, terminal) {
        (Some(sock), true) => ExecIo::ConsoleSocket(sock.clone()),
        (None, true) => ExecIo::Tty,
        (_, false) => ExecIo::Inherit,
    };
    let target = JoinTarget {
        pid: c.record.pid,
        cgroup: c.record.cgroup.clone(),
    };
    let seccomp = spec
        .as_ref()
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.seccomp().as_ref());
    let passed_fds = PassedFds::preserve(args.preserve_fds.unwrap_or(0));
    if let Some(fd) = passed_fds.first_missing() {
        bail!(
            "--preserve-fds {}: descriptor {fd} is not open",
            passed_fds.count
        );
    }
    let options = ExecOptions {
        io,
        detach: args.detach,
        stdin: StdinMode::Inherit,
        seccomp,
        passed_fds,
    };
    match exec_in(&target, &process, &options)? {
        ExecOutcome::Detached(pid) => {
            c.record_exec(pid)?;
            if let Some(path) = &args.pid_file {
                super::create::write_pid_file(path, pid)?;
            }
            Ok(0)
        }
        ExecOutcome::Exited(status) => Ok(status.code()),
    }
}
