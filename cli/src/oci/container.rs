//! One OCI container's record under `--root`: `ROOT/ID/` holds `state.json` (what
//! `state` reports: pid and its start time, bundle, creation time, annotations, the
//! cgroup if any), `config.json` (the spec as created, for the hooks of later steps)
//! and, between `create` and `start`, the `start` FIFO the container's process waits
//! on.
//!
//! The status is derived, never stored: a process that is gone (or a zombie, or a
//! recycled pid with another start time) is "stopped"; the FIFO still there means
//! "created"; a frozen cgroup "paused"; else "running".

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nook_rootless::process::Stat;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::global::Global;

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const START_FIFO: &str = "start";
/// `pid start_time` lines of the processes `exec --detach` started: without a cgroup,
/// they are how `kill --all` and `ps` find a container's processes in a pid namespace
/// it shares (a pod's).
pub const EXEC_PIDS: &str = "exec-pids";

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat at creation: tells a recycled pid from ours.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    pub oci_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

/// `--root`, or nook's runtime dir + `/oci`; created (0700) if missing. Another
/// account's state directory is refused before a container's state in it is read.
pub fn root_dir(global: &Global) -> Result<PathBuf> {
    let root = match &global.root {
        Some(r) => r.clone(),
        None => nook_rootless::state::runtime_dir()?.join("oci"),
    };
    nook_fs::paths::check_own_dir(
        &root,
        "state directory",
        "give a --root of your own (default: $XDG_RUNTIME_DIR/nook/oci)",
    )?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("creating the state directory {}", root.display()))?;
    Ok(root)
}

/// Refuses IDs that are not a single path component.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        bail!("invalid container ID {id:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

impl Container {
    pub fn load(global: &Global, id: &str) -> Result<Container> {
        check_id(id)?;
        let dir = root_dir(global)?.join(id);
        let text = match fs::read_to_string(dir.join(STATE_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container {id} does not exist")
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the state of container {id}"))
            }
        };
        let record = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", dir.join(STATE_FILE).display()))?;
        Ok(Container { dir, record })
    }

    pub fn save(&self) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.record)?;
        nook_rootless::state::write_file(&tmp, bytes, nook_rootless::state::PRIVATE_FILE)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, self.dir.join(STATE_FILE)).context("saving the container's state")
    }

    /// The spec as it was created (for hooks).
    pub fn spec(&self) -> Option<Spec> {
        Spec::load(self.dir.join(CONFIG_FILE)).ok()
    }

    pub fn alive(&self) -> bool {
        proc_stat(self.record.pid).is_some_and(|(state, start)| {
            start == self.record.start_time && !matches!(state, 'Z' | 'X')
        })
    }

    pub fn status(&self) -> Status {
        let parked = self.dir.join(START_FIFO).exists();
        if self.record.pid == 0 {
            // No process in the spec: created until `start` refuses it.
            return if parked {
                Status::Created
            } else {
                Status::Stopped
            };
        }
        if !self.alive() {
            Status::Stopped
        } else if parked {
            Status::Created
        } else if self
            .record
            .cgroup
            .as_deref()
            .and_then(nook_rootless::cgroups::freezer::frozen_state)
            == Some(1)
        {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The OCI state JSON (runtime-spec "State"), as `state` prints it and hooks read it.
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let r = &self.record;
        let mut state = serde_json::json!({
            "ociVersion": r.oci_version,
            "id": r.id,
            "status": status.as_str(),
            "bundle": r.bundle,
            "created": r.created,
        });
        if status != Status::Stopped {
            state["pid"] = r.pid.into();
        }
        if !r.annotations.is_empty() {
            state["annotations"] = serde_json::to_value(&r.annotations).unwrap_or_default();
        }
        state
    }

    /// Signals the container's process (pid 1 of its namespace).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.record.pid <= 0 {
            // kill(0 or -1, ...) would signal our own group or everything we may.
            return Ok(());
        }
        // SAFETY: kill(2) with a pid and signal number has no memory effects.
        if unsafe { libc::kill(self.record.pid, sig) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).with_context(|| format!("signalling container {}", self.record.id));
            }
        }
        Ok(())
    }

    /// Every process of the container: its cgroup's; without one, every process of
    /// its pid namespace when that is the container's own (its process is pid 1
    /// there); else, in a pid namespace it joined (a pod's, shared with the sandbox and
    /// other containers), only its own: its process, those `exec --detach` started,
    /// and their descendants. (A descendant that daemonised away to the namespace's
    /// init is out of reach without a cgroup.)
    pub fn pids(&self) -> Vec<i32> {
        if let Some(cg) = &self.record.cgroup {
            if let Ok(text) = fs::read_to_string(cg.join("cgroup.procs")) {
                return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        let alive = self.record.pid > 0 && self.alive();
        let ns = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        if alive && ns_init(self.record.pid) {
            let Some(own) = ns(self.record.pid) else {
                return vec![self.record.pid];
            };
            let mut pids: Vec<i32> = proc_pids()
                .filter(|pid| *pid == self.record.pid || ns(*pid).as_ref() == Some(&own))
                .collect();
            pids.sort_unstable();
            return pids;
        }
        let mut roots: Vec<i32> = Vec::new();
        if alive {
            roots.push(self.record.pid);
        }
        let recorded = fs::read_to_string(self.dir.join(EXEC_PIDS)).unwrap_or_default();
        for line in recorded.lines() {
            let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
            if let (Some(Some(pid)), Some(Some(start))) = (f.next(), f.next()) {
                let pid = pid as i32;
                if proc_stat(pid).is_some_and(|(st, s)| s == start && !matches!(st, 'Z' | 'X')) {
                    roots.push(pid);
                }
            }
        }
        let mut pids = with_descendants(&roots);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Notes a process `exec --detach` started (see [`EXEC_PIDS`]); entries of processes
    /// that have gone are dropped on the way, so a container that is exec'd into often
    /// (the kubelet's exec probes) keeps a short list.
    pub fn record_exec(&self, pid: i32) -> Result<()> {
        let Some((_, start)) = proc_stat(pid) else {
            return Ok(()); // already gone: nothing to find later
        };
        let path = self.dir.join(EXEC_PIDS);
        // Two execs at once (a probe and `kubectl exec`) must not lose each other's line.
        let lock = fs::File::create(self.dir.join(format!("{EXEC_PIDS}.lock")))
            .with_context(|| format!("locking the exec list of {}", self.record.id))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking the exec list of {}", self.record.id))?;
        let mut keep: String = fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|line| {
                let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
                match (f.next(), f.next()) {
                    (Some(Some(p)), Some(Some(s))) => proc_stat(p as i32)
                        .is_some_and(|(st, t)| t == s && !matches!(st, 'Z' | 'X')),
                    _ => false,
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        keep += &format!("{pid} {start}\n");
        // Written whole and renamed: a concurrent reader sees the old list or the new.
        let tmp = self.dir.join(format!("{EXEC_PIDS}.{}", std::process::id()));
        fs::write(&tmp, keep)
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("recording exec'd process {pid} of {}", self.record.id))
    }

    /// Waits (polling /proc: the process is not our child) until it is gone.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        while self.alive() {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        true
    }
}

/// The numeric entries of /proc.
fn proc_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// Whether `pid` is pid 1 of its own pid namespace (the last NSpid field).
fn ns_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last().map(|x| x == "1"))
        })
        .unwrap_or(false)
}

/// `roots` and every process descended from them (by parent pid, from /proc).
fn with_descendants(roots: &[i32]) -> Vec<i32> {
    if roots.is_empty() {
        return Vec::new();
    }
    let parents: Vec<(i32, i32)> = proc_pids()
        .filter_map(|pid| Some((pid, Stat::of(pid)?.parent()?)))
        .collect();
    let mut out = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !out.contains(pid) {
                out.push(*pid);
            }
        }
        i += 1;
    }
    out
}

/// State letter and start time (field 22) of a process, from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = Stat::of(pid)?;
    Some((stat.state()?, stat.start_time()?))
}

/// Runs the hooks of one stage with the container's state; for poststart and poststop
/// failures are only reported (runtime-spec).
pub fn run_hooks(
    global: &Global,
    container: &Container,
    spec: Option<&Spec>,
    stage: &str,
    status: Status,
) -> Result<()> {
    let Some(hooks) = spec.and_then(|s| s.hooks().as_ref()) else {
        return Ok(());
    };
    let list = match stage {
        "prestart" =>
        {
            #[allow(deprecated)]
            hooks.prestart()
        }
        "createRuntime" => hooks.create_runtime(),
        "createContainer" => hooks.create_container(),
        "poststart" => hooks.poststart(),
        "poststop" => hooks.poststop(),
        _ => &None,
    };
    let Some(list) = list.as_deref() else {
        return Ok(());
    };
    let state = serde_json::to_vec(&container.state_json(status))?;
    if matches!(stage, "poststart" | "poststop") {
        // A failure is a warning, and the remaining hooks still run.
        for hook in list {
            if let Err(e) = nook_rootless::hooks::run(stage, std::slice::from_ref(hook), &state) {
                super::global::report_warning(global, &e.to_string());
            }
        }
        return Ok(());
    }
    nook_rootless::hooks::run(stage, list, &state)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_components() {
        assert!(check_id("abc-1_2.3").is_ok());
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descendants_are_found_by_parent_pid() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let sh = child.id() as i32;
        // The grandchild appears once sh has forked it (bounded wait).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = with_descendants(&[sh]);
            if found.len() >= 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for pid in found.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait();
        assert_eq!(found[0], sh);
        assert_eq!(found.len(), 2, "sh and its sleep: {found:?}");
        assert!(!found.contains(&(std::process::id() as i32)));
        assert!(with_descendants(&[]).is_empty());
        // This test's process is not pid 1 of its pid namespace.
        assert!(!ns_init(std::process::id() as i32));
    }

    #[test]
    fn reads_our_own_stat() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(matches!(state, 'R' | 'S'));
        assert!(start > 0);
    }
}
