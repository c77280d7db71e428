//! `delete [--force] ID`: removes a stopped (or still created) container's record and
//! cgroup after its poststop hooks; `--force` kills a running one first.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::container::{self, Container, Status};
use super::global::Global;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The container's ID
    pub id: String,
    /// Kill the container first if it is running
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub fn delete(global: &Global, args: &DeleteArgs) -> Result<()> {
    let c = match Container::load(global, &args.id) {
        Ok(c) => c,
        // runc: deleting a missing container with --force is not an error.
        Err(_) if args.force && container::check_id(&args.id).is_ok() => return Ok(()),
        Err(e) => return Err(e),
    };
    remove(global, &c, args.force)
}

/// Kills (when allowed), waits, runs poststop hooks and removes the record.
pub fn remove(global: &Global, c: &Container, force: bool) -> Result<()> {
    let status = c.status();
    match status {
        // The runtime-spec (and its validation suite) wants an error for a created
        // container too; runc deletes those.
        Status::Created | Status::Running | Status::Paused if !force => bail!(
            "container {} is {}: stop it first, or use `delete --force`",
            c.record.id,
            status.as_str()
        ),
        Status::Stopped => {}
        _ => {
            if let Some(cg) = &c.record.cgroup {
                let _ = nook_rootless::cgroups::kill_all(cg, Duration::from_secs(5));
            }
            c.signal(libc::SIGKILL)?;
            if !c.wait_gone(Duration::from_secs(10)) {
                bail!(
                    "container {}'s process {} did not exit after SIGKILL",
                    c.record.id,
                    c.record.pid
                );
            }
        }
    }
    let spec = c.spec();
    container::run_hooks(global, c, spec.as_ref(), "poststop", Status::Stopped)?;
    if let Some(cg) = &c.record.cgroup {
        let _ = std::fs::remove_dir(cg);
    }
    std::fs::remove_dir_all(&c.dir)
        .map_err(|e| anyhow::anyhow!("removing {}: {e}", c.dir.display()))
}
