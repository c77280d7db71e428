//! The lifecycle of a container once created: start (its supervisor), stop, kill,
//! remove, and what killed runs left.
//!
//! Signals go straight to the container's first process through a pidfd (so a recycled
//! pid is never signalled); the supervisor notices the exit and records it. A manual stop
//! or kill leaves a marker that keeps the restart policy from undoing it. Waiting is on
//! pidfds too: no polling of state files.

use std::path::PathBuf;
use std::time::Duration;

use super::record::{Broken, Container, Places, ProcessId, Status};
use crate::error::{Context, Result};
use crate::store_helper::{self, Job};
use crate::Notify;

/// A pidfd: a handle on one process that a recycled pid cannot fool
/// ([`ProcessId::pidfd`] opens one on a recorded process).
pub use nook_rootless::process::PidFd;

/// Waits for the container's supervisor to finish recording the exit.
pub fn wait_for_supervisor(ctr: &Container) {
    if let Some(sup) = ctr.recorded_state().supervisor.and_then(ProcessId::pidfd) {
        // The supervisor only records the exit and cleans up: seconds at most.
        sup.wait(Some(Duration::from_secs(30)));
    }
}

/// Stops `ctr`: its stop signal, then KILL after `timeout`; returns once it is
/// recorded as exited. Already stopped: nothing to do.
pub fn stop(ctr: &Container, timeout: Duration, notify: &dyn Notify) -> Result<()> {
    if ctr.supervised() {
        // Also between two runs of a restart policy: the supervisor checks the marker
        // before it starts the container again.
        mark_stopped(ctr)?;
    }
    let st = ctr.state();
    let Some(pid) = st
        .pid
        .filter(|_| st.status == Status::Running)
        .and_then(ProcessId::pidfd)
    else {
        wait_for_supervisor(ctr);
        return Ok(());
    };
    let _ = pid.signal(ctr.record.request.stop_signal);
    if !pid.wait(Some(timeout)) {
        if timeout.is_zero() {
            // `-t 0` asked for KILL at once: nothing to warn about.
            let _ = pid.signal(libc::SIGKILL);
            pid.wait(None);
            wait_for_supervisor(ctr);
            return Ok(());
        }
        // Said as podman says it: a user waiting seconds for a stop learns why, and
        // that the container ends by KILL (exit 137) rather than by its own handler.
        notify.warn(&stop_fallback_notice(
            ctr.record.request.stop_signal,
            &ctr.record.name,
            timeout,
        ));
        let _ = pid.signal(libc::SIGKILL);
        pid.wait(None);
    }
    wait_for_supervisor(ctr);
    Ok(())
}

/// The warning printed when the stop signal did not end the container in time.
fn stop_fallback_notice(signal: i32, name: &str, timeout: Duration) -> String {
    let sig = nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"));
    let secs = timeout.as_secs();
    let unit = if secs == 1 { "second" } else { "seconds" };
    format!(
        "StopSignal {sig} failed to stop container {name} in {secs} {unit}, resorting to SIGKILL"
    )
}

/// Leaves the marker that keeps the restart policy from undoing a stop or kill.
pub fn mark_stopped(ctr: &Container) -> Result<()> {
    nook_rootless::state::write_file(&ctr.stop_marker(), b"", nook_rootless::state::PRIVATE_FILE)
        .with_context(|| format!("marking container {} as stopped", ctr.record.name))
}

/// Waits until `ctr` has ended for good (its restart policy done) and returns its exit
/// code as recorded.
pub fn wait(ctr: &Container) -> Result<i32> {
    let st = ctr.recorded_state();
    if st.status == Status::Created {
        crate::bail!("container {} has not been started", ctr.record.name);
    }
    if let Some(sup) = st.supervisor.and_then(ProcessId::pidfd) {
        // The supervisor ends once the container has ended for good (restarts
        // included) and its exit is recorded.
        sup.wait(None);
    }
    if !ctr.dir.join("config.json").exists() {
        crate::bail!(
            "container {} was removed when it exited (--rm): its exit code is gone",
            ctr.record.name
        );
    }
    Ok(ctr.state().exit_code.unwrap_or(-1))
}

/// Whether `remove` may end a running container first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfRunning {
    /// Refuse: the caller says to stop it first.
    Refuse,
    /// Kill it (`rm -f`).
    Kill,
}

/// Removes `ctr` (killed first if running and `if_running` says so). Err when it runs
/// and may not be killed.
pub fn remove(
    places: &Places,
    ctr: &Container,
    if_running: IfRunning,
    notify: &dyn Notify,
) -> Result<()> {
    if ctr.supervised() {
        if if_running == IfRunning::Refuse {
            crate::bail!(
                "container {} is running: stop it first (`nook stop {}`) or use rm -f",
                ctr.record.name,
                ctr.record.name
            );
        }
        let st = ctr.state();
        if let Some(pid) = st.pid.and_then(ProcessId::pidfd) {
            mark_stopped(ctr)?;
            let _ = pid.signal(libc::SIGKILL);
            pid.wait(None);
        }
        wait_for_supervisor(ctr);
    }
    remove_container(places, ctr, notify);
    Ok(())
}

/// Removes everything of `ctr`: its writable layer (through the store helper: it holds
/// files of subordinate IDs), its record, its runtime files and its name.
pub fn remove_container(places: &Places, ctr: &Container, notify: &dyn Notify) {
    let layers: Vec<PathBuf> = [Some(ctr.dir.join("layer")), ctr.record.layer_dir.clone()]
        .into_iter()
        .flatten()
        .filter(|p| p.exists())
        .collect();
    if !layers.is_empty() {
        if let Err(e) = store_helper::run(&Job::Remove(layers)) {
            notify.warn(&format!(
                "could not remove the writable layer of {}: {why}",
                ctr.record.name,
                why = crate::error::chain_line(&e),
            ));
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&ctr.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            notify.warn(&format!(
                "could not remove the record of {} ({}): {e}",
                ctr.record.name,
                ctr.dir.display()
            ));
        }
    }
    if !ctr.supervised() {
        let _ = std::fs::remove_dir_all(ctr.runtime_dir(places));
    }
    places.release_name(&ctr.record.name, &ctr.record.id);
}

/// Removes a container whose record cannot be read: its directory (a writable layer
/// in it through the store helper), its runtime files unless a live process owns them,
/// its name. Returns what was left, each with why.
pub fn remove_broken(places: &Places, broken: &Broken) -> Vec<String> {
    let mut left = Vec::new();
    let layer = broken.dir.join("layer");
    if layer.exists() {
        if let Err(e) = store_helper::run(&Job::Remove(vec![layer.clone()])) {
            left.push(format!(
                "{}: {}",
                layer.display(),
                crate::error::chain_line(&e)
            ));
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&broken.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            left.push(format!("{}: {e}", broken.dir.display()));
        }
    }
    let runtime = places.runtime.join(&broken.id);
    if runtime.exists() && !owner_alive(&runtime) {
        if let Err(e) = store_helper::run(&Job::Remove(vec![runtime.clone()])) {
            left.push(format!(
                "{}: {}",
                runtime.display(),
                crate::error::chain_line(&e)
            ));
        }
    }
    if let Some(name) = &broken.name {
        places.release_name(name, &broken.id);
    }
    left
}

/// `--rm` containers whose supervisor was killed before it could remove them: they
/// are removed now (what `--rm` asked for), so `ps` does not list the dead.
pub fn sweep_dead_rm_containers(places: &Places, notify: &dyn Notify) {
    for ctr in places.all() {
        if ctr.record.request.rm && !ctr.supervised() && !owner_alive(&ctr.runtime_dir(places)) {
            remove_container(places, &ctr, notify);
        }
    }
}

/// Removes every container that is not running, and runtime directories that no
/// container owns (left by a nook killed before it could clean up); returns the IDs of
/// the containers.
pub fn prune_containers(places: &Places, notify: &dyn Notify) -> Vec<String> {
    let mut removed = Vec::new();
    for ctr in places.all() {
        // A container being started has a live owner before its supervisor is recorded.
        if !ctr.supervised() && !owner_alive(&ctr.runtime_dir(places)) {
            remove_container(places, &ctr, notify);
            removed.push(ctr.record.id.clone());
        }
    }
    sweep_orphan_runtime_dirs(places, notify);
    removed
}

/// Whether the process that made runtime directory `dir` (its `owner` file) lives; a
/// directory a moment old without the file yet counts as owned.
fn owner_alive(dir: &std::path::Path) -> bool {
    match std::fs::read_to_string(dir.join("owner")) {
        Ok(text) => {
            let mut f = text
                .split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok());
            match (f.next(), f.next()) {
                (Some(pid), Some(start)) => ProcessId {
                    pid: pid as i32,
                    start,
                }
                .alive(),
                _ => false,
            }
        }
        // No file: gone, or so new that its owner is still writing it.
        Err(_) => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < Duration::from_secs(60))),
    }
}

/// `$RUNTIME/containers/ID` directories without a container record: what a killed
/// supervisor left (they may hold a writable layer of subordinate-ID files, so the
/// store helper deletes them).
pub fn sweep_orphan_runtime_dirs(places: &Places, notify: &dyn Notify) {
    // Listed before the records are read: a container created in between has its
    // record written before its runtime directory, so it is never taken for an orphan.
    let candidates: Vec<PathBuf> = std::fs::read_dir(&places.runtime)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| e.path())
        .collect();
    let owned: std::collections::HashSet<String> =
        places.all().into_iter().map(|c| c.record.id).collect();
    let orphans: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !owned.contains(n.to_string_lossy().as_ref()))
                && !owner_alive(p)
        })
        .collect();
    if !orphans.is_empty() {
        if let Err(e) = store_helper::run(&Job::Remove(orphans)) {
            notify.warn(&format!(
                "could not remove stale runtime directories: {why}",
                why = crate::error::chain_line(&e)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_fallback_is_announced_as_podman_does() {
        assert_eq!(
            stop_fallback_notice(libc::SIGTERM, "web", Duration::from_secs(10)),
            "StopSignal SIGTERM failed to stop container web in 10 seconds, resorting to SIGKILL"
        );
        assert_eq!(
            stop_fallback_notice(libc::SIGINT, "web", Duration::from_secs(1)),
            "StopSignal SIGINT failed to stop container web in 1 second, resorting to SIGKILL"
        );
    }
}
