//! Container lifecycle commands: run -d, create, start, stop, kill, restart, rm, wait,
//! rename, container prune, system prune/reset.
//!
//! Signals go straight to the container's first process through a pidfd (so a recycled
//! pid is never signalled); the supervisor notices the exit and records it. A manual stop
//! or kill leaves a marker that keeps the restart policy from undoing it. Waiting is on
//! pidfds too: no polling of state files.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::record::{Container, Places, ProcessId, Status};
use super::supervisor;
use nook_engine::RunRequest;

use crate::flags::{
    CtrsArgs, KillArgs, PruneArgs, RenameArgs, RmArgs, RunArgs, StartArgs, StopArgs,
};
use crate::run;
use nook_engine::store_helper::{self, Job};

/// `nook run -d`: the image (pulled here, with progress), the record, then the
/// supervisor; prints the ID once the container runs.
/// The descriptors `passing` names go to the supervisor, which hands them on.
pub fn run_detached(
    request: &RunRequest,
    creds: Option<&nook_fs::auth::Credentials>,
    store_root: Option<PathBuf>,
    passing: &run::Passing,
) -> Result<i32> {
    let ctr = create_container(request, creds, store_root)?;
    supervisor::spawn_with(&ctr, None, passing)?;
    println!("{}", ctr.record.id);
    Ok(0)
}

/// `nook create`.
pub fn create_cmd(args: RunArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if args.rm {
        bail!("--rm is for `nook run`: a created container is removed with `nook rm`");
    }
    if let Some(n) = args.preserve_fds {
        bail!(
            "--preserve-fds {n} passes descriptors of the command that starts the container: \
             use it with `nook run` (a created container starts from `nook start`, later)"
        );
    }
    let request = RunRequest::try_from(&args)?;
    let creds = crate::image_cmds::pull_from(&args.registry).creds;
    let ctr = create_container(&request, creds.as_ref(), store_root)?;
    println!("{}", ctr.record.id);
    Ok(0)
}

fn create_container(
    request: &RunRequest,
    creds: Option<&nook_fs::auth::Credentials>,
    store_root: Option<PathBuf>,
) -> Result<Container> {
    let places = Places::for_run(store_root.clone(), request)?;
    let image = run::choose_image(request, creds, store_root)?;
    Container::create(&places, request, image.image_id())
}

/// `nook start [-a] CTR...`.
pub fn start_cmd(args: StartArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    if args.attach && args.containers.len() > 1 {
        bail!("start -a takes one container");
    }
    for key in &args.containers {
        let ctr = places.find(key)?;
        if ctr.supervised() {
            if args.attach {
                return super::attach::attach(&places, &ctr, args.interactive);
            }
        } else if args.attach {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
            supervisor::spawn_with(&ctr, Some(theirs), &run::Passing::default())?;
            return super::attach::attach_on(&ctr, ours, args.interactive);
        } else {
            supervisor::spawn(&ctr)?;
        }
        println!("{}", ctr.record.name);
    }
    Ok(0)
}

/// A pidfd: a handle on one process that a recycled pid cannot fool.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// The process, if it is still the one recorded.
    pub fn open(p: ProcessId) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this descriptor to us; we own it.
        let pidfd = PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        // Checked after opening: if the start time still matches now, the pidfd refers
        // to the recorded process and keeps doing so.
        p.alive().then_some(pidfd)
    }

    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the process has exited; false when `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d
                        .saturating_duration_since(std::time::Instant::now())
                        .as_millis();
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, left) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Waits for the container's supervisor to finish recording the exit.
fn wait_for_supervisor(ctr: &Container) {
    if let Some(sup) = ctr.recorded_state().supervisor.and_then(PidFd::open) {
        // The supervisor only records the exit and cleans up: seconds at most.
        sup.wait(Some(Duration::from_secs(30)));
    }
}

/// Stops `ctr`: its stop signal, then KILL after `timeout`; returns once it is
/// recorded as exited. Already stopped: nothing to do.
pub fn stop(ctr: &Container, timeout: Duration) -> Result<()> {
    if ctr.supervised() {
        // Also between two runs of a restart policy: the supervisor checks the marker
        // before it starts the container again.
        mark_stopped(ctr)?;
    }
    let st = ctr.state();
    let Some(pid) = st
        .pid
        .filter(|_| st.status == Status::Running)
        .and_then(PidFd::open)
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
        eprintln!(
            "nook: warning: {}",
            stop_fallback_notice(ctr.record.request.stop_signal, &ctr.record.name, timeout)
        );
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

fn mark_stopped(ctr: &Container) -> Result<()> {
    nook_rootless::state::write_file(&ctr.stop_marker(), b"", nook_rootless::state::PRIVATE_FILE)
        .with_context(|| format!("marking container {} as stopped", ctr.record.name))
}

fn targets(places: &Places, all: bool, keys: &[String]) -> Result<Vec<Container>> {
    if all {
        return Ok(places.all());
    }
    if keys.is_empty() {
        bail!("name at least one container, or use --all");
    }
    keys.iter().map(|k| places.find(k)).collect()
}

/// `nook stop` / `nook restart`.
pub fn stop_cmd(args: StopArgs, store_root: Option<PathBuf>, restart: bool) -> Result<i32> {
    let places = Places::open(store_root)?;
    let mut failed = false;
    for ctr in targets(&places, args.all, &args.containers)? {
        let timeout = Duration::from_secs(args.time.unwrap_or(ctr.record.request.stop_timeout));
        let result = stop(&ctr, timeout).and_then(|()| match restart {
            true => supervisor::spawn(&ctr),
            false => Ok(()),
        });
        match result {
            Ok(()) => println!("{}", ctr.record.name),
            Err(e) => {
                eprintln!(
                    "nook: {}: {why}",
                    ctr.record.name,
                    why = crate::errors::Chain(&e)
                );
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// `nook kill`.
pub fn kill_cmd(args: KillArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    let sig = args.signal;
    let mut failed = false;
    for ctr in targets(&places, args.all, &args.containers)? {
        let st = ctr.state();
        let pid = st
            .pid
            .filter(|_| st.status == Status::Running)
            .and_then(PidFd::open);
        let Some(pid) = pid else {
            if !args.all {
                eprintln!("nook: container {} is not running", ctr.record.name);
                failed = true;
            }
            continue;
        };
        mark_stopped(&ctr)?;
        match pid.signal(sig) {
            Ok(()) => println!("{}", ctr.record.name),
            Err(e) => {
                eprintln!("nook: signalling {}: {e}", ctr.record.name);
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// `nook rm`.
pub fn rm_cmd(args: RmArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    let mut failed = false;
    for ctr in targets(&places, args.all, &args.containers)? {
        let running = ctr.supervised();
        if running && !args.force {
            eprintln!(
                "nook: container {} is running: stop it first (`nook stop {}`) or use rm -f",
                ctr.record.name, ctr.record.name
            );
            failed = true;
            continue;
        }
        if running {
            let st = ctr.state();
            if let Some(pid) = st.pid.and_then(PidFd::open) {
                mark_stopped(&ctr)?;
                let _ = pid.signal(libc::SIGKILL);
                pid.wait(None);
            }
            wait_for_supervisor(&ctr);
        }
        remove_container(&places, &ctr);
        println!("{}", ctr.record.id);
    }
    Ok(if failed { 1 } else { 0 })
}

/// Removes everything of `ctr`: its writable layer (through the store helper: it holds
/// files of subordinate IDs), its record, its runtime files and its name.
pub fn remove_container(places: &Places, ctr: &Container) {
    let layers: Vec<PathBuf> = [Some(ctr.dir.join("layer")), ctr.record.layer_dir.clone()]
        .into_iter()
        .flatten()
        .filter(|p| p.exists())
        .collect();
    if !layers.is_empty() {
        if let Err(e) = store_helper::run(&Job::Remove(layers)) {
            eprintln!(
                "nook: warning: could not remove the writable layer of {}: {why}",
                ctr.record.name,
                why = nook_engine::error::chain_line(&e),
            );
        }
    }
    ctr.remove_files();
    if !ctr.supervised() {
        let _ = std::fs::remove_dir_all(ctr.runtime_dir(places));
    }
    places.release_name(&ctr.record.name, &ctr.record.id);
}

/// `nook wait`: prints each container's exit code once it has exited.
pub fn wait_cmd(args: CtrsArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    for key in &args.containers {
        let ctr = places.find(key)?;
        let st = ctr.recorded_state();
        if st.status == Status::Created {
            bail!("container {} has not been started", ctr.record.name);
        }
        if let Some(sup) = st.supervisor.and_then(PidFd::open) {
            // The supervisor ends once the container has ended for good (restarts
            // included) and its exit is recorded.
            sup.wait(None);
        }
        if !ctr.dir.join("config.json").exists() {
            bail!(
                "container {} was removed when it exited (--rm): its exit code is gone",
                ctr.record.name
            );
        }
        println!("{}", ctr.state().exit_code.unwrap_or(-1));
    }
    Ok(0)
}

/// `nook rename`.
pub fn rename_cmd(args: RenameArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    let mut ctr = places.find(&args.container)?;
    places.reserve_name(&args.new_name, &ctr.record.id, ctr.record.request.rm)?;
    let old = std::mem::replace(&mut ctr.record.name, args.new_name.clone());
    if let Err(e) = ctr.write_record() {
        places.release_name(&args.new_name, &ctr.record.id);
        return Err(e);
    }
    places.release_name(&old, &ctr.record.id);
    Ok(0)
}

/// `--rm` containers whose supervisor was killed before it could remove them: they
/// are removed now (what `--rm` asked for), so `ps` does not list the dead.
pub fn sweep_dead_rm_containers(places: &Places) {
    for ctr in places.all() {
        if ctr.record.request.rm && !ctr.supervised() && !owner_alive(&ctr.runtime_dir(places)) {
            remove_container(places, &ctr);
        }
    }
}

/// Removes every container that is not running, and runtime directories that no
/// container owns (left by a nook killed before it could clean up); returns the IDs of
/// the containers.
fn prune_containers(places: &Places) -> Vec<String> {
    let mut removed = Vec::new();
    for ctr in places.all() {
        // A container being started has a live owner before its supervisor is recorded.
        if !ctr.supervised() && !owner_alive(&ctr.runtime_dir(places)) {
            remove_container(places, &ctr);
            removed.push(ctr.record.id.clone());
        }
    }
    sweep_orphan_runtime_dirs(places);
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
fn sweep_orphan_runtime_dirs(places: &Places) {
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
            eprintln!(
                "nook: warning: could not remove stale runtime directories: {why}",
                why = nook_engine::error::chain_line(&e)
            );
        }
    }
}

fn confirm(force: bool, what: &str) -> Result<bool> {
    if force {
        return Ok(true);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("{what}: add --force to confirm (stdin is not a terminal to ask on)");
    }
    eprint!("{what}. Are you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `nook container prune`.
pub fn container_prune_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(args.force, "This removes every stopped container")? {
        return Ok(0);
    }
    let places = Places::open(store_root)?;
    for id in prune_containers(&places) {
        println!("{id}");
    }
    Ok(0)
}

/// `nook system prune`: stopped containers, then images without a name that no
/// container uses, then blobs and layers that no image references.
pub fn system_prune_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(
        args.force,
        "This removes every stopped container and every image without a name",
    )? {
        return Ok(0);
    }
    let places = Places::open(store_root.clone())?;
    let containers = prune_containers(&places);
    let images = crate::image_cmds::prune_unnamed(store_root.clone())?;
    println!(
        "Removed {} container(s) and {} image(s)",
        containers.len(),
        images
    );
    // Then what no image references any more (those images' parts, and what failed or
    // killed pulls and imports stored).
    let store = crate::image_cmds::open_store(store_root)?;
    match crate::image_cmds::collect_unreferenced(&store)? {
        Some(r) if r.blobs + r.layers > 0 => println!(
            "Removed {} blob(s) and {} layer(s) no image used: {} reclaimed",
            r.blobs,
            r.layers,
            crate::units::human_size(r.bytes)
        ),
        Some(_) => {}
        None => eprintln!(
            "nook: a pull, import or commit into this store is running: blobs and layers no \
             image uses are kept until it ends (run `nook system prune` again then)"
        ),
    }
    Ok(0)
}

/// `nook system reset`: every container (killed), the store, the runtime state.
pub fn system_reset_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(
        args.force,
        "This removes every container, every image and all of nook's stored state",
    )? {
        return Ok(0);
    }
    let places = Places::open(store_root.clone())?;
    for ctr in places.all() {
        if let Some(pid) = ctr.state().pid.and_then(PidFd::open) {
            let _ = mark_stopped(&ctr);
            let _ = pid.signal(libc::SIGKILL);
            pid.wait(Some(Duration::from_secs(10)));
        }
        wait_for_supervisor(&ctr);
        remove_container(&places, &ctr);
    }
    if let Some(root) = nook_fs::paths::store_root(store_root) {
        if root.exists() {
            store_helper::run(&Job::Remove(vec![root.clone()]))
                .with_context(|| format!("removing the store {}", root.display()))?;
        }
    }
    // The runtime dir is the user's, shared by every store: it goes only when no
    // container of another store (`--root`) still lives in it.
    sweep_orphan_runtime_dirs(&places);
    let runtime = nook_rootless::state::runtime_dir()?;
    let others = std::fs::read_dir(runtime.join("containers"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    if others == 0 {
        let _ = std::fs::remove_dir_all(&runtime);
    } else {
        eprintln!(
            "nook: kept {} (containers of another store are running)",
            runtime.display()
        );
    }
    Ok(0)
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
