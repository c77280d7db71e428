//! `run`: create and start in one step; without --detach this process stays the
//! container's parent, waits for it, removes it (unless --keep) and exits with its
//! status (128+N for signal N).

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::global::Global;
use super::{create, delete, start};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: create::CreateArgs,
    /// Return once the container runs, without waiting for it
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Keep the container's record after it exits
    #[arg(long)]
    pub keep: bool,
}

pub fn run(global: &Global, args: &RunArgs) -> Result<i32> {
    let created = create::create(global, &args.create)?;
    let id = &args.create.id;
    if let Err(e) = start::start(global, id) {
        let _ = delete::remove(global, &created.container, true);
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    let pid = Pid::from_raw(created.container.record.pid);
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the container"),
        }
    };
    if !args.keep {
        delete::remove(global, &created.container, true)?;
    }
    Ok(code)
}
