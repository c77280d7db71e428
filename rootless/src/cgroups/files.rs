//! Reading and writing cgroup interface files, with errors that name the file.
//!
//! Every cgroup file is small text: a single value (`memory.max`), a flat keyed list
//! (`memory.events`: `oom_kill 3`) or a nested keyed list (`io.stat`:
//! `8:0 rbytes=.. wbytes=..`). The parsers here are pure so the controller modules can
//! be tested on captured text.

use std::fs;
use std::io::Write;
use std::path::Path;

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
