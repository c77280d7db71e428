//! A container's resource usage, read from its cgroup's files.
//!
//! Only counters the kernel keeps are read; rates (CPU %) are the caller's business,
//! from two readings and the time between them. A file of a controller that is not
//! enabled reads as zero or "no limit".

use std::path::Path;

use super::{cpu, files, io, memory};
use crate::error::Result;

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used, all CPUs together (`cpu.stat` usage_usec).
    pub cpu_usage_usec: u64,
    /// CPU limit in CPUs ×1e6 of `cpu.max` quota/period; `None`: unlimited.
    pub cpu_limit_micro_cpus: Option<u64>,
    pub memory_current: u64,
    /// `memory.max`; `None`: unlimited.
    pub memory_max: Option<u64>,
    pub pids_current: u64,
    /// `pids.max`; `None`: unlimited.
    pub pids_max: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Processes the OOM killer ended (`memory.events` oom_kill).
    pub oom_kills: u64,
}

/// Reads the stats of the cgroup at `dir`. Fails only when the cgroup is gone.
pub fn read(dir: &Path) -> Result<Stats> {
    // cgroup.procs exists in every cgroup: its absence means the container is gone.
    files::read(dir, "cgroup.procs")?;
    let opt = |file: &str| files::read(dir, file).ok();
    let cpu_stat = opt("cpu.stat").unwrap_or_default();
    let cpu_limit_micro_cpus = opt("cpu.max")
        .and_then(|t| cpu::parse_cpu_max(&t))
        .and_then(|(quota, period)| Some(quota? * 1_000_000 / period.max(1)));
    Ok(Stats {
        cpu_usage_usec: files::flat_key(&cpu_stat, "usage_usec").unwrap_or(0),
        cpu_limit_micro_cpus,
        memory_current: opt("memory.current")
            .and_then(|t| files::parse_max(&t))
            .unwrap_or(0),
        memory_max: opt("memory.max").and_then(|t| files::parse_max(&t)),
        pids_current: opt("pids.current")
            .and_then(|t| files::parse_max(&t))
            .unwrap_or(0),
        pids_max: opt("pids.max").and_then(|t| files::parse_max(&t)),
        io_read_bytes: io::parse_io_stat(&opt("io.stat").unwrap_or_default()).0,
        io_write_bytes: io::parse_io_stat(&opt("io.stat").unwrap_or_default()).1,
        oom_kills: memory::oom_kills(&opt("memory.events").unwrap_or_default()),
    })
}
