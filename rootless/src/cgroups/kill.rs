//! Killing a container's whole process tree, escaped double-forks included.
//!
//! `cgroup.kill` (Linux 5.14+) sends SIGKILL to every process of the cgroup and its
//! descendants in one step, racing no fork. Older kernels: freeze the cgroup so nothing
//! can fork, SIGKILL every listed process (a fatal signal ends a frozen task), thaw.
//! Either way the caller then waits for `cgroup.events` to say `populated 0`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::files::{self, wait_until};
use super::freezer;
use crate::error::Result;

/// Kills every process in the cgroup at `dir` and below, and waits until it is empty
/// (up to `timeout`). Returns whether it emptied.
pub fn kill_all(dir: &Path, timeout: Duration) -> Result<bool> {
    if !is_populated(dir) {
        return Ok(true);
    }
    if files::exists(dir, "cgroup.kill") {
        files::write(dir, "cgroup.kill", "1")?;
    } else {
        let frozen = freezer::set_frozen(dir, true).is_ok();
        signal_tree(dir, Signal::SIGKILL);
        if frozen {
            let _ = freezer::set_frozen(dir, false);
        }
    }
    Ok(wait_until(timeout, || !is_populated(dir)))
}

/// Sends `sig` to every process listed in `dir` and its descendant cgroups.
fn signal_tree(dir: &Path, sig: Signal) {
    if let Ok(procs) = files::read(dir, "cgroup.procs") {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                signal_tree(&e.path(), sig);
            }
        }
    }
}

/// Whether any process is left in the cgroup or below (`false` when it is gone).
pub fn is_populated(dir: &Path) -> bool {
    files::read(dir, "cgroup.events")
        .ok()
        .and_then(|t| files::flat_key(&t, "populated"))
        .is_some_and(|p| p != 0)
}
