//! The cgroups of running containers: which containers run with one, chosen by name
//! or ID, their readings and the freezer (`nook stats`, `pause`, `unpause` print and
//! loop; cli/src/stats.rs).
//!
//! A running container is a directory `$RUNTIME/containers/ID` holding a `cgroup` file
//! (written by the run path when the container got a cgroup); the container records name
//! them. A container is given by name, full ID or unique ID prefix.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nook_rootless::cgroups;

use crate::bail;
use crate::container::record::Places;
use crate::error::{Context, Result};

/// A running container that has a cgroup.
pub struct Running {
    pub id: String,
    pub name: String,
    pub cgroup: PathBuf,
    /// When its cgroup was recorded (the container's start, near enough).
    pub started: SystemTime,
}

/// Freezes (`frozen`) or thaws a running container's every process.
pub fn set_frozen(c: &Running, frozen: bool) -> Result<()> {
    let what = if frozen { "pausing" } else { "thawing" };
    cgroups::set_frozen(&c.cgroup, frozen).with_context(|| format!("{what} container {}", c.id))?;
    Ok(())
}

/// CPU % of `usage_usec` CPU time over `wall` (100% = one CPU busy).
pub fn percent(usage_usec: u64, wall: Duration) -> f64 {
    let wall = wall.as_micros() as f64;
    if wall <= 0.0 {
        0.0
    } else {
        usage_usec as f64 * 100.0 / wall
    }
}

/// Every running container of this user that has a cgroup, oldest first.
pub fn running(runtime: &Path, names: &[(String, String)]) -> Result<Vec<Running>> {
    let dir = runtime.join("containers");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let Some(cgroup) = cgroups::recorded(&e.path()) else {
            continue;
        };
        if !cgroup.join("cgroup.procs").exists() {
            continue; // left by a killed nook; its cgroup is gone
        }
        let started = fs::metadata(e.path().join("cgroup"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::now());
        let name = names
            .iter()
            .find(|(_, target)| *target == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        out.push(Running {
            id,
            name,
            cgroup,
            started,
        });
    }
    out.sort_by_key(|r| r.started);
    Ok(out)
}

/// (name, id) of every container of the store.
pub fn names(places: &Places) -> Vec<(String, String)> {
    places
        .all()
        .into_iter()
        .map(|c| (c.record.name, c.record.id))
        .collect()
}

/// The containers the user named, in the order named.
pub fn select(
    all: Vec<Running>,
    wanted: &[String],
    runtime: &Path,
    names: &[(String, String)],
) -> Result<Vec<Running>> {
    let mut chosen: Vec<Running> = Vec::new();
    let mut all = all;
    for w in wanted {
        let by_name = all.iter().position(|r| !r.name.is_empty() && r.name == *w);
        let by_id: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.starts_with(w.as_str()))
            .map(|(i, _)| i)
            .collect();
        let index = match (by_name, by_id.as_slice()) {
            (Some(i), _) => i,
            (None, [i]) => *i,
            (None, []) => {
                let id = names
                    .iter()
                    .find(|(n, _)| n == w)
                    .map_or_else(|| w.clone(), |(_, id)| id.clone());
                let exists = runtime.join("containers").join(&id).is_dir();
                if exists {
                    bail!(
                        "container {w} has no cgroup: it runs without resource control on \
                         this host (see `nook info`)"
                    );
                }
                bail!(
                    "no such container: {w} (see the running ones with `nook stats --no-stream`)"
                );
            }
            (None, _) => bail!("{w} is a prefix of several container IDs: give more of it"),
        };
        chosen.push(all.remove(index));
    }
    Ok(chosen)
}

/// MemTotal of /proc/meminfo, in bytes: the "limit" of a container without one.
pub fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent() {
        assert_eq!(percent(500_000, Duration::from_secs(1)), 50.0);
        assert_eq!(percent(2_000_000, Duration::from_secs(1)), 200.0);
        assert_eq!(percent(1, Duration::ZERO), 0.0);
    }
}
