//! The memory controller: `--memory`, `--memory-reservation`, `--memory-swap`, and the
//! OOM events that the exit report reads.
//!
//! OCI speaks in cgroup v1 terms: `swap` is the limit of memory *plus* swap. cgroup v2
//! limits swap alone (`memory.swap.max`), so the value written is `swap - limit`.
//! `reservation` becomes `memory.low` (best-effort protection), as in crun.

use oci_spec::runtime::LinuxMemory;

use super::files;
use super::files::Setting;
use crate::error::{Error, Result};

const LIMIT: &str = "the memory limit (--memory)";
const RESERVATION: &str = "the memory reservation (--memory-reservation)";
const SWAP: &str = "the memory+swap limit (--memory-swap)";

/// The files to write for `mem`. OCI's 0 means "not set", -1 "unlimited".
pub(crate) fn plan(mem: &LinuxMemory) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    let limit = mem.limit().filter(|&l| l != 0);
    if let Some(limit) = limit {
        out.push(Setting::new("memory", "memory.max", max_or(limit), LIMIT));
    }
    if let Some(r) = mem.reservation().filter(|&r| r != 0) {
        out.push(Setting::new("memory", "memory.low", max_or(r), RESERVATION));
    }
    match (mem.swap().filter(|&s| s != 0), limit) {
        (None, _) => {}
        (Some(s), _) if s < 0 => out.push(Setting::new(
            "memory",
            "memory.swap.max",
            "max".into(),
            SWAP,
        )),
        (Some(s), Some(l)) if l > 0 => {
            if s < l {
                return Err(Error::Cgroup(format!(
                    "{SWAP} ({s} bytes) is below {LIMIT} ({l} bytes): it counts memory plus \
                     swap, so it must be at least the memory limit"
                )));
            }
            out.push(Setting::new(
                "memory",
                "memory.swap.max",
                (s - l).to_string(),
                SWAP,
            ));
        }
        (Some(_), _) => {
            return Err(Error::Cgroup(format!(
                "{SWAP} needs {LIMIT} as well: give --memory too"
            )))
        }
    }
    if mem.swappiness().is_some() {
        return Err(Error::Cgroup(
            "memory swappiness (--memory-swappiness) is a cgroup v1 setting; cgroup v2 has no \
             per-cgroup swappiness: leave it out"
                .into(),
        ));
    }
    if mem.disable_oom_killer() == Some(true) {
        return Err(Error::Cgroup(
            "disabling the OOM killer (--oom-kill-disable) is not possible with cgroup v2: \
             leave it out"
                .into(),
        ));
    }
    Ok(out)
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// How many processes of the cgroup (and its descendants) the OOM killer killed.
pub(crate) fn oom_kills(events: &str) -> u64 {
    files::flat_key(events, "oom_kill").unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    fn files_of(mem: LinuxMemory) -> Vec<(String, String)> {
        plan(&mem)
            .unwrap()
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect()
    }

    #[test]
    fn limit_reservation_swap() {
        let mem = LinuxMemoryBuilder::default()
            .limit(512i64 << 20)
            .reservation(256i64 << 20)
            .swap(1i64 << 30)
            .build()
            .unwrap();
        assert_eq!(
            files_of(mem),
            vec![
                ("memory.max".into(), "536870912".into()),
                ("memory.low".into(), "268435456".into()),
                ("memory.swap.max".into(), "536870912".into()),
            ]
        );
    }

    #[test]
    fn unlimited_values() {
        let mem = LinuxMemoryBuilder::default()
            .limit(-1i64)
            .swap(-1i64)
            .build()
            .unwrap();
        assert_eq!(
            files_of(mem),
            vec![
                ("memory.max".into(), "max".into()),
                ("memory.swap.max".into(), "max".into()),
            ]
        );
    }

    #[test]
    fn swap_equal_to_limit_means_no_swap() {
        let mem = LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .swap(64i64 << 20)
            .build()
            .unwrap();
        assert_eq!(files_of(mem)[1], ("memory.swap.max".into(), "0".into()));
    }

    #[test]
    fn refusals() {
        let below = LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .swap(32i64 << 20)
            .build()
            .unwrap();
        assert!(plan(&below).unwrap_err().to_string().contains("at least"));
        let alone = LinuxMemoryBuilder::default()
            .swap(1i64 << 30)
            .build()
            .unwrap();
        assert!(plan(&alone).unwrap_err().to_string().contains("--memory"));
        let swappiness = LinuxMemoryBuilder::default()
            .swappiness(10u64)
            .build()
            .unwrap();
        assert!(plan(&swappiness).is_err());
    }

    #[test]
    fn oom_kill_count() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 1);
        assert_eq!(oom_kills(""), 0);
    }
}
