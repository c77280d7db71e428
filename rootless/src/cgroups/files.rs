//! Reading and writing cgroup interface files, with errors that name the file.
//!
//! Every cgroup file is small text: a single value (`memory.max`), a flat keyed list
//! (`memory.events`: `oom_kill 3`) or a nested keyed list (`io.stat`:
//! `8:0 rbytes=.. wbytes=..`). The parsers here are pure so the controller modules can
//! be tested on captured text. A [`Setting`] is one such write, planned from a spec;
//! [`wait_until`] polls until a file says what is awaited.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Reads a cgroup file as text.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|e| Error::sys(format!("reading {}", path.display()), e))
}

/// Writes `value` to a cgroup file in one `write(2)`, as the kernel expects.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::sys(format!("opening {}", path.display()), e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::sys(format!("writing {value:?} to {}", path.display()), e))
}

/// A single-value file: a number, or `max` (`None`).
pub(crate) fn parse_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        v => v.parse().ok(),
    }
}

/// The value of `key` in a flat keyed file (`key value` lines).
pub(crate) fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether the file exists in `dir` (an interface file of an enabled controller).
pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// One write to a cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    /// What the user asked for, in their words ("the memory limit (--memory)").
    pub what: &'static str,
}

impl Setting {
    pub(crate) fn new(
        controller: &'static str,
        file: &str,
        value: String,
        what: &'static str,
    ) -> Setting {
        Setting {
            controller,
            file: file.to_string(),
            value,
            what,
        }
    }
}

impl Setting {
    /// Whether this is what a new cgroup has anyway (the kernel's defaults): asking for
    /// it limits nothing, so a host without a delegated cgroup can still run it.
    /// containerd's default spec asks for CPU shares 1024, the default weight 100.
    pub(crate) fn changes_nothing(&self) -> bool {
        matches!(
            (self.file.as_str(), self.value.as_str()),
            ("cpu.weight", "100")
                | ("cpu.max", "max 100000")
                | ("cpu.max.burst", "0")
                | ("cpu.idle", "0")
                | ("memory.max", "max")
                | ("memory.swap.max", "max")
                | ("memory.low", "0")
                | ("pids.max", "max")
        ) || (self.file.starts_with("hugetlb.") && self.value == "max")
    }
}

/// Polls `done` every few milliseconds until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_flat_values() {
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max("33554432\n"), Some(33554432));
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_key(events, "oom_kill"), Some(1));
        assert_eq!(flat_key(events, "max"), Some(12));
        assert_eq!(flat_key(events, "missing"), None);
    }
}
