//! User and group ID maps of the container's user namespace.
//!
//! An unprivileged user may write only a single-ID map of its own uid and gid, and for
//! the gid map only after setgroups has been denied (CVE-2014-8989). Root may write any
//! map. Larger maps for unprivileged users go through the setuid helper (issue 3).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Error, Result};

/// One line of uid_map / gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl From<&LinuxIdMapping> for IdRange {
    fn from(m: &LinuxIdMapping) -> Self {
        IdRange {
            inside: m.container_id(),
            outside: m.host_id(),
            count: m.size(),
        }
    }
}

/// The map file format the kernel reads.
pub fn format_map(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// Where `id` (a host id) appears inside, if it is mapped.
pub fn inside_id(ranges: &[IdRange], outside: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| outside >= r.outside && outside - r.outside < r.count)
        .map(|r| r.inside + (outside - r.outside))
}

/// Whether the container id `inside` is mapped.
pub fn is_mapped(ranges: &[IdRange], inside: u32) -> bool {
    ranges
        .iter()
        .any(|r| inside >= r.inside && inside - r.inside < r.count)
}

/// Writes the maps of `pid`'s user namespace from the supervisor (its owner).
///
/// `deny_setgroups` is required for an unprivileged single-ID gid map.
pub fn write_maps(
    pid: Pid,
    uid_map: &[IdRange],
    gid_map: &[IdRange],
    deny_setgroups: bool,
) -> Result<()> {
    if deny_setgroups {
        write_proc(pid, "setgroups", "deny")?;
    }
    write_proc(pid, "uid_map", &format_map(uid_map))?;
    write_proc(pid, "gid_map", &format_map(gid_map))
}

fn write_proc(pid: Pid, file: &str, content: &str) -> Result<()> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|source| Error::IdMap { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: [IdRange; 1] = [IdRange {
        inside: 0,
        outside: 1000,
        count: 1,
    }];

    #[test]
    fn formats_kernel_map() {
        assert_eq!(format_map(&SINGLE), "0 1000 1\n");
    }

    #[test]
    fn translates_ids() {
        assert_eq!(inside_id(&SINGLE, 1000), Some(0));
        assert_eq!(inside_id(&SINGLE, 1001), None);
        assert!(is_mapped(&SINGLE, 0));
        assert!(!is_mapped(&SINGLE, 5));
    }
}
